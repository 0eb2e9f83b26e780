#!/bin/bash
# Call D (one H100): the data path's ceiling with the current reader (read_store -> iter_torch_batches,
# pinned, to the GPU) at 1, 2 and 4 Ray CPUs, then the per-trial sweep overhead (bench/sweep.py).
R=$OUT; export OUT=/tmp/bw6; mkdir -p $OUT
export PYTHONPATH=$PWD:$PYTHONPATH RAY_DATA_DISABLE_PROGRESS_BARS=1
nvidia-smi --query-gpu=name --format=csv,noheader; nproc; date -u
cd bench
timeout 150 python data.py --skip-decode --ray-cpus 4 --read-frames 16384 > $OUT/data.log 2>&1; echo "data rc=$?"
timeout 330 python sweep.py --steps 30 > $OUT/sweep.log 2>&1; echo "sweep rc=$?"
tar czf $R/results6.tgz -C $OUT .
for f in data sweep; do echo "=== $f"; sed -n '/^DATA PATH\|^SWEEP OVERHEAD/,$p' $OUT/$f.log | cut -c1-220; done
for f in data sweep; do grep -q "^DATA PATH\|^SWEEP OVERHEAD" $OUT/$f.log || { echo "=== $f tail"; tail -c 2500 $OUT/$f.log; }; done
