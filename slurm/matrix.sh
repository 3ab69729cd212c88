#!/usr/bin/env bash
# The benchmark matrix as a Slurm array: array task i runs cell i of <workdir>/matrix/plan.json
# (`heartbeit matrix plan` lists the cells in a fixed order: task, fraction, architecture, seed), so
# indices map to cells deterministically. A cell already complete for the same id is skipped and a partial
# one redone, so a requeued (preempted, node-failed) or resubmitted task never repeats finished work.
#
#   slurm/matrix.sh submit [--parallel K] [SBATCH-OPTIONS... --] RUN-ARGS...
#                                                          plan here (login node), then submit the array
#   sbatch slurm/matrix.sh plan [--expect N] RUN-ARGS...  plan as a job; --expect fails it unless N cells
#   sbatch --array=0-$((N-1))%K slurm/matrix.sh RUN-ARGS... one cell per array task (what submit runs)
#
# RUN-ARGS are `heartbeit matrix` arguments, e.g. --profile paper --workdir /scratch/$USER/heartbeit.
# `heartbeit slurm submit` chains plan -> array -> report after pretraining.
#
# Time limits and preemption: a cell saves a mid-cell checkpoint every matrix.checkpoint_minutes and when
# asked to stop. `--signal=B:USR1@600` makes Slurm signal this shell 600 s before the limit (enough for the
# current step, a validation pass in progress and the save; `scancel --batch --signal=USR1 JOB` does the
# same by hand); the shell creates $HEARTBEIT_STOP_FILE, the cell checkpoints at the end of its step and
# leaves $HEARTBEIT_CHECKPOINTED_FILE, and this script requeues the task, which resumes the cell exactly
# (heartbeit/train/cell_checkpoint.py). A preemption's SIGTERM reaches the cell itself and does the same.
#
# HEARTBEIT is the command (default: the checkout's .venv/bin/python -m heartbeit), e.g.
# HEARTBEIT="/path/to/venv/bin/python -m heartbeit".
# HEARTBEIT_SITE_SETUP names a file sourced first (module loads, conda activation).
#SBATCH --job-name=heartbeit-matrix
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=08:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@600
#SBATCH --open-mode=append
#SBATCH --output=heartbeit-matrix-%A_%a.out
##SBATCH --gpus-per-node=1
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
read -r -a HB <<<"${HEARTBEIT:-$HB_PY -m heartbeit}"  # the command as words; HEARTBEIT stays exported

mode=cell
case ${1:-} in
  plan|submit|cell) mode=$1; shift ;;
esac

plan() {  # plan RUN-ARGS...: write the plan, print it, and set CELLS to its cell count
  local out
  out=$("${HB[@]}" matrix plan "$@") || exit $?
  echo "$out"
  CELLS=$(sed -n 's/^\([0-9][0-9]*\) cells -> .*/\1/p' <<<"$out" | tail -n1)
  [[ -n $CELLS ]] || { echo "heartbeit-matrix: no cell count in the output of 'heartbeit matrix plan'" >&2; exit 1; }
}

case $mode in
  plan)
    expect=""
    if [[ ${1:-} == --expect ]]; then expect=$2; shift 2; fi
    plan "$@"
    if [[ -n $expect && $CELLS != "$expect" ]]; then
      # The array was sized from the config at submission; a different plan would skip or overrun cells.
      echo "heartbeit-matrix: the plan has $CELLS cells but the array was submitted for $expect" >&2
      exit 1
    fi
    ;;
  submit)
    parallel=""
    if [[ ${1:-} == --parallel ]]; then parallel="%$2"; shift 2; fi
    opts=()
    if [[ " $* " == *" -- "* ]]; then  # sbatch options (e.g. --partition=gpu --time=2:00:00) before "--"
      while [[ $1 != -- ]]; do opts+=("$1"); shift; done
      shift
    fi
    plan "$@"
    script=$(readlink -f "${BASH_SOURCE[0]}")
    job=$(sbatch --parsable --array=0-$((CELLS - 1))$parallel "${opts[@]}" "$script" cell "$@") || exit $?
    echo "matrix array job ${job%%;*}: $CELLS cells (--array=0-$((CELLS - 1))$parallel)"
    ;;
  cell)
    : "${SLURM_ARRAY_TASK_ID:?cell mode runs inside a Slurm array (sbatch --array=...); SLURM_ARRAY_TASK_ID unset}"
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
    echo "heartbeit-matrix: job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} (restart ${SLURM_RESTART_COUNT:-0})" \
         "on $(hostname -s), $(date -Is)"
    # Node-local: the cell process sees the stop file and leaves the "checkpointed" marker here.
    SIGNAL_DIR=${HEARTBEIT_SIGNAL_DIR:-${TMPDIR:-/tmp}/heartbeit-signals}/$SLURM_JOB_ID
    export HEARTBEIT_STOP_FILE=$SIGNAL_DIR/stop
    export HEARTBEIT_CHECKPOINTED_FILE=$SIGNAL_DIR/checkpointed
    rm -rf "$SIGNAL_DIR" && mkdir -p "$SIGNAL_DIR"
    on_signal() {
      echo "heartbeit-matrix: caught $1: asking the cell to checkpoint and stop"
      touch "$HEARTBEIT_STOP_FILE"
    }
    trap 'on_signal USR1' USR1
    trap 'on_signal TERM' TERM
    # In the background, so the shell runs its trap while the cell trains (bash defers traps until a
    # foreground command returns); `wait` returns early on a trapped signal, so wait until the cell ends.
    "${HB[@]}" matrix run --array-index "$SLURM_ARRAY_TASK_ID" "$@" &
    CELL_PID=$!
    while true; do
      wait "$CELL_PID"
      rc=$?
      kill -0 "$CELL_PID" 2>/dev/null || break
    done
    if [[ -e $HEARTBEIT_CHECKPOINTED_FILE ]]; then
      echo "heartbeit-matrix: the cell checkpointed before stopping; requeueing job $SLURM_JOB_ID, $(date -Is)"
      rm -rf "$SIGNAL_DIR"
      scontrol requeue "$SLURM_JOB_ID"
      exit 0
    fi
    rm -rf "$SIGNAL_DIR"
    if (( rc != 0 )); then
      echo "heartbeit-matrix: array task $SLURM_ARRAY_TASK_ID failed (exit $rc), $(date -Is)" >&2
      exit "$rc"
    fi
    echo "heartbeit-matrix: array task $SLURM_ARRAY_TASK_ID done, $(date -Is)"
    ;;
esac
