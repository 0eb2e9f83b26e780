"""The study's scorecard from MLflow runs: validation selects, test reports.

``sportray scorecard --experiment NAME`` reads the trial and reference runs of an experiment
(names: notes/CONTRACTS.md, written by sportray.tracking) and prints, per probe metric, a
table of configurations with what every row needs: the seed count, the seed spread, an
interval over seeds and test units, the delta against the frozen-DINOv3 bar, the comparison
with the random-init floor, and a "not separable" flag where the ranking is within noise.
Diverged trials are listed, never averaged in silently.

Rows. One row per ``sportray.config_key`` (seed excluded); references (random, dinov3) are
rows of their own. Only finished, non-diverged runs count toward a row; if the same (config,
seed) ran more than once (e.g. two sweeps in one experiment), the latest run is counted and
the others are reported as duplicates (a repeated seed is not a new sample).

Per row, metric m (``METRICS``: base names) and split (``valid/m``, ``test/m``):

- ``mean`` over the row's seeds of the runs' logged metric; ``std`` the sample standard
  deviation over seeds (ddof=1, undefined for one seed), ``min``/``max``, ``n`` seeds.
- ``low``/``high``: the **row interval**, a 95 % percentile hierarchical bootstrap over seeds
  and units (rliable's stratified bootstrap, one level deeper): each of B replicates resamples
  the row's seeds with replacement, the split's units (arenas / games) with replacement -- one
  draw shared by every seed, since all seeds are scored on the same units -- and the items
  within each drawn unit (again shared), computes each drawn seed's metric on the pooled items
  and averages over the drawn seeds (``sportray.probes.unit_bootstrap`` on the runs'
  ``probe_items.npz``). With one seed it is that run's unit bootstrap; with fewer than two
  units, a frame / event bootstrap (``unit`` says which). A run without ``probe_items.npz``
  keeps its logged metric: a one-seed row then shows the run's own logged CI, a multi-seed row
  no interval (averaging the seeds' CI bounds is not an interval of anything).
- ``delta_vs_dinov3`` = test mean - the dinov3 reference row's test mean.
- ``vs_floor`` (test split): "above" when the row's test interval lies entirely above the
  random-init floor row's test interval, "below" when entirely below, "≈" otherwise (also when
  either interval is missing).

Ranking (per metric) reads **validation only**: rows are ranked by validation mean, best first,
and each row is compared with the row ranked just above it and flagged **not separable** (≈)
when their validation intervals overlap, or when either has none. Only adjacent ranks are
compared: a chain A ≈ B ≈ C does not make A ≈ C. Test numbers are shown, never used to choose.
The Spearman check of the pretraining loss also uses the validation metric.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from sportray import probes as P
from sportray import references, tasks
from sportray import tracking as T
from sportray.validate import OneLineParser

METRICS = tuple(t.metric for t in tasks.resolve())     # the built-in tasks': basketball_iou, soccer_bal_acc
SPLITS = P.SPLITS
DINOV3_KEY = "reference dinov3"
BASE_KEY = "reference base"      # the LoRA arm's frozen base when it is not DINOv3 (the demo's)
FLOOR_KEY = "reference random"
N_BOOT = 1000
BOOT_SEED = 0


def split_name(split: str, metric: str) -> str:
    """MLflow name of ``metric`` on ``split``: "valid/basketball_iou", "test/basketball_iou"."""
    return f"{split}/{metric}"


def metric_title(metric: str) -> str:
    task = tasks.for_metric(metric)
    return task.title if task else metric


# --- records --------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """One finished (or diverged/failed) trial or reference run, as read from MLflow."""
    run_id: str
    run_name: str
    kind: str                      # trial | reference
    config_key: str
    status: str                    # finished | diverged | failed
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    reference: str | None = None   # random | dinov3 for references
    parent_id: str | None = None
    end_time: int = 0
    items: dict | None = None      # probes.load_items of its probe_items.npz; None: no artifact

    @property
    def arm(self) -> str:
        return "reference" if self.kind == T.KIND_REFERENCE else self.params.get("arm", "?")

    @property
    def steps(self) -> int:
        return _int(self.params.get("steps"), 0)

    @property
    def views(self) -> str:
        return "" if self.kind == T.KIND_REFERENCE else self.params.get("views", "")

    @property
    def clip(self) -> float | None:
        if self.kind == T.KIND_REFERENCE:
            return None
        return _float(self.params.get("clip"))

    @property
    def seed(self) -> str | None:
        return self.params.get("seed")

    @property
    def diverged(self) -> bool:
        return self.status == "diverged" or self.metrics.get("diverged", 0.0) == 1.0

    @property
    def counted(self) -> bool:
        """Counts toward means: finished and not diverged."""
        return self.status == "finished" and not self.diverged

    def split_items(self, task: str | None, split: str) -> dict | None:
        """This run's per-item arrays of ``task`` on ``split`` (unit, iou | true, pred), if saved."""
        return (self.items or {}).get(task or "", {}).get(split)


