"""The frame store: sampled video frames decoded once with Ray Data, read back by every trial.

    list videos -> probe (Ray tasks) -> segments of sampled times -> PyAV decode (Ray Data
    map_batches, one decoder thread per task) -> random_shuffle -> Parquet shards

Format (version STORE_VERSION): Parquet files with columns
    frame  uint8 tensor (FRAME_H, FRAME_W, 3)   raw RGB, fixed shape so batches stack freely
    source str   which corpus root the frame came from
    video  str   path relative to its source root
    game   str   SoccerNet game id ("league/season/game") or "" for plain folders
    half   int   1/2 for SoccerNet halves, 0 otherwise
    t_ms   int   time of the frame in its video
plus manifest.json, written last: a store without it is incomplete and is rebuilt.

Why raw uint8 and not JPEG: a raw frame needs no CPU on the read side (the trainer's data path
must stay cheap: DESIGN.md §1), and Parquet's zstd compresses the flat pitch well. The cost is
disk: 267 KB per frame before compression. BENCHMARKS.md has the measured sizes and rates.

Why shuffle at write time: Ray Data's `local_shuffle_buffer_size` costs up to 7x read
throughput; a store shuffled once lets every epoch stream files in a seeded file order.

Content addressing: the store key hashes the inputs (each video's relative path, size, mtime
and a hash of its first MiB and last 64 KiB -- the container's header and index, where an edit
that keeps size and mtime still shows --, the source weights, the sampling interval, the write
shuffle's seed, the frame size and STORE_VERSION), so a second call with the same inputs finds and
reuses the finished store, and any other input builds another.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sportray.data.errors import DataError
from sportray.data.video import decode_at, list_videos, probe_video, sample_times
from sportray.storage import pid_alive

STORE_VERSION = 1
OWNER_FILE = ".sportray-build.json"    # in a build's temporary folder: which process builds it
FRAME_H = 224
FRAME_W = 398          # 16:9 at 224p, SoccerNet's 224p resolution
SEGMENT_FRAMES = 32    # sampled frames per decode task: ~8.5 MB raw blocks (DESIGN.md: avoid huge blocks)


@dataclass(frozen=True)
class Source:
    """A corpus root (SoccerNet tree or any folder of videos) and its sampling weight.

    The weight multiplies the sampling density: weight 2 samples a frame every every_s / 2
    seconds from this source, so a small extra sport can be up-weighted in a mixed corpus.
    """
    root: str
    weight: float = 1.0


def parse_sources(corpus: str, extra: str = "") -> list[Source]:
    """'DIR' plus 'DIR[:WEIGHT],DIR[:WEIGHT]' -> sources (weights default to 1)."""
    sources = [Source(str(Path(corpus)))]
    for item in filter(None, (s.strip() for s in extra.split(","))):
        root, _, weight = item.rpartition(":") if ":" in item else (item, "", "1")
        try:
            w = float(weight)
        except ValueError:
            raise DataError(item, f"--extra-sources weight {weight!r} is not a number") from None
        if w <= 0:
            raise DataError(item, f"--extra-sources weight {w} must be positive")
        sources.append(Source(str(Path(root)), w))
    for s in sources:
        if not Path(s.root).exists():
            raise DataError(s.root, "corpus directory does not exist")
    return sources


@dataclass
class StoreInfo:
    path: str
    key: str
    frames: int
    videos: int
    bad_files: list[dict] = field(default_factory=list)
    reused: bool = False
    seconds: float = 0.0


def _game_of(rel: Path) -> tuple[str, int]:
    """SoccerNet layout league/season/game/{1,2}_224p.mkv -> (game id, half)."""
    parts = rel.parts
    stem = rel.stem.split("_")[0]
    if len(parts) >= 4 and stem in ("1", "2"):
        return "/".join(parts[-4:-1]), int(stem)
    return "", 0


HEAD_BYTES, TAIL_BYTES = 1 << 20, 64 << 10   # what of each video the store key reads


def _content_sample(path: Path, size: int) -> bytes:
    """sha256 of a video's first MiB and last 64 KiB: its container header and (MP4 with the moov
    atom at the end, MKV cues) its index. Reading 1.06 MiB per video keeps the key cheap on a
    300-hour corpus (BENCHMARKS.md) while an edit that keeps size and mtime still changes it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(HEAD_BYTES))
        if size > HEAD_BYTES:
            f.seek(max(HEAD_BYTES, size - TAIL_BYTES))
            h.update(f.read(TAIL_BYTES))
    return h.digest()


