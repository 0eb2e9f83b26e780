#!/bin/bash
# Call 2 on nvidia-h100-x2: bare-DDP and TorchTrainer scaling, 1 vs 2 GPUs.
R=$OUT; export OUT=/tmp/bw2; mkdir -p $OUT
export PYTHONPATH=$PWD:$PYTHONPATH RAY_DATA_DISABLE_PROGRESS_BARS=1
cd bench
nvidia-smi --query-gpu=name --format=csv,noheader; date
timeout 560 python scaling.py > $OUT/scaling.log 2>&1; echo "scaling rc=$?"
tar czf $R/results2.tgz -C $OUT .
sed -n '/^SCALING/,$p' $OUT/scaling.log | grep -v "^{\|^\s*$\|Warning\|warn\|INFO\|(RayTrainWorker\|(SplitCoord" | cut -c1-230 | tail -40
grep -q "^PIPELINE" $OUT/scaling.log || tail -c 2500 $OUT/scaling.log
