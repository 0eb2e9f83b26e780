"""The product path for real: a Ray Tune + Optuna sweep whose trials pretrain on Ray Train,
probe, and land in MLflow; then a driver killed mid-sweep and resumed with --resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "steps=4", "--set", "views=2x32+2x16", "--set", "batch_size=4", "--set", "log_every=2",
        "--set", "checkpoint_every=2", "--set", "clip=1.0", "--set", "proj_dim=16",
        "--set", "sigreg_directions=16", "--set", "warmup_steps=1"]


def sweep_cmd(synth: Path, work: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "sweeps" / "scratch_views.py"), "--num-configs", "2", "--seeds", "0",
            "--corpus", str(synth / "soccernet"), "--soccer-labels", str(synth / "soccernet"),
            "--basketball", str(synth / "deepsportradar"), "--data-dir", str(work / "data"),
            "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--storage", str(work / "runs"), *FAST, *extra]


def runs_of(work: Path, kind: str) -> list:
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    exp = client.get_experiment_by_name("scratch_views")
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sportray.kind") == kind]


def test_sweep_lands_in_mlflow_and_resumes_after_the_driver_is_killed(tiny_synthetic, tmp_path):
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    # Create the MLflow schema first: the test polls the store while the sweep writes it, and two
    # processes migrating one new sqlite file race ("duplicate column name").
    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(sweep_cmd(tiny_synthetic, tmp_path), cwd=tmp_path, stdout=log, stderr=log, env=env,
                             start_new_session=True)
    # Kill the driver (SIGKILL, its whole process group: no clean shutdown) once one trial has finished.
    deadline = time.time() + 600
    finished = []
    while time.time() < deadline and first.poll() is None:
        finished = [r for r in runs_of(tmp_path, "trial") if r.data.tags.get("sportray.status") == "finished"]
        if finished:
            break
        time.sleep(2)
    assert finished, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_before = {r.info.run_id for r in finished}
    parents_before = {r.info.run_id for r in runs_of(tmp_path, "sweep")}
    assert len(parents_before) == 1

    second = subprocess.run(sweep_cmd(tiny_synthetic, tmp_path, "--resume"), cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Compare trials: mlflow ui" in second.stdout and "Ray dashboard" in second.stdout

    trials = runs_of(tmp_path, "trial")
    parents = runs_of(tmp_path, "sweep")
    assert {r.info.run_id for r in parents} == parents_before, "the resumed sweep reuses its parent run"
    assert len(trials) == 2, [r.info.run_name for r in trials]  # no duplicate run for the finished trial
    assert done_before <= {r.info.run_id for r in trials}
    for r in trials:
        assert r.data.tags["mlflow.parentRunId"] in parents_before
        assert r.data.tags["sportray.status"] == "finished"
        for metric in ("basketball_iou", "basketball_iou_ci_low", "soccer_bal_acc", "soccer_bal_acc_ci_high",
                       "final_loss"):
            assert metric in r.data.metrics, metric
        assert r.data.params["steps"] == "4" and r.data.params["arm"] == "scratch"
        assert r.data.params["views"] == "2x32+2x16"
    # the finished trial kept its single curve: each logged step once
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for r in trials:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]
        assert sorted(steps) == [2, 4], steps
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"scorecard.md", "scorecard.csv"} <= artifacts
