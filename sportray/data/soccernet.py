"""SoccerNet: the game tree, the action-spotting labels (Labels-v2.json) and the game split.

Layout (as the SoccerNet downloader writes it)::

    ROOT/<league>/<season>/<game>/1_224p.mkv     first half   (also 1_720p.mkv, .mp4; 224p preferred)
                                  2_224p.mkv     second half
                                  Labels-v2.json action-spotting labels

A game's id is "league/season/game" (the last three folders of its path, so the id is the
same whether ROOT is the SoccerNet root or a league folder); it is what the split lists name.

Labels-v2.json (the real schema)::

    {"UrlLocal": "england_epl/2014-2015/2015-02-21 - 18-00 Chelsea 1 - 1 Burnley/",
     "UrlYoutube": "", "gameHomeTeam": ..., "gameAwayTeam": ..., "gameScore": "1 - 1", ...,
     "annotations": [{"gameTime": "1 - 05:12", "label": "Foul", "position": "312480",
                      "team": "home", "visibility": "visible"}, ...]}

`gameTime` is "H - MM:SS" (H = half, 1 or 2; MM may exceed 59 in long halves), `position` is
the time in milliseconds from the start of that half's video, as a string (an int is accepted
too), `visibility` is "visible" or "not shown", `team` "home", "away" or "not applicable".
Every problem is a DataError naming the file and the annotation index (0-based, as in the list).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sportray.config import SOCCER_CLASSES
from sportray.data.errors import DataError

LABELS_FILE = "Labels-v2.json"
SPLITS = ("train", "valid", "test")
_HALF_VIDEO = re.compile(r"^([12])_(\d+)p\.(mkv|mp4)$", re.IGNORECASE)
_GAME_TIME = re.compile(r"^\s*([12])\s*-\s*(\d{1,3}):([0-5]\d)\s*$")


@dataclass(frozen=True)
class Game:
    league: str
    season: str
    name: str
    path: Path
    videos: dict = field(default_factory=dict)   # {half (1|2): Path}
    labels: Path | None = None

    @property
    def id(self) -> str:
        return f"{self.league}/{self.season}/{self.name}"


@dataclass(frozen=True)
class Event:
    half: int              # 1 or 2, from gameTime
    game_time: str         # "H - MM:SS" as written in the file
    position_ms: int       # ms from the start of that half's video
    label: str
    label_id: int          # SOCCER_CLASSES.index(label)
    team: str
    visibility: str        # "visible" | "not shown"
    index: int = -1        # position in the file's annotations list (for messages)


# ----------------------------------------------------------------------------- games

def _half_videos(folder: Path) -> dict[int, Path]:
    """{half: video}; with several resolutions per half, the smallest (224p) wins."""
    best: dict[int, tuple[int, Path]] = {}
    for p in folder.iterdir():
        m = _HALF_VIDEO.match(p.name)
        if m and p.is_file():
            half, res = int(m.group(1)), int(m.group(2))
            if half not in best or res < best[half][0]:
                best[half] = (res, p)
    return {h: p for h, (_, p) in sorted(best.items())}


def is_game_dir(folder: Path) -> bool:
    return folder.is_dir() and ((folder / LABELS_FILE).is_file() or bool(_half_videos(folder)))


def _game(folder: Path) -> Game:
    parts = folder.resolve().parts
    league, season, name = (("", "", "") + tuple(parts[1:]))[-3:]
    labels = folder / LABELS_FILE
    return Game(league, season, name, folder, _half_videos(folder),
                labels if labels.is_file() else None)


def find_games(root: str | Path) -> list[Game]:
    """Every game folder under root (a folder holding Labels-v2.json or {1,2}_<res>p.mkv).

    `root` may be the SoccerNet root, a league or season folder, or one game folder.
    Sorted by game id.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "is not a directory (expected a SoccerNet root: league/season/game/)")
    folders = {root} if is_game_dir(root) else set()
    for p in root.rglob("*"):
        if p.is_file() and (p.name == LABELS_FILE or _HALF_VIDEO.match(p.name)):
            folders.add(p.parent)
    return sorted((_game(f) for f in folders), key=lambda g: g.id)


# ----------------------------------------------------------------------------- labels

def _known_labels() -> str:
    return f"{len(SOCCER_CLASSES)} known: " + ", ".join(SOCCER_CLASSES)


