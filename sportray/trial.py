"""One trial: pretrain on Ray Train -> probe the final backbone -> MLflow. Also the probe of a
reference (random floor, frozen DINOv3 bar). Used by `sportray pretrain`, `sportray probe`,
and by every Ray Tune trial of a sweep (sportray/sweep.py).

Resume rule: a trial whose MLflow run already holds its probe metrics and a final status is
not redone; a trial whose Train run has checkpoints resumes from the latest one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
import torch
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

import sportray
from sportray import panels, references, tasks, tracking
from sportray.config import DataConfig, PretrainConfig, ProbeConfig, absolute_tracking_uri, flatten
from sportray.console import say
from sportray.data.defaults import frame_store, resolve
from sportray.data.frames import read_store
from sportray.data.probesets import load
from sportray.metrics import report_probe
from sportray.pretrain import run_pretrain

DEMO_BASE_STEPS = 100


def code_version() -> str:
    """The sportray code a trial ran: package version + a hash of its source files (a re-run on
    other code says so instead of passing for the same trial)."""
    root = Path(sportray.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return f"{getattr(sportray, '__version__', '0')}+{h.hexdigest()[:12]}"


def load_rerun(tracking_uri: str, run_id: str) -> tuple[PretrainConfig, DataConfig, ProbeConfig, dict]:
    """What a trial needs to be run again, from its MLflow run: (pretrain, data, probe, record).
    The record is its trial_config.json plus the original run's metrics (to compare with)."""
    try:
        record = tracking.run_record(tracking.connect(tracking_uri), run_id, "trial_config.json")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"--rerun {run_id}: not a trial ({exc})") from None
    probe = dict(record["probe"])
    probe["lrs"] = tuple(probe.get("lrs", ProbeConfig().lrs))
    return PretrainConfig(**record["pretrain"]), DataConfig(**record["data"]), ProbeConfig(**probe), record


# ----------------------------------------------------------------------------- probes

def probe_backbone(backbone_source: dict, sets: dict[str, str], probe: ProbeConfig,
                   out_dir: str) -> tuple[dict, list[str]]:
    """Probe one backbone on each task's probe set (`sets`: {task name: path}); returns
    (metrics, artifact paths). Runs where it is called (a Ray task with a GPU in a sweep).

    Metrics say their split (`valid/...` chooses, `test/...` reports); the per-item results of
    both splits go to `probe_items.npz`, which the scorecard resamples over seeds and units.
    """
    backbone = references.load(backbone_source)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = [t for t in tasks.resolve(probe) if sets.get(t.name)]
    arrays = {t.name: load(sets[t.name]) for t in chosen}
    t0 = time.time()
    results = tasks.evaluate(backbone, arrays, probe, device=device, tasks=chosen)
    metrics = tasks.metrics(results)
    metrics["probe_seconds"] = time.time() - t0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = [p for t in chosen for p in t.panel(arrays[t.name], results[t.name], out)]
    artifacts.append(tasks.save_items(results, out / tasks.ITEMS_ARTIFACT))
    (out / "probe_metrics.json").write_text(json.dumps(
        {"metrics": metrics, "ci_units": tasks.ci_units(results), "headline": tasks.headline(chosen),
         "probe_sets": tasks.set_tags(chosen, sets)}, indent=1))
    artifacts.append(out / "probe_metrics.json")
    return metrics, [str(a) for a in artifacts]


