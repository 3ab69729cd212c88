#!/usr/bin/env bash
# The study's report as one CPU job: metrics with CIs, tables, figures, saliency and Wasserstein from the
# matrix's finished cells (`heartbeit report`), into the config's results_dir (or --out).
#
#   sbatch --dependency=afterok:MATRIX_ARRAY_JOB slurm/report.sh --profile paper --workdir /scratch/$USER/heartbeit
#
# At hospital scale, score the cells as an array first (each task takes cells i, i + N, ...; rows are kept in
# <workdir>/report/scores), then the report job only gathers them:
#   sbatch --array=0-15 --dependency=afterok:MATRIX_ARRAY_JOB slurm/report.sh --profile paper --workdir ...
#   sbatch --dependency=afterok:SCORE_ARRAY_JOB slurm/report.sh --profile paper --workdir ...
# Either way the job's cores score cells in parallel (report.workers; the output is the same for any count).
#
# HEARTBEIT is the command (default: the checkout's .venv/bin/python -m heartbeit), e.g.
# HEARTBEIT="/path/to/venv/bin/python -m heartbeit".
# HEARTBEIT_SITE_SETUP names a file sourced first (module loads, conda activation).
#SBATCH --job-name=heartbeit-report
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=02:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=heartbeit-report-%j.out
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

echo "heartbeit-report: job ${SLURM_JOB_ID:-local} on $(hostname -s), $(date -Is)"
workers=(--set "report.workers=${SLURM_CPUS_PER_TASK:-1}")
if [[ -n ${SLURM_ARRAY_TASK_ID:-} ]]; then
  "${HB[@]}" report --score-only "$@" "${workers[@]}"
else
  "${HB[@]}" report "$@" "${workers[@]}"
fi
echo "heartbeit-report: done, $(date -Is)"
