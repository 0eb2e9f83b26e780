"""sportray.tracking against a temporary sqlite MLflow store (one store per module: fast)."""
from __future__ import annotations

import socket
import time
import uuid

import pytest

from mlflow.entities import ViewType

from sportray import tracking as T
from sportray.config import PretrainConfig, flatten


@pytest.fixture(scope="module")
def client(fresh_mlflow_store):
    return T.connect(fresh_mlflow_store("mlflow"))


@pytest.fixture
def exp(client, tmp_path):
    """A fresh experiment per test (artifacts under tmp, not the working dir)."""
    return T.experiment_id(client, f"t-{uuid.uuid4().hex[:8]}", artifact_location=str(tmp_path / "art"))


def _runs(client, exp):
    return client.search_runs([exp], run_view_type=ViewType.ALL, max_results=1000)


def test_connect_unreachable_fails_fast_with_fix():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    uri = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(T.TrackingError) as ei:
        T.connect(uri)
    elapsed = time.monotonic() - t0
    msg = str(ei.value)
    assert elapsed < 15, elapsed
    assert uri in msg and "--tracking-uri" in msg and "MLFLOW_TRACKING_URI" in msg


def test_experiment_get_or_create(client):
    name = f"exp-{uuid.uuid4().hex[:8]}"
    a = T.experiment_id(client, name)
    assert T.experiment_id(client, name) == a


def test_parent_reused_by_sweep_dir(client, exp, tmp_path):
    d1, d2 = tmp_path / "sweepA", tmp_path / "sweepB"
    p1 = T.parent_run(client, exp, "scratch_views", d1, {"num_samples": 4})
    T.set_status(client, p1, "failed")  # the sweep died
    p1b = T.parent_run(client, exp, "scratch_views", str(d1), {"num_samples": 4})  # resumed
    p2 = T.parent_run(client, exp, "scratch_views", d2, {"num_samples": 4})
    assert p1 == p1b and p1 != p2
    assert len(_runs(client, exp)) == 2
    run = client.get_run(p1)
    assert run.data.tags[T.TAG_KIND] == "sweep" and run.data.tags[T.TAG_SWEEP] == "scratch_views"
    assert run.data.tags[T.TAG_SWEEP_DIR] == str(d1.resolve())
    assert run.data.tags[T.TAG_STATUS] == "running" and run.info.status == "RUNNING"


def test_trial_run_idempotent(client, exp, tmp_path):
    parent = T.parent_run(client, exp, "s", tmp_path / "sw", {})
    cfg = PretrainConfig(steps=200, clip=1.0, seed=1)
    key = T.config_key(cfg)
    params = flatten(cfg)
    a = T.trial_run(client, exp, parent, "trial_00001", key, params, seed=1)
    b = T.trial_run(client, exp, parent, "trial_00001", key, params, seed=1)  # retried trial
    other = T.trial_run(client, exp, parent, "trial_00002", key, flatten(PretrainConfig(seed=2)), seed=2)
    assert a == b != other
    runs = [r for r in _runs(client, exp) if r.data.tags.get(T.TAG_KIND) == "trial"]
    assert len(runs) == 2
    run = client.get_run(a)
    assert run.data.tags[T.TAG_PARENT] == parent
    assert run.data.tags[T.TAG_TRIAL_ID] == "trial_00001"
    assert run.data.tags[T.TAG_CONFIG_KEY] == key == "scratch 2x224+6x96 steps=200 clip=1.0"
    assert run.info.run_name == "2x224+6x96 200st clip1 s1"   # short; the full key is the tag
    assert run.data.params["lr"] == "0.0005" and run.data.params["steps"] == "200"
    assert run.data.params["seed"] == "1"
    # a changed value is never written over the first one; the conflict is visible as a tag
    T.trial_run(client, exp, parent, "trial_00001", key, {**params, "lr": 0.1, "extra": 3}, seed=1)
    run = client.get_run(a)
    assert run.data.params["lr"] == "0.0005" and run.data.params["extra"] == "3"
    assert run.data.tags["sportray.param_conflict.lr"] == "0.1"
    with pytest.raises(ValueError, match="seed"):  # params and seed must agree
        T.trial_run(client, exp, parent, "trial_00003", key, params, seed=5)


