#!/usr/bin/env bash
# The GPU benchmark kit: bf16 GRPO and SPPO on random models of Qwen2.5-0.5B's and 1.5B's shapes, padded vs packed,
# and TRL's GRPOTrainer on the same settings; writes OUT/gpu_bench.json and OUT/gpu_bench.md (scripts/gpu_bench.py).
#
#   bash scripts/gpu_bench.sh --wheels wheels/ --out gpu_bench    # a GPU machine without internet
#   bash scripts/gpu_bench.sh --cpu-dry-run --out /tmp/gpu_bench   # the same steps on CPU with a tiny shape
#   bash scripts/gpu_bench.sh --fetch-wheels wheels/               # where a registry is reachable: fill the folder
#
# The machine brings python, torch (CUDA), transformers, peft and accelerate; the lent H200 machines also have
# pandas, pyarrow, xxhash and fsspec, and lack trl, datasets, dill and multiprocess. Those are installed from the
# --wheels folder (pip --no-index --no-deps --target OUT/.site, then PYTHONPATH), so the machine's own environment
# is not touched; prefopt itself runs from this checkout (PYTHONPATH), so nothing is built. --fetch-wheels DIR,
# where a registry is reachable, downloads them (about 2 MB) at this repository's pinned versions for CPython
# --python X.Y (default 3.12, the lent machines'); name more with --packages "a b". The whole run stops after
# 8 minutes (--limit SECONDS). Any other argument goes to scripts/gpu_bench.py (--shapes, --prompts, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
wheels="" out="gpu_bench" limit=480 fetch="" python_version="3.12" packages="trl datasets dill multiprocess" pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --fetch-wheels) fetch="$2"; shift 2 ;;
    --python) python_version="$2"; shift 2 ;;
    --packages) packages="$2"; shift 2 ;;
    *) pass+=("$1"); shift ;;
  esac
done
if [ -n "$fetch" ]; then
  mkdir -p "$fetch"
  pins=$(for p in $packages; do grep -E "^$p==" constraints.txt || { echo "gpu_bench.sh: error: $p is not pinned in constraints.txt" >&2; exit 2; }; done)
  platforms=""
  for n in 2_28 2_27 2_24 2_17; do platforms="$platforms --platform manylinux_${n}_x86_64"; done
  python -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    $platforms --platform manylinux2014_x86_64 --platform any -d "$fetch" $pins
  echo "wheels for CPython $python_version in $fetch ($(du -sh "$fetch" | cut -f1)): bring them with this checkout"
  exit 0
fi
mkdir -p "$out"
if [ -n "$wheels" ]; then
  site="$(cd "$out" && pwd)/.site"
  python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
missing=$(python -c 'import importlib.util as u; print(*[m for m in ("trl", "datasets") if not u.find_spec(m)])')
if [ -n "$missing" ]; then
  echo "gpu_bench.sh: error: $missing not installed; give --wheels DIR (filled by --fetch-wheels DIR)" >&2
  exit 2
fi
timeout "$limit" python scripts/gpu_bench.py --out_dir "$out" ${pass[@]+"${pass[@]}"}
