"""MLflow runs: what sportray logs, where, and under which names.

Layout (the binding names are in notes/CONTRACTS.md, "MLflow names"):

    experiment  one per sweep script (name = script stem, e.g. "scratch_views")
    └─ parent run   one per sweep *directory*: tags sportray.kind=sweep, sportray.sweep,
       │            sportray.sweep_dir; a resumed sweep (same directory) reuses it
       ├─ trial run one per Ray Tune trial: tags mlflow.parentRunId, sportray.kind=trial,
       │            sportray.trial_id, sportray.config_key, sportray.status; run name
       │            "<short config key> s<seed>"; params = flattened PretrainConfig field names
       └─ reference run  sportray.kind=reference, sportray.reference in {random, dinov3}

Rules this module enforces (each one answers an MLflow pitfall, DESIGN.md §5):

* Never the fluent API / global active run. MLflow's active run is per thread and concurrent
  trials logging into one run fail with "Changing param values is not allowed" (ray#30649).
  Every call here takes an explicit ``run_id`` and goes through ``MlflowClient``.
* Idempotent run creation. A retried trial (Ray Train ``FailureConfig``), a restored Tune
  trial or a resumed sweep finds its existing run by tags instead of creating a duplicate:
  the parent by ``sportray.sweep_dir``, a trial by (parent, ``sportray.trial_id``), a
  reference by (parent, ``sportray.reference``).
* Params are written once. Values are strings (``str(value)``); a param that is already
  logged with the same value is skipped; a param already logged with a *different* value is
  never changed (MLflow forbids it and the first value is what the run trained with): the new
  value is kept as tag ``sportray.param_conflict.<name>`` and a warning is logged.
* One continuous curve per trial. ``StepLogger`` reads the highest step already logged for
  ``train/loss``; a worker resumed from an older checkpoint re-runs some steps, and those
  steps are not logged a second time (the first values stay; the curve has each step once).
* Status. ``sportray.status`` (running | finished | diverged | failed) is the source of truth
  and is what the scorecard reads. The MLflow run status follows it:
  running -> RUNNING, finished -> FINISHED, failed -> FAILED, and **diverged -> FINISHED**:
  a diverged trial ended the way the recipe allowed (divergence detected, diagnostics and
  probe metrics logged, the sweep goes on); FAILED is kept for crashes, so
  ``attributes.status = 'FAILED'`` lists exactly the runs that need a bug hunt. To see
  diverged trials in the MLflow UI filter with ``tags.sportray.status = 'diverged'`` (or
  ``metrics.diverged = 1``); their run description also says so.
* Fail before training. ``connect`` checks that the tracking store answers (fast: no
  retries, short timeout) and raises ``TrackingError`` naming the URI and the fix.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
import time
import warnings
from dataclasses import fields as _dc_fields
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import save_model as save_pyfunc
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from sportray.config import DataConfig, PretrainConfig

log = logging.getLogger(__name__)

# --- names (CONTRACTS.md "MLflow names") ---------------------------------------------------
TAG_KIND = "sportray.kind"                 # sweep | trial | reference
TAG_SWEEP = "sportray.sweep"
TAG_SWEEP_DIR = "sportray.sweep_dir"
TAG_TRIAL_ID = "sportray.trial_id"
TAG_CONFIG_KEY = "sportray.config_key"
TAG_STATUS = "sportray.status"             # one of STATUSES (below)
TAG_REFERENCE = "sportray.reference"       # random | dinov3 | base | timm NAME (sportray/references.py)
TAG_BASE = "sportray.base"                 # the LoRA arm's frozen base: a weights path or synthetic-demo
TAG_CI_UNIT = "sportray.ci_unit."          # + task: what the task's test interval resampled
TAG_PROBESET = "sportray.probeset."        # + task.what: how the task's probe set was made
TAG_BEST = "sportray.best"                 # a sweep's parent run: its best recipe (by validation)
TAG_BEST_RUNS = "sportray.best_runs"       # ... and that recipe's runs (names)
TAG_SEED = "sportray.seed"                 # a reference run's seed, set when the run is created
TAG_PARENT = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"           # the run's description in the MLflow UI
TAG_PARAM_CONFLICT = "sportray.param_conflict."
# MLflow 3's UI opens an experiment in its GenAI view (traces, judges) unless the experiment says
# it is model training: the tag its frontend reads, with the value of its "machine learning" kind.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

KIND_SWEEP, KIND_TRIAL, KIND_REFERENCE = "sweep", "trial", "reference"
STATUSES = ("running", "finished", "diverged", "failed", "stopped")   # stopped: early, by ASHA
_MLFLOW_STATUS = {"running": "RUNNING", "finished": "FINISHED", "diverged": "FINISHED",
                  "failed": "FAILED", "stopped": "KILLED"}


# MLflow log_batch limits: 1000 metrics, 100 params, 100 tags per request.
_MAX_BATCH_METRICS, _MAX_BATCH_PARAMS, _MAX_BATCH_TAGS = 1000, 100, 100
_MAX_PARAM_VALUE = 6000


class TrackingError(RuntimeError):
    """The MLflow store cannot be used; the message names the URI and how to fix it."""


# --- connecting -----------------------------------------------------------------------------

@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fix_hint(uri: str) -> str:
    return (f"Pass a reachable store with --tracking-uri URI (or set MLFLOW_TRACKING_URI), e.g. "
            f"--tracking-uri sqlite:///mlflow.db for a local file, or start the server for {uri!r} "
            f"(mlflow server --backend-store-uri sqlite:///mlflow.db --port 5000).")


def connect(tracking_uri: str | None = None, *, timeout_s: float = 5.0) -> MlflowClient:
    """An ``MlflowClient`` for ``tracking_uri`` after checking that the store answers.

    Call it before any training starts: a wrong URI then fails in seconds instead of after
    the first trial. For http(s) URIs the check runs with MLflow's retries off and a short
    request timeout (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``, ``..._TIMEOUT=timeout_s``, set only
    for the duration of the check; the returned client keeps MLflow's normal retries so a
    transient blip during training is retried). ``None`` means ``MLFLOW_TRACKING_URI`` or
    ``sqlite:///mlflow.db`` (``sportray.config.default_tracking_uri``).

    Raises TrackingError naming the URI and the fix (--tracking-uri / MLFLOW_TRACKING_URI).
    """
    from sportray.config import absolute_tracking_uri, default_tracking_uri

    uri = absolute_tracking_uri(tracking_uri or default_tracking_uri())
    try:
        client = MlflowClient(tracking_uri=uri)
        with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                  MLFLOW_HTTP_REQUEST_TIMEOUT=str(max(1, int(math.ceil(timeout_s)))),
                  MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0"):
            client.search_experiments(max_results=1)
    except Exception as exc:  # any backend: connection refused, bad scheme, locked/missing DB
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(
            f"MLflow tracking store {uri!r} is not reachable ({type(exc).__name__}: {reason[:300]}). "
            + _fix_hint(uri)) from exc
    return client


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """Id of the experiment ``name``, created if missing (safe when trials race to create it).

    A *deleted* experiment of that name blocks the name in MLflow; rather than silently
    restoring what someone deleted, this raises TrackingError saying how to restore or purge it.
    """
    for attempt in range(2):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"MLflow experiment {name!r} (id {exp.experiment_id}) is deleted in "
                    f"{client.tracking_uri!r}: restore it (mlflow experiments restore --experiment-id "
                    f"{exp.experiment_id}), purge it (mlflow gc), or use another experiment name.")
            if exp.tags.get(TAG_EXPERIMENT_KIND) is None:
                client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND})
        except MlflowException:
            if attempt:  # someone else created it between get and create: read it back once
                raise
    raise AssertionError("unreachable")


# --- finding runs by tags -------------------------------------------------------------------

def _quote(value: str) -> str | None:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None  # not expressible in MLflow's filter syntax: compare in Python only


def _find_runs(client: MlflowClient, experiment_id: str, tags: Mapping[str, str | None]) -> list:
    """Active runs of the experiment whose tags equal ``tags`` (value None: tag absent).

    The filter string narrows the search; every condition is re-checked in Python, so values
    with quotes or odd characters (paths) still match exactly. Oldest run first.
    """
    clauses = []
    for key, value in tags.items():
        if value is not None and (q := _quote(value)) is not None:
            clauses.append(f"tags.`{key}` = {q}")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=" and ".join(clauses),
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return [r for r in runs if all(r.data.tags.get(k) == v for k, v in tags.items())]


def _create_run(client, experiment_id, run_name, tags) -> str:
    run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    return run.info.run_id


# --- params ---------------------------------------------------------------------------------

def _param_str(value) -> str:
    s = str(value)
    return s if len(s) <= _MAX_PARAM_VALUE else s[: _MAX_PARAM_VALUE - 3] + "..."


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, object]) -> dict[str, str]:
    """Log params once (stable names, ``str`` values); returns those newly written.

    Already logged with the same value: skipped. Already logged with another value: never
    changed (MLflow forbids it); the new value goes to tag ``sportray.param_conflict.<name>``
    and a warning is logged, so the trial goes on and the conflict is visible in the UI.
    """
    existing = client.get_run(run_id).data.params
    new: dict[str, str] = {}
    conflicts: dict[str, str] = {}
    for key, value in params.items():
        s = _param_str(value)
        if key not in existing:
            new[str(key)] = s
        elif existing[key] != s:
            conflicts[key] = s
    items = list(new.items())
    for i in range(0, len(items), _MAX_BATCH_PARAMS):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + _MAX_BATCH_PARAMS]])
    if conflicts:
        log.warning("run %s: params already logged with other values, kept the first ones: %s",
                    run_id, ", ".join(f"{k}={existing[k]!r} (new {v!r})" for k, v in conflicts.items()))
        _set_tags(client, run_id, {TAG_PARAM_CONFLICT + k: v for k, v in conflicts.items()})
    return new


def _set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    items = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, len(items), _MAX_BATCH_TAGS):
        client.log_batch(run_id, tags=items[i:i + _MAX_BATCH_TAGS])


# --- runs -----------------------------------------------------------------------------------

def _norm_dir(path: str | os.PathLike) -> str:
    s = os.fspath(path)
    return s if "://" in s else str(Path(s).expanduser().resolve())


def parent_run(client: MlflowClient, experiment_id: str, sweep_name: str,
               sweep_dir: str | os.PathLike, params: Mapping[str, object] | None = None) -> str:
    """The sweep's parent run: the one tagged ``sportray.sweep_dir == sweep_dir``, else a new one.

    ``sweep_dir`` (the Tune experiment directory) identifies a sweep invocation across
    restarts: ``Tuner.restore`` of the same directory reuses the parent, so its trials stay
    grouped. Local paths are made absolute first. A reused parent is set back to running.
    """
    sdir = _norm_dir(sweep_dir)
    found = _find_runs(client, experiment_id, {TAG_KIND: KIND_SWEEP, TAG_SWEEP_DIR: sdir})
    if found:
        run_id = found[0].info.run_id
        if len(found) > 1:
            log.warning("%d parent runs for sweep dir %s; using the oldest %s", len(found), sdir, run_id)
        set_status(client, run_id, "running")
    else:
        run_id = _create_run(client, experiment_id, sweep_name, {
            TAG_KIND: KIND_SWEEP, TAG_SWEEP: sweep_name, TAG_SWEEP_DIR: sdir, TAG_STATUS: "running"})
    if params:
        log_params(client, run_id, params)
    return run_id


def trial_run(client: MlflowClient, experiment_id: str, parent_id: str | None, trial_id: str,
              config_key: str, params: Mapping[str, object], seed: int, name_key: str = "") -> str:
    """The trial's child run, created once per (parent, ``sportray.trial_id``).

    Calling it again (a retried worker group, a restored Tune trial, a resumed sweep) returns
    the same run, sets it back to running and logs only params not yet there. Run name:
    ``run_name(name_key or config_key, seed)`` (a sweep names runs by what it searches; the
    ``sportray.config_key`` tag is the whole identity). ``params`` are the flattened PretrainConfig (``seed`` is
    added if missing; a params seed that disagrees with ``seed`` is a ValueError). ``parent_id`` None: a standalone run (``sportray pretrain``).
    """
    trial_id = str(trial_id)
    if "seed" in params and str(params["seed"]) != str(seed):
        raise ValueError(f"trial {trial_id}: params seed={params['seed']!r} but seed={seed!r}")
    match = {TAG_KIND: KIND_TRIAL, TAG_TRIAL_ID: trial_id, TAG_PARENT: parent_id}
    found = _find_runs(client, experiment_id, match)
    if found:
        run_id = found[0].info.run_id
        if len(found) > 1:
            log.warning("%d runs for trial %s under parent %s; using the oldest %s",
                        len(found), trial_id, parent_id, run_id)
        set_status(client, run_id, "running")
    else:
        tags = {TAG_KIND: KIND_TRIAL, TAG_TRIAL_ID: trial_id, TAG_CONFIG_KEY: config_key,
                TAG_STATUS: "running"}
        if parent_id:
            tags[TAG_PARENT] = parent_id
        run_id = _create_run(client, experiment_id, run_name(name_key or config_key, seed), tags)
    p = dict(params)
    p.setdefault("seed", seed)
    log_params(client, run_id, p)
    return run_id


def reference_run(client: MlflowClient, experiment_id: str, parent_id: str | None, reference: str,
                  params: Mapping[str, object] | None = None, seed: int = 0) -> str:
    """A reference run (frozen DINOv3 bar or random-init floor), once per (parent, reference).

    Tags ``sportray.kind=reference``, ``sportray.reference``, ``sportray.config_key =
    "reference <name>"``; params ``arm=reference``, ``steps=0`` plus ``params``.
    """
    if not reference:
        raise ValueError("reference_run: no reference named")
    # One run per (parent, reference, seed): the random floor has a spread over seeds too. The
    # seed is a tag set at creation, so references of several seeds created at once (threads)
    # never take each other's run before its params are logged.
    found = _find_runs(client, experiment_id, {TAG_KIND: KIND_REFERENCE, TAG_REFERENCE: reference,
                                               TAG_PARENT: parent_id, TAG_SEED: str(seed)})
    key = f"reference {reference}"
    if found:
        run_id = found[0].info.run_id
        set_status(client, run_id, "running")
    else:
        tags = {TAG_KIND: KIND_REFERENCE, TAG_REFERENCE: reference, TAG_CONFIG_KEY: key,
                TAG_STATUS: "running", TAG_SEED: str(seed)}
        if parent_id:
            tags[TAG_PARENT] = parent_id
        run_id = _create_run(client, experiment_id, f"{key} s{seed}", tags)
    p = dict(params or {})
    p["arm"], p["steps"], p["seed"] = "reference", 0, seed
    log_params(client, run_id, p)
    return run_id


# The experiment's opening view: MLflow 3's UI loads a "shared view" (columns, order, filter)
# from the experiment tag mlflow.sharedViewState.<key> when its URL says ?viewStateShareKey=<key>.
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
VIEW_KEY = "probes"
VIEW_PARAMS = ("views", "steps", "clip", "lr", "seed")


def probe_view(client: MlflowClient, experiment_id: str, metrics: Iterable[str] = ("basketball_iou",),
               order_by: str = "") -> str:
    """Store the experiment's probe view (trial and reference runs as one flat list, the probe
    `metrics` (base names, the first chooses) on validation and test with the test interval,
    and the recipe params as columns, ranked on `order_by` (default: the first metric on
    validation)) and return the UI's URL path for it:
    ``#/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=probes``."""
    metrics = tuple(metrics)
    order_by = order_by or f"valid/{metrics[0]}"
    shown = [n for m in metrics for n in (f"valid/{m}", f"test/{m}", f"test/{m}_ci_low", f"test/{m}_ci_high")]
    state = {"selectedColumns": [f"metrics.`{m}`" for m in (*shown, "final_loss")] + [f"params.`{p}`" for p in VIEW_PARAMS],
             "orderByKey": f"metrics.`{order_by}`", "orderByAsc": False,
             "searchFilter": f"tags.`{TAG_KIND}` != '{KIND_SWEEP}'"}
    now = int(time.time() * 1000)
    # the UI's saved-view envelope: it is also listed under "Views" as "sportray: probe metrics"
    client.set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + VIEW_KEY, json.dumps(
        {"name": "sportray: probe metrics", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}))
    # workflowType: MLflow 3.17's UI picks GenAI or model training per browser (a toggle kept in
    # localStorage, GenAI first); the URL parameter opens the model-training view directly.
    return view_path(experiment_id)


