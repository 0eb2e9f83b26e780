#!/bin/bash
# Call 1 on the GPU machine (one H100 used): train, probe, data (background, other cores), pipeline.
R=$OUT; export OUT=/tmp/bw; mkdir -p $OUT
export PYTHONPATH=$PWD:$PYTHONPATH RAY_DATA_DISABLE_PROGRESS_BARS=1 CUDA_VISIBLE_DEVICES=0
cd bench
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; date
timeout 330 taskset -c 10-15 python data.py --ray-cpus 6 > $OUT/data.log 2>&1 & DP=$!
timeout 280 taskset -c 0-9 python train.py > $OUT/train.log 2>&1; echo "train rc=$?"
timeout 90 taskset -c 0-9 python probe.py > $OUT/probe.log 2>&1; echo "probe rc=$?"
wait $DP; echo "data rc=$?"
timeout 200 python pipeline.py > $OUT/pipeline.log 2>&1; echo "pipeline rc=$?"
tar czf $R/results1.tgz -C $OUT .
for f in data probe pipeline train; do echo "=== $f"; sed -n '/^VIEWS ONLY\|^TRAIN STEP\|^PIPELINE \|^PROBES \|^DATA PATH\|^PROFILE/,$p' $OUT/$f.log | grep -v "^\s*$" | cut -c1-230 | grep -v "Warning\|warn" ; done
for f in data probe pipeline train; do grep -q "^PIPELINE \|^PROBES \|^DATA PATH\|^TRAIN STEP" $OUT/$f.log || { echo "=== $f tail"; tail -c 1500 $OUT/$f.log; }; done
