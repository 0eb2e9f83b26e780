"""DeepSportRadar COCO reading, masks (RLE / polygons), the 25 % tile rule, arena splits, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from sportray.config import ConfigError
from sportray.data import deepsportradar as dsr
from sportray.data.errors import DataError


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def _dataset(root: Path, images: list[tuple[str, int, int, list]], categories=None,
             name="trainvaltest.json", write_images=True) -> Path:
    """images: (file_name, width, height, [segmentation, ...])."""
    doc = {"categories": categories or [{"id": 0, "name": "human", "supercategory": "human"}],
           "images": [], "annotations": []}
    for i, (fname, w, h, segs) in enumerate(images):
        doc["images"].append({"file_name": fname, "width": w, "height": h, "id": 100 + i})
        if write_images:
            p = root / fname
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (w, h), (180, 140, 90)).save(p)
        for seg in segs:
            doc["annotations"].append({"id": len(doc["annotations"]), "image_id": 100 + i,
                                       "category_id": 0, "segmentation": seg, "iscrowd": 0})
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(doc))
    return root / name


# ----------------------------------------------------------------------------- the tile rule

def test_tile_rule_hand_computed_at_224():
    m = np.zeros((224, 224), bool)
    m[0:8, 0:8] = True                       # tile (0,0): 64 / 256 px = 25.0 %  -> player
    m[0:2, 16:32] = True                     # tile (0,1): 32 + 30 = 62 px = 24.2 % -> not
    m[2:4, 16:31] = True
    m[108:118, 108:118] = True               # 100 px over 4 tiles (16/24/24/36 px) -> not
    m[208:224, 208:224] = True               # a full tile -> player
    t = dsr.tile_labels(m)
    assert t.shape == (14, 14) and t.dtype == np.uint8
    expected = np.zeros((14, 14), np.uint8)
    expected[0, 0] = expected[13, 13] = 1
    np.testing.assert_array_equal(t, expected)


@pytest.mark.parametrize("scale", [2, 1.5])
def test_tile_rule_hand_computed_after_resizing(scale):
    """The tile footprint in the source is (16*scale)^2 px; 25 % of it is player, 24 % is not."""
    side = int(224 * scale)
    fp = int(16 * scale)                     # 32 or 24 px
    m = np.zeros((side, side), bool)
    quarter = fp * fp // 4                   # 256 or 144 px
    a = int(np.sqrt(quarter))
    m[0:a, 0:a] = True                       # exactly 25 % of tile (0,0)
    # 24.x % of tile (0,1): one row short of a quarter block, the rest of the row partly
    rows, cols = a - 1, a
    m[0:rows, fp:fp + cols] = True
    extra = int(0.24 * fp * fp) - rows * cols
    m[rows, fp:fp + extra] = True
    frac01 = m[0:fp, fp:2 * fp].mean()
    assert 0.235 < frac01 < 0.25
    t = dsr.tile_labels(m)
    assert t[0, 0] == 1 and t[0, 1] == 0 and t.sum() == 1


def test_non_square_resize_is_exact_area():
    rng = np.random.default_rng(0)
    m = rng.random((1234, 1624)) < 0.3
    cov = dsr.mask_coverage(m)
    assert cov.shape == (224, 224)
    assert abs(cov.mean() - m.mean()) < 1e-9              # area is preserved exactly
    assert cov.min() >= -1e-12 and cov.max() <= 1 + 1e-12
    assert dsr.tile_labels(np.ones((1234, 1624), bool)).all()
    assert not dsr.tile_labels(np.zeros((1234, 1624), bool)).any()
    r = dsr.resize_mask(m[:, :1234])
    assert r.shape == (224, 224) and r.dtype == bool


def test_rle_to_tile_labels_hand_computed(tmp_path):
    """An RLE-encoded rectangle through read_dataset -> union_mask -> tile_labels."""
    h = w = 448                                 # 2x: a tile is 32x32 = 1024 source px
    a = np.zeros((h, w), bool)
    a[0:16, 0:16] = True                        # 256 px = 25 % of tile (0,0) -> 1
    b = np.zeros((h, w), bool)
    b[0:8, 32:63] = True                        # 248 px = 24.2 % of tile (0,1) -> 0
    c = np.zeros((h, w), bool)
    c[64:96, 64:96] = True                      # a whole tile (2,2) -> 1, as uncompressed RLE
    c_unc = {"size": [h, w], "counts": _uncompressed(c)}
    poly = [[320.0, 320.0, 352.0, 320.0, 352.0, 352.0, 320.0, 352.0]]   # polygon: tile (10,10)
    _dataset(tmp_path, [("KS-FR-CAEN/24322/camcourt1_1513364954220_0.png", w, h,
                         [_rle(a), _rle(b), c_unc, poly])])
    (s,) = dsr.read_dataset(tmp_path)
    assert s.arena == "KS-FR-CAEN" and (s.width, s.height) == (w, h) and len(s.annotations) == 4
    u = dsr.union_mask(s)
    assert u.shape == (h, w) and u.dtype == bool
    assert u[0:16, 0:16].all() and u[0:8, 32:63].all() and u[64:96, 64:96].all()
    assert u[320:352, 320:352].mean() > 0.9
    t = dsr.tile_labels(u)
    expected = np.zeros((14, 14), np.uint8)
    expected[0, 0] = expected[2, 2] = expected[10, 10] = 1
    np.testing.assert_array_equal(t, expected)


def _uncompressed(m: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts (column-major runs starting with zeros)."""
    flat = m.flatten(order="F").astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return counts