def view_path(experiment_id: str) -> str:
    """The UI path of the experiment's probe view (see probe_view)."""
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def set_status(client: MlflowClient, run_id: str, status: str, note: str | None = None) -> None:
    """Tag ``sportray.status`` and the MLflow run status (see the module docstring).

    running -> RUNNING, finished -> FINISHED, diverged -> FINISHED (filter with
    ``tags.sportray.status = 'diverged'``), failed -> FAILED. ``note`` sets the run's
    description when it has none.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
    tags = {TAG_STATUS: status}
    if note and not client.get_run(run_id).data.tags.get(TAG_NOTE):
        tags[TAG_NOTE] = note
    _set_tags(client, run_id, tags)
    if status == "running":
        client.update_run(run_id, status="RUNNING")
    else:
        client.set_terminated(run_id, status=_MLFLOW_STATUS[status])


# What a run logs as MLflow metrics -- the columns of the run list and the charts MLflow draws
# one per metric: the probe metrics with their intervals and unit counts (the scorecard reads
# those), the LeJEPA curves (train/*), final_loss and the status numbers. Everything else a trial
# or probe computes (per-class recalls, item counts, the probe's chosen lr, store size, ...) goes
# to the run's `details.json` artifact. Which probe metrics are headline is the probe tasks' say
# (ProbeTask.headline, passed in the probe record).
# time/overhead_s and time/steps_s: what a trial cost besides and in training (its other phases
# go to details.json)
_HEADLINE = re.compile(r"train/[^/]+|final_loss|diverged|diverged_step|stopped_step|steps_done|probe_seconds"
                       r"|time/overhead_s|time/steps_s")
DETAILS_ARTIFACT = "details.json"


def is_headline(name: str, probe_headline: Iterable[str] = ()) -> bool:
    return _HEADLINE.fullmatch(name) is not None or name in probe_headline


def probe_tags(probe: Mapping) -> dict[str, str]:
    """The tags of a probe record (trial.probe_record): what each task's interval resampled
    (sportray.ci_unit.<task>) and how its probe set was made (sportray.probeset.<task>.<what>)."""
    return {**{TAG_CI_UNIT + task: unit for task, unit in probe.get("ci_units", {}).items()},
            **{f"{TAG_PROBESET}{task}.{what}": str(value)[:5000]
               for task, made in probe.get("probe_sets", {}).items() for what, value in made.items()}}


def log_final(client: MlflowClient, run_id: str, metrics: Mapping[str, float],
              artifacts: Iterable[str | os.PathLike] = (), status: str = "finished",
              step: int = 0, tags: Mapping[str, str] | None = None, probe: Mapping | None = None) -> None:
    """Final metrics (probe results with CIs, final_loss, diverged...), tags, artifacts, then status.

    ``probe``: the probe record (trial.probe_record): its headline names and tags. Only headline
    metrics (``is_headline``) become MLflow metrics; the rest go to ``details.json``, so a run
    stays under 30 metrics. Metric values that are None are skipped (NaN is logged as NaN). A directory
    artifact is logged under its own name; a missing artifact path is warned about and skipped
    so the metrics and the status still land. For ``diverged`` the run description says so.
    """
    probe = probe or {}
    headline = set(probe.get("headline", ()))
    tags = {**probe_tags(probe), **(tags or {})}
    ts = int(time.time() * 1000)
    shown = {k: v for k, v in metrics.items() if v is not None and is_headline(k, headline)}
    details = {k: v for k, v in metrics.items() if v is not None and not is_headline(k, headline)
               and isinstance(v, (int, float)) and not isinstance(v, bool)}
    # 6 significant digits: a run page reads 0.35, not 0.35000000000000003 (the probes' own
    # resolution is far coarser; probe_items.npz keeps every item for the scorecard)
    ms = [Metric(k, float(f"{float(v):.6g}"), ts, int(step)) for k, v in shown.items()]
    for i in range(0, len(ms), _MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=ms[i:i + _MAX_BATCH_METRICS])
    if tags:
        _set_tags(client, run_id, tags)
    if details:
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp, DETAILS_ARTIFACT)
            f.write_text(json.dumps(dict(sorted(details.items())), indent=1))
            client.log_artifact(run_id, str(f))
    for a in artifacts:
        p = Path(a)
        if p.is_dir():
            client.log_artifacts(run_id, str(p), artifact_path=p.name)
        elif p.is_file():
            client.log_artifact(run_id, str(p))
        else:
            log.warning("run %s: artifact %s does not exist; skipped", run_id, p)
    note = None
    if status == "diverged":
        at = metrics.get("diverged_step")
        where = f" at step {int(at)}" if at is not None and not math.isnan(float(at)) else ""
        note = (f"**Diverged{where}** (loss spike / NaN). Excluded from scorecard means; check the "
                "train/* curves. Filter: tags.sportray.status = 'diverged'.")
    set_status(client, run_id, status, note=note)


def mark_stopped(client: MlflowClient, experiment_id: str, parent_id: str, trial_id: str, step: int,
                 note: str) -> bool:
    """A trial's run that a scheduler stopped early: `stopped_step`, status "stopped" and `note`.
    False when the run is not found or no longer "running"."""
    done = False
    for run in _find_runs(client, experiment_id, {TAG_TRIAL_ID: trial_id, TAG_PARENT: parent_id}):
        if run.data.tags.get(TAG_STATUS) == "running":
            client.log_metric(run.info.run_id, "stopped_step", float(step), step=step)
            set_status(client, run.info.run_id, "stopped", note=note)
            done = True
    return done


def log_sweep_end(client: MlflowClient, parent_id: str, metrics: Mapping[str, float], note: str,
                  best: tuple[str, list[str]] | None, artifacts: Iterable[str | os.PathLike]) -> None:
    """The sweep's parent run opens on the answer: its summary metrics (run-list columns), the
    scorecard as its description, the best recipe and its runs as tags (sportray.best,
    sportray.best_runs), the scorecard files as artifacts; status finished."""
    for a in artifacts:
        client.log_artifact(parent_id, str(a))
    ts = int(time.time() * 1000)
    client.log_batch(parent_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()])
    set_status(client, parent_id, "finished")
    tags = {TAG_NOTE: note[:60000]}
    if best:
        tags.update({TAG_BEST: best[0], TAG_BEST_RUNS: ", ".join(best[1])})
    _set_tags(client, parent_id, tags)


MODEL_NAME = "backbone"
# frames in, embeddings out (sportray/mlflow_model.py): uint8 (N, H, W, 3) -> float32 (N, D)
_BACKBONE_SIGNATURE = ModelSignature(inputs=Schema([TensorSpec(np.dtype("uint8"), (-1, -1, -1, 3))]),
                                     outputs=Schema([TensorSpec(np.dtype("float32"), (-1, -1))]))


def log_backbone(client: MlflowClient, run_id: str, backbone_dir: str | os.PathLike,
                 params: Mapping[str, object]) -> str:
    """The trained backbone as an MLflow logged model of the run (MLflow 3's Models tab and the
    run page list it): a pyfunc model (sportray/mlflow_model.py) holding the checkpoint folder,
    with the trial's config as the model's params. Once per run: a resumed trial finds its
    model. Returns the model id."""
    experiment = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
    ready = [m for m in found if str(m.status).endswith("READY")]
    if ready:
        return ready[0].model_id
    model = client.create_logged_model(experiment, name=MODEL_NAME, source_run_id=run_id,
                                       params={k: _param_str(v) for k, v in params.items()})
    with tempfile.TemporaryDirectory() as tmp, _env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"), \
            warnings.catch_warnings():
        # no input example: MLflow would load and run the model to check it (seconds per trial); the
        # signature says what goes in. Explicit requirements: its inference profiles the model too.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        save_pyfunc(Path(tmp, "model"), python_model=str(Path(__file__).with_name("mlflow_model.py")),
                                 artifacts={"backbone": str(backbone_dir)}, pip_requirements=["sportray"],
                                 signature=_BACKBONE_SIGNATURE)
        client.log_model_artifacts(model.model_id, str(Path(tmp, "model")))
    client.finalize_logged_model(model.model_id, "READY")
    return model.model_id


def set_base(client: MlflowClient, run_id: str, base_label: str) -> None:
    """Tag what the LoRA arm's frozen base was (a weights path, or synthetic-demo)."""
    _set_tags(client, run_id, {TAG_BASE: base_label})


