#!/bin/bash
# Call C on nvidia-h100-x2 (fused views): the pipeline at 1 and 2 GPU workers (scaling), then the
# main train-step rows and the profile on GPU 0 with the time left.
R=$OUT; export OUT=/tmp/bw5; mkdir -p $OUT
export PYTHONPATH=$PWD:$PYTHONPATH RAY_DATA_DISABLE_PROGRESS_BARS=1
start=$(date +%s); date -u
cd bench
timeout 390 python pipeline.py --workers 1,2 --ray-cpus 9 --steps 60 --log-every 20 --store-frames 25600 > $OUT/pipeline.log 2>&1; echo "pipeline rc=$?"
left=$(( 575 - ($(date +%s) - start) ))
CUDA_VISIBLE_DEVICES=0 timeout $left python train.py --main-only --warm 3 --steps 8 > $OUT/train.log 2>&1; echo "train rc=$? (had ${left}s)"
tar czf $R/results5.tgz -C $OUT .
for f in pipeline train; do echo "=== $f"; sed -n '/^VIEWS ONLY\|^PIPELINE \|^PROFILE/,$p' $OUT/$f.log | grep -v "^\s*$\|Warning\|warn" | cut -c1-220; done
for f in pipeline train; do grep -q "^PIPELINE \|^TRAIN STEP" $OUT/$f.log || { echo "=== $f tail"; grep "^{" $OUT/$f.log | cut -c1-300; tail -c 1500 $OUT/$f.log; }; done
