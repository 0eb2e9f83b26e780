"""The embedded synthetic default: plan, formats, determinism, caching, and the class scenes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sportray.config import SOCCER_CLASSES
from sportray.data import deepsportradar as dsr
from sportray.data import soccernet, synthetic
from sportray.data.video import probe_video

SMALL = dict(n_games=2, half_s=5.0, n_arenas=2, images_per_arena=2)


# ----------------------------------------------------------------------------- the plan

def test_default_plan_uses_every_class_balanced_in_every_game():
    plans = synthetic.plan_games(seed=0)
    assert len(plans) == synthetic.DEFAULTS["n_games"] == 64
    assert all(len(p.events) == 30 for p in plans)                    # 15 per half
    counts = synthetic.summary_of(plans)["events_per_class"]
    assert list(counts) == list(SOCCER_CLASSES)
    assert min(counts.values()) >= 100 and max(counts.values()) - min(counts.values()) <= 2
    for p in plans:
        assert {e.label for e in p.events} == set(SOCCER_CLASSES)       # all 17 in each game
        assert p.home != p.away
        for half in (1, 2):
            pos = sorted(e.position_ms for e in p.events if e.half == half)
            assert len(pos) == 15
            assert pos[0] > synthetic.BLEND_S * 1000
            assert pos[-1] < (synthetic.DEFAULTS["half_s"] - synthetic.BLEND_S) * 1000
            assert min(np.diff(pos)) >= 2 * synthetic.BLEND_S * 1000     # scenes never overlap
    assert len({p.id for p in plans}) == 64
    assert len({(p.home, p.away) for p in plans}) == 64               # no repeated fixtures


def _planned_games(plans):
    return [soccernet.Game(p.league, p.season, p.name, Path(p.id)) for p in plans]


def test_every_split_by_game_has_all_classes():
    plans = synthetic.plan_games(seed=0)
    labels = {p.id: {e.label for e in p.events} for p in plans}
    for seed in range(3):
        for split, gs in soccernet.split_games(_planned_games(plans), seed=seed).items():
            assert gs and set().union(*(labels[g.id] for g in gs)) == set(SOCCER_CLASSES), split


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_soccer_sizes_with_the_default_seeded_split(seed):
    """What the probe-set build (probesets.build_soccer: split_games(games, seed)) gets from the
    default corpus: >= 1,000 train events, >= 300 test events over >= 10 games, >= 150 valid
    events over >= 5 games, all 17 classes in each split. Computed from the plan (no video)."""
    plans = synthetic.plan_games(seed=seed)
    events = {p.id: p.events for p in plans}
    splits = soccernet.split_games(_planned_games(plans), seed=seed)
    n_games = {k: len(v) for k, v in splits.items()}
    n_events = {k: sum(len(events[g.id]) for g in v) for k, v in splits.items()}
    assert n_games == {"train": 44, "valid": 10, "test": 10}
    assert n_events == {"train": 1320, "valid": 300, "test": 300}
    for k, gs in splits.items():
        per_class = {c: 0 for c in SOCCER_CLASSES}
        for g in gs:
            for e in events[g.id]:
                per_class[e.label] += 1
        assert min(per_class.values()) >= len(gs), k                # every class in every game


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_basketball_sizes_with_the_default_seeded_split(seed):
    """probesets.build_basketball: split_arenas(samples, test_arenas=None, seed) on the default
    layout -> >= 100 test frames over >= 3 arenas, >= 60 valid over >= 2, >= 150 train."""
    layout = synthetic.deepsportradar_layout(seed)
    assert len(layout) == 13 * 34 and len({x["file_name"] for x in layout}) == len(layout)
    samples = [dsr.Sample(Path(x["file_name"]), x["file_name"], x["arena"], 640, 480, i)
               for i, x in enumerate(layout)]
    splits = dsr.split_arenas(samples, test_arenas=None, seed=seed)
    arenas = {k: {s.arena for s in v} for k, v in splits.items()}
    assert {k: len(v) for k, v in arenas.items()} == {"train": 8, "valid": 2, "test": 3}
    assert {k: len(v) for k, v in splits.items()} == {"train": 272, "valid": 68, "test": 102}
    assert not (arenas["test"] & arenas["train"]) and not (arenas["valid"] & arenas["train"])
    assert not set(dsr.DEFAULT_TEST_ARENAS) & set(synthetic.arena_names(13))   # seeded choice


def test_default_video_length_and_frame_store_size():
    """4,096 s of video; a frame store holds 4,096 frames at one every 1 s, 2,048 at one every 2 s
    (frames.build_store samples each half with video.sample_times)."""
    from sportray.data.video import sample_times

    d = synthetic.DEFAULTS
    halves = 2 * d["n_games"]
    assert halves * d["half_s"] == 4096
    assert halves * len(sample_times(d["half_s"], 1.0)) == 4096
    assert halves * len(sample_times(d["half_s"], 2.0)) == 2048


def test_the_hold_shows_the_scene_exactly():
    """At the probe frame (the middle of the hold) every actor stands where the class's
    arrangement puts it (up to the wiggle), not somewhere between it and ordinary play."""
    for i, label in enumerate(SOCCER_CLASSES):
        ev = synthetic.PlannedEvent(half=1, position_ms=2000, label=label, team="home", zoom=2,
                                    side=0, flip_y=False, key=100 + i)
        tl = synthetic._timeline(np.random.default_rng(i), 1, 4 * synthetic.FPS, [ev])
        sc = synthetic._event_scene(ev)
        k = 2 * synthetic.FPS
        err = np.abs(tl.pos[k] - sc.pos).max(axis=1)
        assert (err[sc.visible] <= sc.wiggle[sc.visible] + 1e-9).all(), label
        assert np.allclose(tl.ball[k], sc.ball) and np.allclose(tl.cam[k], sc.cam), label
        assert tl.zoom[k] == 2 and tl.items[k] == sc.items, label
        sel = sc.pose >= 0
        assert (tl.pose[k][sel] == sc.pose[sel]).all(), label
        # outside the blend window: ordinary play, no scene
        assert tl.zoom[0] == 1 and tl.items[0] == [], label


def test_plan_is_deterministic_and_seeded():
    a, b, c = (synthetic.plan_games(seed=s) for s in (0, 0, 1))
    assert [synthetic.labels_json(p) for p in a] == [synthetic.labels_json(p) for p in b]
    assert [synthetic.labels_json(p) for p in a] != [synthetic.labels_json(p) for p in c]


def test_labels_json_is_the_real_schema():
    plan = synthetic.plan_games(seed=0)[0]
    doc = synthetic.labels_json(plan)
    assert {"UrlLocal", "UrlYoutube", "annotations", "gameHomeTeam", "gameAwayTeam",
            "gameScore", "gameDate"} <= set(doc)
    assert doc["UrlLocal"] == plan.id + "/"
    h, a = plan.score
    assert doc["gameScore"] == f"{h} - {a}" and f"{h} - {a}" in plan.name
    for ann in doc["annotations"]:
        assert set(ann) == {"gameTime", "label", "position", "team", "visibility"}
        assert isinstance(ann["position"], str) and ann["position"].isdigit()
        s = int(ann["position"]) // 1000
        assert ann["gameTime"].endswith(f"{s // 60:02d}:{s % 60:02d}")
        assert ann["team"] in ("home", "away") and ann["visibility"] == "visible"


# ----------------------------------------------------------------------------- the scenes

def _scene(label, **kw):
    ev = synthetic.PlannedEvent(half=1, position_ms=5000, label=label, team="home", zoom=1,
                                side=0, flip_y=False, key=kw.pop("key", 7))
    return synthetic._event_scene(ev)


def test_class_scenes_carry_their_signature():
    pen = _scene("Penalty")
    assert np.allclose(pen.ball[:2], (synthetic.PITCH_L - 11, 34))           # home attacks right
    ko = _scene("Kick-off")
    assert np.allclose(ko.ball[:2], (52.5, 34))
    teams = [ko.pos[synthetic.HOME[1:], 0], ko.pos[synthetic.AWAY[1:], 0]]
    assert (teams[0] > 52.5).all() != (teams[1] > 52.5).all()               # own halves
    assert all((np.abs(t - 52.5) > 0).all() for t in teams)
    yc, rc, yr = _scene("Yellow card"), _scene("Red card"), _scene("Yellow->red card")
    cards = lambda sc: sorted(it[3] for it in sc.items if it[0] == "card")  # noqa: E731
    assert cards(yc) == [synthetic.YELLOW_CARD] and cards(rc) == [synthetic.RED_CARD]
    assert cards(yr) == sorted([synthetic.YELLOW_CARD, synthetic.RED_CARD])
    assert rc.walk is not None and yr.walk is not None and yc.walk is None
    sub = _scene("Substitution")
    assert sub.visible[synthetic.SUB] and any(it[0] == "board" for it in sub.items)
    off = _scene("Offside")
    assert off.pose[synthetic.LIN_FAR] == synthetic.ARM_UP or off.pose[synthetic.LIN_NEAR] == synthetic.ARM_UP
    corner = _scene("Corner")
    assert corner.ball[0] in (pytest.approx(0.7), pytest.approx(synthetic.PITCH_L - 0.7))
    assert min(corner.ball[1], synthetic.PITCH_W - corner.ball[1]) < 1.0
    thr = _scene("Throw-in")
    assert thr.ball[2] > 2 and (thr.ball[1] < 0 or thr.ball[1] > synthetic.PITCH_W)
    out = _scene("Ball out of play")
    assert out.ball[1] < 0 or out.ball[1] > synthetic.PITCH_W
    foul = _scene("Foul")
    assert (foul.pose == synthetic.LYING).sum() == 2
    goal = _scene("Goal")
    assert goal.ball[0] < 0 or goal.ball[0] > synthetic.PITCH_L                # in the net
    dfk = _scene("Direct free-kick")
    assert any(it[0] == "spray" for it in dfk.items)
    ifk = _scene("Indirect free-kick")
    assert ifk.pose[synthetic.REF] == synthetic.ARM_UP and not ifk.items
    shot = _scene("Shots on target")
    assert (shot.pose == synthetic.DIVE).sum() == 1 and shot.lift.max() > 0
    assert _scene("Clearance").big_ball and _scene("Clearance").ball[2] > 3
    # every class has an arrangement (positions, poses, objects) unlike every other's
    scenes = {c: _scene(c) for c in SOCCER_CLASSES}
    for a in SOCCER_CLASSES:
        for b in SOCCER_CLASSES:
            if a < b:
                sa, sb = scenes[a], scenes[b]
                same = (np.allclose(sa.pos, sb.pos) and (sa.pose == sb.pose).all()
                        and sa.items == sb.items)
                assert not same, (a, b)


def test_person_sprites_and_hands():
    s = synthetic._person(19, synthetic.ARM_UP)
    assert s.idx.shape[0] > 19 and s.idx.max() == 7 and set(np.unique(s.idx)) >= {0, 1, 2, 3}
    (ly, lx), (ry, rx) = s.hands
    assert ry < -19 * 0.9 and ly > -19 * 0.6          # right hand above the head, left one down
    lying = synthetic._person(19, synthetic.LYING)
    assert lying.idx.shape[1] > lying.idx.shape[0]    # horizontal


# ----------------------------------------------------------------------------- the files

def test_tiny_corpus_layout_and_formats(tiny_synthetic):
    root = Path(tiny_synthetic)
    from conftest import TINY

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["version"] == synthetic.VERSION and manifest["params"]["n_games"] == TINY["n_games"]
    games = soccernet.find_games(root / "soccernet")
    assert len(games) == TINY["n_games"]
    for g in games:
        assert sorted(g.videos) == [1, 2] and g.labels is not None
        assert g.videos[1].name == "1_224p.mkv"
        assert len(Path(g.id).parts) == 3 and g.path.relative_to(root / "soccernet") == Path(g.id)
        info = probe_video(g.videos[1])
        assert (info.codec, info.width, info.height, info.frames_per_s) == ("h264", 398, 224, 25.0)
        assert info.duration_s == pytest.approx(TINY["half_s"], abs=0.05)
        events = soccernet.game_events(g, check=True)       # positions inside the halves
        assert events and all(e.visibility == "visible" for e in events)
    samples = dsr.read_dataset(root / "deepsportradar")
    assert len(samples) == TINY["n_arenas"] * TINY["images_per_arena"]
    arenas = sorted({s.arena for s in samples})
    assert arenas == sorted(synthetic.arena_names(TINY["n_arenas"]))
    doc = json.loads((root / "deepsportradar" / "trainvaltest.json").read_text())
    assert doc["categories"] == [{"id": 0, "name": "human", "supercategory": "human"}]
    assert isinstance(doc["annotations"][0]["segmentation"]["counts"], str)
    for s in samples:
        assert (s.width, s.height) == (640, 480) and s.annotations
        assert s.file_name.startswith(s.arena + "/") and s.image_path.suffix == ".png"
        m = dsr.union_mask(s)
        assert 0.005 < m.mean() < 0.5
        assert dsr.tile_labels(m).sum() >= 1
    splits = dsr.split_arenas(samples, seed=0)
    assert all(splits[k] for k in ("train", "test"))


def test_tiny_frames_look_like_a_pitch(tiny_synthetic):
    from sportray.data.video import decode_at

    g = soccernet.find_games(Path(tiny_synthetic) / "soccernet")[0]
    (_, img), = decode_at(g.videos[1], [2.0])
    r, gr, b = (img[..., i].astype(int) for i in range(3))
    green = ((gr > r + 20) & (gr > b + 20)).mean()
    assert 0.5 < green < 0.99                              # mostly grass, not only grass
    assert (img.min(axis=2) > 200).mean() > 0.002          # white lines / ball / kits


def _decode_all(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            rel = p.relative_to(root).as_posix()
            out[rel] = _decode_all(p) if p.suffix == ".mkv" else p.read_bytes()
    return out


def test_same_seed_same_corpus_other_seed_differs(tmp_path):
    a = _snapshot(synthetic.write_synthetic(tmp_path / "a", seed=5, workers=1, **SMALL))
    b = _snapshot(synthetic.write_synthetic(tmp_path / "b", seed=5, workers=2, **SMALL))
    assert a.keys() == b.keys()
    assert sum(k.endswith(".mkv") for k in a) == 4 and sum(k.endswith(".png") for k in a) == 4
    for k in a:
        if k.endswith(".mkv"):
            assert a[k].shape == (125, 224, 398, 3), k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k
    other = synthetic.write_deepsportradar(tmp_path / "c", seed=6, n_arenas=2, images_per_arena=2)
    assert (other / "trainvaltest.json").read_bytes() != a["deepsportradar/trainvaltest.json"]


# ----------------------------------------------------------------------------- the cache

def _fake_writer(calls, fail=False):
    def write(root, seed=0, **sizes):
        calls.append((Path(root), seed, sizes))
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "soccernet").mkdir()
        (Path(root) / "part.txt").write_text("half written")
        if fail:
            raise KeyboardInterrupt("killed mid-write")
        (Path(root) / "all.txt").write_text("complete")
        return Path(root)
    return write


def test_ensure_synthetic_caches_and_is_atomic(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(synthetic, "write_synthetic", _fake_writer(calls))
    root = synthetic.ensure_synthetic(tmp_path, seed=3)
    assert synthetic.VERSION == "synthetic-v2"
    assert root == tmp_path / "synthetic-v2-seed3" and (root / "DONE").is_file()
    assert (root / "all.txt").is_file() and len(calls) == 1
    assert calls[0][0] != root                                  # written elsewhere, then renamed
    assert synthetic.ensure_synthetic(tmp_path, seed=3) == root and len(calls) == 1   # reused
    other = synthetic.ensure_synthetic(tmp_path, seed=3, n_games=2)
    assert other != root and other.name.startswith("synthetic-v2-seed3-") and len(calls) == 2
    assert not list(tmp_path.glob(".synthetic-*"))


def test_killed_write_leaves_no_corpus(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(synthetic, "write_synthetic", _fake_writer(calls, fail=True))
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure_synthetic(tmp_path, seed=0)
    assert not (tmp_path / "synthetic-v2-seed0").exists()
    assert not list(tmp_path.glob(".synthetic-*"))


def test_stale_leftovers_are_replaced(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".synthetic-v2-seed0.tmp-{dead.pid}-abcdef12"
    stale.mkdir()
    (stale / "junk").write_text("x")
    alive = tmp_path / f".synthetic-v2-seed0.tmp-{os.getpid()}-12345678"
    alive.mkdir()
    incomplete = tmp_path / "synthetic-v2-seed0"
    incomplete.mkdir()
    (incomplete / "half.mkv").write_text("x")                     # no DONE: not trusted
    calls: list = []
    monkeypatch.setattr(synthetic, "write_synthetic", _fake_writer(calls))
    root = synthetic.ensure_synthetic(tmp_path, seed=0)
    assert (root / "DONE").is_file() and not (root / "half.mkv").exists()
    assert not stale.exists() and alive.exists()                  # a live writer is left alone
