"""The pictures that make the probe numbers and training curves readable (seed-study §03-§04, §06).

- `basketball_rows`: test frames spanning the IoU range, each row frame / ground truth (red) /
  P(player) per tile (yellow = high) / binarized 14x14 mask (blue) / tile overlap (green = hit,
  red = missed player, blue = false alarm), IoU in the row title; the IoU is green / (green +
  red + blue) of the last panel.
- `soccer_top5`: a confident hit, an uncertain hit, a near miss (true class in the top 5 but not
  first) and a miss, each with its top-5 bars; the true class is green when it is the top-1,
  grey with a hatched black outline otherwise; a kind that does not occur is said so in its row.
- `recall_chart`: the soccer probe's per-class test recalls as bars (and their CSV).
- `training_curves`: loss, its terms, grad norm, distance from init and lr as small multiples,
  with loss spikes and the divergence step marked: "check the training before believing a drop".

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
switch), so they render headless inside Ray workers and threads without touching the caller's
matplotlib state. Every function writes one PNG and returns its path. Selection of what to
show is done by pure functions (`select_iou_rows`, `select_soccer_examples`) that tests check.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sportray.config import PATCH, SOCCER_CLASSES, TILE_COVER_MIN

SOCCER_KINDS = ("confident hit", "uncertain hit", "near miss", "miss")

# Training-curve panels, in order; each accepts the MLflow step-metric name or its bare name.
CURVE_PANELS = (
    ("loss", "loss"), ("inv", "invariance"), ("sigreg", "SIGReg"), ("grad_norm", "grad norm (pre-clip)"),
    ("rel_dist_init", "‖θ−θ₀‖ / ‖θ₀‖"), ("lr", "learning rate"),
)


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=fig.dpi)
    return path


# ---------------------------------------------------------------------------------------------
# Basketball
# ---------------------------------------------------------------------------------------------

def select_iou_rows(ious: Sequence[float], n: int = 4, eligible: Sequence[bool] | None = None) -> np.ndarray:
    """Indices of n distinct frames spanning the IoU range, best first.

    Targets are n IoU values evenly spaced from the highest to the lowest; each takes the nearest
    frame not taken yet, so the rows show the best frame, the worst, and frames in between
    rather than four copies of a common value (the study's 0.864 / 0.645 / 0.435 / 0.143).
    `eligible` (e.g. frames whose union is not empty: an empty frame "scores" 1.0 and shows
    nothing) restricts the choice when it leaves at least n frames. NaN IoUs are ignored.
    """
    ious = np.asarray(ious, dtype=np.float64)
    ok = ~np.isnan(ious)
    if eligible is not None:
        pref = ok & np.asarray(eligible, dtype=bool)
        if pref.sum() >= min(n, ok.sum()):
            ok = pref
    valid = np.flatnonzero(ok)
    if len(valid) == 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    order = valid[np.argsort(-ious[valid], kind="stable")]
    if len(order) <= n:
        return order
    targets = np.linspace(ious[order[0]], ious[order[-1]], n)
    free = np.ones(len(order), dtype=bool)
    picked = []
    for t in targets:
        cand = np.flatnonzero(free)
        j = cand[np.argmin(np.abs(ious[order[cand]] - t))]   # first (highest-ranked) on ties
        free[j] = False
        picked.append(order[j])
    picked = np.asarray(picked, dtype=np.int64)
    return picked[np.argsort(-ious[picked], kind="stable")]


def tiles_from_mask(masks: np.ndarray, patch: int = PATCH, cover: float = TILE_COVER_MIN) -> np.ndarray:
    """Pixel masks (N, H, W) -> tile labels (N, H/patch, W/patch): player if >= `cover` of the tile
    is covered (DESIGN.md §4; the probe sets store these as `tiles`, this is the fallback)."""
    masks = np.asarray(masks, dtype=bool)
    n, h, w = masks.shape
    frac = masks.reshape(n, h // patch, patch, w // patch, patch).mean(axis=(2, 4))
    return frac >= cover


def _upsample(tiles: np.ndarray, size: int) -> np.ndarray:
    k = size // tiles.shape[0]
    return np.kron(tiles, np.ones((k, k), dtype=tiles.dtype))


def basketball_rows(images: np.ndarray, gt_masks: np.ndarray, tile_probs: np.ndarray, ious: Sequence[float],
                    path, gt_tiles: np.ndarray | None = None, n_rows: int = 4, threshold: float = 0.5,
                    names: Sequence[str] | None = None) -> Path:
    """One row per selected test frame (spanning the IoU range, best first), five panels each.

    images uint8 (N, 224, 224, 3); gt_masks bool (N, 224, 224) pixel masks; tile_probs (N, 14, 14)
    P(player); ious (N,) per-frame IoU as reported by the probe; gt_tiles (N, 14, 14) the tile
    labels the IoU was computed on (default: derived from gt_masks by the 25 % cover rule).
    """
    images = np.asarray(images)
    gt_masks = np.asarray(gt_masks, dtype=bool)
    tile_probs = np.asarray(tile_probs, dtype=np.float32)
    gt_tiles = tiles_from_mask(gt_masks) if gt_tiles is None else np.asarray(gt_tiles) > 0
    nonempty = (gt_tiles | (tile_probs >= threshold)).any(axis=(1, 2))
    rows = select_iou_rows(ious, n_rows, eligible=nonempty)
    size = images.shape[1]
    headers = ("frame", "ground truth (red)", "P(player) per tile (yellow = high)",
               f"prediction ≥ {threshold:g} (blue)", "overlap on tiles (legend below)")
    fig = Figure(figsize=(16, 3.2 * max(len(rows), 1) + 0.6), dpi=100, layout="constrained")
    if len(rows) == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no test frames to show", ha="center", va="center", fontsize=14)
        return _save(fig, path)
    axes = fig.subplots(len(rows), 5, squeeze=False)
    extent = (0, size, size, 0)
    for r, i in enumerate(rows):
        img = images[i]
        gray = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2) / 255.0
        pred = tile_probs[i] >= threshold
        label = names[i] if names is not None else f"test frame {i}"
        ax = axes[r, 0]
        ax.imshow(img)
        ax.set_title(f"{label} — IoU {float(np.asarray(ious)[i]):.3f}", fontsize=10, loc="left",
                     fontweight="bold")
        ax = axes[r, 1]
        ax.imshow(img)
        overlay = np.zeros((size, size, 4))
        overlay[gt_masks[i]] = (1.0, 0.0, 0.0, 0.55)
        ax.imshow(overlay)
        ax = axes[r, 2]
        ax.imshow(gray * 0.6)
        hm = ax.imshow(tile_probs[i], cmap="viridis", vmin=0.0, vmax=1.0, alpha=0.75, extent=extent,
                       interpolation="nearest")
        ax = axes[r, 3]
        ax.imshow(gray)
        blue = np.zeros((size, size, 4))
        blue[_upsample(pred, size)] = (0.1, 0.35, 1.0, 0.6)
        ax.imshow(blue)
        ax = axes[r, 4]
        truth = gt_tiles[i]
        code = np.zeros(truth.shape, dtype=np.int64)          # 0 none, 1 TP, 2 FN, 3 FP
        code[truth & pred], code[truth & ~pred], code[~truth & pred] = 1, 2, 3
        cmap = ListedColormap([(0, 0, 0, 0), (0.1, 0.8, 0.1, 0.8), (0.95, 0.1, 0.1, 0.8), (0.1, 0.35, 1.0, 0.8)])
        ax.imshow(gray * 0.7)
        ax.imshow(code, cmap=cmap, vmin=-0.5, vmax=3.5, extent=extent, interpolation="nearest")
        tp, fn, fp = int((code == 1).sum()), int((code == 2).sum()), int((code == 3).sum())
        ax.set_title(f"tiles: {tp} hit · {fn} miss · {fp} false alarm", fontsize=8)
        for c in range(5):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_xlabel(headers[c], fontsize=9)
                axes[r, c].xaxis.set_label_position("top")
    fig.colorbar(hm, ax=axes[-1, 2], location="bottom", fraction=0.05, pad=0.02, label="P(player)")
    fig.legend(handles=[Patch(color=(0.1, 0.8, 0.1), label="hit (TP)"), Patch(color=(0.95, 0.1, 0.1), label="missed player (FN)"),
                        Patch(color=(0.1, 0.35, 1.0), label="false alarm (FP)")],
               loc="outside lower right", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(f"Basketball per-tile probe: {len(rows)} test frames spanning the IoU range "
                 f"(mean over {len(np.asarray(ious))} frames {np.nanmean(np.asarray(ious, dtype=float)):.3f})",
                 fontsize=12)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Soccer
# ---------------------------------------------------------------------------------------------

def select_soccer_examples(probs: np.ndarray, labels: np.ndarray, k: int = 5) -> dict[str, int | None]:
    """Pick one event of each kind in SOCCER_KINDS; None where the test set has none.

    confident hit: top-1 correct with the highest top-1 probability; uncertain hit: top-1 correct
    with the lowest (a different event than the confident one); near miss: true class in the
    top k but not first, the one whose true class scored highest; miss: true class outside the
    top k, the most confident such (the most instructive failure).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    out: dict[str, int | None] = {kind: None for kind in SOCCER_KINDS}
    if len(labels) == 0:
        return out
    top1 = probs.argmax(axis=1)
    p_top1 = probs.max(axis=1)
    p_true = probs[np.arange(len(labels)), labels]
    rank = (probs > p_true[:, None]).sum(axis=1)            # 0 = true class is the top-1
    hits = np.flatnonzero(top1 == labels)
    if len(hits):
        out["confident hit"] = int(hits[np.argmax(p_top1[hits])])
        if len(hits) > 1:
            rest = hits[hits != out["confident hit"]]
            out["uncertain hit"] = int(rest[np.argmin(p_top1[rest])])
    near = np.flatnonzero((top1 != labels) & (rank < k))
    if len(near):
        out["near miss"] = int(near[np.argmax(p_true[near])])
    miss = np.flatnonzero(rank >= k)
    if len(miss):
        out["miss"] = int(miss[np.argmax(p_top1[miss])])
    return out


def soccer_top5(images: np.ndarray, probs: np.ndarray, labels: np.ndarray, path,
                class_names: Sequence[str] = SOCCER_CLASSES, k: int = 5) -> Path:
    """Four rows (confident hit, uncertain hit, near miss, miss): the frame and its top-k bars.

    The true class's bar is green when it is the top-1 (a hit), grey with a hatched black
    outline when it is in the top k but not first; when it is outside the top k, its rank and
    probability are written under the bars. A kind missing from the test set gets a row that
    says so.
    """
    images = np.asarray(images)
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    picks = select_soccer_examples(probs, labels, k)
    fig = Figure(figsize=(11, 2.9 * len(SOCCER_KINDS) + 0.4), dpi=100, layout="constrained")
    axes = fig.subplots(len(SOCCER_KINDS), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 1.6]})
    for r, kind in enumerate(SOCCER_KINDS):
        ax_img, ax_bar = axes[r]
        i = picks[kind]
        if i is None:
            ax_img.axis("off")
            ax_bar.axis("off")
            ax_bar.text(0.0, 0.5, f"{kind}: none in this test set ({len(labels)} events)", fontsize=12,
                        ha="left", va="center", color="0.3", transform=ax_bar.transAxes)
            continue
        p = probs[i]
        y = int(labels[i])
        top = np.argsort(-p, kind="stable")[:k]
        matched = top[0] == y
        ax_img.imshow(images[i])
        ax_img.set_xticks([])
        ax_img.set_yticks([])
        mark = "✓" if matched else "✗"
        ax_img.set_title(f"{mark} {kind} — true: {class_names[y]}", fontsize=10, loc="left", fontweight="bold",
                         color="darkgreen" if matched else "darkred")
        colors, edges, hatches = [], [], []
        for c in top:
            if c == y and matched:
                colors.append("tab:green"), edges.append("black"), hatches.append("")
            elif c == y:
                colors.append("0.6"), edges.append("black"), hatches.append("//")
            else:
                colors.append("lightsteelblue"), edges.append("none"), hatches.append("")
        ypos = np.arange(len(top))[::-1]
        bars = ax_bar.barh(ypos, p[top], color=colors, edgecolor=edges, linewidth=1.8)
        for bar, h in zip(bars, hatches):
            bar.set_hatch(h)
        ax_bar.set_yticks(ypos)
        ax_bar.set_yticklabels([("→ " if c == y else "") + class_names[c] for c in top], fontsize=9)
        ax_bar.set_xlim(0, 1)
        ax_bar.set_xlabel("predicted probability", fontsize=8)
        for yy, c in zip(ypos, top):
            ax_bar.text(min(p[c] + 0.01, 0.9), yy, f"{p[c]:.2f}", va="center", fontsize=8)
        if y not in top:
            rank = int((p > p[y]).sum()) + 1
            ax_bar.text(0.99, 0.02, f"true class {class_names[y]}: rank {rank}, p = {p[y]:.3f}",
                        transform=ax_bar.transAxes, ha="right", va="bottom", fontsize=9, color="darkred")
        ax_bar.set_title("hit: top-1 is the true class" if matched else
                         ("true class in top-%d, not first" % k if y in top else "true class not in top-%d" % k),
                         fontsize=9)
    missing = [kind for kind in SOCCER_KINDS if picks[kind] is None]
    fig.suptitle(f"Soccer pooled probe, top-{k} predictions on {len(labels)} held-out events"
                 + (f" (missing: {', '.join(missing)})" if missing else ""), fontsize=12)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------

