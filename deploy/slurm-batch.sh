#!/usr/bin/env bash
# A Slurm array over one manifest: each task takes its share of the rows (--shard I/N) and writes
# into the shared output folder; nothing else is coordinated. Re-submitting the same array after a
# failure or a pre-emption finishes only what is missing.
#
#   sbatch --array=0-3 deploy/slurm-batch.sh deploy/catalogue.csv /shared/ads
#
#SBATCH --job-name=adcanvas-batch
#SBATCH --cpus-per-task=4
#SBATCH --time=02:00:00
set -euo pipefail
MANIFEST="${1:?usage: sbatch --array=0-(N-1) deploy/slurm-batch.sh MANIFEST OUT}"
OUT="${2:?usage: sbatch --array=0-(N-1) deploy/slurm-batch.sh MANIFEST OUT}"
N="${SLURM_ARRAY_TASK_COUNT:?run as an array job: sbatch --array=0-3 ...}"
exec "${ADCANVAS:-adcanvas}" batch "$MANIFEST" --out "$OUT" --shard "${SLURM_ARRAY_TASK_ID}/${N}"
