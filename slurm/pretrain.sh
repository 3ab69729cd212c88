#!/usr/bin/env bash
# HeartBEiT masked-image-modeling pretraining as one Slurm job: multi-node, DeepSpeed ZeRO, requeued on
# preemption or at the time limit, resuming from its last checkpoint.
#
#   sbatch slurm/pretrain.sh --profile paper [more `heartbeit pretrain` arguments]
#   sbatch --nodes=4 --gpus-per-node=8 --cpus-per-task=88 --mem=224G slurm/pretrain.sh --profile paper
#     (torchrun: one task per node with every rank's loader workers: 8 ranks x (10 workers + 1) CPUs;
#      `heartbeit slurm submit` sizes this from the profile and the site file)
#
# Two ways to start the ranks; pick with HEARTBEIT_LAUNCH (exported to the job by sbatch):
#
#   torchrun (default)  one Slurm task per node; each runs torchrun with HEARTBEIT_RANKS_PER_NODE workers
#                       (default: the node's GPUs, else its allocated CPUs). The rendezvous endpoint is the
#                       first host of `scontrol show hostnames $SLURM_JOB_NODELIST` (by its Slurm NodeAddr)
#                       and a port derived from the job id. Keep --ntasks-per-node=1 and give each task all
#                       the node's CPUs/GPUs.
#   srun                one Slurm task per rank: `sbatch --ntasks-per-node=R --cpus-per-task=C ...`. Each rank
#                       finds its rank / world size / local rank in SLURM_PROCID / SLURM_STEP_NUM_TASKS /
#                       SLURM_LOCALID (heartbeit/distributed/env.py); the master is the same first host.
#
# Preemption and time limits: `--signal=B:USR1@120` makes Slurm signal this shell 120 s before the limit
# (and `scancel --batch --signal=USR1 JOB` does the same by hand). The shell then creates
# $HEARTBEIT_STOP_FILE; every rank checks for it (and for USR1/TERM delivered to itself, e.g. by
# `scancel --signal=USR1 JOB`) once per step, all ranks agree on the step, save a checkpoint and exit,
# leaving $HEARTBEIT_CHECKPOINTED_FILE; this script then requeues the job (`--requeue`), which resumes from
# the checkpoint with the same data position, RNGs and schedule. Checkpoints must be on a filesystem every
# node sees (as --ckpt-dir / the run directory normally is).
#
# A restarted job (our requeue, a preemption, a node failure: SLURM_RESTART_COUNT > 0) appends
# HEARTBEIT_RESUME_ARG (default "--resume" for `heartbeit pretrain`, nothing for other entry points) so it
# continues from the checkpoint instead of refusing to overwrite it.
#
# GPUs: a profile that needs them (allow_cpu: false) refuses an allocation with fewer than its world_size
# (`heartbeit pretrain --check-allocation`), e.g. `sbatch slurm/pretrain.sh --profile paper` without
# --gpus-per-node; `--allow-fewer-gpus` (a `heartbeit pretrain` argument) proceeds with accumulation.
#
# Site settings: HEARTBEIT_SITE_SETUP names a file sourced before anything runs (module loads, conda
# activation). HEARTBEIT_PYTHON is the interpreter (default: the
# submit directory's .venv/bin/python, else python3 on PATH). HEARTBEIT_ENTRY is the
# Python entry point (default "-m heartbeit pretrain"); the test suite uses the distributed self-test.
#
#SBATCH --job-name=heartbeit-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=11
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
#SBATCH --output=heartbeit-pretrain-%j.out
##SBATCH --gpus-per-node=8
##SBATCH --partition=gpu
##SBATCH --account=my-lab
set -uo pipefail

if [[ -n ${HEARTBEIT_SITE_SETUP:-} ]]; then
  # shellcheck disable=SC1090
  source "$HEARTBEIT_SITE_SETUP"