def probe_in_worker(sets: dict[str, str], probe: ProbeConfig, backbone_dir: str) -> dict:
    """probe_backbone where the backbone trained (run_pretrain's final_probe, in rank 0's worker),
    its files returned as bytes: the worker may be on another node than the trial."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics, artifacts = probe_backbone({"checkpoint": backbone_dir}, sets, probe, tmp)
        return {"metrics": metrics, "files": {str(Path(a).relative_to(tmp)): Path(a).read_bytes()
                                              for a in artifacts}}


def _unpack_probe(probed: dict, out_dir: Path) -> tuple[dict, list[str]]:
    """probe_in_worker's result as probe_backbone's: (metrics, artifact paths under out_dir)."""
    paths = []
    for name, data in probed["files"].items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(str(path))
    return probed["metrics"], paths


def probe_record(artifacts: list[str]) -> dict:
    """The probe's probe_metrics.json among `artifacts` ({} when there was no probe): the
    intervals' units, the headline metric names and how the probe sets were made."""
    found = [a for a in artifacts if a.endswith("probe_metrics.json")]
    return json.loads(Path(found[0]).read_text()) if found else {}


def run_probe_task(backbone_source: dict, sets: dict[str, str], probe: ProbeConfig, out_dir: str, gpus: float = 0.0, here_on_cpu: bool = False
                   ) -> tuple[dict, list[str]]:
    """probe_backbone as a Ray task, so that a sweep's probe takes a GPU only while it runs.
    `here_on_cpu`: without a GPU, run it in this process instead (a trial's process has torch and
    the probe code loaded already; a fresh Ray worker spends seconds of a 2-core machine importing
    them). Not for concurrent callers in one process (references): the panels use pyplot."""
    if gpus == 0 and here_on_cpu:
        return probe_backbone(backbone_source, sets, probe, out_dir)

    # Outside the Tune trial's placement group (it holds 0.01 CPU): the probe asks the cluster.
    task = ray.remote(num_cpus=0.5 if gpus == 0 else 1, num_gpus=gpus)(probe_backbone).options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    return ray.get(task.remote(backbone_source, sets, probe, out_dir))


def _probe_result(res, sets: dict[str, str], probe: ProbeConfig, cfg: PretrainConfig, out_dir: Path,
                  trial_id: str) -> tuple[dict, list[str]]:
    """The trial's probe: rank 0's, done in the training worker; else (a resumed run that had
    finished, a worker probe that failed on a finished run) a probe task now."""
    if "metrics" in res.probed:
        return _unpack_probe(res.probed, out_dir)
    if "error" in res.probed:
        if res.status == "diverged":
            raise RuntimeError(res.probed["error"])
        say(f"trial {trial_id}: the probe in the training worker failed ({res.probed['error']}); probing again in a task")
    gpus = min(1.0, cfg.gpus_per_worker) if cfg.gpus_per_worker > 0 else 0.0
    return run_probe_task({"checkpoint": res.backbone_dir}, sets, probe, str(out_dir), gpus=gpus, here_on_cpu=True)


# ----------------------------------------------------------------------------- demo LoRA base

def ensure_demo_base(data: DataConfig, store_path: str, storage: str) -> str:
    """A small scratch backbone pretrained on the synthetic corpus, as the LoRA arm's frozen
    base when no DINOv3 weights are given. Cached under data_dir; never passed off as DINOv3:
    runs on it are labelled base=synthetic-demo."""
    out = Path(data.data_dir) / "demo-base" / Path(store_path).name
    if (out / "backbone" / "meta.json").exists():
        return str(out / "backbone")
    say(f"LoRA demo: no DINOv3 weights given, so first pretraining a small synthetic-demo base "
        f"({DEMO_BASE_STEPS} steps, tiny ViT) -- this is NOT DINOv3 and is labelled base=synthetic-demo")
    # The demo's scratch recipe (sweeps/scratch_views.py, demo preset), trained once.
    cfg = PretrainConfig(arm="scratch", model="vit_tiny_demo", steps=DEMO_BASE_STEPS, views="2x224",
                         batch_size=16, lr=1e-3, clip=1.0, lambda_sigreg=0.2, sigreg_directions=128,
                         proj_dim=64, warmup_steps=10, seed=12345, checkpoint_every=DEMO_BASE_STEPS,
                         log_every=25, cpus_per_worker=0.9)
    res = run_pretrain(cfg, read_store(store_path), storage_path=str(Path(storage).resolve()),
                       run_name="demo-base-" + Path(store_path).name)
    if res.status != "finished":
        raise RuntimeError(f"the synthetic-demo LoRA base did not train: {res.status} {res.reason}")

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(res.backbone_dir, out / "backbone", dirs_exist_ok=True)
    return str(out / "backbone")


