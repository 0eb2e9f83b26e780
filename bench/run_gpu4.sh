#!/bin/bash
# Call B on nvidia-h100-x2: `sportray pretrain` with ViT-S/16 as a user runs it (GPU 1), and beside
# it on GPU 0 the main step with max-autotune and the profile of the compiled step.
R=$OUT; export OUT=/tmp/bw4; mkdir -p $OUT
export PYTHONPATH=$PWD:$PYTHONPATH RAY_DATA_DISABLE_PROGRESS_BARS=1 RAY_DEDUP_LOGS=0
date -u
(mkdir -p /tmp/cli && cd /tmp/cli && CUDA_VISIBLE_DEVICES=1 taskset -c 16-31 timeout 420 \
   python -m sportray.cli pretrain --arm scratch --model vit_small --steps 50 --views 2x224+6x96 \
   --batch-size 128 --gpus-per-worker 1 --cpus-per-worker 2 --compile --clip 1.0 --log-every 10 \
   --checkpoint-every 25 --experiment pretrain-gpu > $OUT/cli.log 2>&1; echo "cli rc=$?" >> $OUT/cli.log
 python - >> $OUT/cli.log 2>&1 <<'PY'
from mlflow.tracking import MlflowClient
c = MlflowClient("sqlite:////tmp/cli/mlflow.db")
for e in c.search_experiments():
    for r in c.search_runs([e.experiment_id]):
        print("RUN", e.name, r.info.run_name, r.info.status, dict(sorted(r.data.params.items())))
        for k in sorted(r.data.metrics):
            h = c.get_metric_history(r.info.run_id, k)
            print(f"  {k}: {len(h)} points, steps {[m.step for m in h][:8]}, last {h[-1].value:.5g}")
        print("  artifacts:", [a.path for a in c.list_artifacts(r.info.run_id)])
PY
) &
CP=$!
cd bench
CUDA_VISIBLE_DEVICES=0 taskset -c 0-15 timeout 400 python train.py --main-only --also-mode max-autotune-no-cudagraphs --warm 3 --steps 8 > $OUT/train.log 2>&1; echo "train rc=$?"
wait $CP
cp /tmp/cli/mlflow.db $OUT/cli_mlflow.db 2>/dev/null
tar czf $R/results4.tgz -C $OUT .
echo "=== train"; sed -n '/^PROFILE/,$p' $OUT/train.log | grep -v "^\s*$\|Warning\|warn" | cut -c1-200
grep -q "^TRAIN STEP" $OUT/train.log || { echo "=== train tail"; tail -c 2500 $OUT/train.log; }
echo "=== cli"; grep -v "^\s*$" $OUT/cli.log | grep -iv "warn" | tail -60 | cut -c1-300
