"""The pictures: files are real PNGs, and what they choose to show is right (pure selectors)."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from sportray.panels import (
    SOCCER_KINDS, basketball_rows, select_iou_rows, select_soccer_examples, soccer_top5, tiles_from_mask,
    training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_select_iou_rows_spans_the_range():
    rng = np.random.default_rng(0)
    ious = rng.random(84)
    rows = select_iou_rows(ious, 4)
    assert len(set(rows.tolist())) == 4
    assert ious[rows[0]] == ious.max() and ious[rows[-1]] == ious.min()
    assert np.all(np.diff(ious[rows]) < 0)                       # best first
    # a common value must not fill the rows: 10 frames at 1.0, the rest spread out
    ious = np.concatenate([np.ones(10), np.linspace(0.0, 0.8, 10)])
    picked = ious[select_iou_rows(ious, 4)]
    assert picked[0] == 1.0 and picked[-1] == 0.0 and 0.2 < picked[1] < 0.9 and 0.1 < picked[2] < 0.6
    # fewer frames than rows; NaN ignored; eligible respected when it leaves enough frames
    assert select_iou_rows([0.2, np.nan, 0.9], 4).tolist() == [2, 0]
    eligible = np.arange(20) >= 10
    assert set(select_iou_rows(ious, 4, eligible=eligible)) <= set(range(10, 20))
    assert len(select_iou_rows([], 4)) == 0


def test_tiles_from_mask_uses_the_quarter_cover_rule():
    masks = np.zeros((1, 32, 32), dtype=bool)
    masks[0, :4, :16] = True           # 64 of 256 pixels = 25 % -> player
    masks[0, 16:, 16:19] = True        # 48 of 256 -> not
    masks[0, 16:20, 0:15] = True       # 60 of 256 -> not
    np.testing.assert_array_equal(tiles_from_mask(masks)[0], [[True, False], [False, False]])


def _soccer_probs():
    probs = np.full((6, 17), 0.01)
    labels = np.array([0, 1, 2, 3, 4, 5])
    probs[0, 0] = 0.9                            # confident hit
    probs[1, 1], probs[1, 7] = 0.30, 0.25        # uncertain hit
    probs[2, 9], probs[2, 2] = 0.5, 0.3          # near miss (rank 2)
    probs[3, 10], probs[3, 11], probs[3, 12], probs[3, 13], probs[3, 14] = 0.5, 0.2, 0.1, 0.05, 0.04
    probs[3, 3] = 0.001                          # miss (outside the top 5)
    probs[4, 4] = 0.6                            # another confident-ish hit
    probs[5, 16], probs[5, 5] = 0.4, 0.35        # a weaker near miss
    return probs / probs.sum(1, keepdims=True), labels


def test_select_soccer_examples_picks_each_kind_and_reports_missing():
    probs, labels = _soccer_probs()
    picks = select_soccer_examples(probs, labels)
    assert picks == {"confident hit": 0, "uncertain hit": 1, "near miss": 5, "miss": 3}
    only_hits = select_soccer_examples(probs[[0]], labels[[0]])
    assert only_hits["confident hit"] == 0
    assert only_hits["uncertain hit"] is None and only_hits["near miss"] is None and only_hits["miss"] is None


def test_panels_write_valid_pngs(tmp_path):
    rng = np.random.default_rng(0)
    n = 7
    images = rng.integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)
    masks = np.zeros((n, 224, 224), dtype=bool)
    for i in range(n):
        masks[i, 40 + 10 * i: 90 + 10 * i, 30:60] = True
    probs = rng.random((n, 14, 14)).astype(np.float32)
    ious = np.linspace(0.9, 0.1, n)
    p = basketball_rows(images, masks, probs, ious, tmp_path / "sub" / "basketball.png", n_rows=2)
    assert p == tmp_path / "sub" / "basketball.png"
    _assert_png(p)

    sprobs, labels = _soccer_probs()
    simgs = rng.integers(0, 256, size=(len(labels), 224, 224, 3), dtype=np.uint8)
    _assert_png(soccer_top5(simgs, sprobs, labels, tmp_path / "soccer.png"))
    _assert_png(soccer_top5(simgs[:1], sprobs[:1], labels[:1], tmp_path / "soccer_missing.png"))

    steps = np.arange(0, 200, 10)
    loss = np.exp(-steps / 50.0) + 0.1
    loss[-1] = np.nan
    history = {"train/loss": list(zip(steps, loss)), "train/lr": list(zip(steps, np.full(len(steps), 1e-3))),
               "grad_norm": list(zip(steps, np.ones(len(steps)))), "train/weight_norm": [(0, 1.0), (10, 1.1)]}
    _assert_png(training_curves(history, tmp_path / "curves.png", spikes=[50], diverged_step=190))
    _assert_png(training_curves({}, tmp_path / "empty_curves.png"))


def test_soccer_kinds_are_the_four_outcomes():
    assert SOCCER_KINDS == ("confident hit", "uncertain hit", "near miss", "miss")


@pytest.mark.parametrize("n", [0, 1])
def test_basketball_rows_with_few_frames(tmp_path, n):
    images = np.zeros((n, 224, 224, 3), dtype=np.uint8)
    _assert_png(basketball_rows(images, np.zeros((n, 224, 224), bool), np.zeros((n, 14, 14)), np.ones(n),
                                tmp_path / f"b{n}.png"))


def test_recall_chart_writes_the_present_classes_as_csv_and_bars(tmp_path):
    from sportray.panels import recall_chart

    csv, png = recall_chart({"Goal": 0.5, "Penalty": float("nan"), "Corner": 0.25}, tmp_path)
    assert csv.read_text().splitlines() == ["class,test_recall", '"Corner",0.250000', '"Goal",0.500000']
    assert imread(png).ndim == 3
    assert recall_chart({"Penalty": float("nan")}, tmp_path / "none") == []
