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

from sportray import tracking

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "steps=4", "--set", "views=2x32+2x16", "--set", "batch_size=4", "--set", "log_every=2",
        "--set", "checkpoint_every=2", "--set", "clip=1.0", "--set", "proj_dim=16",
        "--set", "sigreg_directions=16", "--set", "warmup_steps=1"]


def sweep_cmd(synth: Path, work: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "sweeps" / "scratch_views.py"), "--num-configs", "2", "--seeds", "0",
            "--corpus", str(synth / "soccernet"), "--soccer-labels", str(synth / "soccernet"),
            "--basketball", str(synth / "deepsportradar"), "--data-dir", str(data_dir),
            "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--storage", str(work / "runs"), *FAST, *extra]


def runs_of(work: Path, kind: str) -> list:
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    exp = client.get_experiment_by_name("scratch_views")
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sportray.kind") == kind]


@pytest.mark.slow
def test_sweep_lands_in_mlflow_and_resumes_after_the_driver_is_killed(ray_session, tiny_synthetic, sweep_data_dir,
                                                                     tmp_path, mlflow_db_at, capfd):
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    # The MLflow schema first: the test polls the store while the sweep writes it, and two
    # processes migrating one new sqlite file race ("duplicate column name").
    mlflow_db_at(tmp_path / "mlflow.db")
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(sweep_cmd(tiny_synthetic, tmp_path, sweep_data_dir), cwd=tmp_path, stdout=log, stderr=log, env=env,
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

    second = subprocess.run(sweep_cmd(tiny_synthetic, tmp_path, sweep_data_dir, "--resume"), cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    # the ending: copy-paste commands for the MLflow UI as installed and the dashboard's token step
    assert f"{Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri" in second.stdout, second.stdout
    assert "get-auth-token" in second.stdout and "Best recipe by valid/basketball_iou" in second.stdout
    assert max(len(line) for line in second.stdout.splitlines()) <= 100, second.stdout
    # a quiet console: no Ray Data progress, no Train per-report lines, no Tune boxes, no warnings
    console = second.stdout + second.stderr
    for noise in ("logging_progress", "Reporting training result", "TrainingReport(", "Trial status",
                  "TensorBoard", "Warning", "WARNING", "(RayTrainWorker", "(raylet)"):
        assert noise not in console, (noise, console[-3000:])
    assert len(console.splitlines()) < 60, console
    # the Optuna study is a sqlite file beside the sweep, and the resumed sweep kept writing to it
    import optuna
    sweep_dir = next((tmp_path / "runs").glob("scratch_views-*"))
    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and all(t.value is not None for t in done), study.trials

    trials = runs_of(tmp_path, "trial")
    parents = runs_of(tmp_path, "sweep")
    assert {r.info.run_id for r in parents} == parents_before, "the resumed sweep reuses its parent run"
    assert len(trials) == 2, [r.info.run_name for r in trials]  # no duplicate run for the finished trial
    assert done_before <= {r.info.run_id for r in trials}
    for r in trials:
        assert r.data.tags["mlflow.parentRunId"] in parents_before
        assert r.data.tags["sportray.status"] == "finished"
        for metric in ("test/basketball_iou", "test/basketball_iou_ci_low", "test/soccer_bal_acc", "test/soccer_bal_acc_ci_high", "valid/basketball_iou",
                       "final_loss", "time/steps_s", "time/overhead_s"):
            assert metric in r.data.metrics, metric
        # where the rest of its time went, phase by phase (sportray.trial.PHASES)
        details = tracking.run_record(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), r.info.run_id, "details.json")
        # (Train's start and the worker's phases are left out where rank 0's clock is an earlier
        # attempt's: every trial here was restored by the resumed driver)
        assert {"time/setup_s", "time/probe_s", "time/log_s"} <= set(details), details
        assert r.data.params["steps"] == "4" and r.data.params["arm"] == "scratch"
        assert r.data.params["views"] == "2x32+2x16"
        # its backbone as an MLflow model, logged once (the resumed sweep did not log it again)
        [model] = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_logged_models(
            [r.info.experiment_id], filter_string=f"source_run_id = '{r.info.run_id}'")
        assert model.name == "backbone" and model.params["views"] == "2x32+2x16"
    # the finished trial kept its single curve: each logged step once
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for r in trials:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]
        assert sorted(steps) == [2, 4], steps
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"scorecard.md", "scorecard.csv"} <= artifacts

    # A logged trial runs again from its MLflow run alone (config, store, seed) to the same numbers:
    # `sportray pretrain --rerun`, here in this process on the session's Ray (a second process
    # would pay Ray's and torch's start again).
    from sportray import cli

    original = trials[0]
    capfd.readouterr()
    rc = cli.main(["pretrain", "--rerun", original.info.run_id, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                   "--experiment", "reruns", "--storage", str(tmp_path / "rerun-runs")])
    said = capfd.readouterr().err
    assert rc == 0, said[-3000:]
    assert f"re-run of {original.info.run_id}" in said
    [again] = client.search_runs([client.get_experiment_by_name("reruns").experiment_id])
    for metric in ("final_loss", "valid/basketball_iou", "test/basketball_iou", "test/soccer_bal_acc"):
        assert abs(again.data.metrics[metric] - original.data.metrics[metric]) <= 1e-6, metric


