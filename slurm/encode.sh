#!/usr/bin/env bash
# Token grids for pretraining as a Slurm array over the image shards, then one gather: array task i of N
# encodes shards i, i + N, ... (`heartbeit tokenizer encode --task-index i --num-tasks N`: each shard is
# rewritten atomically and skipped when already encoded with this tokenizer, so a requeued or resubmitted
# task only does what is left); the gather job then writes index.json and tokens.json once.
#
#   sbatch --array=0-$((N-1)) slurm/encode.sh tasks N RUN-ARGS...
#   sbatch --dependency=afterok:ARRAY_JOB slurm/encode.sh gather RUN-ARGS...
#
# RUN-ARGS are `heartbeit` config arguments (--profile, --set, --workdir). `heartbeit slurm submit` sizes
# the array and the time limits from its cost model (heartbeit/cost.py; site file `encode_tasks`).
# HEARTBEIT is the command (default: the checkout's .venv/bin/python -m heartbeit);
# HEARTBEIT_SITE_SETUP names a file sourced first (module loads, conda activation).
#SBATCH --job-name=heartbeit-encode
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=heartbeit-encode-%A_%a.out
##SBATCH --partition=cpu
##SBATCH --account=my-lab
set -euo pipefail

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
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

case ${1:-} in
  tasks)
    n=$2
    shift 2
    : "${SLURM_ARRAY_TASK_ID:?tasks mode runs inside a Slurm array (sbatch --array=0-$((n - 1)))}"
    echo "heartbeit-encode: task $SLURM_ARRAY_TASK_ID of $n (job ${SLURM_JOB_ID:-?}) on $(hostname -s), $(date -Is)"
    "${HB[@]}" tokenizer encode --no-progress --task-index "$SLURM_ARRAY_TASK_ID" --num-tasks "$n" "$@"
    ;;
  gather)
    shift
    "${HB[@]}" tokenizer gather "$@"
    ;;
  *)
    echo "usage: $0 tasks N RUN-ARGS... | gather RUN-ARGS..." >&2
    exit 2
    ;;
esac
echo "heartbeit-encode: done, $(date -Is)"
