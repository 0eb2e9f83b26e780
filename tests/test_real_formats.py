"""The datasets as they are published (issue 14), from the real public label and annotation files
in ../shared/real-formats/ (read there at test time, never copied into the project) with pixels
synthesized here: DeepSportRadar's challenge layout, its COCO files and unlabelled images;
SoccerNet's official split lists, "not shown" events, label quirks; probe sets written by Ray
tasks into memory-mapped files with what they were built from."""
from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from sportray import tasks, tracking
from sportray.config import ConfigError, DataConfig
from sportray.data import deepsportradar as dsr
from sportray.data import probesets, soccernet
from sportray.data.errors import DataError
from sportray.data.inspect import inspect

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-formats"
ANNOTATIONS = REAL / "deepsportradar" / "annotations"
SOCCERNET = REAL / "soccernet"
SPLIT_LISTS = REAL / "soccernet-splits"

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"real-format files not found at {REAL}")

# ----------------------------------------------------------------------------- the real files' facts

# {COCO file: (images, labelled images, masks)}, counted from the published json
COCO_COUNTS = {"challenge": (84, 0, 0), "test": (64, 56, 477), "train": (223, 214, 1674),
               "trainval": (260, 251, 2018), "trainvaltest": (324, 307, 2495), "val": (37, 37, 344)}
# the six games: (official split, annotations, "not shown")
GAMES = {
    "england_epl/2014-2015/2015-05-17 - 18-00 Manchester United 1 - 1 Arsenal": ("test", 173, 19),
    "england_epl/2016-2017/2017-05-13 - 14-30 Manchester City 2 - 1 Leicester": ("train", 237, 39),
    "europe_uefa-champions-league/2016-2017/2016-10-19 - 21-45 Barcelona 4 - 0 Manchester City":
        ("train", 216, 45),
    "italy_serie-a/2015-2016/2015-08-29 - 21-45 AC Milan 2 - 1 Empoli": ("test", 269, 44),
    "italy_serie-a/2016-2017/2016-10-02 - 21-45 AS Roma 2 - 1 Inter": ("test", 243, 41),
    "spain_laliga/2015-2016/2015-12-20 - 18-00 Real Madrid 1 - 0 Rayo Vallecano": ("valid", 264, 58),
}
MILAN = "italy_serie-a/2015-2016/2015-08-29 - 21-45 AC Milan 2 - 1 Empoli"


# ----------------------------------------------------------------------------- synthesized pixels

def _png(path: Path, width: int, height: int) -> None:
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 90)], -1).astype(np.uint8)
    Image.fromarray(img).save(path, compress_level=1)


@pytest.fixture(scope="module")
def challenge_repo(tmp_path_factory):
    """The challenge repository as published: annotations/ (the real json, linked) and every
    listed image under basketball-instants-dataset/ (synthesized, the size the json says)."""
    root = tmp_path_factory.mktemp("instance-segmentation-challenge")
    (root / "annotations").mkdir()
    for f in ANNOTATIONS.glob("*.json"):
        (root / "annotations" / f.name).symlink_to(f)
    images = root / dsr.IMAGES_DIR
    made: dict = {}
    for f in sorted(ANNOTATIONS.glob("*.json")):
        for im in json.loads(f.read_text())["images"]:
            dest = images / im["file_name"]
            if dest.exists():
                continue
            size = (im["width"], im["height"])
            if size not in made:
                made[size] = tmp_path_factory.mktemp("png") / "x.png"
                _png(made[size], *size)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(made[size], dest)
    return root


