#!/usr/bin/env bash
# CPU smoke test of the multi-process path: 2 processes on one machine, gloo, DeepSpeed ZeRO-2, the tiny offline
# model and the quickstart's synthetic task. No GPU, no network. About a minute or two on 2 CPU cores.
#
#   scripts/launch/cpu_two_process.sh [OUT_DIR] [extra prefopt flags ...]
#   PYTHON=/path/to/venv/bin/python scripts/launch/cpu_two_process.sh /tmp/smoke --num_iterations 2
#
# OUT_DIR (default: a fresh temporary folder) receives tiny-model/ and run/. Extra arguments are prefopt config flags
# and override configs/quickstart.yaml (e.g. --num_iterations 2, or --deepspeed configs/deepspeed/zero3.json).
# Environment: PYTHON (interpreter with prefopt installed; default: python), NPROC (processes, default 2), ALGO
# (default sppo; the config stays configs/quickstart.yaml, so pick an algorithm whose keys it holds).
set -euo pipefail

# Run from the repository root: the config and the DeepSpeed JSON are given as relative paths.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PYTHON=${PYTHON:-python}
NPROC=${NPROC:-2}
ALGO=${ALGO:-sppo}
if [[ $# -gt 0 && $1 != --* ]]; then
  OUT_DIR=$1
  shift
else
  OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/prefopt-cpu2.XXXXXX")
fi
mkdir -p "$OUT_DIR"

# One intra-op thread per process: 2 processes on 2 cores, and the tiny model runs fastest single-threaded
# (README, Performance). torchrun would set OMP_NUM_THREADS=1 itself, with a warning.
export OMP_NUM_THREADS=1
export TOKENIZERS_PARALLELISM=false

# The tiny random Llama (0.15M parameters), written once per OUT_DIR.
if [[ ! -f $OUT_DIR/tiny-model/config.json ]]; then
  "$PYTHON" -m prefopt.cli tiny-model "$OUT_DIR/tiny-model" --overwrite
fi

# torchrun (torch.distributed.run) starts NPROC processes and sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
# MASTER_PORT, which prefopt's Backend reads; --standalone picks a free local port for the rendezvous. Without CUDA the
# Backend makes a gloo process group, and DeepSpeed runs on its CPU accelerator.
# `python -m torch.distributed.run` is the torchrun command, called through $PYTHON so the right venv is used.
set -x
"$PYTHON" -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node "$NPROC" \
  -m prefopt.cli train "$ALGO" --config configs/quickstart.yaml \
  --model_name_or_path "$OUT_DIR/tiny-model" \
  --output_dir "$OUT_DIR/run" --overwrite \
  --deepspeed configs/deepspeed/zero2.json \
  "$@"

{ set +x; } 2>/dev/null
echo "[cpu_two_process] run directory: $OUT_DIR/run"
