"""Per-trial sweep overhead: what a trial costs besides its training steps.

Runs a real sweep (Ray Tune + OptunaSearch -> TorchTrainer -> probe -> MLflow) of two recipes
on the embedded default, then reads back from MLflow the phases every trial logs of its own
wall time (time/<phase>_s, sportray/trial.py's PHASES; time/overhead_s is all but the steps).

    python bench/sweep.py            # GPU: ViT-S/16, batch 64, eager, 30 steps
    python bench/sweep.py --tiny     # CPU smoke test (tiny ViT)
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import save_json, table


def phase_rows(tracking_uri: str, experiment: str) -> list[dict]:
    """Each trial run of `experiment`: its name, status and time/<phase>_s."""
    from sportray import tracking
    from sportray.trial import PHASES

    client = tracking.connect(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    phases = [f"time/{name}_s" for name, _a, _b in PHASES] + ["time/overhead_s"]
    rows = []
    for run in client.search_runs([exp.experiment_id]):
        if run.data.tags.get("sportray.kind") != "trial":
            continue
        row = {"trial": run.info.run_name, "status": run.data.tags.get("sportray.status")}
        times = {**tracking.run_record(client, run.info.run_id, "details.json"), **run.data.metrics}
        row.update({k.removeprefix("time/"): times[k] for k in phases if k in times})
        rows.append(row)
    return rows


def print_rows(rows: list[dict]) -> None:
    from sportray.trial import PHASES

    print(table(rows, ["trial", "status"] + [name + "_s" for name, _a, _b in PHASES] + ["overhead_s"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test (tiny ViT)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--phases-of", nargs=2, metavar=("TRACKING_URI", "EXPERIMENT"),
                    help="only print the phase table of an existing sweep's trials")
    args = ap.parse_args()
    if args.phases_of:
        print_rows(phase_rows(*args.phases_of))
        return
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
    rows = phase_rows(uri, "bench_sweep")
    save_json("sweep.json", {"summary": summary, "wall_s": wall, "rows": rows})
    print(f"\nSWEEP OVERHEAD  {'cpu tiny' if args.tiny else 'GPU ViT-S/16'}  {steps} steps/trial, "
          f"sweep wall {wall:.0f} s (data set-up included)")
    print_rows(rows)


if __name__ == "__main__":
    main()
