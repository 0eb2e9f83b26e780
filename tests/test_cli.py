"""The command line as a user meets it: --help everywhere, and bad input that names the
option or file, exits non-zero, and starts nothing (checked before Ray or training start)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from sportray.config import ConfigError, PretrainConfig, parse_views


def sportray(*args, cwd=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "sportray.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("command", ["synth", "inspect", "frames", "pretrain", "probe", "scorecard", "sweep"])
def test_every_command_has_help(command):
    out = sportray(command, "--help")
    assert out.returncode == 0 and "usage:" in out.stdout


def test_views_spec_parses_groups():
    assert parse_views("2x224+6x96") == ((2, 224), (6, 96))
    assert parse_views("6x224") == ((6, 224),)


@pytest.mark.parametrize("spec", ["3x0", "2x224+x96", "2x225", "", "2x224+", "ax224"])
def test_bad_views_specs_are_named(spec):
    with pytest.raises(ConfigError, match="--views"):
        parse_views(spec)


@pytest.mark.parametrize("field, value, flag", [("steps", 0, "--steps"), ("steps", -5, "--steps"),
                                                ("clip", -1.0, "--clip"), ("arm", "lorax", "--arm"),
                                                ("batch_size", 0, "--batch-size")])
def test_bad_recipe_values_are_named(field, value, flag):
    with pytest.raises(ConfigError, match=flag):
        PretrainConfig(**{field: value}).validate()


@pytest.mark.parametrize("args, expect", [
    (["--views", "3x0"], "--views '3x0'"),
    (["--views", "2x224+x96"], "group 'x96'"),
    (["--steps", "0"], "--steps 0"),
    (["--clip", "-1"], "--clip -1.0"),
])
def test_pretrain_rejects_bad_options_before_anything_starts(tmp_path, args, expect):
    t0 = time.time()
    out = sportray("pretrain", *args, "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert out.returncode == 2
    assert expect in out.stderr and "Traceback" not in out.stderr
    assert time.time() - t0 < 60
    assert not (tmp_path / "d").exists(), "nothing generated for a run that cannot start"


def test_unreachable_tracking_uri_is_said_before_training(tmp_path):
    out = sportray("pretrain", "--tracking-uri", "http://127.0.0.1:9", "--data-dir", str(tmp_path / "d"),
                   cwd=tmp_path)
    assert out.returncode == 2
    assert "http://127.0.0.1:9" in out.stderr and "not reachable" in out.stderr
    assert not (tmp_path / "d").exists()


def test_dinov3_reference_without_weights_is_unavailable_not_random(tmp_path):
    out = sportray("probe", "--reference", "dinov3", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert out.returncode == 2
    assert "unavailable" in out.stderr and "--weights" in out.stderr


def test_inspect_reports_bad_files_and_exits_non_zero(tmp_path):
    game = tmp_path / "league" / "2020" / "game"
    game.mkdir(parents=True)
    (game / "1_224p.mkv").write_bytes(b"")
    (game / "Labels-v2.json").write_text("{not json")
    out = sportray("inspect", str(tmp_path))
    assert out.returncode == 1
    problems = json.loads(out.stdout)["problems"]
    files = {p["file"].split("/")[-1] for p in problems}
    assert {"1_224p.mkv", "Labels-v2.json"} <= files


def test_data_paths_are_made_absolute_for_ray_workers(tmp_path, monkeypatch):
    # Tune runs each trial in its own directory: a relative --data-dir would name nothing there
    # (the demo's default is the relative "sportray-data").
    from sportray.config import DataConfig

    monkeypatch.chdir(tmp_path)
    d = DataConfig(data_dir="sportray-data", corpus="videos", extra_sources="more:2,other",
                   basketball="", soccer_labels="s3://bucket/labels").absolute()
    assert d.data_dir == str(tmp_path / "sportray-data") and d.corpus == str(tmp_path / "videos")
    assert d.extra_sources == f"{tmp_path / 'more'}:2,{tmp_path / 'other'}"
    assert d.basketball == "" and d.soccer_labels == "s3://bucket/labels"


def test_sportray_sweep_runs_the_sweep_scripts_spec_and_the_scripts_need_no_path_hack(tmp_path):
    """`sportray sweep NAME [--preset P] [--set F=V]` is `python sweeps/NAME.py` with the same
    options: the same resolved configuration (--print-config starts nothing). The scripts import
    sportray as installed (no sys.path hack), from any working directory, and keep only their
    search spaces on the shared demo/paper bases (sportray.presets)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    opts = ["--preset", "demo", "--set", "batch_size=8", "--print-config"]
    via_cli = subprocess.run([sys.executable, "-m", "sportray.cli", "sweep", "scratch_views", *opts],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    via_script = subprocess.run([sys.executable, str(root / "sweeps" / "scratch_views.py"), *opts],
                                capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert via_cli.returncode == 0 and via_script.returncode == 0, via_cli.stderr + via_script.stderr
    resolved = json.loads(via_cli.stdout)
    assert resolved == json.loads(via_script.stdout)
    assert resolved["pretrain"]["batch_size"] == 8 and resolved["pretrain"]["model"] == "vit_tiny_demo"
    unknown = sportray("sweep", "no_such_sweep", cwd=tmp_path)
    assert unknown.returncode == 2 and "no sweep 'no_such_sweep'" in unknown.stderr and "scratch_views" in unknown.stderr
    for script in (root / "sweeps").glob("*.py"):
        text = script.read_text()
        assert "sys.path" not in text, script.name
        if "SweepSpec(" in text:
            assert "from sportray.presets import demo, paper" in text and "pretrain=dict(" not in text, script.name
