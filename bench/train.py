"""sportray's LeJEPA training step on one GPU: frames/s and MFU, eager and torch.compile.

The step is pretrain.py's loop body (bench/_common.lejepa_step): uint8 frames 224x398 on the
device -> make_views (CPU view_generator, no host sync, as pretrain.py) -> ViT-S/16 per view group -> LeJEPA head
(SIGReg 256 directions, PretrainConfig's default; 1024 also reported) -> AdamW fused, clip 1.0,
bf16 autocast. The "bare" rows feed the same compiled backbone + head + optimizer with random float
views already on the device (no make_views): the anchor for the views' cost.
FLOPs are counted with torch.utils.flop_counter.FlopCounterMode on one eager step.

    python bench/train.py            # GPU, batch 256
    python bench/train.py --tiny     # CPU smoke test
"""
from __future__ import annotations

import argparse
import gc
import time

from _common import (ANCHOR_PEAK, H100_PEAK_DENSE_BF16, build, lejepa_step, out_dir, save_json, sync,
                     table, time_steps)
import torch
import torch._dynamo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-all", action="store_true", help="compile every spec (default: the main one)")
    ap.add_argument("--main-only", action="store_true",
                    help="only the main spec: compiled, compiled bare, the --also-mode rows and the profile")
    ap.add_argument("--also-mode", default="", help="also compile with this torch.compile mode "
                    "(e.g. max-autotune-no-cudagraphs) for the main spec")
    args = ap.parse_args()
    from sportray.views import make_views, view_generator

    if args.tiny:
        dev, model, batch = torch.device("cpu"), "vit_tiny_demo", 2
        specs = ["2x32+4x16", "4x32", "2x32"]
        args.warm, args.steps = 1, 2
        compile_ok = False
    else:
        dev, model, batch = torch.device("cuda"), "vit_small", args.batch
        specs = ["2x224+6x96", "6x224", "2x224"]
        compile_ok = not args.no_compile
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch._dynamo.config.cache_size_limit = 64
    torch._dynamo.config.automatic_dynamic_shapes = False   # static kernels per view shape
    main_spec = specs[0]
    info = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
            "torch": torch.__version__, "batch": batch, "date": time.strftime("%Y-%m-%d")}
    print(info, flush=True)

    g = torch.Generator().manual_seed(0)
    frames = [torch.randint(0, 256, (batch, 224, 398, 3), generator=g, dtype=torch.uint8).to(dev) for _ in range(2)]
    backbone, _, head, opt, trainable, _ = build(model, main_spec, 256, dev)
    from sportray.config import parse_views
    cfwd = torch.compile(backbone) if compile_ok else None
    rows, flops = [], {}

    def gen_cuda(i):
        gg = torch.Generator(device=dev)
        gg.manual_seed((0 * 1_000_003 + i * 7_919) % (2**63))
        return gg

    def run(spec, mode, fwd, directions=256, gen_kind="cpu", bare=False, fuse_views=None):
        fuse_views = mode.startswith("compiled") if fuse_views is None else fuse_views
        groups = parse_views(spec)
        head.n_directions = directions
        bare_views = None
        if bare:
            bare_views = [torch.randn(c, batch, 3, s, s, device=dev, generator=None) for c, s in groups]

        def fn(i):
            gen = gen_cuda(i) if gen_kind == "cuda" else view_generator(0, i)
            lejepa_step(fwd, head, opt, trainable, groups, None if bare else frames[i % 2], i, gen, 1.0,
                        views_in=bare_views, fuse_views=fuse_views)
        row = {"spec": spec, "mode": mode, "dirs": directions, "gen": gen_kind if not bare else "-",
               "views": "-" if bare else ("fused" if fuse_views else "eager")}
        try:
            t = time_steps(fn, args.warm, args.steps, dev)
        except torch.OutOfMemoryError as e:
            row.update(frames_s="OOM", note=str(e).splitlines()[0][:80])
            print(row, flush=True)
            rows.append(row)
            return row
        finally:
            del bare_views
            opt.zero_grad(set_to_none=True)
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        fl = flops.get(spec)
        row.update(step_ms=t["median_s"] * 1e3, frames_s=batch / t["median_s"], mean_frames_s=batch / t["mean_s"])
        if fl:
            row["gflop_frame"] = fl / batch / 1e9
            row["mfu_989"] = fl / t["median_s"] / H100_PEAK_DENSE_BF16
            row["mfu_800"] = fl / t["median_s"] / ANCHOR_PEAK
        if dev.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        print(row, flush=True)
        rows.append(row)
        return row

    # FLOPs of one eager step per spec (forward + backward + head; what the matrix units must do)
    from torch.utils.flop_counter import FlopCounterMode
    if args.main_only:
        specs = specs[:1]
    for spec in specs:
        groups = parse_views(spec)
        try:
            with FlopCounterMode(display=False) as fc:
                lejepa_step(backbone, head, opt, trainable, groups, frames[0], 0, gen_cuda(0), 1.0)
            flops[spec] = fc.get_total_flops()
        except torch.OutOfMemoryError:
            flops[spec] = None
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        print(f"flops {spec}: {flops[spec] / batch / 1e9 if flops[spec] else None} GFLOP/frame", flush=True)

    # views alone (make_views, CPU view_generator as pretrain.py, and a CUDA generator)
    views_rows = []
    for spec in specs:
        groups = parse_views(spec)
        for kind, fused in (("cpu", False), ("cuda", False), ("cpu", True)):
            if fused and not compile_ok:
                continue
            def vf(i, kind=kind, fused=fused):
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    make_views(frames[i % 2], groups, gen_cuda(i) if kind == "cuda" else view_generator(0, i),
                               compiled=fused)
            t = time_steps(vf, args.warm, args.steps, dev)
            views_rows.append({"spec": spec, "gen": kind, "views": "fused" if fused else "eager",
                               "views_ms": t["median_s"] * 1e3, "views_frames_s": batch / t["median_s"]})
            print(views_rows[-1], flush=True)

    if not args.main_only:
        for spec in specs:
            run(spec, "eager", backbone)
        run(main_spec, "eager bare", backbone, bare=True)
    if cfwd is not None:
        for spec in (specs if args.compile_all else specs[:1]):
            t0 = time.perf_counter()
            run(spec, "compiled", cfwd)
            rows[-1]["first_call_s"] = time.perf_counter() - t0
            run(spec, "compiled bare", cfwd, bare=True)
        run(main_spec, "compiled", cfwd, fuse_views=False)
        if not args.main_only:
            run(main_spec, "compiled", cfwd, gen_kind="cuda")
            run(main_spec, "compiled", cfwd, directions=1024)
        if args.also_mode:
            torch._dynamo.reset()
            afwd = torch.compile(backbone, mode=args.also_mode)
            t0 = time.perf_counter()
            run(main_spec, f"compiled {args.also_mode}", afwd)
            rows[-1]["first_call_s"] = time.perf_counter() - t0
            run(main_spec, f"compiled {args.also_mode} bare", afwd, bare=True)
            del afwd
            torch._dynamo.reset()
            cfwd = torch.compile(backbone)

    # profile: top ops of the compiled (or eager) main step
    prof_txt = ""
    if dev.type == "cuda":
        from torch.profiler import ProfilerActivity, profile
        groups = parse_views(main_spec)
        head.n_directions = 256
        fwd = cfwd if cfwd is not None else backbone
        for i in range(2):
            lejepa_step(fwd, head, opt, trainable, groups, frames[i % 2], i, view_generator(0, i),
                        fuse_views=cfwd is not None)
        sync(dev)
        n = 4
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(n):
                lejepa_step(fwd, head, opt, trainable, groups, frames[i % 2], i, view_generator(0, i),
                        fuse_views=cfwd is not None)
            sync(dev)
        wall = (time.perf_counter() - t0) / n
        ka = prof.key_averages()
        busy = sum(e.self_device_time_total for e in ka) / 1e3 / n
        prof_txt = ka.table(sort_by="self_device_time_total", row_limit=25)
        (out_dir() / "profile_train.txt").write_text(
            f"{main_spec} {'compiled' if cfwd is not None else 'eager'} batch {batch}: wall/step {wall * 1e3:.1f} ms "
            f"(profiler on), GPU kernel time/step {busy:.1f} ms\n\n" + prof_txt)
        print(f"PROFILE {main_spec}: wall/step {wall * 1e3:.1f} ms (profiler on), GPU kernel time/step {busy:.1f} ms")
        print(ka.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))

    for r in rows:
        if r["mode"].endswith("bare"):
            continue
        b = next((x for x in rows if x["spec"] == r["spec"] and x["mode"] == r["mode"] + " bare"), None)
        if b and isinstance(b.get("frames_s"), float) and isinstance(r.get("frames_s"), float):
            r["vs_bare"] = r["frames_s"] / b["frames_s"]
    save_json("train.json", {"info": info, "flops": flops, "rows": rows, "views": views_rows})
    print("\nVIEWS ONLY")
    print(table(views_rows, ["spec", "gen", "views", "views_ms", "views_frames_s"]))
    print(f"\nTRAIN STEP  {info['device']}  batch {batch}  (MFU vs 989 TFLOP/s dense bf16 H100 SXM, and vs 800 as DESIGN §6)")
    print(table(rows, ["spec", "mode", "dirs", "gen", "views", "step_ms", "frames_s", "mean_frames_s", "gflop_frame",
                       "mfu_989", "mfu_800", "vs_bare", "peak_gib", "first_call_s"]))


if __name__ == "__main__":
    main()
