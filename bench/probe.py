"""Probe evaluation speed: frozen ViT-S/16 feature extraction (bf16, sportray.probes.extract_features)
for 10,000 224x224 frames, then both probes (probe_basketball on (2000, 196, 384) patch tokens,
probe_soccer on 10,000 pooled features) with ProbeConfig's defaults (4 lrs trained in parallel,
1,000-2,000 steps, bootstrap 1,000).

    python bench/probe.py           # GPU
    python bench/probe.py --tiny    # CPU smoke test
"""
from __future__ import annotations

import argparse
import time

from _common import save_json, table
import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--n-tiles", type=int, default=2000)
    args = ap.parse_args()
    from sportray.backbones import build_backbone
    from sportray.config import ProbeConfig
    from sportray.probes import extract_features
    from sportray.tasks.basketball import probe_basketball
    from sportray.tasks.soccer import probe_soccer

    cuda = torch.cuda.is_available() and not args.tiny
    dev = torch.device("cuda" if cuda else "cpu")
    n, nt = (64, 32) if args.tiny else (args.n, args.n_tiles)
    model = "vit_tiny_demo" if args.tiny else "vit_small"
    bb = build_backbone(model, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    info = {"device": torch.cuda.get_device_name() if cuda else "cpu", "n": n, "n_tiles": nt, "model": model}
    print(info, flush=True)
    rows = []

    def timed(name, fn, count):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = fn()
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        rows.append({"what": name, "items": count, "seconds": dt, "items_s": count / dt})
        print(rows[-1], flush=True)
        return r

    extract_features(bb, images[:256], dev, 64, pool=True)      # warm-up (cuDNN/cuBLAS handles)
    pooled = timed("extract_features pool=True, batch 64 (ProbeConfig.feature_batch)",
                   lambda: extract_features(bb, images, dev, 64, pool=True), n)
    timed("extract_features pool=True, batch 256", lambda: extract_features(bb, images, dev, 256, pool=True), n)
    tokens = timed("extract_features tokens (N,196,384), batch 64",
                   lambda: extract_features(bb, images[:nt], dev, 64, pool=False), nt)

    cfg = ProbeConfig()
    split = np.array(["train"] * int(nt * 0.6) + ["valid"] * int(nt * 0.2) + ["test"] * (nt - int(nt * 0.6) - int(nt * 0.2)))
    tiles = (rng.random((nt, 14, 14)) < 0.2).astype(np.uint8)
    bres = timed("probe_basketball (2000 frames x 196 tiles, 4 lrs)",
                 lambda: probe_basketball(tokens, tiles, split, cfg, dev), nt)
    ssplit = np.array(["train"] * int(n * 0.6) + ["valid"] * int(n * 0.2) + ["test"] * (n - int(n * 0.6) - int(n * 0.2)))
    labels = rng.integers(0, 17, n)
    sres = timed("probe_soccer (10,000 pooled, 17 classes, 4 lrs)",
                 lambda: probe_soccer(pooled, labels, ssplit, cfg, dev), n)
    total = rows[0]["seconds"] + rows[2]["seconds"] + rows[3]["seconds"] + rows[4]["seconds"]
    rows.append({"what": "total: extract 10k pooled + 2k tokens + both probes", "items": n, "seconds": total})
    print({"basketball_iou": bres.iou, "soccer_bal_acc": sres.bal_acc})
    save_json("probe_tiny.json" if args.tiny else "probe.json", {"info": info, "rows": rows})
    print(f"\nPROBES  {info['device']}  {model}")
    print(table(rows, ["what", "items", "seconds", "items_s"]))


if __name__ == "__main__":
    main()
