#!/usr/bin/env bash
# Ingest over many nodes as a Slurm array: each array task reads a deterministic, contiguous slice of the
# sorted input listing and writes its own part corpus (<OUT>.parts/task-NNNNN/: shards, metadata,
# rejects); a dependent merge job joins the parts into <OUT> (shards renumbered, recordings duplicated
# across tasks moved to rejects). Re-submitting skips finished parts (each task is a no-op when its part
# is up to date) and resumes interrupted ones from their ledger.
#
#   slurm/ingest.sh submit [--tasks N] OUT INPUT... [-- EXTRA heartbeit ingest ARGS]   (on a login node)
#   sbatch --array=0-$((N-1)) slurm/ingest.sh task OUT INPUT... [-- EXTRA]             (what submit runs)
#   sbatch --dependency=afterok:JOBID slurm/ingest.sh merge OUT [-- EXTRA]
#
# Every task must see the same listing: do not add files to the inputs while the array runs.
# HEARTBEIT overrides the command (default: the checkout's .venv/bin/python -m heartbeit).
#SBATCH --job-name=heartbeit-ingest
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
mode=${1:?usage: ingest.sh submit|task|merge ...}
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
    (( ${#POS[@]} >= 2 )) || { echo "usage: ingest.sh submit [--tasks N] OUT INPUT..." >&2; exit 2; }
    script=$(readlink -f "${BASH_SOURCE[0]}")
    array_job=$(sbatch --parsable --array=0-$((tasks - 1)) "$script" task "${POS[@]}" -- "${EXTRA[@]}")
    merge_job=$(sbatch --parsable --dependency=afterok:"${array_job%%;*}" --job-name=heartbeit-ingest-merge \
                "$script" merge "${POS[0]}" -- "${EXTRA[@]}")
    echo "array job ${array_job} (${tasks} tasks), merge job ${merge_job}"
    ;;
  task)
    split_args "$@"
    out=${POS[0]}
    : "${SLURM_ARRAY_TASK_ID:?task mode runs inside a Slurm array (SLURM_ARRAY_TASK_ID unset)}"
    : "${SLURM_ARRAY_TASK_COUNT:?SLURM_ARRAY_TASK_COUNT unset}"
    export OMP_NUM_THREADS=1
    # heartbeit reads SLURM_ARRAY_TASK_ID/_MIN/_COUNT itself (--array); workers default to the cores given.
    exec $HEARTBEIT ingest "${POS[@]:1}" --out "$out" --array --no-progress \
         --workers "${SLURM_CPUS_PER_TASK:-0}" "${EXTRA[@]}"
    ;;
  merge)
    split_args "$@"
    exec $HEARTBEIT ingest --merge --out "${POS[0]}" "${EXTRA[@]}"
    ;;
  *)
    echo "unknown mode $mode (submit | task | merge)" >&2; exit 2 ;;
esac