# ----------------------------------------------------------------------------- one trial

def run_trial(cfg: PretrainConfig, data: DataConfig, probe: ProbeConfig, *, tracking_uri: str,
              experiment: str, parent_run_id: str | None, trial_id: str, storage: str,
              config_key: str = "", name_key: str = "", in_tune: bool = False, do_probe: bool = True) -> dict:
    """Pretrain -> probe -> MLflow for one recipe. Returns the metrics reported to Tune.

    config_key: the run's identity (tag sportray.config_key, one scorecard row per key); default
    tracking.config_key(cfg). name_key: the key its run name and metric labels are made of, when
    shorter than the identity (a sweep: the searched fields); default config_key."""
    moments = {"trial_start": time.time()}
    cfg.validate()
    probe = dataclasses.replace(probe, seed=cfg.seed)  # probe heads and bootstrap follow the trial's seed
    tracking_uri = absolute_tracking_uri(tracking_uri)
    client = tracking.connect(tracking_uri)
    exp_id = tracking.experiment_id(client, experiment)
    params = flatten(cfg)
    params.update({f"data.{k}": v for k, v in flatten(data).items()})
    key = config_key or tracking.config_key(cfg)
    run_id = tracking.trial_run(client, exp_id, parent_run_id, trial_id, key, params, cfg.seed,
                                name_key=name_key)
    done = tracking.finished_metrics(client, run_id)
    if done is not None:
        say(f"trial {trial_id}: already finished in MLflow run {run_id}; not redone")
        return done
    try:
        return _pretrain_and_probe(cfg, data, probe, client, run_id, name_key or key, trial_id, tracking_uri,
                                   storage, in_tune, do_probe, moments)
    except BaseException as exc:
        # The run says what happened: a crash is "failed" (never left looking "running").
        tracking.fail_if_running(client, run_id, f"{type(exc).__name__}: {exc}")
        raise


