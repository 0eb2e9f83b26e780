#!/bin/bash
# Call 2 on nvidia-h100-x2: train step (GPU 0), then bare step + TorchTrainer with 1 and 2 workers.
R=$OUT; export OUT=/tmp/bw2; mkdir -p $OUT
export PYTHONPATH=$PWD:$PYTHONPATH RAY_DATA_DISABLE_PROGRESS_BARS=1
cd bench
nvidia-smi --query-gpu=name --format=csv,noheader; date
CUDA_VISIBLE_DEVICES=0 timeout 230 python train.py --warm 3 --steps 10 > $OUT/train.log 2>&1; echo "train rc=$?"
timeout 300 python pipeline.py --workers 1,2 --ray-cpus 9 --steps 60 --log-every 20 --store-frames 25600 > $OUT/pipeline.log 2>&1; echo "pipeline rc=$?"
tar czf $R/results2.tgz -C $OUT .
for f in pipeline train; do echo "=== $f"; sed -n '/^VIEWS ONLY\|^TRAIN STEP\|^PIPELINE \|^PROFILE/,$p' $OUT/$f.log | grep -v "^\s*$\|Warning\|warn" | cut -c1-230; done
for f in pipeline train; do grep -q "^PIPELINE \|^TRAIN STEP" $OUT/$f.log || { echo "=== $f tail"; tail -c 2000 $OUT/$f.log; }; done
