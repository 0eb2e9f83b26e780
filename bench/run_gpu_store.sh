#!/usr/bin/env bash
# Issue 17 items 4 and 7 on the GPU host, one call (~8 min): the reader's variants on 4 cores (the
# final reader, the plumbing's ceiling, the reader before), the trainer fed by a v2 store (Ray Data
# given 4 CPUs), the store build on 16 vCPUs (before vs after). The one-core format rates come from
# `taskset -c 0-3 python reader.py --frames 8192 --ray-cpus 4` (no --variants; its v1 rows are slow).
# BENCHMARKS.md "Frame store v2" came from two calls of earlier versions of this script
# (bench/results/store_v2_2026-12-02/README.md). Logs and JSON under $OUT (8 files at most).
#   source .devbundle/activate && export PYTHONPATH=$PWD:$PYTHONPATH && bash bench/run_gpu_store.sh
set -u
cd "$(dirname "$0")"
export RAY_DATA_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
quiet() { grep -v "INFO\|WARNING\|logging.cc\|^    @\|^PC:\|SIGTERM\|RAW:\|Reporting training\|Checkpoint successfully"; }
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nproc; date -u; } > "$OUT/reader_variants.log"
timeout 150 taskset -c 0-3 python reader.py --frames 8192 --ray-cpus 4 --variants --out reader_variants.json 2>&1 \
  | quiet >> "$OUT/reader_variants.log"; tail -12 "$OUT/reader_variants.log"
timeout 200 python pipeline.py --no-bare --steps 100 --log-every 50 --store-frames 4096 --ray-cpus 5 2>&1 \
  | quiet > "$OUT/pipeline.log"; tail -3 "$OUT/pipeline.log"
timeout 160 taskset -c 0-15 python store_build.py --cpus 16 --games 32 --half-s 128 --one-process-videos 2 \
  --old-videos 8 2>&1 | quiet > "$OUT/store_build.log"; tail -24 "$OUT/store_build.log"