def _pretrain_and_probe(cfg, data, probe, client, run_id, key, trial_id, tracking_uri, storage,
                        in_tune, do_probe, moments: dict[str, float]) -> dict:
    paths = resolve(data)
    store = frame_store(data, paths)
    base_path, base_label = "", cfg.base
    if cfg.arm == "lora":
        if cfg.base in ("", "synthetic-demo"):
            base_path, base_label = ensure_demo_base(data, store.path, storage), "synthetic-demo"
        else:
            base_path = cfg.base
        tracking.set_base(client, run_id, base_label)
    sets = tasks.build_sets(data, tasks.resolve(probe), paths) if do_probe else {}
    run_label = f"trial-{trial_id}"
    moments["fit_start"] = time.time()
    res = run_pretrain(cfg, read_store(store.path, data.max_frames, seed=cfg.seed), storage_path=str(Path(storage).resolve()),
                       run_name=run_label, tracking_uri=tracking_uri, mlflow_run_id=run_id,
                       base_path=base_path, base_label=base_label, trial=tracking.run_name(key, cfg.seed), in_tune=in_tune,
                       final_probe=("sportray.trial:probe_in_worker", (sets, probe)) if sets else None)
    moments["fit_end"] = time.time()
    # rank 0's moments, unless they are an earlier attempt's (a resumed run that had already
    # trained to the end reports nothing new: its metrics are the last checkpoint's)
    worker_clock = {k.removeprefix("clock/"): v for k, v in res.metrics.items() if k.startswith("clock/")}
    if "metrics" in res.probed:   # the probe ran in the worker (else it runs after the fit)
        worker_clock.update(res.probed["clock"])
    moments.update({k: v for k, v in worker_clock.items() if v >= moments["fit_start"]})
    final = {"final_loss": res.metrics.get("train/loss", float("nan")),
             "final_rel_dist_init": res.metrics.get("train/rel_dist_init", float("nan")),
             "final_weight_norm": res.metrics.get("train/weight_norm", float("nan")),
             "diverged": 1.0 if res.status == "diverged" else 0.0,
             "steps_done": float(res.steps), "frames_in_store": float(store.frames),
             "bad_files": float(len(store.bad_files))}
    if res.status == "diverged":
        final["diverged_step"] = float(res.steps)
    artifacts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "trial_config.json").write_text(json.dumps(
            {"pretrain": dataclasses.asdict(cfg), "data": dataclasses.asdict(data),
             "probe": dataclasses.asdict(probe), "store": store.path, "store_key": store.key,
             "code_version": code_version(), "checkpoint": res.backbone_dir,
             "status": res.status, "reason": res.reason}, indent=1, default=str))
        artifacts.append(str(Path(tmp, "trial_config.json")))
        if res.status == "failed":
            tracking.log_final(client, run_id, final, artifacts, status="failed")
            raise RuntimeError(f"trial {trial_id} failed in training: {res.reason}")
        artifacts += _curves(client, run_id, tmp, key, res)
        if do_probe and res.status in ("finished", "diverged") and res.backbone_dir:
            try:
                metrics, probe_artifacts = _probe_result(res, sets, probe, cfg, Path(tmp) / "probe", trial_id)
                final.update(metrics)
                artifacts += probe_artifacts
            except Exception as exc:
                if res.status != "diverged":
                    raise
                # A diverged backbone may hold NaN weights: its probe failing is part of the finding.
                say(f"trial {trial_id}: probe of the diverged backbone failed ({type(exc).__name__}: {exc})")
            moments.setdefault("probe_end", time.time())
        if res.status == "finished" and res.backbone_dir:
            # the backbone itself, loadable with mlflow.pyfunc.load_model (sportray/mlflow_model.py)
            tracking.log_backbone(client, run_id, res.backbone_dir,
                                  {**flatten(cfg), **{f"data.{k}": v for k, v in flatten(data).items()}})
        moments["logged"] = time.time()
        final.update(overhead_times(moments))
        tracking.log_final(client, run_id, final, artifacts, status=res.status, step=res.steps,
                           probe=probe_record(artifacts))
    report_probe(tracking.run_name(key, cfg.seed), cfg.arm, {**final, "status": res.status},   # Grafana's
                 tasks.resolve(probe))                                                          # sweep overview
    final.update({"status": res.status, "mlflow_run_id": run_id, "checkpoint": res.backbone_dir})
    return final


# (phase, it starts at the latest of these moments before its end, its end): a trial's wall time in
# the order it passes; the worker's moments from rank 0. Rank 0 probes the final backbone after its
# last checkpoint (checkpointed -> probe_end, then the group shuts down: train_end); where it did
# not (a resumed run that had finished, a failed in-worker probe), the trial probes after the fit.
PHASES = (("setup", ("trial_start",), "fit_start"),                # data stores and probe sets found
          ("train_start", ("fit_start",), "worker_start"),         # Train controller, worker group, imports
          ("model", ("worker_start",), "model_ready"),             # model built, checkpoint restored
          ("first_batch", ("model_ready",), "first_batch"),        # Ray Data's stream started
          ("steps", ("first_batch",), "last_step"),                # training (the first step's compile included)
          ("final_checkpoint", ("last_step",), "checkpointed"),    # before rank 0's probe
          ("probe", ("checkpointed", "fit_end"), "probe_end"),     # features, heads, bootstrap, panels
          ("train_end", ("probe_end", "last_step"), "fit_end"),    # (final checkpoint,) worker group shutdown
          ("log", ("fit_end", "probe_end"), "logged"))             # curves, the backbone as an MLflow model