def _int(v, default=None):
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return default


def _float(v, default=None):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _effective_status(tag: str | None, mlflow_status: str) -> str | None:
    """sportray.status wins; a run that crashed before tagging is failed; None = in progress."""
    if tag in ("finished", "diverged", "failed", "stopped"):
        return tag
    if mlflow_status in ("FAILED", "KILLED"):
        return "failed"
    if mlflow_status == "FINISHED" and tag is None:
        return "finished"
    return None


def _download_items(client, run_id: str, directory: str) -> dict | None:
    """The run's probe_items.npz as tasks.load_items' dict; None when it has none."""
    local = T.download_artifact(client, run_id, tasks.ITEMS_ARTIFACT, directory)
    if local is None:              # no such artifact: the run keeps its logged metrics
        return None
    try:
        return tasks.load_items(local)
    except (OSError, ValueError) as exc:
        warnings.warn(f"run {run_id}: unreadable {tasks.ITEMS_ARTIFACT} ({exc}); using its logged metrics only")
        return None


def load_runs(client, experiment_name: str, parent_run_id: str | None = None,
              items: bool = True) -> list[RunRecord]:
    """Trial and reference runs of ``experiment_name`` (finished, diverged and failed ones).

    Runs still running are skipped; deleted runs are ignored. With ``parent_run_id`` only that
    sweep's children are read, plus reference runs without a parent (shared references).
    With ``items`` each counted run's ``probe_items.npz`` artifact is read into
    ``RunRecord.items`` (None when the run has none; through a temporary directory).
    Raises TrackingError when the experiment does not exist (listing those that do).
    """
    out: list[RunRecord] = []
    for run in T.experiment_runs(client, experiment_name):
        tags = run["tags"]
        kind = tags.get(T.TAG_KIND)
        if kind not in (T.KIND_TRIAL, T.KIND_REFERENCE):
            continue
        parent = tags.get(T.TAG_PARENT)
        if parent_run_id is not None and parent != parent_run_id and not (
                kind == T.KIND_REFERENCE and parent is None):
            continue
        status = _effective_status(tags.get(T.TAG_STATUS), run["status"])
        if status is None:
            continue
        params = run["params"]
        key = tags.get(T.TAG_CONFIG_KEY) or (
            f"reference {tags.get(T.TAG_REFERENCE)}" if kind == T.KIND_REFERENCE else T.config_key(params))
        out.append(RunRecord(
            run_id=run["run_id"], run_name=run["run_name"], kind=kind, config_key=key, status=status,
            params=params, metrics=run["metrics"], tags=tags, reference=tags.get(T.TAG_REFERENCE),
            parent_id=parent, end_time=run["end_time"]))
    if items:
        with tempfile.TemporaryDirectory(prefix="sportray-items-") as tmp, \
                T._env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
            for r in out:
                if r.counted:
                    r.items = _download_items(client, r.run_id, tempfile.mkdtemp(dir=tmp))
    return out


# --- statistics -----------------------------------------------------------------------------

