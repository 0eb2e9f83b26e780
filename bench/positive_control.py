"""What makes the demo's pretraining beat the random-init floor? A recipe search outside Ray.

The demo (`python sweeps/scratch_views.py`) has a few CPU minutes per trial. This script trains
the same model with the same loop pieces sportray uses (pretrain.build_model, views.make_views,
the LeJEPA head, lr_at, clipping) on frames of a frame store, single process, then probes the
backbone exactly as a trial does (tasks.evaluate) and prints validation and test metrics next to
the random-init floor of the same seed. It reports seconds per step, so a recipe can be priced
against the demo's budget.

    python bench/positive_control.py --store DIR --probesets DIR \
        --recipe "views=2x224 steps=60 lr=1e-3 batch_size=16" --recipe "..." --seeds 0,1

Each recipe is PretrainConfig fields as key=value (plus `embed_dim`/`depth` for the tiny ViT).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sportray import backbones, probes, tasks
from sportray.config import PretrainConfig, ProbeConfig, parse_views
from sportray.data import frames as fr
from sportray.data.probesets import load
from sportray.pretrain import build_model, clip_gradients, lr_at
from sportray.views import Augment, make_views, view_generator

# Recipe keys that are view/augmentation choices rather than PretrainConfig fields.
_VIEW_KEYS = {"gscale", "lscale", *vars(Augment()).keys()}


def load_frames(store: str) -> np.ndarray:
    """Every frame of a store in memory (the demo's stores are a few hundred MB at most)."""
    codec = fr.check_store(store)["frame_codec"]
    return np.concatenate([chunk for f in sorted(Path(store, "data").glob("*.parquet"))
                           for chunk in fr.iter_store_file(str(f), codec)])


def parse_recipe(text: str) -> tuple[dict, dict]:
    """ "k=v k=v" -> (PretrainConfig fields, extras): extras hold the tiny ViT's shape
    (embed_dim/depth/num_heads) and view choices (gscale/lscale "a,b", Augment fields)."""
    cfg, arch = {}, {}
    fields = {f: type(v) for f, v in vars(PretrainConfig()).items()}
    for item in text.split():
        k, v = item.split("=", 1)
        if k in ("embed_dim", "depth", "num_heads"):
            arch[k] = int(v)
        elif k in _VIEW_KEYS:
            arch[k] = tuple(float(x) for x in v.split(",")) if "," in v else float(v)
        else:
            kind = fields[k]
            cfg[k] = (v.lower() in ("1", "true")) if kind is bool else kind(v)
    return cfg, arch


def train(cfg: PretrainConfig, frames: np.ndarray, arch: dict, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    view_kw = {k: v for k, v in arch.items() if k in _VIEW_KEYS}
    shape = {k: v for k, v in arch.items() if k not in _VIEW_KEYS}
    aug = Augment(**{k: v for k, v in view_kw.items() if k not in ("gscale", "lscale")})
    scales = {name: view_kw[key] for name, key in (("global_scale", "gscale"), ("local_scale", "lscale"))
              if key in view_kw}
    spec = backbones.ARCHS["vit_tiny_demo"]
    backbones.ARCHS["vit_tiny_demo"] = (spec[0], {**spec[1], **shape})
    try:
        backbone, head = build_model(cfg)
    finally:
        backbones.ARCHS["vit_tiny_demo"] = spec
    step_module = torch.nn.ModuleDict(dict(backbone=backbone, head=head)).to(device)
    params = [p for p in step_module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    groups = parse_views(cfg.views)
    order = np.random.default_rng(cfg.seed).permutation(len(frames))
    pos, t0, losses = 0, time.perf_counter(), []
    for step in range(cfg.steps):
        if pos + cfg.batch_size > len(order):
            order, pos = np.random.default_rng(cfg.seed + step).permutation(len(frames)), 0
        batch = torch.from_numpy(frames[order[pos:pos + cfg.batch_size]]).to(device)
        pos += cfg.batch_size
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        views = make_views(batch, groups, view_generator(cfg.seed, step), aug=aug, **scales)
        embeddings = [backbone(v.flatten(0, 1)).view(*v.shape[:2], -1) for v in views]
        out = head(embeddings, step=step, seed=cfg.seed)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        clip_gradients(params, cfg.clip)
        opt.step()
        losses.append(out["loss"].item())
    backbone.cpu()
    return backbone, {"s_per_step": (time.perf_counter() - t0) / cfg.steps,
                      "loss_first": float(np.mean(losses[:5])), "loss_last": float(np.mean(losses[-5:]))}


def colour_cast(images: np.ndarray, salt: int, strength: float) -> np.ndarray:
    """Each image times its own random per-channel gain and brightness (a planted nuisance:
    lighting and camera colour that differ from clip to clip)."""
    rng = np.random.default_rng(salt)
    n = len(images)
    gain = rng.uniform(1 - strength, 1 + strength, (n, 1, 1, 3)) * rng.uniform(1 - strength, 1 + strength, (n, 1, 1, 1))
    out = np.empty_like(images)
    for i in range(0, n, 64):
        out[i:i + 64] = np.clip(images[i:i + 64].astype(np.float32) * gain[i:i + 64], 0, 255).astype(np.uint8)
    return out


def by_unit(values, units) -> dict:
    return {str(u): round(float(np.mean(values[units == u])), 4) for u in np.unique(units)}


def participation_ratio(backbone, images) -> float:
    """Effective dimension of the pooled features (sum(l)^2 / sum(l^2) of their covariance):
    low means collapsed features."""
    f = probes.extract_features(backbone, images, "cpu", pool=True).double()
    ev = torch.linalg.eigvalsh(torch.cov(f.T)).clamp_min(0)
    return float(ev.sum() ** 2 / (ev ** 2).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True)
    p.add_argument("--soccer", required=True, help="soccer.npz")
    p.add_argument("--basketball", required=True, help="basketball.npz")
    p.add_argument("--recipe", action="append", default=[])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--floor", action="store_true", help="also probe the random-init floor")
    p.add_argument("--out", default="")
    p.add_argument("--nuisance", type=float, default=0.0,
                   help="plant a per-image colour cast of this strength (0.5: gains 0.5..1.5) in every set")
    p.add_argument("--device", default="cpu", help="train and probe here (cuda: fast recipe search; "
                   "s_per_step is then the GPU's, not the demo's)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    frames = load_frames(args.store)
    bb, sc = dict(load(args.basketball)), dict(load(args.soccer))
    if args.nuisance:
        frames = colour_cast(frames, 1, args.nuisance)
        bb["images"] = colour_cast(np.asarray(bb["images"]), 2, args.nuisance)
        sc["images"] = colour_cast(np.asarray(sc["images"]), 3, args.nuisance)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        todo = [("floor", None)] if args.floor else []
        todo += [(r, parse_recipe(r)) for r in args.recipe]
        for name, parsed in todo:
            t0 = time.perf_counter()
            if parsed is None:
                backbone, info = backbones.build_backbone("vit_tiny_demo", seed=seed), {}
            else:
                cfg = PretrainConfig(**{**dict(model="vit_tiny_demo", warmup_steps=10, sigreg_directions=128,
                                              proj_dim=64), **parsed[0], "seed": seed})
                backbone, info = train(cfg, frames, parsed[1], args.device)
            res = tasks.evaluate(backbone, {"basketball": bb, "soccer": sc}, ProbeConfig(seed=seed), device=args.device)
            b, s = res["basketball"].detail, res["soccer"].detail
            row = {"recipe": name, "seed": seed, **info, "wall_s": time.perf_counter() - t0,
                   "bb_valid": b.val_scores[b.lr], "bb_test": b.iou, "sc_valid": s.val_scores[s.lr],
                   "sc_test": s.bal_acc, "features_pr": participation_ratio(backbone, sc["images"][:256]),
                   "bb_test_by_arena": by_unit(b.per_frame_iou, bb["arena"][b.test_indices])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
