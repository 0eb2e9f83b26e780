"""Probe sets, materialized once: 224x224 frames with their labels, beside the stores.

soccer.npz      the frame at each annotation's `position` in its half (whole 16:9 frame squashed
                to 224x224 so the probe sees the full broadcast view), label, game split.
basketball.npz  DeepSportRadar images resized to 224x224, the union of "human" masks, and the
                14x14 tile labels (tile = player if masks cover >= 25 % of it; see
                deepsportradar.tile_labels), arena split.

On disk (PROBESET_VERSION 2), per probe set NAME in its content-addressed folder:
  NAME.npz          the small per-item columns (labels, split, game/arena, ...) and `meta` (a JSON
                    string: what was built from what, see describe()); written last, so its
                    presence means the set is complete;
  NAME.images.npy   uint8 (N, 224, 224, 3), plain .npy, memory-mapped by load();
  NAME.masks.npy    bool (N, 224, 224) (basketball only), memory-mapped too.
Memory is bounded independently of the dataset's size: Ray tasks decode chunks of at most
CHUNK items, at most MAX_IN_FLIGHT chunks are pending, and the driver writes each finished chunk
at its offset in the .npy files (plain file writes, so nothing accumulates in the driver), and
load() maps the images instead of reading them (features are extracted batch by batch).
load() returns the arrays of notes/CONTRACTS.md (images/masks as copy-on-write memmaps); it also
reads version-1 files (everything inside the .npz). Loaded with allow_pickle=False.

What was used is recorded in `meta` and reaches MLflow as tags (each task's set_tags): the soccer split's
source (official lists or seeded), games listed but missing and present but unlisted, "not
shown" events left out; the COCO file, the images root and unlabelled images left out.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np

from sportray.config import PATCH, PROBE_SIZE
from sportray.data.errors import DataError

PROBESET_VERSION = 2
SOCCER_CHUNK = 32          # events per Ray task (one half's events are split into chunks)
BASKETBALL_CHUNK = 24      # images per Ray task: ~0.5-1 s of work, so the tasks spread over the CPUs
MAX_IN_FLIGHT = 0          # chunks pending at once; 0 = 2 x the cluster's CPUs (at least 2)


def _key(*parts) -> str:
    h = hashlib.sha256(json.dumps([PROBESET_VERSION, *parts], default=str).encode())
    return h.hexdigest()[:16]


def _files_signature(root: Path, suffixes: tuple[str, ...]) -> list:
    if root.is_file():
        return [(root.name, root.stat().st_size, root.stat().st_mtime_ns)]
    return [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in suffixes]


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _sidecar(path: Path, column: str) -> Path:
    return path.with_name(f"{path.stem}.{column}.npy")


def load(path: str | Path) -> dict[str, np.ndarray]:
    """A probe set's arrays: the .npz columns, with `images` (and `masks`) memory-mapped from
    their .npy files beside it. `meta` is not among them (describe() reads it)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files if k != "meta"}
        for column in ("images", "masks"):
            side = _sidecar(path, column)
            if column not in out and side.is_file():
                # copy-on-write: torch.from_numpy takes it without a read-only warning, and a
                # write by a consumer stays in its memory, never reaches the file
                out[column] = np.load(side, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable probe set ({exc})") from None
    if "images" not in out:
        raise DataError(path, f"not a probe set: no images (neither in it nor {_sidecar(path, 'images').name})")
    n = len(out["images"])
    bad = sorted(k for k, v in out.items() if len(v) != n)
    if bad:
        raise DataError(path, f"probe set columns {bad} do not have one row per image ({n})")
    return out


def describe(path: str | Path) -> dict:
    """What a probe set was built from (its `meta`); {} for a version-1 file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"])) if "meta" in z.files else {}
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable probe set ({exc})") from None


# ----------------------------------------------------------------------------- parallel writing

def _in_flight_limit() -> int:
    import ray

    if MAX_IN_FLIGHT > 0:
        return MAX_IN_FLIGHT
    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


def _open_npy(path: Path, dtype, shape: tuple) -> tuple:
    """A .npy file of that dtype and shape, written in place: (file, header length)."""
    f = open(path, "w+b")
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
            "shape": tuple(shape)})
    header = f.tell()
    f.truncate(header + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return f, header


def _write_chunks(fn, chunks: list, columns: dict[str, tuple[Path, object, tuple]]) -> None:
    """Run fn(chunk) -> {column: array} as Ray tasks over `chunks` (a list of (offset, items)),
    at most _in_flight_limit() pending, writing each result at its offset of each column's .npy.
    columns: {name: (final path, dtype, item shape)}; files appear only when all chunks are in."""
    import ray

    total = sum(len(items) for _, items in chunks)
    task = ray.remote(num_cpus=1)(fn)
    tmps = {name: _tmp(path) for name, (path, _, _) in columns.items()}
    files = {name: _open_npy(tmps[name], dtype, (total, *shape))
             for name, (_, dtype, shape) in columns.items()}
    try:
        limit = _in_flight_limit()
        pending: dict = {}
        queue = list(chunks)
        while queue or pending:
            while queue and len(pending) < limit:
                offset, items = queue.pop(0)
                pending[task.remote(items)] = (offset, len(items))
            done, _ = ray.wait(list(pending), num_returns=1)
            offset, n = pending.pop(done[0])
            result = ray.get(done[0])
            for name, (f, header) in files.items():
                arr = np.ascontiguousarray(result[name], dtype=columns[name][1])
                if arr.shape != (n, *columns[name][2]):
                    raise RuntimeError(f"chunk at {offset}: {name} has shape {arr.shape}")
                f.seek(header + offset * arr[0].nbytes)
                f.write(arr.tobytes())
            del result, done
        for name, (f, _) in files.items():
            f.close()
            os.replace(tmps[name], columns[name][0])
    finally:
        for name, (f, _) in files.items():
            f.close()
            tmps[name].unlink(missing_ok=True)


def _chunked(items: list, size: int) -> list[tuple[int, list]]:
    return [(i, items[i:i + size]) for i in range(0, len(items), size)]


# ----------------------------------------------------------------------------- soccer

def _decode_events(video: str, times_ms: list[int]) -> np.ndarray:
    from sportray.data.video import decode_at, resize_to

    decoded = dict(decode_at(video, [t / 1000 for t in times_ms]))
    return np.stack([resize_to(decoded[int(t)], PROBE_SIZE, PROBE_SIZE) for t in times_ms])


def _decode_chunk(items: list[tuple[str, int]]) -> dict[str, np.ndarray]:
    """One Ray task: frames of (video, position_ms) items, all of one video, sorted by time."""
    return {"images": _decode_events(items[0][0], [t for _, t in items])}


def build_soccer(root: str | Path, out_dir: str | Path, split_seed: int = 0, split_lists: str = "",
                 include_not_shown: bool = False) -> Path:
    """Event frames of every annotated game under a SoccerNet root -> soccer.npz (cached).

    Splits: the official split lists in `split_lists` or, when not given, in the root itself
    (soccernet.plan_splits); else the seeded split. Events whose visibility is "not shown" are
    left out unless include_not_shown; exact duplicate events are taken once. Games in no split
    (present but unlisted) are left out. Frames are decoded by Ray tasks, one chunk of at most
    SOCCER_CHUNK events of one half each, written as they finish (_write_chunks)."""
    from sportray.data import soccernet

    root = Path(root)
    games = soccernet.find_games(root)
    if not games:
        raise DataError(root, "no SoccerNet games found (league/season/game/Labels-v2.json)")
    plan = soccernet.plan_splits(games, seed=split_seed, lists_dir=split_lists, root=root)
    lists_sig = (_files_signature(Path(plan.lists), (".json", ".txt")) if plan.lists else [])
    key = _key("soccer", str(root.resolve()), _files_signature(root, (".json", ".mkv", ".mp4", ".txt")),
               split_seed, plan.source, plan.lists, lists_sig, include_not_shown)
    out = Path(out_dir) / key / "soccer.npz"
    if out.exists():
        return out
    split_of = {g.id: name for name, gs in plan.splits.items() for g in gs}
    rows = []            # (split, game id, half, event, video)
    not_shown = duplicates = 0
    for game in games:
        if game.labels is None or game.id not in split_of:
            continue
        events = soccernet.read_labels(game.labels)
        unique = soccernet.unique_events(events)
        duplicates += len(events) - len(unique)
        for half, video in sorted(game.videos.items()):
            evs = sorted((e for e in unique if e.half == half), key=lambda e: e.position_ms)
            shown = [e for e in evs if e.visibility != "not shown"]
            not_shown += len(evs) - len(shown)
            for e in (evs if include_not_shown else shown):
                rows.append((split_of[game.id], game.id, half, e, str(video)))
    if not rows:
        raise DataError(root, f"no events to probe ({plan.describe()}; {not_shown} 'not shown' left out)")
    chunks, start = [], 0
    while start < len(rows):        # chunks never span two videos (one task opens one video)
        end = start
        while end < len(rows) and end - start < SOCCER_CHUNK and rows[end][4] == rows[start][4]:
            end += 1
        chunks.append((start, [(r[4], r[3].position_ms) for r in rows[start:end]]))
        start = end
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_chunks(_decode_chunk, chunks,
                  {"images": (_sidecar(out, "images"), np.uint8, (PROBE_SIZE, PROBE_SIZE, 3))})
    split = np.asarray([r[0] for r in rows], "<U5")
    meta = {"kind": "soccer", "version": PROBESET_VERSION, "root": str(root.resolve()),
            "split": plan.source, "split_lists": plan.lists, "split_seed": split_seed,
            "split_rule": plan.describe(),
            "games": {s: len(gs) for s, gs in plan.splits.items()},
            "events": {s: int((split == s).sum()) for s in soccernet.SPLITS},
            "listed_missing": list(plan.missing), "unlisted": list(plan.unlisted),
            "include_not_shown": bool(include_not_shown), "not_shown": not_shown,
            "duplicates_dropped": duplicates}
    _save_npz(out, label=np.asarray([r[3].label_id for r in rows], np.int64), split=split,
              game=np.asarray([r[1] for r in rows], "<U256"),
              half=np.asarray([r[2] for r in rows], np.int64),
              position_ms=np.asarray([r[3].position_ms for r in rows], np.int64),
              meta=np.asarray(json.dumps(meta)))
    return out


# ----------------------------------------------------------------------------- basketball

def _load_basketball_item(sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from PIL import Image

    from sportray.data import deepsportradar

    try:
        with Image.open(sample.image_path) as im:
            img = np.array(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DataError(sample.image_path, f"unreadable image ({exc})") from None
    mask = deepsportradar.union_mask(sample)
    from sportray.data.video import resize_to

    image = resize_to(img, PROBE_SIZE, PROBE_SIZE)
    cov = deepsportradar.mask_coverage(mask, PROBE_SIZE)      # once: resize_mask and tile_labels' rule
    return image, cov >= 0.5 - 1e-9, deepsportradar.tiles_of_coverage(cov)


def _load_basketball_items(samples: list) -> dict[str, np.ndarray]:
    """One Ray task's share: {images, masks, tiles} stacked, in the order given."""
    items = [_load_basketball_item(s) for s in samples]
    return {name: np.stack([it[k] for it in items]) for k, name in enumerate(("images", "masks", "tiles"))}


def build_basketball(root: str | Path, out_dir: str | Path, test_arenas: str = "",
                     split_seed: int = 0, coco_file: str = "", images_root: str = "") -> Path:
    """DeepSportRadar images + masks -> basketball.npz (cached).

    The COCO file is deepsportradar.choose_coco(root, coco_file) (default trainvaltest.json),
    the images are found under `images_root` or detected (the challenge repository's
    basketball-instants-dataset/ beside annotations/ included). Unlabelled images (no "human"
    annotation) are left out and counted. Images are decoded, resized and their masks rasterized
    by Ray tasks (chunks of BASKETBALL_CHUNK), written in split order as they finish."""
    from sportray.data import deepsportradar

    root = Path(root)
    coco = deepsportradar.choose_coco(root, coco_file)
    roots = deepsportradar.image_roots(coco, root, images_root)
    key = _key("basketball", str(root.resolve()), str(coco.resolve()), [str(r.resolve()) for r in roots],
               _files_signature(coco, (".json",)),
               *(_files_signature(r, (".png", ".jpg", ".jpeg")) for r in roots if r.is_dir()),
               test_arenas, split_seed)
    out = Path(out_dir) / key / "basketball.npz"
    if out.exists():
        return out
    samples = deepsportradar.read_dataset(root, coco_file=str(coco), images_root=images_root)
    labelled = [s for s in samples if s.labelled]
    if not labelled:
        raise DataError(coco, f"no labelled images ({len(samples)} images, none with a 'human' annotation)")
    arenas = [a.strip() for a in test_arenas.split(",") if a.strip()] or None
    splits = deepsportradar.split_arenas(labelled, test_arenas=arenas, seed=split_seed)
    ordered = [(split_name, s) for split_name, items in splits.items() for s in items]
    out.parent.mkdir(parents=True, exist_ok=True)
    n_tiles = PROBE_SIZE // PATCH
    _write_chunks(_load_basketball_items, _chunked([s for _, s in ordered], BASKETBALL_CHUNK),
                  {"images": (_sidecar(out, "images"), np.uint8, (PROBE_SIZE, PROBE_SIZE, 3)),
                   "masks": (_sidecar(out, "masks"), np.bool_, (PROBE_SIZE, PROBE_SIZE)),
                   "tiles": (_sidecar(out, "tiles"), np.uint8, (n_tiles, n_tiles))})
    tiles = np.load(_sidecar(out, "tiles"))          # small (196 bytes a frame): into the .npz
    _sidecar(out, "tiles").unlink()
    used_roots = sorted({str(next((r for r in roots if r / s.file_name == s.image_path), s.image_path.parent))
                         for _, s in ordered})
    meta = {"kind": "basketball", "version": PROBESET_VERSION, "root": str(root.resolve()),
            "coco_file": str(coco.resolve()), "coco_name": coco.stem,
            "images_root": used_roots[0] if len(used_roots) == 1 else ",".join(used_roots),
            "images": len(samples), "unlabelled": len(samples) - len(labelled),
            "frames": {k: len(v) for k, v in splits.items()},
            "test_arenas": sorted({s.arena for s in splits["test"]}), "split_seed": split_seed}
    _save_npz(out, tiles=tiles, split=np.asarray([n for n, _ in ordered], "<U5"),
              arena=np.asarray([s.arena for _, s in ordered], "<U64"),
              name=np.asarray([str(s.image_path) for _, s in ordered], "<U256"),
              meta=np.asarray(json.dumps(meta)))
    return out
