"""The whole path against the bare step, side by side in one run on one GPU:

  frame store (Parquet, sportray format) -> Ray Data read_store -> streaming split ->
  iter_torch_batches(uint8, pinned, to the device) -> sportray.pretrain.train_loop_per_worker
  (1 TorchTrainer worker) -> the LeJEPA step            [train/frames_per_s of the last window]
vs
  the same model / views / loss / optimizer stepped in this process on uint8 frames already on
  the GPU (bench/_common.lejepa_step, CPU view generator as pretrain.py).

Ray gets --ray-cpus CPUs: 1 for the trainer worker, the rest for Ray Data's read tasks.

    python bench/pipeline.py            # GPU: ViT-S/16, batch 256, 2x224+6x96, compiled
    python bench/pipeline.py --tiny     # CPU smoke test
"""
from __future__ import annotations

import argparse
import gc
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _common import build, lejepa_step, make_store, save_json, table, time_steps
import torch

from sportray.views import view_generator


def bare(cfg, device, n_warm, n_timed, frames_per_batch_dev=2):
    torch._dynamo.config.automatic_dynamic_shapes = False
    _, fwd, head, opt, trainable, groups = build(cfg.model, cfg.views, cfg.sigreg_directions, device,
                                                 compile_=cfg.compile)
    g = torch.Generator().manual_seed(1)
    frames = [torch.randint(0, 256, (cfg.batch_size, 224, 398, 3), generator=g, dtype=torch.uint8).to(device)
              for _ in range(frames_per_batch_dev)]

    def fn(i):
        gen = view_generator(cfg.seed, i)          # as pretrain.py: CPU draws, no host sync
        lejepa_step(fwd, head, opt, trainable, groups, frames[i % len(frames)], i, gen, cfg.clip,
                    fuse_views=cfg.compile)
    t = time_steps(fn, n_warm, n_timed, device)
    del fwd, head, opt, trainable, frames
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return t


def trainer_run(cfg, store, storage, name):
    from sportray.data.frames import read_store
    from sportray.pretrain import run_pretrain
    t0 = time.perf_counter()
    res = run_pretrain(cfg, read_store(store), storage_path=storage, run_name=name)
    wall = time.perf_counter() - t0
    m = res.metrics
    return {"status": res.status, "reason": res.reason, "steps": res.steps, "wall_s": wall,
            "frames_s": m.get("train/frames_per_s"), "data_wait_s_per_step": m.get("train/data_wait_s"),
            "loss": m.get("train/loss")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--store-frames", type=int, default=20480)
    ap.add_argument("--ray-cpus", type=int, default=5)
    ap.add_argument("--views", default="2x224+6x96")
    ap.add_argument("--eager", action="store_true")
    ap.add_argument("--workers", default="1", help="comma list of worker counts (scaling.py passes 1,2)")
    ap.add_argument("--no-bare", action="store_true")
    ap.add_argument("--data-orders", default="deterministic",
                    help="comma list of deterministic,fast: the trainer run once per data order "
                         "(PretrainConfig.deterministic_data True / False), to price determinism")
    args = ap.parse_args()
    import ray

    from sportray.config import PretrainConfig

    if args.tiny:
        cfg = PretrainConfig(model="vit_tiny_demo", views="2x32+2x16", batch_size=4, steps=6, log_every=3,
                             checkpoint_every=6, gpus_per_worker=0, cpus_per_worker=0.99, compile=False,
                             clip=1.0, warmup_steps=2, max_failures=0)
        device, store_frames, ray_cpus = "cpu", 32, 2
        n_warm, n_timed = 1, 3
    else:
        cfg = PretrainConfig(model="vit_small", views=args.views, batch_size=256, steps=args.steps,
                             log_every=args.log_every, checkpoint_every=args.steps, gpus_per_worker=1,
                             cpus_per_worker=1, compile=not args.eager, clip=1.0, warmup_steps=10,
                             max_failures=0)
        device, store_frames, ray_cpus = "cuda", args.store_frames, args.ray_cpus
        n_warm, n_timed = 8, 20
    workers = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="sportray-bench-"))
    info = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "gpus": torch.cuda.device_count() if device == "cuda" else 0, "ray_cpus": ray_cpus,
            "views": cfg.views, "batch_per_worker": cfg.batch_size, "steps": cfg.steps,
            "log_every": cfg.log_every, "compile": cfg.compile, "store_frames": store_frames}
    print(info, flush=True)
    rows = []
    if not args.no_bare:
        t = bare(cfg, device, n_warm, n_timed)
        rows.append({"what": "bare step (frames already on GPU)", "workers": 1,
                     "frames_s": cfg.batch_size / t["median_s"], "mean_frames_s": cfg.batch_size / t["mean_s"]})
        print(rows[-1], flush=True)

    ray.init(num_cpus=ray_cpus + (max(workers) - 1) * 1, num_gpus=torch.cuda.device_count() if device == "cuda" else 0,
             include_dashboard=False, log_to_driver=True)
    t0 = time.perf_counter()
    store = make_store(work / "store", store_frames)
    print(f"store: {store_frames} frames in {time.perf_counter() - t0:.1f} s, "
          f"{sum(f.stat().st_size for f in (store / 'data').glob('*')) / 2**20:.0f} MiB", flush=True)
    for w, order in [(w, o) for w in workers for o in args.data_orders.split(",")]:
        c = replace(cfg, workers=w, deterministic_data=order == "deterministic")
        r = trainer_run(c, store, str(work / "runs"), f"bench-w{w}-{order}")
        row = {"what": f"TorchTrainer, store -> Ray Data -> worker ({order} order)", "workers": w, **r}
        if r["frames_s"]:
            row["frames_s_per_gpu"] = r["frames_s"] / w
        rows.append(row)
        print(rows[-1], flush=True)
    ray.shutdown()
    base = rows[0]["frames_s"] if not args.no_bare else None
    one = next((r["frames_s"] for r in rows if r["workers"] == 1 and "Trainer" in r["what"]), None)
    for r in rows:
        if base and r.get("frames_s") and "Trainer" in r["what"]:
            r["vs_bare_per_gpu"] = r["frames_s"] / r["workers"] / base
        if one and r.get("frames_s") and "Trainer" in r["what"] and r["workers"] > 1:
            r["scaling_eff"] = r["frames_s"] / (r["workers"] * one)
    save_json("pipeline.json" if len(workers) == 1 else "scaling.json", {"info": info, "rows": rows})
    print(f"\nPIPELINE  {info['device']} x{info['gpus']}  {cfg.views} batch {cfg.batch_size}/worker  "
          f"compile={cfg.compile}  (trainer frames/s = last log window of {cfg.log_every} steps)")
    print(table(rows, ["what", "workers", "status", "frames_s", "mean_frames_s", "frames_s_per_gpu",
                       "data_wait_s_per_step", "vs_bare_per_gpu", "scaling_eff", "wall_s"]))


if __name__ == "__main__":
    main()
