"""Shared helpers for the benchmarks (not a test module): paths, a synthetic frame store, the
LeJEPA step exactly as sportray/pretrain.py runs it, and timing."""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")

import numpy as np  # noqa: E402
import torch  # noqa: E402

H100_PEAK_DENSE_BF16 = 989e12     # H100 SXM dense bf16 datasheet
ANCHOR_PEAK = 800e12              # the peak DESIGN.md §6's anchors used (~measured 8k GEMM, 798 TFLOP/s)


def out_dir() -> Path:
    p = Path(os.environ.get("OUT") or (ROOT / "out"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def save_json(name: str, obj) -> None:
    (out_dir() / name).write_text(json.dumps(obj, indent=1, default=str))


def synth_frames(n: int, h: int = 224, w: int = 398, seed: int = 0) -> np.ndarray:
    """Frame-like uint8 frames (smooth colour fields + a few blobs + mild noise): compress with zstd
    about as a real pitch does, so the store read costs real decompression."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    base = np.stack([60 + 40 * np.sin(xx / 37.0), 120 + 50 * np.cos(yy / 23.0), 50 + 30 * np.sin((xx + yy) / 51.0)], -1)
    for i in range(n):
        shift = rng.integers(0, 64, size=2)
        img = np.roll(base, tuple(shift), axis=(0, 1)).copy()
        for _ in range(6):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            img[max(0, cy - 8):cy + 8, max(0, cx - 4):cx + 4] = rng.integers(0, 255, 3)
        img += rng.normal(0, 3, size=(h, w, 1)).astype(np.float32)
        out[i] = np.clip(img, 0, 255)
    return out


def build(model: str, views: str, directions: int, device, seed: int = 0, compile_: bool = False, lr: float = 5e-4):
    """(backbone, forward_backbone, head, optimizer, trainable, groups) as pretrain.py builds them."""
    from sportray.config import PretrainConfig, parse_views
    from sportray.pretrain import build_model
    cfg = PretrainConfig(model=model, views=views, sigreg_directions=directions, seed=seed)
    backbone, head = build_model(cfg)
    backbone.to(device)
    head.to(device)
    trainable = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    fwd = torch.compile(backbone) if compile_ else backbone
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.05, fused=(torch.device(device).type == "cuda"))
    return backbone, fwd, head, opt, trainable, parse_views(views)


def lejepa_step(fwd, head, opt, trainable, groups, frames, step, gen, clip=1.0, views_in=None, fuse_views=False):
    """One training step as sportray/pretrain.py's loop body: views on the device, backbone per
    view group, LeJEPA head, AdamW, clip. `views_in`: pre-made float views (the bare baseline);
    `fuse_views`: compiled colour operations (pretrain.py does this with --compile on a GPU)."""
    from sportray.views import make_views
    dev = frames.device if frames is not None else views_in[0].device
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        views = views_in if views_in is not None else make_views(frames, groups, gen, compiled=fuse_views)
        emb = []
        for v in views:
            count, b = v.shape[:2]
            emb.append(fwd(v.flatten(0, 1)).view(count, b, -1))
        out = head(emb, step=step, seed=0)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(trainable, clip, foreach=True)
    opt.step()
    return out


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(fn, n_warm: int, n_timed: int, device) -> dict:
    """Per-step times (s): warm-up, then each timed step synchronised (the loop has host syncs every
    step anyway); returns median, and mean over the whole timed block."""
    for i in range(n_warm):
        fn(i)
    sync(device)
    times = []
    t_all = time.perf_counter()
    for i in range(n_timed):
        t0 = time.perf_counter()
        fn(n_warm + i)
        sync(device)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    return {"median_s": statistics.median(times), "mean_s": total / n_timed, "min_s": min(times),
            "max_s": max(times), "n": n_timed}


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
        return str(v)
    w = {c: max([len(c)] + [len(fmt(r.get(c, ""))) for r in rows]) for c in cols}
    lines = [" | ".join(c.ljust(w[c]) for c in cols), "-+-".join("-" * w[c] for c in cols)]
    lines += [" | ".join(fmt(r.get(c, "")).ljust(w[c]) for c in cols) for r in rows]
    return "\n".join(lines)
