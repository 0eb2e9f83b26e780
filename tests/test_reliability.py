"""Reliability (issue 9), for real: a trial that diverges inside a Tune + Optuna sweep, a full
disk while a checkpoint is written, and the message for a batch that does not fit in memory."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from sportray.config import PretrainConfig
from sportray.pretrain import (STATE_FILE, BatchDoesNotFitError, CheckpointWriteError, oom_message,
                               run_pretrain, write_state)


# ----------------------------------------------------------------------------- a diverging trial in a sweep

@pytest.mark.slow
def test_a_diverging_trial_ends_diverged_optuna_is_told_and_the_sweep_goes_on(ray_session, tiny_synthetic, sweep_data_dir,
                                                                              tmp_path, mlflow_db_at):
    import optuna
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.tune import ExperimentAnalysis

    from sportray.sweep import Preset, SweepSpec, run_sweep

    # Two recipes, Optuna's start points: lr=50 without clipping blows up (cf. test_pretrain's
    # test_a_recipe_that_blows_up_ends_as_diverged), lr=1e-3 trains.
    spec = SweepSpec(
        name="diverge_sweep", description="test", space={"lr": tune.choice([50.0, 1e-3])},
        presets={"t": Preset(
            pretrain=dict(arm="scratch", model="vit_tiny_demo", steps=10, views="2x32", batch_size=8,
                          warmup_steps=1, clip=0.0, weight_decay=0.0, spike_patience=2, log_every=1,
                          checkpoint_every=5, cpus_per_worker=0.45, proj_dim=16, sigreg_directions=16,
                          max_failures=0),
            data=dict(every_s=1.0), probe=dict(epochs=5, bootstrap=50), num_configs=2, seeds=(0,),
            start_points=[dict(lr=50.0), dict(lr=1e-3)])},
        metric="basketball_iou", references=())
    uri = mlflow_db_at(tmp_path / "mlflow.db")
    summary = run_sweep(spec, "t", tracking_uri=uri, storage=str(tmp_path / "runs"), data_overrides=dict(
        corpus=str(tiny_synthetic / "soccernet"), soccer_labels=str(tiny_synthetic / "soccernet"),
        basketball=str(tiny_synthetic / "deepsportradar"), data_dir=str(sweep_data_dir)))
    assert summary["trials"] == 2 and summary["errored_trials"] == 0, summary

    # MLflow: the diverged child run says so, keeps its curves and the step it diverged at.
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("diverge_sweep")
    trials = {float(r.data.params["lr"]): r for r in client.search_runs([exp.experiment_id])
              if r.data.tags.get("sportray.kind") == "trial"}
    assert set(trials) == {50.0, 1e-3}, trials.keys()
    bad, good = trials[50.0], trials[1e-3]
    assert bad.data.tags["mlflow.parentRunId"] == summary["parent_run_id"]
    assert bad.data.tags["sportray.status"] == "diverged"
    diverged_step = int(bad.data.metrics["diverged_step"])
    assert 1 <= diverged_step < 10 and bad.data.metrics["diverged"] == 1.0
    loss_steps = sorted(m.step for m in client.get_metric_history(bad.info.run_id, "train/loss"))
    assert loss_steps == list(range(1, diverged_step + 1)), "each step up to the divergence is on the curve"
    for diagnostic in ("train/grad_norm", "train/rel_dist_init", "train/weight_norm", "train/inv", "train/sigreg"):
        assert diagnostic in bad.data.metrics, diagnostic
    assert "training_curves.png" in {a.path for a in client.list_artifacts(bad.info.run_id)}
    why = json.loads(Path(client.download_artifacts(bad.info.run_id, "trial_config.json", str(tmp_path))).read_text())
    assert why["status"] == "diverged" and ("non-finite" in why["reason"] or "running median" in why["reason"])
    # ... and the other trial went on and finished, with its probe score.
    assert good.data.tags["sportray.status"] == "finished"
    assert good.data.metrics["steps_done"] == 10 and "test/basketball_iou" in good.data.metrics
    assert "diverged_step" not in good.data.metrics

    # Tune: the diverged trial ended normally (not an error) without the objective.
    sweep_dir = Path(summary["sweep_dir"])
    last = {t.config["lr"]: t.last_result for t in ExperimentAnalysis(str(sweep_dir)).trials}
    assert last[50.0]["status"] == "diverged" and "valid/basketball_iou" not in last[50.0]  # no objective
    assert last[1e-3]["status"] == "finished"

    # Optuna: the study Tune checkpointed (what a resumed sweep continues from) holds the
    # diverged recipe as pruned/failed, never as a completed trial with a score.
    [state_file] = sweep_dir.glob("searcher-state-*.pkl")
    with open(state_file, "rb") as f:
        study = pickle.load(f)["_ot_study"]
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert set(by_lr) == {50.0, 1e-3}
    assert by_lr[50.0].state in (optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    assert by_lr[50.0].value is None
    assert by_lr[1e-3].state == optuna.trial.TrialState.COMPLETE
    assert by_lr[1e-3].value == pytest.approx(good.data.metrics["valid/basketball_iou"])  # Optuna reads validation
    print(f"diverged at step {diverged_step} ({why['reason']}); "
          f"optuna states: { {lr: t.state.name for lr, t in by_lr.items()} }")


# ----------------------------------------------------------------------------- a full disk

@contextlib.contextmanager
def full_disk(directory: Path, keep_free: int):
    """Fill the filesystem of `directory` (a small tmpfs mounted there) to `keep_free` bytes free;
    the filler goes away on exit."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                st = os.statvfs(directory)
                room = st.f_bavail * st.f_frsize - keep_free
                if room <= 0:
                    break
                f.write(chunk[:min(len(chunk), room)])
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    try:
        yield
    finally:
        filler.unlink()


