"""`inspect`: summaries of a good corpus, and one problem (file + reason) per bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sportray.config import SOCCER_CLASSES
from sportray.data import soccernet
from sportray.data.inspect import check_video, inspect, problems_json


@pytest.fixture()
def corpus(tiny_synthetic, tmp_path) -> Path:
    """A private copy of the tiny synthetic corpus that a test may damage."""
    return Path(shutil.copytree(tiny_synthetic, tmp_path / "corpus"))


def _games(root: Path):
    return soccernet.find_games(root / "soccernet")


def _find(problems, name: str, reason: str):
    hits = [p for p in problems if name in str(p) and reason in str(p)]
    assert hits, f"no problem naming {name!r} with {reason!r} in {[str(p) for p in problems]}"
    return hits


def test_good_corpus_summary(tiny_synthetic):
    from conftest import TINY

    summary, problems = inspect(tiny_synthetic)
    assert problems == [] and summary["problems"] == 0
    assert summary["kinds"] == ["soccernet", "deepsportradar"]
    sn = summary["soccernet"]
    assert sn["games"] == TINY["n_games"] and sn["halves"] == 2 * TINY["n_games"]
    assert list(sn["events_per_class"]) == list(SOCCER_CLASSES)            # all 17, zeros too
    assert sum(sn["events_per_class"].values()) == sn["events"] > 0
    assert len(summary["videos"]) == 2 * TINY["n_games"]
    for v in summary["videos"]:
        assert (v["codec"], v["width"], v["height"], v["fps"]) == ("h264", 398, 224, 25.0)
        assert v["duration_s"] == pytest.approx(TINY["half_s"], abs=0.05)
        assert v["path"].startswith("soccernet/") and v["path"].endswith("_224p.mkv")
    d = summary["deepsportradar"]
    assert d["json_files"] == ["deepsportradar/trainvaltest.json"]
    assert d["images"] == TINY["n_arenas"] * TINY["images_per_arena"]
    assert len(d["arenas"]) == TINY["n_arenas"]
    assert all(a["images"] == TINY["images_per_arena"] and a["masks"] > a["images"]
               for a in d["arenas"].values())
    json.dumps(summary)                                                    # JSON-serializable


def test_bad_videos_one_problem_each(corpus):
    g0, g1, g2, g3 = _games(corpus)[:4]
    trunc = g0.videos[1]
    data = trunc.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])                               # cut in half
    g0.videos[2].write_bytes(b"")                                           # zero bytes
    g1.videos[1].write_text("this is not a video, only named like one")    # not a video
    _audio_only(g1.videos[2])                                               # no video stream
    g2.videos[2].unlink()                                                   # missing half
    summary, problems = inspect(corpus)
    _find(problems, f"{g0.name}/1_224p.mkv", "truncated")
    _find(problems, f"{g0.name}/2_224p.mkv", "file is empty (0 bytes)")
    _find(problems, f"{g1.name}/1_224p.mkv", "not a readable video")
    _find(problems, f"{g1.name}/2_224p.mkv", "has no video stream")
    _find(problems, g2.name, "half 2 video missing")
    assert len(problems) == 5, problems_json(problems)
    assert summary["videos_ok"] == summary["video_files"] - 4
    assert summary["problems"] == 5


def test_check_video_detects_truncation_in_the_header_duration(tiny_synthetic, tmp_path):
    src = _games(Path(tiny_synthetic))[0].videos[1]
    info = check_video(src)
    assert info.duration_s > 0
    cut = tmp_path / "cut.mkv"
    data = src.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.8)])
    from sportray.data.errors import DataError

    with pytest.raises(DataError) as ei:
        check_video(cut)
    assert "cut.mkv" in str(ei.value) and "truncated" in str(ei.value)


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_bad_labels_one_problem_each(corpus):
    g0, g1, g2, g3 = _games(corpus)[:4]
    g0.labels.write_text("{ not json")
    g1.labels.unlink()
    doc = json.loads(g2.labels.read_text())
    doc["annotations"][0]["label"] = "Handball"
    doc["annotations"][1]["position"] = "99999999"                          # beyond the half
    g2.labels.write_text(json.dumps(doc))
    doc = json.loads(g3.labels.read_text())
    doc["annotations"][0]["gameTime"] = "1 -- 00:10"
    g3.labels.write_text(json.dumps(doc))
    summary, problems = inspect(corpus)
    _find(problems, f"{g0.name}/Labels-v2.json", "not JSON")
    _find(problems, f"{g1.name}/Labels-v2.json", "missing")
    _find(problems, f"{g2.name}/Labels-v2.json", "annotation #0: unknown label 'Handball'")
    _find(problems, f"{g2.name}/Labels-v2.json", "annotation #1")[0]
    assert any("beyond the duration" in str(p) for p in problems)
    _find(problems, f"{g3.name}/Labels-v2.json", "gameTime '1 -- 00:10' is malformed")
    assert len(problems) == 5, problems_json(problems)
    assert summary["soccernet"]["labels_files"] == summary["soccernet"]["games"] - 1


def test_bad_coco_one_problem_each(corpus):
    root = corpus / "deepsportradar"
    coco = root / "trainvaltest.json"
    doc = json.loads(coco.read_text())
    first = doc["images"][0]["file_name"]
    (root / first).unlink()                                                  # missing image
    doc["annotations"][-1]["segmentation"]["size"] = [10, 10]               # RLE size
    del doc["annotations"][-2]["segmentation"]                             # no segmentation
    coco.write_text(json.dumps(doc))
    (root / "val.json").write_text(json.dumps({"images": [], "categories": []}))   # no annotations
    (root / "test.json").write_text("{broken")
    summary, problems = inspect(corpus)
    _find(problems, first, "image file missing")
    _find(problems, "trainvaltest.json", "RLE size [10, 10] differs")
    _find(problems, "trainvaltest.json", "has no 'segmentation'")
    _find(problems, "val.json", "'annotations' list missing")
    _find(problems, "test.json", "not JSON")
    assert len(problems) == 5, problems_json(problems)


def test_no_human_category(corpus):
    coco = corpus / "deepsportradar" / "trainvaltest.json"
    doc = json.loads(coco.read_text())
    doc["categories"] = [{"id": 0, "name": "player"}]
    coco.write_text(json.dumps(doc))
    _, problems = inspect(corpus / "deepsportradar")
    _find(problems, "trainvaltest.json", "no 'human' category")


def test_plain_folder_of_videos(tiny_synthetic, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    games = _games(Path(tiny_synthetic))
    shutil.copy(games[0].videos[1], folder / "match_a.mkv")
    (folder / "sub").mkdir()
    shutil.copy(games[1].videos[2], folder / "sub" / "b.mp4.mkv")
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    summary, problems = inspect(folder)
    assert summary["kinds"] == ["videos"]
    assert [v["path"] for v in summary["videos"]] == ["match_a.mkv", "sub/b.mp4.mkv"]
    assert len(problems) == 1
    _find(problems, "broken.mp4", "not a readable video")


def test_empty_and_missing(tmp_path):
    _, problems = inspect(tmp_path / "nope")
    _find(problems, "nope", "does not exist")
    (tmp_path / "empty").mkdir()
    _, problems = inspect(tmp_path / "empty")
    _find(problems, "empty", "no SoccerNet games, DeepSportRadar COCO json or videos found")
