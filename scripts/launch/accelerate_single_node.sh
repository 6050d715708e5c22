#!/usr/bin/env bash
# Train on the GPUs of one machine with `accelerate launch` (one process per GPU).
#
#   scripts/launch/accelerate_single_node.sh ALGO RECIPE [extra prefopt flags ...]
#
#   scripts/launch/accelerate_single_node.sh sppo configs/recipes/sppo_mistral-7b-instruct_zero3_vllm.yaml
#   NUM_GPUS=4 scripts/launch/accelerate_single_node.sh grao configs/recipes/grao_qwen2.5-7b.yaml \
#       --output_dir runs/grao-4gpu --gradient_accumulation_steps 16   # 4 GPUs, global batch 64 kept
#   ZERO=2 scripts/launch/accelerate_single_node.sh gvm_raft configs/recipes/gvm_raft_qwen2.5-math-1.5b.yaml
#   ZERO=ddp scripts/launch/accelerate_single_node.sh egpo configs/recipes/egpo_qwen2.5-1.5b-instruct-sft.yaml
#
# Environment:
#   NUM_GPUS  processes = GPUs to use (default: every GPU nvidia-smi lists). Recipes state their global batch for 8;
#             with fewer GPUs raise gradient_accumulation_steps to keep it (global batch = per_device_train_batch_size
#             × gradient_accumulation_steps × NUM_GPUS).
#   ZERO      3 (default), 2, or ddp: picks configs/accelerate/{zero3,zero2,multi_gpu}.yaml AND passes the matching
#             --deepspeed configs/deepspeed/zero{3,2}.json (or --deepspeed none) to prefopt, so the launcher and the
#             run config always agree, whatever the recipe's deepspeed key says.
#   PORT      rendezvous port (default 29500); give each concurrent job on a machine its own.
#   ACCELERATE  the accelerate command (default: accelerate, from the active environment).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 ALGO RECIPE [--key value ...]   (env: NUM_GPUS, ZERO=3|2|ddp, PORT)" >&2
  exit 2
fi
ALGO=$1
RECIPE=$2
shift 2

# Run from the repository root: recipes name configs/deepspeed/*.json by relative path.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

ACCELERATE=${ACCELERATE:-accelerate}
ZERO=${ZERO:-3}
PORT=${PORT:-29500}
if [[ -z ${NUM_GPUS:-} ]]; then
  # nvidia-smi -L prints one line per visible GPU; honour CUDA_VISIBLE_DEVICES when it is set.
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    NUM_GPUS=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
  else
    NUM_GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  fi
fi
if [[ ${NUM_GPUS:-0} -lt 1 ]]; then
  echo "no GPU found: set NUM_GPUS, or use scripts/launch/cpu_two_process.sh on a CPU machine" >&2
  exit 2
fi

case $ZERO in
  3) ACCELERATE_CONFIG=configs/accelerate/zero3.yaml DEEPSPEED=configs/deepspeed/zero3.json ;;
  2) ACCELERATE_CONFIG=configs/accelerate/zero2.yaml DEEPSPEED=configs/deepspeed/zero2.json ;;
  # Plain DDP: every GPU holds the whole model and optimizer state (16 bytes per parameter), so for models up to
  # ~1.5B on 80 GB; with a bfloat16 recipe pass --dtype float32 too (DDP keeps no fp32 master copy of the weights).
  ddp | 0) ACCELERATE_CONFIG=configs/accelerate/multi_gpu.yaml DEEPSPEED=none ;;
  *)
    echo "ZERO must be 3, 2 or ddp, got '$ZERO'" >&2
    exit 2
    ;;
esac

# --num_processes overrides the config file's 8; --main_process_port its default port. Flags after the recipe
# override it (prefopt: YAML gives defaults, flags override), and the --deepspeed flag comes first so that a
# --deepspeed in "$@" would still win (then keep ZERO consistent with it yourself).
set -x
exec "$ACCELERATE" launch --config_file "$ACCELERATE_CONFIG" --num_processes "$NUM_GPUS" --main_process_port "$PORT" \
  -m prefopt.cli train "$ALGO" --config "$RECIPE" --deepspeed "$DEEPSPEED" "$@"
