"""Video decode, and the frame store on Ray Data: counts, timestamps, reuse, bad files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sportray.data import frames as fr
from sportray.data.errors import DataError
from sportray.data.video import decode_at, probe_video, sample_times

FPS = 25


def write_counter_video(path: Path, seconds: float, fps: int = FPS, w: int = 320, h: int = 176) -> None:
    """Frame i is a flat grey of level (i * 2) % 250: the decoded level tells which frame it is."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "qp": "0"}
        for i in range(int(seconds * fps)):
            img = np.full((h, w, 3), (i * 2) % 250, np.uint8)
            for p in s.encode(__import__("av").VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_counter_video(root / "lg" / "2020" / "game-a" / "1_224p.mkv", 6.0)
    write_counter_video(root / "lg" / "2020" / "game-a" / "2_224p.mkv", 4.0)
    (root / "lg" / "2020" / "game-a" / "broken.mkv").write_bytes(b"this is not a video")
    return root


@pytest.fixture(scope="module")
def v2_store(tmp_path_factory):
    """96 smooth random frames in a store of this version (frames.write_store), in row order."""
    rng = np.random.default_rng(0)
    low = rng.integers(0, 255, (96, 14, 25, 3), dtype=np.uint8)
    imgs = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)[:, :fr.FRAME_H, :fr.FRAME_W]
    return fr.write_store(tmp_path_factory.mktemp("v2") / "store", np.ascontiguousarray(imgs), key="test")


def test_probe_reports_what_was_encoded(corpus):
    info = probe_video(corpus / "lg" / "2020" / "game-a" / "1_224p.mkv")
    assert info.codec == "h264"
    assert (info.width, info.height) == (320, 176)
    assert info.frames_per_s == pytest.approx(FPS)
    assert info.duration_s == pytest.approx(6.0, abs=0.1)


def test_decode_at_returns_the_frame_shown_at_each_time(corpus):
    video = corpus / "lg" / "2020" / "game-a" / "1_224p.mkv"
    times = [0.0, 0.52, 1.0, 2.96, 5.0]
    decoded = decode_at(video, times)
    assert [t for t, _ in decoded] == [0, 520, 1000, 2960, 5000]
    for t_s, (_, img) in zip(times, decoded):
        expected_index = round(t_s * FPS)
        assert abs(float(img.mean()) - (expected_index * 2) % 250) <= 2, t_s


def test_dense_samples_decoded_in_one_forward_pass_are_each_the_frame_shown(corpus):
    """One frame every 0.12 s (every third frame) over 6 s: the decode generator is continued from
    sample to sample, never restarted, and still lands on the right frame each time."""
    video = corpus / "lg" / "2020" / "game-a" / "1_224p.mkv"
    times = [round(0.12 * k, 2) for k in range(50)]
    decoded = decode_at(video, times)
    assert [t for t, _ in decoded] == [round(t * 1000) for t in times]
    for t_s, (_, img) in zip(times, decoded):
        assert abs(float(img.mean()) - (round(t_s * FPS) * 2) % 250) <= 2, t_s


def test_sample_times_one_every_interval():
    assert sample_times(10.0, 4.0) == [2.0, 6.0]
    assert sample_times(10.0, 1.0)[:3] == [0.5, 1.5, 2.5]
    assert len(sample_times(10.0, 1.0)) == 10


def test_decoding_past_the_end_names_the_file(corpus):
    video = corpus / "lg" / "2020" / "game-a" / "2_224p.mkv"
    with pytest.raises(DataError, match="2_224p.mkv.*ends before"):
        decode_at(video, [9.0])


@pytest.mark.parametrize("content, reason", [(b"", "empty"), (b"garbage" * 100, "not a readable video")])
def test_bad_files_get_named_errors(tmp_path, content, reason):
    bad = tmp_path / "x.mkv"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=reason) as err:
        probe_video(bad)
    assert "x.mkv" in str(err.value)


