"""The whole path against the bare step, side by side in one run on one GPU:

  frame store (sportray's format, bench/reader.v2_store) -> Ray Data read_store -> streaming split ->
  iter_torch_batches(uint8, pinned, to the device) -> sportray.pretrain.train_loop_per_worker
  (1 TorchTrainer worker) -> the LeJEPA step            [train/frames_per_s of the last window]
vs
  the same step in this process on uint8 frames already on the GPU (pretrain.train_step, as the
  loop runs it), and with --reference bench/bare_reference.py's step (no sportray code).

The trainer reads the store as one stream over every epoch (issue 17); with a store smaller than
the run (e.g. --store-frames 2048 = 8 steps of 256) the last log window crosses several epoch
boundaries, and the report's data_iterators says how many batch iterators the worker made.

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

from _common import save_json, sync, table
from reader import v2_store
import torch



def in_process(cfg, device, n_warm, n_timed, reference=False):
    """frames/s of sportray's step in this process on uint8 frames already on the device
    (pretrain.train_step + step_forward, as the loop runs it on one worker) and, with `reference`,
    of bench/bare_reference.py's step: blocks of n_timed steps with one sync at the end."""
    from sportray.pretrain import LeJEPAStep, build_model, step_forward, train_step
    from sportray.config import parse_views

    groups = parse_views(cfg.views)
    g = torch.Generator().manual_seed(1)
    frames = [torch.randint(0, 256, (cfg.batch_size, 224, 398, 3), generator=g, dtype=torch.uint8).to(device)
              for _ in range(2)]
    backbone, head = build_model(cfg)
    module = LeJEPAStep(backbone.to(device), head.to(device))
    trainable = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=torch.device(device).type == "cuda")
    fwd = step_forward(module, module, cfg, world=1)
    steps = {"sportray step (frames already on the device)":
             lambda i: train_step(fwd, opt, trainable, frames[i % 2], groups, cfg, i)}
    if reference:
        from bare_reference import BareStep
        ref = BareStep(device, groups, ((0.3, 1.0), (0.05, 0.3)), cfg.sigreg_directions,
                       compile=cfg.compile)
        steps["bare reference (bench/bare_reference.py)"] = lambda i: ref(frames[i % 2])
    rates = {}
    for name, fn in steps.items():
        for i in range(n_warm):
            fn(i)
        sync(device)
        t0 = time.perf_counter()
        for i in range(n_timed):
            fn(n_warm + i)
        sync(device)
        rates[name] = cfg.batch_size * n_timed / (time.perf_counter() - t0)
    del steps, fwd, module, opt, trainable, frames
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return rates


def trainer_run(cfg, store, storage, name):
    from sportray.data.frames import read_store
    from sportray.pretrain import run_pretrain
    t0 = time.perf_counter()
    res = run_pretrain(cfg, read_store(store), storage_path=storage, run_name=name)
    wall = time.perf_counter() - t0
    m = res.metrics
    return {"status": res.status, "reason": res.reason, "steps": res.steps, "wall_s": wall,
            "frames_s": m.get("train/frames_per_s"), "data_wait_s_per_step": m.get("train/data_wait_s"),
            "loss": m.get("train/loss"), "epoch": m.get("epoch"), "data_iterators": m.get("data_iterators")}


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
    ap.add_argument("--reference", action="store_true",
                    help="also time bench/bare_reference.py's step in this process")
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
            "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "views": cfg.views, "batch_per_worker": cfg.batch_size, "steps": cfg.steps,
            "log_every": cfg.log_every, "compile": cfg.compile, "store_frames": store_frames}
    print(info, flush=True)
    rows = []
    if not args.no_bare:
        for name, rate in in_process(cfg, device, n_warm, n_timed, reference=args.reference).items():
            rows.append({"what": name, "workers": 1, "frames_s": rate})
            print(rows[-1], flush=True)

    ray.init(num_cpus=ray_cpus + (max(workers) - 1) * 1, num_gpus=torch.cuda.device_count() if device == "cuda" else 0,
             include_dashboard=False, log_to_driver=True)
    t0 = time.perf_counter()
    store = v2_store(work / "store", store_frames)
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
    ref = next((r["frames_s"] for r in rows if r["what"].startswith("bare reference")), None)
    one = next((r["frames_s"] for r in rows if r["workers"] == 1 and "Trainer" in r["what"]), None)
    for r in rows:
        if base and r.get("frames_s") and "Trainer" in r["what"]:
            r["vs_bare_per_gpu"] = r["frames_s"] / r["workers"] / base
        if ref and r.get("frames_s"):
            r["vs_reference_per_gpu"] = r["frames_s"] / r["workers"] / ref
        if one and r.get("frames_s") and "Trainer" in r["what"] and r["workers"] > 1:
            r["scaling_eff"] = r["frames_s"] / (r["workers"] * one)
    save_json("pipeline.json" if len(workers) == 1 else "scaling.json", {"info": info, "rows": rows})
    print(f"\nPIPELINE  {info['device']} x{info['gpus']}  {cfg.views} batch {cfg.batch_size}/worker  "
          f"compile={cfg.compile}  (trainer frames/s = last log window of {cfg.log_every} steps)")
    print(table(rows, ["what", "workers", "status", "frames_s", "frames_s_per_gpu", "data_wait_s_per_step",
                       "epoch", "data_iterators", "vs_bare_per_gpu", "vs_reference_per_gpu", "scaling_eff",
                       "wall_s"]))


if __name__ == "__main__":
    main()