def overhead_times(moments: dict[str, float]) -> dict[str, float]:
    """A trial's wall time split into phases, as metrics time/<phase>_s, and time/overhead_s: all
    but the training steps, what a sweep pays per trial whatever its length. A phase whose
    moments are missing (a failed run, no probe) is left out."""
    out = {}
    for name, starts, end in PHASES:
        before = [moments[s] for s in starts if s in moments and end in moments and moments[s] <= moments[end]]
        if before:
            out[f"time/{name}_s"] = moments[end] - max(before)
    end = moments.get("logged", moments.get("fit_end"))
    if end is not None and "time/steps_s" in out:
        out["time/overhead_s"] = end - moments["trial_start"] - out["time/steps_s"]
    return out


def _curves(client, run_id: str, tmp: str, title: str, res) -> list[str]:
    """The training curves as a picture (people look before they read)."""
    names = ("train/loss", "train/inv", "train/sigreg", "train/grad_norm", "train/rel_dist_init", "train/lr")
    history = tracking.metric_histories(client, run_id, names)
    if not history:
        return []
    path = Path(tmp) / "training_curves.png"
    diverged_at = res.steps if res.status == "diverged" else None
    return [str(panels.training_curves(history, path, title=title, diverged_step=diverged_at))]


# ----------------------------------------------------------------------------- references

def run_reference(reference: str, *, data: DataConfig, probe: ProbeConfig, tracking_uri: str,
                  experiment: str, parent_run_id: str | None = None, weights: str = "",
                  model: str = "vit_small", seed: int = 0, gpus: float = 0.0) -> dict:
    """A reference (sportray/references.py: the random floor, the DINOv3 bar, the LoRA base, a
    timm model) as a run of its own; the probe heads and bootstrap use `seed` too, so a
    reference has a spread over seeds like a trial."""
    ref = references.check(reference, weights, model)
    probe = dataclasses.replace(probe, seed=seed)
    tracking_uri = absolute_tracking_uri(tracking_uri)
    client = tracking.connect(tracking_uri)
    exp_id = tracking.experiment_id(client, experiment)
    params = {"reference": reference, "model": ref.logged_model(model), "seed": seed, "weights": weights}
    run_id = tracking.reference_run(client, exp_id, parent_run_id, ref.label(model), params, seed=seed)
    done = tracking.finished_metrics(client, run_id)
    if done is not None:
        return done
    sets = tasks.build_sets(data, tasks.resolve(probe))
    source = {"reference": reference, "model": model, "seed": seed, "weights": weights}
    with tempfile.TemporaryDirectory() as tmp:
        metrics, artifacts = run_probe_task(source, sets, probe, str(Path(tmp) / "probe"), gpus=gpus)
        tracking.log_final(client, run_id, metrics, artifacts, status="finished", probe=probe_record(artifacts))
    metrics.update({"status": "finished", "mlflow_run_id": run_id})
    return metrics


def run_references(references, seeds, *, data: DataConfig, probe: ProbeConfig, tracking_uri: str,
                   experiment: str, parent_run_id: str | None = None, weights: str = "",
                   model: str = "vit_small", gpus: float = 0.0) -> dict[tuple[str, int], dict]:
    """Every reference over the same seeds as the trials: {(reference, seed): metrics}. The
    frozen-DINOv3 bar without weights is skipped with a message, never replaced by a random model."""
    todo = []
    for ref in references:
        if ref == "dinov3" and not weights:
            say("reference dinov3: unavailable (no --weights file given); the bar is left out, "
                "never replaced by a random model")
            continue
        todo += [(ref, int(seed)) for seed in seeds]
    say(f"references: probing {', '.join(f'{r} s{s}' for r, s in todo)}")
    # Each probe is a Ray task: submit them together and let the cluster run what fits.
    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        futures = {key: pool.submit(run_reference, key[0], data=data, probe=probe, tracking_uri=tracking_uri,
                                    experiment=experiment, parent_run_id=parent_run_id, weights=weights,
                                    model=model, seed=key[1], gpus=gpus) for key in todo}
        return {key: f.result() for key, f in futures.items()}
