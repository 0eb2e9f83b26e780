"""Probe tasks as a registry, and the loops over them that a trial, the scorecard, the metrics
and the CLI use (none of them names a task).

Built in: `basketball` (per-tile player IoU, DeepSportRadar) and `soccer` (17-class balanced
accuracy, SoccerNet). `ProbeConfig.tasks` says which run, as a comma list of registered names
or "package.module:ATTRIBUTE" import paths; an import path is imported (and registered) in
whichever process resolves it -- a Ray worker included, so a task of your own only has to be
importable on the cluster (installed, or in the directory the driver runs from, which Ray puts
on the workers' path). A task is a `sportray.tasks.base.ProbeTask`; see tests/toy_task.py for a
complete small one.

Per run: `build_sets` materializes each task's probe set once; `evaluate` probes a backbone on
each; `metrics` flattens the results into MLflow names; `save_items`/`load_items` keep the
per-item arrays (`probe_items.npz`) the scorecard's row intervals resample.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from sportray import probes as P
from sportray.config import ConfigError, DataConfig, ProbeConfig
from sportray.tasks import basketball, soccer
from sportray.tasks.base import ProbeTask, SplitScore, TaskResult

__all__ = ["ProbeTask", "SplitScore", "TaskResult", "register", "resolve", "get", "for_metric",
           "build_sets", "evaluate", "metrics", "headline", "ci_units", "save_items", "load_items",
           "ITEMS_ARTIFACT"]

ITEMS_ARTIFACT = "probe_items.npz"          # save_items' file, logged as this MLflow artifact

_REGISTRY: dict[str, ProbeTask] = {}


def register(task: ProbeTask) -> ProbeTask:
    """Add `task` under its name (replacing one of the same name) and return it."""
    if not (isinstance(task, ProbeTask) and task.name and task.metric):
        raise TypeError(f"register: expected a ProbeTask with a name and a metric, got {task!r}")
    if "/" in task.name or "__" in task.name:
        raise ValueError(f"probe task name {task.name!r}: no '/' or '__' (they separate its metric names)")
    _REGISTRY[task.name] = task
    return task


register(basketball.TASK)
register(soccer.TASK)


def get(name: str) -> ProbeTask:
    """A task by registered name or import path ("package.module:ATTRIBUTE")."""
    name = name.strip()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            task = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--tasks {name}: cannot import it ({type(exc).__name__}: {exc}); "
                              "the module must be importable on every node") from None
        return register(task)
    raise ConfigError(f"--tasks {name}: no such probe task (registered: {', '.join(_REGISTRY)}; "
                      "or give package.module:ATTRIBUTE)")


def resolve(spec: str | ProbeConfig = "") -> tuple[ProbeTask, ...]:
    """The tasks a comma list (or a ProbeConfig's `tasks`) names, in order; "" = the built-ins."""
    if isinstance(spec, ProbeConfig):
        spec = spec.tasks
    names = [n for n in (spec or "basketball,soccer").split(",") if n.strip()]
    return tuple(get(n) for n in names)


def for_metric(metric: str, tasks: Iterable[ProbeTask] = ()) -> ProbeTask | None:
    """The task whose base metric is `metric` ("basketball_iou"), among `tasks` or the registry."""
    for t in (*tasks, *_REGISTRY.values()):
        if t.metric == metric:
            return t
    return None


# ----------------------------------------------------------------------------- data

def build_sets(data: DataConfig, tasks: Sequence[ProbeTask], paths=None) -> dict[str, str]:
    """Each task's probe set, materialized once under <data_dir>/probesets: {task name: path}."""
    from sportray.data.defaults import resolve as resolve_paths

    paths = paths or resolve_paths(data)
    out = Path(data.data_dir) / "probesets"
    return {t.name: str(t.build_set(data, paths, out)) for t in tasks}


def set_tags(tasks: Sequence[ProbeTask], sets: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """How each probe set was made: {task name: {what: value}} (tracking.py turns them into tags)."""
    return {t.name: t.set_tags(sets[t.name]) for t in tasks if sets.get(t.name)}


# ----------------------------------------------------------------------------- probing

def evaluate(backbone, sets: Mapping[str, Mapping[str, np.ndarray]], cfg: ProbeConfig | None = None,
             device=None, tasks: Sequence[ProbeTask] | None = None) -> dict[str, TaskResult]:
    """Probe `backbone` on each task's probe-set arrays (`sets`: {task name: arrays}; a task
    without arrays is skipped): {task name: TaskResult}."""
    cfg = cfg or ProbeConfig()
    dev = P.torch_device(device)
    out: dict[str, TaskResult] = {}
    for task in tasks if tasks is not None else resolve(cfg):
        if sets.get(task.name) is not None:
            out[task.name] = task.run(backbone, sets[task.name], cfg, dev)
    return out


def metrics(results: Mapping[str, TaskResult]) -> dict[str, float]:
    """Flat {MLflow name: float} of evaluate()'s results (names: sportray/tasks/base.py)."""
    out: dict[str, float] = {}
    for name, result in results.items():
        out.update(get(name).metrics(result))
    return out


def headline(tasks: Iterable[ProbeTask]) -> tuple[str, ...]:
    """The tasks' metric names that a run shows as MLflow metrics (the rest: details.json)."""
    return tuple(n for t in tasks for n in t.headline())


def ci_units(results: Mapping[str, TaskResult], split: str = "test") -> dict[str, str]:
    """What each task's interval resampled on `split`: {"basketball": "arena" | "frame", ...}."""
    return {name: get(name).unit_name(r.split(split).units) for name, r in results.items()}


def _item_key(task: str, split: str, name: str) -> str:
    return f"{task}__{split}__{name}"           # flat: one npz member per array


def save_items(results: Mapping[str, TaskResult], path: str | os.PathLike) -> Path:
    """Per-item arrays of evaluate()'s results -> one small .npz (the run's `probe_items.npz`):
    `<task>__<split>__<field>` for "unit" (str) and the task's item_fields. The scorecard's row
    intervals resample these. Written as given (no ".npz" appended)."""
    arrays: dict[str, np.ndarray] = {}
    for name, result in results.items():
        for split in P.SPLITS:
            for field, values in result.split(split).items.items():
                arrays[_item_key(name, split, field)] = values
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_items(path: str | os.PathLike) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """save_items' file -> {task: {split: {field: array}}}, e.g. items["soccer"]["test"]["pred"].

    Every `<task>__<split>__<field>` member is read (tasks not registered here included); a
    (task, split) group without its "unit" array is left out."""
    with np.load(path, allow_pickle=False) as z:
        found = {k: z[k] for k in z.files}
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for key, values in found.items():
        parts = key.split("__")
        if len(parts) == 3 and parts[1] in P.SPLITS:
            out.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = values
    return {task: {split: fields for split, fields in splits.items() if "unit" in fields}
            for task, splits in out.items()}