def _h264(path: Path, seconds: int, fps: int = 1) -> None:
    """A tiny H.264 .mkv whose frame k shows k: left half grey (k % 64) * 4, right (k // 64) * 4."""
    import av

    container = av.open(str(path), mode="w", format="matroska")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 64, 36, "yuv420p"
    stream.options = {"preset": "ultrafast", "crf": "10"}
    stream.codec_context.gop_size = 20
    for k in range(seconds * fps):
        img = np.empty((36, 64, 3), np.uint8)
        img[:, :32] = (k % 64) * 4
        img[:, 32:] = (k // 64) * 4
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = k, Fraction(1, fps)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def _frame_index(image: np.ndarray) -> int:
    left, right = image[100:124, 20:90].mean(), image[100:124, 134:204].mean()
    return int(round(right / 4)) * 64 + int(round(left / 4))


def _soccernet_root(tmp_path: Path, game_ids, with_lists: bool = False, videos: bool = False) -> Path:
    """A SoccerNet root of the given real games (their Labels-v2.json linked), with synthesized
    halves long enough for every position, and the official split lists when asked."""
    root = tmp_path / "SoccerNet"
    for gid in game_ids:
        folder = root / gid
        folder.mkdir(parents=True)
        (folder / soccernet.LABELS_FILE).symlink_to(SOCCERNET / gid / soccernet.LABELS_FILE)
        if videos:
            events = soccernet.read_labels(folder / soccernet.LABELS_FILE)
            for half in (1, 2):
                end_s = max(e.position_ms for e in events if e.half == half) // 1000 + 3
                _h264(folder / f"{half}_224p.mkv", end_s)
    if with_lists:
        for name in soccernet.OFFICIAL_SPLIT_FILES.values():
            (root / name).symlink_to(SPLIT_LISTS / name)
    return root


# ----------------------------------------------------------------------------- DeepSportRadar

def test_challenge_layout_is_read_as_published(challenge_repo):
    summary, problems = inspect(challenge_repo)
    assert problems == []
    d = summary["deepsportradar"]
    assert d["probe_coco"] == "annotations/trainvaltest.json"
    assert d["images_root"] == [str(challenge_repo / dsr.IMAGES_DIR)]
    assert {Path(k).stem: (v["images"], v["labelled"], v["masks"]) for k, v in d["per_file"].items()} \
        == COCO_COUNTS
    assert (d["images"], d["labelled"], d["unlabelled"]) == (408, 307, 101)
    assert len(d["unlabelled_images"]) == 101 and len(d["arenas"]) == 20


def test_the_coco_file_is_explicit_and_unlabelled_images_are_not_probe_data(challenge_repo):
    assert dsr.choose_coco(challenge_repo) == challenge_repo / "annotations" / "trainvaltest.json"
    for name, (images, labelled, masks) in COCO_COUNTS.items():
        samples = dsr.read_dataset(challenge_repo, coco_file=name)
        assert (len(samples), sum(s.labelled for s in samples),
                sum(len(s.annotations) for s in samples)) == (images, labelled, masks), name
        assert len(dsr.read_dataset(challenge_repo, coco_file=name, labelled_only=True)) == labelled
    assert dsr.choose_coco(challenge_repo, "val.json").name == "val.json"
    with pytest.raises(ConfigError, match=r"no trainvaltest2\.json in .*annotations .*challenge\.json"):
        dsr.choose_coco(challenge_repo, "trainvaltest2")
    with pytest.raises(DataError, match=r"challenge\.json: no labelled images \(84 images"):
        probesets.build_basketball(challenge_repo, challenge_repo / "out", coco_file="challenge")


def test_an_images_root_elsewhere_is_named_or_reported(challenge_repo, tmp_path):
    repo = tmp_path / "repo"
    (repo / "annotations").mkdir(parents=True)
    (repo / "annotations" / "val.json").symlink_to(ANNOTATIONS / "val.json")
    _, problems = inspect(repo)
    assert len(problems) == 37
    assert "image file missing (listed in val.json" in problems[0].reason
    assert "--basketball-images" in problems[0].reason
    summary, problems = inspect(repo, basketball_images=str(challenge_repo / dsr.IMAGES_DIR))
    assert problems == [] and summary["deepsportradar"]["labelled"] == 37
    samples = dsr.read_dataset(repo, images_root=challenge_repo / dsr.IMAGES_DIR)
    assert len(samples) == 37 and all(s.image_path.is_file() for s in samples)


def test_basketball_probe_set_from_the_published_layout(ray_session, challenge_repo, tmp_path, monkeypatch):
    """A slice of the real trainvaltest.json (1 labelled image per arena, and all 17 unlabelled
    ones) in the published layout: unlabelled images are counted and left out, the COCO file
    and images root are recorded, images are memory-mapped, the rows match the serial rule."""
    doc = json.loads((ANNOTATIONS / "trainvaltest.json").read_text())
    labelled_ids = {a["image_id"] for a in doc["annotations"]}
    per_arena: dict = {}
    keep = []
    for im in doc["images"]:
        arena = im["file_name"].split("/")[0]
        if im["id"] not in labelled_ids or per_arena.get(arena, 0) < 1:
            keep.append(im)
            per_arena[arena] = per_arena.get(arena, 0) + (im["id"] in labelled_ids)
    ids = {im["id"] for im in keep}
    repo = tmp_path / "repo"
    (repo / "annotations").mkdir(parents=True)
    (repo / dsr.IMAGES_DIR).symlink_to(challenge_repo / dsr.IMAGES_DIR, target_is_directory=True)
    (repo / "annotations" / "slice.json").write_text(json.dumps(
        {**doc, "images": keep, "annotations": [a for a in doc["annotations"] if a["image_id"] in ids]}))
    monkeypatch.setattr(probesets, "BASKETBALL_CHUNK", 4)
    monkeypatch.setattr(probesets, "MAX_IN_FLIGHT", 2)
    out = probesets.build_basketball(repo, tmp_path / "sets", coco_file="slice")
    got = probesets.load(out)
    meta = probesets.describe(out)
    n = 15
    assert meta["coco_file"] == str((repo / "annotations" / "slice.json").resolve())
    assert meta["images_root"] == str(repo / dsr.IMAGES_DIR)
    assert (meta["images"], meta["unlabelled"]) == (n + 17, 17)
    assert meta["test_arenas"] == list(dsr.DEFAULT_TEST_ARENAS)
    assert isinstance(got["images"], np.memmap) and got["images"].shape == (n, 224, 224, 3)
    assert got["masks"].shape == (n, 224, 224) and got["tiles"].shape == (n, 14, 14)
    unlabelled = {im["file_name"] for im in keep if im["id"] not in labelled_ids}
    assert not any(name.split(dsr.IMAGES_DIR + "/")[1] in unlabelled for name in got["name"])
    samples = {str(s.image_path): s for s in dsr.read_dataset(repo, coco_file="slice", labelled_only=True)}
    for i in (0, n // 2, n - 1):
        img, mask, tiles = probesets._load_basketball_item(samples[str(got["name"][i])])
        np.testing.assert_array_equal(got["images"][i], img)
        np.testing.assert_array_equal(got["masks"][i], mask)
        np.testing.assert_array_equal(got["tiles"][i], tiles)
    assert got["tiles"].sum() > 0
    tags = tracking.probe_tags({"probe_sets": tasks.set_tags(tasks.resolve("basketball"), {"basketball": out})})
    assert tags["sportray.probeset.basketball.coco_file"].endswith("annotations/slice.json")
    assert tags["sportray.probeset.basketball.unlabelled_left_out"] == "17"


def test_coco_quirks_are_notes(challenge_repo, tmp_path):
    doc = json.loads((ANNOTATIONS / "val.json").read_text())
    doc["annotations"][3]["iscrowd"] = 1
    doc["images"].append({**doc["images"][0], "file_name": doc["images"][1]["file_name"]})
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "val.json").write_text(json.dumps(doc))
    summary, problems = inspect(tmp_path, basketball_images=str(challenge_repo / dsr.IMAGES_DIR))
    assert problems == []
    reasons = [n["reason"] for n in summary["notes"]]
    assert len(reasons) == 2
    assert f"duplicate image id {doc['images'][0]['id']}: image #37" in reasons[0]
    assert "annotation #3" in reasons[1] and "iscrowd mask" in reasons[1]
    assert summary["deepsportradar"]["labelled"] == 37       # the duplicate is not a second image


# ----------------------------------------------------------------------------- SoccerNet

def test_every_event_counted_and_the_quirks_are_notes():
    notes = []
    for gid, (_split, n, not_shown) in GAMES.items():
        labels = SOCCERNET / gid / soccernet.LABELS_FILE
        events = soccernet.read_labels(labels)
        assert len(events) == n and sum(e.visibility == "not shown" for e in events) == not_shown
        notes += [(gid, x.reason) for x in soccernet.label_notes(labels, events)]
    assert notes == [
        (MILAN, "annotation #26 (Ball out of play, 1 - 06:45): gameTime disagrees with position "
                "373576 ms (06:13); position wins"),
        (MILAN, "annotation #69 (Ball out of play, 1 - 22:11): duplicate of annotation #68 (taken once)")]


def test_out_of_order_events_are_a_note(tmp_path):
    doc = json.loads((SOCCERNET / MILAN / soccernet.LABELS_FILE).read_text())
    doc["annotations"][10], doc["annotations"][11] = doc["annotations"][11], doc["annotations"][10]
    (tmp_path / "Labels-v2.json").write_text(json.dumps(doc))
    events = soccernet.read_labels(tmp_path / "Labels-v2.json")
    reasons = [x.reason for x in soccernet.label_notes(tmp_path / "Labels-v2.json", events)]
    assert len(reasons) == 3 and "annotation #11" in reasons[0] and "out of order" in reasons[0]


def test_each_game_in_its_official_split(tmp_path):
    root = _soccernet_root(tmp_path, GAMES, with_lists=True)
    extra = root / "germany_bundesliga" / "2015-2016" / "2015-09-12 - 16-30 Not A Listed Game"
    extra.mkdir(parents=True)
    (extra / soccernet.LABELS_FILE).symlink_to(SOCCERNET / MILAN / soccernet.LABELS_FILE)
    games = soccernet.find_games(root)
    plan = soccernet.plan_splits(games, root=root)                     # the root holds the lists
    assert plan.source == "official" and plan.lists == str(root)
    assert {g.id: s for s, gs in plan.splits.items() for g in gs} == {g: v[0] for g, v in GAMES.items()}
    assert len(plan.missing) == 500 - 6
    assert plan.unlisted == ("germany_bundesliga/2015-2016/2015-09-12 - 16-30 Not A Listed Game",)
    six = [g for g in games if g.id in GAMES]
    given = soccernet.plan_splits(six, lists_dir=SPLIT_LISTS)          # or a given folder
    assert given.splits == plan.splits and given.lists == str(SPLIT_LISTS)
    seeded = soccernet.plan_splits(six, seed=0)
    assert seeded.source == "seeded" and "seed 0" in seeded.describe()
    with pytest.raises(DataError, match="no split lists here"):
        soccernet.plan_splits(games, lists_dir=tmp_path)

    summary, _ = inspect(root)
    split = summary["soccernet"]["split"]
    assert split["source"] == "official" and split["games"] == {"train": 2, "valid": 1, "test": 3}
    assert split["listed_missing"] == 494 and split["unlisted"] == list(plan.unlisted)
    assert summary["soccernet"]["visibility"] == {"not shown": 246 + 44, "visible": 1156 + 225}


def test_soccer_probe_set_follows_official_splits_and_leaves_out_not_shown(ray_session, tmp_path,
                                                                          monkeypatch):
    """Two real games (an official test game and a train game) with synthesized halves: the
    probe's splits are the official ones, "not shown" events are left out (counted) unless asked
    for, each row is the frame at its event's position, built by Ray tasks in chunks."""
    test_game, train_game = MILAN, "england_epl/2016-2017/2017-05-13 - 14-30 Manchester City 2 - 1 Leicester"
    root = _soccernet_root(tmp_path, [test_game, train_game], videos=True)
    monkeypatch.setattr(probesets, "SOCCER_CHUNK", 50)
    monkeypatch.setattr(probesets, "MAX_IN_FLIGHT", 3)
    out = probesets.build_soccer(root, tmp_path / "sets", split_lists=str(SPLIT_LISTS))
    got, meta = probesets.load(out), probesets.describe(out)
    visible = {g: sum(e.visibility == "visible" for e in soccernet.unique_events(
        soccernet.read_labels(SOCCERNET / g / soccernet.LABELS_FILE))) for g in (test_game, train_game)}
    assert visible == {test_game: 224, train_game: 198}
    assert isinstance(got["images"], np.memmap) and len(got["images"]) == 224 + 198
    assert {g: set(got["split"][got["game"] == g]) for g in (test_game, train_game)} == \
        {test_game: {"test"}, train_game: {"train"}}
    assert (meta["split"], meta["split_lists"]) == ("official", str(SPLIT_LISTS))
    assert (meta["not_shown"], meta["duplicates_dropped"]) == (44 + 39, 1)
    assert meta["events"] == {"train": 198, "valid": 0, "test": 224}
    decoded = np.array([_frame_index(im) for im in got["images"]])
    assert np.abs(decoded - got["position_ms"] / 1000).max() <= 1.0
    tags = tracking.probe_tags({"probe_sets": tasks.set_tags(tasks.resolve("soccer"), {"soccer": out})})
    assert tags["sportray.probeset.soccer.split"] == "official"
    assert tags["sportray.probeset.soccer.not_shown"] == "left out (83)"

    with_hidden = probesets.build_soccer(root, tmp_path / "sets", split_lists=str(SPLIT_LISTS),
                                         include_not_shown=True)
    assert with_hidden != out and len(probesets.load(with_hidden)["label"]) == 224 + 198 + 83
    assert probesets.build_soccer(root, tmp_path / "sets", split_lists=str(SPLIT_LISTS)) == out  # cached


def test_the_options_are_dataconfig_fields_and_flags(challenge_repo, capsys):
    from sportray.cli import build_parser, main

    fields = DataConfig.__dataclass_fields__
    for name in ("basketball_coco", "basketball_images", "soccer_splits", "soccer_include_not_shown"):
        assert name in fields
    args = build_parser().parse_args(["probe", "--reference", "random", "--basketball-coco", "val",
                                      "--basketball-images", "/imgs", "--soccer-splits", "/lists",
                                      "--soccer-include-not-shown"])
    assert (args.basketball_coco, args.basketball_images, args.soccer_splits,
            args.soccer_include_not_shown) == ("val", "/imgs", "/lists", True)
    assert DataConfig(basketball_coco="val").absolute().basketball_coco == "val"     # a name stays a name
    assert main(["inspect", str(challenge_repo), "--basketball-coco", "val"]) == 0
    assert json.loads(capsys.readouterr().out)["deepsportradar"]["probe_coco"] == "annotations/val.json"
