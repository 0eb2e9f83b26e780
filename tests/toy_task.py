"""A probe task that lives outside sportray, as a user's own would: is a frame bright or dark?

It shows everything a task needs (sportray/tasks/base.py) in one small file: a probe-set
builder, a probe on frozen pooled features (nearest class mean: no training, so it is fast), an
interval over its own units ("clip"), and nothing else changed anywhere. Named in a config as
`ProbeConfig(tasks="basketball,soccer,tests.toy_task:TASK")`; Ray workers import it by that path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sportray import probes as P
from sportray.tasks.base import ProbeTask, TaskResult, score

N_PER_SPLIT = 12


class BrightnessTask(ProbeTask):
    name = "toy"
    metric = "toy_acc"
    title = "Toy brightness acc"
    units = ("clip", "frame")
    item_fields = ("correct",)
    gauge = "Toy: is the frame bright"

    def build_set(self, data, paths, out_dir: Path) -> Path:
        out = Path(out_dir) / "toy" / "toy.npz"
        if out.exists():
            return out
        rng = np.random.default_rng(data.split_seed)
        n = 3 * N_PER_SPLIT
        bright = np.arange(n) % 2
        base = np.where(bright, 170, 70)[:, None, None, None]
        images = np.clip(base + rng.normal(0, 40, (n, 224, 224, 3)), 0, 255).astype(np.uint8)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, images=images, label=bright, split=np.repeat(["train", "valid", "test"], N_PER_SPLIT),
                 clip=np.array([f"clip{i // 3}" for i in range(n)]))
        return out

    def set_tags(self, path) -> dict[str, str]:
        return {"source": "synthetic brightness frames"}

    def run(self, backbone, arrays, cfg, device) -> TaskResult:
        x = P.extract_features(backbone, arrays["images"], device, cfg.feature_batch, pool=True).numpy()
        label, split, clip = arrays["label"], arrays["split"].astype(str), arrays["clip"].astype(str)
        train = split == "train"
        means = np.stack([x[train & (label == c)].mean(0) for c in (0, 1)])
        pred = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        scores = {}
        for name in ("valid", "test"):
            rows = split == name
            correct = (pred[rows] == label[rows]).astype(np.float64)
            ci = P.unit_bootstrap_ci(correct, units=clip[rows], n=cfg.bootstrap, seed=cfg.seed)
            scores[name] = score(correct.mean(), ci, clip[rows], correct=correct)
        return TaskResult(self.name, lr=0.0, valid=scores["valid"], test=scores["test"])


TASK = BrightnessTask()