def store_key(sources: list[Source], every_s: float, seed: int = 0) -> str:
    """The content address of the store these inputs make (module docstring)."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": STORE_VERSION, "every_s": every_s, "seed": seed,
                         "frame": [FRAME_H, FRAME_W]}).encode())
    for s in sources:
        h.update(f"\0source {s.weight}\0".encode())
        for p in list_videos(s.root):
            st = p.stat()
            name = p.relative_to(s.root) if p != Path(s.root) else p.name
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            h.update(_content_sample(p, st.st_size) + b"\n")
    return h.hexdigest()[:16]


def clean_stale_builds(path: Path) -> list[Path]:
    """Remove the temporary folders of this store's builds that died (a crash, a kill -9): those
    whose owner file names a process of this host that no longer runs. A build still running,
    on this host or another, is left alone. Returns what was removed."""
    removed = []
    for tmp in path.parent.glob(path.name + ".tmp-*"):
        try:
            owner = json.loads((tmp / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue        # no owner file: not ours to judge
        if owner.get("host") != socket.gethostname() or pid_alive(int(owner.get("pid", 0))):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def fit_frame(img: np.ndarray) -> np.ndarray:
    """Any HxWx3 frame -> FRAME_H x FRAME_W: scale to cover, centre-crop (aspect kept)."""
    from sportray.data.video import resize_to

    h, w = img.shape[:2]
    if (h, w) == (FRAME_H, FRAME_W):
        return img
    scale = max(FRAME_H / h, FRAME_W / w)
    nh, nw = max(FRAME_H, round(h * scale)), max(FRAME_W, round(w * scale))
    img = resize_to(img, nh, nw)
    top, left = (nh - FRAME_H) // 2, (nw - FRAME_W) // 2
    return np.ascontiguousarray(img[top:top + FRAME_H, left:left + FRAME_W])


def _probe_task(root: str, path: str, every_s: float):
    try:
        info = probe_video(path)
    except DataError as err:
        return {"path": path, "error": err.reason}
    return {"path": path, "root": root, "times": sample_times(info.duration_s, every_s),
            "duration_s": info.duration_s}


def plan_segments(sources: list[Source], every_s: float) -> tuple[list[dict], list[dict]]:
    """Probe every video in parallel Ray tasks; return (segments, bad_files)."""
    import ray

    probe = ray.remote(num_cpus=0.5)(_probe_task)
    refs = []
    for s in sources:
        for p in list_videos(s.root):
            refs.append(probe.remote(s.root, str(p), every_s / s.weight))
    segments, bad = [], []
    for res in ray.get(refs):
        if "error" in res:
            bad.append({"path": res["path"], "reason": res["error"]})
            continue
        rel = Path(res["path"]).relative_to(res["root"]) if res["path"] != res["root"] else Path(res["path"]).name
        game, half = _game_of(Path(rel))
        times = res["times"]
        for i in range(0, len(times), SEGMENT_FRAMES):
            segments.append({"path": res["path"], "source": res["root"], "video": str(rel),
                             "game": game, "half": half,
                             "times": json.dumps(times[i:i + SEGMENT_FRAMES])})
    return segments, bad


def decode_segments(batch: dict, error_dir: str | None = None) -> dict:
    """Ray Data UDF: one row per segment in, one row per decoded frame out.

    A segment that fails to decode (truncated or corrupt file) yields no frames; segments of
    the same file before the damage keep theirs (they are valid frames). The error is written
    to `error_dir` so the driver can count and list the file: skipped and counted, never silent.
    """
    frames, meta = [], {"source": [], "video": [], "game": [], "half": [], "t_ms": []}
    for i in range(len(batch["path"])):
        path = str(batch["path"][i])
        try:
            decoded = decode_at(path, json.loads(str(batch["times"][i])))
        except DataError as err:
            if error_dir:
                Path(error_dir).mkdir(parents=True, exist_ok=True)
                (Path(error_dir) / f"{uuid.uuid4().hex}.json").write_text(
                    json.dumps({"path": err.path, "reason": err.reason}))
            continue
        for t_ms, img in decoded:
            frames.append(fit_frame(img))
            meta["source"].append(str(batch["source"][i]))
            meta["video"].append(str(batch["video"][i]))
            meta["game"].append(str(batch["game"][i]))
            meta["half"].append(int(batch["half"][i]))
            meta["t_ms"].append(t_ms)
    out = {"frame": np.stack(frames) if frames else np.zeros((0, FRAME_H, FRAME_W, 3), np.uint8)}
    out.update({k: np.asarray(v, dtype=np.int64 if k in ("half", "t_ms") else object)
                for k, v in meta.items()})
    return out


def decoded_dataset(sources: list[Source], every_s: float, error_dir: str | None = None):
    """A Ray Dataset of decoded frames straight from the videos (no store).

    Used to build the store, and on its own for a first look or a corpus too large to store
    (each epoch decodes again: slower, see BENCHMARKS.md). Returns (dataset, bad_files).
    """
    import ray

    segments, bad = plan_segments(sources, every_s)
    if not segments:
        raise DataError(sources[0].root, f"no decodable video frames found ({len(bad)} bad files)")
    ds = ray.data.from_items(segments, override_num_blocks=len(segments))
    ds = ds.map_batches(decode_segments, batch_size=1, batch_format="numpy",
                        fn_kwargs={"error_dir": error_dir}, num_cpus=1)
    return ds, bad


def _manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def check_store(path: str | Path) -> dict:
    """The manifest of a finished store of this version, or a DataError saying what is wrong."""
    path = Path(path)
    m = _manifest(path)
    if m is None:
        raise DataError(path, "not a finished frame store (no readable manifest.json); "
                              "build it with `sportray frames CORPUS --out STORE`")
    if m.get("version") != STORE_VERSION:
        raise DataError(path, f"frame store format version {m.get('version')} but this sportray "
                              f"reads version {STORE_VERSION}; rebuild it with `sportray frames`")
    return m


def build_store(sources: list[Source], out: str | Path | None, every_s: float = 4.0,
                data_dir: str | Path = "sportray-data", seed: int = 0) -> StoreInfo:
    """Materialize (or reuse) the content-addressed store for these sources.

    `out` None puts it under data_dir/stores/<key>. A finished store with the same key is reused
    untouched. A non-empty folder that is not this store is refused, never deleted; sportray's
    own temporary folder is removed however the build ends; a store of the same key finished by
    a concurrent builder counts as success.
    """
    t0 = time.time()
    key = store_key(sources, every_s, seed)
    path = Path(out) if out else Path(data_dir) / "stores" / key
    m = _manifest(path)
    if m is not None and m.get("key") == key and m.get("version") == STORE_VERSION:
        return StoreInfo(str(path), key, m["frames"], m["videos"], m.get("bad_files", []), True,
                         time.time() - t0)
    if path.exists() and any(path.iterdir()):
        if m is not None and m.get("key") != key:
            raise DataError(path, f"holds a frame store of other inputs (key {m.get('key')}, "
                                  f"wanted {key}); choose another --out or delete it")
        # Never deleted: a folder sportray did not finish may hold a user's files (sportray's own
        # unfinished builds live in .tmp-* siblings, never here).
        raise DataError(path, "a non-empty folder that is not a finished frame store; sportray writes a "
                              "store only into a new or empty folder: choose another --out")
    clean_stale_builds(path)
    tmp = path.with_name(path.name + f".tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        (tmp / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        return _build_into(tmp, path, key, sources, every_s, seed, t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only sportray's own temporary folder, always


def _build_into(tmp: Path, path: Path, key: str, sources: list[Source], every_s: float, seed: int,
                t0: float) -> StoreInfo:
    """build_store's work: decode into `tmp`, then move it to `path` in one rename."""
    import ray

    error_dir = tmp / "_errors"
    ds, bad = decoded_dataset(sources, every_s, error_dir=str(error_dir))
    # Blocks in plan order, not completion order: with the seeded shuffle the same inputs then
    # give the same store, file by file (a trial's data order is a function of seed and store).
    ds.context.execution_options.preserve_order = True
    ds = ds.random_shuffle(seed=seed)
    ds.write_parquet(str(tmp / "data"), min_rows_per_file=512, compression="zstd")
    if error_dir.exists():
        bad += [json.loads(p.read_text()) for p in sorted(error_dir.glob("*.json"))]
        shutil.rmtree(error_dir)
    frames = ray.data.read_parquet(str(tmp / "data")).count()
    videos = len({str(p) for s in sources for p in list_videos(s.root)}) - len(bad)
    manifest = {"version": STORE_VERSION, "key": key, "frames": frames, "videos": videos,
                "every_s": every_s, "frame_shape": [FRAME_H, FRAME_W, 3],
                "sources": [vars(s) for s in sources], "bad_files": bad,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (tmp / OWNER_FILE).unlink(missing_ok=True)      # a finished store has no builder
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, path)
    except OSError:
        # Another builder finished the same store first: that store is the result.
        m = _manifest(path)
        if m is None or m.get("key") != key or m.get("version") != STORE_VERSION:
            raise
        return StoreInfo(str(path), key, m["frames"], m["videos"], m.get("bad_files", []), True,
                         time.time() - t0)
    return StoreInfo(str(path), key, frames, videos, bad, False, time.time() - t0)


