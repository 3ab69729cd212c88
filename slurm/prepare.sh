#!/usr/bin/env bash
# The study's data preparation as one CPU job: synthetic ECGs (unless the config names real input_dirs),
# ingest, render + image shards, tokenizer train + encode. It is `heartbeit run --until tokenizer`, i.e.
# exactly the local path's stages in the local path's order; each stage skips work already complete for
# the same config, so a requeued or resubmitted job continues where the last one stopped.
#
#   sbatch slurm/prepare.sh --profile paper --workdir /scratch/$USER/heartbeit [--set key=value ...]
#
# Tokenizer training uses the job's GPU when it has one, else every CPU it was given; it saves its state at
# each evaluation point and, when Slurm signals this shell before the time limit (--signal=B:USR1@300), at
# the current step; the job then requeues itself and continues to the same tokenizer bytes.
#
# For corpora too large for one node, run the stages as arrays instead (slurm/ingest.sh, slurm/render.sh)
# and submit the rest of the chain after them.
#
# HEARTBEIT is the command (default: the checkout's .venv/bin/python -m heartbeit), e.g.
# HEARTBEIT="/path/to/venv/bin/python -m heartbeit".
# HEARTBEIT_SITE_SETUP names a file sourced first (module loads, conda activation).
#SBATCH --job-name=heartbeit-prepare
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=16
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=heartbeit-prepare-%j.out
##SBATCH --partition=cpu
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
read -r -a HB <<<"${HEARTBEIT:-$HB_PY -m heartbeit}"  # the command as words; HEARTBEIT stays exported
# Stages use their configured worker processes (0 = every core the job may use), each single-threaded.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

echo "heartbeit-prepare: job ${SLURM_JOB_ID:-local} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname -s), $(date -Is)"
UNTIL=${HEARTBEIT_PREPARE_UNTIL:-tokenizer}  # `heartbeit slurm submit`: train only (encoding is an array)
SIGNAL_DIR=${HEARTBEIT_SIGNAL_DIR:-${TMPDIR:-/tmp}/heartbeit-signals}/${SLURM_JOB_ID:-local-$$}
export HEARTBEIT_STOP_FILE=$SIGNAL_DIR/stop HEARTBEIT_CHECKPOINTED_FILE=$SIGNAL_DIR/checkpointed
rm -rf "$SIGNAL_DIR" && mkdir -p "$SIGNAL_DIR"
trap 'echo "heartbeit-prepare: caught USR1: asking the tokenizer to checkpoint and stop"; touch "$HEARTBEIT_STOP_FILE"' USR1
trap 'echo "heartbeit-prepare: caught TERM"; touch "$HEARTBEIT_STOP_FILE"' TERM
if [[ $UNTIL == tokenizer-train ]]; then
  { "${HB[@]}" run --until render --no-progress "$@" && "${HB[@]}" tokenizer train --no-progress "$@"; } &
else
  "${HB[@]}" run --until "$UNTIL" --no-progress "$@" &
fi
STEP_PID=$!
while true; do  # in the background, so the trap runs while the stages work; wait until they have ended
  wait "$STEP_PID"
  rc=$?
  kill -0 "$STEP_PID" 2>/dev/null || break
done
if [[ -e $HEARTBEIT_CHECKPOINTED_FILE && -n ${SLURM_JOB_ID:-} ]]; then
  echo "heartbeit-prepare: checkpointed before stopping; requeueing job $SLURM_JOB_ID, $(date -Is)"
  rm -rf "$SIGNAL_DIR"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
rm -rf "$SIGNAL_DIR"
(( rc == 0 )) || { echo "heartbeit-prepare: failed (exit $rc), $(date -Is)" >&2; exit "$rc"; }
echo "heartbeit-prepare: done, $(date -Is)"
