"""Probe metrics, bootstrap CIs, the parallel lr-grid linear probes, feature extraction, evaluate().

Backbones here are a tiny stand-in nn.Module with the Backbone interface of CONTRACTS.md
(`patch_tokens`, `embed_dim`): a test double, so these tests do not depend on backbones.py.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from sportray import tasks
from sportray.config import SOCCER_CLASSES, ProbeConfig, replace
from sportray.probes import (
    balanced_accuracy, batched_balanced_accuracy, bootstrap_ci, empty_union_frames, extract_features,
    iou_per_frame, per_class_recall, unit_bootstrap, unit_bootstrap_ci,
)
from sportray.tasks import ci_units, evaluate, load_items, metrics, save_items
from sportray.tasks.basketball import BasketballResult, probe_basketball
from sportray.tasks.soccer import SoccerResult, probe_soccer

BASKETBALL_NAMES = {f"{split}/basketball_{name}" for split in ("test", "valid") for name in (
    "iou", "iou_ci_low", "iou_ci_high", "frames", "units")} | {"basketball_lr", "test/basketball_empty_frames"}
SOCCER_NAMES = {f"{split}/soccer_{name}" for split in ("test", "valid") for name in (
    "bal_acc", "bal_acc_ci_low", "bal_acc_ci_high", "events", "units")} | {"soccer_lr"}
CONTRACT_NAMES = BASKETBALL_NAMES | SOCCER_NAMES
CFG = ProbeConfig(bootstrap=200)
SHORT = replace(CFG, min_steps=200)          # fewer head steps where convergence is not the point


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Two shared cores: one intra-op thread avoids OpenMP oversubscription stalls (10x swings)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PatchMeanBackbone(torch.nn.Module):
    """Stand-in Backbone: token = per-channel mean of each 16x16 patch of the normalized input."""
    embed_dim = 3
    num_prefix_tokens = 0

    def __init__(self):
        super().__init__()
        self.seen_dtype = None

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_dtype = x.dtype
        b, c, h, w = x.shape
        return torch.nn.functional.avg_pool2d(x, 16).flatten(2).transpose(1, 2)   # (B, N, 3)

    def forward(self, x):
        return self.patch_tokens(x).mean(1)


class TinyConvBackbone(torch.nn.Module):
    """Stand-in Backbone with a random 16x16 patch embedding (D = 8)."""
    embed_dim = 8
    num_prefix_tokens = 0

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Conv2d(3, 8, 16, 16)

    def patch_tokens(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)

    def forward(self, x):
        return self.patch_tokens(x).mean(1)


# ------------------------------------------------------------------------------------ metrics

def _mask(cells, side=4):
    m = np.zeros((side, side), dtype=bool)
    for r, c in cells:
        m[r, c] = True
    return m


def test_iou_on_hand_made_masks():
    pred = np.stack([
        _mask([(0, 0), (0, 1)]),            # 1 overlap, union 4 -> 0.25
        _mask([]),                          # both empty -> 1.0 by convention
        _mask([]),                          # missed everything -> 0
        _mask([(3, 3)]),                    # false alarm on an empty frame -> 0
        _mask([(1, 1), (2, 2)]),            # exact -> 1
    ])
    true = np.stack([
        _mask([(0, 1), (1, 1), (2, 1)]),
        _mask([]),
        _mask([(2, 2)]),
        _mask([]),
        _mask([(1, 1), (2, 2)]),
    ])
    np.testing.assert_allclose(iou_per_frame(pred, true), [0.25, 1.0, 0.0, 0.0, 1.0])
    assert empty_union_frames(pred, true) == 1
    with pytest.raises(ValueError):
        iou_per_frame(pred[:2], true[:3])


@pytest.mark.parametrize("seed", range(5))
def test_balanced_accuracy_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_classes = 17
    y_true = rng.integers(0, n_classes - 3, size=300)        # some classes absent from truth
    y_pred = np.where(rng.random(300) < 0.4, y_true, rng.integers(0, n_classes, size=300))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # sklearn warns on y_pred-only classes
        expected = balanced_accuracy_score(y_true, y_pred)
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(expected, abs=1e-12)
    # batched rows and arbitrary label values agree too
    rows = batched_balanced_accuracy(np.stack([y_true, y_pred]), np.stack([y_pred, y_pred]))
    assert rows[0] == pytest.approx(expected, abs=1e-12) and rows[1] == pytest.approx(1.0)
    names = np.array(SOCCER_CLASSES)
    assert balanced_accuracy(names[y_true], names[y_pred]) == pytest.approx(expected, abs=1e-12)


def test_per_class_recall_is_nan_for_absent_classes():
    r = per_class_recall(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), n_classes=4)
    np.testing.assert_allclose(r[:2], [0.5, 1.0])
    assert np.isnan(r[2:]).all()


def test_bootstrap_ci_covers_the_metric_and_shrinks_with_more_items():
    rng = np.random.default_rng(0)
    widths = {}
    for n in (50, 2000):
        values = (rng.random(n) < 0.3).astype(float)
        low, high = bootstrap_ci(values, n=1000, seed=0)
        assert low <= values.mean() <= high
        widths[n] = high - low
    assert widths[2000] < widths[50] / 3           # ~ 1/sqrt(40) = 0.16 in theory
    # paired resampling with balanced accuracy as the statistic
    y = rng.integers(0, 17, 400)
    p = np.where(rng.random(400) < 0.5, y, rng.integers(0, 17, 400))
    low, high = bootstrap_ci((y, p), n=500, seed=1)
    assert low <= balanced_accuracy(y, p) <= high
    assert bootstrap_ci((y, p), n=500, seed=1) == (low, high)      # deterministic for a seed
    # the fast cell-count path for balanced accuracy has the index-matrix path's distribution
    fast = bootstrap_ci((y, p), n=4000, seed=2)
    slow = bootstrap_ci((y, p), batched_balanced_accuracy, n=4000, seed=2)
    np.testing.assert_allclose(fast, slow, atol=0.01)
    # chunked index matrices give a valid CI as well
    low2, high2 = bootstrap_ci(values, n=300, seed=0, max_elements=5000)
    assert low2 <= values.mean() <= high2


def _width(ci):
    return ci[1] - ci[0]


def test_unit_bootstrap_is_wider_than_the_frame_bootstrap_when_frames_of_an_arena_move_together():
    rng = np.random.default_rng(0)
    arenas = np.repeat([f"arena{i}" for i in range(6)], 30)
    offset = np.repeat([-0.2, -0.12, -0.04, 0.04, 0.12, 0.2], 30)        # strong per-arena effect
    correlated = np.clip(0.5 + offset + rng.normal(0, 0.05, 180), 0, 1)
    by_frame = unit_bootstrap_ci(correlated, n=2000, seed=0)                # no units: frames
    by_arena = unit_bootstrap_ci(correlated, units=arenas, n=2000, seed=0)
    assert by_arena[0] <= correlated.mean() <= by_arena[1]
    assert _width(by_arena) > 3 * _width(by_frame)                         # ~5x in theory
    # frames independent of their arena (40 arenas: the arena-level spread is itself precise).
    # Units only: the frame bootstrap's width. Units then frames (the default): within-arena
    # noise counted twice, sqrt(2) wider -- close, and on the safe side.
    arenas = np.repeat(np.arange(40), 30)
    independent = rng.random(1200)
    frames = _width(unit_bootstrap_ci(independent, n=2000, seed=0))
    units_only = _width(unit_bootstrap_ci(independent, units=arenas, n=2000, seed=0, resample_items=False))
    two_stage = _width(unit_bootstrap_ci(independent, units=arenas, n=2000, seed=0))
    assert 0.85 < units_only / frames < 1.15
    assert 1.25 < two_stage / frames < 1.6
    # the same holds for balanced accuracy when some games are much easier than others
    games = np.repeat(np.arange(6), 200)
    y = rng.integers(0, 17, len(games))
    skill = np.repeat([0.1, 0.2, 0.35, 0.5, 0.65, 0.8], 200)
    p = np.where(rng.random(len(games)) < skill, y, (y + 1) % 17)
    by_event = unit_bootstrap_ci(y_true=y, y_pred=p, n=2000, seed=0)
    by_game = unit_bootstrap_ci(y_true=y, y_pred=p, units=games, n=2000, seed=0)
    assert by_game[0] <= balanced_accuracy(y, p) <= by_game[1]
    assert _width(by_game) > 3 * _width(by_event)
    np.testing.assert_allclose(by_event, bootstrap_ci((y, p), n=2000, seed=0), atol=0.01)


def test_unit_bootstrap_has_the_distribution_of_an_explicit_two_stage_resample():
    """The cell-count draws stand for the textbook procedure: draw games with replacement, then
    events with replacement within each drawn game, and score the pooled events."""
    rng = np.random.default_rng(3)
    games = np.repeat(np.arange(5), [10, 25, 40, 15, 30])
    y = rng.integers(0, 6, len(games))
    skill = np.array([0.2, 0.8, 0.5, 0.3, 0.9])[games]
    p = np.where(rng.random(len(games)) < skill, y, (y + 1) % 6)
    iou = np.clip(skill + rng.normal(0, 0.1, len(games)), 0, 1)
    members = [np.flatnonzero(games == g) for g in range(5)]
    explicit_acc, explicit_iou = [], []
    for _ in range(3000):
        idx = np.concatenate([rng.choice(members[g], len(members[g])) for g in rng.integers(0, 5, 5)])
        explicit_acc.append(balanced_accuracy(y[idx], p[idx]))
        explicit_iou.append(iou[idx].mean())
    q = [0.025, 0.5, 0.975]
    fast_acc = unit_bootstrap(y_true=y, y_pred=p, units=games, n=3000, seed=0)
    fast_iou = unit_bootstrap(iou, units=games, n=3000, seed=0)
    np.testing.assert_allclose(np.quantile(fast_acc, q), np.quantile(explicit_acc, q), atol=0.02)
    np.testing.assert_allclose(np.quantile(fast_iou, q), np.quantile(explicit_iou, q), atol=0.02)
    assert np.array_equal(unit_bootstrap(iou, units=games, n=50, seed=4),
                          unit_bootstrap(iou, units=games, n=50, seed=4))   # deterministic for a seed


def test_unit_bootstrap_over_seeds_adds_the_seed_spread():
    """(S, N) items: seeds resampled too; seeds that disagree widen the interval."""
    rng = np.random.default_rng(1)
    arenas = np.repeat(np.arange(4), 25)
    base = np.clip(0.5 + np.repeat([-0.05, 0.0, 0.02, 0.04], 25) + rng.normal(0, 0.05, 100), 0, 1)
    agree = unit_bootstrap_ci(np.stack([base, base, base]), units=arenas, n=2000, seed=0)
    alone = unit_bootstrap_ci(base, units=arenas, n=2000, seed=0)
    np.testing.assert_allclose(agree, alone, atol=0.01)         # identical seeds: no seed spread
    spread = np.stack([base - 0.1, base, base + 0.1])
    wide = unit_bootstrap_ci(spread, units=arenas, n=2000, seed=0)
    assert wide[0] <= spread.mean() <= wide[1] and _width(wide) > 2 * _width(alone)


# ------------------------------------------------------------------------------------ probes

# ------------------------------------------------------------------------------------ probes

def _basketball_data(signal: bool, seed=0, n=60, d=32):
    rng = np.random.default_rng(seed)
    tiles = (rng.random((n, 14, 14)) < 0.3).astype(np.uint8)
    v = rng.normal(size=d)
    noise = rng.normal(size=(n, 196, d))
    feats = (tiles.reshape(n, 196, 1) * v + 0.5 * noise) if signal else noise
    feats = feats + 5.0                                     # an offset the standardization must remove
    split = np.array(["train"] * (n - 20) + ["valid"] * 10 + ["test"] * 10)
    return feats.astype(np.float32), tiles, split


def _soccer_data(signal: bool, seed=0, per_class=30, d=32):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(17), per_class * 3)
    split = np.repeat(np.array(["train", "valid", "test"]), 17 * per_class)
    centers = rng.normal(size=(17, d))
    tokens = rng.normal(size=(len(labels), 8, d))          # pooled over 8 tokens by the probe
    if signal:
        tokens = tokens + centers[labels][:, None, :]
    return tokens.astype(np.float32), labels, split


def test_basketball_probe_reads_a_linear_signal():
    r = probe_basketball(*_basketball_data(True), cfg=CFG, device="cpu")
    assert isinstance(r, BasketballResult)
    assert r.iou > 0.9
    assert r.ci[0] <= r.iou <= r.ci[1]
    assert r.probs.shape == (10, 14, 14) and r.pred_masks.dtype == bool
    assert r.lr in CFG.lrs and set(r.val_scores) == set(CFG.lrs)
    np.testing.assert_array_equal(r.test_indices, np.arange(50, 60))


def test_basketball_probe_on_noise_is_low():
    r = probe_basketball(*_basketball_data(False), cfg=CFG, device="cpu")
    assert r.iou < 0.35


def test_soccer_probe_reads_a_linear_signal():
    r = probe_soccer(*_soccer_data(True), cfg=CFG, device="cpu")
    assert isinstance(r, SoccerResult)
    assert r.bal_acc > 0.9
    assert r.ci[0] <= r.bal_acc <= r.ci[1]
    assert r.probs.shape == (17 * 30, 17)
    np.testing.assert_allclose(r.probs.sum(1), 1.0, atol=1e-5)
    assert list(r.per_class_recall) == list(SOCCER_CLASSES)


def test_soccer_probe_on_noise_is_near_chance():
    r = probe_soccer(*_soccer_data(False), cfg=CFG, device="cpu")
    assert abs(r.bal_acc - 1 / 17) < 0.05
    assert r.ci[0] < 1 / 17 + 0.05


def test_probes_are_deterministic_for_a_seed():
    feats, labels, split = _soccer_data(True, per_class=10)
    a = probe_soccer(feats, labels, split, cfg=SHORT, device="cpu")
    b = probe_soccer(feats, labels, split, cfg=SHORT, device="cpu")
    np.testing.assert_array_equal(a.probs, b.probs)
    assert (a.lr, a.ci, a.val_scores) == (b.lr, b.ci, b.val_scores)
    bb = _basketball_data(True, n=30)
    c = probe_basketball(*bb, cfg=SHORT, device="cpu")
    d = probe_basketball(*bb, cfg=SHORT, device="cpu")
    np.testing.assert_array_equal(c.probs, d.probs)
    assert (c.iou, c.ci) == (d.iou, d.ci)


def test_missing_valid_split_holds_out_part_of_train():
    feats, labels, split = _soccer_data(True, per_class=6)
    split = np.where(split == "valid", "train", split)
    with pytest.warns(UserWarning, match="valid"):
        r = probe_soccer(feats, labels, split, cfg=SHORT, device="cpu")
    assert r.n_valid > 0 and r.bal_acc > 0.8
    with pytest.raises(ValueError, match="train and test"):
        probe_soccer(feats, labels, np.full(len(labels), "train"), cfg=CFG, device="cpu")


# ------------------------------------------------------------------------------------ features

def test_extract_features_normalizes_batches_and_restores_mode():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 224, 224, 3), dtype=np.uint8)
    bb = PatchMeanBackbone().train()
    feats = extract_features(bb, images, "cpu", batch_size=2)
    assert feats.dtype == torch.float32 and feats.device.type == "cpu" and feats.shape == (5, 196, 3)
    assert bb.training and bb.seen_dtype == torch.float32
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    norm = (images / 255.0 - mean) / std
    expected = norm.reshape(5, 14, 16, 14, 16, 3).mean(axis=(2, 4)).reshape(5, 196, 3)
    np.testing.assert_allclose(feats.numpy(), expected, atol=1e-5)
    pooled = extract_features(bb, images, "cpu", batch_size=4, pool=True)
    np.testing.assert_allclose(pooled.numpy(), feats.mean(1).numpy(), atol=1e-6)


def test_evaluate_runs_both_probes_and_names_metrics_as_the_contract(tmp_path):
    rng = np.random.default_rng(0)
    n_b, n_s = 12, 51
    basketball = {
        "images": rng.integers(0, 256, size=(n_b, 224, 224, 3), dtype=np.uint8),
        "tiles": (rng.random((n_b, 14, 14)) < 0.2).astype(np.uint8),
        "split": np.array(["train"] * 6 + ["valid"] * 3 + ["test"] * 3),
        "arena": np.array(["A"] * 6 + ["B"] * 3 + ["C", "D", "D"]),      # one valid arena, two test
    }
    soccer = {
        "images": rng.integers(0, 256, size=(n_s, 224, 224, 3), dtype=np.uint8),
        "label": np.arange(n_s) % 17,
        "split": np.repeat(np.array(["train", "valid", "test"]), 17),
        "game": np.repeat(np.array(["g1", "g2", "g3", "g4", "g5", "g6"]), [9, 8, 9, 8, 9, 8]),
    }
    cfg = ProbeConfig(bootstrap=50, feature_batch=16, min_steps=200)
    out = evaluate(TinyConvBackbone(), {"basketball": basketball, "soccer": soccer}, cfg, device="cpu")
    b, s = out["basketball"].detail, out["soccer"].detail
    assert isinstance(b, BasketballResult) and isinstance(s, SoccerResult)
    m = metrics(out)
    recalls = {k for k in m if k.startswith("test/soccer_recall/")}
    assert recalls and set(m) == CONTRACT_NAMES | recalls      # recalls: classes present in the test games
    assert all(isinstance(v, float) and np.isfinite(v) for v in m.values())
    assert [t.metric for t in tasks.resolve()] == ["basketball_iou", "soccer_bal_acc"]
    assert m["test/basketball_frames"] == 3 and m["valid/basketball_frames"] == 3
    assert m["test/basketball_units"] == 2 and m["valid/basketball_units"] == 1
    assert m["test/soccer_events"] == 17 and m["test/soccer_units"] == 2 and m["valid/soccer_units"] == 2
    assert m["test/basketball_iou_ci_low"] <= m["test/basketball_iou"] <= m["test/basketball_iou_ci_high"]
    assert m["valid/basketball_iou"] == b.val_scores[b.lr] and m["basketball_lr"] == b.lr
    assert m["valid/soccer_bal_acc"] == s.val_scores[s.lr]
    # units: >= 2 in the split -> that unit, else the item bootstrap
    assert ci_units(out) == {"basketball": "arena", "soccer": "game"}
    assert ci_units(out, "valid") == {"basketball": "frame", "soccer": "game"}
    assert list(b.test_units) == ["C", "D", "D"] and list(s.test_units) == ["g5"] * 9 + ["g6"] * 8
    assert set(metrics({"soccer": out["soccer"]})) == SOCCER_NAMES | recalls
    only = evaluate(TinyConvBackbone(), {"soccer": soccer}, cfg, device="cpu")
    assert set(only) == {"soccer"} and set(metrics(only)) == SOCCER_NAMES | recalls

    # the per-item arrays for the scorecard round-trip through one npz, no pickles
    path = save_items(out, tmp_path / "probe_items.npz")
    assert path == tmp_path / "probe_items.npz" and path.exists()
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {f"basketball__{sp}__{f}" for sp in ("valid", "test") for f in ("unit", "iou")} | {
            f"soccer__{sp}__{f}" for sp in ("valid", "test") for f in ("unit", "true", "pred")}
    items = load_items(path)
    np.testing.assert_array_equal(items["basketball"]["test"]["iou"], b.per_frame_iou)
    np.testing.assert_array_equal(items["basketball"]["valid"]["iou"], b.valid_per_frame_iou)
    np.testing.assert_array_equal(items["basketball"]["test"]["unit"], ["C", "D", "D"])
    np.testing.assert_array_equal(items["soccer"]["test"]["pred"], s.preds)
    np.testing.assert_array_equal(items["soccer"]["valid"]["true"], s.valid_labels)
    assert items["soccer"]["valid"]["pred"].dtype == np.int64
    assert set(load_items(save_items(only, tmp_path / "soccer_only.npz"))) == {"soccer"}


def test_probes_score_the_chosen_head_on_validation_with_unit_intervals():
    feats, labels, split = _soccer_data(True, per_class=10)
    games = np.array([f"game{i % 4}" for i in range(len(labels))])     # 4 games in every split
    r = probe_soccer(feats, labels, split, cfg=SHORT, device="cpu", units=games)
    va = split == "valid"
    np.testing.assert_array_equal(r.valid_indices, np.flatnonzero(va))
    np.testing.assert_array_equal(r.valid_labels, labels[va])
    assert r.valid_bal_acc == balanced_accuracy(r.valid_labels, r.valid_preds) == r.val_scores[r.lr]
    assert (r.unit, r.valid_unit) == ("game", "game")
    assert r.ci == unit_bootstrap_ci(y_true=r.labels, y_pred=r.preds, units=games[split == "test"],
                                     n=CFG.bootstrap, seed=CFG.seed)
    assert r.valid_ci[0] <= r.valid_bal_acc <= r.valid_ci[1]
    plain = probe_soccer(feats, labels, split, cfg=SHORT, device="cpu")   # no games
    assert plain.unit == "event" and plain.ci == unit_bootstrap_ci(y_true=plain.labels, y_pred=plain.preds,
                                                                   n=CFG.bootstrap, seed=CFG.seed)
    feats, tiles, split = _basketball_data(True, n=40)
    arenas = np.array(["a", "b"] * 20)
    bb = probe_basketball(feats, tiles, split, cfg=SHORT, device="cpu", units=arenas)
    assert bb.unit == "arena" and len(bb.valid_per_frame_iou) == bb.n_valid == 10
    assert bb.valid_iou == pytest.approx(bb.valid_per_frame_iou.mean()) and bb.valid_iou == bb.val_scores[bb.lr]
    with pytest.raises(ValueError, match="units"):
        probe_basketball(feats, tiles, split, cfg=SHORT, device="cpu", units=arenas[:5])


def test_extract_features_with_the_real_demo_backbone():
    """Integration with sportray.backbones (CONTRACTS.md): 196 patch tokens of width embed_dim."""
    backbones = pytest.importorskip("sportray.backbones")
    pytest.importorskip("timm")
    bb = backbones.build_backbone("vit_tiny_demo", seed=0)
    images = np.random.default_rng(0).integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    feats = extract_features(bb, images, "cpu", batch_size=2)
    assert feats.shape == (3, 196, bb.embed_dim) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    with torch.no_grad():
        from sportray.probes import normalize
        direct = bb.patch_tokens(normalize(torch.from_numpy(images)))
    torch.testing.assert_close(feats, direct, atol=1e-5, rtol=1e-5)