@dataclass
class SplitStats:
    """One metric of one row on one split (valid or test)."""
    n: int = 0                       # seeds with this metric
    values: list[float] = field(default_factory=list)
    mean: float | None = None
    std: float | None = None         # sample std over seeds (ddof=1); None for n < 2
    min: float | None = None
    max: float | None = None
    low: float | None = None         # row interval (module docstring); None when there is none
    high: float | None = None
    unit: str | None = None          # what the interval resampled besides seeds: arena/game/frame/event
    n_units: int | None = None
    source: str = ""                 # "items" (bootstrap of probe_items.npz) | "run" (logged CI) | ""
    note: str = ""                   # why there is no interval

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass
class MetricStats:
    valid: SplitStats = field(default_factory=SplitStats)
    test: SplitStats = field(default_factory=SplitStats)
    delta_vs_dinov3: float | None = None   # test mean - dinov3 row's test mean
    rank: int | None = None          # by validation mean, 1 = best
    above: str | None = None         # config of the row ranked just above
    not_separable: bool | None = None  # vs `above`; None for the top row / no data
    reason: str = ""                 # "interval overlap", "no interval" or ""
    vs_floor: str | None = None      # test interval vs the random-init floor: above | below | ≈

    def split(self, split: str) -> SplitStats:
        return self.valid if split == "valid" else self.test


@dataclass
class Row:
    config: str
    kind: str
    arm: str
    steps: int
    views: str
    clip: float | None
    reference: str | None = None
    seeds: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    stats: dict[str, MetricStats] = field(default_factory=dict)
    n_diverged: int = 0
    n_failed: int = 0

    @property
    def n_seeds(self) -> int:
        return len(self.run_ids)

    @property
    def title(self) -> str:
        if self.kind != T.KIND_REFERENCE:
            return self.config
        name, _, model = (self.reference or "").partition(" ")
        ref = references.REFERENCES.get(name)
        return self.config if ref is None else ref.title + (f": {model}" if model else "")


@dataclass
class Scorecard:
    metrics: tuple[str, ...]
    rows: list[Row]
    diverged: list[RunRecord] = field(default_factory=list)
    failed: list[RunRecord] = field(default_factory=list)
    duplicates: list[RunRecord] = field(default_factory=list)
    stopped: list[RunRecord] = field(default_factory=list)     # stopped early by --scheduler asha
    spearman: dict[str, dict[str, tuple[float, float, int] | None]] = field(default_factory=dict)
    has_dinov3: bool = False
    has_floor: bool = False
    n_boot: int = N_BOOT

    def row(self, config: str) -> Row:
        for r in self.rows:
            if r.config == config:
                return r
        raise KeyError(config)

    def ranked(self, metric: str) -> list[Row]:
        """Rows by validation rank (1 first); rows without a validation mean last, in table order."""
        return sorted(self.rows, key=lambda r: (r.stats[metric].rank is None, r.stats[metric].rank or 0))

    def beats_floor(self) -> list[tuple[str, str]]:
        """(row config, metric) pairs whose test interval lies entirely above the random-init floor's."""
        return [(r.config, m) for r in self.rows for m in self.metrics if r.stats[m].vs_floor == "above"]


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _same_items(items: list[dict], fields: Sequence[str]) -> bool:
    """All seeds scored on the same items: equal unit arrays (and truth for soccer)."""
    first = items[0]
    return all(len(it["unit"]) == len(first["unit"]) and all(np.array_equal(it[f], first[f]) for f in fields)
               for it in items[1:])


def _row_interval(s: SplitStats, runs: list[RunRecord], metric: str, split: str, n_boot: int,
                  seed: int, task) -> None:
    """Fill ``s.low/high/unit/n_units/source/note`` for the runs that have the metric (of probe
    `task`; None: a metric of no known task, read from the runs' logged intervals only)."""
    fields = ("unit", *task.item_fields) if task else ()
    items = [r.split_items(task.name if task else None, split) for r in runs]
    items = [it if it is not None and all(f in it for f in fields) else None for it in items]
    if task is not None and runs and all(it is not None for it in items):
        if not _same_items(items, task.same_items_fields()):
            s.note = "seeds were scored on different items"
            return
        reps = task.row_replicates(items, n_boot, seed)
        if np.isfinite(reps).any():
            units = items[0]["unit"]
            s.low, s.high = (float(q) for q in np.nanquantile(reps, [0.025, 0.975]))
            s.unit, s.n_units, s.source = task.unit_name(units), P.n_units(units), "items"
        return
    name = split_name(split, metric)
    if len(runs) == 1 and _finite(runs[0].metrics.get(name + "_ci_low")) \
            and _finite(runs[0].metrics.get(name + "_ci_high")):
        s.low, s.high = runs[0].metrics[name + "_ci_low"], runs[0].metrics[name + "_ci_high"]
        units = runs[0].metrics.get(f"{split}/{task.name}_units") if task else None
        if task is not None and _finite(units):
            s.n_units = int(units)
            s.unit = task.units[0 if units >= 2 else 1]
        s.source = "run"
        return
    missing = sum(it is None for it in items)
    s.note = f"no {tasks.ITEMS_ARTIFACT} for {missing} of {len(runs)} seeds"