def test_step_logger_resume_no_duplicate_steps(client, exp, tmp_path):
    parent = T.parent_run(client, exp, "s", tmp_path / "sw", {})
    run = T.trial_run(client, exp, parent, "t0", "k", {}, seed=0)
    lg = T.StepLogger(client, run, flush_every=7)
    for s in range(1, 11):
        lg.log(s, {"train/loss": 10.0 - s * 0.1, "train/lr": 1e-3})
    lg.flush()
    # worker restarted from a checkpoint at step 5: steps 6..10 are trained again
    with T.StepLogger(client, run) as lg2:
        assert lg2.resume_step == 10
        for s in range(6, 16):
            lg2.log(s, {"train/loss": 20.0 + s, "train/lr": 1e-3})
        lg2.log(15, {"train/loss": 99.0})  # same step twice in one logger: dropped
    for key in ("train/loss", "train/lr"):
        steps = sorted(m.step for m in client.get_metric_history(run, key))
        assert steps == list(range(1, 16)), (key, steps)
    hist = {m.step: m.value for m in client.get_metric_history(run, "train/loss")}
    assert hist[8] == pytest.approx(9.2)   # the first values of a re-run step stay
    assert hist[12] == pytest.approx(32.0)


def test_status_and_final(client, exp, tmp_path):
    parent = T.parent_run(client, exp, "s", tmp_path / "sw", {})
    art = tmp_path / "panel.txt"
    art.write_text("x")
    a = T.trial_run(client, exp, parent, "ok", "k", {}, seed=0)
    T.log_final(client, a, {"test/basketball_iou": 0.5, "diverged": 0, "final_loss": None}, [art], "finished",
                probe={"headline": ["test/basketball_iou"]})
    b = T.trial_run(client, exp, parent, "bad", "k", {}, seed=1)
    T.log_final(client, b, {"diverged": 1, "diverged_step": 123}, [], "diverged")
    c = T.trial_run(client, exp, parent, "crash", "k", {}, seed=2)
    T.set_status(client, c, "failed")
    ra, rb, rc = (client.get_run(x) for x in (a, b, c))
    assert ra.info.status == "FINISHED" and ra.data.tags[T.TAG_STATUS] == "finished"
    assert ra.data.metrics["test/basketball_iou"] == 0.5 and "final_loss" not in ra.data.metrics
    assert [f.path for f in client.list_artifacts(a)] == ["panel.txt"]
    assert rb.info.status == "FINISHED" and rb.data.tags[T.TAG_STATUS] == "diverged"
    assert "step 123" in rb.data.tags[T.TAG_NOTE]
    assert rc.info.status == "FAILED" and rc.data.tags[T.TAG_STATUS] == "failed"
    # the UI filter the docs promise finds exactly the diverged trial
    hits = client.search_runs([exp], "tags.`sportray.status` = 'diverged'")
    assert [r.info.run_id for r in hits] == [b]
    with pytest.raises(ValueError):
        T.set_status(client, a, "done")


def test_reference_run_idempotent(client, exp, tmp_path):
    parent = T.parent_run(client, exp, "s", tmp_path / "sw", {})
    a = T.reference_run(client, exp, parent, "dinov3", {"weights": "x.pth"})
    assert T.reference_run(client, exp, parent, "dinov3", {"weights": "x.pth"}) == a
    standalone = T.reference_run(client, exp, None, "dinov3", {})
    rnd = T.reference_run(client, exp, parent, "random", {})
    assert len({a, standalone, rnd}) == 3
    assert T.reference_run(client, exp, None, "dinov3", {}) == standalone
    r = client.get_run(a)
    assert r.data.params["arm"] == "reference" and r.data.params["steps"] == "0"
    assert r.data.tags[T.TAG_KIND] == "reference" and r.data.tags[T.TAG_REFERENCE] == "dinov3"
    with pytest.raises(ValueError):
        T.reference_run(client, exp, parent, "", {})


