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


def test_direct_decoding_without_a_store(ray_session, corpus):
    ds, bad = fr.decoded_dataset(fr.parse_sources(str(corpus)), every_s=1.0)
    assert len(bad) == 1
    assert ds.count() == 6 + 4


def test_a_store_read_as_one_stream_repeats_whole_batch_epochs_and_stops_at_the_last_step(store):
    """run_pretrain's stream of a store: epochs back to back, each cut to whole batches and in the
    same order as one plain read of the store (so a run's batches do not change), ending after
    exactly `steps` batches: no frame is read that no step uses."""
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


def ray_items_dataset():
    import ray
    return ray.data.from_items([{"x": 1}])
