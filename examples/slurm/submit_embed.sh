#!/bin/bash
# Queue the sharded embedding array and, after it succeeds, the aggregation.
#   ./submit_embed.sh /data/packaged.parquet /models/sbe /scratch/emb 16 [extra sbatch args...]
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 INPUT MODEL OUT SHARDS [sbatch args...]" >&2
  exit 2
fi
INPUT=$1 MODEL=$2 OUT=$3 SHARDS=$4
shift 4
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p logs "$OUT"
jid=$(sbatch --parsable --array="0-$((SHARDS - 1))" \
  --export=ALL,INPUT="$INPUT",MODEL="$MODEL",OUT="$OUT",SHARDS="$SHARDS" "$@" \
  "$here/embed_array.sbatch")
echo "embed array: $jid"
agg=$(sbatch --parsable --dependency="afterok:$jid" \
  --export=ALL,OUT="$OUT",SHARDS="$SHARDS" "$here/aggregate.sbatch")
echo "aggregate:   $agg (runs after every shard succeeded)"
