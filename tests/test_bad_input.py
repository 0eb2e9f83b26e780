"""docs/bad-input.md, row by row: bad input is refused at the edge with one line naming the flag
or file and the value, exit 2, before Ray starts and with nothing created.

The `table` rows are read from the doc itself (so the doc cannot drift from the behaviour) and
run in-process through the real entry points (`sportray.cli.main`, a sweep script's `main`);
rows that need the cluster, data or several hosts name their own test below.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sportray.config import ConfigError, PretrainConfig

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad-input.md"


def table_rows() -> list[dict]:
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].isdigit():
            continue
        rows.append({"n": int(cells[0]), "command": cells[1], "says": cells[2].strip("`"),
                     "exit": int(cells[3]), "test": cells[4]})
    return rows


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nothing listens there


def _sweep_main(script: str):
    spec = importlib.util.spec_from_file_location(f"_sweep_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda argv: module.main(module.SPEC, argv)


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_table_has_at_least_25_rows_and_every_named_test_exists():
    rows = table_rows()
    assert len(rows) >= 25 and [r["n"] for r in rows] == list(range(1, len(rows) + 1))
    named = {r["test"] for r in rows if r["test"] != "table"}
    here = Path(__file__).read_text()
    assert all(f"def {name}(" in here for name in named), named


@pytest.mark.parametrize("row", [r for r in table_rows() if r["test"] == "table"], ids=lambda r: f"row{r['n']}")
def test_bad_input_row(row, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    user_file = tmp_path / "notes.txt"
    user_file.write_text("a user's file")
    userdir = tmp_path / "userdir"
    userdir.mkdir()
    (userdir / "thesis.tex").write_text("a user's file")
    subs = {"{tmp}": str(work), "{file}": str(user_file), "{userdir}": str(userdir),
            "{closed}": str(_closed_port())}

    def fill(text: str) -> str:
        for k, v in subs.items():
            text = text.replace(k, v)
        return text

    command = re.match(r"`([^`]+)`", row["command"]).group(1)
    argv = shlex.split(fill(command))
    expect = fill(row["says"])
    monkeypatch.chdir(work)
    monkeypatch.setenv("SPORTRAY_DATA_DIR", str(work / "sportray-data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = _listing(tmp_path)
    was_running = "ray" in sys.modules and sys.modules["ray"].is_initialized()

    main = _sweep_main(argv[0]) if argv[0] != "sportray" else __import__("sportray.cli", fromlist=["main"]).main
    try:
        rc = main(argv[1:])
    except SystemExit as exc:     # argparse's own refusals (an unknown option) exit 2 as ours do
        rc = exc.code
    err = capsys.readouterr().err

    assert rc == row["exit"] == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and ": error: " in lines[0], err
    assert expect in lines[0], (expect, lines[0])
    assert "Traceback" not in err
    assert _listing(tmp_path) == before, "bad input created files"
    assert not (not was_running and "ray" in sys.modules and sys.modules["ray"].is_initialized()), \
        "Ray was started for input that was bad"
    assert userdir.joinpath("thesis.tex").read_text() == "a user's file"


def test_a_bad_option_exits_2_from_the_real_command_line(tmp_path):
    # The same edge through a real process: the exit code the shell sees, the single line.
    out = subprocess.run([sys.executable, "-m", "sportray.cli", "synth", str(tmp_path / "d"), "--seed", "-1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == "sportray synth: error: --seed -1: must be >= 0"
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0555 folder anyway")
def test_synth_into_a_read_only_folder(tmp_path, capsys):
    from sportray.cli import main

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["synth", str(ro / "d")]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_a_gpu_request_on_a_cpu_cluster_is_refused_before_trials(ray_session):
    from sportray.validate import check_resources

    assert ray_session.cluster_resources().get("GPU", 0) == 0
    with pytest.raises(ConfigError, match=r"--gpus-per-worker 1: this Ray cluster has no GPU; use --gpus-per-worker 0"):
        check_resources(PretrainConfig(gpus_per_worker=1))
    with pytest.raises(ConfigError, match=r"--cpus-per-worker 64: no node of this Ray cluster has that many CPUs"):
        check_resources(PretrainConfig(cpus_per_worker=64))
    with pytest.raises(ConfigError, match=r"--cpus-per-worker 1.0 x --workers 3 = 3 CPUs, but this Ray cluster has 2"):
        check_resources(PretrainConfig(workers=3))
    check_resources(PretrainConfig(workers=2, cpus_per_worker=1.0))  # fits: no error


def test_a_store_smaller_than_one_global_batch_is_refused_with_the_fix(store):
    from sportray.data.frames import check_store
    from sportray.validate import check_data_fits

    frames = check_store(store)["frames"]
    assert frames == 96
    with pytest.raises(ConfigError, match=r"holds 96 usable frames, fewer than one step's global batch of "
                                          r"--batch-size 64 x --workers 2 = 128: use --batch-size 48"):
        check_data_fits(frames, PretrainConfig(batch_size=64, workers=2), 0, str(store))
    with pytest.raises(ConfigError, match=r"\(--max-frames 20\)"):
        check_data_fits(frames, PretrainConfig(batch_size=32), 20, str(store))
    check_data_fits(frames, PretrainConfig(batch_size=48, workers=2), 0, str(store))


def _inspect(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sportray.cli", "inspect", str(path)], capture_output=True,
                          text=True, timeout=300)


def test_coco_height_with_units_is_one_line_not_a_traceback(tiny_synthetic, tmp_path):
    bad = tmp_path / "dsr"
    shutil.copytree(Path(tiny_synthetic) / "deepsportradar", bad)
    coco = json.loads((bad / "trainvaltest.json").read_text())
    coco["images"][0]["height"] = "480px"
    (bad / "trainvaltest.json").write_text(json.dumps(coco))
    out = _inspect(bad)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "480px" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_duplicate_coco_ids_and_soccer_events_are_noted_not_merged(tiny_synthetic, tmp_path):
    dsr = tmp_path / "dsr"
    shutil.copytree(Path(tiny_synthetic) / "deepsportradar", dsr)
    coco = json.loads((dsr / "trainvaltest.json").read_text())
    coco["images"][1]["id"] = coco["images"][0]["id"]
    (dsr / "trainvaltest.json").write_text(json.dumps(coco))
    notes = json.loads(_inspect(dsr).stdout)["notes"]
    assert any("duplicate image id" in n["reason"] and "left out" in n["reason"] for n in notes)

    sn = tmp_path / "sn"
    shutil.copytree(Path(tiny_synthetic) / "soccernet", sn)
    labels = next(sn.rglob("Labels-v2.json"))
    doc = json.loads(labels.read_text())
    doc["annotations"].append(doc["annotations"][0])
    labels.write_text(json.dumps(doc))
    notes = json.loads(_inspect(sn).stdout)["notes"]
    assert any("duplicate of annotation" in n["reason"] and "taken once" in n["reason"] for n in notes)


def test_resume_refuses_a_changed_configuration_and_prints_the_difference(tmp_path, capsys):
    from sportray.sweep import SWEEP_CONFIG, check_resume, config_diff

    stored = {"pretrain": {"steps": 40, "lr": 1e-3}, "seeds": [0, 1], "store_key": "abc"}
    (tmp_path / SWEEP_CONFIG).write_text(json.dumps(stored))
    check_resume(tmp_path, json.loads(json.dumps(stored)))  # the same: resumes
    now = {"pretrain": {"steps": 60, "lr": 1e-3}, "seeds": [0, 1, 2], "store_key": "def"}
    assert config_diff(stored, now) == ["pretrain.steps: 40 -> 60", "seeds: [0, 1] -> [0, 1, 2]",
                                        "store_key: 'abc' -> 'def'"]
    with pytest.raises(ConfigError, match=r"--resume: .* ran with another configuration \(pretrain.steps: 40 -> 60; "
                                          r"seeds: \[0, 1\] -> \[0, 1, 2\]; store_key: 'abc' -> 'def'\).*--force-resume"):
        check_resume(tmp_path, now)
    check_resume(tmp_path, now, force=True)
    assert "--force-resume: continuing" in capsys.readouterr().err
    (tmp_path / SWEEP_CONFIG).unlink()
    with pytest.raises(ConfigError, match="is missing"):
        check_resume(tmp_path, now)


MOUNTS = ("/dev/sda1 / ext4 rw 0 0\n"
          "server:/export /mnt/shared nfs4 rw 0 0\n")
TWO_HOSTS = [{"Alive": True, "NodeManagerAddress": "10.0.0.1"}, {"Alive": True, "NodeManagerAddress": "10.0.0.2"}]
ONE_HOST = [{"Alive": True, "NodeManagerAddress": "10.0.0.1"}, {"Alive": True, "NodeManagerAddress": "10.0.0.1"}]


def test_multi_host_refuses_sqlite_tracking_and_node_local_data():
    from sportray.validate import check_multi_host

    with pytest.raises(ConfigError, match=r"each would write its own sqlite database.*--tracking-uri http://HEAD:5000"):
        check_multi_host("sqlite:////home/me/mlflow.db", {}, nodes=TWO_HOSTS, mounts_text=MOUNTS)
    with pytest.raises(ConfigError, match=r"--data-dir /home/me/sportray-data: this Ray cluster spans several "
                                          r"hosts.*node-local filesystem \(ext4 at /\)"):
        check_multi_host("http://head:5000", {"--data-dir": "/home/me/sportray-data"}, nodes=TWO_HOSTS,
                         mounts_text=MOUNTS)
    check_multi_host("http://head:5000", {"--data-dir": "/mnt/shared/data", "--corpus": "/mnt/shared/sn"},
                     nodes=TWO_HOSTS, mounts_text=MOUNTS)  # shared: fine
    check_multi_host("sqlite:////home/me/mlflow.db", {"--data-dir": "/home/me/d"}, nodes=ONE_HOST,
                     mounts_text=MOUNTS)  # one host: its disk is everyone's


def test_ray_token_file_is_made_private(tmp_path, capsys):
    from sportray.runtime import private_token_file

    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    assert private_token_file(str(token)) == str(token)
    assert token.stat().st_mode & 0o777 == 0o600
    assert "now 0600" in capsys.readouterr().out
    assert private_token_file(str(tmp_path / "absent")) == ""


def test_the_stored_sweep_config_is_the_same_for_the_same_command():
    # what --resume compares must not hold object addresses or other per-process noise
    from ray import tune

    from sportray.config import DataConfig, ProbeConfig
    from sportray.sweep import resolved_config

    def make():
        space = {"views": tune.choice(["2x224", "2x224+4x64"]), "lr": tune.loguniform(3e-4, 2e-3)}
        return resolved_config("demo", PretrainConfig(), DataConfig(data_dir="/d"), ProbeConfig(), (0, 1), 2,
                               "fifo", 0, space, "key", "")

    assert make() == make()
    assert make()["space"]["views"] == {"choice": ["2x224", "2x224+4x64"]}


@pytest.mark.slow
def test_a_sweep_whose_every_trial_fails_exits_1_says_why_last_and_does_not_retry(
        ray_session, tiny_synthetic, sweep_data_dir, tmp_path, capsys, monkeypatch, mlflow_db_at):
    # A search space whose only value is a bad config (steps=0): it passes the edge (a sweep
    # script's space is code, not input) and every trial fails the same way, at its first line.
    # Such a failure is not retried (one attempt, reported as failed), no "Best" is printed, and
    # the last line of the run says why; exit 1.
    from ray import tune

    from sportray.sweep import Preset, SweepSpec, main

    spec = SweepSpec(
        name="all_fail", description="test", space={"steps": tune.choice([0])},
        presets={"t": Preset(
            pretrain=dict(arm="scratch", model="vit_tiny_demo", steps=2, views="2x32", batch_size=4,
                          warmup_steps=1, log_every=1, checkpoint_every=2, cpus_per_worker=0.5,
                          proj_dim=16, sigreg_directions=16, max_failures=0),
            data=dict(every_s=1.0), probe=dict(epochs=2, bootstrap=10), num_configs=1, seeds=(0,))},
        metric="basketball_iou", references=())
    monkeypatch.chdir(tmp_path)
    rc = main(spec, ["--preset", "t", "--tracking-uri", mlflow_db_at(tmp_path / "mlflow.db"),
                     "--storage", str(tmp_path / "runs"), "--data-dir", str(sweep_data_dir),
                     "--corpus", str(tiny_synthetic / "soccernet"),
                     "--basketball", str(tiny_synthetic / "deepsportradar"),
                     "--soccer-labels", str(tiny_synthetic / "soccernet")])
    captured = capsys.readouterr()
    assert rc == 1
    last = captured.err.strip().splitlines()[-1]
    assert last == ("all_fail: error: all 1 trials failed, so there is nothing to rank; the last said: "
                    "--steps 0: must be a positive number of steps"), last
    assert "Best recipe" not in captured.out + captured.err
    from ray.tune import ExperimentAnalysis
    sweep_dir = next((tmp_path / "runs").glob("all_fail-*"))
    analysis = ExperimentAnalysis(str(sweep_dir))
    assert [t.status for t in analysis.trials] == ["TERMINATED"]
    assert [t.num_failures for t in analysis.trials] == [0]


# ----------------------------------------------------------------------------- exposure (issue 19, item 8)

def test_cluster_yaml_restricts_ssh_to_your_group_and_gives_the_head_a_minimal_role():
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = (ROOT / "cluster.yaml").read_text()
    cfg = yaml.safe_load(text)
    validate_config(prepare_config(cfg))
    for name, node in cfg["available_node_types"].items():
        # a group of your own: the launcher's default group opens SSH to 0.0.0.0/0
        assert node["node_config"]["SecurityGroupIds"], name
    head = cfg["available_node_types"][cfg["head_node_type"]]["node_config"]
    assert head["IamInstanceProfile"]["Arn"].endswith("instance-profile/sportray-head")
    assert "--port 22 --cidr" in text and "0.0.0.0/0" not in text.replace("opens SSH to 0.0.0.0/0", "")
    assert '"ec2:RunInstances"' in text and "ec2:*" not in text   # the minimal policy, spelled out
    assert "chmod 600 ~/.ray/auth_token" in cfg["setup_commands"]
    assert "--app-name basic-auth" in text and "ssh -i" in text  # MLflow: basic-auth app or a tunnel


def test_dashboards_readme_binds_loopback_and_suggests_no_default_credentials():
    text = (ROOT / "dashboards" / "README.md").read_text()
    assert "--web.listen-address=127.0.0.1:9090" in text
    assert "GF_SERVER_HTTP_ADDR=127.0.0.1" in text and "GF_AUTH_ANONYMOUS_ENABLED=false" in text
    assert "admin/admin" not in text and "GF_SECURITY_ADMIN_PASSWORD__FILE" in text


def test_readme_says_what_listens_where():
    text = (ROOT / "README.md").read_text()
    assert "### What listens where" in text
    assert "Servers bind to 127.0.0.1 by default" not in text   # it was not true of Ray's own ports
    assert "metrics agent" in text and "**none**" in text


# ----------------------------------------------------------------------------- never delete a user's data (item 1)

def test_build_store_refuses_a_users_folder_and_removes_only_its_own_temporary_folder(
        ray_session, tiny_synthetic, tmp_path):
    from sportray.data.errors import DataError
    from sportray.data.frames import build_store, parse_sources

    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("a user's file")
    sources = parse_sources(str(tiny_synthetic / "soccernet"))
    with pytest.raises(DataError, match="not a finished frame store.*choose another --out"):
        build_store(sources, user, every_s=4.0)
    assert (user / "thesis.tex").read_text() == "a user's file"

    # a build that fails (no videos in the corpus) leaves no .tmp-* folder behind
    empty = tmp_path / "no-videos"
    empty.mkdir()
    with pytest.raises(Exception):
        build_store(parse_sources(str(empty)), tmp_path / "store", every_s=4.0)
    assert not list(tmp_path.glob("store.tmp-*")) and not (tmp_path / "store").exists()
