#!/usr/bin/env bash
# Every method's smoke run on a CUDA GPU in bf16 (run.device=auto grpo.bf16=true), the settings of
# the paper-scale configs that a CPU-only machine (CI, the laptop default) never executes. Each run
# is a real `fedgrpo run` on the tiny random model, all at once (one GPU holds them all); each prints
# the GPU memory it peaked at, which shows the policy really ran there. Then the paper configs' test
# with a GPU present (it validates them as written, bf16 and all).
#
#   bash scripts/gpu_check.sh DIR            # needs a CUDA GPU; exits 1 if any run fails
#   CHECK=config bash scripts/gpu_check.sh DIR   # anywhere: validates each run's other overrides
#
# On the project's borrowed GPU machine (python3 with torch, no registry) the other packages travel
# as wheels in .whl/ (scripts/gpu_wheels.sh makes them); the script installs them when present.
set -u
OUT=${1:?usage: scripts/gpu_check.sh DIR}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ] && [ "${CHECK:-}" != config ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl .whl/*.tar.gz --no-build-isolation || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
[ "${CHECK:-}" = config ] || $PY -c "import torch, transformers, trl, sys; print(sys.version.split()[0], 'torch', torch.__version__,
'transformers', transformers.__version__, 'trl', trl.__version__, 'gpu', torch.cuda.is_available()
and torch.cuda.get_device_name(0)); sys.exit(0 if torch.cuda.is_available() else 1)" || exit 1

# `fedgrpo run ...` in-process, then the GPU memory it peaked at (0 would mean it never used the GPU)
RUN='import sys, torch
from fedgrpo.cli import main
rc = main(sys.argv[1:])
print(f"cuda peak {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB", file=sys.stderr)
sys.exit(rc)'
GPU=(run.device=auto grpo.bf16=true)
# the smoke presets keep every method small (fedpetuning: 2 rounds; dpsda-fl: N=8, T=3)
FEDPET=(method=fedpetuning model.lora.enabled=true)
DPSDA=(method=dpsda-fl model.lora.enabled=true dpsda.answers=solved)
declare -A RUNS=(
  [fedgrpo]="smoke"
  [fedgrpo-lora]="smoke model.lora.enabled=true"
  [fedgrpo-graph]="graph-smoke"
  [zero-shot]="smoke method=zero-shot"
  [central-grpo]="smoke method=central-grpo"
  [local-only]="graph-smoke method=local-only"
  [fedpetuning-sft]="smoke ${FEDPET[*]}"
  [fedpetuning-grpo]="smoke ${FEDPET[*]} fedpetuning.method=grpo"
  [dpsda-fl]="smoke ${DPSDA[*]}"
)
if [ "${CHECK:-}" = config ]; then
  # one process for all nine (bf16 itself validates only where a GPU is: TRL checks the hardware)
  for name in "${!RUNS[@]}"; do echo "$name ${RUNS[$name]}"; done | $PY -c '
import sys
from fedgrpo.config import ConfigError, load_config
bad = n = 0
for line in sys.stdin:
    n += 1
    name, preset, *overrides = line.split()
    try:
        load_config(preset, overrides)
    except (ConfigError, ValueError) as err:
        print(f"{name}: bad config: {err}")
        bad += 1
print(f"all {n} configs validate" if not bad else f"{bad} bad config(s)")
sys.exit(1 if bad else 0)'
  exit $?
fi
# built once here, not raced by nine runs
$PY -c "from fedgrpo.models.loading import tiny_random_folder; tiny_random_folder()" || exit 1
declare -A PIDS=()
for name in "${!RUNS[@]}"; do
  # shellcheck disable=SC2086  # the overrides are words
  $PY -c "$RUN" run ${RUNS[$name]} "${GPU[@]}" run.output_dir="$OUT/$name" > "$OUT/$name.log" 2>&1 &
  PIDS[$name]=$!
done
$PY -m pytest -q -p no:cacheprovider tests/config/test_paper_configs.py > "$OUT/paper_configs.log" 2>&1
paper=$?
failed=0
for name in $(printf '%s\n' "${!PIDS[@]}" | sort); do
  wait "${PIDS[$name]}"; rc=$?
  peak=$(grep -o "cuda peak .*" "$OUT/$name.log" | tail -1)
  echo "$name: exit $rc, ${peak:-no peak printed}"
  if [ "$rc" != 0 ]; then failed=1; tail -8 "$OUT/$name.log"; fi
  case "$peak" in "cuda peak 0.0 MiB"|"") echo "$name: never ran on the GPU"; failed=1 ;; esac
done
# the simulated organisations' model follows run.device too
grep -q "client model tiny-random on cuda" "$OUT/fedgrpo-graph.log" || { echo "client model not on the GPU"; failed=1; }
echo "paper configs with a GPU present: $(tail -1 "$OUT/paper_configs.log")"
[ "$paper" = 0 ] || { tail -30 "$OUT/paper_configs.log"; failed=1; }
exit $failed
