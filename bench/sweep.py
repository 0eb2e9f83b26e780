"""Per-trial sweep overhead: what a trial costs besides its training steps.

Runs a real sweep (Ray Tune + OptunaSearch -> TorchTrainer -> probe task -> MLflow) of two
recipes on the embedded default, then reads the trial runs back from MLflow and splits each
trial's wall time with the timestamps sportray logs:

  start -> first step : MLflow run created (the trial function began) -> train/loss of step 1
                        (TorchTrainer + worker start, dataset, model build, first step)
  steps               : step 1 -> last step (log_every 1, so every step is stamped)
  last step -> probe  : train/loss of the last step -> the probe metrics logged (checkpoint,
                        Train shutdown, probe task, features, both probes, panels)
  overhead            : (start -> first step) - one median step + (last step -> probe)

    python bench/sweep.py            # GPU: ViT-S/16, batch 64, eager, 30 steps
    python bench/sweep.py --tiny     # CPU smoke test (tiny ViT)
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import save_json, table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    from mlflow.tracking import MlflowClient
    from ray import tune

    from sportray.sweep import Preset, SweepSpec, run_sweep

    if args.tiny:
        pretrain = dict(model="vit_tiny_demo", views="2x32+2x16", batch_size=8, cpus_per_worker=0.45,
                        proj_dim=16, sigreg_directions=16)
        steps = 6
    else:
        pretrain = dict(model="vit_small", views="2x224+6x96", batch_size=64, gpus_per_worker=1,
                        cpus_per_worker=2, compile=False)
        steps = args.steps
    spec = SweepSpec(
        name="bench_sweep", description="per-trial overhead", space={"lr": tune.choice([5e-4, 1e-3])},
        presets={"b": Preset(pretrain=dict(arm="scratch", steps=steps, warmup_steps=2, clip=1.0, log_every=1,
                                           checkpoint_every=steps, max_failures=0, **pretrain),
                             data=dict(every_s=1.0), num_configs=2, seeds=(0,),
                             start_points=[dict(lr=5e-4), dict(lr=1e-3)])},
        metric="basketball_iou", references=())
    work = Path(tempfile.mkdtemp(prefix="sportray-bench-sweep-"))
    uri = f"sqlite:///{work}/mlflow.db"
    t0 = time.time()
    summary = run_sweep(spec, "b", tracking_uri=uri, storage=str(work / "runs"),
                        data_overrides=dict(data_dir=str(work / "data")))
    wall = time.time() - t0

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("bench_sweep")
    rows = []
    for run in client.search_runs([exp.experiment_id]):
        if run.data.tags.get("sportray.kind") != "trial":
            continue
        loss = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
        probe = client.get_metric_history(run.info.run_id, "test/basketball_iou")
        if not loss or not probe:
            rows.append({"trial": run.info.run_name, "status": run.data.tags.get("sportray.status")})
            continue
        stamps = [m.timestamp / 1e3 for m in loss]
        step_s = statistics.median(b - a for a, b in zip(stamps, stamps[1:])) if len(stamps) > 1 else 0.0
        start_first = stamps[0] - run.info.start_time / 1e3
        last_probe = probe[-1].timestamp / 1e3 - stamps[-1]
        rows.append({"trial": run.info.run_name, "status": run.data.tags.get("sportray.status"),
                     "start_to_first_step_s": start_first, "median_step_s": step_s,
                     "steps_s": stamps[-1] - stamps[0], "last_step_to_probe_s": last_probe,
                     "probe_seconds": run.data.metrics.get("probe_seconds"),
                     "overhead_s": start_first - step_s + last_probe,
                     "trial_wall_s": probe[-1].timestamp / 1e3 - run.info.start_time / 1e3})
    save_json("sweep.json", {"summary": summary, "wall_s": wall, "rows": rows})
    print(f"\nSWEEP OVERHEAD  {'cpu tiny' if args.tiny else 'GPU ViT-S/16'}  {steps} steps/trial, "
          f"sweep wall {wall:.0f} s (data set-up included)")
    print(table(rows, ["trial", "status", "start_to_first_step_s", "median_step_s", "steps_s",
                       "last_step_to_probe_s", "probe_seconds", "overhead_s", "trial_wall_s"]))


if __name__ == "__main__":
    main()