fi
# The project's environment unless HEARTBEIT/HEARTBEIT_PYTHON say otherwise: the .venv of the checkout the
# job was submitted from (sbatch runs a spooled copy of this script, so the checkout is the submit directory,
# as in the README's commands; HEARTBEIT_ROOT names another), else python3 on PATH.
HB_ROOT=${HEARTBEIT_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
if [[ -x $HB_ROOT/.venv/bin/python ]]; then HB_PY=${HEARTBEIT_PYTHON:-$HB_ROOT/.venv/bin/python}; else HB_PY=${HEARTBEIT_PYTHON:-python3}; fi
PYTHON=$HB_PY
if ! "$PYTHON" -c 'import torch, heartbeit' 2>/dev/null; then
  echo "heartbeit-pretrain: $PYTHON cannot import torch and heartbeit: create the checkout's .venv (make" \
       "setup; docs/cluster.md), or set HEARTBEIT_PYTHON / the site file's python" >&2
  exit 2
fi
read -r -a ENTRY <<<"${HEARTBEIT_ENTRY:--m heartbeit pretrain}"
if [[ -z ${HEARTBEIT_ENTRY:-} || ${HEARTBEIT_ENTRY} == "-m heartbeit pretrain" ]]; then
  RESUME_ARG=${HEARTBEIT_RESUME_ARG---resume}
else
  RESUME_ARG=${HEARTBEIT_RESUME_ARG-}
fi
ARGS=("$@")
if (( ${SLURM_RESTART_COUNT:-0} > 0 )) && [[ -n $RESUME_ARG ]]; then ARGS+=("$RESUME_ARG"); fi
LAUNCH=${HEARTBEIT_LAUNCH:-torchrun}
: "${SLURM_JOB_ID:?run this script with sbatch}"

# A GPU profile refuses an allocation with fewer GPUs than its designed world size (or none) before any rank
# starts, with the steps and GPU-hours it would take (pass --allow-fewer-gpus to go on anyway).
if [[ ${ENTRY[*]} == "-m heartbeit pretrain" ]]; then
  "$PYTHON" -m heartbeit pretrain --check-allocation "${SLURM_NNODES:-1}" "${SLURM_GPUS_ON_NODE:-0}" "${ARGS[@]}" \
    || exit 2
fi

# The rendezvous host: the first node of the allocation, by the address Slurm itself uses to reach it.
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
HEAD_ADDR=$(scontrol show node "$HEAD" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p' | head -n1)
export MASTER_ADDR=${MASTER_ADDR:-${HEAD_ADDR:-$HEAD}}
export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# Node-local on the batch node: ranks there see the stop file (and tell the others through an all-reduce),
# and every rank leaves the "checkpointed" marker, so one always lands here.
SIGNAL_DIR=${HEARTBEIT_SIGNAL_DIR:-${TMPDIR:-/tmp}/heartbeit-signals}/$SLURM_JOB_ID
export HEARTBEIT_STOP_FILE=$SIGNAL_DIR/stop
export HEARTBEIT_CHECKPOINTED_FILE=$SIGNAL_DIR/checkpointed
rm -rf "$SIGNAL_DIR" && mkdir -p "$SIGNAL_DIR"

echo "heartbeit-pretrain: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST}," \
     "launch=$LAUNCH, master $MASTER_ADDR:$MASTER_PORT, $(date -Is)"

on_signal() {
  echo "heartbeit-pretrain: caught $1: asking every rank to checkpoint and stop"
  touch "$HEARTBEIT_STOP_FILE"
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

case $LAUNCH in
  torchrun)
    RANKS_PER_NODE=${HEARTBEIT_RANKS_PER_NODE:-${SLURM_GPUS_ON_NODE:-${SLURM_CPUS_PER_TASK:-1}}}
    # torchrun would die of a USR1 (it only handles TERM/INT/HUP/QUIT); ignoring it there keeps the
    # agent alive while its workers, which install their own handler, checkpoint.
    srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c 'trap "" USR1; exec "$@"' torchrun \
      "$PYTHON" -m torch.distributed.run --nnodes="$SLURM_NNODES" --nproc_per_node="$RANKS_PER_NODE" \
      --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id="$SLURM_JOB_ID" \
      "${ENTRY[@]}" "${ARGS[@]}" &
    ;;
  srun)
    srun --kill-on-bad-exit=1 "$PYTHON" "${ENTRY[@]}" "${ARGS[@]}" &
    ;;
  *)
    echo "heartbeit-pretrain: HEARTBEIT_LAUNCH must be torchrun or srun, not '$LAUNCH'" >&2
    exit 2
    ;;
esac
STEP_PID=$!
# `wait` returns early when a trapped signal arrives; keep waiting until the step itself has ended.
while true; do
  wait "$STEP_PID"
  rc=$?
  kill -0 "$STEP_PID" 2>/dev/null || break
done

if [[ -e $HEARTBEIT_CHECKPOINTED_FILE ]]; then
  echo "heartbeit-pretrain: checkpointed before stopping; requeueing job $SLURM_JOB_ID"
  rm -rf "$SIGNAL_DIR"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
rm -rf "$SIGNAL_DIR"
echo "heartbeit-pretrain: finished with exit code $rc, $(date -Is)"
exit "$rc"
