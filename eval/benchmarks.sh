#!/usr/bin/env bash
# The three benchmarks the SPPO, INPO and APO papers report, for a trained run directory's final policy, with the
# shipped presets (eval/presets/README.md): AlpacaEval 2.0 (LC), Arena-Hard-Auto v0.1 and MT-Bench.
#
#   eval/benchmarks.sh RUN_DIR OUT_DIR [flags for every command ...]
#
# Needs local copies of the benchmarks' files (prefopt ships and downloads none), named by:
#   ALPACA_EVAL_DATA  a folder with alpaca_eval_gpt4_baseline.json and df_gamed.csv (HF dataset tatsu-lab/alpaca_eval)
#   ARENA_HARD_AUTO   an arena-hard-auto checkout at its v0.1 commit 0489bf3 (config/judge_config.yaml, data/)
#   FASTCHAT          a FastChat checkout (fastchat/llm_judge/data/)
# and the judges' endpoint: OPENAI_API_KEY, or flags such as --judge_base_url http://host:8000/v1 --judge_model M
# for a model served with `vllm serve`. Optional:
#   BENCHMARKS        which to run (default "alpaca_eval arena_hard mt_bench")
#   PAPER_PRESET      a paper's AlpacaEval decoding, e.g. eval/presets/sppo.yaml (AlpacaEval only: see the README)
#   ALPACA_EVAL_FLAGS, ARENA_HARD_FLAGS, MT_BENCH_FLAGS   extra flags of one command
# Writes OUT_DIR/alpaca_eval_2, OUT_DIR/arena_hard_v0.1, OUT_DIR/mt_bench and OUT_DIR/summary.md.
set -euo pipefail
RUN=${1:?usage: eval/benchmarks.sh RUN_DIR OUT_DIR [flags ...]}
OUT=${2:?usage: eval/benchmarks.sh RUN_DIR OUT_DIR [flags ...]}
shift 2
MODEL="$RUN/final"
if [[ ! -d "$MODEL" ]]; then
    echo "eval/benchmarks.sh: error: '$RUN' holds no final policy ($MODEL): give a finished prefopt run directory" >&2
    exit 2
fi
NAME=$(basename "$(cd "$RUN" && pwd)")
PRESETS="$(cd "$(dirname "$0")" && pwd)/presets"
PAPER=()
if [[ -n "${PAPER_PRESET:-}" ]]; then PAPER=(--preset "$PAPER_PRESET"); fi
for benchmark in ${BENCHMARKS:-alpaca_eval arena_hard mt_bench}; do
    case "$benchmark" in
    alpaca_eval)
        # shellcheck disable=SC2086  # the extra flags are words
        prefopt eval --preset "$PRESETS/alpaca_eval_2.yaml" "${PAPER[@]}" --models "$NAME=$MODEL" \
            --output_dir "$OUT/alpaca_eval_2" ${ALPACA_EVAL_FLAGS:-} "$@" ;;
    arena_hard)
        # shellcheck disable=SC2086
        prefopt arena-hard --preset "$PRESETS/arena_hard_v0.1.yaml" --models "$NAME=$MODEL" \
            --output_dir "$OUT/arena_hard_v0.1" ${ARENA_HARD_FLAGS:-} "$@" ;;
    mt_bench)
        # shellcheck disable=SC2086
        prefopt mt-bench --preset "$PRESETS/mt_bench.yaml" --models "$NAME=$MODEL" \
            --output_dir "$OUT/mt_bench" ${MT_BENCH_FLAGS:-} "$@" ;;
    *)
        echo "eval/benchmarks.sh: error: unknown benchmark '$benchmark' in BENCHMARKS (alpaca_eval arena_hard mt_bench)" >&2
        exit 2 ;;
    esac
done
python3 "$(dirname "$0")/summarize_benchmarks.py" "$OUT" "$NAME" | tee "$OUT/summary.md"