# ----------------------------------------------------------------------------- reading

def test_read_dataset_layout_and_dedup(tmp_path):
    m = np.zeros((60, 80), bool)
    m[10:30, 20:30] = True
    imgs = [("KS-FR-CAEN/1/camcourt1_1_0.png", 80, 60, [_rle(m)]),
            ("KS-FR-NANTES/2/camcourt2_2_0.png", 80, 60, [_rle(m), _rle(m)])]
    _dataset(tmp_path, imgs, name="trainvaltest.json")
    _dataset(tmp_path, imgs[:1], name="test.json", write_images=False)   # listed twice: once
    samples = dsr.read_dataset(tmp_path)
    assert [s.file_name for s in samples] == [f for f, *_ in imgs]
    assert [s.arena for s in samples] == ["KS-FR-CAEN", "KS-FR-NANTES"]
    assert samples[1].image_path == tmp_path / imgs[1][0]
    assert [len(s.annotations) for s in samples] == [1, 2]


def test_non_human_categories_are_ignored(tmp_path):
    m = np.zeros((20, 20), bool)
    m[:5, :5] = True
    p = _dataset(tmp_path, [("A/1/x_0.png", 20, 20, [_rle(m)])],
                 categories=[{"id": 0, "name": "human"}, {"id": 1, "name": "ball"}])
    doc = json.loads(p.read_text())
    doc["annotations"].append({"id": 9, "image_id": 100, "category_id": 1, "segmentation": _rle(~m)})
    p.write_text(json.dumps(doc))
    (s,) = dsr.read_dataset(tmp_path)
    assert len(s.annotations) == 1 and dsr.union_mask(s).sum() == 25


def _bad(tmp_path, mutate, name="trainvaltest.json"):
    m = np.zeros((20, 30), bool)
    m[2:5, 2:5] = True
    p = _dataset(tmp_path, [("ARENA/1/camcourt1_1_0.png", 30, 20, [_rle(m)])], name=name)
    doc = json.loads(p.read_text())
    mutate(doc, tmp_path)
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DataError) as ei:
        dsr.read_dataset(tmp_path)
    return str(ei.value)


@pytest.mark.parametrize("mutate, file_part, reason", [
    (lambda d, r: d.pop("annotations"), "trainvaltest.json", "'annotations' list missing"),
    (lambda d, r: d.pop("images"), "trainvaltest.json", "'images' list missing"),
    (lambda d, r: d["annotations"][0].pop("segmentation"), "trainvaltest.json",
     "annotation #0 (id 0) has no 'segmentation'"),
    (lambda d, r: d["annotations"][0].pop("image_id"), "trainvaltest.json",
     "annotation #0 (id 0) has no 'image_id'"),
    (lambda d, r: d["annotations"][0]["segmentation"].update(size=[30, 20]), "trainvaltest.json",
     "RLE size [30, 20] differs from its image ARENA/1/camcourt1_1_0.png (height x width 20 x 30)"),
    (lambda d, r: d.update(categories=[{"id": 0, "name": "person"}]), "trainvaltest.json",
     "no 'human' category"),
    (lambda d, r: (r / "ARENA/1/camcourt1_1_0.png").unlink(), "camcourt1_1_0.png",
     "image file missing (listed in trainvaltest.json"),
    (lambda d, r: (d["images"][0].update(width=31), d["annotations"][0].update(segmentation=[])),
     "camcourt1_1_0.png", "image is 30x20 but trainvaltest.json says 31x20"),
])
def test_errors_name_file_and_reason(tmp_path, mutate, file_part, reason):
    msg = _bad(tmp_path, mutate)
    assert file_part in msg and reason in msg, msg


def test_not_json(tmp_path):
    (tmp_path / "val.json").write_text("{oops")
    with pytest.raises(DataError) as ei:
        dsr.read_dataset(tmp_path)
    assert "val.json" in str(ei.value) and "not JSON" in str(ei.value)


def test_no_json_at_all(tmp_path):
    with pytest.raises(DataError, match="no COCO .json files found"):
        dsr.read_dataset(tmp_path)


