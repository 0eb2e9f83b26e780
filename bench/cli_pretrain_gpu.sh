#!/bin/bash
# `sportray pretrain` with ViT-S/16 exactly as a user runs it, in an empty directory on one GPU,
# then what its MLflow run holds. Used by run_gpu3.sh / run_gpu4.sh beside a benchmark.
#   bench/cli_pretrain_gpu.sh GPU_INDEX CPU_LIST TIMEOUT_S LOG
gpu=$1; cpus=$2; limit=$3; log=$4
mkdir -p /tmp/cli && cd /tmp/cli
CUDA_VISIBLE_DEVICES=$gpu taskset -c $cpus timeout $limit \
  python -m sportray.cli pretrain --arm scratch --model vit_small --steps 50 --views 2x224+6x96 \
  --batch-size 128 --gpus-per-worker 1 --cpus-per-worker 2 --compile --clip 1.0 --log-every 10 \
  --checkpoint-every 25 --experiment pretrain-gpu > $log 2>&1; echo "cli rc=$?" >> $log
python - >> $log 2>&1 <<'PY'
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
