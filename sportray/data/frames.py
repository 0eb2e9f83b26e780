"""The frame store: sampled video frames decoded once, read back by every trial.

Build (build_store), each stage Ray tasks:
    list videos -> probe (Ray tasks) -> plan: every sampled (video, time), and from a seeded
    permutation the row it will have in the store -> decode (a Ray Data job, one task per
    SPAN_SECONDS of one video: PyAV in order, one decoder thread; each frame compressed alone as
    soon as it is decoded and appended to the span's staging file) -> write (a Ray Data job, one
    task per store file: gathers its rows' compressed frames in row order, one Parquet file)
    -> manifest.json

Format (version STORE_VERSION = 2): data/part-NNNNN.parquet, ROWS_PER_FILE rows each (the last
one fewer), row groups of ROW_GROUP_ROWS, columns
    frame  binary   one FRAME_H x FRAME_W x 3 uint8 frame (raw RGB, row-major), compressed alone
                    with the manifest's `frame_codec` (a pyarrow.Codec name; no Parquet
                    compression on top)
    source str   which corpus root the frame came from
    video  str   path relative to its source root
    game   str   SoccerNet game id ("league/season/game") or "" for plain folders
    half   int   1/2 for SoccerNet halves, 0 otherwise
    t_ms   int   time of the frame in its video
plus manifest.json, written last: a store without it is incomplete and is rebuilt. A store of
another version is refused, naming it and saying how to rebuild (check_store).

Why this format (issue 17; BENCHMARKS.md, "Frame store v2", has the figures): version 1 kept each
frame as Ray's tensor column, which Parquet stores as 267,456 one-byte list elements, each with
its own repetition level: one core of the H200 host turned 351 frames/s of it back into arrays,
against 4,627 for a frame compressed alone with lz4 (1,678 with zstd level 1, which would need
more cores than the reader's budget of 4 per GPU), and writing it was most of the old build's
time. A frame compressed alone is also what lets the build stage compressed frames and gather
them in shuffled order without recompressing. The cost is disk: lz4 barely compresses noisy
frames (269 kB a frame for the benchmarks' noisy content, against 235 kB with zstd) and gives
82 kB for the synthetic videos' frames (zstd: 60-70).

Why shuffle at write time: Ray Data's `local_shuffle_buffer_size` costs up to 7x read
throughput; a store shuffled once lets every epoch stream files in a seeded file order.

Why a seeded permutation instead of Ray's random_shuffle: the shuffle only decides where each
frame goes, and that is known before any frame is decoded. random_shuffle moved every decoded
frame through the object store (raw, 267 KB each: ~71 GB for the study's 265k frames, spilled to
disk) and held the write back until every frame was decoded; the plan's permutation costs nothing,
and the staging files hold compressed frames. The store still reads as one uniformly shuffled
sequence: its first `max_frames` rows are a uniform random subset, and a seed always gives the
same store, file by file (rows in permutation order, whatever order the tasks finish in).

Why raw pixels (compressed losslessly) and not JPEG: a frame needs no image decode on the read
side, only a memory-speed codec (the trainer's data path must stay cheap: DESIGN.md §1).

Content addressing: the store key hashes the inputs (each video's relative path, size, mtime
and a hash of its first MiB and last 64 KiB -- the container's header and index, where an edit
that keeps size and mtime still shows --, the source weights, the sampling interval, the write
shuffle's seed, the frame size, the codec and STORE_VERSION), so a second call with the same
inputs finds and reuses the finished store, and any other input builds another.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sportray.data.errors import DataError
from sportray.data.video import decode_at, iter_frames_at, list_videos, probe_video, sample_times
from sportray.storage import pid_alive

STORE_VERSION = 2
OWNER_FILE = ".sportray-build.json"    # in a build's temporary folder: which process builds it
FRAME_H = 224
FRAME_W = 398          # 16:9 at 224p, SoccerNet's 224p resolution
FRAME_BYTES = FRAME_H * FRAME_W * 3
FRAME_CODEC = "lz4_raw"  # each frame compressed alone (BENCHMARKS.md, "Frame store v2": why this codec)
ROWS_PER_FILE = 512    # frames per store file: the unit of a trial's seeded file order
ROW_GROUP_ROWS = 64    # frames per Parquet row group and per read chunk (~17 MB raw)
SEGMENT_FRAMES = 32    # sampled frames per task of decoded_dataset: ~8.5 MB raw blocks (DESIGN.md: avoid huge blocks)
SPAN_SECONDS = 60.0    # video per decode task of the build: one container open and one seek per
#                        minute (a seek decodes up to a keyframe interval of frames for nothing)
PROBE_CHUNK = 8        # videos per probe task
READ_ITEM_ROWS = 256   # frames per store read task, one block each (BENCHMARKS.md, "Frame store v2")
READ_TASKS_PER_GPU = 4  # store reads in flight per GPU of the cluster (4 without GPUs); see read_store
READ_TASKS: int | None = None   # overrides READ_TASKS_PER_GPU when set (the benchmarks do)


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
    stages: dict[str, float] = field(default_factory=dict)   # a build's seconds per stage


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
                         "frame": [FRAME_H, FRAME_W], "codec": FRAME_CODEC}).encode())
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


def _probe_task(items: list[tuple[str, str, float]]) -> list[dict]:
    """Probe a few videos (root, path, every_s): their sampled times, or why they are bad."""
    out = []
    for root, path, every_s in items:
        try:
            info = probe_video(path)
        except DataError as err:
            out.append({"path": path, "error": err.reason})
            continue
        out.append({"path": path, "root": root, "times": sample_times(info.duration_s, every_s)})
    return out


def plan_videos(sources: list[Source], every_s: float) -> tuple[list[dict], list[dict]]:
    """Probe every video in parallel Ray tasks; return (videos, bad_files), videos in listing order
    (sources in order, each source's files sorted), each with path, source, video (relative path),
    game, half and its sampled times (one every every_s / weight seconds)."""
    import ray

    probe = ray.remote(num_cpus=0.5)(_probe_task)
    items = [(s.root, str(p), every_s / s.weight) for s in sources for p in list_videos(s.root)]
    refs = [probe.remote(items[i:i + PROBE_CHUNK]) for i in range(0, len(items), PROBE_CHUNK)]
    videos, bad = [], []
    for res in (r for chunk in ray.get(refs) for r in chunk):
        if "error" in res:
            bad.append({"path": res["path"], "reason": res["error"]})
            continue
        rel = Path(res["path"]).relative_to(res["root"]) if res["path"] != res["root"] else Path(res["path"]).name
        game, half = _game_of(Path(rel))
        videos.append({"path": res["path"], "source": res["root"], "video": str(rel), "game": game,
                       "half": half, "times": res["times"]})
    return videos, bad


def plan_segments(sources: list[Source], every_s: float) -> tuple[list[dict], list[dict]]:
    """decoded_dataset's tasks: SEGMENT_FRAMES sampled times of one video each; (segments, bad)."""
    videos, bad = plan_videos(sources, every_s)
    segments = []
    for v in videos:
        meta = {k: v[k] for k in ("path", "source", "video", "game", "half")}
        for i in range(0, len(v["times"]), SEGMENT_FRAMES):
            segments.append({**meta, "times": json.dumps(v["times"][i:i + SEGMENT_FRAMES])})
    return segments, bad


def _codec(name: str):
    import pyarrow as pa

    return pa.Codec(name, compression_level=1) if name == "zstd" else pa.Codec(name)


def decode_frames(column, codec: str) -> np.ndarray:
    """A store's frame column (pyarrow binary, each value one frame compressed alone with
    `codec`) -> uint8 (N, FRAME_H, FRAME_W, 3)."""
    c = _codec(codec)
    out = np.empty((len(column), FRAME_H, FRAME_W, 3), np.uint8)
    flat = out.reshape(len(column), FRAME_BYTES)
    for i, blob in enumerate(column):
        flat[i] = np.frombuffer(c.decompress(blob.as_buffer(), FRAME_BYTES), np.uint8)
    return out


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
        raise DataError(path, _other_version(m.get("version")))
    return m


def _other_version(version) -> str:
    return (f"frame store format version {version}, but this sportray reads version {STORE_VERSION} "
            "(version 2 stores each frame compressed alone: issue 17); rebuild it: "
            "`sportray frames CORPUS --out NEW_FOLDER`, or delete this folder and run again "
            "(a store under --data-dir is rebuilt by the next run, under a new key)")


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
        if m is not None and m.get("version") != STORE_VERSION:
            raise DataError(path, _other_version(m.get("version")))
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
    """build_store's work: plan, decode and write into `tmp`, then move it to `path` in one rename."""
    stages, t = {"key": time.time() - t0}, time.time()   # the store key: hashes of the videos
    videos, bad = plan_videos(sources, every_s)
    spans = _spans(videos)
    stages["plan"], t = time.time() - t, time.time()
    staging = tmp / "_staging"
    staging.mkdir()
    sizes, failed = _decode_spans(spans, staging) if spans else ({}, [])
    bad += failed
    rows = _store_rows(videos, spans, sizes, seed)
    if not rows:
        raise DataError(sources[0].root, f"no decodable video frames found ({len(bad)} bad files)")
    stages["decode"], t = time.time() - t, time.time()
    _write_store_files(rows, videos, staging, tmp / "data")
    shutil.rmtree(staging)
    stages["write"] = time.time() - t
    listed = {str(p) for s in sources for p in list_videos(s.root)}
    manifest = {"version": STORE_VERSION, "key": key, "frames": len(rows),
                "videos": len(listed) - len({b["path"] for b in bad}), "every_s": every_s,
                "frame_shape": [FRAME_H, FRAME_W, 3], "frame_codec": FRAME_CODEC,
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
    return StoreInfo(str(path), key, manifest["frames"], manifest["videos"], bad, False, time.time() - t0,
                     stages)


def _spans(videos: list[dict]) -> list[dict]:
    """The build's decode tasks: runs of consecutive samples of one video covering SPAN_SECONDS
    (at least SEGMENT_FRAMES samples, so sparse sampling still gives each task some work), each
    with the index of its first sample in plan order."""
    spans, first = [], 0
    for index, v in enumerate(videos):
        times = v["times"]
        step = times[1] - times[0] if len(times) > 1 else SPAN_SECONDS
        n = max(SEGMENT_FRAMES, int(np.ceil(SPAN_SECONDS / step)))
        for i in range(0, len(times), n):
            spans.append({"span": len(spans), "path": v["path"], "video": index, "first": first + i,
                          "times": json.dumps(times[i:i + n])})
        first += len(times)
    return spans


def _decode_span(batch: dict, staging: str, codec: str) -> dict:
    """Ray Data UDF of the build: one span in, its frames decoded in order, each compressed alone
    as soon as it is decoded and appended to the span's staging file; out: the compressed sizes in
    sample order, or the error that lost the span (a damaged file: none of the span's frames are
    used; earlier spans of the file keep theirs, they are valid frames)."""
    span, path = int(batch["span"][0]), str(batch["path"][0])
    c = _codec(codec)
    sizes: list[int] = []
    error = ""
    try:
        with open(Path(staging) / f"{span:07d}.bin", "wb") as f:
            for _, img in iter_frames_at(path, json.loads(str(batch["times"][0]))):
                blob = c.compress(np.ascontiguousarray(fit_frame(img)))  # PyAV pads rows of 398 px
                f.write(blob)
                sizes.append(blob.size)
    except DataError as err:
        sizes, error = [], json.dumps({"path": err.path, "reason": err.reason})
    return {"span": np.array([span]), "sizes": np.array([json.dumps(sizes)], dtype=object),
            "error": np.array([error], dtype=object)}


def _decode_spans(spans: list[dict], staging: Path) -> tuple[dict[int, list[int]], list[dict]]:
    """Run the decode stage: ({span: compressed sizes}, the failed files, one entry each)."""
    import ray

    ds = ray.data.from_items(spans, override_num_blocks=len(spans))
    ds = ds.map_batches(_decode_span, batch_size=1, batch_format="numpy", num_cpus=1,
                        fn_kwargs={"staging": str(staging), "codec": FRAME_CODEC})
    sizes, failed = {}, {}
    for row in ds.iter_rows():
        if row["error"]:
            err = json.loads(row["error"])
            failed.setdefault(err["path"], err)
        else:
            sizes[int(row["span"])] = json.loads(row["sizes"])
    return sizes, [failed[p] for p in sorted(failed)]


def _store_rows(videos: list[dict], spans: list[dict], sizes: dict[int, list[int]], seed: int) -> list[tuple]:
    """Every decoded frame as (row key, span, offset, size, video index, t_ms), in store order: the
    row keys are a permutation of the plan's samples drawn from `seed`, so the order is fixed
    before decoding and does not depend on which task finished first. Frames of failed spans are
    left out; the rest keep their relative order (still a uniform shuffle: the permutation was
    drawn independently of which spans fail)."""
    n = sum(len(v["times"]) for v in videos)
    slot = np.random.default_rng(seed).permutation(n)
    rows = []
    for sp in spans:
        if sp["span"] not in sizes:
            continue
        times, size = json.loads(sp["times"]), sizes[sp["span"]]
        if len(size) != len(times):
            raise RuntimeError(f"{sp['path']}: span {sp['span']} decoded {len(size)} frames for {len(times)} times")
        offsets = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(int)
        for j, (t, off, nbytes) in enumerate(zip(times, offsets, size)):
            rows.append((int(slot[sp["first"] + j]), sp["span"], int(off), int(nbytes), sp["video"],
                         int(round(t * 1000))))
    rows.sort()
    return rows


def _write_store_files(rows: list[tuple], videos: list[dict], staging: Path, out: Path) -> None:
    """Run the write stage: store file k holds rows k*ROWS_PER_FILE onwards."""
    import ray

    out.mkdir(parents=True)
    items = []
    for k in range(0, len(rows), ROWS_PER_FILE):
        part = [[r[1], r[2], r[3], *(videos[r[4]][m] for m in ("source", "video", "game", "half")), r[5]]
                for r in rows[k:k + ROWS_PER_FILE]]
        items.append({"file": str(out / f"part-{k // ROWS_PER_FILE:05d}.parquet"), "rows": json.dumps(part)})
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(_write_store_file, batch_size=1, batch_format="numpy", num_cpus=0.5,
                        fn_kwargs={"staging": str(staging)})
    written = sum(int(r["rows"]) for r in ds.iter_rows())
    if written != len(rows):
        raise RuntimeError(f"{out}: wrote {written} of {len(rows)} frames")


def _write_store_file(batch: dict, staging: str) -> dict:
    """Ray Data UDF of the build: one store file's rows in (in row order, each naming its span's
    staging file, offset and size), its compressed frames gathered (no recompression), one
    Parquet file written."""
    rows = json.loads(str(batch["rows"][0]))
    blobs: list[bytes] = [b""] * len(rows)
    by_span: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_span.setdefault(r[0], []).append(i)
    for span, idx in by_span.items():       # each staging file opened once
        fd = os.open(Path(staging) / f"{span:07d}.bin", os.O_RDONLY)
        try:
            for i in idx:
                blobs[i] = os.pread(fd, rows[i][2], rows[i][1])
                if len(blobs[i]) != rows[i][2]:
                    raise RuntimeError(f"{staging}: span {span} staging file is short at row {i}")
        finally:
            os.close(fd)
    _write_parquet(str(batch["file"][0]), blobs, [r[3:] for r in rows])
    return {"rows": np.array([len(rows)])}


def _write_parquet(path: str, blobs: list[bytes], meta: list) -> None:
    """One store file: compressed frames + (source, video, game, half, t_ms) per row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, video, game, half, t_ms = (list(c) for c in zip(*meta))
    table = pa.table({"frame": pa.array(blobs, pa.binary()), "source": pa.array(source, pa.string()),
                      "video": pa.array(video, pa.string()), "game": pa.array(game, pa.string()),
                      "half": pa.array(half, pa.int64()), "t_ms": pa.array(t_ms, pa.int64())})
    other = ["source", "video", "game", "half", "t_ms"]
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, use_dictionary=other[:3],
                   compression={"frame": "NONE", **{c: "ZSTD" for c in other}}, write_statistics=other)


def write_store(path: str | Path, frames: np.ndarray, t_ms: list[int] | None = None,
                key: str = "arrays") -> Path:
    """A finished store holding `frames` (uint8 (N, FRAME_H, FRAME_W, 3)) in this order, for tests
    and benchmarks that need a store without videos; t_ms defaults to the row index."""
    path = Path(path)
    if frames.shape[1:] != (FRAME_H, FRAME_W, 3) or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (N, {FRAME_H}, {FRAME_W}, 3), got {frames.dtype} {frames.shape}")
    t_ms = list(range(len(frames))) if t_ms is None else [int(t) for t in t_ms]
    c = _codec(FRAME_CODEC)
    (path / "data").mkdir(parents=True)
    for k in range(0, len(frames), ROWS_PER_FILE):
        chunk = frames[k:k + ROWS_PER_FILE]
        blobs = [c.compress(np.ascontiguousarray(f)).to_pybytes() for f in chunk]
        _write_parquet(str(path / "data" / f"part-{k // ROWS_PER_FILE:05d}.parquet"), blobs,
                       [("", "", "", 0, t) for t in t_ms[k:k + len(chunk)]])
    (path / "manifest.json").write_text(json.dumps({
        "version": STORE_VERSION, "key": key, "frames": len(frames), "videos": 0, "every_s": 0.0,
        "frame_shape": [FRAME_H, FRAME_W, 3], "frame_codec": FRAME_CODEC, "sources": [],
        "bad_files": []}))
    return path


def iter_store_file(path: str, codec: str, start: int = 0, rows: int | None = None,
                    chunk: int = ROW_GROUP_ROWS) -> Iterator[np.ndarray]:
    """Rows [start, start + rows) (rows None: to the end) of one store file as uint8
    (n, FRAME_H, FRAME_W, 3) arrays of `chunk` frames (the last fewer); only the row groups
    holding them are read."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    first = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)])
    end = int(first[-1]) if rows is None else min(int(first[-1]), start + rows)
    groups = [g for g in range(len(first) - 1) if first[g] < end and first[g + 1] > start]
    if not groups:
        return
    col = pf.read_row_groups(groups, columns=["frame"], use_threads=False).column("frame")
    col = col.slice(start - int(first[groups[0]]), end - start)
    for a in range(0, len(col), chunk):
        yield decode_frames(col.slice(a, chunk), codec)


def _read_frames(batch: dict, codec: str):
    """Ray Data UDF: one read item (a store file, its first row and row count) in, those frames
    out as one block."""
    for path, start, rows in zip(batch["path"], batch["start"], batch["rows"]):
        yield from ({"frame": f} for f in iter_store_file(str(path), codec, int(start), int(rows), int(rows)))


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
    task (one READ_ITEM_ROWS-frame block: ~70 ms of one core, lz4 and the object-store write).

    At most READ_TASKS_PER_GPU reads per GPU run at once: Ray Data would otherwise start four
    quarter-CPU reads per CPU it may use, and on 4 cores those time-slice the cores the consumer
    needs (the trainer's batches: 1,088 frames/s with 16 reads in flight, 3,379 with 4, on one
    H200 host; BENCHMARKS.md, "Frame store v2").
    """
    import pyarrow.parquet as pq
    import ray

    codec = check_store(path).get("frame_codec")
    if codec is None:
        raise DataError(path, f"manifest.json of this version {STORE_VERSION} store names no frame_codec: "
                              "not a store sportray wrote; rebuild it with `sportray frames`")
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
    # One read task per READ_ITEM_ROWS frames: a task's frames leave as one block when it ends, so
    # short tasks keep the in-order stream from waiting on a whole file's decode.
    items = [{"path": it["path"], "start": a, "rows": min(READ_ITEM_ROWS, it["rows"] - a)}
             for it in items for a in range(0, it["rows"], READ_ITEM_ROWS)]
    ds = ray.data.from_items(items or [{"path": files[0], "start": 0, "rows": 0}],
                             override_num_blocks=max(1, len(items)))
    ds.context.execution_options.preserve_order = True
    ds = ds.map_batches(_read_frames, batch_size=1, batch_format="numpy", num_cpus=0.25,
                        compute=ray.data.TaskPoolStrategy(size=min(READ_TASKS or _read_tasks(), max(1, len(items)))),
                        fn_kwargs={"codec": codec})
    # How this dataset was made, so that run_pretrain can ask for the same read over many epochs.
    ds._sportray_store = {"path": str(path), "max_frames": max_frames, "seed": seed, "frames": frames}
    return ds


def _read_tasks() -> int:
    """Reads in flight: READ_TASKS_PER_GPU per GPU of the cluster (the issue's budget, 4 CPUs
    per GPU), at least READ_TASKS_PER_GPU."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0
    return READ_TASKS_PER_GPU * max(1, gpus)


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