def recall_chart(per_class_recall: Mapping[str, float], out_dir) -> list[Path]:
    """Per-class test recalls as `soccer_recall.csv` and a bar chart `soccer_recall.png` (classes
    absent from the test split, NaN, are left out)."""
    rows = sorted((c, float(r)) for c, r in per_class_recall.items() if r == r)
    if not rows:
        return []
    out_dir = Path(out_dir)
    csv = out_dir / "soccer_recall.csv"
    csv.write_text("class,test_recall\n" + "".join(f'"{c}",{r:.6f}\n' for c, r in rows))
    fig = Figure(figsize=(6, 0.28 * len(rows) + 0.8))
    ax = fig.subplots()
    ax.barh([c for c, _ in rows][::-1], [r for _, r in rows][::-1], color="#3b7dd8")
    ax.set_xlim(0, 1)
    ax.set_xlabel("test recall (soccer probe, per class)")
    fig.tight_layout()
    return [csv, _save(fig, out_dir / "soccer_recall.png")]


def _series(history: Mapping[str, Sequence], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    for name in (key, f"train/{key}"):
        if name in history and len(history[name]):
            arr = np.asarray(history[name], dtype=np.float64).reshape(-1, 2)
            return arr[:, 0], arr[:, 1]
    return None


def training_curves(history: Mapping[str, Sequence[tuple[float, float]]], path,
                    spikes: Sequence[int] = (), diverged_step: int | None = None, title: str = "") -> Path:
    """Small multiples of the training diagnostics from {metric: [(step, value), ...]}.

    Panels: loss, inv, sigreg, grad norm, relative distance from init, lr (names with or without
    the "train/" prefix), then any other series given (weight norm, frames/s, ...). Loss spikes
    are red dots on the loss panel and thin red lines on the others; the divergence step is a
    dashed red line on every panel. Positive series spanning > 2 decades use a log y axis.
    Non-finite values (NaN/Inf at divergence) are drawn as red crosses at the panel's top.
    """
    known = {k for k, _ in CURVE_PANELS} | {f"train/{k}" for k, _ in CURVE_PANELS}
    extra_labels = {"weight_norm": "weight norm ‖θ‖", "frames_per_s": "frames / s"}
    panels = list(CURVE_PANELS)
    for k in history:
        bare = k[len("train/"):] if k.startswith("train/") else k
        if k not in known and bare not in [p for p, _ in panels]:
            panels.append((bare, extra_labels.get(bare, bare)))
    cols = 3
    n_rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5 * cols, 3.2 * n_rows + 0.5), dpi=100, layout="constrained")
    axes = fig.subplots(n_rows, cols, squeeze=False).ravel()
    spikes = sorted(int(s) for s in spikes)
    for ax, (key, label) in zip(axes, panels):
        ax.set_title(label, fontsize=10)
        data = _series(history, key)
        if data is None:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", color="0.5", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        steps, values = data
        finite = np.isfinite(values)
        ax.plot(steps[finite], values[finite], lw=1.2, color="tab:blue")
        pos = values[finite]
        if len(pos) and (pos > 0).all() and pos.max() / pos.min() > 100:
            ax.set_yscale("log")
        if (~finite).any():
            top = pos.max() if len(pos) else 1.0
            ax.plot(steps[~finite], np.full((~finite).sum(), top), "x", color="red", ms=7, label="NaN/Inf")
        for s in spikes:
            if key == "loss":
                j = np.argmin(np.abs(steps - s))
                if finite[j]:
                    ax.plot(steps[j], values[j], "o", color="red", ms=5, mfc="none", mew=1.5)
            else:
                ax.axvline(s, color="red", lw=0.6, alpha=0.4)
        if diverged_step is not None:
            ax.axvline(diverged_step, color="red", ls="--", lw=1.4)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.axis("off")
    notes = []
    if spikes:
        notes.append(f"{len(spikes)} loss spike(s) (red), first at step {spikes[0]}")
    if diverged_step is not None:
        notes.append(f"diverged at step {diverged_step} (dashed)")
    fig.suptitle((title + " — " if title else "") + "training diagnostics" + (": " + "; ".join(notes) if notes else ""),
                 fontsize=12, color="darkred" if diverged_step is not None else "black")
    return _save(fig, path)


__all__ = ("select_iou_rows", "tiles_from_mask", "basketball_rows", "select_soccer_examples", "soccer_top5",
           "training_curves", "SOCCER_KINDS", "CURVE_PANELS")