def _parse_annotation(path: Path, i: int, ann) -> Event:
    where = f"annotation #{i}"
    if not isinstance(ann, dict):
        raise DataError(path, f"{where} is not an object (got {type(ann).__name__})")
    for key in ("gameTime", "label", "position"):
        if key not in ann:
            raise DataError(path, f"{where} has no '{key}'")
    game_time = ann["gameTime"]
    m = _GAME_TIME.match(game_time) if isinstance(game_time, str) else None
    if not m:
        raise DataError(path, f"{where}: gameTime {game_time!r} is malformed "
                              "(expected 'H - MM:SS' with H 1 or 2, e.g. '2 - 44:59')")
    label = ann["label"]
    if label not in SOCCER_CLASSES:
        raise DataError(path, f"{where}: unknown label {label!r} ({_known_labels()})")
    pos = ann["position"]
    if isinstance(pos, bool):
        pos = None
    elif isinstance(pos, str):
        pos = int(pos.strip()) if re.fullmatch(r"\s*\d+\s*", pos) else None
    elif isinstance(pos, float) and pos.is_integer() and pos >= 0:
        pos = int(pos)
    elif not isinstance(pos, int) or pos < 0:
        pos = None
    if pos is None:
        raise DataError(path, f"{where}: position {ann['position']!r} is not a number "
                              "(expected milliseconds from the start of the half, e.g. \"312480\")")
    return Event(half=int(m.group(1)), game_time=game_time.strip(), position_ms=pos, label=label,
                 label_id=SOCCER_CLASSES.index(label), team=str(ann.get("team", "")),
                 visibility=str(ann.get("visibility", "visible")), index=i)


