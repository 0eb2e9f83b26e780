"""Probe sets, materialized once: 224x224 frames with their labels, as .npz beside the stores.

soccer.npz      the frame at each annotation's `position` in its half (whole 16:9 frame squashed
                to 224x224 so the probe sees the full broadcast view), label, game split.
basketball.npz  DeepSportRadar images resized to 224x224, the union of "human" masks, and the
                14x14 tile labels (tile = player if masks cover >= 25 % of it; see
                deepsportradar.tile_labels), arena split.
Format in notes/CONTRACTS.md. Content-addressed like the frame store: the same inputs reuse
the same files. Loaded with np.load(allow_pickle=False): no pickle from a path.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np

from sportray.config import PROBE_SIZE
from sportray.data.errors import DataError

PROBESET_VERSION = 1


def _key(*parts) -> str:
    h = hashlib.sha256(json.dumps([PROBESET_VERSION, *parts], default=str).encode())
    return h.hexdigest()[:16]


def _files_signature(root: Path, suffixes: tuple[str, ...]) -> list:
    return [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in suffixes]


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable probe set ({exc})") from None


# ----------------------------------------------------------------------------- soccer

def _decode_events(video: str, times_ms: list[int]) -> np.ndarray:
    from sportray.data.video import decode_at, resize_to

    decoded = dict(decode_at(video, [t / 1000 for t in times_ms]))
    return np.stack([resize_to(decoded[int(t)], PROBE_SIZE, PROBE_SIZE) for t in times_ms])


def build_soccer(root: str | Path, out_dir: str | Path, split_seed: int = 0) -> Path:
    """Event frames of every annotated game under a SoccerNet root -> soccer.npz (cached)."""
    import ray

    from sportray.data import soccernet

    root = Path(root)
    games = soccernet.find_games(root)
    if not games:
        raise DataError(root, "no SoccerNet games found (league/season/game/Labels-v2.json)")
    key = _key("soccer", str(root.resolve()), _files_signature(root, (".json", ".mkv", ".mp4", ".txt")),
               split_seed)
    out = Path(out_dir) / key / "soccer.npz"
    if out.exists():
        return out
    splits = soccernet.split_games(games, seed=split_seed)
    split_of = {g.id: name for name, gs in splits.items() for g in gs}
    decode = ray.remote(num_cpus=1)(_decode_events)
    jobs, meta = [], []
    for game in games:
        if game.labels is None:
            continue
        events = soccernet.read_labels(game.labels)
        for half, video in sorted(game.videos.items()):
            evs = [e for e in events if e.half == half]
            if not evs:
                continue
            evs.sort(key=lambda e: e.position_ms)
            jobs.append(decode.remote(str(video), [e.position_ms for e in evs]))
            meta.append((game.id, half, evs))
    images, label, split, game_ids, halves, positions = [], [], [], [], [], []
    for ref, (gid, half, evs) in zip(jobs, meta):
        images.append(ray.get(ref))
        for e in evs:
            label.append(e.label_id)
            split.append(split_of[gid])
            game_ids.append(gid)
            halves.append(half)
            positions.append(e.position_ms)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_npz(out, images=np.concatenate(images), label=np.asarray(label, np.int64),
              split=np.asarray(split, "<U5"), game=np.asarray(game_ids, "<U256"),
              half=np.asarray(halves, np.int64), position_ms=np.asarray(positions, np.int64))
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
    return image, deepsportradar.resize_mask(mask), deepsportradar.tile_labels(mask)


def _load_basketball_items(samples: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Ray task's share: (images, masks, tiles) stacked, in the order given."""
    items = [_load_basketball_item(s) for s in samples]
    return tuple(np.stack([it[k] for it in items]) for k in range(3))


BASKETBALL_CHUNK = 24     # images per Ray task: ~0.5-1 s of work, so the tasks spread over the CPUs


def build_basketball(root: str | Path, out_dir: str | Path, test_arenas: str = "",
                     split_seed: int = 0) -> Path:
    """DeepSportRadar images + masks -> basketball.npz (cached). Images are decoded, resized and
    their masks rasterized by Ray tasks (chunks of BASKETBALL_CHUNK), gathered in split order."""
    import ray

    from sportray.data import deepsportradar

    root = Path(root)
    key = _key("basketball", str(root.resolve()),
               _files_signature(root, (".json", ".png", ".jpg", ".jpeg")), test_arenas, split_seed)
    out = Path(out_dir) / key / "basketball.npz"
    if out.exists():
        return out
    samples = deepsportradar.read_dataset(root)
    arenas = [a.strip() for a in test_arenas.split(",") if a.strip()] or None
    splits = deepsportradar.split_arenas(samples, test_arenas=arenas, seed=split_seed)
    ordered = [(split_name, s) for split_name, items in splits.items() for s in items]
    if not ordered:
        raise DataError(root, "no labelled images in any split")
    load = ray.remote(num_cpus=1)(_load_basketball_items)
    refs = [load.remote([s for _, s in ordered[i:i + BASKETBALL_CHUNK]])
            for i in range(0, len(ordered), BASKETBALL_CHUNK)]
    parts = [ray.get(r) for r in refs]
    images, masks, tiles = (np.concatenate([p[k] for p in parts]) for k in range(3))
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_npz(out, images=images, masks=masks, tiles=tiles.astype(np.uint8),
              split=np.asarray([n for n, _ in ordered], "<U5"),
              arena=np.asarray([s.arena for _, s in ordered], "<U64"),
              name=np.asarray([str(s.image_path) for _, s in ordered], "<U256"))
    return out