def _split_stats(runs: list[RunRecord], metric: str, split: str, n_boot: int, seed: int, task=None) -> SplitStats:
    name = split_name(split, metric)
    have = [r for r in runs if _finite(r.metrics.get(name))]
    vals = [r.metrics[name] for r in have]
    s = SplitStats(n=len(vals), values=vals)
    if not vals:
        return s
    n = len(vals)
    s.mean = sum(vals) / n
    s.min, s.max = min(vals), max(vals)
    if n >= 2:
        s.std = math.sqrt(sum((v - s.mean) ** 2 for v in vals) / (n - 1))
    _row_interval(s, have, metric, split, n_boot, seed, task)
    return s


def _overlap(a: SplitStats, b: SplitStats) -> bool:
    return a.low <= b.high and b.low <= a.high


def _separable(above: SplitStats, row: SplitStats) -> tuple[bool, str]:
    """(not_separable, reason) for ``row`` against the row ranked just ``above`` it (validation)."""
    if not (above.has_interval and row.has_interval):
        return True, "no interval"
    if _overlap(above, row):
        return True, "interval overlap"
    return False, ""


def _vs_floor(row: SplitStats, floor: SplitStats) -> str | None:
    if row.mean is None or floor.mean is None:
        return None
    if not (row.has_interval and floor.has_interval):
        return "≈"
    if row.low > floor.high:
        return "above"
    if row.high < floor.low:
        return "below"
    return "≈"


def _order(row: Row) -> tuple:
    ref_rank = {"random": 0, "dinov3": 1, "base": 2}
    if row.kind == T.KIND_REFERENCE:
        return (0, ref_rank.get(row.reference or "", 3), row.config)
    return (1, row.arm, row.views, row.clip if row.clip is not None else -1.0, row.steps, row.config)


