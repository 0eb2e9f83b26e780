"""What a probe task is, and the one result shape every task returns.

A task judges a frozen backbone on one downstream problem. It owns everything that is particular
to that problem: how its probe set is built (and what the embedded synthetic default is), how
the backbone's features are read out and probed, its metric and what the metric's interval
resamples, the pictures of its results, and the description of its Grafana gauge. Everything
shared -- frozen feature extraction, the parallel lr-grid linear heads, the unit bootstrap --
lives in sportray/probes.py; the loops over tasks (trial, scorecard, metrics, CLI) live in
sportray/tasks/__init__.py and never name a task.

Names a task fixes (notes/CONTRACTS.md): MLflow metrics `valid/<metric>` (chooses) and
`test/<metric>` (reports), each with `_ci_low`/`_ci_high`, `<split>/<name>_<item>s` (item count),
`<split>/<name>_units` (distinct units), `<name>_lr`; per-item arrays `<name>__<split>__<field>`
in probe_items.npz; gauges `sportray_<metric>` and `sportray_<metric>_valid`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from sportray import probes as P
from sportray.config import DataConfig, ProbeConfig

if TYPE_CHECKING:                       # only for annotations: tasks are imported by light modules
    import torch

    from sportray.data.defaults import DataPaths


@dataclass
class SplitScore:
    """A task's chosen head scored on one split (valid or test)."""
    value: float                                  # the metric
    ci: tuple[float, float]                       # unit bootstrap 95 % interval
    units: np.ndarray                             # the unit (arena, game, ...) of each item; "" = none
    items: dict[str, np.ndarray]                  # per-item arrays the scorecard resamples (item_fields)

    @property
    def n_items(self) -> int:
        return len(self.units)


@dataclass
class TaskResult:
    """What probing one task gives: the head chosen on validation, scored on both splits."""
    task: str
    lr: float
    valid: SplitScore
    test: SplitScore
    detail: object = None            # the task's own result (e.g. tasks.basketball.BasketballResult)
    extra: dict[str, float] = field(default_factory=dict)    # more metrics (details.json), e.g. recalls

    def split(self, name: str) -> SplitScore:
        return self.valid if name == "valid" else self.test


class ProbeTask:
    """A probe task. Subclass it, set the class attributes, implement `build_set` and `run`; the
    rest has defaults. Register an instance with `sportray.tasks.register`, or name it in
    `ProbeConfig.tasks` as "package.module:ATTRIBUTE" so that every Ray worker imports it."""
    name: str = ""                   # "basketball": the prefix of its names
    metric: str = ""                 # "basketball_iou"
    title: str = ""                  # "Basketball IoU" (scorecard, charts)
    units: tuple[str, str] = ("unit", "item")   # (independent unit, item): ("arena", "frame")
    item_fields: tuple[str, ...] = ()           # per-item arrays besides "unit": ("iou",)
    gauge: str = ""                  # the Grafana gauge's description

    # --- data -------------------------------------------------------------------------------
    def build_set(self, data: DataConfig, paths: "DataPaths", out_dir: Path) -> Path:
        """Materialize the task's probe set under `out_dir` (once; reused after) -> its path."""
        raise NotImplementedError

    def set_tags(self, path: str | Path) -> dict[str, str]:
        """How the probe set was made ({what: value}; MLflow tags sportray.probeset.<name>.<what>)."""
        return {}

    # --- probing ----------------------------------------------------------------------------
    def run(self, backbone: "torch.nn.Module", arrays: Mapping[str, np.ndarray], cfg: ProbeConfig,
            device) -> TaskResult:
        """Probe `backbone` on the probe set's `arrays` (sportray.data.probesets.load)."""
        raise NotImplementedError

    def panel(self, arrays: Mapping[str, np.ndarray], result: TaskResult, out_dir: Path) -> list[Path]:
        """Pictures of the result (test split), written under `out_dir`."""
        return []

    # --- statistics -------------------------------------------------------------------------
    def same_items_fields(self) -> tuple[str, ...]:
        """Per-item arrays that must be equal across seeds for a joint interval (the truth)."""
        return ("unit",)

    def row_replicates(self, items: list[dict[str, np.ndarray]], n: int, seed: int) -> np.ndarray:
        """Bootstrap replicates of the seed-mean metric: seeds x units x items (scorecard rows).
        Default: the mean of the first item field, per seed (a per-item score such as IoU)."""
        values = np.stack([it[self.item_fields[0]] for it in items])
        return P.unit_bootstrap(values, units=items[0]["unit"], n=n, seed=seed)

    def unit_name(self, units) -> str:
        """What an interval resampled: the unit with >= 2 named units, else the item."""
        return self.units[0] if P.n_units(units) >= 2 else self.units[1]

    # --- names ------------------------------------------------------------------------------
    def metrics(self, result: TaskResult) -> dict[str, float]:
        """Flat {MLflow name: float} of a result (the names of the module docstring)."""
        out: dict[str, float] = {}
        for split in P.SPLITS:
            s = result.split(split)
            name = f"{split}/{self.metric}"
            out.update({name: float(s.value), name + "_ci_low": float(s.ci[0]),
                        name + "_ci_high": float(s.ci[1]),
                        f"{split}/{self.name}_{self.units[1]}s": float(s.n_items),
                        f"{split}/{self.name}_units": float(P.n_units(s.units))})
        out[f"{self.name}_lr"] = float(result.lr)
        out.update(result.extra)
        return out

    def headline(self) -> tuple[str, ...]:
        """The MLflow metrics a run list shows (the rest of `metrics` goes to details.json)."""
        return tuple(f"{split}/{self.metric}{end}" for split in P.SPLITS for end in ("", "_ci_low", "_ci_high")) \
            + tuple(f"{split}/{self.name}_units" for split in P.SPLITS)

    def __repr__(self) -> str:
        return f"<probe task {self.name}: {self.metric}>"


def score(value: float, ci, units: np.ndarray, **items: np.ndarray) -> SplitScore:
    """A SplitScore with `units` as the "unit" item array (str)."""
    units = np.asarray(units).astype(str)
    return SplitScore(float(value), (float(ci[0]), float(ci[1])), units,
                      {"unit": units, **{k: np.asarray(v) for k, v in items.items()}})

