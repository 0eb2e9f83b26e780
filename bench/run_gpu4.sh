#!/bin/bash
# Call B on nvidia-h100-x2: `sportray pretrain` with ViT-S/16 as a user runs it (GPU 1), and beside
# it on GPU 0 the main step with max-autotune and the profile of the compiled step.
R=$OUT; export OUT=/tmp/bw4; mkdir -p $OUT
export PYTHONPATH=$PWD:$PYTHONPATH RAY_DATA_DISABLE_PROGRESS_BARS=1 RAY_DEDUP_LOGS=0
date -u
bash bench/cli_pretrain_gpu.sh 1 16-31 420 $OUT/cli.log &
CP=$!
cd bench
CUDA_VISIBLE_DEVICES=0 taskset -c 0-15 timeout 400 python train.py --main-only --also-mode max-autotune-no-cudagraphs --warm 3 --steps 8 > $OUT/train.log 2>&1; echo "train rc=$?"
wait $CP
cp /tmp/cli/mlflow.db $OUT/cli_mlflow.db 2>/dev/null
tar czf $R/results4.tgz -C $OUT .
echo "=== train"; sed -n '/^PROFILE/,$p' $OUT/train.log | grep -v "^\s*$\|Warning\|warn" | cut -c1-200
grep -q "^TRAIN STEP" $OUT/train.log || { echo "=== train tail"; tail -c 2500 $OUT/train.log; }
echo "=== cli"; grep -v "^\s*$" $OUT/cli.log | grep -iv "warn" | tail -60 | cut -c1-300