@pytest.fixture
def small_disk(tmp_path):
    """A real, small filesystem: a 256 MiB tmpfs (checkpoints of the tiny model are ~58 MB: the
    projector is 2048 wide) (needs root with CAP_SYS_ADMIN, as here)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_a_full_disk_keeps_the_previous_checkpoint_fails_the_run_naming_it_and_resume_continues(store, small_disk):
    """A checkpoint written onto a full disk (ENOSPC mid-write, for real, from the kernel): the write
    itself, then the production path (run_pretrain's checkpoint, reported to Ray Train and persisted
    by it into storage on a filesystem that fills up mid-run). One run serves both (a Train start
    is tens of seconds on 2 cores)."""
    from sportray.data.frames import read_store

    cfg = PretrainConfig(steps=4, views="2x32", batch_size=8, warmup_steps=1, log_every=2, checkpoint_every=2,
                         cpus_per_worker=0.8, proj_dim=16, sigreg_directions=16, max_failures=0)
    first = run_pretrain(cfg, read_store(store), storage_path=str(small_disk), run_name="fills")
    assert first.status == "finished" and first.steps == 4, first.reason
    latest = Path(first.backbone_dir).parent  # the run's latest checkpoint, as Ray registered it
    target = latest / STATE_FILE
    before = torch.load(target, weights_only=True)
    assert before["step"] == 4
    size = target.stat().st_size

    # 1. The next state written where the disk has room for half of it.
    newer = {**before, "step": 6, "model": {k: v + 1 for k, v in before["model"].items()}}
    longer = dataclasses.replace(cfg, steps=6)
    with full_disk(small_disk, keep_free=size // 2):
        with pytest.raises(CheckpointWriteError) as caught:
            write_state(newer, latest)
        message = str(caught.value)
        assert caught.value.errno == errno.ENOSPC
        assert str(target) in message and "disk is full" in message
        assert not (latest / (STATE_FILE + ".tmp")).exists(), "the partial file is removed"
        kept = torch.load(target, weights_only=True)  # still loads, safely, while the disk is full
        assert kept["step"] == 4
        assert all(torch.equal(kept["model"][k], before["model"][k]) for k in before["model"])
        print(f"full disk message: {message}")

        # 2. The run asked for 2 more steps: its step-6 checkpoint cannot be written.
        full = run_pretrain(longer, read_store(store), storage_path=str(small_disk), run_name="fills")
        assert full.status == "failed", full
        assert "disk is full" in full.reason or "No space left" in full.reason, full.reason
        assert str(small_disk) in full.reason, full.reason
        assert torch.load(target, weights_only=True)["step"] == 4   # the last good checkpoint is intact

    # Space freed: the same run resumes from that checkpoint.
    resumed = run_pretrain(longer, read_store(store), storage_path=str(small_disk), run_name="fills")
    assert resumed.status == "finished", resumed.reason
    assert resumed.metrics["resumed_from"] == 4 and resumed.steps == 6


def test_a_write_error_other_than_a_full_disk_names_the_path(tmp_path):
    missing = tmp_path / "gone"
    with pytest.raises(CheckpointWriteError) as caught:
        write_state({"step": 1}, missing)
    assert str(missing / STATE_FILE) in str(caught.value) and "disk is full" not in str(caught.value)


# ----------------------------------------------------------------------------- out of memory

def test_out_of_memory_message_names_batch_views_device_and_suggests_a_smaller_batch():
    gib = 2 ** 30
    msg = oom_message(256, "2x224+6x96", "cuda:0", workers=4, total_bytes=80 * gib, free_bytes=gib // 2,
                      peak_bytes=78 * gib, detail="torch: CUDA out of memory. Tried to allocate 2.00 GiB.")
    assert msg.startswith("out of memory on cuda:0 (78.0 GiB peak allocated by this worker, 0.5 GiB free of "
                          "80.0 GiB)")
    assert "--batch-size 256" in msg and "--views 2x224+6x96" in msg
    assert "8 views per frame, 2048 view images" in msg
    assert "--batch-size 128" in msg, "suggests halving the batch"
    assert "global batch of 1024 frames" in msg
    assert "Traceback" not in msg

    cpu = oom_message(16, "2x224", "cpu")
    assert "--batch-size 8" in cpu and "GiB" not in cpu and "global batch" not in cpu
    one = oom_message(1, "2x224+6x96", "cuda:0")
    assert "Even one frame does not fit" in one and "--batch-size 0" not in one


def test_out_of_memory_in_the_loop_ends_the_run_with_the_clear_message(monkeypatch, tmp_path):
    """The entry point Ray Train calls turns torch's OOM (or the CPU allocator's refusal) into the
    BatchDoesNotFitError message. One worker returns it as the run's failure, so Train has nothing to
    retry; several record it in the run's storage and raise it (chain cut), and a group that Train
    restarts ends on that record without training."""
    import ray.train.torch

    from sportray import pretrain

    def oom(config):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\n(long allocator hint)")

    monkeypatch.setattr(pretrain, "_train_loop", oom)
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cpu"))
    cfg = PretrainConfig(batch_size=64, views="2x224+6x96")
    config = {"pretrain": dataclasses.asdict(cfg), "storage": str(tmp_path)}
    ended = pretrain.train_loop_per_worker(config)
    assert ended["status"] == "failed"
    msg = ended["reason"]
    assert "--batch-size 64" in msg and "--views 2x224+6x96" in msg and "--batch-size 32" in msg
    assert "on cpu" in msg and "Tried to allocate 2.00 GiB" in msg and "allocator hint" not in msg
    assert not (tmp_path / pretrain.OOM_FILE).exists(), "one worker needs no record"
    print(f"OOM message: {msg}")

    def cpu_allocator(config):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 549755813888 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(pretrain, "_train_loop", cpu_allocator)
    ended = pretrain.train_loop_per_worker(config)
    assert ended["status"] == "failed" and "out of memory on cpu" in ended["reason"], ended

    def other(config):
        raise RuntimeError("something else")

    monkeypatch.setattr(pretrain, "_train_loop", other)
    with pytest.raises(RuntimeError, match="something else"):   # anything else is Train's to retry
        pretrain.train_loop_per_worker(config)

    monkeypatch.setattr(pretrain, "_train_loop", oom)
    two = {**config, "pretrain": dataclasses.asdict(dataclasses.replace(cfg, workers=2))}
    with pytest.raises(BatchDoesNotFitError) as caught:
        pretrain.train_loop_per_worker(two)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert json.loads((tmp_path / pretrain.OOM_FILE).read_text())["reason"] == str(caught.value)

    monkeypatch.setattr(pretrain, "_train_loop", lambda config: pytest.fail("trained after the record"))
    assert pretrain.train_loop_per_worker(two) == {"status": "failed", "reason": str(caught.value)}


def _train_worker_pids() -> set[int]:
    """Pids of this test session's Ray Train workers (descendants of this process: the machine may
    run other people's sweeps)."""
    import psutil

    me, out = os.getpid(), set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any("RayTrainWorker" in part for part in (p.info["cmdline"] or [])) and \
                    any(a.pid == me for a in p.parents()):
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