def finished_metrics(client: MlflowClient, run_id: str) -> dict | None:
    """A run's metrics when it is done (finished with test metrics, or diverged); else None."""
    run = client.get_run(run_id)
    status = run.data.tags.get(TAG_STATUS)
    if status in ("finished", "diverged") and (
            any(m.startswith("test/") for m in run.data.metrics) or status == "diverged"):
        return {**run.data.metrics, "status": status, "mlflow_run_id": run_id}
    return None


def fail_if_running(client: MlflowClient, run_id: str, note: str) -> None:
    """A run that crashed says so ("failed"), never left looking "running"."""
    if client.get_run(run_id).data.tags.get(TAG_STATUS) == "running":
        set_status(client, run_id, "failed", note=note[:500])


def metric_histories(client: MlflowClient, run_id: str, names: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    """{name: [(step, value), ...] by step} for the names the run has."""
    out = {}
    for name in names:
        hist = client.get_metric_history(run_id, name)
        if hist:
            out[name] = sorted((m.step, m.value) for m in hist)
    return out


def run_record(client: MlflowClient, run_id: str, artifact: str) -> dict:
    """A run's JSON artifact with the run's metrics and experiment id added ("metrics",
    "experiment_id"); FileNotFoundError naming the run when it has no such artifact."""
    try:
        run = client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            record = json.loads(Path(client.download_artifacts(run_id, artifact, tmp)).read_text())
    except Exception as exc:
        raise FileNotFoundError(f"run {run_id}: no {artifact} artifact in {client.tracking_uri} "
                                f"({type(exc).__name__}: {str(exc)[:200]})") from None
    return {**record, "metrics": dict(run.data.metrics), "experiment_id": run.info.experiment_id}


def experiment_runs(client: MlflowClient, experiment_name: str) -> list[dict]:
    """Every active run of an experiment as plain data: run_id, run_name, status (MLflow's),
    end_time (ms; the start time while running), tags, params, metrics. TrackingError naming the
    experiments there when it does not exist."""
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = [e.name for e in client.search_experiments(max_results=50)]
        raise TrackingError(
            f"no experiment named {experiment_name!r} in {client.tracking_uri!r}"
            f" (experiments there: {', '.join(names) or 'none'}). Pass --experiment NAME "
            "(the sweep script's stem) and the store with --tracking-uri / MLFLOW_TRACKING_URI.")
    out, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        out += [{"run_id": run.info.run_id, "run_name": run.info.run_name or "", "status": run.info.status,
                 "end_time": run.info.end_time or run.info.start_time or 0, "tags": dict(run.data.tags),
                 "params": dict(run.data.params), "metrics": dict(run.data.metrics)} for run in page]
        token = page.token
        if not token:
            return out


def download_artifact(client: MlflowClient, run_id: str, path: str, directory: str) -> str | None:
    """A run's artifact downloaded into `directory`; None when the run has no such artifact."""
    try:
        return client.download_artifacts(run_id, path, directory)
    except (MlflowException, OSError):
        return None


class StepLogger:
    """Batched step metrics for one run, resume-safe.

    ``log(step, {"train/loss": ..., ...})`` buffers; the buffer goes out with
    ``client.log_batch`` every ``flush_every`` metrics or ``flush_s`` seconds, and on
    ``flush()`` / ``close()`` / leaving a ``with`` block.

    On creation it reads the highest step already logged for ``resume_key`` (``train/loss``):
    steps at or below it are dropped, so a worker resumed from an older checkpoint (which
    re-runs the steps since that checkpoint) continues the existing curve instead of drawing a
    second copy of those steps. Within one logger a (metric, step) pair is logged at most once
    and a metric never goes back in steps. A failed automatic flush is warned about and retried
    at the next flush (training is not stopped for a tracking hiccup); ``flush()`` raises.
    """

    def __init__(self, client: MlflowClient, run_id: str, *, resume_key: str = "train/loss",
                 flush_every: int = 200, flush_s: float = 10.0):
        self.client, self.run_id = client, run_id
        self.flush_every, self.flush_s = int(flush_every), float(flush_s)
        history = client.get_metric_history(run_id, resume_key)
        self.resume_step: int = max((m.step for m in history), default=-1)
        self._last: dict[str, int] = {}
        self._buf: list[Metric] = []
        self._t_flush = time.monotonic()

    def log(self, step: int, metrics: Mapping[str, float]) -> int:
        """Buffer ``metrics`` at ``step``; returns how many were kept (0 for a re-run step)."""
        step = int(step)
        if step <= self.resume_step:
            return 0
        ts = int(time.time() * 1000)
        kept = 0
        for key, value in metrics.items():
            if value is None or step <= self._last.get(key, -1):
                continue
            self._buf.append(Metric(key, float(value), ts, step))
            self._last[key] = step
            kept += 1
        if len(self._buf) >= self.flush_every or time.monotonic() - self._t_flush >= self.flush_s:
            try:
                self.flush()
            except Exception as exc:  # keep training; retry with the next flush
                log.warning("run %s: logging step metrics failed (%s); will retry", self.run_id, exc)
        return kept

    def flush(self) -> None:
        while self._buf:
            chunk = self._buf[:_MAX_BATCH_METRICS]
            self.client.log_batch(self.run_id, metrics=chunk)
            del self._buf[:len(chunk)]
        self._t_flush = time.monotonic()

    close = flush

    def __enter__(self) -> "StepLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


# --- naming ---------------------------------------------------------------------------------

# The study's recipe axes: always named, in this order ("scratch 2x224+6x96 steps=200 clip=1.0").
_KEY_ALWAYS = ("arm", "views", "steps", "clip")
# Fields that do not change what is learned (execution, logging, fault tolerance) or are the
# repetition axis (seed): never part of the key.
_KEY_EXCLUDE = {"seed", "gpus_per_worker", "cpus_per_worker", "compile", "log_every",
                "checkpoint_every", "max_failures", "spike_factor", "spike_patience", "deterministic_data"}
_DATA_EXCLUDE = {"data_dir", "store", "basketball", "soccer_labels", "test_arenas", "split_seed"}
_PATHLIKE = {"base", "corpus", "extra_sources"}


def _defaults() -> dict[str, object]:
    d: dict[str, object] = {}
    for f in _dc_fields(PretrainConfig):
        if f.name not in _KEY_EXCLUDE:
            d[f.name] = getattr(PretrainConfig(), f.name)
    for f in _dc_fields(DataConfig):
        if f.name not in _DATA_EXCLUDE:
            d["data." + f.name] = getattr(DataConfig(), f.name)
    return d


def _coerce(value, like):
    if isinstance(like, bool):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    if isinstance(like, (int, float)) and isinstance(value, str):
        try:
            v = float(value)
        except ValueError:
            return value
        return int(v) if isinstance(like, int) and v.is_integer() else v
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _fmt(name: str, value) -> str:
    if name == "clip" and isinstance(value, (int, float)) and float(value) == 0.0:
        return "off"
    if name.split(".")[-1] in _PATHLIKE and isinstance(value, str) and value:
        return ",".join(Path(p.split(":")[0]).name or p for p in value.split(","))
    return str(value)


def config_key(cfg: Mapping[str, object] | object, vary: Iterable[str] = ()) -> str:
    """A readable key naming what differs in a pretraining config; the seed is excluded.

    ``"<arm> <views> steps=<steps> clip=<clip|off>"`` followed by ``name=value`` for every
    other field that differs from its PretrainConfig / DataConfig default (in field order;
    ``data.`` fields drop the prefix; paths show their base names), plus the fields in
    ``vary`` (what the sweep varies) even when at their default, e.g.
    ``config_key(cfg, vary=["lr"]) == "scratch 2x224+6x96 steps=200 clip=1.0 lr=0.0005"``.
    Fields that do not change the learned model (seed, device/CPU counts, compile, logging and
    checkpoint cadence, failure and spike settings) are never named; keys that are not config
    fields are named only when listed in ``vary`` (sorted, after the fields). ``cfg`` is a PretrainConfig or a flattened dict;
    values may be strings (MLflow params) and are coerced to the field's type first, so a key
    rebuilt from params equals the one built from the config.
    """
    if not isinstance(cfg, Mapping):
        from sportray.config import flatten
        cfg = flatten(cfg)
    defaults = _defaults()
    vary = set(vary)
    values = {k: _coerce(v, defaults[k]) if k in defaults else v for k, v in cfg.items()
              if k not in _KEY_EXCLUDE}
    parts = [str(values.get("arm", defaults["arm"])), str(values.get("views", defaults["views"])),
             f"steps={values.get('steps', defaults['steps'])}",
             f"clip={_fmt('clip', values.get('clip', defaults['clip']))}"]
    for name, default in defaults.items():
        if name in _KEY_ALWAYS or name not in values:
            continue
        if values[name] != default or name in vary or name.split(".", 1)[-1] in vary:
            parts.append(f"{name.split('.', 1)[-1]}={_fmt(name, values[name])}")
    for name in sorted(set(values) - set(defaults)):
        if name in vary:
            parts.append(f"{name}={_fmt(name, values[name])}")
    return " ".join(parts)


def _short_num(v: str) -> str:
    try:
        x = float(v)
    except ValueError:
        return v
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e5):
        m, e = f"{x:.2e}".split("e")
        return f"{m.rstrip('0').rstrip('.')}e{int(e)}"
    return f"{x:g}"


def short_key(key: str) -> str:
    """A config key as a few words for a run list: ``"scratch 2x224+6x96 steps=200 clip=1.0
    lr=0.0005"`` -> ``"2x224+6x96 200st clip1 lr5e-4"``; ``"reference random"`` -> ``"random"``.
    The arm is named unless it is scratch; fields other than views/steps/clip/lr stay ``k=v``.
    The full key stays in the tag ``sportray.config_key``."""
    out = []
    for tok in key.split():
        k, eq, v = tok.partition("=")
        if not eq:
            if tok not in ("scratch", "reference"):
                out.append(tok)
        elif k == "views":
            out.append(v)
        elif k == "steps":
            out.append(f"{v}st")
        elif k == "clip":
            out.append("noclip" if v in ("off", "0", "0.0") else f"clip{_short_num(v)}")
        elif k == "lr":
            out.append(f"lr{_short_num(v)}")
        else:
            out.append(tok)
    return " ".join(out) or key


def run_name(key: str, seed: int | str) -> str:
    """MLflow run name of a trial (and its name in Tune's table and Grafana):
    ``"<short_key(config_key)> s<seed>"``, e.g. ``"2x224 40st clip1 lr1e-3 s0"``."""
    return f"{short_key(key)} s{seed}"
