"""The soccer task: which of SoccerNet's 17 action classes a broadcast frame shows.

Probe: the mean of the 196 frozen patch tokens -> linear D -> 17, class-balanced cross-entropy
(the loss matches the metric), argmax. Metric: balanced accuracy, the mean per-class recall
over the classes present in the split (chance 1/17); per-class test recalls go to
`soccer_recall.csv` and a chart. Interval unit: the game, else the event. Probe set: soccer.npz
(sportray/data/probesets.py) from a SoccerNet root with Labels-v2.json; the embedded default is
the synthetic corpus's soccernet/ folder. Picture: soccer_top5.png.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from sportray import panels
from sportray import probes as P
from sportray.config import SOCCER_CLASSES, DataConfig, ProbeConfig
from sportray.data import probesets
from sportray.tasks.base import ProbeTask, TaskResult, score


@dataclass
class SoccerResult:
    """Pooled-token event probe: the head chosen on validation, scored on test and on validation.

    Indices point into the probe set (`test_indices`, `valid_indices`); unit arrays name each
    event's game ("" when the probe set has none).
    """
    bal_acc: float                   # balanced accuracy over the classes present in test
    ci: tuple[float, float]          # unit bootstrap 95 % CI: test games, then events within them
    per_class_recall: dict[str, float]   # by SOCCER_CLASSES name; NaN if absent from test
    probs: np.ndarray                # (N_test, 17) float32 softmax
    preds: np.ndarray                # (N_test,) argmax class ids
    labels: np.ndarray               # (N_test,) true class ids
    lr: float
    test_indices: np.ndarray
    val_scores: dict[float, float] = field(default_factory=dict)   # lr -> validation balanced acc
    chance: float = 1.0 / len(SOCCER_CLASSES)
    n_train: int = 0
    n_valid: int = 0
    unit: str = "event"              # what `ci` resampled: "game" (>= 2 test games) or "event"
    test_units: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    valid_bal_acc: float = float("nan")   # the chosen head's validation balanced accuracy
    valid_ci: tuple[float, float] = (float("nan"), float("nan"))
    valid_labels: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    valid_preds: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    valid_units: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    valid_unit: str = "event"
    valid_indices: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))


def probe_soccer(features: torch.Tensor | np.ndarray, labels: np.ndarray, split: np.ndarray,
                 cfg: ProbeConfig | None = None, device=None, units: np.ndarray | None = None) -> SoccerResult:
    """Pooled linear probe: features (N, 196, D) or already pooled (N, D), labels (N,) class ids.

    Mean-pools tokens, trains the lr grid with class-balanced cross-entropy, picks the head with
    the best validation balanced accuracy, reports it on test and on validation, each with a
    unit bootstrap CI over `units` (N,) (the game of each event; None or one game: over
    events), and test per-class recall by SOCCER_CLASSES name.
    """
    cfg = cfg or ProbeConfig()
    dev = P.torch_device(device)
    x = torch.as_tensor(features, dtype=torch.float32)
    if x.ndim == 3:
        x = x.mean(dim=1)
    labels = np.asarray(labels).astype(np.int64)
    n_classes = len(SOCCER_CLASSES)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"probe_soccer: features {tuple(x.shape)} do not match labels {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"probe_soccer: labels must be ids in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    tr, va, te = P.split_indices(split, cfg.seed)
    va_units, te_units = (P.units_of(units, len(labels), i, "probe_soccer") for i in (va, te))
    counts = np.bincount(labels[tr], minlength=n_classes).astype(np.float64)
    present = counts > 0
    cw = np.where(present, len(tr) / (present.sum() * np.maximum(counts, 1)), 0.0)
    y = torch.from_numpy(labels)
    heads = P.fit_heads(x, y, tr, n_classes, "ce", cfg, dev, class_weight=torch.tensor(cw, dtype=torch.float32))

    val_pred = heads.logits(x[va]).argmax(-1).numpy()  # (Nv, L)
    val_scores = {lr: P.balanced_accuracy(labels[va], val_pred[:, li]) for li, lr in enumerate(heads.lrs)}
    best = int(np.argmax([val_scores[lr] for lr in heads.lrs]))

    probs = torch.softmax(heads.logits(x[te])[:, best], dim=-1).numpy().astype(np.float32)
    preds = probs.argmax(-1)
    y_te, y_va, pred_va = labels[te], labels[va], val_pred[:, best].astype(np.int64)
    recall = P.per_class_recall(y_te, preds, n_classes)
    return SoccerResult(
        bal_acc=P.balanced_accuracy(y_te, preds),
        ci=P.unit_bootstrap_ci(y_true=y_te, y_pred=preds, units=te_units, n=cfg.bootstrap, seed=cfg.seed),
        per_class_recall={name: float(r) for name, r in zip(SOCCER_CLASSES, recall)},
        probs=probs, preds=preds, labels=y_te, lr=heads.lrs[best], test_indices=te,
        val_scores=val_scores, n_train=len(tr), n_valid=len(va),
        unit=TASK.unit_name(te_units), test_units=te_units,
        valid_bal_acc=val_scores[heads.lrs[best]],
        valid_ci=P.unit_bootstrap_ci(y_true=y_va, y_pred=pred_va, units=va_units, n=cfg.bootstrap, seed=cfg.seed),
        valid_labels=y_va, valid_preds=pred_va, valid_units=va_units,
        valid_unit=TASK.unit_name(va_units), valid_indices=va)


class SoccerTask(ProbeTask):
    name = "soccer"
    metric = "soccer_bal_acc"
    title = "Soccer bal. acc"
    units = ("game", "event")
    item_fields = ("true", "pred")
    gauge = "Soccer 17-class balanced accuracy of the trial's final backbone"

    def build_set(self, data: DataConfig, paths, out_dir: Path) -> Path:
        return probesets.build_soccer(paths.soccer, out_dir, split_seed=data.split_seed,
                                      split_lists=data.soccer_splits,
                                      include_not_shown=data.soccer_include_not_shown)

    def set_tags(self, path) -> dict[str, str]:
        meta = probesets.describe(path)
        if not meta:
            return {}
        return {"split": meta["split"], "split_lists": meta.get("split_lists") or "",
                "games": json.dumps(meta["games"]), "events": json.dumps(meta["events"]),
                "not_shown": (f"included ({meta['not_shown']})" if meta["include_not_shown"]
                              else f"left out ({meta['not_shown']})"),
                "duplicates_dropped": str(meta["duplicates_dropped"]),
                "listed_missing": str(len(meta["listed_missing"])), "unlisted": str(len(meta["unlisted"]))}

    def run(self, backbone, arrays: Mapping[str, np.ndarray], cfg: ProbeConfig, device) -> TaskResult:
        feats = P.extract_features(backbone, arrays["images"], device, cfg.feature_batch, pool=True)
        labels = arrays["label"] if "label" in arrays else arrays["labels"]
        s = probe_soccer(feats, labels, arrays["split"], cfg, device, units=arrays.get("game"))
        return TaskResult(
            self.name, s.lr,
            valid=score(s.valid_bal_acc, s.valid_ci, s.valid_units, true=s.valid_labels.astype(np.int64),
                        pred=s.valid_preds.astype(np.int64)),
            test=score(s.bal_acc, s.ci, s.test_units, true=s.labels.astype(np.int64), pred=s.preds.astype(np.int64)),
            detail=s, extra=recall_metrics(s.per_class_recall))

    def panel(self, arrays, result: TaskResult, out_dir: Path) -> list[Path]:
        s = result.detail
        return [panels.soccer_top5(arrays["images"][s.test_indices], s.probs, s.labels, out_dir / "soccer_top5.png"),
                *panels.recall_chart(s.per_class_recall, out_dir)]

    def same_items_fields(self) -> tuple[str, ...]:
        return ("unit", "true")

    def row_replicates(self, items, n: int, seed: int) -> np.ndarray:
        return P.unit_bootstrap(y_true=items[0]["true"], y_pred=np.stack([it["pred"] for it in items]),
                                units=items[0]["unit"], n=n, seed=seed)


def recall_metrics(per_class_recall: Mapping[str, float]) -> dict[str, float]:
    """Per-class test recalls as metrics for details.json (NaN: class absent from the test games)."""
    return {f"test/soccer_recall/{name.replace('->', ' to ')}": r for name, r in per_class_recall.items() if r == r}


TASK = SoccerTask()