def scan_labels(path: str | Path) -> tuple[list[Event], list[DataError]]:
    """All good events of a Labels-v2.json and one DataError per bad annotation (or file)."""
    path = Path(path)
    if not path.is_file():
        return [], [DataError(path, "labels file does not exist")]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        return [], [DataError(path, f"not JSON (not UTF-8 text: {exc.reason})")]
    except json.JSONDecodeError as exc:
        return [], [DataError(path, f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")]
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        what = "missing" if not isinstance(doc, dict) or "annotations" not in doc else "not a list"
        return [], [DataError(path, f"'annotations' list {what} (not a SoccerNet Labels-v2.json)")]
    events, problems = [], []
    for i, ann in enumerate(doc["annotations"]):
        try:
            events.append(_parse_annotation(path, i, ann))
        except DataError as exc:
            problems.append(exc)
    return events, problems


def read_labels(path: str | Path) -> list[Event]:
    """Parse a Labels-v2.json; the first problem raises DataError (file + annotation index)."""
    events, problems = scan_labels(path)
    if problems:
        raise problems[0]
    return events


def position_problems(events, durations_by_half: dict, path: str | Path = "<labels>"
                      ) -> list[DataError]:
    """One DataError per event whose position is not inside its half's video.

    durations_by_half: {half: duration in seconds}. A position at or beyond the duration has no
    frame to show; a half without a duration (no video) is a problem for each of its events.
    """
    problems = []
    for e in events:
        d = durations_by_half.get(e.half)
        where = f"annotation #{e.index} ({e.label}, {e.game_time})"
        if d is None:
            problems.append(DataError(path, f"{where}: half {e.half} has no video to check against"))
        elif e.position_ms >= round(float(d) * 1000):
            problems.append(DataError(path, f"{where}: position {e.position_ms} ms is beyond the "
                                            f"duration of half {e.half} ({float(d):.3f} s)"))
    return problems


def check_positions(events, durations_by_half: dict, path: str | Path = "<labels>") -> None:
    """Raise DataError for the first event whose position is beyond its half's duration."""
    problems = position_problems(events, durations_by_half, path)
    if problems:
        raise problems[0]


def game_events(game: Game, check: bool = True) -> list[Event]:
    """Events of a game; with check, every position is checked against its half's video."""
    if game.labels is None:
        raise DataError(game.path, f"no {LABELS_FILE}")
    events = read_labels(game.labels)
    if check:
        from sportray.data.video import probe_video
        durations = {h: probe_video(v).duration_s for h, v in game.videos.items()}
        check_positions(events, durations, game.labels)
    return events


def label_notes(path: str | Path, events: list[Event]) -> list[DataError]:
    """Label quirks of one Labels-v2.json, one DataError (file + what) each; never silent.

    - a gameTime that disagrees with position (their seconds differ by more than 1): position
      wins, as in SoccerNet's own tools (the frame is taken at position);
    - a duplicate event (same half, position, label, team and visibility as an earlier one): the
      probe set takes it once;
    - an out-of-order event (its position is before an earlier event of the same half in file
      order): harmless, the probe set orders by position.
    """
    notes: list[DataError] = []
    seen: dict = {}
    latest: dict[int, Event] = {}
    for e in events:
        where = f"annotation #{e.index} ({e.label}, {e.game_time})"
        m = _GAME_TIME.match(e.game_time)
        game_s = int(m.group(2)) * 60 + int(m.group(3))
        if abs(game_s - e.position_ms / 1000) >= 2.0:
            notes.append(DataError(path, f"{where}: gameTime disagrees with position {e.position_ms} ms "
                                         f"({e.position_ms // 60000:02d}:{e.position_ms // 1000 % 60:02d});"
                                         " position wins"))
        key = (e.half, e.position_ms, e.label, e.team, e.visibility)
        if key in seen:
            notes.append(DataError(path, f"{where}: duplicate of annotation #{seen[key]} "
                                         "(taken once)"))
        else:
            seen[key] = e.index
        last = latest.get(e.half)
        if last is not None and e.position_ms < last.position_ms:
            notes.append(DataError(path, f"{where}: out of order (position {e.position_ms} ms is before "
                                         f"annotation #{last.index} at {last.position_ms} ms)"))
        if last is None or e.position_ms >= last.position_ms:
            latest[e.half] = e
    return notes


def unique_events(events: list[Event]) -> list[Event]:
    """Events with exact duplicates (label_notes' rule) taken once, in file order."""
    seen, out = set(), []
    for e in events:
        key = (e.half, e.position_ms, e.label, e.team, e.visibility)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


# ----------------------------------------------------------------------------- splits

OFFICIAL_SPLIT_FILES = {"train": "SoccerNetGamesTrain.json", "valid": "SoccerNetGamesValid.json",
                        "test": "SoccerNetGamesTest.json"}


def _official_ids(path: Path) -> list[str]:
    """Game ids of one SoccerNetGames<Split>.json: {league: {season: [game, ...]}} (what
    SoccerNet's getListGames reads), or a plain list of "league/season/game"."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not JSON ({getattr(exc, 'msg', exc)})") from None
    if isinstance(doc, list):
        return [str(g).strip().rstrip("/") for g in doc]
    if not isinstance(doc, dict):
        raise DataError(path, "not a SoccerNet split list (expected {league: {season: [game, ...]}})")
    ids = []
    for league, seasons in doc.items():
        if not isinstance(seasons, dict):
            raise DataError(path, f"league {league!r}: expected {{season: [game, ...]}}")
        for season, names in seasons.items():
            if not isinstance(names, list):
                raise DataError(path, f"{league}/{season}: expected a list of game folders")
            ids += [f"{league}/{season}/{str(n).strip().rstrip('/')}" for n in names]
    return ids


def has_split_lists(folder: str | Path) -> bool:
    """True when folder holds SoccerNet's SoccerNetGames{Train,Valid,Test}.json or train/valid/test.txt."""
    folder = Path(folder)
    return folder.is_dir() and (all((folder / f).is_file() for f in OFFICIAL_SPLIT_FILES.values())
                                or all((folder / f"{s}.txt").is_file() for s in SPLITS))


def read_split_lists(lists_dir: str | Path) -> dict[str, list[str]]:
    """Split lists: SoccerNet's official SoccerNetGames{Train,Valid,Test}.json in lists_dir
    (see _official_ids), or else lists_dir/train.txt, valid.txt, test.txt.

    Format (SoccerNet's getListGames as text): one game id "league/season/game" per line, as in
    the SoccerNet downloader's lists, e.g. ``england_epl/2014-2015/2015-02-21 - 18-00 Chelsea 1 - 1 Burnley``.
    Leading/trailing spaces and a trailing "/" are ignored, so are blank lines and lines starting
    with "#". A game id listed in two splits is an error.
    """
    lists_dir = Path(lists_dir)
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    if any((lists_dir / f).is_file() for f in OFFICIAL_SPLIT_FILES.values()):
        for split, name in OFFICIAL_SPLIT_FILES.items():
            f = lists_dir / name
            if not f.is_file():
                raise DataError(f, "split list missing (SoccerNet's official lists are "
                                   + ", ".join(OFFICIAL_SPLIT_FILES.values()) + ")")
            ids = _official_ids(f)
            for gid in ids:
                if gid in seen and seen[gid] != split:
                    raise DataError(f, f"game {gid!r} is also in {OFFICIAL_SPLIT_FILES[seen[gid]]}")
                seen[gid] = split
            out[split] = ids
        return out
    for split in SPLITS:
        f = lists_dir / f"{split}.txt"
        if not f.is_file():
            raise DataError(f, f"split list missing (need {', '.join(s + '.txt' for s in SPLITS)} "
                               "with one game id league/season/game per line)")
        ids = []
        for line in f.read_text(encoding="utf-8").splitlines():
            gid = line.strip().rstrip("/")
            if not gid or gid.startswith("#"):
                continue
            if gid in seen and seen[gid] != split:
                raise DataError(f, f"game {gid!r} is also in {seen[gid]}.txt")
            seen[gid] = split
            ids.append(gid)
        out[split] = ids
    return out


def split_games(games: list[Game], seed: int = 0, lists_dir: str | Path | None = None,
                fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, list[Game]]:
    """{"train", "valid", "test"} -> games; held-out games are never seen by the probe.

    With lists_dir: the split lists decide (see read_split_lists); listed games that are absent
    are skipped, games present but in no list are left out of every split.
    Without: a seeded shuffle of the game ids, test = round(n * f_test) and valid =
    round(n * f_valid) games, each at least 1 when n >= 3, train the rest. n = 2: one train, one
    test game; n = 1: train only.
    """
    games = sorted(games, key=lambda g: g.id)
    if lists_dir is not None:
        lists = read_split_lists(lists_dir)
        by_id = {g.id: g for g in games}
        return {s: [by_id[i] for i in lists[s] if i in by_id] for s in SPLITS}
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions {fractions!r}: expected three non-negative numbers")
    total = float(sum(fractions))
    n = len(games)
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [games[i] for i in order]
    if n >= 3:
        n_test = min(max(1, round(n * fractions[2] / total)), n - 2)
        n_valid = min(max(1, round(n * fractions[1] / total)), n - 1 - n_test)
    elif n == 2:
        n_test, n_valid = 1, 0
    else:
        n_test, n_valid = 0, 0
    test = shuffled[:n_test]
    valid = shuffled[n_test:n_test + n_valid]
    train = shuffled[n_test + n_valid:]
    key = lambda g: g.id  # noqa: E731
    return {"train": sorted(train, key=key), "valid": sorted(valid, key=key),
            "test": sorted(test, key=key)}


@dataclass(frozen=True)
class SplitPlan:
    """Which games each probe split holds, and where that came from (recorded in MLflow)."""
    splits: dict                       # {"train"|"valid"|"test": [Game]}
    source: str                        # "official" (split lists) | "seeded"
    lists: str = ""                    # the folder of the split lists ("" when seeded)
    seed: int | None = None            # the seed of a seeded split
    missing: tuple = ()                # listed game ids that are not present
    unlisted: tuple = ()               # present game ids that no list names (left out)

    def describe(self) -> str:
        if self.source == "official":
            return f"official split lists in {self.lists}"
        return f"seeded split (seed {self.seed}; no split lists given or found)"


def plan_splits(games: list[Game], seed: int = 0, lists_dir: str | Path | None = "",
                root: str | Path | None = None) -> SplitPlan:
    """Probe splits: the split lists when given (lists_dir) or when `root` holds them
    (has_split_lists), else the seeded split (split_games). Listed games that are absent and
    present games no list names are reported in the plan (the latter are in no split)."""
    folder = Path(lists_dir) if lists_dir else None
    if folder is not None and not has_split_lists(folder):
        raise DataError(folder, "no split lists here (expected " + ", ".join(OFFICIAL_SPLIT_FILES.values())
                                + ", from SoccerNet's package data, or train.txt/valid.txt/test.txt)")
    if folder is None and root is not None and has_split_lists(root):
        folder = Path(root)
    if folder is None:
        return SplitPlan(split_games(games, seed=seed), "seeded", seed=seed)
    lists = read_split_lists(folder)
    by_id = {g.id: g for g in games}
    listed = {gid for ids in lists.values() for gid in ids}
    return SplitPlan({s: [by_id[i] for i in lists[s] if i in by_id] for s in SPLITS}, "official",
                     lists=str(folder), missing=tuple(sorted(listed - set(by_id))),
                     unlisted=tuple(sorted(set(by_id) - listed)))
