#!/usr/bin/env bash
# Build the llm-blender reference environment and check prefopt's PairRM judge against llm-blender's own code.
#
#   bash scripts/pairrm_env.sh              # create .venv-pairrm (if missing), then run tests/test_pairrm_parity.py
#   PAIRRM_ENV=/path/to/env bash scripts/pairrm_env.sh
#   bash scripts/pairrm_env.sh --no-test    # build only
#   bash scripts/pairrm_env.sh -- -k logits # extra pytest arguments after "--"
#
# Why a separate environment: llm-blender (PairRM's own package, last release 0.0.2) needs transformers 4 (its
# imports break on 5, trl#4918), while prefopt needs transformers 5. So the reference side runs in .venv-pairrm
# (torch, llm-blender, transformers 4; no prefopt) as a subprocess: scripts/pairrm_reference.py scores fixed rows
# there, and the test, run by the main environment's Python (MAIN_PYTHON, default .venv/bin/python), compares
# prefopt's scores with them. The CPU torch comes from wherever pip already finds torch 2.13.0+cpu, else from
# PyTorch's CPU index (TORCH_INDEX): PyPI only has the CUDA build. Nothing is downloaded at test time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${PAIRRM_ENV:-$ROOT/.venv-pairrm}"
PYTHON="${PYTHON:-python3.11}"
TORCH_INDEX="${TORCH_INDEX-https://download.pytorch.org/whl/cpu}"  # empty: no extra index
# Every version of the environment as tested (empty: resolve the newest, e.g. to refresh the file).
PAIRRM_CONSTRAINTS="${PAIRRM_CONSTRAINTS-$ROOT/constraints-pairrm.txt}"
if [[ -z "${MAIN_PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then MAIN_PYTHON="$ROOT/.venv/bin/python"; else MAIN_PYTHON=python3; fi
fi
RUN_TESTS=1
PYTEST_ARGS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-test) RUN_TESTS=0 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

# The marker is written last, so an interrupted build is redone rather than used (the test looks for it too).
if [[ ! -f "$ENV_DIR/.pairrm-env-built" ]]; then
    start=$(date +%s)
    rm -rf "$ENV_DIR"
    "$PYTHON" -m venv "$ENV_DIR"
    echo '*' > "$ENV_DIR/.gitignore"  # git ignores the environment wherever it is (as Python >= 3.13's venv does)
    PIP=("$ENV_DIR/bin/python" -m pip)
    "${PIP[@]}" install --quiet --upgrade pip
    # 1. The CPU torch first, so nothing below pulls the CUDA wheel.
    "${PIP[@]}" install --quiet "torch==2.13.0+cpu" \
        || "${PIP[@]}" install --quiet "torch==2.13.0+cpu" ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"}
    # 2. llm-blender with a transformers 4 (its setup.py leaves transformers unpinned, which now resolves to 5).
    "${PIP[@]}" install --quiet "llm-blender==0.0.2" "transformers>=4.36,<5" \
        ${PAIRRM_CONSTRAINTS:+-c "$PAIRRM_CONSTRAINTS"}
    # 3. It must import as the reference script uses it (Blender, the collator, DebertaV2PairRM).
    "$ENV_DIR/bin/python" -c "import llm_blender, llm_blender.pair_ranker.pairrm, llm_blender.blender.blender_utils"
    touch "$ENV_DIR/.pairrm-env-built"
    echo "llm-blender environment built in $(( $(date +%s) - start )) s: $ENV_DIR"
fi

if [[ $RUN_TESTS == 1 ]]; then
    cd "$ROOT"
    PAIRRM_ENV="$ENV_DIR" "$MAIN_PYTHON" -m pytest -p no:cacheprovider -q -s tests/test_pairrm_parity.py \
        "${PYTEST_ARGS[@]}"
fi
