"""The basketball task: which 16x16 tiles of a DeepSportRadar frame show a player.

Probe: a per-tile linear classifier D -> 1 on each of the 196 frozen patch tokens, plain
(unweighted) BCE so that the sigmoid is a calibrated P(player), and P(player) >= 0.5 gives a
14x14 mask (sportray/probes.py, "Decisions"). Metric: mean per-frame IoU over held-out frames,
a frame with an empty union counting 1.0 (counted: `test/basketball_empty_frames`). Interval
unit: the arena (frames of one arena are not independent), else the frame. Probe set:
basketball.npz (sportray/data/probesets.py) from a DeepSportRadar root; the embedded default is
the synthetic corpus's deepsportradar/ folder. Picture: basketball_rows.png.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from sportray import panels, probes as P
from sportray.config import DataConfig, ProbeConfig
from sportray.data import probesets
from sportray.tasks.base import ProbeTask, TaskResult, score


@dataclass
class BasketballResult:
    """Per-tile player probe: the head chosen on validation, scored on test and on validation.

    Indices point into the probe set (`test_indices`, `valid_indices`); unit arrays name each
    frame's arena ("" when the probe set has none).
    """
    iou: float                       # mean per-frame IoU over test frames
    ci: tuple[float, float]          # unit bootstrap 95 % CI: test arenas, then frames within them
    per_frame_iou: np.ndarray        # (N_test,)
    probs: np.ndarray                # (N_test, 14, 14) float32, P(player) per tile
    pred_masks: np.ndarray           # (N_test, 14, 14) bool, probs >= 0.5
    lr: float                        # the head chosen on validation IoU
    empty_frames: int                # test frames with empty union (scored IoU 1.0)
    gt_empty_frames: int             # test frames with no player tile in the truth
    test_indices: np.ndarray
    val_scores: dict[float, float] = field(default_factory=dict)   # lr -> validation IoU
    n_train: int = 0
    n_valid: int = 0
    unit: str = "frame"              # what `ci` resampled: "arena" (>= 2 test arenas) or "frame"
    test_units: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    valid_iou: float = float("nan")  # the chosen head's mean validation IoU (= val_scores[lr])
    valid_ci: tuple[float, float] = (float("nan"), float("nan"))
    valid_per_frame_iou: np.ndarray = field(default_factory=lambda: np.array([]))
    valid_units: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    valid_unit: str = "frame"
    valid_indices: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))


def probe_basketball(features: torch.Tensor | np.ndarray, tiles: np.ndarray, split: np.ndarray,
                     cfg: ProbeConfig | None = None, device=None, pos_weight: float | str | None = None,
                     units: np.ndarray | None = None) -> BasketballResult:
    """Per-tile linear probe: features (N, 196, D), tiles (N, 14, 14) {0,1}, split (N,) -> result.

    Trains the lr grid on train frames (plain BCE, see module docstring; `pos_weight="balanced"`
    uses n_neg / n_pos), picks the head with the best mean validation IoU, reports it on test
    and on validation, each with a unit bootstrap CI over `units` (N,) (the arena of each
    frame; None or one arena: over frames).
    """
    cfg = cfg or ProbeConfig()
    dev = P.torch_device(device)
    x = torch.as_tensor(features, dtype=torch.float32)
    tiles = np.asarray(tiles)
    n, t, d = x.shape
    side = int(round(math.sqrt(t)))
    if side * side != t or tiles.shape != (n, side, side):
        raise ValueError(f"probe_basketball: features {tuple(x.shape)} do not match tiles {tiles.shape}")
    y = torch.from_numpy((tiles.reshape(n, t) > 0).astype(np.float32))
    tr, va, te = P.split_indices(split, cfg.seed)
    va_units, te_units = (P.units_of(units, n, i, "probe_basketball") for i in (va, te))
    if pos_weight == "balanced":
        pos = float(y[tr].sum())
        pos_weight = (y[tr].numel() - pos) / max(pos, 1.0)
    heads = P.fit_heads(x, y, tr, 1, "bce", cfg, dev, pos_weight=pos_weight)

    true_va = tiles[va].reshape(len(va), side, side) > 0
    val_probs = torch.sigmoid(heads.logits(x[va].reshape(-1, d))[..., 0]).numpy()  # (Nv*T, L)
    val_ious = [P.iou_per_frame(val_probs[:, li].reshape(len(va), side, side) >= P.THRESHOLD, true_va)
                for li in range(len(heads.lrs))]
    val_scores = {lr: float(v.mean()) for lr, v in zip(heads.lrs, val_ious)}
    best = int(np.argmax([val_scores[lr] for lr in heads.lrs]))  # first max: the smaller lr on ties

    probs = torch.sigmoid(heads.logits(x[te].reshape(-1, d))[:, best, 0]).numpy()
    probs = probs.reshape(len(te), side, side).astype(np.float32)
    pred = probs >= P.THRESHOLD
    true = tiles[te] > 0
    ious = P.iou_per_frame(pred, true)
    return BasketballResult(
        iou=float(ious.mean()), ci=P.unit_bootstrap_ci(ious, units=te_units, n=cfg.bootstrap, seed=cfg.seed),
        per_frame_iou=ious, probs=probs, pred_masks=pred, lr=heads.lrs[best],
        empty_frames=P.empty_union_frames(pred, true), gt_empty_frames=int((~true.any(axis=(1, 2))).sum()),
        test_indices=te, val_scores=val_scores, n_train=len(tr), n_valid=len(va),
        unit=TASK.unit_name(te_units), test_units=te_units,
        valid_iou=val_scores[heads.lrs[best]],
        valid_ci=P.unit_bootstrap_ci(val_ious[best], units=va_units, n=cfg.bootstrap, seed=cfg.seed),
        valid_per_frame_iou=val_ious[best], valid_units=va_units,
        valid_unit=TASK.unit_name(va_units), valid_indices=va)


class BasketballTask(ProbeTask):
    name = "basketball"
    metric = "basketball_iou"
    title = "Basketball IoU"
    units = ("arena", "frame")
    item_fields = ("iou",)
    gauge = "Basketball per-tile IoU of the trial's final backbone"

    def build_set(self, data: DataConfig, paths, out_dir: Path) -> Path:
        return probesets.build_basketball(paths.basketball, out_dir, test_arenas=data.test_arenas,
                                          split_seed=data.split_seed, coco_file=data.basketball_coco,
                                          images_root=data.basketball_images)

    def set_tags(self, path) -> dict[str, str]:
        meta = probesets.describe(path)
        if not meta:
            return {}
        return {"coco_file": meta["coco_file"], "images_root": meta["images_root"],
                "unlabelled_left_out": str(meta["unlabelled"]), "frames": json.dumps(meta["frames"]),
                "test_arenas": ",".join(meta["test_arenas"])}

    def run(self, backbone, arrays: Mapping[str, np.ndarray], cfg: ProbeConfig, device) -> TaskResult:
        feats = P.extract_features(backbone, arrays["images"], device, cfg.feature_batch)
        b = probe_basketball(feats, arrays["tiles"], arrays["split"], cfg, device,
                             units=arrays.get("arena"))
        return TaskResult(
            self.name, b.lr,
            valid=score(b.valid_iou, b.valid_ci, b.valid_units, iou=np.asarray(b.valid_per_frame_iou, np.float64)),
            test=score(b.iou, b.ci, b.test_units, iou=np.asarray(b.per_frame_iou, np.float64)),
            detail=b, extra={"test/basketball_empty_frames": float(b.empty_frames)})

    def panel(self, arrays, result: TaskResult, out_dir: Path) -> list[Path]:
        b = result.detail
        te = b.test_indices
        return [panels.basketball_rows(arrays["images"][te], arrays["masks"][te], b.probs, b.per_frame_iou,
                                       out_dir / "basketball_rows.png", gt_tiles=arrays["tiles"][te])]


TASK = BasketballTask()