@contextlib.contextmanager
def train_workers_seen():
    """The set of distinct Train worker processes that lived while the block ran (polled every
    0.1 s; a worker lives seconds: Ray start-up, imports, the model). Each attempt of a run, the
    first and every retry, is a new worker group, so new processes."""
    import threading

    seen: set[int] = set()
    done = threading.Event()

    def poll():
        while not done.is_set():
            seen.update(_train_worker_pids())
            done.wait(0.1)

    before = _train_worker_pids()
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()
        seen.difference_update(before)


def _checkpoint_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())


@pytest.mark.slow
def test_out_of_memory_in_a_step_ends_the_run_failed_at_once_without_retries_and_keeps_its_checkpoints(
        store, tmp_path):
    """Issue 19 item 3: out of memory is deterministic, so the run ends `failed` with the advice
    instead of Train retrying it max_failures times. A real out of memory on this CPU: views of
    262144 px a side make the step's first view tensor terabytes, which the allocator refuses
    (torch raises its "DefaultCPUAllocator: can't allocate memory" RuntimeError)."""
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("the kernel overcommits every allocation here: it would not refuse terabytes")
    from sportray.data.frames import read_store

    cfg = PretrainConfig(steps=4, views="2x32", batch_size=8, warmup_steps=1, log_every=2, checkpoint_every=2,
                         cpus_per_worker=0.8, proj_dim=16, sigreg_directions=16, max_failures=2)
    first = run_pretrain(cfg, read_store(store), storage_path=str(tmp_path), run_name="oom")
    assert first.status == "finished" and first.steps == 4, first.reason
    checkpoints = _checkpoint_dirs(tmp_path / "oom")
    assert len(checkpoints) == 2

    # The same run asked for 2 more steps with views that do not fit: it resumes from step 4 and
    # its step 5 runs out of memory.
    too_big = dataclasses.replace(cfg, steps=6, views="2x262144")
    with train_workers_seen() as workers:
        res = run_pretrain(too_big, read_store(store), storage_path=str(tmp_path), run_name="oom")
    print(f"status {res.status}, {len(workers)} worker process(es); reason: {res.reason}")
    assert len(workers) == 1, f"{len(workers)} attempts: out of memory was retried"
    assert res.status == "failed"
    assert res.reason.startswith("out of memory on cpu: --batch-size 8 "), res.reason
    assert "--views 2x262144" in res.reason and "--batch-size 4" in res.reason, res.reason  # the advice
    assert "DefaultCPUAllocator" in res.reason and "Traceback" not in res.reason
    assert "checkpoints are kept (the latest at step 4)" in res.reason and res.steps == 4
    assert _checkpoint_dirs(tmp_path / "oom") == checkpoints, "no checkpoint written or removed"
    for ckpt in checkpoints:
        assert torch.load(ckpt / STATE_FILE, weights_only=True)["step"] in (2, 4)
    assert (checkpoints[-1] / "backbone" / "meta.json").exists()

    # Views that fit again: the run resumes from its step-4 checkpoint.
    resumed = run_pretrain(dataclasses.replace(cfg, steps=6), read_store(store), storage_path=str(tmp_path),
                           run_name="oom")
    assert resumed.status == "finished" and resumed.steps == 6, resumed.reason
    assert resumed.metrics["resumed_from"] == 4