def test_store_decodes_through_ray_data_counts_bad_files_and_is_reused(ray_session, corpus, tmp_path):
    sources = fr.parse_sources(str(corpus))
    info = fr.build_store(sources, None, every_s=0.5, data_dir=tmp_path)
    # 6 s and 4 s at one frame every 0.5 s: 12 + 8 frames; the broken file is skipped and listed
    assert info.frames == 20 and info.videos == 2 and not info.reused
    assert [Path(b["path"]).name for b in info.bad_files] == ["broken.mkv"]

    import pyarrow.parquet as pq
    table = pq.read_table(Path(info.path) / "data")
    assert sorted(zip(table["half"].to_pylist(), table["t_ms"].to_pylist())) == \
        sorted([(1, 250 + 500 * i) for i in range(12)] + [(2, 250 + 500 * i) for i in range(8)])
    assert set(table["game"].to_pylist()) == {"lg/2020/game-a"}
    assert table["t_ms"].to_pylist() != sorted(table["t_ms"].to_pylist())  # shuffled at write time

    again = fr.build_store(sources, None, every_s=0.5, data_dir=tmp_path)
    assert again.reused and again.path == info.path

    batches = list(fr.read_store(info.path).iter_torch_batches(batch_size=8, dtypes=None))
    import torch
    assert batches[0]["frame"].dtype == torch.uint8
    assert tuple(batches[0]["frame"].shape) == (8, fr.FRAME_H, fr.FRAME_W, 3)
    assert sum(len(b["frame"]) for b in batches) == 20
    assert len(list(fr.read_store(info.path, max_frames=5).iter_rows())) == 5


def test_store_of_another_version_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 0, "key": "k", "frames": 1, "videos": 1}))
    with pytest.raises(DataError, match="version 0.*rebuild"):
        fr.check_store(tmp_path)