def _read_frames(batch: dict):
    """Ray Data UDF: one store file (path, rows to take) in, its first `rows` frames out in
    ~64-frame (17 MB) batches."""
    import pyarrow.parquet as pq

    for path, rows in zip(batch["path"], batch["rows"]):
        left = int(rows)
        for rb in pq.ParquetFile(str(path)).iter_batches(batch_size=64, columns=["frame"]):
            if left <= 0:
                break
            rb = rb.slice(0, left)
            left -= rb.num_rows
            yield {"frame": rb.column(0).to_numpy()}


def read_store(path: str | Path, max_frames: int = 0, seed: int | None = None, *,
               epoch_multiple: int = 1, total_frames: int = 0):
    """The training-side Ray Dataset over a store: one column, frame (uint8 HxWx3).

    The store is shuffled at write time, so its first `max_frames` rows are a uniform random
    subset (the study's 32k-of-265k comparison).

    Deterministic order: files in name order, or in a permutation drawn from `seed` (a trial's
    seed), rows in file order, and Ray Data told to keep that order (`preserve_order`) instead of
    yielding blocks as their reads finish. The same store and seed give the same batches in every
    epoch and every run, whatever else the machine is doing.

    `epoch_multiple`, `total_frames` (> 0): passes over the store back to back, each cut to a
    multiple of `epoch_multiple` frames (the trainer's global batch), ending after `total_frames`
    frames: one long-lived iterator crosses epoch boundaries without restarting the reader, every
    pass yields the same batches as the first, and no frame is decoded that no step uses (on a
    2-core machine those reads take the trainer's cores). `run_pretrain` asks for this itself
    (:func:`stream_store`).

    Why not `ray.data.read_parquet`: in Ray 2.60 its ListFiles step asks for a whole CPU at the
    start of every epoch and cannot be told otherwise; with trainers holding the cores (a
    2-core laptop, or a GPU node whose cores the trainers reserve) it waits forever. The file
    list is known (the store is ours), so the driver lists it and each read is a quarter-CPU
    task: reading raw uint8 Parquet is I/O, not compute.
    """
    import pyarrow.parquet as pq
    import ray

    check_store(path)
    files = sorted(str(p) for p in (Path(path) / "data").glob("*.parquet"))
    if not files:
        raise DataError(path, "frame store has no Parquet files under data/")
    if seed is not None:
        files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
    rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
    frames = min(max_frames, sum(rows)) if max_frames else sum(rows)
    frames -= frames % max(1, int(epoch_multiple))
    one_pass, left = [], frames
    for f, n in zip(files, rows):
        if left <= 0:
            break
        one_pass.append({"path": f, "rows": min(n, left)})
        left -= min(n, left)
    items = one_pass
    if total_frames > 0 and frames > 0:
        items, left = [], int(total_frames)
        while left > 0:
            for item in one_pass:
                if left <= 0:
                    break
                items.append({"path": item["path"], "rows": min(item["rows"], left)})
                left -= item["rows"]
    ds = ray.data.from_items(items or [{"path": files[0], "rows": 0}], override_num_blocks=max(1, len(items)))
    ds.context.execution_options.preserve_order = True
    ds = ds.map_batches(_read_frames, batch_size=1, batch_format="numpy", num_cpus=0.25)
    # How this dataset was made, so that run_pretrain can ask for the same read over many epochs.
    ds._sportray_store = {"path": str(path), "max_frames": max_frames, "seed": seed, "frames": frames}
    return ds


def stream_store(dataset, steps: int, batch: int):
    """`dataset` made by :func:`read_store`, re-read as one stream of whole-batch epochs holding
    exactly `steps` batches of `batch` frames. Every epoch of the stream is the same, so a run
    resumed in epoch e reads the stream from its start as epoch e and needs fewer batches than a
    fresh one. Returns (dataset, batches per epoch), or None for any other dataset."""
    spec = getattr(dataset, "_sportray_store", None)
    if spec is None:
        return None
    per_epoch = spec["frames"] // batch
    if per_epoch == 0:
        raise DataError(spec["path"], f"the store holds {spec['frames']} frames, fewer than one step's "
                                      f"batch of {batch}: use a smaller --batch-size or more frames")
    return read_store(spec["path"], spec["max_frames"], spec["seed"], epoch_multiple=batch,
                      total_frames=steps * batch), per_epoch