@pytest.mark.slow
def test_out_of_memory_with_two_workers_ends_the_run_failed_after_one_restart_without_training(store, tmp_path):
    """With several workers a rank that ran out of memory cannot end normally (the others may wait
    for it in a collective): it records the message in the run's storage and raises, Train tears the
    group down and starts one more, which finds the record and ends at once. Two groups, not the
    1 + max_failures of a retried failure."""
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("the kernel overcommits every allocation here: it would not refuse terabytes")
    from sportray.data.frames import read_store
    from sportray.pretrain import OOM_FILE

    cfg = PretrainConfig(steps=4, views="2x262144", batch_size=4, workers=2, warmup_steps=1, log_every=2,
                         checkpoint_every=2, cpus_per_worker=0.45, proj_dim=16, sigreg_directions=16,
                         max_failures=2)
    with train_workers_seen() as workers:
        res = run_pretrain(cfg, read_store(store), storage_path=str(tmp_path), run_name="oom2")
    print(f"status {res.status}, {len(workers)} worker processes; reason: {res.reason}")
    assert len(workers) == 4, f"{len(workers)} worker processes: not 2 groups of 2"
    assert res.status == "failed" and res.steps == 0
    assert res.reason.startswith("out of memory on cpu: --batch-size 4 "), res.reason
    assert "--batch-size 2" in res.reason and "global batch of 8 frames" in res.reason, res.reason
    assert (tmp_path / "oom2" / OOM_FILE).is_file() and not _checkpoint_dirs(tmp_path / "oom2")
