"""Probe tasks as a registry: a task of one's own (tests/toy_task.py) is probed in Ray workers,
logged to MLflow and ranked in the scorecard, with no sportray module changed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sportray import tasks
from sportray.config import ConfigError, DataConfig, ProbeConfig

ROOT = Path(__file__).resolve().parents[1]


def test_the_built_in_tasks_are_the_default_and_unknown_names_are_refused():
    assert [t.name for t in tasks.resolve()] == ["basketball", "soccer"]
    assert [t.metric for t in tasks.resolve(ProbeConfig())] == ["basketball_iou", "soccer_bal_acc"]
    with pytest.raises(ConfigError, match="hockey.*registered: basketball, soccer"):
        tasks.resolve("basketball,hockey")
    with pytest.raises(ConfigError, match="no_such_module.*importable on every node"):
        tasks.resolve("no_such_module:TASK")
    with pytest.raises(ConfigError, match="at least one probe task"):
        ProbeConfig(tasks=" , ").validate()


def test_a_task_of_ones_own_is_probed_logged_and_in_the_scorecard(ray_session, tmp_path, fresh_mlflow_store,
                                                                   monkeypatch):
    from sportray import scorecard, tracking, trial

    monkeypatch.syspath_prepend(str(ROOT))      # the driver imports it as the workers do: from the repo root
    probe = ProbeConfig(tasks="tests.toy_task:TASK", bootstrap=50, feature_batch=12)
    (toy,) = tasks.resolve(probe)
    assert toy.name == "toy" and tasks.get("toy") is toy and "sportray.tasks" not in type(toy).__module__
    uri = fresh_mlflow_store("toy")
    data = DataConfig(data_dir=str(tmp_path / "data"))

    # Two seeds of the random floor: each probe is a Ray task in a worker process, which imports the
    # task by its path (nothing was sent to it but the config).
    done = trial.run_references(["random"], [0, 1], data=data, probe=probe, tracking_uri=uri,
                                experiment="toy", model="vit_tiny_demo")
    m = done[("random", 0)]
    assert 0.0 <= m["test/toy_acc_ci_low"] <= m["test/toy_acc"] <= m["test/toy_acc_ci_high"] <= 1.0
    assert m["test/toy_frames"] == 12 and m["test/toy_units"] == 4 and "test/basketball_iou" not in m

    client = tracking.connect(uri)
    run = client.get_run(m["mlflow_run_id"])
    assert {"valid/toy_acc", "test/toy_acc", "test/toy_acc_ci_high", "test/toy_units"} <= set(run.data.metrics)
    assert "toy_lr" not in run.data.metrics                           # not headline: details.json
    assert run.data.tags["sportray.ci_unit.toy"] == "clip"
    assert run.data.tags["sportray.probeset.toy.source"] == "synthetic brightness frames"

    card = scorecard.build(scorecard.load_runs(client, "toy"), probe_tasks=[toy], n_boot=200)
    assert card.metrics == ("toy_acc",)
    row = card.row("reference random").stats["toy_acc"].test
    assert row.n == 2 and row.source == "items" and row.unit == "clip" and row.n_units == 4
    assert row.low <= row.mean <= row.high
    assert "Toy brightness acc" in scorecard.to_markdown(card)
    assert sys.modules["tests.toy_task"].TASK is toy