def test_references_are_one_registry_checked_before_anything_runs(tmp_path):
    from sportray import references
    from sportray.config import ConfigError

    assert list(references.REFERENCES) == ["random", "dinov3", "base", "timm"]
    with pytest.raises(ConfigError, match="imagenet"):
        references.check("imagenet")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        references.check("dinov3")
    (tmp_path / "w.pth").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--model"):
        references.check("timm", weights=str(tmp_path / "w.pth"), model="")
    assert references.get("timm").label("vit_base_patch16_224") == "timm vit_base_patch16_224"


def test_config_key_and_run_name():
    cfg = PretrainConfig(steps=200, clip=1.0, seed=7, workers=1, log_every=3)
    assert T.config_key(cfg) == "scratch 2x224+6x96 steps=200 clip=1.0"
    assert T.config_key(cfg, vary=["lr"]) == "scratch 2x224+6x96 steps=200 clip=1.0 lr=0.0005"
    # from MLflow params (strings) the same key comes back; the seed never matters
    as_params = {k: str(v) for k, v in flatten(PretrainConfig(steps=200, clip=1.0, seed=3)).items()}
    assert T.config_key(as_params) == T.config_key(cfg)
    assert T.config_key(PretrainConfig(views="6x224", steps=100, lr=1e-3)) == \
        "scratch 6x224 steps=100 clip=off lr=0.001"
    assert T.config_key(PretrainConfig(arm="lora", base="/w/dinov3_vits16.pth")) == \
        "lora 2x224+6x96 steps=50 clip=off base=dinov3_vits16.pth"
    # run names are short (what a run list and Tune's table show); the key stays a tag
    assert T.run_name("scratch 6x224 steps=100 clip=off", 2) == "6x224 100st noclip s2"
    assert T.run_name("scratch views=2x224+4x64 steps=40 clip=1 lr=0.001", 0) == "2x224+4x64 40st clip1 lr1e-3 s0"
    assert T.run_name("lora 2x224 steps=20 clip=1.0 base=dinov3_vits16.pth", 1) == \
        "lora 2x224 20st clip1 base=dinov3_vits16.pth s1"
    assert T.short_key("reference random") == "random"


def test_references_of_several_seeds_created_at_once_keep_one_run_per_seed(client, exp, tmp_path):
    """The sweep probes a reference's seeds in threads: a seed never takes another seed's run
    (found before that run's params were logged), and asking again returns the same runs."""
    from concurrent.futures import ThreadPoolExecutor

    parent = T.parent_run(client, exp, "s", tmp_path / "sw-seeds", {})
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda s: T.reference_run(client, exp, parent, "random", {"model": "m"}, seed=s),
                            [0, 1, 2, 3]))
    assert len(set(ids)) == 4
    assert [client.get_run(i).data.params["seed"] for i in ids] == ["0", "1", "2", "3"]
    assert [T.reference_run(client, exp, parent, "random", {"model": "m"}, seed=s) for s in (0, 1, 2, 3)] == ids


def test_probe_tags_name_what_each_probe_interval_resampled_and_how_sets_were_made(tmp_path):
    from sportray.trial import probe_record

    (tmp_path / "probe_metrics.json").write_text(
        '{"metrics": {}, "ci_units": {"basketball": "arena", "soccer": "game"}, '
        '"probe_sets": {"soccer": {"split": "official"}}}')
    record = probe_record([str(tmp_path / "curves.png"), str(tmp_path / "probe_metrics.json")])
    assert T.probe_tags(record) == {"sportray.ci_unit.basketball": "arena", "sportray.ci_unit.soccer": "game",
                                    "sportray.probeset.soccer.split": "official"}
    assert T.probe_tags(probe_record([str(tmp_path / "curves.png")])) == {}   # no probe ran: no tags


