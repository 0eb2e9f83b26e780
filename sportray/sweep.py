"""Sweeps: Ray Tune + OptunaSearch over the pretraining recipe; every trial pretrains on Ray
Train, probes its backbone, and lands in MLflow as a child of the sweep's parent run.

A sweep script (sweeps/*.py) is a `SweepSpec` (a name, a search space over PretrainConfig
fields, presets) plus `main(spec)`. Seeds are repeated per configuration with Tune's
`Repeater`, so Optuna sees one score per recipe (the mean over seeds) and the scorecard sees
every seed. `--resume` restores the latest interrupted sweep of the script (Tune skips its
finished trials; an interrupted trial resumes its Train run from its last checkpoint; MLflow
runs are found again by tag, never duplicated).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from sportray.config import (ConfigError, DataConfig, PretrainConfig, ProbeConfig, absolute_tracking_uri,
                             default_tracking_uri, parse_seeds)
from sportray.console import say
from sportray.validate import OneLineParser

# Intermediate results come from Ray Train (train/loss...), the probe metric only at the end.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")


class Domain:
    """A search-space domain named now and built with ray.tune when the sweep runs, so that a
    sweep script's --help and --print-config never import Ray (seconds): `tune.choice([..])`
    in sweeps/*.py is this module's `tune`. Its text ("choice(['2x224', '2x224+4x64'])") is
    stable, so a sweep's stored configuration compares equal on --resume."""

    def __init__(self, fn: str, args: tuple, kwargs: dict):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    @property
    def categories(self):
        return list(self.args[0]) if self.fn == "choice" else None

    def build(self):
        from ray import tune as ray_tune
        return getattr(ray_tune, self.fn)(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.fn}({', '.join(parts)})"

    __str__ = __repr__


class _LazyTune:
    """`tune.choice(...)`, `tune.loguniform(...)`, ... as Domains (see Domain)."""

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: Domain(name, args, kwargs)


tune = _LazyTune()


def build_space(space: dict) -> dict:
    """Domains -> ray.tune domains (anything else passes through)."""
    return {k: v.build() if isinstance(v, Domain) else v for k, v in space.items()}


@dataclass
class Preset:
    """Fixed recipe fields and sweep size for one preset (demo: minutes on CPU; paper: the study)."""
    pretrain: dict
    data: dict = field(default_factory=dict)
    probe: dict = field(default_factory=dict)
    num_configs: int = 2
    seeds: tuple[int, ...] = (0, 1)
    space: dict | None = None          # overrides the spec's space for this preset
    start_points: list[dict] = field(default_factory=list)  # recipes Optuna evaluates first


@dataclass
class SweepSpec:
    name: str                          # MLflow experiment name and Tune run prefix
    description: str
    space: dict                        # PretrainConfig field -> a ray.tune domain (choice, loguniform, ...)
    presets: dict[str, Preset]
    metric: str = "basketball_iou"    # the probe metric that decides; read on validation only
    mode: str = "max"
    references: tuple[str, ...] = ()   # probe these references as runs of the sweep (random, dinov3)


# ----------------------------------------------------------------------------- the trainable

def _trainable(config: dict, ctx: dict) -> None:
    """One Tune trial: a recipe from Optuna + a seed from the Repeater -> trial.run_trial."""
    import ray.tune

    from sportray.trial import run_trial

    # Space keys are PretrainConfig fields, or "data.<field>" for DataConfig (e.g. data.max_frames).
    overrides = {k: v for k, v in config.items() if not k.startswith("__") and not k.startswith("data.")}
    data_overrides = {k[5:]: v for k, v in config.items() if k.startswith("data.")}
    seed = ctx["seeds"][int(config.get("__trial_index__", 0)) % len(ctx["seeds"])]
    cfg = PretrainConfig(**{**ctx["pretrain"], **overrides, "seed": seed})
    trial_id = ray.tune.get_context().get_trial_id()
    try:
        data = DataConfig(**{**ctx["data"], **data_overrides})
        metrics = run_trial(cfg, data, ProbeConfig(**ctx["probe"]),
                            tracking_uri=ctx["tracking_uri"], experiment=ctx["experiment"],
                            parent_run_id=ctx["parent_run_id"], trial_id=trial_id,
                            storage=ctx["storage"], in_tune=True,
                            config_key=trial_key(cfg, data, {**overrides, **data_overrides}),
                            name_key=trial_label(cfg, {**overrides, **data_overrides}))
    except Exception as exc:
        if not deterministic_failure(exc):
            raise  # may succeed on another try (a lost node): Tune retries it
        # A config error, a missing file, out of memory: the same again would fail the same way.
        # Reported as a failed result (Tune does not retry a trial that returns).
        from sportray.validate import one_line
        ray.tune.report({"status": "failed", "error": one_line(exc)[-1000:], "seed": seed})
        return
    report = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    report["status"] = metrics.get("status", "")
    report["mlflow_run_id"] = metrics.get("mlflow_run_id", "")
    report["seed"] = seed
    if metrics.get("status") == "diverged":
        # No objective value: OptunaSearch records the trial as pruned, never as a good score.
        report.pop(ctx["objective"], None)
    ray.tune.report(report)


_DETERMINISTIC = ("ConfigError", "DataError", "FileNotFoundError", "WeightsError", "CheckpointError",
                  "BatchDoesNotFitError", "OutOfMemoryError", "out of memory", "UnpicklingError")


def deterministic_failure(exc: BaseException) -> bool:
    """A failure that a retry would repeat: bad config, missing/bad files, out of memory (also
    when Ray Train wrapped it into a RuntimeError naming it)."""
    from sportray.data.errors import DataError

    if isinstance(exc, (ConfigError, DataError, FileNotFoundError)):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return any(name in text for name in _DETERMINISTIC)


def failed_trials(results) -> list[tuple[str, str]]:
    """(trial id, one-line reason) of each trial that errored (raised, or reported status failed)."""
    out = []
    for r in results:
        m = r.metrics or {}
        if r.error is not None:
            lines = [ln.strip() for ln in str(r.error).splitlines() if ln.strip()]
            out.append((m.get("trial_id") or str(getattr(r, "path", ""))[-40:], lines[-1] if lines else
                        type(r.error).__name__))
        elif m.get("status") == "failed":
            out.append((m.get("trial_id", "?"), str(m.get("error", "failed"))))
    return out


class SweepFailed(RuntimeError):
    """Every trial of the sweep errored: nothing to rank (exit 1, the reason in the last line)."""


def objective(spec: SweepSpec) -> str:
    """What Optuna, the Repeater's seed mean and "best" read: the VALIDATION probe metric.
    Test metrics are logged and shown, never used to choose (DESIGN.md §4, Probes)."""
    return f"valid/{spec.metric}"


def trial_key(cfg: PretrainConfig, data: DataConfig, searched: dict) -> str:
    """The trial's identity (tag sportray.config_key; the scorecard makes one row per key): the
    whole resolved config as tracking.config_key names it -- every field that changes what is
    learned and differs from its default, the searched ones always, the seed never. So two sweeps
    that differ only by a fixed field (`--set batch_size=32`) never share a row, e.g.
    "scratch 2x224 steps=40 clip=1.0 model=vit_tiny_demo batch_size=32 ... lr=0.001"."""
    from sportray import tracking
    from sportray.config import flatten

    full = {**flatten(cfg), **{f"data.{k}": v for k, v in flatten(data).items()}}
    return tracking.config_key(full, vary=searched)


def trial_label(cfg: PretrainConfig, searched: dict) -> str:
    """The trial's name in MLflow, Tune and Grafana: what differs between the trials of one sweep
    (the searched fields), e.g. "scratch views=2x224+6x96 steps=60 clip=1 lr=0.001"; the run name
    adds the seed. Its identity is `trial_key`."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    order = ["views", "steps", "clip", "lr"]
    keys = sorted(searched, key=lambda k: (order.index(k) if k in order else len(order), k))
    return " ".join([cfg.arm] + [f"{k}={fmt(searched[k])}" for k in keys])


class _FailAwareRepeater:
    """Tune's Repeater tells the searcher the nan-mean over seeds, which would score a recipe
    on its surviving seeds alone. A recipe with a diverged seed is reported without a score
    (Optuna: pruned) instead: a recipe that diverges is not a good recipe."""

    @staticmethod
    def make(searcher, repeat: int):
        from ray.tune.search import Repeater

        class FailAwareRepeater(Repeater):
            def on_trial_complete(self, trial_id, result=None, **kwargs):
                group = self._trial_id_to_group.get(trial_id)
                if group is None:
                    return super().on_trial_complete(trial_id, result, **kwargs)
                score = (result or {}).get(self.searcher.metric)
                group.report(trial_id, float("nan") if score is None else score)
                if group.finished_reporting():
                    scores = group.scores()
                    if any(s is None or (isinstance(s, float) and math.isnan(s)) for s in scores):
                        self.searcher.on_trial_complete(group.primary_trial_id, result=None, **kwargs)
                    else:
                        self.searcher.on_trial_complete(
                            group.primary_trial_id,
                            result={self.searcher.metric: float(sum(scores) / len(scores))}, **kwargs)

        return FailAwareRepeater(searcher, repeat=repeat, set_index=True)


# ----------------------------------------------------------------------------- driver

def latest_sweep_dir(storage: Path, name: str) -> Path | None:
    dirs = sorted(p for p in storage.glob(f"{name}-*") if p.is_dir() and (p / "tuner.pkl").exists())
    return dirs[-1] if dirs else None


SWEEP_CONFIG = "sweep_config.json"


def resolved_config(preset_name, pretrain, data, probe, seeds, n_configs, scheduler, search_seed, space,
                    store_key, weights) -> dict:
    """What a sweep ran with, resolved (preset + --set + data + the store's content key): written
    to the sweep folder, and what --resume must match."""
    return json.loads(json.dumps({
        "preset": preset_name, "pretrain": dataclasses.asdict(pretrain), "data": dataclasses.asdict(data),
        "probe": dataclasses.asdict(probe), "seeds": list(seeds), "num_configs": n_configs,
        "scheduler": scheduler, "search_seed": search_seed, "space": {k: _domain(v) for k, v in space.items()},
        "store_key": store_key, "weights": weights}, default=str))


def _domain(dom) -> object:
    """A Tune search domain as plain data (its repr is an object address)."""
    if isinstance(dom, Domain):   # the sweep scripts' lazy domains (never built for this)
        return {"choice": list(dom.args[0])} if dom.fn == "choice" else {dom.fn: [*dom.args, *dom.kwargs.items()]}
    if hasattr(dom, "categories"):
        return {"choice": list(dom.categories)}
    if hasattr(dom, "lower") and hasattr(dom, "upper"):
        sampler = type(getattr(dom, "sampler", None)).__name__
        return {"range": [dom.lower, dom.upper], "sampler": sampler}
    return dom if isinstance(dom, (int, float, str, bool, list)) else type(dom).__name__


def config_diff(stored: dict, now: dict, prefix: str = "") -> list[str]:
    """'field: stored -> now' for every leaf that differs."""
    out = []
    for key in sorted(set(stored) | set(now)):
        a, b = stored.get(key, "<absent>"), now.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def check_resume(sweep_dir: Path, resolved: dict, *, force: bool = False) -> None:
    """--resume continues a sweep only under the configuration it started with."""

    stored_file = sweep_dir / SWEEP_CONFIG
    if not stored_file.is_file():
        if not force:
            raise ConfigError(f"--resume: {stored_file} is missing, so this sweep's configuration cannot be "
                              "compared; pass --force-resume to continue it anyway")
        return
    diff = config_diff(json.loads(stored_file.read_text()), resolved)
    if not diff:
        return
    if not force:
        raise ConfigError(f"--resume: {sweep_dir.name} ran with another configuration ({'; '.join(diff)}); "
                          "run without --resume for a new sweep, or pass --force-resume to continue it "
                          "under the new one")
    say(f"--force-resume: continuing {sweep_dir.name} despite: {'; '.join(diff)}")


def _worst_cases(pretrain: PretrainConfig, data: DataConfig, space: dict):
    """(pretrain config, max_frames) pairs covering the extremes a trial can take, for the
    data-size check: the largest searched batch/workers, the smallest searched max_frames."""
    def values(name, fixed):
        dom = space.get(name)
        cats = getattr(dom, "categories", None)
        return list(cats) if cats else [fixed]

    batch = max(values("batch_size", pretrain.batch_size))
    workers = max(values("workers", pretrain.workers))
    frames = [m for m in values("data.max_frames", data.max_frames)]
    smallest = min((m for m in frames if m), default=0)
    yield dataclasses.replace(pretrain, batch_size=batch, workers=workers), smallest


def max_concurrent(pretrain: PretrainConfig) -> int:
    """Trials that fit at once: GPUs per trial on GPU clusters; on CPU, leave a core for Ray Data."""
    import ray

    res = ray.cluster_resources()
    if pretrain.gpus_per_worker > 0:
        return max(1, int(res.get("GPU", 0) // (pretrain.gpus_per_worker * pretrain.workers)))
    # One core stays outside the trials' reservations: a trial's store reads are quarter-CPU Ray
    # tasks (frames.read_store) that must find a free CPU, or its trainers wait on data forever.
    spare = res.get("CPU", 1) - 1.0
    return max(1, int(spare // (pretrain.cpus_per_worker * pretrain.workers)))


def _mark_stopped_early(client, experiment_id: str, parent_run_id: str, results) -> None:
    """Trials the scheduler (ASHA) stopped end mid-training, before their probe: their last
    result is a Train report (status "running"). Their MLflow runs say so instead of looking
    like they are still running."""
    from sportray import tracking

    for r in results:
        m = r.metrics or {}
        if r.error or m.get("status") != "running" or not m.get("trial_id"):
            continue
        step, loss = int(m.get("step") or 0), m.get("train/loss")
        loss_txt = f" (train/loss {loss:.4g})" if isinstance(loss, (int, float)) else ""
        if tracking.mark_stopped(client, experiment_id, parent_run_id, m["trial_id"], step,
                                 note=f"stopped early by ASHA at step {step}{loss_txt}: its LeJEPA loss "
                                      "ranked in the worse half at that rung; no probe was run"):
            say(f"trial {m['trial_id']}: stopped early by ASHA at step {step}")


@dataclass(frozen=True)
class SweepPlan:
    """A sweep's inputs, resolved and validated once (before Ray starts), then passed down."""
    spec: SweepSpec
    preset_name: str
    preset: Preset
    pretrain: PretrainConfig
    data: DataConfig
    probe: ProbeConfig
    tasks: tuple                       # sportray.tasks.ProbeTask objects of probe.tasks
    seeds: tuple[int, ...]
    n_configs: int
    space: dict
    scheduler: str
    search_seed: int
    tracking_uri: str
    storage: str
    weights: str

    def resolved(self, store_key: str, weights: str) -> dict:
        return resolved_config(self.preset_name, self.pretrain, self.data, self.probe, self.seeds, self.n_configs,
                               self.scheduler, self.search_seed, self.space, store_key, weights)


def plan_sweep(spec: SweepSpec, preset_name: str, *, tracking_uri: str | None, storage: str, resume: bool,
               num_configs: int | None, seeds: tuple[int, ...] | None, scheduler: str, search_seed: int,
               overrides: dict | None, data_overrides: dict | None, weights: str) -> SweepPlan:
    """Every option checked (ConfigError naming it) and the configuration resolved: preset +
    --set + data. Touches no data, Ray or MLflow (only the sqlite file's folder is checked)."""
    from sportray import tasks
    from sportray.validate import check_count, check_storage, check_tracking_uri

    if preset_name not in spec.presets:
        raise ConfigError(f"--preset {preset_name!r}: expected one of {', '.join(spec.presets)}")
    preset = spec.presets[preset_name]
    check_count("--num-configs", num_configs)
    check_count("--search-seed", search_seed, minimum=0)
    if scheduler not in ("fifo", "asha"):
        raise ConfigError(f"--scheduler {scheduler!r}: expected fifo or asha")
    tracking_uri = absolute_tracking_uri(tracking_uri or default_tracking_uri())
    check_tracking_uri(tracking_uri)
    storage = check_storage(storage)
    if resume and latest_sweep_dir(Path(storage).resolve(), spec.name) is None:
        raise ConfigError(f"--resume: no interrupted sweep named {spec.name}-* under {Path(storage).resolve()}")
    pretrain = PretrainConfig(**{**preset.pretrain, **(overrides or {})}).validate()
    data = DataConfig(**{**preset.data, **(data_overrides or {})}).validate().absolute()  # trials run elsewhere
    probe = ProbeConfig(**preset.probe).validate()
    chosen = tasks.resolve(probe)
    if spec.metric not in [t.metric for t in chosen]:
        raise ConfigError(f"sweep {spec.name}: its metric {spec.metric} is not a metric of the probe tasks "
                          f"{probe.tasks} ({', '.join(t.metric for t in chosen)})")
    space = preset.space if preset.space is not None else spec.space
    # A field fixed on the command line (--set steps=4) is no longer searched.
    space = {k: v for k, v in space.items() if k not in (overrides or {})}
    if not space:
        raise ConfigError("every searched field is fixed by --set: nothing left for Optuna to search")
    return SweepPlan(spec, preset_name, preset, pretrain, data, probe, chosen,
                     parse_seeds(",".join(map(str, seeds))) if seeds else tuple(preset.seeds),
                     num_configs if num_configs is not None else preset.num_configs, space, scheduler,
                     search_seed, tracking_uri, storage, weights)


def run_sweep(spec: SweepSpec, preset_name: str = "demo", *, tracking_uri: str | None = None,
              address: str | None = None, storage: str = "sportray-runs", resume: bool = False,
              num_configs: int | None = None, seeds: tuple[int, ...] | None = None,
              scheduler: str = "fifo", search_seed: int = 0, overrides: dict | None = None,
              data_overrides: dict | None = None, weights: str = "", force_resume: bool = False,
              print_config: bool = False) -> dict:
    """The sweep, stage by stage: plan (validate) -> start Ray and MLflow -> data once -> the
    sweep's folder and parent run -> Tune trials -> references -> scorecard and summary.
    print_config: print the resolved configuration (JSON) and return it, before Ray, MLflow or
    any data is touched."""
    plan = plan_sweep(spec, preset_name, tracking_uri=tracking_uri, storage=storage, resume=resume,
                      num_configs=num_configs, seeds=seeds, scheduler=scheduler, search_seed=search_seed,
                      overrides=overrides, data_overrides=data_overrides, weights=weights)
    if print_config:
        resolved = plan.resolved("(the frame store's content key, known once it is built)", weights)
        print(json.dumps(resolved, indent=1, sort_keys=True, default=str))
        return resolved

    from sportray.validate import check_address
    check_address(address)  # nothing at --address: said in seconds, as the only line, before anything starts
    # Importing Ray/MLflow and starting Ray take a while on a busy machine: never a silent start.
    print(f"[sportray] {spec.name}: starting Ray and MLflow ...", file=sys.stderr, flush=True)
    from sportray import tracking
    from sportray.trial import run_references

    client, ray_info, storage_path = _start(plan, address)
    data, store_key, references, reference_weights = _prepare_data(plan, storage_path)
    sweep_dir = latest_sweep_dir(storage_path, spec.name) if resume else None
    if resume and sweep_dir is None:
        raise ConfigError(f"--resume: no interrupted sweep named {spec.name}-* under {storage_path}")
    if sweep_dir is None:
        sweep_dir = storage_path / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    resolved = plan.resolved(store_key, reference_weights)
    if resume:
        check_resume(sweep_dir, resolved, force=force_resume)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SWEEP_CONFIG).write_text(json.dumps(resolved, indent=1, sort_keys=True, default=str))
    exp_id = tracking.experiment_id(client, spec.name)
    parent = tracking.parent_run(client, exp_id, spec.name, sweep_dir, {
        "preset": preset_name, "num_configs": plan.n_configs, "seeds": ",".join(map(str, plan.seeds)),
        "metric": objective(spec), "scheduler": plan.scheduler, "search_seed": plan.search_seed})
    ctx = {"pretrain": dataclasses.asdict(plan.pretrain), "data": dataclasses.asdict(data),
           "probe": dataclasses.asdict(plan.probe), "seeds": plan.seeds, "tracking_uri": plan.tracking_uri,
           "experiment": spec.name, "parent_run_id": parent, "storage": str(storage_path / "train"),
           "objective": objective(spec)}
    results = _tuner(plan, ctx, sweep_dir, storage_path, resume).fit()
    failed = failed_trials(results)
    if results and len(failed) == len(results):
        for trial, reason in failed:
            say(f"trial {trial} failed: {reason}")
        tracking.set_status(client, parent, "failed", note=f"all {len(results)} trials failed")
        raise SweepFailed(f"all {len(results)} trials failed, so there is nothing to rank; the last said: "
                          f"{failed[-1][1]}")
    # The floor (and the bar) over the trials' seeds: a reference row has a spread like any row.
    # After the trials, not beside them: their probes would take the cores Ray Data reads with.
    run_references(references, plan.seeds, data=data, probe=plan.probe, tracking_uri=plan.tracking_uri,
                   experiment=spec.name, parent_run_id=parent, weights=reference_weights,
                   model=plan.pretrain.model, gpus=1.0 if plan.pretrain.gpus_per_worker > 0 else 0.0)
    _mark_stopped_early(client, exp_id, parent, results)
    return _finish(plan, client, exp_id, parent, sweep_dir, len(results), len(failed), ray_info)


def _start(plan: SweepPlan, address: str | None):
    """Ray and MLflow up, the cluster checked against the plan: (client, ray_info, storage path)."""
    from sportray import tracking
    from sportray.runtime import init_ray
    from sportray.storage import check_shared_storage
    from sportray.validate import check_multi_host, check_resources

    if not os.environ.get("SPORTRAY_VERBOSE"):
        from sportray.console import quiet_process
        quiet_process()   # MLflow's schema lines, Ray Data's and Tune's console output (console.py)
    client = tracking.connect(plan.tracking_uri)  # fail before anything trains
    # Workers' and raylets' own lines go to Ray's log files; trial errors still come back via Tune.
    ray_info = init_ray(address, worker_logs=False)
    storage_path = Path(plan.storage).resolve()  # check_storage refused object-store URIs
    check_shared_storage(str(storage_path))  # a multi-node run on node-local disk fails here, not mid-sweep
    data = plan.data
    check_multi_host(plan.tracking_uri, {"--data-dir": data.data_dir, "--corpus": data.corpus,
                                         "--basketball": data.basketball, "--soccer-labels": data.soccer_labels})
    check_resources(plan.pretrain)  # a request the cluster cannot meet would wait forever
    storage_path.mkdir(parents=True, exist_ok=True)
    say(f"Ray dashboard (while this runs): {ray_info['dashboard_url'] or '(not available)'}"
        + (f"  token: {_bin('ray')} get-auth-token" if ray_info["dashboard_url"] else ""))
    say(f"MLflow: {_short_uri(plan.tracking_uri)}   runs: {_rel(storage_path)}   worker logs: "
        + ("here" if os.environ.get("SPORTRAY_VERBOSE") else "/tmp/ray/session_latest/logs"))
    return client, ray_info, storage_path


def _prepare_data(plan: SweepPlan, storage_path: Path):
    """Data once, before any trial (the frame store and probe sets are shared by all trials):
    (data config pointing at the store, store key, references, their weights)."""
    from sportray import tasks
    from sportray.console import Stage
    from sportray.data.defaults import frame_store, resolve
    from sportray.validate import check_data_fits

    data = plan.data
    with Stage("data: the synthetic default (written once, then reused)" if not data.corpus
               else "data: locating corpus and probe data"):
        paths = resolve(data).ensure()
    with Stage("frame store: decoding sampled frames with Ray Data") as st:
        store = frame_store(data, paths)
        st.detail = (f"{store.frames} frames from {store.videos} videos{' (reused)' if store.reused else ''}, "
                     f"{len(store.bad_files)} bad files")
    for bad in store.bad_files:
        say(f"  skipped {bad['path']}: {bad['reason']}")
    # Every trial needs one step's global batch from the store: said now, not after minutes of retries.
    for trial_pretrain, max_frames in _worst_cases(plan.pretrain, data, plan.space):
        check_data_fits(store.frames, trial_pretrain, max_frames, store.path)
    with Stage(f"probe sets: {', '.join(t.name for t in plan.tasks)}"):
        tasks.build_sets(data, plan.tasks, paths)
    data = dataclasses.replace(data, store=store.path)
    references, reference_weights = plan.spec.references, plan.weights
    if plan.pretrain.arm == "lora" and plan.pretrain.base in ("", "synthetic-demo"):
        from sportray.trial import ensure_demo_base

        # once, before trials race for it; without DINOv3 it is the bar the adapters are read against
        reference_weights = ensure_demo_base(data, store.path, str(storage_path / "train"))
        references = tuple(r for r in references if r != "dinov3") + ("base",)
    return data, store.key, references, reference_weights


def _tuner(plan: SweepPlan, ctx: dict, sweep_dir: Path, storage_path: Path, resume: bool):
    """The Tune run: restored from the sweep's folder on --resume, else Optuna (its study in
    sqlite beside the sweep) behind the seed Repeater, optionally ASHA."""
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(_trainable, ctx=ctx), {"cpu": 0.01})
    pretrain, n_trials = plan.pretrain, plan.n_configs * len(plan.seeds)
    if resume and tune.Tuner.can_restore(str(sweep_dir)):
        say(f"resuming sweep {sweep_dir}")
        return tune.Tuner.restore(str(sweep_dir), trainable=trainable, resume_errored=True)
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from sportray.console import TrialNamer
    from sportray.tuneconsole import SweepConsole

    # Start points: the preset's first recipes (e.g. the views comparison at equal steps),
    # minus fields fixed by --set; Optuna's TPE proposes the rest.
    start = [{k: v for k, v in p.items() if k in plan.space} for p in plan.preset.start_points[:plan.n_configs]]
    # The study lives beside the sweep (sqlite): optuna-dashboard opens it, and --resume
    # (which restores this searcher from Tune's checkpoint) keeps writing to it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(metric=objective(plan.spec), mode=plan.spec.mode, seed=plan.search_seed,
                            points_to_evaluate=[p for p in start if p] or None,
                            study_name=sweep_dir.name, storage=optuna.storages.RDBStorage(optuna_uri(sweep_dir)))
    # Always through the Repeater, even for one seed: it hides Train's intermediate reports
    # (which lack the probe metric) from OptunaSearch, and tells Optuna a diverged recipe failed.
    searcher = _FailAwareRepeater.make(searcher, repeat=len(plan.seeds))
    searcher = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent(pretrain))
    sched = None
    if plan.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # stop_last_trials=False: a trial that reaches the last step must go on to its probe
        # (ASHA would otherwise stop every trial at max_t, before any probe ran).
        sched = ASHAScheduler(metric="train/loss", mode="min", time_attr="step", max_t=pretrain.steps,
                              grace_period=max(1, pretrain.steps // 4), reduction_factor=2, stop_last_trials=False)
    say(f"trials: {plan.n_configs} recipes x {len(plan.seeds)} seeds, up to {max_concurrent(pretrain)} at a "
        f"time; Optuna study {_rel(sweep_dir / OPTUNA_DB)}")
    # Tune's own output off (verbose=0): SweepConsole prints a short table instead, trials
    # named by recipe and seed ("2x224 40st clip1 lr1e-3 s0"), as their MLflow runs are.
    return tune.Tuner(
        trainable, param_space=build_space(plan.space),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=sched, num_samples=n_trials,
                                    trial_name_creator=TrialNamer(plan.seeds)),
        run_config=tune.RunConfig(name=sweep_dir.name, storage_path=str(storage_path),
                                  failure_config=tune.FailureConfig(max_failures=1), verbose=0,
                                  callbacks=[SweepConsole(n_trials, pretrain.steps, objective(plan.spec))]))


def _finish(plan: SweepPlan, client, exp_id: str, parent: str, sweep_dir: Path, n_trials: int, n_errors: int,
            ray_info: dict) -> dict:
    """The scorecard of the sweep's runs into its folder and onto the parent run, which opens on
    the answer (summary metrics, the best recipe, the scorecard as its description); then the
    summary (summary.json) and the console's last lines."""
    from sportray import scorecard, tracking

    spec = plan.spec
    records = scorecard.load_runs(client, spec.name, parent_run_id=parent)
    card = scorecard.build(records, probe_tasks=plan.tasks)
    out_dir = sweep_dir / "scorecard"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scorecard.md").write_text(scorecard.to_markdown(card))
    (out_dir / "scorecard.csv").write_text(scorecard.to_csv(card))
    plot = scorecard.plot_vs_steps(card, out_dir / "metrics_vs_steps.png")
    best = best_recipe(card, spec.metric)
    names = {r.run_id: r.run_name for r in records}
    tracking.log_sweep_end(
        client, parent, sweep_metrics(card, best, spec.metric, n_trials, n_errors),
        note="**Scorecard** (ranked on validation; test reported)\n\n" + scorecard.to_markdown(card),
        best=(best["config"], [names.get(r, r) for r in best["run_ids"]]) if best else None,
        artifacts=[f for f in (out_dir / "scorecard.md", out_dir / "scorecard.csv", plot) if f and Path(f).exists()])
    tracking.probe_view(client, exp_id, [spec.metric] + [t.metric for t in plan.tasks if t.metric != spec.metric])
    summary = {"sweep_dir": str(sweep_dir), "experiment": spec.name, "parent_run_id": parent,
               "trials": n_trials, "errored_trials": n_errors, "best": best,
               "beats_floor": card.beats_floor(),
               "scorecard": str(out_dir / "scorecard.md"), "tracking_uri": plan.tracking_uri,
               "dashboard_url": ray_info["dashboard_url"]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print("\n".join(final_lines(spec, card, best, names, summary, sweep_dir, n_trials, n_errors, exp_id)),
          flush=True)
    return summary


OPTUNA_DB = "optuna.db"


def optuna_uri(sweep_dir: Path) -> str:
    """The sweep's Optuna study (sqlite beside it; study name = the sweep folder's name)."""
    return f"sqlite:///{Path(sweep_dir).resolve() / OPTUNA_DB}"


def _bin(tool: str) -> str:
    """How to run `tool` as installed with this Python: `.venv/bin/mlflow` (relative when under
    the working directory), else its name (on PATH)."""
    exe = Path(sys.executable).absolute().parent / tool   # not resolved: venv bins are symlinks
    if not exe.exists():
        return tool
    try:
        return str(exe.relative_to(Path.cwd().absolute()))
    except ValueError:
        return str(exe)


def _rel(path) -> str:
    """A path as short as it can be said from the working directory."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(p)


def _short_uri(uri: str) -> str:
    if uri.startswith("sqlite:///"):
        rel = _rel(uri[len("sqlite:///"):])
        return f"sqlite:///{rel}"
    return uri


def final_lines(spec: SweepSpec, card, best: dict | None, run_names: dict, summary: dict, sweep_dir: Path,
                n_trials: int, n_errors: int, experiment_id: str, width: int = 100) -> list[str]:
    """The sweep's ending, within `width` columns: the best recipe by validation seed mean with
    its interval and run names, the floor, what beats it, where the scorecard is, and
    copy-paste commands for the MLflow UI (as installed) and the Ray dashboard (token step)."""
    metric = spec.metric

    def iv(lo, hi):
        return f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "[no interval]"

    out = [f"== {spec.name}: {n_trials} trials" + (f", {n_errors} failed" if n_errors else "") + " " + "=" * 40]
    if best is None:
        out.append(f"Best recipe by valid/{metric}: none (no trial finished with a probe)")
    else:
        out.append(f"Best recipe by valid/{metric} (mean of {len(best['seeds'])} seeds): {best['config']}")
        out.append(f"  valid {best['valid_mean']:.3f} {iv(*best['valid_interval'])}   test {best['test_mean']:.3f} "
                   f"{iv(*best['test_interval'])} (reported, not chosen on)   vs floor: {best['vs_floor'] or '?'}")
        out.append("  runs: " + ", ".join(run_names.get(r, r[:8]) for r in best["run_ids"]))
    for row in card.rows:
        if row.reference == "random":
            parts = [f"{m} {row.stats[m].test.mean:.3f} {iv(row.stats[m].test.low, row.stats[m].test.high)}"
                     for m in card.metrics if row.stats[m].test.mean is not None]
            if parts:
                out.append(f"Floor (random init, {len(row.seeds)} seeds), test: " + "; ".join(parts))
    beats = card.beats_floor()
    out.append("Beats the floor (disjoint 95 % intervals): "
               + (", ".join(f"{c} on {m}" for c, m in beats) if beats else "no row"))
    out.append(f"Scorecard: {_rel(summary['scorecard'])}")
    uri = _short_uri(summary["tracking_uri"])
    from sportray.tracking import view_path
    out.append("MLflow (the trials ranked on validation, probe metrics as columns; then Compare):")
    out.append(f"  {_bin('mlflow')} ui --backend-store-uri {uri} --port 5000")
    out.append(f"http://127.0.0.1:5000/{view_path(experiment_id)}")
    out.append(f"Optuna: optuna-dashboard {_short_uri(optuna_uri(sweep_dir))}")
    out.append("Ray dashboard: it lives while a sweep runs; for one to keep, start Ray first:")
    out.append(f"  {_bin('ray')} start --head --dashboard-host 127.0.0.1 && {_bin('python')} sweeps/{spec.name}.py "
               "--address auto")
    out.append(f"  then open http://127.0.0.1:8265 and paste the token of: {_bin('ray')} get-auth-token")
    wrapped = []
    for line in out:
        indent = "    " if line.startswith("  ") else "  "
        wrapped += textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False,
                                 break_long_words=False) or [""]
    return wrapped


def sweep_metrics(card, best: dict | None, metric: str, n_trials: int, n_errors: int) -> dict[str, float]:
    """The parent run's metrics: the best recipe's validation and test seed means with their
    intervals, the random floor's test means, trial counts and how many rows beat the floor."""
    out = {"trials": n_trials, "failed_trials": n_errors, "rows_beating_floor": len(card.beats_floor())}
    if best:
        for split in ("valid", "test"):
            out[f"best_{split}_{metric}"] = best[f"{split}_mean"]
            lo, hi = best[f"{split}_interval"]
            if lo is not None and hi is not None:
                out[f"best_{split}_{metric}_ci_low"], out[f"best_{split}_{metric}_ci_high"] = lo, hi
    for row in card.rows:
        if row.reference == "random":
            for m in card.metrics:
                if row.stats[m].test.mean is not None:
                    out[f"floor_test_{m}"] = row.stats[m].test.mean
    return {k: v for k, v in out.items() if v is not None and v == v}


def best_recipe(card, metric: str) -> dict | None:
    """The trained recipe ranked first on the VALIDATION seed mean (the scorecard's rank), with
    its validation and test figures; None when no trial row has a validation value."""
    for row in card.ranked(metric):
        s = row.stats[metric]
        if row.kind != "trial" or s.rank is None:
            continue
        return {"config": row.config, "seeds": row.seeds, "run_ids": row.run_ids,
                "chosen_on": f"valid/{metric}", "valid_mean": s.valid.mean,
                "valid_interval": [s.valid.low, s.valid.high], "test_mean": s.test.mean,
                "test_interval": [s.test.low, s.test.high], "vs_floor": s.vs_floor}
    return None


def summary_lines(card, metric: str, best: dict | None) -> list[str]:
    """The sweep's last words: the best recipe by validation, the floor, what beats it."""
    def iv(lo, hi):
        return f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "[no interval]"

    lines = []
    if best is None:
        lines.append(f"Best recipe (by valid/{metric}): none (no trial finished with a probe)")
    else:
        lines.append(f"Best recipe (by valid/{metric}, seed mean of {len(best['seeds'])}): {best['config']}")
        lines.append(f"  valid {best['valid_mean']:.3f} {iv(*best['valid_interval'])}; test (reported, not "
                     f"chosen on) {best['test_mean']:.3f} {iv(*best['test_interval'])}; vs random floor: "
                     f"{best['vs_floor'] or '?'}")
    for row in card.rows:
        if row.reference == "random":
            for m in card.metrics:
                t = row.stats[m].test
                if t.mean is not None:
                    lines.append(f"Random floor ({len(row.seeds)} seeds) test/{m}: {t.mean:.3f} {iv(t.low, t.high)}")
    beats = card.beats_floor()
    lines.append("Beats the floor (disjoint 95 % intervals over seeds and test units): "
                 + (", ".join(f"{c} on {m}" for c, m in beats) if beats else "no row"))
    return lines


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and every option's default (unless its help says it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False or \
                action.default in ([], "", argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def parser_for(spec: SweepSpec) -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"python sweeps/{spec.name}.py", description=spec.description,
                                formatter_class=_HelpFormatter)
    per_preset = lambda f: ", ".join(f"{n}: {f(pr)}" for n, pr in sorted(spec.presets.items()))  # noqa: E731
    p.add_argument("--preset", choices=sorted(spec.presets), default="demo",
                   help="demo: tiny ViT, minutes on CPU; paper: ViT-S/16 and the study's budgets")
    p.add_argument("--address", default=None, help="join an existing Ray cluster (default: start a local one)")
    p.add_argument("--tracking-uri", default=default_tracking_uri(),
                   help="MLflow tracking URI (default sqlite:///mlflow.db, or $MLFLOW_TRACKING_URI)")
    p.add_argument("--storage", default="sportray-runs",
                   help="Tune/Train storage; on a multi-node cluster a path every node shares (NFS, EFS)")
    p.add_argument("--resume", action="store_true", help="restore the latest interrupted sweep of this script "
                   "(refused when its stored configuration differs from this command's)")
    p.add_argument("--force-resume", action="store_true",
                   help="with --resume: continue even if the configuration differs (the difference is printed)")
    p.add_argument("--num-configs", type=int, default=None, help="recipes Optuna proposes (each run once per "
                   f"seed; default per preset: {per_preset(lambda pr: pr.num_configs)})")
    p.add_argument("--seeds", default=None, help="comma list of seeds per recipe, e.g. 0,1,2 (default per "
                   f"preset: {per_preset(lambda pr: ','.join(map(str, pr.seeds)))})")
    p.add_argument("--scheduler", choices=("fifo", "asha"), default="fifo",
                   help="asha: stop trials early on the label-free LeJEPA loss")
    p.add_argument("--search-seed", type=int, default=0, help="Optuna TPE seed")
    p.add_argument("--data-dir", default=None,
                   help="where the embedded default and stores live (default: sportray-data)")
    p.add_argument("--corpus", default=None, help="pretraining videos (SoccerNet root or any folder)")
    p.add_argument("--basketball", default=None, help="DeepSportRadar root for the basketball probe")
    p.add_argument("--soccer-labels", default=None, help="SoccerNet root with Labels-v2.json (soccer probe)")
    p.add_argument("--soccer-splits", default=None,
                   help="folder of SoccerNetGames{Train,Valid,Test}.json (default: the SoccerNet root's, else seeded)")
    p.add_argument("--soccer-include-not-shown", action="store_true",
                   help='put "not shown" events back into the soccer probe')
    p.add_argument("--basketball-coco", default=None,
                   help="COCO file of the basketball probe: train|val|test|trainval|trainvaltest|challenge or a path")
    p.add_argument("--basketball-images", default=None, help="folder the COCO file_names are relative to")
    p.add_argument("--weights", default="", help="DINOv3 ViT-S/16 weights file (LoRA base and the bar)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="fix a PretrainConfig field, e.g. --set batch_size=64 --set gpus_per_worker=1")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration (preset, --set, data, probe, seeds, search space) "
                        "as JSON and exit; starts nothing")
    return p


def _parse_set(items: list[str]) -> dict:
    from sportray.validate import parse_set
    return parse_set(items, PretrainConfig)


def main(spec: SweepSpec, argv: list[str] | None = None) -> int:
    """The sweep script's entry point: bad input -> one line, exit 2; every trial failed -> the
    reason as the last line, exit 1; else 0."""
    from sportray.validate import run_edge

    args = parser_for(spec).parse_args(argv)
    if args.force_resume and not args.resume:
        args.resume = True
    try:
        return run_edge(spec.name, lambda: _main(spec, args))
    except SweepFailed as err:
        print(f"{spec.name}: error: {err}", file=sys.stderr, flush=True)
        return 1


def _main(spec: SweepSpec, args) -> int:
    data_over = {k: v for k, v in {"data_dir": args.data_dir, "corpus": args.corpus,
                                   "basketball": args.basketball,
                                   "soccer_labels": args.soccer_labels, "soccer_splits": args.soccer_splits,
                                   "soccer_include_not_shown": args.soccer_include_not_shown,
                                   "basketball_coco": args.basketball_coco,
                                   "basketball_images": args.basketball_images}.items() if v}
    overrides = _parse_set(args.set)
    if args.weights:
        if not Path(args.weights).is_file():
            raise ConfigError(f"--weights {args.weights}: no such file")
        overrides.setdefault("base", args.weights)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    run_sweep(spec, args.preset, tracking_uri=args.tracking_uri, address=args.address,
              storage=args.storage, resume=args.resume, num_configs=args.num_configs, seeds=seeds,
              scheduler=args.scheduler, search_seed=args.search_seed, overrides=overrides,
              data_overrides=data_over, weights=args.weights, force_resume=args.force_resume,
              print_config=args.print_config)
    return 0
