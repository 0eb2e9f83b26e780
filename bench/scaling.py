"""2-GPU scaling: frames/s with 1 and 2 GPU workers at the same per-worker batch (256).

Two measurements, each at 1 and 2 GPUs:
  ddp  - the LeJEPA step in plain torch.distributed (NCCL) processes, fed from tensors on the GPU,
         with the whole forward (backbone per view group + head) inside ONE DistributedDataParallel
         module call, so DDP all-reduces the gradients (the fix recommended for pretrain.py), and a
         check that every rank ends the step with the same gradients;
  ray  - sportray.pretrain.run_pretrain (TorchTrainer, NCCL, Ray Data streaming_split from a frame
         store) via bench/pipeline.py --workers 1,2.
efficiency = frames/s(2) / (2 x frames/s(1)).

    python bench/scaling.py [--skip-ray]
    python bench/scaling.py --tiny          # CPU/gloo smoke test
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import ROOT, save_json, table, time_steps
import torch
import torch._dynamo
import torch.nn as nn


class StepModule(nn.Module):
    """Backbone per view group + LeJEPA head in one forward: one DDP call per step."""

    def __init__(self, backbone, head, compile_):
        super().__init__()
        self.backbone, self.head = backbone, head
        self._fwd = torch.compile(backbone) if compile_ else backbone

    def forward(self, views, step: int, seed: int):
        emb = []
        for v in views:
            count, b = v.shape[:2]
            emb.append(self._fwd(v.flatten(0, 1)).view(count, b, -1))
        return self.head(emb, step=step, seed=seed)


def worker(rank, world, args, q):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port))
    cuda = not args.tiny
    dev = torch.device(f"cuda:{rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    torch._dynamo.config.automatic_dynamic_shapes = False
    from sportray.config import PretrainConfig, parse_views
    from sportray.pretrain import build_model
    from sportray.views import make_views, view_generator
    cfg = PretrainConfig(model="vit_tiny_demo" if args.tiny else "vit_small", views=args.views, seed=0)
    backbone, head = build_model(cfg)
    m = StepModule(backbone, head, compile_=cuda).to(dev)
    ddp = nn.parallel.DistributedDataParallel(m, device_ids=[rank] if cuda else None,
                                              find_unused_parameters=False)
    trainable = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=5e-4, weight_decay=0.05, fused=cuda)
    groups = parse_views(cfg.views)
    g = torch.Generator().manual_seed(rank + 1)
    frames = [torch.randint(0, 256, (args.batch, 224, 398, 3), generator=g, dtype=torch.uint8).to(dev) for _ in range(2)]

    def fn(i, check=False, bypass=False):
        gen = view_generator(0, i)                 # as pretrain.py: global draws, this rank's slice
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            views = make_views(frames[i % 2], groups, gen, offset=rank * args.batch, total=world * args.batch)
            # bypass: pretrain.py's pattern (modules of ddp.module called directly)
            out = ddp.module(views, i, 0) if bypass else ddp(views, i, 0)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if check:
            gsum = torch.stack([p.grad.float().sum() for p in trainable])
            other = gsum.clone()
            dist.all_reduce(other)
            q.put(("bypass" if bypass else "check", rank, float((other / world - gsum).abs().max() / gsum.abs().max().clamp_min(1e-12))))
        torch.nn.utils.clip_grad_norm_(trainable, 1.0, foreach=True)
        opt.step()
    fn(0, check=True)
    t = time_steps(fn, args.warm, args.steps, dev)
    dist.barrier()
    q.put(("time", rank, t["median_s"], t["mean_s"]))
    dist.destroy_process_group()


def ddp_run(world, args):
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, world, args, q)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.time() + 200
    for p in procs:
        p.join(timeout=max(1, deadline - time.time()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(5)
    msgs = []
    while not q.empty():
        msgs.append(q.get())
    if any(p.exitcode for p in procs):
        return {"error": f"exit codes {[p.exitcode for p in procs]}"}
    times = [m for m in msgs if m[0] == "time"]
    checks = [m[2] for m in msgs if m[0] == "check"]
    bypass = [m[2] for m in msgs if m[0] == "bypass"]
    med = max(m[2] for m in times)      # the slowest rank sets the pace
    mean = max(m[3] for m in times)
    return {"frames_s": world * args.batch / med, "mean_frames_s": world * args.batch / mean,
            "grad_rank_mismatch": max(checks) if checks else None,
            "mismatch_pretrain_pattern": max(bypass) if bypass else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--views", default="2x224+6x96")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--warm", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-ddp", action="store_true")
    ap.add_argument("--port", type=int, default=29611)
    args = ap.parse_args()
    if args.tiny:
        args.views, args.batch, args.warm, args.steps = "2x32+2x16", 4, 1, 2
    ngpu = torch.cuda.device_count() if not args.tiny else 2
    info = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "gpus": ngpu,
            "views": args.views, "batch_per_gpu": args.batch, "date": time.strftime("%Y-%m-%d")}
    print(info, flush=True)
    rows = []
    if not args.skip_ddp:
        for w in (1, 2):
            if w > ngpu:
                continue
            r = ddp_run(w, args)
            rows.append({"what": "DDP step, one DDP forward (recommended loop)", "gpus": w, **r})
            print(rows[-1], flush=True)
            args.port += 1
        if len(rows) == 2 and "frames_s" in rows[0] and "frames_s" in rows[1]:
            rows[1]["scaling_eff"] = rows[1]["frames_s"] / (2 * rows[0]["frames_s"])
    save_json("scaling_ddp.json", {"info": info, "rows": rows})
    print("\nSCALING (bare DDP)")
    print(table(rows, ["what", "gpus", "frames_s", "mean_frames_s", "scaling_eff", "grad_rank_mismatch", "mismatch_pretrain_pattern", "error"]))
    if not args.skip_ray and ngpu >= 2:
        cmd = [sys.executable, str(ROOT / "bench" / "pipeline.py"), "--workers", "1,2", "--no-bare",
               "--views", args.views, "--ray-cpus", "9"]
        print("\nrunning", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=False)


if __name__ == "__main__":
    main()
