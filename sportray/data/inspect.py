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

Label quirks are notes (`summary["notes"]`, file + what; they do not make the exit code
non-zero): a gameTime that disagrees with position, duplicate and out-of-order events
(soccernet.label_notes), duplicate COCO image ids and iscrowd masks (deepsportradar). It also
says which split the soccer probe would use (official lists or seeded; listed games missing,
present games unlisted), how many events are "not shown", which COCO file the basketball probe
would use, where the images were found, and which images are unlabelled.
"""
from __future__ import annotations

import json
from pathlib import Path

from sportray.config import SOCCER_CLASSES, ConfigError
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


def inspect(path: str | Path, decode_tail: bool = True, soccer_splits: str = "",
            basketball_coco: str = "", basketball_images: str = "") -> tuple[dict, list[DataError]]:
    """Summary of a corpus / probe-set folder (or one file) and one DataError per bad input.
    soccer_splits, basketball_coco, basketball_images: as the DataConfig fields of those names."""
    root = Path(path)
    problems: list[DataError] = []
    notes: list[DataError] = []
    summary: dict = {"path": str(root), "kinds": []}
    if not root.exists():
        return summary, [DataError(root, "does not exist")]
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    base = root.parent if root.is_file() else root
    folder = root if root.is_dir() else None     # what a relative split list / image root is under

    video_files = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    infos, video_rows = _check_videos(video_files, base, decode_tail, problems)
    game_dirs = sorted({f.parent for f in files
                        if f.name == soccernet.LABELS_FILE or soccernet._HALF_VIDEO.match(f.name)})
    in_games: set[Path] = set()
    if game_dirs:
        summary["kinds"].append("soccernet")
        summary["soccernet"], in_games = _soccernet_summary(game_dirs, infos, folder, soccer_splits,
                                                            problems, notes)
    coco_files, json_problems = _coco_candidates(files)
    problems += json_problems
    if coco_files:
        summary["kinds"].append("deepsportradar")
        summary["deepsportradar"] = _deepsportradar_summary(coco_files, folder, base, basketball_coco,
                                                            basketball_images, problems, notes)
    if any(v not in in_games for v in video_files):
        summary["kinds"].append("videos")
    summary["videos"] = video_rows
    summary["video_files"] = len(video_files)
    summary["videos_ok"] = len(video_rows)
    if not summary["kinds"]:
        problems.append(DataError(root, "no SoccerNet games, DeepSportRadar COCO json or videos found"))
    summary["problems"] = len(problems)
    summary["notes"] = problems_json(notes)
    return summary, problems


def _check_videos(video_files: list[Path], base: Path, decode_tail: bool,
                  problems: list[DataError]) -> tuple[dict[Path, VideoInfo], list[dict]]:
    """Every video checked once: its info (the readable ones) and its summary row."""
    infos: dict[Path, VideoInfo] = {}
    rows = []
    for v in video_files:
        try:
            info = check_video(v) if decode_tail else probe_video(v)
        except DataError as exc:
            problems.append(exc)
            continue
        infos[v] = info
        rows.append({"path": _rel(v, base), "codec": info.codec, "width": info.width,
                     "height": info.height, "fps": round(info.frames_per_s, 3),
                     "duration_s": round(info.duration_s, 3)})
    return infos, rows


def _soccernet_summary(game_dirs: list[Path], infos: dict[Path, VideoInfo], folder: Path | None,
                       soccer_splits: str, problems: list[DataError], notes: list[DataError]
                       ) -> tuple[dict, set[Path]]:
    """The SoccerNet games' summary (counts, per-game rows, the probe's split) and the videos
    that belong to a game."""
    counts = {c: 0 for c in SOCCER_CLASSES}
    visibility: dict[str, int] = {}
    games, game_objs, in_games = [], [], set()
    n_halves = n_events = n_labels = duplicates = 0
    for game_dir in game_dirs:
        game = soccernet._game(game_dir)
        game_objs.append(game)
        in_games.update(game.videos.values())
        for half in (1, 2):
            if half not in game.videos:
                problems.append(DataError(game_dir, f"half {half} video missing (expected "
                                                    f"{half}_224p.mkv beside {soccernet.LABELS_FILE})"))
        n_halves += len(game.videos)
        events: list = []
        if game.labels is None:
            problems.append(DataError(game_dir / soccernet.LABELS_FILE, "missing (no action labels "
                                                                        "for this game)"))
        else:
            n_labels += 1
            events = _game_events(game, infos, problems, notes)
            for e in events:
                counts[e.label] += 1
                visibility[e.visibility] = visibility.get(e.visibility, 0) + 1
            duplicates += len(events) - len(soccernet.unique_events(events))
        n_events += len(events)
        games.append({"id": game.id, "halves": sorted(game.videos), "events": len(events),
                      "labels": game.labels is not None})
    summary = {"games": len(games), "halves": n_halves, "labels_files": n_labels,
               "events": n_events, "events_per_class": counts,
               "visibility": dict(sorted(visibility.items())),
               "duplicate_events": duplicates, "game_list": games}
    split = _soccer_split(game_objs, games, folder, soccer_splits, problems)
    if split is not None:
        summary["split"] = split
    return summary, in_games


def _game_events(game, infos: dict[Path, VideoInfo], problems: list[DataError],
                 notes: list[DataError]) -> list:
    """A game's labelled events; their problems and quirks go to problems / notes."""
    events, label_problems = soccernet.scan_labels(game.labels)
    problems += label_problems
    # positions are checked against the halves whose video is readable (a missing or broken
    # video is reported once, by _check_videos)
    durations = {h: infos[v].duration_s for h, v in game.videos.items() if v in infos}
    problems += soccernet.position_problems(
        [e for e in events if e.half in durations], durations, game.labels)
    notes += soccernet.label_notes(game.labels, events)
    return events