def test_run_keeps_headline_metrics_and_puts_the_rest_in_artifacts(client, exp, tmp_path):
    """A trial run lists at most 30 metrics (the run list's columns, one chart each): probe
    metrics with intervals and units (the probe tasks' headline), train/* curves, final_loss and
    status numbers; per-class recalls and counts go to details.json."""
    import json

    from sportray import tasks

    assert client.get_experiment(exp).tags[T.TAG_EXPERIMENT_KIND] == T.EXPERIMENT_KIND   # model-training view
    run_id = T.trial_run(client, exp, None, "t-metrics", "scratch 2x224 steps=40 clip=1.0", {}, 0)
    final = {f"{split}/{task}{suffix}": 0.5 for split in ("valid", "test")
             for task in ("basketball_iou", "soccer_bal_acc") for suffix in ("", "_ci_low", "_ci_high")}
    final.update({f"{split}/{t}_units": 3 for split in ("valid", "test") for t in ("basketball", "soccer")})
    final.update({f"{split}/basketball_frames": 68 for split in ("valid", "test")})
    final.update({f"{split}/soccer_events": 300 for split in ("valid", "test")})
    final.update({f"test/soccer_recall/class {i}": i / 17 for i in range(17)})
    final.update({f"train/{k}": 1.0 for k in ("loss", "inv", "sigreg", "grad_norm", "weight_norm", "rel_dist_init",
                                              "lr", "frames_per_s", "data_wait_s")})
    final.update({"final_loss": 0.3, "diverged": 0.0, "steps_done": 40, "probe_seconds": 9.0, "basketball_lr": 0.01,
                  "soccer_lr": 0.1, "frames_in_store": 2048, "bad_files": 0, "final_weight_norm": 30.0,
                  "final_rel_dist_init": 0.1, "test/basketball_empty_frames": 2})
    assert len(final) > 55
    T.log_final(client, run_id, final, status="finished", step=40,
                probe={"headline": tasks.headline(tasks.resolve())})
    run = client.get_run(run_id)
    assert len(run.data.metrics) <= 30, sorted(run.data.metrics)
    assert {"valid/basketball_iou", "test/soccer_bal_acc_ci_high", "test/basketball_units", "final_loss",
            "train/loss"} <= set(run.data.metrics)
    assert not any("recall" in m for m in run.data.metrics)
    files = {a.path for a in client.list_artifacts(run_id)}
    assert "details.json" in files, files
    details = json.loads(open(client.download_artifacts(run_id, "details.json", str(tmp_path))).read())
    assert details["test/soccer_recall/class 3"] == 3 / 17 and details["basketball_lr"] == 0.01


def test_a_trials_backbone_is_logged_once_as_an_mlflow_model_that_embeds_frames(client, exp, tmp_path, monkeypatch):
    import mlflow
    import numpy as np
    import torch

    from sportray import backbones
    from sportray.views import normalize

    run_id = T.trial_run(client, exp, None, "t-model", "scratch 2x224 steps=40 clip=1.0", {}, 0)
    backbone = backbones.build_backbone("vit_tiny_demo", seed=0)
    checkpoint = backbones.save_checkpoint(backbone, tmp_path / "ck", {"step": 40})
    model_id = T.log_backbone(client, run_id, checkpoint, {"views": "2x224", "lr": 1e-3})
    assert T.log_backbone(client, run_id, checkpoint, {"views": "2x224", "lr": 1e-3}) == model_id   # resumed: once
    [model] = client.search_logged_models([exp], filter_string=f"source_run_id = '{run_id}'")
    assert (model.model_id, model.name, model.params) == (model_id, "backbone", {"views": "2x224", "lr": "0.001"})

    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)     # where models:/ resolves
    frames = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    embeddings = mlflow.pyfunc.load_model(f"models:/{model_id}").predict(frames)
    with torch.no_grad():
        expected = backbone.eval()(normalize(torch.from_numpy(frames))).numpy()
    assert embeddings.shape == (2, 96) and np.allclose(embeddings, expected, atol=1e-4)
