"""Probe evaluation: frozen features -> linear probes -> metrics with bootstrap CIs.

The study judges a backbone by what a *single linear layer* can read from its frozen patch
tokens (DESIGN.md §4 "Probes"):

- basketball: per-tile classifier D -> 1 on each of the 196 patch tokens, P(player) >= 0.5 gives
  a 14x14 mask, metric = mean per-frame IoU over held-out frames;
- soccer: mean of the 196 patch tokens -> linear D -> 17, argmax, metric = balanced accuracy
  (mean per-class recall over the classes present in the test set; chance = 1/17).

Both probes train a small learning-rate grid *in parallel* (DINOv2 style: one stacked set of heads,
one pass over the features per step, a per-head AdamW learning rate) and pick the head with the
best validation metric. Validation selects, test reports: the chosen head is scored on both
splits, and MLflow names say which (`test/basketball_iou`, `valid/basketball_iou`, ...:
`metrics_dict`). Everything is deterministic for `ProbeConfig.seed`.

Intervals (small test sets lie: the study's 84 basketball frames from three arenas moved +-0.06
IoU between seeds). Frames of one arena, events of one game, are not independent samples, so
each split's 95 % CI is a two-stage (cluster) percentile bootstrap: resample the split's units
(arenas / games) with replacement, then the items within each drawn unit with replacement, and
compute the metric on the pooled resampled items (`unit_bootstrap`). With fewer than two units
(or none given) it is the plain frame / event bootstrap; `result.unit` says which one ran.
`unit_bootstrap` also takes S seeds scored on the same items: the scorecard's row intervals
resample seeds x units x items with it. `save_items` keeps the per-item arrays of a run
(`probe_items.npz`) so those row intervals can be computed later.

Decisions (documented here because DESIGN.md leaves them open):

- Standardization: features are standardized with the *train split's* per-dimension mean/std
  (over all train tokens for basketball, over pooled train vectors for soccer). Backbones differ
  by orders of magnitude in feature scale (random init vs DINOv3), and one fixed lr grid only
  transfers across them on standardized inputs. The affine map is folded into the heads
  (W' = W / std, b' = b - (mean / std) W), so no standardized copy of the (N, 196, D) features
  is ever made and the returned heads apply to raw features. Dimensions with (near) zero train
  variance are left unscaled rather than blown up by 1/eps.
- Basketball loss: plain (unweighted) binary cross-entropy, no `pos_weight`. With plain BCE the
  sigmoid output is a calibrated P(player), so the study's "P(player) >= 0.5" rule means "more
  likely player than not". A `pos_weight = n_neg / n_pos` would move the 0.5 threshold to the
  balanced-error point and inflate false alarms, which IoU punishes as much as misses; pass
  `pos_weight="balanced"` (or a float) to `probe_basketball` to get that variant.
- Soccer loss: class-balanced cross-entropy (weight_c = n / (C_present * n_c) over train), so
  the training objective matches the metric (balanced accuracy weighs every class equally;
  "Ball out of play" would otherwise swamp "Penalty").
- Optimizer: AdamW (betas 0.9/0.999, decoupled weight decay `cfg.weight_decay` on weights, none
  on biases; the heads are stacked and each has its own lr, which is what one param group per
  head would do), zero-initialised heads (convex problem: zero init is deterministic and loses
  nothing), cosine lr decay to 0 over the run. An epoch shuffles frames (basketball: a minibatch
  is `cfg.batch_size` *frames*, i.e. 196x as many tokens, which keeps the gradient nearly exact;
  token-level minibatches of the same count converged clearly worse in our checks) or events
  (soccer). The step count is `cfg.epochs` epochs clamped to [min_steps, max_steps] (defaults
  PROBE_MIN_STEPS = 1000 / PROBE_MAX_STEPS = 2000): tiny real probe sets (~600 basketball frames
  = 3 steps an epoch) still get enough Adam steps for the low-lr heads to converge, and large ones
  (170 k soccer events) stay short on a GPU (figures: BENCHMARKS.md, "Figures moved from
  docstrings").
- Model selection: the final weights of each head are scored on the validation split (IoU for
  basketball, balanced accuracy for soccer); ties go to the smaller lr. If a probe set has no
  validation split, a seeded 20 % of the train items is held out for it (with a warning).
- IoU convention: a frame whose union is empty (no player tile in truth or prediction) counts
  IoU 1.0; such frames are counted and reported (`empty_frames`) so a set full of empty frames
  cannot silently inflate the mean.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from sportray.config import SOCCER_CLASSES, TILES, ProbeConfig
from sportray.views import normalize  # one normalization: what the backbone saw in pretraining

PROBE_MIN_STEPS = 1000
PROBE_MAX_STEPS = 2000
THRESHOLD = 0.5

TRAIN_NAMES = ("train",)
VALID_NAMES = ("valid", "val")
TEST_NAMES = ("test",)


# ---------------------------------------------------------------------------------------------
# Feature extraction
# ---------------------------------------------------------------------------------------------

def extract_features(backbone: torch.nn.Module, images: np.ndarray, device: str | torch.device = "cpu",
                     batch_size: int = 64, pool: bool = False) -> torch.Tensor:
    """Frozen patch tokens of a probe set: uint8 (N, H, W, 3) -> float32 (N, T, D) in CPU memory.

    The backbone runs in eval mode under `no_grad` (bf16 autocast on CUDA, the speed the probes
    need on 170 k events), in batches, and is put back in its previous train/eval mode.
    `pool=True` returns the mean over tokens, (N, D): the soccer readout, computed on the device
    so a large event set never holds N x 196 x D floats (171 k events would be ~51 GB).
    The backbone is moved to `device`.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"extract_features: expected uint8 images (N, H, W, 3), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"extract_features: expected uint8 images, got {images.dtype}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    was_training = backbone.training
    backbone.to(device).eval()
    n = images.shape[0]
    out: torch.Tensor | None = None
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
                if cuda:
                    chunk = chunk.pin_memory()
                x = normalize(chunk.to(device, non_blocking=True))
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
                    tokens = backbone.patch_tokens(x)
                if pool:
                    tokens = tokens.float().mean(dim=1)
                tokens = tokens.float().cpu()
                if out is None:
                    out = torch.empty((n, *tokens.shape[1:]), dtype=torch.float32)
                out[start:start + tokens.shape[0]] = tokens
    finally:
        backbone.train(was_training)
    if out is None:  # no images: shape from the backbone's width
        d = int(getattr(backbone, "embed_dim", 0))
        out = torch.empty((0, d) if pool else (0, TILES * TILES, d), dtype=torch.float32)
    return out


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def iou_per_frame(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-frame IoU of boolean masks (N, H, W) -> (N,) float64.

    A frame whose union is empty (nothing predicted, nothing true) counts 1.0: the probe got it
    exactly right. Count such frames with `empty_union_frames` and report them alongside.
    """
    pred = np.asarray(pred, dtype=bool)
    true = np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"iou_per_frame: pred {pred.shape} and true {true.shape} differ")
    if pred.ndim < 2:
        raise ValueError(f"iou_per_frame: expected (N, H, W) masks, got {pred.shape}")
    axes = tuple(range(1, pred.ndim))
    inter = np.logical_and(pred, true).sum(axis=axes)
    union = np.logical_or(pred, true).sum(axis=axes)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0).astype(np.float64)


def empty_union_frames(pred: np.ndarray, true: np.ndarray) -> int:
    """How many frames have an empty union (scored IoU 1.0 by convention)."""
    pred = np.asarray(pred, dtype=bool)
    true = np.asarray(true, dtype=bool)
    axes = tuple(range(1, pred.ndim))
    return int((~np.logical_or(pred, true).any(axis=axes)).sum())


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Recall of each class id 0..C-1 -> (C,) float64; NaN for classes absent from y_true.

    NaN (not 0) because a class with no test events has no recall: it must not drag the balanced
    accuracy down, and a scorecard should show it as missing.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"per_class_recall: y_true {y_true.shape} and y_pred {y_pred.shape} differ")
    if n_classes is None:
        n_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    counts = np.bincount(y_true, minlength=n_classes)[:n_classes]
    hits = np.bincount(y_true, weights=(y_true == y_pred), minlength=n_classes)[:n_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in y_true (= sklearn's balanced_accuracy_score)."""
    y_true = np.asarray(y_true).ravel()
    if y_true.size == 0:
        return float("nan")
    return float(batched_balanced_accuracy(y_true[None], np.asarray(y_pred).ravel()[None])[0])


def batched_mean(values: np.ndarray) -> np.ndarray:
    """(B, M) -> (B,): the bootstrap statistic for per-item values (e.g. per-frame IoU)."""
    return np.asarray(values, dtype=np.float64).mean(axis=1)


def batched_balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each row of (B, M) label arrays -> (B,), without a Python loop.

    Labels may be any values (ints or strings): they are mapped to ids jointly first. Each row
    uses the classes present in *its own* y_true, as the metric does on a bootstrap resample.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"batched_balanced_accuracy: expected two (B, M) arrays, got {y_true.shape}, {y_pred.shape}")
    b, m = y_true.shape
    if np.issubdtype(y_true.dtype, np.integer) and np.issubdtype(y_pred.dtype, np.integer) \
            and y_true.size and min(y_true.min(), y_pred.min()) >= 0:
        t, p = y_true.astype(np.int64), y_pred.astype(np.int64)
        c = int(max(t.max(), p.max())) + 1
    else:
        _, inv = np.unique(np.concatenate([y_true.ravel(), y_pred.ravel()]), return_inverse=True)
        t, p = inv[:y_true.size].reshape(b, m), inv[y_true.size:].reshape(b, m)
        c = int(inv.max(initial=-1)) + 1
    key = (t + c * np.arange(b)[:, None]).ravel()
    counts = np.bincount(key, minlength=b * c).reshape(b, c)
    hits = np.bincount(key, weights=(t == p).ravel(), minlength=b * c).reshape(b, c)
    present = counts > 0
    recall = np.where(present, hits / np.maximum(counts, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return recall.sum(axis=1) / present.sum(axis=1)


def _bootstrap_balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n: int,
                                 rng: np.random.Generator) -> np.ndarray:
    """n bootstrap replicates of balanced accuracy, drawn as cell counts instead of index matrices.

    Balanced accuracy depends on a resample only through how many events land in each
    (true class, correct?) cell, and resampling M events with replacement puts
    Multinomial(M, cell frequencies) events in the cells: the same distribution as the index
    matrix, at (n, 2C) cost instead of (n, M) (BENCHMARKS.md, "Figures moved from docstrings").
    """
    _, t = np.unique(np.asarray(y_true).ravel(), return_inverse=True)
    correct = (np.asarray(y_true).ravel() == np.asarray(y_pred).ravel()).astype(np.int64)
    c = int(t.max()) + 1
    cells = np.bincount(t * 2 + correct, minlength=2 * c).astype(np.float64)
    counts = rng.multinomial(len(t), cells / cells.sum(), size=n).reshape(n, c, 2)
    per_class = counts.sum(axis=2)
    present = per_class > 0
    recall = np.where(present, counts[:, :, 1] / np.maximum(per_class, 1), 0.0)
    return recall.sum(axis=1) / present.sum(axis=1)


def bootstrap_ci(data, statistic: Callable[..., np.ndarray] | None = None, n: int = 1000, seed: int = 0,
                 alpha: float = 0.05, max_elements: int = 20_000_000) -> tuple[float, float]:
    """Percentile-bootstrap (1 - alpha) CI of a statistic over test items (frames or events).

    `data` is one per-item array (e.g. per-frame IoU; default statistic: the mean) or a tuple of
    equally long arrays resampled together (e.g. (y_true, y_pred); default statistic: balanced
    accuracy). `statistic` must be vectorized: it gets each array resampled as (B, M) and returns
    (B,). Resampling is an index matrix, drawn in chunks of at most `max_elements` so 1000
    resamples of many items stay within memory. The default balanced-accuracy statistic draws
    the equivalent multinomial cell counts instead (`_bootstrap_balanced_accuracy`): same
    distribution, far cheaper on many events. Deterministic for `seed`.
    """
    arrays = tuple(np.asarray(a) for a in data) if isinstance(data, (tuple, list)) else (np.asarray(data),)
    m = len(arrays[0])
    if any(len(a) != m for a in arrays):
        raise ValueError(f"bootstrap_ci: arrays differ in length: {[len(a) for a in arrays]}")
    if m == 0 or n <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if statistic is None:
        if len(arrays) == 1:
            statistic = batched_mean
        elif len(arrays) == 2:
            stats = _bootstrap_balanced_accuracy(arrays[0], arrays[1], n, rng)
            low, high = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
            return float(low), float(high)
        else:
            raise ValueError("bootstrap_ci: pass a statistic for more than two arrays")
    chunk = max(1, max_elements // m)
    stats = []
    for start in range(0, n, chunk):
        idx = rng.integers(0, m, size=(min(chunk, n - start), m))
        stats.append(np.asarray(statistic(*(a[idx] for a in arrays)), dtype=np.float64))
    stats = np.concatenate(stats)
    low, high = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Unit (cluster) bootstrap: seeds x independent units x items
# ---------------------------------------------------------------------------------------------

# The independent test unit of each task, and what an interval falls back to without units.
UNIT_NAMES = {"basketball": ("arena", "frame"), "soccer": ("game", "event")}


def n_units(units) -> int:
    """Distinct named units of a split ("" means no unit was recorded; None: none at all)."""
    if units is None:
        return 0
    names = np.unique(np.asarray(units).astype(str))
    return int((names != "").sum())


def unit_name(task: str, units) -> str:
    """"arena" / "game" when the split has >= 2 named units, else "frame" / "event"."""
    cluster, item = UNIT_NAMES[task]
    return cluster if n_units(units) >= 2 else item


def _cluster_sampler(cell_unit: np.ndarray, cell_size: np.ndarray, resample_items: bool = True):
    """A draw(b, rng) -> (b, P) of resampled cell counts under the two-stage bootstrap.

    Cells are groups of items the statistic cannot tell apart (one frame; or the events of one
    (game, class, correct?) combination), each in one unit. A replicate draws the K units with
    replacement (multiplicities ~ Multinomial(K, 1/K)); each drawn copy of unit u resamples its
    n_u items with replacement, and m copies together put Multinomial(m * n_u, u's cell
    frequencies) items in u's cells. So a replicate is K multinomial draws over the unit's cells
    instead of an index matrix over all items. With one unit it is the plain item bootstrap.
    `resample_items=False` keeps each drawn unit whole (units-only cluster bootstrap; with one
    unit the items are still resampled). Returns (draw, elements per replicate) for chunking.
    """
    k = int(cell_unit.max()) + 1
    per_unit = np.bincount(cell_unit, minlength=k)
    order = np.argsort(cell_unit, kind="stable")
    slot = np.empty(len(cell_unit), dtype=np.int64)          # position of a cell within its unit
    slot[order] = np.arange(len(order)) - np.repeat(np.cumsum(per_unit) - per_unit, per_unit)
    table = np.zeros((k, int(per_unit.max())))
    table[cell_unit, slot] = cell_size
    items = table.sum(axis=1).astype(np.int64)
    pvals = table / items[:, None]                           # zero padding at the end of a row

    def draw(b: int, rng: np.random.Generator) -> np.ndarray:
        copies = rng.multinomial(k, np.full(k, 1.0 / k), size=b)            # (b, K)
        if resample_items or k == 1:
            counts = rng.multinomial(copies * items, pvals)                  # (b, K, width)
        else:
            counts = copies[:, :, None] * table[None]
        return counts[:, cell_unit, slot].astype(np.float64)                 # (b, P)

    return draw, table.size


def unit_bootstrap(values=None, *, y_true=None, y_pred=None, units=None, n: int = 1000, seed: int = 0,
                   resample_items: bool = True, max_elements: int = 20_000_000) -> np.ndarray:
    """n bootstrap replicates of a probe metric, resampling seeds, independent units and items.

    Metric: the mean of per-item `values` (per-frame IoU), or the balanced accuracy of
    (`y_true`, `y_pred`) over the classes present in the resample. One run: `values` (N,) /
    `y_pred` (N,). S seeds scored on the same N items: `values` (S, N) / `y_pred` (S, N).
    `units` (N,) names each item's independent unit (arena, game); None or a single unit gives
    the plain item bootstrap.

    A replicate (rliable's stratified bootstrap, one level deeper) draws S seeds with
    replacement, the units with replacement, and the items within each drawn unit with
    replacement; the unit and item draw is shared by all seeds (they were scored on the same
    items), each seed's metric is computed on the pooled resampled items, and the replicate is
    the mean over the drawn seeds. Vectorized (see `_cluster_sampler`); deterministic for `seed`.

    Known bias, kept because DESIGN.md asks for both stages: resampling items inside resampled
    units counts the within-unit noise twice (once through the spread of the unit means, once
    through the item draw), so when items are independent of their unit the interval is about
    sqrt(2) wider than the item bootstrap (Davison & Hinkley 1997, §3.8). It errs wide, never
    narrow; with 3 arenas it also smooths the units-only bootstrap's 10 possible resamples.
    `resample_items=False` gives the units-only cluster bootstrap.
    """
    if (values is None) == (y_pred is None):
        raise ValueError("unit_bootstrap: pass either values or y_true and y_pred")
    if values is not None:
        v = np.asarray(values, dtype=np.float64)
        v = v[None] if v.ndim == 1 else v                                    # (S, N)
        s, m = v.shape
        cell_unit, cell_size = _unit_ids(units, m), np.ones(m)

        def per_seed(counts: np.ndarray) -> np.ndarray:                      # (b, P) -> (b, S)
            return (counts @ v.T) / counts.sum(axis=1, keepdims=True)
    else:
        p = np.asarray(y_pred).astype(np.int64)
        p = p[None] if p.ndim == 1 else p                                    # (S, N)
        t = np.asarray(y_true).astype(np.int64).ravel()
        s, m = p.shape
        if t.shape != (m,):
            raise ValueError(f"unit_bootstrap: y_true {t.shape} and y_pred {p.shape} differ")
        if m == 0:
            return np.full(max(n, 0), np.nan)
        # Balanced accuracy sees a resample only through the counts of (unit, class, correct in
        # each seed) combinations: those are the cells, a few thousand instead of N events.
        key = np.column_stack([_unit_ids(units, m), t, (p == t).T])
        dims = tuple(int(d) for d in key.max(axis=0) + 1)
        try:        # one int64 code per combination: a 1-D unique beats axis=0 (BENCHMARKS.md)
            codes, cell_size = np.unique(np.ravel_multi_index(tuple(key.T), dims), return_counts=True)
            cells = np.column_stack(np.unravel_index(codes, dims))
        except ValueError:                                   # too many combinations for int64
            cells, cell_size = np.unique(key, axis=0, return_counts=True)
        cell_unit = cells[:, 0]
        _, cls = np.unique(cells[:, 1], return_inverse=True)
        onehot = np.eye(int(cls.max(initial=-1)) + 1)[cls]                    # (P, C)
        hit = (onehot[:, None, :] * cells[:, 2:, None]).reshape(len(cells), -1)   # (P, S*C)

        def per_seed(counts: np.ndarray) -> np.ndarray:
            per_class = counts @ onehot                                      # (b, C)
            hits = (counts @ hit).reshape(len(counts), s, -1)                # (b, S, C)
            present = per_class > 0
            recall = np.where(present[:, None], hits / np.maximum(per_class, 1)[:, None], 0.0)
            return recall.sum(axis=2) / present.sum(axis=1)[:, None]

    if m == 0 or n <= 0:
        return np.full(max(n, 0), np.nan)
    rng = np.random.default_rng(seed)
    draw, width = _cluster_sampler(cell_unit, np.asarray(cell_size, dtype=np.float64), resample_items)
    chunk = max(1, max_elements // max(width, len(cell_unit)))      # (b, K, width) and (b, P) arrays
    out = np.empty(n)
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        weights = rng.multinomial(s, np.full(s, 1.0 / s), size=b) / s       # drawn seeds
        out[start:start + b] = (weights * per_seed(draw(b, rng))).sum(axis=1)
    return out


def unit_bootstrap_ci(values=None, *, y_true=None, y_pred=None, units=None, n: int = 1000, seed: int = 0,
                      alpha: float = 0.05, resample_items: bool = True) -> tuple[float, float]:
    """Percentile (1 - alpha) interval of `unit_bootstrap` (same arguments)."""
    reps = unit_bootstrap(values, y_true=y_true, y_pred=y_pred, units=units, n=n, seed=seed,
                          resample_items=resample_items)
    if not np.isfinite(reps).any():
        return float("nan"), float("nan")
    low, high = np.nanquantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _unit_ids(units, m: int) -> np.ndarray:
    """Units (N,) of any values -> ids 0..K-1; None -> one unit."""
    if units is None:
        return np.zeros(m, dtype=np.int64)
    units = np.asarray(units).ravel()
    if len(units) != m:
        raise ValueError(f"units: {len(units)} values for {m} items")
    return np.unique(units, return_inverse=True)[1].ravel().astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Linear heads, trained as a learning-rate grid in parallel
# ---------------------------------------------------------------------------------------------

@dataclass
class LinearHeads:
    """L linear heads on raw (unstandardized) features: logits = x @ weight[l] + bias[l].

    weight (L, D, C), bias (L, C); the train-split standardization is already folded in.
    """
    weight: torch.Tensor
    bias: torch.Tensor
    lrs: tuple[float, ...]

    def logits(self, x: torch.Tensor, batch: int = 65536) -> torch.Tensor:
        """x (M, D) -> (M, L, C) float32 on CPU, in chunks (x may be large and on the CPU)."""
        w = self.weight
        l, d, c = w.shape
        wm = w.permute(1, 0, 2).reshape(d, l * c)
        out = torch.empty((x.shape[0], l, c), dtype=torch.float32)
        with torch.no_grad():
            for s in range(0, x.shape[0], batch):
                xb = x[s:s + batch].to(wm.device, torch.float32)
                out[s:s + xb.shape[0]] = (xb @ wm).view(-1, l, c).add_(self.bias).cpu()
        return out


def _standardizer(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the train rows of x (G, [T,] D), float64 accumulation in
    chunks (no copy of the split); std is set to 1 where it is ~0 (constant dimension)."""
    d = x.shape[-1]
    total = torch.zeros(d, dtype=torch.float64, device=x.device)
    total_sq = torch.zeros(d, dtype=torch.float64, device=x.device)
    per_row = int(np.prod(x.shape[1:-1], dtype=np.int64))
    step = max(1, 16384 // per_row)         # ~25 MB chunks: no large temporaries
    m = 0
    for s in range(0, len(rows), step):
        xb = x.index_select(0, rows[s:s + step]).reshape(-1, d)
        total += xb.sum(0).double()          # float32 within a chunk, float64 across chunks
        total_sq += (xb * xb).sum(0).double()
        m += xb.shape[0]
    m = max(m, 1)
    mean = total / m
    var = (total_sq / m - mean * mean).clamp_min(0)
    std = var.sqrt()
    std = torch.where(std > 1e-6 * (1 + mean.abs()), std, torch.ones_like(std))
    return mean.float(), std.float()


def _logit_grads(z: torch.Tensor, yb: torch.Tensor, loss: str, pw: float | None,
                 class_weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """d(sum of per-sample losses)/dz for logits z (M, L, C), and each sample's weight (M,).

    Written out by hand (BCE: sigma(z) - y, scaled by pos_weight on positives; CE: softmax - onehot,
    scaled by the class weight) so a step can stream over cache-sized chunks of tokens; the
    caller divides by the summed weight of the whole minibatch (= mean reduction).
    """
    if loss == "bce":
        y = yb.to(z.dtype)[:, None]
        p = torch.sigmoid(z[..., 0])
        if pw is None:
            dz = p - y
        else:
            dz = (pw * y + 1 - y) * p - pw * y
        return dz[..., None], torch.ones_like(y[:, 0])
    yl = yb.long()
    dz = torch.softmax(z, dim=-1)
    dz[torch.arange(len(yl), device=z.device), :, yl] -= 1.0
    sw = class_weight[yl] if class_weight is not None else torch.ones(len(yl), device=z.device, dtype=z.dtype)
    return dz * sw[:, None, None], sw


@torch.no_grad()
def _fit_heads(x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, n_out: int, loss: str, cfg: ProbeConfig,
               device: torch.device, class_weight: torch.Tensor | None = None,
               pos_weight: float | None = None, min_steps: int = PROBE_MIN_STEPS,
               max_steps: int = PROBE_MAX_STEPS) -> LinearHeads:
    """Train one linear head per lr in `cfg.lrs`, all together, on x[rows] (G, [T,] D), y[rows].

    A row is the shuffling unit (a frame of T tokens for basketball, an event for soccer).
    Minibatches are gathered from x by index, so the train split is never copied as a whole
    (8,000 basketball frames are 2.4 GB). The gradient is written out by hand and streamed over
    chunks of the minibatch that stay in cache on the CPU, so each token is read from memory
    once per step; autograd would also take the weight gradient as x^T @ g, a transposed skinny
    GEMM that ran ~3x slower than g^T @ x here. On GPU the whole minibatch is one chunk.
    Returns the heads with the standardization folded in (they take raw features).
    """
    lrs = tuple(float(v) for v in cfg.lrs)
    if not lrs:
        raise ValueError("ProbeConfig.lrs is empty: need at least one learning rate")
    rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
    g, d = len(rows), x.shape[-1]
    if g == 0:
        raise ValueError("probe training split is empty")
    n_heads, k = len(lrs), len(lrs) * n_out
    per_row = int(np.prod(x.shape[1:-1], dtype=np.int64))     # tokens per row (196 or 1)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    cuda = device.type == "cuda"
    if cuda:
        x, y = x.to(device), y.to(device)
    mean, std = _standardizer(x, rows.to(x.device))
    inv_std = (1.0 / std).to(device)
    shift = (mean / std).to(device)
    if class_weight is not None:
        class_weight = class_weight.to(device)
    pw = None if pos_weight is None else float(pos_weight)

    # AdamW on the stacked heads with a per-head lr (one (L, 1, 1) tensor): the same update as
    # torch.optim.AdamW with one param group per head, in a handful of kernels per step.
    weight = torch.zeros(n_heads, d, n_out, device=device)
    bias = torch.zeros(n_heads, n_out, device=device)
    state = [torch.zeros_like(t) for t in (weight, weight, bias, bias)]      # m_w, v_w, m_b, v_b
    base_lr = torch.tensor(lrs, device=device, dtype=torch.float32)
    beta1, beta2, eps, wd = 0.9, 0.999, 1e-8, float(cfg.weight_decay)

    batch = max(1, min(int(cfg.batch_size), g))
    steps_per_epoch = math.ceil(g / batch)
    total = int(min(max(int(cfg.epochs) * steps_per_epoch, min_steps), max_steps))

    def effective() -> tuple[torch.Tensor, torch.Tensor]:
        """Heads on raw features: W' = W / std, b' = b - (mean / std) W (standardization folded in)."""
        return weight * inv_std[None, :, None], bias - torch.einsum("d,ldc->lc", shift, weight)

    def adamw(step: int, g_w: torch.Tensor, g_b: torch.Tensor) -> None:
        lr = base_lr * (0.5 * (1 + math.cos(math.pi * step / total)))          # cosine to 0
        t = step + 1
        c1, c2 = 1 - beta1 ** t, math.sqrt(1 - beta2 ** t)
        weight.mul_(1 - lr[:, None, None] * wd)                                  # decoupled decay
        for p, grad, m, v, shape in ((weight, g_w, state[0], state[1], (-1, 1, 1)),
                                     (bias, g_b, state[2], state[3], (-1, 1))):
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            p.sub_((lr / c1).view(shape) * m / (v.sqrt() / c2 + eps))

    # Chunk: the whole minibatch on GPU (one kernel each); ~2 MB of tokens on CPU (stays in cache).
    chunk_rows = batch if cuda else max(1, (2 << 20) // (per_row * d * 4))
    buf = torch.empty((min(chunk_rows, batch), *x.shape[1:]), dtype=torch.float32, device=x.device)
    step = 0
    while step < total:
        order = torch.randperm(g, generator=gen)
        for s in range(0, g, batch):
            if step >= total:
                break
            idx = rows[order[s:s + batch]].to(x.device)
            w_eff, b_eff = effective()
            wm = w_eff.permute(1, 0, 2).reshape(d, k)
            g_w = torch.zeros(k, d, device=device)                  # d loss / d W' (transposed)
            g_b = torch.zeros(n_heads, n_out, device=device)
            weight_sum = torch.zeros((), device=device)
            for c in range(0, len(idx), chunk_rows):
                sub = idx[c:c + chunk_rows]
                xb = torch.index_select(x, 0, sub, out=buf[:len(sub)]).view(-1, d)
                yb = y.index_select(0, sub).reshape(-1)
                z = (xb @ wm).view(-1, n_heads, n_out) + b_eff
                dz, sw = _logit_grads(z, yb, loss, pw, class_weight)
                dz = dz.reshape(-1, k)
                g_w += dz.t() @ xb                                  # (K, M) @ (M, D): the fast GEMM form
                g_b += dz.sum(0).view(n_heads, n_out)
                weight_sum += sw.sum()
            scale = 1.0 / weight_sum.clamp_min(1e-12)
            g_w = (g_w * scale).view(n_heads, n_out, d).permute(0, 2, 1)    # (L, D, C)
            g_b = g_b * scale
            # chain rule through the folding: dW = dW' / std - (mean / std) (x) db'
            adamw(step, g_w * inv_std[None, :, None] - shift[None, :, None] * g_b[:, None, :], g_b)
            step += 1
    w_eff, b_eff = effective()
    return LinearHeads(weight=w_eff.clone(), bias=b_eff.clone(), lrs=lrs)


def _split_indices(split: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """train / valid / test indices from a split column; a seeded 20 % of train if no valid."""
    split = np.char.lower(np.asarray(split).astype(str))
    tr = np.flatnonzero(np.isin(split, TRAIN_NAMES))
    va = np.flatnonzero(np.isin(split, VALID_NAMES))
    te = np.flatnonzero(np.isin(split, TEST_NAMES))
    if len(tr) == 0 or len(te) == 0:
        raise ValueError(f"probe split needs train and test items; got {dict(zip(*np.unique(split, return_counts=True)))}")
    if len(va) == 0:
        warnings.warn("probe set has no 'valid' split: holding out a seeded 20 % of train for lr selection")
        rng = np.random.default_rng(seed)
        perm = rng.permutation(tr)
        k = max(1, len(tr) // 5) if len(tr) > 1 else 0
        va, tr = np.sort(perm[:k]), np.sort(perm[k:])
        if len(va) == 0:
            va = tr
    return tr, va, te


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------------------------
# The two probes
# ---------------------------------------------------------------------------------------------

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


def _units_of(units, n: int, idx: np.ndarray, who: str) -> np.ndarray:
    """The unit names (str) of items `idx`; "" for every item when the probe set has no units."""
    if units is None:
        return np.full(len(idx), "", dtype="<U1")
    units = np.asarray(units).astype(str)
    if units.shape != (n,):
        raise ValueError(f"{who}: units {units.shape} do not match the {n} items")
    return units[idx]


def probe_basketball(features: torch.Tensor | np.ndarray, tiles: np.ndarray, split: np.ndarray,
                     cfg: ProbeConfig | None = None, device=None, pos_weight: float | str | None = None,
                     min_steps: int = PROBE_MIN_STEPS, max_steps: int = PROBE_MAX_STEPS,
                     units: np.ndarray | None = None) -> BasketballResult:
    """Per-tile linear probe: features (N, 196, D), tiles (N, 14, 14) {0,1}, split (N,) -> result.

    Trains the lr grid on train frames (plain BCE, see module docstring; `pos_weight="balanced"`
    uses n_neg / n_pos), picks the head with the best mean validation IoU, reports it on test
    and on validation, each with a unit bootstrap CI over `units` (N,) (the arena of each
    frame; None or one arena: over frames).
    """
    cfg = cfg or ProbeConfig()
    dev = _device(device)
    x = torch.as_tensor(features, dtype=torch.float32)
    tiles = np.asarray(tiles)
    n, t, d = x.shape
    side = int(round(math.sqrt(t)))
    if side * side != t or tiles.shape != (n, side, side):
        raise ValueError(f"probe_basketball: features {tuple(x.shape)} do not match tiles {tiles.shape}")
    y = torch.from_numpy((tiles.reshape(n, t) > 0).astype(np.float32))
    tr, va, te = _split_indices(split, cfg.seed)
    va_units, te_units = (_units_of(units, n, i, "probe_basketball") for i in (va, te))
    if pos_weight == "balanced":
        pos = float(y[tr].sum())
        pos_weight = (y[tr].numel() - pos) / max(pos, 1.0)
    heads = _fit_heads(x, y, tr, 1, "bce", cfg, dev, pos_weight=pos_weight,
                       min_steps=min_steps, max_steps=max_steps)

    true_va = tiles[va].reshape(len(va), side, side) > 0
    val_probs = torch.sigmoid(heads.logits(x[va].reshape(-1, d))[..., 0]).numpy()  # (Nv*T, L)
    val_ious = [iou_per_frame(val_probs[:, li].reshape(len(va), side, side) >= THRESHOLD, true_va)
                for li in range(len(heads.lrs))]
    val_scores = {lr: float(v.mean()) for lr, v in zip(heads.lrs, val_ious)}
    best = int(np.argmax([val_scores[lr] for lr in heads.lrs]))  # first max: the smaller lr on ties

    probs = torch.sigmoid(heads.logits(x[te].reshape(-1, d))[:, best, 0]).numpy()
    probs = probs.reshape(len(te), side, side).astype(np.float32)
    pred = probs >= THRESHOLD
    true = tiles[te] > 0
    ious = iou_per_frame(pred, true)
    return BasketballResult(
        iou=float(ious.mean()), ci=unit_bootstrap_ci(ious, units=te_units, n=cfg.bootstrap, seed=cfg.seed),
        per_frame_iou=ious, probs=probs, pred_masks=pred, lr=heads.lrs[best],
        empty_frames=empty_union_frames(pred, true), gt_empty_frames=int((~true.any(axis=(1, 2))).sum()),
        test_indices=te, val_scores=val_scores, n_train=len(tr), n_valid=len(va),
        unit=unit_name("basketball", te_units), test_units=te_units,
        valid_iou=val_scores[heads.lrs[best]],
        valid_ci=unit_bootstrap_ci(val_ious[best], units=va_units, n=cfg.bootstrap, seed=cfg.seed),
        valid_per_frame_iou=val_ious[best], valid_units=va_units,
        valid_unit=unit_name("basketball", va_units), valid_indices=va)


def probe_soccer(features: torch.Tensor | np.ndarray, labels: np.ndarray, split: np.ndarray,
                 cfg: ProbeConfig | None = None, device=None, min_steps: int = PROBE_MIN_STEPS,
                 max_steps: int = PROBE_MAX_STEPS, units: np.ndarray | None = None) -> SoccerResult:
    """Pooled linear probe: features (N, 196, D) or already pooled (N, D), labels (N,) class ids.

    Mean-pools tokens, trains the lr grid with class-balanced cross-entropy, picks the head with
    the best validation balanced accuracy, reports it on test and on validation, each with a
    unit bootstrap CI over `units` (N,) (the game of each event; None or one game: over
    events), and test per-class recall by SOCCER_CLASSES name.
    """
    cfg = cfg or ProbeConfig()
    dev = _device(device)
    x = torch.as_tensor(features, dtype=torch.float32)
    if x.ndim == 3:
        x = x.mean(dim=1)
    labels = np.asarray(labels).astype(np.int64)
    n_classes = len(SOCCER_CLASSES)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"probe_soccer: features {tuple(x.shape)} do not match labels {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"probe_soccer: labels must be ids in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    tr, va, te = _split_indices(split, cfg.seed)
    va_units, te_units = (_units_of(units, len(labels), i, "probe_soccer") for i in (va, te))
    counts = np.bincount(labels[tr], minlength=n_classes).astype(np.float64)
    present = counts > 0
    cw = np.where(present, len(tr) / (present.sum() * np.maximum(counts, 1)), 0.0)
    y = torch.from_numpy(labels)
    heads = _fit_heads(x, y, tr, n_classes, "ce", cfg, dev, class_weight=torch.tensor(cw, dtype=torch.float32),
                       min_steps=min_steps, max_steps=max_steps)

    val_pred = heads.logits(x[va]).argmax(-1).numpy()  # (Nv, L)
    val_scores = {lr: balanced_accuracy(labels[va], val_pred[:, li]) for li, lr in enumerate(heads.lrs)}
    best = int(np.argmax([val_scores[lr] for lr in heads.lrs]))

    probs = torch.softmax(heads.logits(x[te])[:, best], dim=-1).numpy().astype(np.float32)
    preds = probs.argmax(-1)
    y_te, y_va, pred_va = labels[te], labels[va], val_pred[:, best].astype(np.int64)
    recall = per_class_recall(y_te, preds, n_classes)
    return SoccerResult(
        bal_acc=balanced_accuracy(y_te, preds),
        ci=unit_bootstrap_ci(y_true=y_te, y_pred=preds, units=te_units, n=cfg.bootstrap, seed=cfg.seed),
        per_class_recall={name: float(r) for name, r in zip(SOCCER_CLASSES, recall)},
        probs=probs, preds=preds, labels=y_te, lr=heads.lrs[best], test_indices=te,
        val_scores=val_scores, n_train=len(tr), n_valid=len(va),
        unit=unit_name("soccer", te_units), test_units=te_units,
        valid_bal_acc=val_scores[heads.lrs[best]],
        valid_ci=unit_bootstrap_ci(y_true=y_va, y_pred=pred_va, units=va_units, n=cfg.bootstrap, seed=cfg.seed),
        valid_labels=y_va, valid_preds=pred_va, valid_units=va_units,
        valid_unit=unit_name("soccer", va_units), valid_indices=va)


# ---------------------------------------------------------------------------------------------
# One checkpoint -> both probes -> MLflow metrics and per-item arrays
# ---------------------------------------------------------------------------------------------

# Base metric name of each task; MLflow names carry the split: test_name(m), valid_name(m).
PROBE_METRICS = {"basketball": "basketball_iou", "soccer": "soccer_bal_acc"}
ITEMS_ARTIFACT = "probe_items.npz"          # save_items' file, logged as this MLflow artifact
SPLITS = ("valid", "test")
ITEM_FIELDS = {"basketball": ("unit", "iou"), "soccer": ("unit", "true", "pred")}


def test_name(metric: str) -> str:
    """MLflow name of a probe metric on the test split: "test/basketball_iou"."""
    return "test/" + metric


def valid_name(metric: str) -> str:
    """MLflow name of a probe metric on the validation split: "valid/basketball_iou"."""
    return "valid/" + metric


test_name.__test__ = False       # pytest: a helper imported into test modules, not a test


def evaluate(backbone: torch.nn.Module, basketball: dict | None, soccer: dict | None,
             cfg: ProbeConfig | None = None, device=None, min_steps: int = PROBE_MIN_STEPS,
             max_steps: int = PROBE_MAX_STEPS) -> dict:
    """Extract frozen features once per probe set and run both probes.

    `basketball` / `soccer` are the probe-set arrays (the .npz contents of CONTRACTS.md:
    images, tiles, split[, arena] / images, label, split[, game]); either may be None to skip
    it. The `arena` / `game` columns, when present, are the units of the bootstrap CIs.
    Returns {"basketball": BasketballResult | None, "soccer": SoccerResult | None,
    "metrics": metrics_dict(...)}. min_steps / max_steps bound the probes' optimizer steps
    (module docstring); lower them only for smoke runs.
    """
    cfg = cfg or ProbeConfig()
    dev = _device(device)
    out: dict = {"basketball": None, "soccer": None}
    if basketball is not None:
        feats = extract_features(backbone, basketball["images"], dev, cfg.feature_batch)
        out["basketball"] = probe_basketball(feats, basketball["tiles"], basketball["split"], cfg, dev,
                                             min_steps=min_steps, max_steps=max_steps,
                                             units=basketball.get("arena"))
        del feats
    if soccer is not None:
        feats = extract_features(backbone, soccer["images"], dev, cfg.feature_batch, pool=True)
        labels = soccer["label"] if "label" in soccer else soccer["labels"]
        out["soccer"] = probe_soccer(feats, labels, soccer["split"], cfg, dev, min_steps=min_steps,
                                     max_steps=max_steps, units=soccer.get("game"))
        del feats
    out["metrics"] = metrics_dict(out)
    return out


def _split_metrics(split: str, metric: str, value: float, ci, items: tuple[str, int], units) -> dict[str, float]:
    name = f"{split}/{metric}"
    task = metric.split("_", 1)[0]
    return {name: float(value), name + "_ci_low": float(ci[0]), name + "_ci_high": float(ci[1]),
            f"{split}/{task}_{items[0]}": float(items[1]), f"{split}/{task}_units": float(n_units(units))}


def metrics_dict(result) -> dict[str, float]:
    """Flat {MLflow name: float} for a result or evaluate()'s dict.

    Per task, for split in (test, valid): `<split>/<metric>`, `_ci_low`, `_ci_high`, the item
    count (`<split>/basketball_frames`, `<split>/soccer_events`) and `<split>/<task>_units`
    (distinct arenas / games; 0 when the probe set names none); plus the chosen lr
    (`basketball_lr`, `soccer_lr`). The CIs' unit names are in `ci_units`.
    """
    if isinstance(result, dict):
        merged: dict[str, float] = {}
        for key in ("basketball", "soccer"):
            if result.get(key) is not None:
                merged.update(metrics_dict(result[key]))
        return merged
    if isinstance(result, (list, tuple)):
        merged = {}
        for r in result:
            merged.update(metrics_dict(r))
        return merged
    if isinstance(result, BasketballResult):
        m = PROBE_METRICS["basketball"]
        return {**_split_metrics("test", m, result.iou, result.ci, ("frames", len(result.per_frame_iou)),
                                 result.test_units),
                **_split_metrics("valid", m, result.valid_iou, result.valid_ci,
                                 ("frames", len(result.valid_per_frame_iou)), result.valid_units),
                "basketball_lr": float(result.lr)}
    if isinstance(result, SoccerResult):
        m = PROBE_METRICS["soccer"]
        return {**_split_metrics("test", m, result.bal_acc, result.ci, ("events", len(result.labels)),
                                 result.test_units),
                **_split_metrics("valid", m, result.valid_bal_acc, result.valid_ci,
                                 ("events", len(result.valid_labels)), result.valid_units),
                "soccer_lr": float(result.lr)}
    raise TypeError(f"metrics_dict: expected BasketballResult, SoccerResult or evaluate()'s dict, got {type(result).__name__}")


def ci_units(result: dict, split: str = "test") -> dict[str, str]:
    """What each task's CI resampled on `split`: {"basketball": "arena" | "frame",
    "soccer": "game" | "event"} for the tasks evaluate()'s dict holds (MLflow tags)."""
    out = {}
    for task in ("basketball", "soccer"):
        r = result.get(task)
        if r is not None:
            out[task] = r.unit if split == "test" else r.valid_unit
    return out


def _item_key(task: str, split: str, name: str) -> str:
    return f"{task}__{split}__{name}"           # flat: one npz member per array


def save_items(result: dict, path: str | os.PathLike) -> Path:
    """Per-item arrays of evaluate()'s dict -> one small .npz (the run's `probe_items.npz`).

    For each probed task and split in (valid, test): basketball `basketball__<split>__unit`
    (str arena per frame), `basketball__<split>__iou` (float64 per-frame IoU); soccer
    `soccer__<split>__unit` (str game per event), `__true`, `__pred` (int64 class ids). The
    scorecard's row intervals resample these. Written as given (no ".npz" appended).
    """
    arrays: dict[str, np.ndarray] = {}
    b, s = result.get("basketball"), result.get("soccer")
    if b is not None:
        for split, units, iou in (("valid", b.valid_units, b.valid_per_frame_iou),
                                  ("test", b.test_units, b.per_frame_iou)):
            arrays[_item_key("basketball", split, "unit")] = np.asarray(units).astype(str)
            arrays[_item_key("basketball", split, "iou")] = np.asarray(iou, dtype=np.float64)
    if s is not None:
        for split, units, true, pred in (("valid", s.valid_units, s.valid_labels, s.valid_preds),
                                         ("test", s.test_units, s.labels, s.preds)):
            arrays[_item_key("soccer", split, "unit")] = np.asarray(units).astype(str)
            arrays[_item_key("soccer", split, "true")] = np.asarray(true, dtype=np.int64)
            arrays[_item_key("soccer", split, "pred")] = np.asarray(pred, dtype=np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_items(path: str | os.PathLike) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """save_items' file -> {task: {split: {field: array}}}, e.g. items["soccer"]["test"]["pred"].

    Only complete (task, split) groups are returned; unknown members are ignored."""
    with np.load(path, allow_pickle=False) as z:
        found = {k: z[k] for k in z.files}
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for task, names in ITEM_FIELDS.items():
        for split in SPLITS:
            keys = [_item_key(task, split, f) for f in names]
            if all(k in found for k in keys):
                out.setdefault(task, {})[split] = {f: found[k] for f, k in zip(names, keys)}
    return out


__all__: Sequence[str] = (
    "extract_features", "normalize", "iou_per_frame", "empty_union_frames", "per_class_recall",
    "balanced_accuracy", "batched_mean", "batched_balanced_accuracy", "bootstrap_ci", "unit_bootstrap",
    "unit_bootstrap_ci", "n_units", "unit_name", "UNIT_NAMES", "LinearHeads", "BasketballResult",
    "SoccerResult", "probe_basketball", "probe_soccer", "evaluate", "metrics_dict", "PROBE_METRICS",
    "ITEMS_ARTIFACT", "test_name", "valid_name", "ci_units", "save_items", "load_items",
)
