#!/usr/bin/env bash
# AlpacaEval 2.0 with prefopt: generate, judge against GPT-4 Turbo's reference outputs, length-controlled win rate.
#
#   eval/alpaca_eval_2.sh MODEL OUT_DIR [prefopt eval flags ...]
#
# Needs local copies of AlpacaEval's files (prefopt never downloads them), from the Hub dataset tatsu-lab/alpaca_eval:
#   ALPACA_EVAL_SET   alpaca_eval_gpt4_baseline.json (805 instructions; its `output` field is GPT-4 Turbo's reference,
#                     the baseline of AlpacaEval 2.0; the dataset's alpaca_eval.json is the 1.0 set)
#   ALPACA_EVAL_LC    df_gamed.csv (per-instruction difficulty and gamed annotations: the full LC GLM, v1)
# and a judge: by default a reward model (JUDGE_MODEL), e.g. a Skywork or ArmoRM reward model folder.
# AlpacaEval's generation settings for most chat models: greedy up to 2048 new tokens (override with flags).
set -euo pipefail
MODEL=${1:?usage: alpaca_eval_2.sh MODEL OUT_DIR [flags]}
OUT=${2:?usage: alpaca_eval_2.sh MODEL OUT_DIR [flags]}
shift 2
: "${ALPACA_EVAL_SET:?set ALPACA_EVAL_SET to a local alpaca_eval_gpt4_baseline.json}"
: "${JUDGE_MODEL:?set JUDGE_MODEL to a reward model folder or Hub id}"
LC_FLAGS=()
if [[ -n "${ALPACA_EVAL_LC:-}" ]]; then LC_FLAGS=(--lc_data "$ALPACA_EVAL_LC"); fi

prefopt eval --eval_set "$ALPACA_EVAL_SET" \
    --models "$MODEL" --baseline "$ALPACA_EVAL_SET" \
    --judge reward_model --judge_model_name_or_path "$JUDGE_MODEL" \
    --max_new_tokens 2048 --temperature 0 "${LC_FLAGS[@]}" \
    --output_dir "$OUT" "$@"

# The same generations, re-annotated by AlpacaEval's own GPT-4 Turbo annotator (needs OPENAI_API_KEY):
NAME=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["leaderboard"][0]["generator"])' "$OUT/results.json")
FOLDER=$(python3 -c 'import re,sys; print(re.sub(r"[^A-Za-z0-9._-]+", "_", sys.argv[1]).strip("_"))' "$NAME")
echo "Official re-scoring of the same outputs:"
echo "  alpaca_eval --model_outputs $OUT/$FOLDER/model_outputs.json --annotators_config weighted_alpaca_eval_gpt4_turbo"
