#!/usr/bin/env bash
# The study's data preparation as one CPU job: synthetic ECGs (unless the config names real input_dirs),
# ingest, render + image shards, tokenizer train + encode. It is `heartbeit run --until tokenizer`, i.e.
# exactly the local path's stages in the local path's order; each stage skips work already complete for
# the same config, so a requeued or resubmitted job continues where the last one stopped.
#
#   sbatch slurm/prepare.sh --profile paper --workdir /scratch/$USER/heartbeit [--set key=value ...]
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
#SBATCH --open-mode=append
#SBATCH --output=heartbeit-prepare-%j.out
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
# Stages use their configured worker processes (0 = every core the job may use), each single-threaded.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

echo "heartbeit-prepare: job ${SLURM_JOB_ID:-local} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname -s), $(date -Is)"
"${HB[@]}" run --until tokenizer --no-progress "$@"
echo "heartbeit-prepare: done, $(date -Is)"