def build(records: Iterable[RunRecord], metrics: Sequence[str] | None = None, n_boot: int = N_BOOT,
          seed: int = BOOT_SEED, probe_tasks: Sequence | None = None) -> Scorecard:
    """The scorecard of ``records`` (see the module docstring for every rule).

    ``metrics`` are base names (``basketball_iou``), default those of ``probe_tasks`` (
    default the built-in ones); ``n_boot`` bootstrap replicates per row interval, drawn from
    ``seed`` (deterministic).
    """
    records = list(records)
    if not metrics:
        metrics = [t.metric for t in probe_tasks] if probe_tasks else METRICS
    metrics = tuple(metrics)
    task_of = {m: tasks.for_metric(m, probe_tasks or ()) for m in metrics}
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.config_key, []).append(r)

    rows: list[Row] = []
    diverged, failed, duplicates, stopped = [], [], [], []
    for key, runs in groups.items():
        first = runs[0]
        row = Row(config=key, kind=first.kind, arm=first.arm, steps=first.steps, views=first.views,
                  clip=first.clip, reference=first.reference)
        counted: dict[str | None, RunRecord] = {}
        for r in sorted(runs, key=lambda r: r.end_time):
            if r.diverged:
                row.n_diverged += 1
                diverged.append(r)
            elif r.status == "failed":
                row.n_failed += 1
                failed.append(r)
            elif r.status == "stopped":
                stopped.append(r)
            elif r.counted:
                if r.seed in counted:       # same seed again: keep the latest run
                    duplicates.append(counted[r.seed])
                counted[r.seed] = r
        kept = sorted(counted.values(), key=lambda r: _int(r.seed, 0) if r.seed is not None else -1)
        row.seeds = [r.seed if r.seed is not None else "-" for r in kept]
        row.run_ids = [r.run_id for r in kept]
        row.stats = {m: MetricStats(valid=_split_stats(kept, m, "valid", n_boot, seed, task_of[m]),
                                    test=_split_stats(kept, m, "test", n_boot, seed, task_of[m])) for m in metrics}
        rows.append(row)
    rows.sort(key=_order)

    # The bar: frozen DINOv3, or else the LoRA arm's own frozen base (Δ = what the adapter adds).
    bar = next((r for r in rows if r.config == DINOV3_KEY), None) or \
        next((r for r in rows if r.config == BASE_KEY), None)
    floor = next((r for r in rows if r.config == FLOOR_KEY), None)
    for m in metrics:
        for r in rows:
            s = r.stats[m]
            if bar is not None and r is not bar and None not in (s.test.mean, bar.stats[m].test.mean):
                s.delta_vs_dinov3 = s.test.mean - bar.stats[m].test.mean
            if floor is not None and r is not floor:
                s.vs_floor = _vs_floor(s.test, floor.stats[m].test)
        ranked = sorted((r for r in rows if r.stats[m].valid.mean is not None),
                        key=lambda r: -r.stats[m].valid.mean)  # stable: ties keep table order
        for i, r in enumerate(ranked):
            s = r.stats[m]
            s.rank = i + 1
            if i:
                s.above = ranked[i - 1].config
                s.not_separable, s.reason = _separable(ranked[i - 1].stats[m].valid, s.valid)

    card = Scorecard(metrics=metrics, rows=rows, diverged=diverged, failed=failed,
                     duplicates=duplicates, stopped=stopped, has_dinov3=bar is not None,
                     has_floor=floor is not None, n_boot=n_boot)
    for m in metrics:
        card.spearman[m] = {"all": spearman(records, m)}
        arms = sorted({r.arm for r in records if r.kind == T.KIND_TRIAL})
        for arm in arms if len(arms) > 1 else ():  # per arm too: losses of arms differ in scale
            res = spearman(records, m, arm=arm)
            if res is not None:
                card.spearman[m][arm] = res
    return card


def spearman(records: Iterable[RunRecord], metric: str, arm: str | None = None, split: str = "valid"
             ) -> tuple[float, float, int] | None:
    """Spearman (rho, p, n) between each finished trial's ``final_loss`` and ``split/metric``.

    One point per finished, non-diverged trial run (every seed counts) with both values
    finite; ``arm`` restricts to one arm. Validation by default: the check informs choices.
    None when n < 3. rho is reported as is: the probe metrics are higher-is-better and the loss
    lower-is-better, so "the loss tracks the probe" (the LeJEPA paper's claim) shows as a
    *negative* rho. rho is NaN if either side is constant.
    """
    from scipy.stats import spearmanr

    name = split_name(split, metric)
    pts = [(r.metrics["final_loss"], r.metrics[name]) for r in records
           if r.kind == T.KIND_TRIAL and r.counted and (arm is None or r.arm == arm)
           and _finite(r.metrics.get("final_loss")) and _finite(r.metrics.get(name))]
    if len(pts) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr([p[0] for p in pts], [p[1] for p in pts])
    return float(res.statistic), float(res.pvalue), len(pts)


# --- output ---------------------------------------------------------------------------------

