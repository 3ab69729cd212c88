#!/usr/bin/env bash
# Render image shards over many nodes as a Slurm array: every task computes the same deterministic plan
# (splits, fractions, shard assignment) from the corpus metadata, renders the shards i with
# i % SLURM_ARRAY_TASK_COUNT == task, and writes each tar atomically with a sidecar. The task that
# completes the last shard writes IMAGES/index.json. Re-submitting skips complete shards (sidecar digest
# + sha256) and redoes missing or damaged ones; settings changes redo every shard.
#
#   slurm/render.sh submit [--tasks N] CORPUS IMAGES [-- EXTRA heartbeit render ARGS]   (on a login node)
#   sbatch --array=0-$((N-1)) slurm/render.sh task CORPUS IMAGES [-- EXTRA]             (what submit runs)
#
# EXTRA carries the run configuration, e.g. -- --profile paper --set render.image_size=224
# HEARTBEIT overrides the command (default: the checkout's .venv/bin/python -m heartbeit).
#SBATCH --job-name=heartbeit-render
#SBATCH --cpus-per-task=16
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%x-%A_%a.out
set -euo pipefail

# The project's environment unless HEARTBEIT/HEARTBEIT_PYTHON say otherwise: the .venv of the checkout the
# job was submitted from (sbatch runs a spooled copy of this script, so the checkout is the submit directory,
# as in the README's commands; HEARTBEIT_ROOT names another), else python3 on PATH.
HB_ROOT=${HEARTBEIT_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
if [[ -x $HB_ROOT/.venv/bin/python ]]; then HB_PY=${HEARTBEIT_PYTHON:-$HB_ROOT/.venv/bin/python}; else HB_PY=${HEARTBEIT_PYTHON:-python3}; fi
HEARTBEIT=${HEARTBEIT:-$HB_PY -m heartbeit}
mode=${1:?usage: render.sh submit|task ...}
shift

split_args() {  # positional args before "--" -> POS, after -> EXTRA
  POS=(); EXTRA=()
  local seen=0
  for a in "$@"; do
    if [[ $seen == 0 && $a == "--" ]]; then seen=1; continue; fi
    if [[ $seen == 0 ]]; then POS+=("$a"); else EXTRA+=("$a"); fi
  done
}

case "$mode" in
  submit)
    tasks=8
    if [[ ${1:-} == --tasks ]]; then tasks=$2; shift 2; fi
    split_args "$@"
    (( ${#POS[@]} == 2 )) || { echo "usage: render.sh submit [--tasks N] CORPUS IMAGES [-- EXTRA]" >&2; exit 2; }
    script=$(readlink -f "${BASH_SOURCE[0]}")
    # plan once (splits, shard assignment, signal locations; IMAGES/plan/), then every task reads its slice
    wrap=$(printf '%q ' $HEARTBEIT render --plan-only --num-tasks "${tasks}" --corpus "${POS[0]}" \
           --out "${POS[1]}" --no-progress "${EXTRA[@]}")
    plan=$(sbatch --parsable --job-name=heartbeit-render-plan --wrap "$wrap")
    job=$(sbatch --parsable --dependency=afterok:${plan} --array=0-$((tasks - 1)) "$script" task "${POS[@]}" \
          -- "${EXTRA[@]}")
    echo "render plan job ${plan}, array job ${job} (${tasks} tasks) -> ${POS[1]}"
    ;;
  task)
    split_args "$@"
    (( ${#POS[@]} == 2 )) || { echo "usage: render.sh task CORPUS IMAGES [-- EXTRA]" >&2; exit 2; }
    : "${SLURM_ARRAY_TASK_ID:?task mode runs inside a Slurm array (SLURM_ARRAY_TASK_ID unset)}"
    : "${SLURM_ARRAY_TASK_COUNT:?SLURM_ARRAY_TASK_COUNT unset}"
    export OMP_NUM_THREADS=1
    # heartbeit render reads SLURM_ARRAY_TASK_ID/_MIN/_COUNT itself; one process per allocated core.
    exec $HEARTBEIT render --corpus "${POS[0]}" --out "${POS[1]}" --no-progress \
         --workers "${SLURM_CPUS_PER_TASK:-0}" "${EXTRA[@]}"
    ;;
  *)
    echo "unknown mode $mode (submit | task)" >&2; exit 2 ;;
esac
