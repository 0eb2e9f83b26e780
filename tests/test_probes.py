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

from sportray.config import SOCCER_CLASSES, ProbeConfig
from sportray.probes import (
    BasketballResult, SoccerResult, balanced_accuracy, batched_balanced_accuracy, bootstrap_ci,
    empty_union_frames, evaluate, extract_features, iou_per_frame, metrics_dict, per_class_recall,
    probe_basketball, probe_soccer,
)

CONTRACT_NAMES = {
    "basketball_iou", "basketball_iou_ci_low", "basketball_iou_ci_high", "basketball_test_frames",
    "soccer_bal_acc", "soccer_bal_acc_ci_low", "soccer_bal_acc_ci_high", "soccer_test_events",
}
CFG = ProbeConfig(bootstrap=200)


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
    a = probe_soccer(feats, labels, split, cfg=CFG, device="cpu", min_steps=200)
    b = probe_soccer(feats, labels, split, cfg=CFG, device="cpu", min_steps=200)
    np.testing.assert_array_equal(a.probs, b.probs)
    assert (a.lr, a.ci, a.val_scores) == (b.lr, b.ci, b.val_scores)
    bb = _basketball_data(True, n=30)
    c = probe_basketball(*bb, cfg=CFG, device="cpu", min_steps=200)
    d = probe_basketball(*bb, cfg=CFG, device="cpu", min_steps=200)
    np.testing.assert_array_equal(c.probs, d.probs)
    assert (c.iou, c.ci) == (d.iou, d.ci)


def test_missing_valid_split_holds_out_part_of_train():
    feats, labels, split = _soccer_data(True, per_class=6)
    split = np.where(split == "valid", "train", split)
    with pytest.warns(UserWarning, match="valid"):
        r = probe_soccer(feats, labels, split, cfg=CFG, device="cpu", min_steps=200)
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


def test_evaluate_runs_both_probes_and_names_metrics_as_the_contract():
    rng = np.random.default_rng(0)
    n_b, n_s = 12, 51
    basketball = {
        "images": rng.integers(0, 256, size=(n_b, 224, 224, 3), dtype=np.uint8),
        "tiles": (rng.random((n_b, 14, 14)) < 0.2).astype(np.uint8),
        "split": np.array(["train"] * 6 + ["valid"] * 3 + ["test"] * 3),
    }
    soccer = {
        "images": rng.integers(0, 256, size=(n_s, 224, 224, 3), dtype=np.uint8),
        "label": np.arange(n_s) % 17,
        "split": np.repeat(np.array(["train", "valid", "test"]), 17),
    }
    cfg = ProbeConfig(bootstrap=50, feature_batch=16)
    out = evaluate(TinyConvBackbone(), basketball, soccer, cfg, device="cpu", min_steps=200)
    assert isinstance(out["basketball"], BasketballResult) and isinstance(out["soccer"], SoccerResult)
    m = out["metrics"]
    assert set(m) == CONTRACT_NAMES
    assert all(isinstance(v, float) and np.isfinite(v) for v in m.values())
    assert m["basketball_test_frames"] == 3 and m["soccer_test_events"] == 17
    assert m["basketball_iou_ci_low"] <= m["basketball_iou"] <= m["basketball_iou_ci_high"]
    assert set(metrics_dict(out["soccer"])) == {k for k in CONTRACT_NAMES if k.startswith("soccer")}
    only = evaluate(TinyConvBackbone(), None, soccer, cfg, device="cpu", min_steps=200)
    assert only["basketball"] is None and set(only["metrics"]) == {k for k in CONTRACT_NAMES if k.startswith("soccer")}


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
