"""What every probe task shares: frozen features -> linear heads -> metrics with bootstrap CIs.

The tasks themselves (sportray/tasks/: what each reads out, its metric, its pictures) build on
this module; nothing here names a task. The study judges a backbone by what a *single linear
layer* can read from its frozen patch tokens (DESIGN.md §4 "Probes"); its two tasks:

- basketball: per-tile classifier D -> 1 on each of the 196 patch tokens, P(player) >= 0.5 gives
  a 14x14 mask, metric = mean per-frame IoU over held-out frames;
- soccer: mean of the 196 patch tokens -> linear D -> 17, argmax, metric = balanced accuracy
  (mean per-class recall over the classes present in the test set; chance = 1/17).

Both probes train a small learning-rate grid *in parallel* (DINOv2 style: one stacked set of heads,
one pass over the features per step, a per-head AdamW learning rate) and pick the head with the
best validation metric. Validation selects, test reports: the chosen head is scored on both
splits, and MLflow names say which (`test/basketball_iou`, `valid/basketball_iou`, ...:
ProbeTask.metrics). Everything is deterministic for `ProbeConfig.seed`.

Intervals (small test sets lie: the study's 84 basketball frames from three arenas moved +-0.06
IoU between seeds). Frames of one arena, events of one game, are not independent samples, so
each split's 95 % CI is a two-stage (cluster) percentile bootstrap: resample the split's units
(arenas / games) with replacement, then the items within each drawn unit with replacement, and
compute the metric on the pooled resampled items (`unit_bootstrap`). With fewer than two units
(or none given) it is the plain frame / event bootstrap; `result.unit` says which one ran.
`unit_bootstrap` also takes S seeds scored on the same items: the scorecard's row intervals
resample seeds x units x items with it. `tasks.save_items` keeps the per-item arrays of a run
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
  `pos_weight="balanced"` (or a float) to `tasks.basketball.probe_basketball` to get that variant.
- Soccer loss: class-balanced cross-entropy (weight_c = n / (C_present * n_c) over train), so
  the training objective matches the metric (balanced accuracy weighs every class equally;
  "Ball out of play" would otherwise swamp "Penalty").
- Optimizer: AdamW (betas 0.9/0.999, decoupled weight decay `cfg.weight_decay` on weights, none
  on biases; the heads are stacked and each has its own lr, which is what one param group per
  head would do), zero-initialised heads (convex problem: zero init is deterministic and loses
  nothing), cosine lr decay to 0 over the run. An epoch shuffles frames (basketball: a minibatch
  is `cfg.batch_size` *frames*, i.e. 196x as many tokens, which keeps the gradient nearly exact;
  token-level minibatches of the same count converged clearly worse in our checks) or events
  (soccer). The step count is `cfg.epochs` epochs clamped to [cfg.min_steps, cfg.max_steps]
  (defaults 1000 / 2000): tiny real probe sets (~600 basketball frames
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
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from sportray.config import TILES, ProbeConfig
from sportray.views import normalize  # one normalization: what the backbone saw in pretraining

THRESHOLD = 0.5

SPLITS = ("valid", "test")   # the splits a probe reports: valid chooses, test reports
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

def n_units(units) -> int:
    """Distinct named units of a split ("" means no unit was recorded; None: none at all)."""
    if units is None:
        return 0
    names = np.unique(np.asarray(units).astype(str))
    return int((names != "").sum())


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
def fit_heads(x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, n_out: int, loss: str, cfg: ProbeConfig,
               device: torch.device, class_weight: torch.Tensor | None = None,
               pos_weight: float | None = None) -> LinearHeads:
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
    total = int(min(max(int(cfg.epochs) * steps_per_epoch, cfg.min_steps), cfg.max_steps))

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


def split_indices(split: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def torch_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def units_of(units, n: int, idx: np.ndarray, who: str) -> np.ndarray:
    """The unit names (str) of items `idx`; "" for every item when the probe set has no units."""
    if units is None:
        return np.full(len(idx), "", dtype="<U1")
    units = np.asarray(units).astype(str)
    if units.shape != (n,):
        raise ValueError(f"{who}: units {units.shape} do not match the {n} items")
    return units[idx]
