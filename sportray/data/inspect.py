"""`sportray inspect DIR`: what a corpus or probe set holds, and every bad file with its reason.

inspect(path) -> (summary, problems). It recognizes, anywhere under path (several may be present,
e.g. the synthetic default holds both):
  - a SoccerNet tree: folders with Labels-v2.json and/or {1,2}_<res>p.mkv (soccernet.find_games);
  - DeepSportRadar COCO files: *.json whose top level has "images", "annotations" or
    "categories" (each folder of them is read like deepsportradar.read_dataset);
  - any other videos (.mkv .mp4 .avi .mov .webm): a plain folder of videos.
Every video is probed (codec, size, fps, duration) and its last second is decoded, so a file
cut short (truncated download, killed copy) is caught even when its header still announces
the full duration. Each bad input is one DataError (file + reason): unreadable/empty/not a
video/no video stream/truncated video, missing half video, missing or malformed
Labels-v2.json, bad annotation (unknown label, bad gameTime/position, position beyond the
half), COCO problems (missing keys, RLE size, missing image, no "human" category, ...).
"""
from __future__ import annotations

import json
from pathlib import Path

from sportray.config import SOCCER_CLASSES
from sportray.data import deepsportradar as dsr
from sportray.data import soccernet
from sportray.data.errors import DataError
from sportray.data.video import VIDEO_SUFFIXES, VideoInfo, decode_at, probe_video

_COCO_KEYS = ("images", "annotations", "categories")


def check_video(path: str | Path, tail_s: float = 1.0) -> VideoInfo:
    """probe_video + decode the last `tail_s` seconds; DataError if unreadable or truncated."""
    info = probe_video(path)
    last = max(0.0, info.duration_s - 1.5 / info.frames_per_s)
    times = sorted({max(0.0, info.duration_s - tail_s), last})
    try:
        decode_at(path, times)
    except DataError as exc:
        if "stream ends before" in exc.reason:
            raise DataError(path, f"truncated: the header says {info.duration_s:.2f} s but "
                                  f"decoding stops early ({exc.reason})") from None
        raise
    except Exception as exc:  # a seek or demux error PyAV does not map
        raise DataError(path, f"cannot decode the last second ({type(exc).__name__}: {exc})") from None
    return info


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix() or p.name
    except ValueError:
        return str(p)


def _coco_candidates(files: list[Path]) -> tuple[list[Path], list[DataError]]:
    coco, problems = [], []
    for f in files:
        if f.suffix.lower() != ".json" or f.name.startswith("Labels"):
            continue
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(DataError(f, f"not JSON ({getattr(exc, 'msg', exc)})"))
            continue
        if isinstance(doc, dict) and any(k in doc for k in _COCO_KEYS):
            coco.append(f)
    return coco, problems


def inspect(path: str | Path, decode_tail: bool = True) -> tuple[dict, list[DataError]]:
    """Summary of a corpus / probe-set folder (or one file) and one DataError per bad input."""
    root = Path(path)
    problems: list[DataError] = []
    summary: dict = {"path": str(root), "kinds": []}
    if not root.exists():
        return summary, [DataError(root, "does not exist")]
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    base = root.parent if root.is_file() else root

    # --- videos: every one is checked once
    video_files = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    infos: dict[Path, VideoInfo] = {}
    video_rows = []
    for v in video_files:
        try:
            info = check_video(v) if decode_tail else probe_video(v)
        except DataError as exc:
            problems.append(exc)
            continue
        infos[v] = info
        video_rows.append({"path": _rel(v, base), "codec": info.codec, "width": info.width,
                           "height": info.height, "fps": round(info.frames_per_s, 3),
                           "duration_s": round(info.duration_s, 3)})

    # --- SoccerNet games
    game_dirs = sorted({f.parent for f in files
                        if f.name == soccernet.LABELS_FILE or soccernet._HALF_VIDEO.match(f.name)})
    in_games: set[Path] = set()
    if game_dirs:
        summary["kinds"].append("soccernet")
        counts = {c: 0 for c in SOCCER_CLASSES}
        games, n_halves, n_events, n_labels = [], 0, 0, 0
        for folder in game_dirs:
            game = soccernet._game(folder)
            in_games.update(game.videos.values())
            for half in (1, 2):
                if half not in game.videos:
                    problems.append(DataError(folder, f"half {half} video missing (expected "
                                                      f"{half}_224p.mkv beside {soccernet.LABELS_FILE})"))
            n_halves += len(game.videos)
            events: list = []
            if game.labels is None:
                problems.append(DataError(folder / soccernet.LABELS_FILE, "missing (no action labels "
                                                                          "for this game)"))
            else:
                n_labels += 1
                events, label_problems = soccernet.scan_labels(game.labels)
                problems += label_problems
                # positions are checked against the halves whose video is readable (a missing or
                # broken video is reported once, above)
                durations = {h: infos[v].duration_s for h, v in game.videos.items() if v in infos}
                problems += soccernet.position_problems(
                    [e for e in events if e.half in durations], durations, game.labels)
                for e in events:
                    counts[e.label] += 1
            n_events += len(events)
            games.append({"id": game.id, "halves": sorted(game.videos), "events": len(events),
                          "labels": game.labels is not None})
        summary["soccernet"] = {"games": len(games), "halves": n_halves, "labels_files": n_labels,
                                "events": n_events, "events_per_class": counts, "game_list": games}

    # --- DeepSportRadar COCO files
    coco_files, json_problems = _coco_candidates(files)
    problems += json_problems
    if coco_files:
        summary["kinds"].append("deepsportradar")
        arenas: dict[str, dict] = {}
        n_images = n_masks = 0
        seen: set = set()
        for f in coco_files:
            samples, p = dsr._scan_file(f, f.parent, seen, check_images=True)
            problems += p
            for s in samples:
                a = arenas.setdefault(s.arena, {"images": 0, "masks": 0})
                a["images"] += 1
                a["masks"] += len(s.annotations)
                n_images += 1
                n_masks += len(s.annotations)
        summary["deepsportradar"] = {"json_files": [_rel(f, base) for f in coco_files],
                                     "images": n_images, "masks": n_masks,
                                     "arenas": dict(sorted(arenas.items()))}

    other_videos = [v for v in video_files if v not in in_games]
    if other_videos:
        summary["kinds"].append("videos")
    summary["videos"] = video_rows
    summary["video_files"] = len(video_files)
    summary["videos_ok"] = len(video_rows)
    if not summary["kinds"]:
        problems.append(DataError(root, "no SoccerNet games, DeepSportRadar COCO json or videos found"))
    summary["problems"] = len(problems)
    return summary, problems


def problems_json(problems: list[DataError]) -> list[dict]:
    return [{"file": p.path, "reason": p.reason} for p in problems]
