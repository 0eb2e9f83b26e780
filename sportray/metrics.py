"""Live metrics for Grafana: sportray's training and probe numbers as Ray custom metrics.

MLflow is the record (every step, every trial, kept forever); these metrics are the *live
view* of a running sweep on the Ray metrics endpoint that Prometheus scrapes and the
dashboards in ``dashboards/`` draw. Every name here appears on the endpoint with Ray's
``ray_`` prefix (``sportray_loss`` -> ``ray_sportray_loss``; the counter gets ``_total``).

Labels: ``trial`` and ``arm``. ``trial`` should be the trial's MLflow run name
(``tracking.run_name(config_key, seed)``, e.g. ``"2x224 40st noclip s0"``) so a
Grafana legend and the MLflow compare view name a trial the same way; two seeds of one recipe
must not share a ``trial`` value or their gauges overwrite each other.

Where each number is set:

* ``TrainMetrics`` -- in the Ray Train worker of rank 0 (sportray/pretrain.py), at every
  logged step. Ray 2.60 exports a gauge only in the interval it was set and its metrics agent
  drops it two export intervals (``RAY_metrics_report_interval_ms``, 10 s default) later, although
  its process lives on (as measured: BENCHMARKS.md, "Figures moved from docstrings"; the test
  test_metrics.py checks the cure). So every process re-sets its latest gauge values every
  half interval (`_keeper`, a daemon thread): a trial's curves stay on the endpoint while its
  rank 0 lives, even when a step takes longer than the interval, and vanish about two
  intervals after the process ends -- "trials training now" on the sweep dashboard counts
  trials whose rank 0 is alive.
* ``report_probe`` -- once per trial after probing (sportray/trial.py). The Tune trial's
  process ends right after that, usually before the next export, so the values are handed to
  one small long-lived actor (``sportray-metrics``, namespace ``sportray``, 0 CPUs, detached)
  that keeps every finished trial's probe gauges on the endpoint until the cluster stops.
  That is the point of the probe panels: a table of finished trials next to the live curves.

Everything is a no-op when Ray is not initialised in the process (a unit test, a plain
script) and never raises into training: metrics are a view, not a dependency.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Mapping

log = logging.getLogger(__name__)

TAG_KEYS = ("trial", "arm")

# name on the endpoint without "ray_" -> (key in pretrain.py's `last` dict, description)
TRAIN_GAUGES: dict[str, tuple[str, str]] = {
    "sportray_step": ("", "Optimizer steps done by the trial (rank 0)."),
    "sportray_loss": ("train/loss", "LeJEPA loss (1 - lambda) * inv + lambda * sigreg at the last logged step."),
    "sportray_inv": ("train/inv", "LeJEPA invariance term at the last logged step."),
    "sportray_sigreg": ("train/sigreg", "SIGReg (Epps-Pulley) term at the last logged step."),
    "sportray_grad_norm": ("train/grad_norm", "Gradient norm before clipping at the last logged step."),
    "sportray_weight_norm": ("train/weight_norm", "Norm of the trainable backbone weights."),
    "sportray_rel_dist_init": ("train/rel_dist_init", "Relative distance from init ||theta - theta0|| / ||theta0||."),
    "sportray_lr": ("train/lr", "Learning rate at the last logged step."),
    "sportray_frames_per_s": ("train/frames_per_s", "Training throughput, frames per second over all workers."),
    "sportray_data_wait_s": ("train/data_wait_s", "Seconds per step rank 0 waited for its next batch (input-bound if high)."),
}

# key of trial.run_trial's `final` -> (gauge name, description); each probe task adds its own two
# (probe_gauges: sportray_<metric> on test, sportray_<metric>_valid on validation)
RUN_GAUGES: dict[str, tuple[str, str]] = {
    "final_loss": ("sportray_final_loss", "LeJEPA loss at the trial's last step."),
    "diverged": ("sportray_diverged", "1 if the trial ended diverged (loss spike / NaN), else 0."),
}
TRIALS_FINISHED = "sportray_trials_finished"   # counter: ray_sportray_trials_finished_total
TRIALS_FINISHED_TAGS = ("arm", "status")

ACTOR_NAME = "sportray-metrics"
ACTOR_NAMESPACE = "sportray"

_lock = threading.Lock()
_gauges: dict[str, object] = {}   # one Gauge per name per process (cheap to reuse, costly to re-register)


class _Keeper:
    """Sets gauges and keeps re-setting their latest values every half export interval, so they
    stay on the metrics endpoint (see the module docstring). One per process."""

    def __init__(self):
        self._values: dict[tuple, tuple] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def set(self, gauge, value: float, tags: dict[str, str]) -> None:
        gauge.set(value, tags=tags)
        key = (gauge.info["name"], tuple(sorted(tags.items())))
        with self._lock:
            self._values[key] = (gauge, value, dict(tags))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sportray-metrics-keeper", daemon=True)
                self._thread.start()

    def forget(self, tags: dict[str, str]) -> None:
        """Stop re-setting the gauges with exactly these tags (they leave the endpoint soon after)."""
        items = tuple(sorted(tags.items()))
        with self._lock:
            for key in [k for k in self._values if k[1] == items]:
                del self._values[key]

    @staticmethod
    def period_s() -> float:
        try:
            import ray
            return max(0.5, ray._config.metrics_report_interval_ms() / 2000)
        except Exception:
            return 5.0

    def _run(self) -> None:
        period = self.period_s()
        while True:
            time.sleep(period)
            with self._lock:
                items = list(self._values.values())
            for gauge, value, tags in items:
                try:
                    gauge.set(value, tags=tags)
                except Exception:  # a dashboard hiccup never stops the process
                    pass


_keeper = _Keeper()


def ray_ready() -> bool:
    """True when this process is connected to Ray (a driver after ray.init, or any Ray worker)."""
    try:
        import ray
        return ray.is_initialized()
    except Exception:
        return False


def _gauge(name: str, description: str, tag_keys: tuple[str, ...] = TAG_KEYS):
    with _lock:
        g = _gauges.get(name)
        if g is None:
            from ray.util.metrics import Gauge
            g = _gauges[name] = Gauge(name, description=description, tag_keys=tag_keys)
        return g


def _value(v) -> float | None:
    """A float the exporter takes, or None to skip (None, non-numbers, NaN/Inf).

    Non-finite values are skipped rather than exported: Grafana's stat/graph panels and
    rate() choke on them, and divergence is already visible (sportray_diverged, MLflow)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class TrainMetrics:
    """Training gauges of one trial, labelled (trial, arm). Create on rank 0 only.

    ``update(step, last)`` takes pretrain.py's ``last`` dict (``train/loss``, ``train/inv``,
    ``train/sigreg``, ``train/grad_norm``, ``train/weight_norm``, ``train/rel_dist_init``,
    ``train/lr``, ``train/frames_per_s``, ``train/data_wait_s``); missing or non-finite
    values are skipped. Without Ray (``ray.is_initialized()`` False) it does nothing.
    """

    def __init__(self, trial: str, arm: str):
        self.tags = {"trial": str(trial or "unnamed"), "arm": str(arm or "")}
        self.enabled = ray_ready()
        self._gauges: dict[str, object] = {}
        if not self.enabled:
            return
        try:
            self._gauges = {name: _gauge(name, desc) for name, (_key, desc) in TRAIN_GAUGES.items()}
        except Exception as exc:  # never stop training for a dashboard
            log.warning("sportray metrics disabled: %s", exc)
            self.enabled = False

    def update(self, step: int, last: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        try:
            for name, (key, _desc) in TRAIN_GAUGES.items():
                v = _value(step if not key else last.get(key))
                if v is not None:
                    _keeper.set(self._gauges[name], v, self.tags)
        except Exception as exc:
            log.warning("sportray metrics: update failed (%s); disabled for this trial", exc)
            self.enabled = False

    def close(self) -> None:
        """Stop re-exporting this trial's gauges (they leave the endpoint two intervals later)."""
        _keeper.forget(self.tags)


def probe_gauges(tasks) -> dict[str, tuple[str, str]]:
    """The gauges of a trial's end: each probe task's metric on test and on validation, then
    RUN_GAUGES. `tasks`: sportray.tasks.ProbeTask objects."""
    out = {}
    for t in tasks:
        out[f"test/{t.metric}"] = (f"sportray_{t.metric}", f"{t.gauge} (test: held-out {t.units[0]}s).")
        out[f"valid/{t.metric}"] = (f"sportray_{t.metric}_valid",
                                    f"{t.gauge} on the validation {t.units[0]}s (what sweeps choose on).")
    return {**out, **RUN_GAUGES}


class ProbeMetrics:
    """Probe gauges (each task's metric, final loss, diverged) and the trials-finished counter,
    set in the process that holds this object. ``report_probe`` runs one of these inside the
    long-lived ``sportray-metrics`` actor (``SportrayMetrics``). Gauges are made as their names
    first arrive, so a probe task of a user's own gets its gauge without a change here."""

    def __init__(self):
        self.enabled = ray_ready()
        self._counter = None
        if not self.enabled:
            return
        from ray.util.metrics import Counter
        self._counter = Counter(TRIALS_FINISHED, description="Trials that ended, by arm and status.",
                                tag_keys=TRIALS_FINISHED_TAGS)

    def set(self, trial: str, arm: str, values: Mapping[str, tuple[float, str]], status: str) -> int:
        """Set the gauges in ``values`` ({gauge name: (value, description)}); count the trial
        once under ``status``. Returns how many gauges were set."""
        if not self.enabled:
            return 0
        tags = {"trial": str(trial or "unnamed"), "arm": str(arm or "")}
        n = 0
        for name, (value, description) in values.items():
            _keeper.set(_gauge(name, description), value, tags)
            n += 1
        self._counter.inc(1.0, tags={"arm": tags["arm"], "status": status})
        return n


class SportrayMetrics:
    """The long-lived actor (``sportray-metrics``) that keeps finished trials' probe gauges and
    the trials-finished counter on the metrics endpoint after the trials' processes are gone."""

    def __init__(self):
        self.metrics = ProbeMetrics()

    def set(self, trial: str, arm: str, values: dict, status: str) -> int:
        return self.metrics.set(trial, arm, values, status)


_remote_class = None


def report_probe(trial: str, arm: str, metrics: Mapping[str, object], tasks=None, *,
                 timeout_s: float = 60.0) -> bool:
    """Publish one finished trial's end metrics (each probe task's metric on test and valid,
    final_loss, diverged; `tasks` default: the built-in tasks) as gauges labelled (trial, arm),
    plus ``ray_sportray_trials_finished_total``.

    Call it once per trial after probing, from any process connected to Ray. Returns True if
    the values reached the ``sportray-metrics`` actor; False (with a warning) otherwise --
    without Ray, or when the actor cannot start -- and never raises.
    """
    if not ray_ready():
        return False
    try:
        import ray

        from sportray import tasks as probe_tasks

        gauges = probe_gauges(probe_tasks.resolve() if tasks is None else tasks)
        values = {name: (_value(metrics.get(key)), desc) for key, (name, desc) in gauges.items()}
        values = {name: v for name, v in values.items() if v[0] is not None}
        status = str(metrics.get("status") or ("diverged" if _value(metrics.get("diverged")) == 1.0 else "finished"))
        global _remote_class
        if _remote_class is None:
            _remote_class = ray.remote(SportrayMetrics)
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        # Outside the caller's placement group: called from a Tune trial, the actor would
        # otherwise land in the trial's group and, once Tune removes it at the trial's end,
        # restart forever with nowhere to go (later trials then wait out `timeout_s`).
        holder = _remote_class.options(
            name=ACTOR_NAME, namespace=ACTOR_NAMESPACE, lifetime="detached", get_if_exists=True,
            num_cpus=0, max_restarts=-1, max_task_retries=-1,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None)).remote()
        ray.get(holder.set.remote(str(trial), str(arm), values, status), timeout=timeout_s)
        return True
    except Exception as exc:
        log.warning("sportray metrics: probe metrics of trial %r not published (%s)", trial, exc)
        return False


def metric_names(prefixed: bool = True) -> list[str]:
    """Every metric name sportray exports, as they appear on the endpoint (``ray_...``)."""
    from sportray import tasks

    names = [*TRAIN_GAUGES, *(n for n, _d in probe_gauges(tasks.resolve()).values()), TRIALS_FINISHED + "_total"]
    return [("ray_" + n) if prefixed else n for n in names]
