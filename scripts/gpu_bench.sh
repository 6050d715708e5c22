#!/usr/bin/env bash
# The GPU benchmark kit: bf16 GRPO and SPPO on random models of Qwen2.5-0.5B's and 1.5B's shapes, padded vs packed,
# and TRL's GRPOTrainer on the same settings; writes OUT/gpu_bench.json and OUT/gpu_bench.md (scripts/gpu_bench.py).
#
#   bash scripts/gpu_bench.sh --wheels wheels/ --out gpu_bench    # a GPU machine without internet
#   bash scripts/gpu_bench.sh --cpu-dry-run --out /tmp/gpu_bench   # the same steps on CPU with a tiny shape
#   bash scripts/gpu_bench.sh --fetch-wheels wheels/               # where a registry is reachable: fill the folder
#
# The machine brings python, torch (CUDA), transformers, peft and accelerate. What prefopt needs beyond them
# (trl, datasets and their dependencies) is installed from the --wheels folder with pip --no-index; prefopt itself
# runs from this checkout (PYTHONPATH), so nothing is built. The whole run stops after 8 minutes (--limit SECONDS).
# Any other argument goes to scripts/gpu_bench.py (--shapes, --prompts, --max_new_tokens, --micro_batch, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
wheels="" out="gpu_bench" limit=480 fetch="" pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --fetch-wheels) fetch="$2"; shift 2 ;;
    *) pass+=("$1"); shift ;;
  esac
done
# The packages, at the versions this repository is tested with (constraints.txt); their own dependencies follow.
pins() { grep -E "^($(echo "$@" | tr ' ' '|'))==" constraints.txt; }
needed="trl datasets pyarrow dill xxhash multiprocess pandas fsspec"
if [ -n "$fetch" ]; then
  mkdir -p "$fetch"
  python -m pip download --only-binary=:all: --no-deps -d "$fetch" $(pins $needed)
  echo "wheels in $fetch ($(du -sh "$fetch" | cut -f1)); copy them with this checkout to the GPU machine"
  exit 0
fi
missing=$(python - <<'EOF'
import importlib.util
print(" ".join(m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
  if [ -z "$wheels" ]; then
    echo "gpu_bench.sh: error: $missing not installed and no --wheels folder given (see --fetch-wheels)" >&2
    exit 2
  fi
  python -m pip install -q --no-index --find-links "$wheels" $missing
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
timeout "$limit" python scripts/gpu_bench.py --out_dir "$out" ${pass[@]+"${pass[@]}"}