@pytest.mark.slow
def test_asha_stops_the_worse_loss_early_and_lets_the_better_trial_reach_its_probe(ray_session, tiny_synthetic, sweep_data_dir,
                                                                                   tmp_path, mlflow_db_at):
    # --scheduler asha prunes on the label-free LeJEPA loss. Two recipes run one after the other
    # (cpus_per_worker 0.6 on 2 CPUs: one trial at a time, so the rung comparison is deterministic):
    # lambda_sigreg 0.05 first, then 0.9, whose loss (mostly SIGReg of an untrained net) is several
    # times higher at the first rung (step 4 of 16) and must be stopped there.
    import optuna
    from ray import tune

    from sportray import scorecard
    from sportray.sweep import Preset, SweepSpec, run_sweep

    spec = SweepSpec(
        name="asha_sweep", description="test", space={"lambda_sigreg": tune.choice([0.05, 0.9])},
        presets={"t": Preset(
            pretrain=dict(arm="scratch", model="vit_tiny_demo", steps=16, views="2x32", batch_size=8,
                          warmup_steps=1, clip=1.0, log_every=1, checkpoint_every=4, cpus_per_worker=0.6,
                          proj_dim=16, sigreg_directions=16, max_failures=0),
            data=dict(every_s=1.0), probe=dict(epochs=5, bootstrap=50), num_configs=2, seeds=(0,),
            start_points=[dict(lambda_sigreg=0.05), dict(lambda_sigreg=0.9)])},
        metric="basketball_iou", references=())
    uri = mlflow_db_at(tmp_path / "mlflow.db")
    summary = run_sweep(spec, "t", tracking_uri=uri, storage=str(tmp_path / "runs"), scheduler="asha",
                        data_overrides=dict(corpus=str(tiny_synthetic / "soccernet"),
                                            soccer_labels=str(tiny_synthetic / "soccernet"),
                                            basketball=str(tiny_synthetic / "deepsportradar"),
                                            data_dir=str(sweep_data_dir)))
    assert summary["trials"] == 2 and summary["errored_trials"] == 0, summary
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("asha_sweep")
    trials = {float(r.data.params["lambda_sigreg"]): r for r in client.search_runs([exp.experiment_id])
              if r.data.tags.get("sportray.kind") == "trial"}
    good, bad = trials[0.05], trials[0.9]
    # the better trial ran all its steps and its probe (ASHA does not stop trials at the last step)
    assert good.data.tags["sportray.status"] == "finished"
    assert good.data.metrics["steps_done"] == 16 and "test/basketball_iou" in good.data.metrics
    # ... probed by rank 0 in its training worker, after the final checkpoint (the moment it
    # probed from exists only there)
    details = tracking.run_record(client, good.info.run_id, "details.json")
    assert {"time/final_checkpoint_s", "time/probe_s", "time/train_end_s"} <= set(details), details
    # the worse one was stopped at the first rung, says so, and kept its curve up to there
    assert bad.data.tags["sportray.status"] == "stopped", bad.data.tags
    assert bad.info.status == "KILLED"
    stopped_at = int(bad.data.metrics["stopped_step"])
    assert stopped_at == 4, stopped_at
    assert "ASHA" in bad.data.tags["mlflow.note.content"]
    assert "test/basketball_iou" not in bad.data.metrics
    # its curve, each step once, ending well before the recipe's 16 steps (the stop is asynchronous:
    # the worker may log a few steps past the rung before it is killed)
    curve = sorted(m.step for m in client.get_metric_history(bad.info.run_id, "train/loss"))
    assert curve == list(range(1, len(curve) + 1)) and curve[-1] < 16, curve
    # Optuna is told the stopped recipe has no score; the scorecard lists it outside the means
    [state_file] = Path(summary["sweep_dir"]).glob("searcher-state-*.pkl")
    import pickle
    with open(state_file, "rb") as f:
        study = pickle.load(f)["_ot_study"]
    states = {t.params["lambda_sigreg"]: t.state for t in study.trials}
    assert states[0.05] == optuna.trial.TrialState.COMPLETE
    assert states[0.9] in (optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    card = scorecard.build(scorecard.load_runs(client, "asha_sweep", parent_run_id=summary["parent_run_id"]))
    assert [r.run_id for r in card.stopped] == [bad.info.run_id]
    assert "stopped early on the LeJEPA loss" in scorecard.to_markdown(card)


def test_a_trials_wall_time_splits_into_phases_that_add_up_to_it():
    """Each trial logs where its time went (time/<phase>_s) and time/overhead_s, all but the
    training steps, whether rank 0 probed in its worker (before the group shut down) or the trial
    probed after the fit; a run that stopped before the probe has no probe phase, and its
    overhead ends where it ended."""
    from sportray.trial import PHASES, overhead_times

    names = {f"time/{name}_s" for name, _starts, _end in PHASES}
    in_worker = dict(trial_start=100.0, fit_start=102.0, worker_start=110.0, model_ready=112.0,
                     first_batch=115.0, last_step=145.0, checkpointed=146.0, probe_end=151.0,
                     fit_end=153.0, logged=157.0)
    t = overhead_times(in_worker)
    assert set(t) == names | {"time/overhead_s"}
    assert t["time/train_start_s"] == 8.0 and t["time/steps_s"] == 30.0
    assert t["time/final_checkpoint_s"] == 1.0 and t["time/probe_s"] == 5.0 and t["time/train_end_s"] == 2.0
    assert sum(v for k, v in t.items() if k != "time/overhead_s") == 57.0       # the phases tile the trial
    assert t["time/overhead_s"] == 27.0

    after_fit = {k: v for k, v in in_worker.items() if k not in ("checkpointed", "probe_end")}
    after_fit["probe_end"] = 155.0
    t = overhead_times(after_fit)
    assert set(t) == names - {"time/final_checkpoint_s"} | {"time/overhead_s"}
    assert t["time/train_end_s"] == 8.0 and t["time/probe_s"] == 2.0 and t["time/log_s"] == 2.0
    assert sum(v for k, v in t.items() if k != "time/overhead_s") == 57.0

    failed = overhead_times({k: v for k, v in after_fit.items() if k not in ("probe_end", "logged")})
    assert "time/probe_s" not in failed and "time/log_s" not in failed
    assert failed["time/overhead_s"] == 23.0


def test_best_recipe_is_chosen_on_validation_and_names_that_split():
    """A sweep whose validation and test disagree reports as best the recipe that is better on
    validation, prints which metric chose it, and still shows (never uses) the test figure."""
    import numpy as np

    from sportray import scorecard as S
    from sportray.sweep import best_recipe, summary_lines

    rng = np.random.default_rng(0)

    def rec(key, seed, valid, test):
        items = {s: {"unit": (np.arange(40) % 4).astype(str), "iou": np.clip(v + rng.normal(0, .02, 40), 0, 1)}
                 for s, v in (("valid", valid), ("test", test))}
        return S.RunRecord(run_id=f"{key}{seed}", run_name=f"{key} s{seed}", kind="trial", config_key=key,
                           status="finished", params={"arm": "scratch", "steps": "60", "seed": str(seed)},
                           metrics={"valid/basketball_iou": float(items["valid"]["iou"].mean()),
                                    "test/basketball_iou": float(items["test"]["iou"].mean())},
                           items={"basketball": items})

    # "good-on-valid" wins on validation, "good-on-test" on test
    records = [rec("good-on-valid", s, 0.6, 0.3) for s in (0, 1)] + \
              [rec("good-on-test", s, 0.3, 0.6) for s in (0, 1)]
    card = S.build(records, metrics=("basketball_iou",), n_boot=200)
    best = best_recipe(card, "basketball_iou")
    assert best["config"] == "good-on-valid" and best["chosen_on"] == "valid/basketball_iou"
    assert best["test_mean"] < 0.4                      # shown as it is, though another row tests higher
    text = "\n".join(summary_lines(card, "basketball_iou", best))
    assert "Best recipe (by valid/basketball_iou, seed mean of 2): good-on-valid" in text


def test_two_sweeps_that_differ_only_by_a_fixed_field_never_share_a_scorecard_row():
    """Run identity is the whole resolved config: `--set batch_size=32` on one of two otherwise equal
    sweeps gives its trials another sportray.config_key, so the scorecard keeps two rows of one
    seed each instead of one row that counts the other sweep's trial as a second seed. The run
    name stays what the sweep searched."""
    import dataclasses

    from sportray import scorecard as S
    from sportray.config import DataConfig, PretrainConfig
    from sportray.sweep import trial_key, trial_label

    searched = {"views": "2x224", "steps": 40, "clip": 1.0, "lr": 1e-3}
    base = PretrainConfig(arm="scratch", model="vit_tiny_demo", batch_size=16, lambda_sigreg=0.2, **searched)
    data = DataConfig(data_dir="/d", every_s=2.0)
    key16 = trial_key(base, data, searched)
    key32 = trial_key(dataclasses.replace(base, batch_size=32), data, searched)
    assert key16 != key32 and "batch_size=16" in key16      # 32 is the default: not named, still another key
    # the seed and what does not change the learned model (cadence, CPUs) are not identity
    assert trial_key(dataclasses.replace(base, seed=1, log_every=5, cpus_per_worker=0.9), data, searched) == key16
    # data that changes what is learned is identity; where the data lives is not
    assert trial_key(base, dataclasses.replace(data, every_s=4.0), searched) != key16
    assert trial_key(base, dataclasses.replace(data, data_dir="/elsewhere"), searched) == key16
    # searched fields are named even at their default
    assert "lr=0.001" in key16
    assert trial_label(base, searched) == "scratch views=2x224 steps=40 clip=1 lr=0.001"

    def rec(key, run):
        return S.RunRecord(run_id=run, run_name=f"{trial_label(base, searched)} s0", kind="trial", config_key=key,
                           status="finished", params={"arm": "scratch", "steps": "40", "seed": "0"},
                           metrics={"valid/basketball_iou": 0.5, "test/basketball_iou": 0.5})

    card = S.build([rec(key16, "a"), rec(key32, "b")], metrics=("basketball_iou",), n_boot=50)
    trial_rows = [r for r in card.rows if r.kind == "trial"]
    assert sorted(len(r.seeds) for r in trial_rows) == [1, 1], [(r.config, r.seeds) for r in trial_rows]
