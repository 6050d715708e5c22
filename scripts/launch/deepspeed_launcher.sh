#!/usr/bin/env bash
# Train with DeepSpeed's own launcher: one machine, or several listed in a hostfile (reached over passwordless ssh
# with pdsh, DeepSpeed's default multi-node backend).
#
#   scripts/launch/deepspeed_launcher.sh ALGO RECIPE [extra prefopt flags ...]
#
#   scripts/launch/deepspeed_launcher.sh sppo configs/recipes/sppo_mistral-7b-instruct_zero3_vllm.yaml
#   HOSTFILE=scripts/launch/hostfile.example NUM_NODES=2 \
#       scripts/launch/deepspeed_launcher.sh sppo configs/recipes/sppo_mistral-7b-instruct_zero3_vllm.yaml \
#       --gradient_accumulation_steps 1 --per_device_train_batch_size 4
#   NUM_GPUS=2 ZERO=3 scripts/launch/deepspeed_launcher.sh sppo configs/quickstart.yaml \
#       --model_name_or_path runs/tiny-model      # also runs on a CPU machine (gloo), 2 processes
#
# Environment:
#   NUM_GPUS   processes per node (deepspeed --num_gpus; default: every GPU of each node).
#   NUM_NODES  nodes to use from HOSTFILE (default: all of them).
#   HOSTFILE   MPI-style hostfile, one "hostname slots=GPUS" line per node (scripts/launch/hostfile.example). Without
#              it the run stays on this machine.
#   ZERO       3 (default) or 2: passes --deepspeed configs/deepspeed/zero{3,2}.json to prefopt (the deepspeed
#              launcher only starts processes; prefopt's Backend builds the engine from that file).
#   MASTER_ADDR, PORT  address of the first node and the rendezvous port (defaults: DeepSpeed infers the address
#              from the hostfile's first host; port 29500).
#   DEEPSPEED  the deepspeed command (default: deepspeed, from the active environment).
#
# Every node must see the repository at the same path and the same Python environment; DeepSpeed's pdsh runner cds
# into this directory there. Environment variables (HF_HOME, NCCL_*) reach the other nodes only through a
# .deepspeed_env file (one NAME=VALUE per line) in this directory or in your home directory.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 ALGO RECIPE [--key value ...]   (env: NUM_GPUS, NUM_NODES, HOSTFILE, ZERO=3|2, MASTER_ADDR, PORT)" >&2
  exit 2
fi
ALGO=$1
RECIPE=$2
shift 2

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

DEEPSPEED=${DEEPSPEED:-deepspeed}
ZERO=${ZERO:-3}
case $ZERO in
  3 | 2) DEEPSPEED_CONFIG=configs/deepspeed/zero$ZERO.json ;;
  *)
    echo "ZERO must be 3 or 2, got '$ZERO' (for plain DDP use accelerate_single_node.sh with ZERO=ddp)" >&2
    exit 2
    ;;
esac

launcher_args=(--master_port "${PORT:-29500}")
[[ -n ${NUM_GPUS:-} ]] && launcher_args+=(--num_gpus "$NUM_GPUS")
[[ -n ${NUM_NODES:-} ]] && launcher_args+=(--num_nodes "$NUM_NODES")
[[ -n ${MASTER_ADDR:-} ]] && launcher_args+=(--master_addr "$MASTER_ADDR")
if [[ -n ${HOSTFILE:-} ]]; then
  launcher_args+=(--hostfile "$HOSTFILE")
else
  # No hostfile: make that explicit, so a stray /job/hostfile (DeepSpeed's default path) is not picked up.
  launcher_args+=(--hostfile /dev/null)
fi

# --module: run `python -m prefopt.cli` in each process (the launcher wants a script path otherwise).
# --no_local_rank: the launcher would append --local_rank=N to the command line, which prefopt's flag parser rejects
#   ("unknown config key 'local_rank'"); prefopt's Backend reads LOCAL_RANK, RANK, WORLD_SIZE, MASTER_ADDR and
#   MASTER_PORT from the environment, which the launcher sets in every process.
set -x
exec "$DEEPSPEED" "${launcher_args[@]}" --module --no_local_rank \
  prefopt.cli train "$ALGO" --config "$RECIPE" --deepspeed "$DEEPSPEED_CONFIG" "$@"