def _v1_store(path: Path) -> Path:
    """A store as version 1 left it: Ray's tensor column (a list<uint8> per frame) + its manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (path / "data").mkdir(parents=True)
    frame = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(2 * fr.FRAME_BYTES, np.uint8)), fr.FRAME_BYTES)
    pq.write_table(pa.table({"frame": frame, "t_ms": [0, 1]}), path / "data" / "0.parquet")
    (path / "manifest.json").write_text(json.dumps({"version": 1, "key": "old", "frames": 2, "videos": 1,
                                                    "every_s": 4.0, "sources": [], "bad_files": []}))
    return path


def test_a_version_1_store_gets_the_rebuild_message_naming_it(ray_session, corpus, tmp_path):
    """Every way in -- reading it for training, an explicit --store, `frames --out` onto it --
    names the old store and says how to rebuild; none of them reads or touches its files."""
    from sportray.config import DataConfig
    from sportray.data import defaults

    old = _v1_store(tmp_path / "old-store")
    before = sorted(p.name for p in old.rglob("*"))
    for attempt in (lambda: fr.read_store(old),
                    lambda: defaults.frame_store(DataConfig(store=str(old), data_dir=str(tmp_path / "d"))),
                    lambda: fr.build_store(fr.parse_sources(str(corpus)), old, every_s=0.5, data_dir=tmp_path)):
        with pytest.raises(DataError, match=r"format version 1, but this sportray reads version 2.*"
                                            r"rebuild it: `sportray frames CORPUS --out NEW_FOLDER`") as err:
            attempt()
        assert str(old) in str(err.value)
    assert sorted(p.name for p in old.rglob("*")) == before


def test_the_same_inputs_build_the_same_store_file_by_file_and_its_frames_are_the_frames_shown(
        ray_session, corpus, tmp_path):
    """Two builds (another folder, the decode tasks finishing in whatever order) give identical
    files; each row's pixels are decode_at's frame at its time; another seed permutes the same frames."""
    import pyarrow.parquet as pq

    sources = fr.parse_sources(str(corpus))
    a = fr.build_store(sources, tmp_path / "a", every_s=0.5, data_dir=tmp_path)
    b = fr.build_store(sources, tmp_path / "b", every_s=0.5, data_dir=tmp_path)
    files = sorted(p.name for p in (Path(a.path) / "data").iterdir())
    assert files == sorted(p.name for p in (Path(b.path) / "data").iterdir())
    for name in files:
        assert (Path(a.path) / "data" / name).read_bytes() == (Path(b.path) / "data" / name).read_bytes()

    rows = pq.read_table(Path(a.path) / "data").to_pylist()
    pixels = fr.decode_frames(pq.read_table(Path(a.path) / "data").column("frame"), fr.FRAME_CODEC)
    for row, img in zip(rows, pixels):
        [(t_ms, shown)] = decode_at(Path(row["source"]) / row["video"], [row["t_ms"] / 1000])
        assert t_ms == row["t_ms"] and np.array_equal(img, fr.fit_frame(shown))

    other = pq.read_table(Path(fr.build_store(sources, tmp_path / "c", every_s=0.5, data_dir=tmp_path,
                                              seed=1).path) / "data").to_pylist()
    key = lambda r: (r["video"], r["t_ms"])  # noqa: E731
    assert [key(r) for r in other] != [key(r) for r in rows]
    assert sorted(map(key, other)) == sorted(map(key, rows))


def test_a_truncated_video_is_listed_once_and_the_others_are_stored(ray_session, corpus, tmp_path):
    """A file that probes (its header says 6 s) but whose stream ends at half: listed once among
    the bad files with the reason, none of its frames stored, the other videos complete."""
    import pyarrow.parquet as pq

    root = tmp_path / "c"
    root.mkdir()
    good = corpus / "lg" / "2020" / "game-a" / "2_224p.mkv"
    (root / "good.mkv").write_bytes(good.read_bytes())
    data = (corpus / "lg" / "2020" / "game-a" / "1_224p.mkv").read_bytes()
    (root / "cut.mkv").write_bytes(data[: len(data) // 2])
    info = fr.build_store(fr.parse_sources(str(root)), None, every_s=0.5, data_dir=tmp_path)
    assert [(Path(b["path"]).name, "stream ends before" in b["reason"]) for b in info.bad_files] == [("cut.mkv", True)]
    assert info.videos == 1 and info.frames == 8
    assert set(pq.read_table(Path(info.path) / "data")["video"].to_pylist()) == {"good.mkv"}


def test_direct_decoding_without_a_store(ray_session, corpus):
    ds, bad = fr.decoded_dataset(fr.parse_sources(str(corpus)), every_s=1.0)
    assert len(bad) == 1
    assert ds.count() == 6 + 4


def test_a_store_read_as_one_stream_repeats_whole_batch_epochs_and_stops_at_the_last_step(ray_session, v2_store):
    """run_pretrain's stream of a store: epochs back to back, each cut to whole batches and in the
    same order as one plain read of the store (so a run's batches do not change), ending after
    exactly `steps` batches: no frame is read that no step uses."""
    store = v2_store
    one = np.concatenate([b["frame"] for b in fr.read_store(store, seed=3).iter_batches(batch_size=None)])
    steps, batch = 20, 10
    ds, per_epoch = fr.stream_store(fr.read_store(store, seed=3), steps=steps, batch=batch)
    assert per_epoch == len(one) // batch
    assert steps % per_epoch, "the store should make the last epoch a partial one"
    stream = np.concatenate([b["frame"] for b in ds.iter_batches(batch_size=None)])
    assert len(stream) == steps * batch
    epoch_frames = per_epoch * batch
    for start in range(0, len(stream), epoch_frames):
        part = stream[start:start + epoch_frames]
        assert np.array_equal(part, one[:len(part)])
    assert fr.stream_store(ray_items_dataset(), steps=2, batch=1) is None
    with pytest.raises(DataError, match="fewer than one step's batch"):
        fr.stream_store(fr.read_store(store), steps=1, batch=len(one) + 1)


def test_write_store_and_read_store_round_trip_every_pixel_in_order(ray_session, v2_store):
    rng = np.random.default_rng(0)
    low = rng.integers(0, 255, (96, 14, 25, 3), dtype=np.uint8)
    imgs = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)[:, :fr.FRAME_H, :fr.FRAME_W]
    read = np.concatenate([b["frame"] for b in fr.read_store(v2_store).iter_batches(batch_size=None)])
    assert read.dtype == np.uint8 and np.array_equal(read, imgs)
    [file] = (v2_store / "data").glob("*.parquet")     # 96 rows in row groups of 64: 50..79 spans two
    part = list(fr.iter_store_file(str(file), fr.FRAME_CODEC, start=50, rows=30, chunk=7))
    assert [len(p) for p in part] == [7, 7, 7, 7, 2] and np.array_equal(np.concatenate(part), imgs[50:80])
    assert fr.check_store(v2_store)["frame_codec"] == fr.FRAME_CODEC


def ray_items_dataset():
    import ray
    return ray.data.from_items([{"x": 1}])