def _f(v, digits=3, signed=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    s = f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
    return s.replace("-", "−")


def _clip_str(c) -> str:
    return "" if c is None else ("off" if c == 0 else str(c))


def _interval(s: SplitStats) -> str:
    return f"[{_f(s.low)}, {_f(s.high)}]" if s.has_interval else "[—]"


def _seeds_cell(r: Row) -> str:
    extra = [f"+{n} {what}" for n, what in ((r.n_diverged, "diverged"), (r.n_failed, "failed")) if n]
    return str(r.n_seeds) + (f" ({', '.join(extra)})" if extra else "")


def _units_line(card: Scorecard, m: str) -> str:
    """Which units the intervals of metric ``m`` resampled, e.g. "test: arena (3); valid: frame"."""
    parts = []
    for split in ("test", "valid"):
        seen = sorted({f"{s.unit}" + (f" ({s.n_units})" if s.n_units and s.unit in ("arena", "game") else "")
                       for r in card.rows for s in [r.stats[m].split(split)] if s.unit})
        parts.append(f"{split}: {', '.join(seen) or '—'}")
    return "; ".join(parts)


def _table(card: Scorecard, m: str) -> list[str]:
    title = metric_title(m)
    bar = "base" if any(r.config == BASE_KEY for r in card.rows) and not any(
        r.config == DINOV3_KEY for r in card.rows) else "DINOv3"
    head = ["Rank", "Model", "Seeds", "Valid mean [95 % interval]", "Test mean ± std [95 % interval]",
            f"Δ {bar} (test)", "vs floor (test)"]
    lines = [f"### {title}", "",
             f"Ranked on validation ({split_name('valid', m)}); test shown, never used to choose. "
             f"Intervals resample seeds × units × items — {_units_line(card, m)}.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in card.ranked(m):
        s = r.stats[m]
        v, t = s.valid, s.test
        if v.mean is None and t.mean is None:
            continue
        rank = "—" if s.rank is None else f"{s.rank}" + (" ≈" if s.not_separable else "")
        valid = "—" if v.mean is None else f"{_f(v.mean)} {_interval(v)}"
        test = "—" if t.mean is None else (
            f"{_f(t.mean)} ± {_f(t.std)} {_interval(t)}" if t.n >= 2 else f"{_f(t.mean)} {_interval(t)}")
        delta = "bar" if r.config in (DINOV3_KEY, BASE_KEY) else _f(s.delta_vs_dinov3, signed=True)
        floor = "floor" if r.config == FLOOR_KEY else (s.vs_floor or "—")
        cells = [rank, r.title, _seeds_cell(r), valid, test, delta, floor]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def _footnote(card: Scorecard) -> list[str]:
    lines = [
        "",
        "Reading the tables. One row per configuration (seed excluded), ranked on the validation "
        "mean; test numbers are reported, never used to rank or flag. **mean**: over the row's "
        "seeds; **± std**: sample std (ddof=1) over seeds; **[95 % interval]**: percentile "
        f"bootstrap ({card.n_boot} replicates) that resamples the row's seeds, the split's units "
        "(arenas / games; one draw for all seeds) and the items within each drawn unit, and "
        "averages the drawn seeds' metric — one seed: that run's unit bootstrap; `[—]`: some "
        "seed has no probe_items.npz (a one-seed row then shows its run's logged CI). Resampling "
        "items inside resampled units errs wide (within-unit noise counted twice). "
        "**Δ DINOv3** (or **Δ base**): test mean − the frozen-DINOv3 row's (without it, the frozen "
        "LoRA base's: what the adapter adds)"
        + ("" if card.has_dinov3 else " (no dinov3 reference run in this experiment)") + ". "
        "**vs floor**: `above` / `below` when the row's test interval lies entirely above / below "
        "the random-init row's, `≈` otherwise"
        + ("" if card.has_floor else " (no random reference run in this experiment)") + ".",
        "",
        "**rank ≈**: the row is **not separable** from the row ranked just above it: their "
        "validation intervals overlap, or one has none. Only adjacent ranks are compared. A "
        "single-seed row has no seed spread in its interval: run more seeds before announcing a "
        "winner.",
    ]
    missing = {f"{r.title}: {s.split(split).note}": None for r in card.rows for s in r.stats.values()
               for split in SPLITS if s.split(split).note and s.split(split).mean is not None}
    if missing:
        lines += ["", "`[—]` (no interval): " + "; ".join(missing) + "."]
    if card.diverged or card.failed or card.duplicates or card.stopped:
        lines += ["", "Not counted in the means:"]
        for r in card.diverged:
            at = r.metrics.get("diverged_step")
            lines.append(f"- diverged: {r.run_name or r.config_key} (run {r.run_id[:8]}"
                         + (f", step {int(at)}" if _finite(at) else "") + ")")
        for r in card.failed:
            lines.append(f"- failed: {r.run_name or r.config_key} (run {r.run_id[:8]})")
        for r in card.stopped:
            at = r.metrics.get("stopped_step")
            lines.append(f"- stopped early on the LeJEPA loss (--scheduler asha): {r.run_name or r.config_key} "
                         f"(run {r.run_id[:8]}" + (f", step {int(at)}" if _finite(at) else "") + ")")
        for r in card.duplicates:
            lines.append(f"- duplicate seed (an older run of the same config and seed): "
                         f"{r.run_name or r.config_key} (run {r.run_id[:8]})")
    lines += ["", "Does the pretraining loss track the probe? Spearman ρ between each finished "
              "trial's final_loss and its validation probe metric (every seed a point; diverged "
              "excluded). Lower loss with a higher metric gives a **negative** ρ — what the LeJEPA "
              "paper reports; ρ near 0 or positive means the loss is not a proxy on this sport."]
    for m in card.metrics:
        for group, res in card.spearman.get(m, {}).items():
            who = "all trials" if group == "all" else f"{group} arm"
            if res is None:
                lines.append(f"- {split_name('valid', m)} ({who}): n/a (fewer than 3 finished trials)")
            else:
                rho, p, n = res
                lines.append(f"- {split_name('valid', m)} ({who}): ρ = {_f(rho, 2, signed=True)}, "
                             f"p = {_f(p, 3)}, n = {n}")
    return lines


def to_markdown(card: Scorecard) -> str:
    """The scorecard as one Markdown table per metric (rows in validation-rank order) plus
    its footnote (rules, missing intervals, exclusions, Spearman)."""
    lines: list[str] = []
    for m in card.metrics:
        lines += _table(card, m) + [""]
    return "\n".join(lines[:-1] + _footnote(card)) + "\n"


CSV_SPLIT_FIELDS = ("mean", "std", "min", "max", "n", "low", "high", "unit", "n_units")
CSV_METRIC_FIELDS = ("rank", "not_separable", "delta_vs_dinov3", "vs_floor")


def to_csv(card: Scorecard) -> str:
    """One line per row; per metric m and split in (valid, test) ``<m>_<split>_<field>`` for
    field in CSV_SPLIT_FIELDS (low/high: the row interval), then ``<m>_rank`` (validation),
    ``_not_separable``, ``_delta_vs_dinov3`` (test), ``_vs_floor`` (test); empty where undefined."""
    head = ["config", "kind", "arm", "steps", "views", "clip", "n_seeds", "seeds"]
    for m in card.metrics:
        head += [f"{m}_{split}_{f}" for split in SPLITS for f in CSV_SPLIT_FIELDS]
        head += [f"{m}_{f}" for f in CSV_METRIC_FIELDS]
    head += ["diverged", "failed"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)

    def v(x):
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return ""
        if isinstance(x, bool):
            return int(x)
        return round(x, 6) if isinstance(x, float) else x

    for r in card.rows:
        line = [r.config, r.kind, r.arm, r.steps, r.views, "" if r.clip is None else r.clip,
                r.n_seeds, " ".join(r.seeds)]
        for m in card.metrics:
            s = r.stats[m]
            line += [v(getattr(s.split(split), f)) for split in SPLITS for f in CSV_SPLIT_FIELDS]
            line += [v(getattr(s, f)) for f in CSV_METRIC_FIELDS]
        line += [r.n_diverged, r.n_failed]
        w.writerow(line)
    return buf.getvalue()


def plot_vs_steps(source: Scorecard | Iterable[RunRecord], path: str | os.PathLike,
                  metrics: Sequence[str] | None = None) -> Path:
    """PNG: each metric's test mean against pretraining steps, with the row intervals.

    ``source`` is a Scorecard (or records, built into one). Per (arm, views, clip) family a line
    through the rows' test means with their row intervals as error bars, the seeds' test values
    as points; diverged trials as grey crosses (excluded from the means); references as
    horizontal lines with their interval shaded. Uses matplotlib's Agg canvas directly (no
    pyplot global state: safe in threads and headless).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    card = source if isinstance(source, Scorecard) else build(source, metrics or METRICS)
    metrics = tuple(metrics or card.metrics)
    fig = Figure(figsize=(6.0 * len(metrics), 4.5), dpi=110)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, len(metrics), i + 1) for i in range(len(metrics))]
    fams: dict[tuple, list[Row]] = {}
    for r in card.rows:
        if r.kind == T.KIND_TRIAL:
            fams.setdefault((r.arm, r.views, _clip_str(r.clip)), []).append(r)
    colors = [f"C{i}" for i in range(10)]
    for ax, m in zip(axes, metrics):
        name = split_name("test", m)
        for i, (fam, rows) in enumerate(sorted(fams.items())):
            c = colors[i % len(colors)]
            ok = sorted((r for r in rows if r.stats[m].test.mean is not None), key=lambda r: r.steps)
            for r in ok:
                ax.scatter([r.steps] * r.stats[m].test.n, r.stats[m].test.values, color=c, s=12, alpha=0.5)
            if ok:
                tests = [r.stats[m].test for r in ok]
                err = np.array([[t.mean - t.low, t.high - t.mean] if t.has_interval else [np.nan, np.nan]
                                for t in tests]).T
                ax.errorbar([r.steps for r in ok], [t.mean for t in tests], yerr=err, color=c, marker="o",
                            capsize=3, label=f"{fam[0]} {fam[1]} clip={fam[2]}")
        bad = [r for r in card.diverged if r.kind == T.KIND_TRIAL and _finite(r.metrics.get(name))]
        if bad:
            ax.scatter([r.steps for r in bad], [r.metrics[name] for r in bad], color="grey", marker="x", s=30)
        for r in card.rows:
            t = r.stats[m].test
            if r.kind == T.KIND_REFERENCE and t.mean is not None:
                c = "k" if r.reference == "dinov3" else "grey"
                ax.axhline(t.mean, color=c, linestyle="--" if r.reference == "dinov3" else ":",
                           linewidth=1, label=r.title)
                if t.has_interval:
                    ax.axhspan(t.low, t.high, color=c, alpha=0.1)
        ax.set_xlabel("pretraining steps")
        ax.set_ylabel(name)
        ax.set_title(metric_title(m) + " (test) vs steps: mean, 95 % interval, seeds, × diverged",
                     fontsize=9)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        if uniq:
            ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# --- command line ---------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from sportray.config import default_tracking_uri

    p.add_argument("--experiment", required=True,
                   help="MLflow experiment name (a sweep script's stem, e.g. scratch_views)")
    p.add_argument("--format", choices=("md", "csv"), default="md", help="printed format (default md)")
    p.add_argument("--tracking-uri", default=default_tracking_uri(),
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--parent-run", default=None,
                   help="only this sweep's runs (parent run id); default: the whole experiment")
    p.add_argument("--tasks", default="basketball,soccer",
                   help="probe tasks whose metrics are shown: registered names or package.module:ATTRIBUTE")
    p.add_argument("--metrics", default="",
                   help="comma-separated probe metrics, base names (default: the tasks' metrics)")
    p.add_argument("--bootstrap", type=int, default=N_BOOT,
                   help=f"bootstrap replicates per row interval (default {N_BOOT})")
    p.add_argument("--out", default=None,
                   help="directory to write scorecard.md, scorecard.csv and scorecard.png")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        client = T.connect(args.tracking_uri)
        records = load_runs(client, args.experiment, args.parent_run)
    except T.TrackingError as exc:
        print(f"sportray scorecard: {exc}", file=sys.stderr)
        return 2
    try:
        chosen = tasks.resolve(args.tasks)
    except ValueError as exc:
        print(f"sportray scorecard: {exc}", file=sys.stderr)
        return 2
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    card = build(records, metrics or None, n_boot=args.bootstrap, probe_tasks=chosen)
    md, table_csv = to_markdown(card), to_csv(card)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "scorecard.md").write_text(md)
        (out / "scorecard.csv").write_text(table_csv)
        plot_vs_steps(card, out / "scorecard.png")
    sys.stdout.write(md if args.format == "md" else table_csv)
    if not records:
        print(f"(no finished trial or reference runs in experiment {args.experiment!r})", file=sys.stderr)
    if args.out:
        print(f"wrote {Path(args.out) / 'scorecard.md'}, .csv, .png", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``sportray scorecard --experiment NAME [--format md|csv] [--tracking-uri URI] [--out DIR]``."""
    p = OneLineParser(
        prog="sportray scorecard",
        description="The study's results tables from MLflow runs, ranked on validation: per "
                    "configuration the seed count, validation and test means with intervals over "
                    "seeds and test units, test std, delta vs frozen DINOv3, comparison with the "
                    "random-init floor and a 'not separable' flag; diverged trials listed; "
                    "loss-vs-probe Spearman.")
    return run(add_arguments(p).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
