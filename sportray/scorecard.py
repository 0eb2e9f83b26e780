"""The study's scorecard from MLflow runs, multi-seed aware.

``sportray scorecard --experiment NAME`` reads the trial and reference runs of an experiment
(names: notes/CONTRACTS.md, written by sportray.tracking) and prints the results table of
seed-study.txt §05 with what §06 says every row needs: the seed count and spread, the test-set
CI, the delta against the frozen-DINOv3 bar, and an explicit "not separable" flag where the
ranking is within noise. Diverged trials are listed, never averaged in silently.

Rows. One row per ``sportray.config_key`` (seed excluded); references (random, dinov3) are
rows of their own. Only finished, non-diverged runs count toward a row's statistics; if the
same (config, seed) ran more than once (e.g. two sweeps in one experiment), the latest run is
counted and the others are reported as duplicates (a repeated seed is not a new sample).

Per metric and row: ``mean``; ``std`` the sample standard deviation over seeds (ddof=1,
undefined for one seed) with ``min``/``max``; ``n`` the seeds with that metric; ``ci`` the
runs' own bootstrap 95 % CI over test frames/events (for one seed, that run's CI; for several,
the mean of their bounds): the CI measures test-set sampling noise, the std measures seed
noise; ``delta_vs_dinov3`` = mean − mean of the dinov3 reference row.

Separability rule (per metric): rows are ranked by mean, best first; each row is compared
with the row ranked just above it and flagged **not separable** when
    |mean_above − mean_row| <= max(std_above, std_row)       (seed noise could explain it), or
    the two CIs overlap                                       (test-set noise could explain it).
If neither a std nor a CI exists for the pair (one seed each, no CI logged) the pair is also
flagged: nothing shows the gap is real. Only adjacent ranks are compared: a chain
A ≈ B ≈ C does not make A ≈ C.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from sportray import tracking as T

METRICS = ("basketball_iou", "soccer_bal_acc")
METRIC_TITLES = {"basketball_iou": "Basketball IoU", "soccer_bal_acc": "Soccer bal. acc"}
REFERENCE_TITLES = {"random": "Random init (reference)", "dinov3": "Frozen DINOv3 (reference)"}
DINOV3_KEY = "reference dinov3"


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


def load_runs(client, experiment_name: str, parent_run_id: str | None = None) -> list[RunRecord]:
    """Trial and reference runs of ``experiment_name`` (finished, diverged and failed ones).

    Runs still running are skipped; deleted runs are ignored. With ``parent_run_id`` only that
    sweep's children are read, plus reference runs without a parent (shared references).
    Raises TrackingError when the experiment does not exist (listing those that do).
    """
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = [e.name for e in client.search_experiments(max_results=50)]
        raise T.TrackingError(
            f"no experiment named {experiment_name!r} in {client.tracking_uri!r}"
            f" (experiments there: {', '.join(names) or 'none'}). Pass --experiment NAME "
            "(the sweep script's stem) and the store with --tracking-uri / MLFLOW_TRACKING_URI.")
    out: list[RunRecord] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], run_view_type=T.ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        for run in page:
            tags = run.data.tags
            kind = tags.get(T.TAG_KIND)
            if kind not in (T.KIND_TRIAL, T.KIND_REFERENCE):
                continue
            parent = tags.get(T.TAG_PARENT)
            if parent_run_id is not None and parent != parent_run_id and not (
                    kind == T.KIND_REFERENCE and parent is None):
                continue
            status = _effective_status(tags.get(T.TAG_STATUS), run.info.status)
            if status is None:
                continue
            params = dict(run.data.params)
            key = tags.get(T.TAG_CONFIG_KEY) or (
                f"reference {tags.get(T.TAG_REFERENCE)}" if kind == T.KIND_REFERENCE
                else T.config_key(params))
            out.append(RunRecord(
                run_id=run.info.run_id, run_name=run.info.run_name or "", kind=kind,
                config_key=key, status=status, params=params, metrics=dict(run.data.metrics),
                tags=dict(tags), reference=tags.get(T.TAG_REFERENCE), parent_id=parent,
                end_time=run.info.end_time or run.info.start_time or 0))
        token = page.token
        if not token:
            break
    return out


# --- statistics -----------------------------------------------------------------------------

@dataclass
class MetricStats:
    n: int = 0
    values: list[float] = field(default_factory=list)
    mean: float | None = None
    std: float | None = None         # sample std over seeds (ddof=1); None for n < 2
    min: float | None = None
    max: float | None = None
    ci_low: float | None = None      # runs' bootstrap 95 % CI (mean of bounds over seeds)
    ci_high: float | None = None
    delta_vs_dinov3: float | None = None
    rank: int | None = None          # 1 = best mean
    above: str | None = None         # config of the row ranked just above
    not_separable: bool | None = None  # vs `above`; None for the top row / no data
    reason: str = ""                 # "spread", "ci", "spread+ci", "no spread/CI" or ""


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
        return REFERENCE_TITLES.get(self.reference or "", self.config) if self.kind == T.KIND_REFERENCE \
            else self.config


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

    def row(self, config: str) -> Row:
        for r in self.rows:
            if r.config == config:
                return r
        raise KeyError(config)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _stats(runs: list[RunRecord], metric: str) -> MetricStats:
    vals = [r.metrics[metric] for r in runs if _finite(r.metrics.get(metric))]
    s = MetricStats(n=len(vals), values=vals)
    if not vals:
        return s
    n = len(vals)
    s.mean = sum(vals) / n
    s.min, s.max = min(vals), max(vals)
    if n >= 2:
        s.std = math.sqrt(sum((v - s.mean) ** 2 for v in vals) / (n - 1))
    have = [r for r in runs if _finite(r.metrics.get(metric))]
    lows = [r.metrics.get(metric + "_ci_low") for r in have]
    highs = [r.metrics.get(metric + "_ci_high") for r in have]
    if all(_finite(v) for v in lows + highs):  # a CI only when every seed has one
        s.ci_low, s.ci_high = sum(lows) / n, sum(highs) / n
    return s


def _separable(above: MetricStats, row: MetricStats) -> tuple[bool, str]:
    """(not_separable, reason) for ``row`` against the row ranked just ``above`` it."""
    diff = abs(above.mean - row.mean)
    stds = [s for s in (above.std, row.std) if s is not None]
    in_spread = bool(stds) and diff <= max(stds) + 1e-12
    has_ci = None not in (above.ci_low, above.ci_high, row.ci_low, row.ci_high)
    overlap = has_ci and row.ci_high >= above.ci_low and above.ci_high >= row.ci_low
    reason = "+".join(r for r, on in (("spread", in_spread), ("ci", overlap)) if on)
    if reason:
        return True, reason
    if not stds and not has_ci:
        return True, "no spread/CI"
    return False, ""


def _order(row: Row) -> tuple:
    ref_rank = {"random": 0, "dinov3": 1}
    if row.kind == T.KIND_REFERENCE:
        return (0, ref_rank.get(row.reference or "", 2), row.config)
    return (1, row.arm, row.views, row.clip if row.clip is not None else -1.0, row.steps, row.config)


def build(records: Iterable[RunRecord], metrics: Sequence[str] = METRICS) -> Scorecard:
    """The scorecard of ``records`` (see the module docstring for every rule)."""
    records = list(records)
    metrics = tuple(metrics)
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
        row.stats = {m: _stats(kept, m) for m in metrics}
        rows.append(row)
    rows.sort(key=_order)

    bar = next((r for r in rows if r.config == DINOV3_KEY), None)
    for m in metrics:
        ref_mean = bar.stats[m].mean if bar is not None else None
        ranked = sorted((r for r in rows if r.stats[m].mean is not None),
                        key=lambda r: -r.stats[m].mean)  # stable: ties keep table order
        for i, r in enumerate(ranked):
            s = r.stats[m]
            s.rank = i + 1
            if ref_mean is not None and r is not bar:
                s.delta_vs_dinov3 = s.mean - ref_mean
            if i:
                s.above = ranked[i - 1].config
                s.not_separable, s.reason = _separable(ranked[i - 1].stats[m], s)

    card = Scorecard(metrics=metrics, rows=rows, diverged=diverged, failed=failed,
                     duplicates=duplicates, stopped=stopped, has_dinov3=bar is not None)
    for m in metrics:
        card.spearman[m] = {"all": spearman(records, m)}
        arms = sorted({r.arm for r in records if r.kind == T.KIND_TRIAL})
        for arm in arms if len(arms) > 1 else ():  # per arm too: losses of arms differ in scale
            res = spearman(records, m, arm=arm)
            if res is not None:
                card.spearman[m][arm] = res
    return card


def spearman(records: Iterable[RunRecord], metric: str, arm: str | None = None
             ) -> tuple[float, float, int] | None:
    """Spearman (rho, p, n) between each finished trial's ``final_loss`` and its ``metric``.

    One point per finished, non-diverged trial run (every seed counts) with both values
    finite; ``arm`` restricts to one arm. None when n < 3. rho is reported as is: the probe
    metrics are higher-is-better and the loss lower-is-better, so "the loss tracks the probe"
    (the LeJEPA paper's claim) shows as a *negative* rho. rho is NaN if either side is constant.
    """
    from scipy.stats import spearmanr

    pts = [(r.metrics["final_loss"], r.metrics[metric]) for r in records
           if r.kind == T.KIND_TRIAL and r.counted and (arm is None or r.arm == arm)
           and _finite(r.metrics.get("final_loss")) and _finite(r.metrics.get(metric))]
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


def _footnote(card: Scorecard) -> list[str]:
    lines = [
        "",
        "Reading the table. One row per configuration (seed excluded). **mean ± std**: mean over "
        "the row's seeds and the sample std (ddof=1) over seeds; **range**: min–max over seeds; "
        "**CI95**: the runs' bootstrap 95 % CI over test frames/events (one seed: that run's; "
        "several: the mean of their bounds) — the std is seed noise, the CI test-set noise; "
        "**Δ DINOv3**: mean − the frozen-DINOv3 row's mean"
        + ("" if card.has_dinov3 else " (no dinov3 reference run in this experiment)") + ".",
        "",
        "**rank / ≈**: rank by mean (1 = best). `≈` marks a row that is **not separable** from "
        "the row ranked just above it: |Δ mean| ≤ max(std of the two rows) (seed noise could "
        "explain the gap) or their CI95s overlap (test-set noise could), or neither a std nor a "
        "CI exists for the pair. Only adjacent ranks are compared. A single-seed row (n=1) has no "
        "seed spread: read its rank with care, run more seeds before announcing a winner.",
    ]
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
              "trial's final_loss and its probe metric (every seed a point; diverged excluded). "
              "Lower loss with a higher metric gives a **negative** ρ — what the LeJEPA paper "
              "reports; ρ near 0 or positive means the loss is not a proxy on this sport."]
    for m in card.metrics:
        for group, res in card.spearman.get(m, {}).items():
            who = "all trials" if group == "all" else f"{group} arm"
            if res is None:
                lines.append(f"- {m} ({who}): n/a (fewer than 3 finished trials)")
            else:
                rho, p, n = res
                lines.append(f"- {m} ({who}): ρ = {_f(rho, 2, signed=True)}, p = {_f(p, 3)}, n = {n}")
    return lines


def to_markdown(card: Scorecard) -> str:
    """The scorecard as a Markdown table plus its footnote (rules, exclusions, Spearman)."""
    head = ["Model", "Arm", "Steps", "Views", "Clip", "Seeds"]
    for m in card.metrics:
        t = METRIC_TITLES.get(m, m)
        head += [f"{t} mean ± std", "range", "CI95", "Δ DINOv3", "rank"]
    head.append("Diverged")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in card.rows:
        cells = [r.title, r.arm, str(r.steps) if r.kind != T.KIND_REFERENCE else "—",
                 r.views or "—", _clip_str(r.clip) or "—", str(r.n_seeds)]
        for m in card.metrics:
            s = r.stats[m]
            if s.mean is None:
                cells += ["—"] * 5
                continue
            cells.append(f"{_f(s.mean)} ± {_f(s.std)}" if s.n >= 2 else f"{_f(s.mean)} (1 seed)")
            cells.append(f"{_f(s.min)}–{_f(s.max)}" if s.n >= 2 else "—")
            cells.append(f"[{_f(s.ci_low)}, {_f(s.ci_high)}]" if s.ci_low is not None else "—")
            cells.append(_f(s.delta_vs_dinov3, signed=True) if r.config != DINOV3_KEY else "bar")
            cells.append(f"{s.rank}" + (" ≈" if s.not_separable else ""))
        cells.append(str(r.n_diverged) if r.n_diverged else "")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines + _footnote(card)) + "\n"


def to_csv(card: Scorecard) -> str:
    """One line per row; per metric ``<m>_mean, _std, _min, _max, _n, _ci_low, _ci_high,
    _delta_vs_dinov3, _rank, _not_separable`` (empty where undefined)."""
    head = ["config", "kind", "arm", "steps", "views", "clip", "n_seeds", "seeds"]
    per = ["mean", "std", "min", "max", "n", "ci_low", "ci_high", "delta_vs_dinov3", "rank",
           "not_separable"]
    for m in card.metrics:
        head += [f"{m}_{p}" for p in per]
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
            line += [v(getattr(s, p)) for p in per]
        line += [r.n_diverged, r.n_failed]
        w.writerow(line)
    return buf.getvalue()


def plot_vs_steps(records: Iterable[RunRecord], path: str | os.PathLike,
                  metrics: Sequence[str] = METRICS) -> Path:
    """PNG: each metric against pretraining steps.

    Per-seed points and a mean line per (arm, views, clip) family; diverged trials as grey
    crosses (excluded from the means); references as horizontal lines. Uses matplotlib's Agg
    canvas directly (no pyplot global state: safe in threads and headless).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = list(records)
    fig = Figure(figsize=(6.0 * len(metrics), 4.5), dpi=110)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, len(metrics), i + 1) for i in range(len(metrics))]
    fams: dict[tuple, list[RunRecord]] = {}
    for r in records:
        if r.kind == T.KIND_TRIAL:
            fams.setdefault((r.arm, r.views, _clip_str(r.clip)), []).append(r)
    colors = [f"C{i}" for i in range(10)]
    for ax, m in zip(axes, metrics):
        for i, (fam, runs) in enumerate(sorted(fams.items())):
            c = colors[i % len(colors)]
            ok = [r for r in runs if r.counted and _finite(r.metrics.get(m))]
            if ok:
                ax.scatter([r.steps for r in ok], [r.metrics[m] for r in ok], color=c, s=18, alpha=0.7)
                by_steps: dict[int, list[float]] = {}
                for r in ok:
                    by_steps.setdefault(r.steps, []).append(r.metrics[m])
                xs = sorted(by_steps)
                ax.plot(xs, [sum(by_steps[x]) / len(by_steps[x]) for x in xs], color=c, marker="o",
                        label=f"{fam[0]} {fam[1]} clip={fam[2]}")
            bad = [r for r in runs if r.diverged and _finite(r.metrics.get(m))]
            if bad:
                ax.scatter([r.steps for r in bad], [r.metrics[m] for r in bad], color="grey",
                           marker="x", s=30)
        for r in records:
            if r.kind == T.KIND_REFERENCE and r.counted and _finite(r.metrics.get(m)):
                ax.axhline(r.metrics[m], color="k" if r.reference == "dinov3" else "grey",
                           linestyle="--" if r.reference == "dinov3" else ":", linewidth=1,
                           label=REFERENCE_TITLES.get(r.reference or "", r.config_key))
        ax.set_xlabel("pretraining steps")
        ax.set_ylabel(m)
        ax.set_title(METRIC_TITLES.get(m, m) + " vs steps (points: seeds, ×: diverged)")
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
    p.add_argument("--metrics", default=",".join(METRICS),
                   help=f"comma-separated probe metrics (default {','.join(METRICS)})")
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
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    card = build(records, metrics)
    md, table_csv = to_markdown(card), to_csv(card)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "scorecard.md").write_text(md)
        (out / "scorecard.csv").write_text(table_csv)
        plot_vs_steps(records, out / "scorecard.png", metrics)
    sys.stdout.write(md if args.format == "md" else table_csv)
    if not records:
        print(f"(no finished trial or reference runs in experiment {args.experiment!r})", file=sys.stderr)
    if args.out:
        print(f"wrote {Path(args.out) / 'scorecard.md'}, .csv, .png", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``sportray scorecard --experiment NAME [--format md|csv] [--tracking-uri URI] [--out DIR]``."""
    p = argparse.ArgumentParser(
        prog="sportray scorecard",
        description="The study's results table from MLflow runs: per configuration the seed "
                    "count, mean ± std, range, test-set CI, delta vs frozen DINOv3 and a "
                    "'not separable' flag; diverged trials listed; loss-vs-probe Spearman.")
    return run(add_arguments(p).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
