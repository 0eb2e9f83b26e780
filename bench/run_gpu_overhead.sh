#!/usr/bin/env bash
# Issue 17 item 5 on the GPU machine: per-trial phases of bench/sweep.py (ViT-S/16, one trial at a
# time on one GPU) and of the demo sweep with quarter GPUs (4 trials at once), from empty folders.
set -uo pipefail
ROOT=$(pwd)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/device.txt"
(cd bench && python sweep.py --steps 30) > "$OUT/bench_sweep.log" 2>&1; tail -8 "$OUT/bench_sweep.log"
mkdir -p /tmp/demo && cd /tmp/demo
start=$(date +%s)
python "$ROOT/sweeps/scratch_views.py" --set gpus_per_worker=0.25 > "$OUT/demo_quarter.log" 2>&1
echo "demo rc $? wall $(( $(date +%s) - start )) s" | tee -a "$OUT/demo_quarter.log"
grep "done in\|trials 4/4\|min in" "$OUT/demo_quarter.log" | tail -8
(cd "$ROOT/bench" && python sweep.py --phases-of sqlite:////tmp/demo/mlflow.db scratch_views) | tee "$OUT/demo_phases.txt"
