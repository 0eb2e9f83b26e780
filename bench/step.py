"""Issue 17: sportray's training step against a bare reference, in one process, on one GPU.

Rows, each timed in the same process on the same uint8 frames (B, 224, 398, 3) already on the GPU:
  bare reference     bench/bare_reference.py: timm ViT-S/16 + LeJEPA loss + fused AdamW, views
                     made inside the step, the whole step compiled; no sportray code;
  sportray           sportray.pretrain.train_step with step_forward, exactly what the training
                     loop runs on one worker with --compile (views by sportray.views with fused
                     colour ops, the whole forward compiled, directions drawn ahead);
  sportray, before   the step as it was before issue 17: only the backbone compiled, head and loss
                     eager, SIGReg directions copied from pageable memory inside the head (a host
                     sync every step).
Throughput: blocks of --steps steps with no synchronisation inside a block (as the loop runs), one
block per row per round, rows interleaved over --rounds rounds; the median block is reported and
the ratio is taken per round (paired). MFU: FLOPs counted with FlopCounterMode on one eager step
of each, over the bf16 GEMM peak measured here (8192^3 products on random data, median).

    python bench/step.py            # GPU: ViT-S/16, batch 256, 2x224+6x96
    python bench/step.py --tiny     # CPU smoke test (no compile, tiny sizes)
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import time

from _common import out_dir, save_json, sync, table
import torch
import torch.nn as nn

from bare_reference import BareStep


def gemm_peak(device, n: int = 8192, reps: int = 30) -> float:
    """bf16 matrix-product rate (FLOP/s) on random inputs, median of `reps` timed with events."""
    a = [torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(3)]
    b = [torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(3)]
    for i in range(5):
        a[i % 3] @ b[i % 3]
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        a[i % 3] @ b[(i + 1) % 3]
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) / 1e3)
    del a, b
    return 2 * n ** 3 / statistics.median(times)


class BeforeStep(nn.Module):
    """sportray.pretrain.LeJEPAStep before issue 17: backbone per group (compiled alone), head
    eager, directions drawn inside the head and copied from pageable memory (a host sync)."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head
        object.__setattr__(self, "encode", torch.compile(backbone))
        self.step, self.seed = 0, 0

    def forward(self, views, directions):
        from sportray.lejepa import draw_directions
        emb = [self.encode(v.flatten(0, 1)).view(v.shape[0], v.shape[1], -1) for v in views]
        dev = emb[0].device
        a = draw_directions(self.head.proj_dim, self.head.n_directions, self.step, self.seed, "cpu").to(dev)
        return self.head(emb, directions=a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--views", default="2x224+6x96")
    ap.add_argument("--warm", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-before", action="store_true")
    ap.add_argument("--profile", action="store_true", help="count kernels per step (torch.profiler)")
    args = ap.parse_args()
    from sportray.config import PretrainConfig, parse_views
    from sportray.pretrain import LeJEPAStep, build_model, step_forward, train_step

    if args.tiny:
        dev, model, batch, views = torch.device("cpu"), "vit_small", 2, "2x32+2x16"
        args.warm, args.steps, args.rounds = 1, 2, 2
    else:
        dev, model, batch, views = torch.device("cuda"), "vit_small", args.batch, args.views
    torch._dynamo.config.cache_size_limit = 64
    groups = parse_views(views)
    gpu = dev.type == "cuda"
    info = {"device": torch.cuda.get_device_name() if gpu else "cpu", "torch": torch.__version__,
            "batch": batch, "views": views, "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    import timm
    info["timm"] = timm.__version__
    if gpu:
        info["gemm_peak_tflops"] = gemm_peak(dev) / 1e12
    print(info, flush=True)

    g = torch.Generator().manual_seed(0)
    frames = [torch.randint(0, 256, (batch, 224, 398, 3), generator=g, dtype=torch.uint8).to(dev) for _ in range(2)]
    cfg = PretrainConfig(model=model, views=views, batch_size=batch, compile=gpu, steps=100_000,
                         warmup_steps=10, clip=1.0, sigreg_directions=256)

    def sportray_row(before: bool):
        backbone, head = build_model(cfg)
        backbone.to(dev)
        head.to(dev)
        trainable = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=gpu)
        if before:
            module = BeforeStep(backbone, head)
            fwd = module
        else:
            module = LeJEPAStep(backbone, head)
            fwd = step_forward(module, module, cfg, world=1)
        state = {"i": 0}

        def step():
            i = state["i"]
            if before:
                module.step = i
            out, _ = train_step(fwd, opt, trainable, frames[i % 2], groups, cfg, i)
            state["i"] += 1
            return out["loss"]
        return step, module, opt, trainable

    rows = {}
    bare = BareStep(dev, groups, ((0.3, 1.0), (0.05, 0.3)), n_directions=256, compile=gpu)
    bare_i = {"i": 0}

    def bare_step():
        loss = bare(frames[bare_i["i"] % 2])
        bare_i["i"] += 1
        return loss
    rows["bare reference"] = {"fn": bare_step}
    s_step, s_module, s_opt, s_trainable = sportray_row(before=False)
    rows["sportray"] = {"fn": s_step}
    if not args.no_before:
        rows["sportray, before issue 17"] = {"fn": sportray_row(before=True)[0]}

    # FLOPs per step, counted on eager steps (forward + backward + loss; the optimizer adds none)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
            loss = bare.model(frames[0], bare.groups, bare.scales)
        loss.backward()
    bare.opt.zero_grad(set_to_none=True)
    rows["bare reference"]["flops"] = fc.get_total_flops()
    eager_cfg = dataclasses.replace(cfg, compile=False)
    with FlopCounterMode(display=False) as fc:
        train_step(s_module, s_opt, s_trainable, frames[0], groups, eager_cfg, 0)
    for name in rows:
        if name.startswith("sportray"):
            rows[name]["flops"] = fc.get_total_flops()
    for name, r in rows.items():
        print(f"{name}: {r['flops'] / batch / 1e9:.1f} GFLOP/frame", flush=True)
    gc.collect()

    for name in list(rows):                 # warm-up: compiles here
        r = rows[name]
        t0 = time.perf_counter()
        try:
            for _ in range(args.warm):
                loss = r["fn"]()
            sync(dev)
        except Exception as exc:            # one broken row must not cost the others' figures
            import traceback
            traceback.print_exc()
            print(f"ROW FAILED {name}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            del rows[name]
            continue
        r["warm_s"] = time.perf_counter() - t0
        r["loss"] = float(loss.detach())
        print(f"warm {name}: {r['warm_s']:.1f} s, loss {r['loss']:.4f}", flush=True)

    for rnd in range(args.rounds):
        for name, r in rows.items():
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                r["fn"]()
            sync(dev)
            r.setdefault("rates", []).append(args.steps * batch / (time.perf_counter() - t0))
        print(f"round {rnd}: " + ", ".join(f"{n} {r['rates'][-1]:,.0f}" for n, r in rows.items()), flush=True)

    kernels = {}
    if args.profile and gpu:
        from torch.profiler import ProfilerActivity, profile
        for name, r in rows.items():
            sync(dev)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(2):
                    r["fn"]()
                sync(dev)
            ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            kernels[name] = {"kernels_per_step": len(ev) / 2,
                             "gpu_busy_ms_per_step": sum(e.device_time for e in ev) / 1e3 / 2}
            print(f"profile {name}: {kernels[name]}", flush=True)

    base = rows["bare reference"]["rates"]
    out = []
    for name, r in rows.items():
        rate = statistics.median(r["rates"])
        paired = [a / b for a, b in zip(r["rates"], base)]
        row = {"what": name, "frames_s": rate, "min": min(r["rates"]), "max": max(r["rates"]),
               "vs_bare": statistics.median(paired), "vs_bare_min": min(paired), "vs_bare_max": max(paired),
               "gflop_frame": r["flops"] / batch / 1e9, "warm_s": r["warm_s"], "loss": r["loss"],
               **kernels.get(name, {})}
        if gpu:
            row["mfu"] = r["flops"] / batch * rate / (info["gemm_peak_tflops"] * 1e12)
        out.append(row)
    save_json("step.json", {"info": info, "rows": out, "rates": {n: r["rates"] for n, r in rows.items()}})
    print(f"\nSTEP  {info}")
    print(table(out, ["what", "frames_s", "min", "max", "vs_bare", "vs_bare_min", "vs_bare_max", "gflop_frame",
                      "mfu", "kernels_per_step", "gpu_busy_ms_per_step", "warm_s", "loss"]))


if __name__ == "__main__":
    main()
