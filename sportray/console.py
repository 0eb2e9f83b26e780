"""What a sweep prints, and what it keeps Ray from printing.

A researcher reads the console of a sweep: one line per stage (synthesizing, decoding, probe
sets), a short trial table when a trial ends (readable names: recipe and seed; step/N; the
LeJEPA loss; the validation probe metric), a progress line a minute while trials run, and a
compact ending (sportray/sweep.py `final_summary`). Everything Ray would print on its own is
kept in Ray's log files instead of the console:

* Ray Data's progress bars and INFO logs (in the driver and in every worker): progress bars off
  (`RAY_DATA_DISABLE_PROGRESS_BARS`), the `ray.data` console handler at WARNING through
  `RAY_DATA_LOGGING_CONFIG` (its file log is untouched);
* Ray Train's "Reporting training result N: TrainingReport(...)" line per report (an INFO record
  on a logger named by its source file, which Train's LoggingConfig does not reach);
* Tune's own tables and trial-config boxes (`verbose=0`; `SweepConsole` prints instead), its
  TensorBoard hint, Optuna's and MLflow's INFO lines, and two deprecation warnings Ray raises
  from its own defaults.

`quiet_process` runs in the driver and, as Ray's `worker_process_setup_hook`, in every worker
process of the job (`sportray.runtime.init_ray`), so a multi-node cluster is quiet too.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
import textwrap
import time
import warnings

_RAY_DATA_LOGGING = """\
version: 1
disable_existing_loggers: false
formatters:
  ray:
    format: "%(asctime)s\\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"
filters:
  console_filter:
    (): ray.data._internal.logging.HiddenRecordFilter
handlers:
  file:
    class: ray.data._internal.logging.SessionFileHandler
    formatter: ray
    filename: ray-data.log
  console:
    class: ray._private.log.PlainRayHandler
    formatter: ray
    level: WARNING
    filters: [console_filter]
loggers:
  ray.data:
    level: DEBUG
    handlers: [file, console]
    propagate: false
"""

# Warnings Ray raises from its own defaults (not from anything sportray passes).
_RAY_OWN_WARNINGS = (".*exclude_resources.*", ".*TrainingReport.*")


def ray_data_logging_config() -> str:
    """A Ray Data logging config like Ray's default but with the console at WARNING (the file
    log keeps everything); written once per machine, returned as a path."""
    path = os.path.join(tempfile.gettempdir(), "sportray-ray-data-logging.yaml")
    try:
        with open(path) as f:
            if f.read() == _RAY_DATA_LOGGING:
                return path
    except OSError:
        pass
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(_RAY_DATA_LOGGING)
    os.replace(tmp, path)
    return path


def quiet_env() -> dict[str, str]:
    """Environment variables that keep Ray Data quiet in every process that inherits them."""
    return {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_DATA_LOGGING_CONFIG": ray_data_logging_config()}


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(f in msg for f in self.fragments)


def quiet_process() -> None:
    """Ray's worker_process_setup_hook (and the driver's own set-up): Ray Data, Ray Train's
    per-report line, MLflow/Optuna INFO and Ray's own deprecation warnings off the console."""
    if os.environ.get("SPORTRAY_VERBOSE"):
        return
    for key, value in quiet_env().items():
        os.environ.setdefault(key, value)
    # Train v2 logs each report at INFO on a logger named by its file (so LoggingConfig, which
    # filters "ray.train.*", does not reach it); the name is found without importing Train.
    try:
        spec = importlib.util.find_spec("ray.train.v2._internal.execution.context")
        if spec and spec.origin:
            logging.getLogger(spec.origin).setLevel(logging.WARNING)
    except (ImportError, ValueError):
        pass
    for name in ("mlflow", "optuna", "ray.tune", "ray.train", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "The `process_trial_result` operation took 1.2 s, which may be a performance bottleneck":
    # Tune timing its own driver on a loaded machine, nothing a sweep's user can act on
    logging.getLogger("ray.tune.utils.util").addFilter(_DropMessages("may be a performance bottleneck"))
    # "To visualize your results with TensorBoard ..." (TensorBoard is not a dependency)
    logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.ERROR)
    for pattern in _RAY_OWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # Tune's new output engine prints its experiment box and a TensorBoard hint even at
    # verbose=0; the legacy engine at verbose=0 prints nothing (SweepConsole does instead).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if "ray.data" in sys.modules:   # imported before this ran: its defaults are already read
        from ray.data import DataContext
        from ray.data._internal.logging import configure_logging
        DataContext.get_current().enable_progress_bars = False
        configure_logging()
    logging.getLogger("ray.data._internal.progress").addFilter(_DropMessages("Progress bars disabled"))
    if "optuna" in sys.modules:
        sys.modules["optuna"].logging.set_verbosity(logging.WARNING)
    _drop_raylet_notices()
    # The token notice at ray.init: the start line says where the token is (runtime.init_ray).
    logging.getLogger("ray").addFilter(_DropMessages("Token authentication is enabled"))
    for h in logging.getLogger("ray").handlers:
        h.addFilter(_DropMessages("Token authentication is enabled"))