def _soccer_split(game_objs: list, games: list[dict], folder: Path | None, soccer_splits: str,
                  problems: list[DataError]) -> dict | None:
    """The split the soccer probe would use (each game row gets its "split"), None if it cannot."""
    try:
        plan = soccernet.plan_splits(game_objs, lists_dir=soccer_splits, root=folder)
    except DataError as exc:
        problems.append(exc)
        return None
    split_of = {g.id: k for k, gs in plan.splits.items() for g in gs}
    for g in games:
        g["split"] = split_of.get(g["id"])
    return {"source": plan.source, "lists": plan.lists, "rule": plan.describe(),
            "games": {k: len(v) for k, v in plan.splits.items()},
            "listed_missing": len(plan.missing), "listed_missing_games": list(plan.missing),
            "unlisted": list(plan.unlisted)}


def _deepsportradar_summary(coco_files: list[Path], folder: Path | None, base: Path,
                            basketball_coco: str, basketball_images: str,
                            problems: list[DataError], notes: list[DataError]) -> dict:
    """The COCO files' summary: per file, per arena, and which file the probe would use."""
    arenas: dict[str, dict] = {}
    n_images = n_masks = 0
    seen: set = set()
    per_file, unlabelled, images_roots, image_problems = {}, [], set(), set()
    for f in coco_files:
        try:
            roots = dsr.image_roots(f, folder, basketball_images)
        except ConfigError as exc:
            problems.append(DataError(basketball_images, str(exc)))
            break
        # each file on its own (train.json and trainvaltest.json list the same images); an
        # image problem is reported once, for the first file that lists the image
        samples, p = dsr._scan_file(f, roots, set(), check_images=True, notes=notes)
        problems += [x for x in p if x.path.endswith(".json") or x.path not in image_problems]
        image_problems.update(x.path for x in p if not x.path.endswith(".json"))
        per_file[_rel(f, base)] = {"images": len(samples) + sum(not x.path.endswith(".json") for x in p),
                                   "labelled": sum(s.labelled for s in samples),
                                   "unlabelled": sum(not s.labelled for s in samples),
                                   "masks": sum(len(s.annotations) for s in samples)}
        for s in samples:
            if s.file_name in seen:
                continue
            seen.add(s.file_name)
            images_roots.update(str(r) for r in roots if r / s.file_name == s.image_path)
            if not s.labelled:
                unlabelled.append(s.file_name)
            a = arenas.setdefault(s.arena, {"images": 0, "masks": 0})
            a["images"] += 1
            a["masks"] += len(s.annotations)
            n_images += 1
            n_masks += len(s.annotations)
    try:
        probe_coco = _rel(dsr.choose_coco(coco_files[0].parent, basketball_coco), base)
    except (ConfigError, DataError) as exc:
        probe_coco = f"(none: {exc})"
    return {"json_files": [_rel(f, base) for f in coco_files],
            "probe_coco": probe_coco, "images_root": sorted(images_roots),
            "images": n_images, "labelled": n_images - len(unlabelled),
            "unlabelled": len(unlabelled), "masks": n_masks,
            "per_file": per_file, "unlabelled_images": sorted(unlabelled),
            "arenas": dict(sorted(arenas.items()))}


def problems_json(problems: list[DataError]) -> list[dict]:
    return [{"file": p.path, "reason": p.reason} for p in problems]
