#!/usr/bin/env bash
# N shards of one manifest on one machine (or, with GNU parallel's --sshlogin, on several that
# share the output folder): the same --shard I/N a Slurm array or a Kubernetes Indexed Job uses.
#
#   deploy/parallel-batch.sh deploy/catalogue.csv /tmp/ads 2
#
# Uses GNU parallel when installed, else xargs -P. Exit status: non-zero when any row failed
# (each shard's report says which: OUT/report-I-of-N.jsonl).
set -euo pipefail
MANIFEST="${1:?usage: deploy/parallel-batch.sh MANIFEST OUT [SHARDS]}"
OUT="${2:?usage: deploy/parallel-batch.sh MANIFEST OUT [SHARDS]}"
N="${3:-2}"
ADCANVAS="${ADCANVAS:-adcanvas}"
if command -v parallel >/dev/null; then
  seq 0 $((N - 1)) | parallel --halt never "$ADCANVAS" batch "$MANIFEST" --out "$OUT" --shard "{}/$N" ${ADCANVAS_ARGS:-}
else
  seq 0 $((N - 1)) | xargs -P "$N" -I{} "$ADCANVAS" batch "$MANIFEST" --out "$OUT" --shard "{}/$N" ${ADCANVAS_ARGS:-}
fi