# Raylet notices that are no news for a sweep: fractional-CPU trials (0.01 CPU each) start more
# Python workers than Ray's startup-concurrency heuristic expects. Other raylet errors (a worker
# died, out of memory) still print.
_RAYLET_NOISE = ("PYTHON worker processes have been started",)


def _drop_raylet_notices() -> None:
    """Filter the driver's printer of raylet/GCS error messages (ray._private.worker's
    print_to_stdstream, looked up by name at each call) for _RAYLET_NOISE only."""
    try:
        import ray._private.worker as rw
    except ImportError:
        return
    original = rw.print_to_stdstream
    if getattr(original, "_sportray", False):
        return

    def printer(data, ignore_prefix: bool = False):
        if data.get("pid") == "raylet" and any(n in line for line in data.get("lines", []) for n in _RAYLET_NOISE):
            return
        return original(data, ignore_prefix=ignore_prefix)

    printer._sportray = True
    rw.print_to_stdstream = printer


WIDTH = 100      # the console's lines fit a terminal of this many columns


def say(msg: str) -> None:
    """One message, wrapped at WIDTH columns between words (paths and URLs stay whole)."""
    lines = textwrap.wrap(f"[sportray] {msg}", WIDTH, subsequent_indent="    ", break_long_words=False,
                          break_on_hyphens=False) or ["[sportray]"]
    print("\n".join(lines), file=sys.stderr, flush=True)


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m}:{s:02d} min"
    h, m = divmod(m, 60)
    return f"{h}:{m:02d} h"


class Stage:
    """One console line per stage: "[sportray] probe sets ... done in 26 s (detail)".

    The start is printed at once (so a long stage is never silent); the end completes the same
    line when nothing else was printed in between."""

    def __init__(self, what: str):
        self.what, self.detail = what, ""

    def __enter__(self) -> "Stage":
        self.t0 = time.monotonic()
        self.start = f"[sportray] {self.what} ..."
        print(self.start, end="", file=sys.stderr, flush=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        took = fmt_duration(time.monotonic() - self.t0)
        if exc_type is None:
            end = f" done in {took}"
            tail = f"; {self.detail}" if self.detail else ""
            if len(self.start + end + tail) > WIDTH:    # the detail on a line of its own
                tail = f"\n    {self.detail}"
            print(end + tail, file=sys.stderr, flush=True)
        else:
            print(f" failed after {took}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- trials

def recipe_name(config: dict, seed=None) -> str:
    """A trial's readable name from its searched values: "2x224 40st clip1 lr1e-3 s0"."""
    from sportray.tracking import short_key

    searched = {k: v for k, v in config.items() if not str(k).startswith("__")}
    order = ["views", "steps", "clip", "lr"]
    keys = sorted(searched, key=lambda k: (order.index(k) if k in order else len(order), k))
    key = " ".join(f"{k}={v:.3g}" if isinstance(v, float) and k != "clip" else f"{k}={v}" for k, v in
                   ((k, searched[k]) for k in keys))
    name = short_key(key)
    return f"{name} s{seed}" if seed is not None else name


class TrialNamer:
    """Tune's trial_name_creator: the recipe and the seed the trial will get (the Repeater's
    trial index picks the seed, as sweep._trainable does). Picklable (it is in tuner.pkl)."""

    def __init__(self, seeds):
        self.seeds = tuple(seeds)
        self.given: dict[str, int] = {}    # name -> times given: Optuna may propose a recipe twice

    def __call__(self, trial) -> str:
        cfg = dict(trial.config or {})
        seed = self.seeds[int(cfg.get("__trial_index__", 0)) % len(self.seeds)]
        name = recipe_name(cfg, seed)
        self.given[name] = self.given.get(name, 0) + 1
        return name if self.given[name] == 1 else f"{name} #{self.given[name]}"
