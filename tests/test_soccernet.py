"""SoccerNet tree, Labels-v2.json parsing (real schema, edge cases, errors) and game splits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sportray.config import SOCCER_CLASSES
from sportray.data import soccernet
from sportray.data.errors import DataError

GAME = "england_epl/2014-2015/2015-02-21 - 18-00 Chelsea 1 - 1 Burnley"


def _labels(annotations, **extra) -> dict:
    doc = {"UrlLocal": GAME + "/", "UrlYoutube": "", "gameAwayTeam": "Burnley",
           "gameDate": "21/02/2015 - 18:00", "gameHomeTeam": "Chelsea", "gameScore": "1 - 1",
           "annotations": annotations}
    doc.update(extra)
    return doc


def _write(tmp_path: Path, doc, name="Labels-v2.json") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def _ann(game_time="1 - 00:12", label="Foul", position="12480", team="home", visibility="visible"):
    return {"gameTime": game_time, "label": label, "position": position, "team": team,
            "visibility": visibility}


# ----------------------------------------------------------------------------- parsing

def test_read_labels_real_schema_and_edge_cases(tmp_path):
    p = _write(tmp_path, _labels([
        _ann("1 - 00:00", "Kick-off", "0", "away"),
        _ann("2 - 44:59", "Yellow->red card", "2699480", "home", "not shown"),
        _ann("1 - 05:12", "Corner", 312480, "not applicable"),          # int position accepted
        _ann("2 - 91:05", "Goal", "5465000"),                           # long second halves
    ]))
    events = soccernet.read_labels(p)
    assert [e.label for e in events] == ["Kick-off", "Yellow->red card", "Corner", "Goal"]
    e = events[1]
    assert (e.half, e.game_time, e.position_ms) == (2, "2 - 44:59", 2699480)
    assert e.label_id == SOCCER_CLASSES.index("Yellow->red card") == 16
    assert e.visibility == "not shown" and e.team == "home" and e.index == 1
    assert events[2].position_ms == 312480 and events[2].team == "not applicable"
    assert events[0].label_id == 1 and events[0].half == 1
    assert events[3].half == 2 and events[3].game_time == "2 - 91:05"


def test_every_class_name_is_accepted(tmp_path):
    anns = [_ann(label=c, position=str(1000 * i)) for i, c in enumerate(SOCCER_CLASSES)]
    p = _write(tmp_path, _labels(anns))
    assert [e.label_id for e in soccernet.read_labels(p)] == list(range(17))


@pytest.mark.parametrize("content, reason", [
    ("{not json", "not JSON"),
    (json.dumps({"UrlLocal": GAME}), "'annotations' list missing"),
    (json.dumps({"annotations": {"a": 1}}), "'annotations' list not a list"),
    (json.dumps([1, 2]), "'annotations' list missing"),
])
def test_file_level_errors_name_file_and_reason(tmp_path, content, reason):
    p = _write(tmp_path, content)
    with pytest.raises(DataError) as ei:
        soccernet.read_labels(p)
    msg = str(ei.value)
    assert "Labels-v2.json" in msg and reason in msg


@pytest.mark.parametrize("bad, reason", [
    (_ann(label="Shot"), "unknown label 'Shot'"),
    (_ann(label="yellow card"), "unknown label 'yellow card'"),
    (_ann(position="12a"), "position '12a' is not a number"),
    (_ann(position=""), "is not a number"),
    (_ann(position=-5), "is not a number"),
    (_ann(position=None), "is not a number"),
    (_ann(game_time="3 - 10:00"), "gameTime '3 - 10:00' is malformed"),
    (_ann(game_time="1 - 5:61"), "gameTime '1 - 5:61' is malformed"),
    (_ann(game_time="12:00"), "gameTime '12:00' is malformed"),
    ({"label": "Foul", "position": "1"}, "has no 'gameTime'"),
    ({"gameTime": "1 - 00:01", "position": "1"}, "has no 'label'"),
    ({"gameTime": "1 - 00:01", "label": "Foul"}, "has no 'position'"),
])
def test_annotation_errors_name_file_index_and_reason(tmp_path, bad, reason):
    p = _write(tmp_path, _labels([_ann(), _ann(), bad]))
    with pytest.raises(DataError) as ei:
        soccernet.read_labels(p)
    msg = str(ei.value)
    assert str(p) in msg and "annotation #2" in msg and reason in msg, msg


def test_unknown_label_lists_the_17_known(tmp_path):
    p = _write(tmp_path, _labels([_ann(label="Handball")]))
    with pytest.raises(DataError) as ei:
        soccernet.read_labels(p)
    msg = str(ei.value)
    assert "17 known" in msg and "Penalty" in msg and "Yellow->red card" in msg


def test_scan_labels_reports_every_bad_annotation(tmp_path):
    p = _write(tmp_path, _labels([_ann(label="X"), _ann(), _ann(position="x")]))
    events, problems = soccernet.scan_labels(p)
    assert len(events) == 1 and events[0].index == 1
    assert ["annotation #0" in str(problems[0]), "annotation #2" in str(problems[1])] == [True, True]


def test_check_positions_beyond_the_half(tmp_path):
    p = _write(tmp_path, _labels([_ann("1 - 00:10", position="10000"), _ann("2 - 00:50", position="50000")]))
    events = soccernet.read_labels(p)
    soccernet.check_positions(events, {1: 60.0, 2: 50.04}, p)        # inside: fine
    with pytest.raises(DataError) as ei:
        soccernet.check_positions(events, {1: 60.0, 2: 45.0}, p)
    msg = str(ei.value)
    assert "Labels-v2.json" in msg and "annotation #1" in msg and "beyond" in msg and "half 2" in msg
    with pytest.raises(DataError, match="half 2 has no video"):
        soccernet.check_positions(events, {1: 60.0}, p)
    assert soccernet.position_problems(events, {1: 5.0, 2: 10.0}, p).__len__() == 2


# ----------------------------------------------------------------------------- games

def _make_game(root: Path, gid: str, videos=("1_224p.mkv", "2_224p.mkv"), labels=True) -> Path:
    folder = root / gid
    folder.mkdir(parents=True)
    for v in videos:
        (folder / v).write_bytes(b"")
    if labels:
        (folder / "Labels-v2.json").write_text(json.dumps(_labels([_ann()])))
    return folder


def test_find_games_layout(tmp_path):
    _make_game(tmp_path, GAME)
    _make_game(tmp_path, "italy_serie-a/2016-2017/2016-09-18 - 21-45 AS Roma 3 - 2 Sampdoria",
               videos=("1_720p.mkv", "1_224p.mkv", "2_720p.mkv"))
    _make_game(tmp_path, "spain_laliga/2015-2016/no labels game", labels=False)
    (tmp_path / "README.txt").write_text("not a game")
    games = soccernet.find_games(tmp_path)
    assert [g.id for g in games] == sorted(g.id for g in games)
    by = {g.id: g for g in games}
    g = by[GAME]
    assert (g.league, g.season, g.name) == ("england_epl", "2014-2015",
                                            "2015-02-21 - 18-00 Chelsea 1 - 1 Burnley")
    assert sorted(g.videos) == [1, 2] and g.videos[1].name == "1_224p.mkv"
    assert g.labels == g.path / "Labels-v2.json"
    roma = by["italy_serie-a/2016-2017/2016-09-18 - 21-45 AS Roma 3 - 2 Sampdoria"]
    assert roma.videos[1].name == "1_224p.mkv" and roma.videos[2].name == "2_720p.mkv"
    assert by["spain_laliga/2015-2016/no labels game"].labels is None
    # the id is the same when pointing at a league folder
    assert [x.id for x in soccernet.find_games(tmp_path / "england_epl")] == [GAME]


def test_find_games_not_a_directory(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        soccernet.find_games(tmp_path / "missing")


# ----------------------------------------------------------------------------- splits

def _games(tmp_path, n):
    for i in range(n):
        _make_game(tmp_path, f"league/2020-2021/game {i:02d}")
    return soccernet.find_games(tmp_path)


@pytest.mark.parametrize("n", [3, 4, 8, 20])
def test_seeded_split_by_game(tmp_path, n):
    games = _games(tmp_path, n)
    s = soccernet.split_games(games, seed=3)
    ids = {k: [g.id for g in v] for k, v in s.items()}
    assert all(ids[k] for k in ("train", "valid", "test")), ids
    flat = ids["train"] + ids["valid"] + ids["test"]
    assert sorted(flat) == sorted(g.id for g in games) and len(set(flat)) == n
    assert s == soccernet.split_games(games, seed=3)                       # deterministic
    if n == 20:
        assert (len(ids["test"]), len(ids["valid"])) == (3, 3)
        assert any(soccernet.split_games(games, seed=k)["test"] != s["test"] for k in range(4, 10))


def test_split_small(tmp_path):
    two = _games(tmp_path, 2)
    s = soccernet.split_games(two, seed=0)
    assert (len(s["train"]), len(s["valid"]), len(s["test"])) == (1, 0, 1)
    s1 = soccernet.split_games(two[:1], seed=0)
    assert (len(s1["train"]), len(s1["valid"]), len(s1["test"])) == (1, 0, 0)


def test_split_from_lists(tmp_path):
    games = _games(tmp_path / "data", 5)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("# SoccerNet-style list\nleague/2020-2021/game 00\n"
                                     "league/2020-2021/game 01/\n\n  league/2020-2021/game 02  \n"
                                     "league/2020-2021/not downloaded\n")
    (lists / "valid.txt").write_text("league/2020-2021/game 03\n")
    (lists / "test.txt").write_text("league/2020-2021/game 04\n")
    s = soccernet.split_games(games, seed=0, lists_dir=lists)
    assert [g.name for g in s["train"]] == ["game 00", "game 01", "game 02"]
    assert [g.name for g in s["valid"]] == ["game 03"] and [g.name for g in s["test"]] == ["game 04"]


def test_split_lists_errors(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("a/b/c\n")
    (lists / "valid.txt").write_text("a/b/d\n")
    with pytest.raises(DataError) as ei:
        soccernet.read_split_lists(lists)
    assert "test.txt" in str(ei.value) and "missing" in str(ei.value)
    (lists / "test.txt").write_text("a/b/c\n")
    with pytest.raises(DataError) as ei:
        soccernet.read_split_lists(lists)
    assert "test.txt" in str(ei.value) and "'a/b/c' is also in train.txt" in str(ei.value)
