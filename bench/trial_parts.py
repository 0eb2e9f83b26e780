"""Where a trial's fixed cost goes, piece by piece, in one process (issue 17 item 5).

Two TorchTrainer fits of a few steps on a synthetic store (the second finds Ray warm), each split
with the worker's own clock (sportray.pretrain reports clock/*), then the probe of the trained
backbone split into its parts (backbone load, probe sets, features and heads, panels) under
cProfile. The probe sets are built from the embedded default under --data-dir.

    python bench/trial_parts.py [--gpu] [--steps 4] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="one GPU per worker, ViT-S/16")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--data-dir", default="", help="where the embedded default's data is (or goes)")
    args = ap.parse_args()
    import ray

    from sportray.config import DataConfig, PretrainConfig, ProbeConfig
    from sportray.data import frames as fr
    from sportray.pretrain import run_pretrain

    ray.init(include_dashboard=False, logging_level="ERROR")
    rng = np.random.default_rng(0)
    low = rng.integers(0, 255, (256, 14, 25, 3), dtype=np.uint8)
    imgs = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)[:, :fr.FRAME_H, :fr.FRAME_W]
    root = tempfile.mkdtemp(prefix="sportray-trial-parts-")
    store = fr.write_store(root + "/store", np.ascontiguousarray(imgs), key="parts")
    if args.gpu:
        cfg = PretrainConfig(model="vit_small", steps=args.steps, views="2x224+6x96", batch_size=64,
                             gpus_per_worker=1, cpus_per_worker=2, checkpoint_every=args.steps, log_every=1,
                             warmup_steps=1, max_failures=0)
    else:
        cfg = PretrainConfig(steps=args.steps, views="2x32+2x16", batch_size=8, warmup_steps=1, log_every=2,
                             checkpoint_every=args.steps, cpus_per_worker=0.8, proj_dim=16, sigreg_directions=16,
                             max_failures=0)
    res = None
    for i in range(2):
        t = time.time()
        res = run_pretrain(cfg, fr.read_store(store, seed=0), storage_path=root + "/runs", run_name=f"r{i}")
        end = time.time()
        c = {k[6:]: v for k, v in res.metrics.items() if k.startswith("clock/")}
        print(f"fit {i}: {end - t:.1f} s = controller and workers up {c['worker_start'] - t:.1f} + model "
              f"{c['model_ready'] - c['worker_start']:.1f} + first batch {c['first_batch'] - c['model_ready']:.1f} "
              f"+ steps {c['last_step'] - c['first_batch']:.1f} + end {end - c['last_step']:.1f}", flush=True)

    from sportray import tasks, trial
    from sportray.data.defaults import resolve

    data = DataConfig(data_dir=args.data_dir or root + "/data")
    probe = ProbeConfig()
    t = time.time()
    sets = tasks.build_sets(data, tasks.resolve(probe), resolve(data))
    print(f"probe sets: {time.time() - t:.1f} s (built or found)", flush=True)
    prof = cProfile.Profile()
    t = time.time()
    prof.enable()
    metrics, _ = trial.probe_backbone({"checkpoint": res.backbone_dir}, sets, probe, root + "/probe")
    prof.disable()
    print(f"probe in this process: {time.time() - t:.1f} s (evaluate {metrics['probe_seconds']:.1f} s)")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(r"sportray|timm/__init__|matplotlib/pyplot", 25)


if __name__ == "__main__":
    main()