def test_scan_reports_every_problem(tmp_path):
    m = np.zeros((20, 30), bool)
    p = _dataset(tmp_path, [("A/1/a_0.png", 30, 20, [_rle(m)]), ("B/1/b_0.png", 30, 20, [_rle(m)])])
    doc = json.loads(p.read_text())
    doc["annotations"][0].pop("segmentation")
    doc["annotations"][1]["segmentation"]["size"] = [1, 1]
    p.write_text(json.dumps(doc))
    (tmp_path / "B/1/b_0.png").unlink()
    samples, problems = dsr.scan_dataset(tmp_path)
    assert len(problems) == 3 and [s.file_name for s in samples] == ["A/1/a_0.png"]


# ----------------------------------------------------------------------------- splits

def _samples(arenas, per=7):
    return [dsr.Sample(Path(f"{a}/g/c_{i}_0.png"), f"{a}/g/c_{i}_0.png", a, 10, 10, k * 100 + i)
            for k, a in enumerate(arenas) for i in range(per)]


def test_default_test_arenas_are_the_challenge_ones():
    arenas = ["KS-FR-CAEN", "KS-FR-LIMOGES", "KS-FR-ROANNE", "KS-FR-NANTES", "KS-FR-BLOIS",
              "KS-FR-FOS", "KS-FR-LEMANS"]
    s = dsr.split_arenas(_samples(arenas), seed=0)
    assert {x.arena for x in s["test"]} == set(dsr.DEFAULT_TEST_ARENAS)
    assert not ({x.arena for x in s["train"]} & {x.arena for x in s["test"]})
    assert len({x.arena for x in s["valid"]}) == 1          # a held-out validation arena
    assert not ({x.arena for x in s["valid"]} & {x.arena for x in s["train"]})


def test_seeded_default_without_known_arenas():
    arenas = [f"SYN-{i}" for i in range(5)]
    s = dsr.split_arenas(_samples(arenas), seed=1)
    t, v, tr = ({x.arena for x in s[k]} for k in ("test", "valid", "train"))
    assert len(t) == 1 and len(v) == 1 and len(tr) == 3 and not (t & v) and not (t & tr)
    assert s == dsr.split_arenas(_samples(arenas), seed=1)


def test_explicit_test_arenas_and_small_fallback():
    arenas = ["A", "B", "C"]
    s = dsr.split_arenas(_samples(arenas), test_arenas="B, C", seed=0)
    assert {x.arena for x in s["test"]} == {"B", "C"}
    # one training arena left: valid = every 7th image of it (the challenge's [4::7] rule)
    assert [x.file_name for x in s["valid"]] == ["A/g/c_4_0.png"]
    assert len(s["train"]) == 6
    s2 = dsr.split_arenas(_samples(arenas), test_arenas=["A"], valid_arenas=["B"], seed=0)
    assert {x.arena for x in s2["valid"]} == {"B"} and {x.arena for x in s2["train"]} == {"C"}


def test_split_errors():
    with pytest.raises(ConfigError, match="not in the dataset"):
        dsr.split_arenas(_samples(["A", "B"]), test_arenas=["Z"])
    with pytest.raises(ConfigError, match="at least 2 arenas"):
        dsr.split_arenas(_samples(["A"]))
    with pytest.raises(ConfigError, match="none left to train on"):
        dsr.split_arenas(_samples(["A", "B"]), test_arenas="A,B")


# ----------------------------------------------------------------------------- probe set

def test_basketball_probe_set_built_by_ray_tasks_matches_the_serial_rule(ray_session, tiny_synthetic,
                                                                        tmp_path, monkeypatch):
    """build_basketball loads images in chunks on Ray tasks; the result is in split order and
    equals loading every sample one by one (image, union mask, 25 % tile labels)."""
    from sportray.data import probesets

    monkeypatch.setattr(probesets, "BASKETBALL_CHUNK", 5)          # several tasks, a short last one
    root = Path(tiny_synthetic) / "deepsportradar"
    out = probesets.build_basketball(root, tmp_path, split_seed=0)
    got = probesets.load(out)
    splits = dsr.split_arenas(dsr.read_dataset(root), seed=0)
    order = [(k, s) for k, items in splits.items() for s in items]
    assert got["split"].tolist() == [k for k, _ in order]
    assert got["arena"].tolist() == [s.arena for _, s in order]
    assert got["name"].tolist() == [str(s.image_path) for _, s in order]
    assert got["images"].shape == (len(order), 224, 224, 3) and got["tiles"].shape == (len(order), 14, 14)
    for i, (_, s) in enumerate(order):
        img, mask, tiles = probesets._load_basketball_item(s)
        np.testing.assert_array_equal(got["images"][i], img)
        np.testing.assert_array_equal(got["masks"][i], mask)
        np.testing.assert_array_equal(got["tiles"][i], tiles)
    assert probesets.build_basketball(root, tmp_path, split_seed=0) == out      # cached
