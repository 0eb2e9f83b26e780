#!/bin/bash
# Issue 17 (one H200): the step against the bare reference (bench/step.py: GEMM peak, FLOPs, three
# rows in one process, kernel counts), then the pipeline over a store that ends an epoch every
# 8 steps (bench/pipeline.py: in-process step and reference, then 1 TorchTrainer worker, 100 steps,
# last window = steps 51-100 across 6 epoch boundaries). Logs and JSON land in $OUT.
export PYTHONPATH=$PWD:$PYTHONPATH RAY_DATA_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; nproc; date -u
cd bench
timeout ${STEP_S:-330} python step.py --profile > $OUT/step.log 2>&1; echo "step rc=$?"
sed -n '/^STEP/,$p' $OUT/step.log | cut -c1-260; grep -q "^STEP" $OUT/step.log || tail -c 3000 $OUT/step.log
timeout ${PIPE_S:-240} python pipeline.py --reference --steps 100 --log-every 50 --store-frames 2048 \
  --ray-cpus ${RAY_CPUS:-9} > $OUT/pipeline.log 2>&1; echo "pipeline rc=$?"
sed -n '/^PIPELINE/,$p' $OUT/pipeline.log | cut -c1-300; grep -q "^PIPELINE" $OUT/pipeline.log || tail -c 3000 $OUT/pipeline.log
