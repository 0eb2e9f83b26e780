#!/bin/bash
# Call A on nvidia-h100-x2 (after the no-sync views change): the train-step bench on GPU 0 and,
# beside it on GPU 1 (other cores), `sportray pretrain` with ViT-S/16 exactly as a user runs it.
R=$OUT; export OUT=/tmp/bw3; mkdir -p $OUT
export PYTHONPATH=$PWD:$PYTHONPATH RAY_DATA_DISABLE_PROGRESS_BARS=1 RAY_DEDUP_LOGS=0
ROOT=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; date -u
bash bench/cli_pretrain_gpu.sh 1 16-31 480 $OUT/cli.log &
CP=$!
cd bench
CUDA_VISIBLE_DEVICES=0 taskset -c 0-15 timeout 430 python train.py --compile-all --warm 3 --steps 8 > $OUT/train.log 2>&1; echo "train rc=$?"
wait $CP
cp /tmp/cli/mlflow.db $OUT/cli_mlflow.db 2>/dev/null
tar czf $R/results3.tgz -C $OUT .
echo "=== train"; sed -n '/^VIEWS ONLY/,$p' $OUT/train.log | grep -v "^\s*$\|Warning\|warn" | cut -c1-230
grep -q "^TRAIN STEP" $OUT/train.log || { echo "=== train tail"; tail -c 2500 $OUT/train.log; }
echo "=== cli"; grep -v "^\s*$" $OUT/cli.log | grep -iv "warn" | tail -60 | cut -c1-300
