"""The edge: every command-line option and config field is checked here before Ray starts,
before anything is created on disk, and before any trial runs.

A bad value raises ConfigError with one line naming the flag (or file) and the value; the entry
points (`sportray ...`, `python sweeps/*.py`) print it as `PROG: error: ...` and exit 2
(:func:`run_edge`). docs/bad-input.md lists the cases; tests/test_bad_input.py pins each one.

What needs the cluster (resources, node count) is checked right after Ray starts and before the
first trial: :func:`check_resources`, :func:`check_multi_host`, :func:`check_data_fits`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import socket
import sys
import typing
from pathlib import Path
from typing import Callable, Iterable, Mapping

from sportray.config import ConfigError

EXIT_BAD_INPUT = 2
ADDRESS_TIMEOUT_S = 5.0


# ----------------------------------------------------------------------------- paths

def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_dir(flag: str, path: str) -> None:
    """`path` is (or can be made as) a folder sportray may write into. Creates nothing."""
    if not path or "://" in str(path):
        return
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{flag} {path}: is a file, not a folder")
    base = _nearest_existing(target)
    if not base.is_dir():
        raise ConfigError(f"{flag} {path}: {base} is a file, so no folder can be made below it")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {base} is not writable (permissions or a read-only filesystem)")


def check_writable_file(flag: str, path: str) -> None:
    """A file sportray will create: its folder must exist (or be creatable) and be writable."""
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder, not a file")
    check_writable_dir(flag, str(target.parent))


def _protected(path: Path) -> str:
    """Why writing a store into `path` would endanger other files ('' when it would not)."""
    resolved = path.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if resolved == Path("/"):
        return "it is the filesystem root"
    if resolved == home:
        return "it is your home folder"
    if resolved == cwd or resolved in cwd.parents:
        return "it is the working directory or one of its parents"
    return ""


def check_store_dir(flag: str, path: str) -> None:
    """A frame store folder given by the user (`frames --out`, `pretrain --store`): either a
    sportray store (has manifest.json), or empty/new. sportray never writes into, or replaces,
    a folder holding anything else: that folder is someone's data."""
    if not path or "://" in str(path):
        return
    target = Path(path).expanduser().absolute()
    why = _protected(target)
    if why:
        raise ConfigError(f"{flag} {path}: refusing to use it as a frame store folder ({why}); "
                          f"give a new folder, e.g. {flag} ./my-store")
    if target.exists():
        if not target.is_dir():
            raise ConfigError(f"{flag} {path}: is a file, not a folder")
        if not (target / "manifest.json").is_file() and any(target.iterdir()):
            raise ConfigError(f"{flag} {path}: a non-empty folder that is not a sportray frame store (no "
                              "manifest.json); sportray will not write into it. Give a new or empty folder")
        return
    check_writable_dir(flag, str(target))


def check_tracking_uri(uri: str) -> None:
    """sqlite:///PATH: the folder must exist (MLflow would create a typo'd one silently)."""
    if not uri:
        raise ConfigError("--tracking-uri '': expected a URI, e.g. sqlite:///mlflow.db or http://HOST:5000")
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        db = Path(uri[len("sqlite:///"):]).expanduser().absolute()
        if db.is_dir():
            raise ConfigError(f"--tracking-uri {uri}: {db} is a folder, not a database file")
        if not db.parent.is_dir():
            raise ConfigError(f"--tracking-uri {uri}: folder {db.parent} does not exist (a typo? create it "
                              "first: sportray does not invent folders for the tracking database)")
        if not os.access(db.parent, os.W_OK | os.X_OK):
            raise ConfigError(f"--tracking-uri {uri}: folder {db.parent} is not writable")
    elif "://" not in uri and not uri.startswith(("databricks", "file:")):
        # a bare path: MLflow's file store, the same folder rule
        check_writable_dir("--tracking-uri", uri)


def check_storage(storage: str) -> str:
    """--storage: a local folder that can be made, or an object-store URI (refused: untested)."""
    if not storage:
        raise ConfigError("--storage '': expected a folder (shared by every node on a cluster)")
    if "://" in storage:
        scheme = storage.split("://", 1)[0].lower()
        if scheme == "file":
            storage = storage[len("file://"):]
        else:
            raise ConfigError(
                f"--storage {storage}: {scheme}:// URIs are not supported by sportray yet (its storage "
                "handling is only tested on folders). Mount the bucket (s3fs, mountpoint-s3, gcsfuse) at "
                "the same path on every node and pass that path, e.g. --storage /mnt/shared/sportray-runs")
    check_writable_dir("--storage", storage)
    return storage


def check_count(flag: str, value, minimum: int = 1) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{flag} {value}: must be an integer >= {minimum}")


# ----------------------------------------------------------------------------- --set FIELD=VALUE

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_set(items: list[str], cls) -> dict:
    """--set FIELD=VALUE for a config dataclass: known field, value of its type, finite numbers,
    an explicit boolean (`compile=maybe` is refused, not read as False)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item}: expected FIELD=VALUE, e.g. --set batch_size=64")
        if name not in fields:
            raise ConfigError(f"--set {item}: unknown field {name!r} (fields: {', '.join(fields)})")
        if name in out:
            raise ConfigError(f"--set {item}: {name} is set twice")
        kind = hints[name]
        if kind is bool:
            if value.lower() not in _TRUE + _FALSE:
                raise ConfigError(f"--set {item}: {value!r} is not a boolean (true/false)")
            out[name] = value.lower() in _TRUE
            continue
        try:
            parsed = kind(value)
        except ValueError:
            raise ConfigError(f"--set {item}: {value!r} is not a {kind.__name__}") from None
        if kind is float and not math.isfinite(parsed):
            raise ConfigError(f"--set {item}: {value!r} is not a finite number")
        out[name] = parsed
    return out


# ----------------------------------------------------------------------------- the cluster

def check_address(address: str | None, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """--address HOST:PORT or ray://HOST:PORT: something must answer there, within `timeout`
    seconds (Ray itself retries for a long time and prints only its C++ connection errors)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    if "://" in hostport:
        raise ConfigError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        default = 10001 if address.startswith("ray://") else 6379
        host, port = hostport, str(default)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise ConfigError(f"--address {address}: no Ray cluster answers at {host}:{port} ({reason}); start "
                          "one with `ray start --head` or leave --address out to run locally") from None


def check_resources(cfg, resources: Mapping[str, float] | None = None,
                    nodes: Iterable[Mapping] | None = None) -> None:
    """What one trial asks for (workers x GPUs/CPUs per worker) must exist on the cluster, or Ray
    waits for it forever. Called after Ray starts, before the first trial."""
    if resources is None or nodes is None:
        import ray
        resources = ray.cluster_resources() if resources is None else resources
        nodes = ray.nodes() if nodes is None else nodes
    alive = [n for n in nodes if n.get("Alive", n.get("alive", True))]
    gpus_total = float(resources.get("GPU", 0))
    if cfg.gpus_per_worker > 0:
        need = cfg.gpus_per_worker * cfg.workers
        if gpus_total <= 0:
            raise ConfigError(f"--gpus-per-worker {cfg.gpus_per_worker}: this Ray cluster has no GPU; use "
                              "--gpus-per-worker 0 (CPU) or join a cluster with GPUs (--address)")
        if need > gpus_total:
            raise ConfigError(f"--gpus-per-worker {cfg.gpus_per_worker} x --workers {cfg.workers} = {need:g} "
                              f"GPUs, but this Ray cluster has {gpus_total:g}; use fewer workers")
        biggest = max((float(n.get("Resources", {}).get("GPU", 0)) for n in alive), default=gpus_total)
        if cfg.gpus_per_worker > biggest:
            raise ConfigError(f"--gpus-per-worker {cfg.gpus_per_worker}: no node has that many GPUs "
                              f"(the largest has {biggest:g})")
    cpus_total = float(resources.get("CPU", 0))
    biggest_cpu = max((float(n.get("Resources", {}).get("CPU", 0)) for n in alive), default=cpus_total)
    if cfg.cpus_per_worker > biggest_cpu:
        raise ConfigError(f"--cpus-per-worker {cfg.cpus_per_worker}: no node of this Ray cluster has that "
                          f"many CPUs (the largest has {biggest_cpu:g})")
    if cfg.cpus_per_worker * cfg.workers > cpus_total:
        raise ConfigError(f"--cpus-per-worker {cfg.cpus_per_worker} x --workers {cfg.workers} = "
                          f"{cfg.cpus_per_worker * cfg.workers:g} CPUs, but this Ray cluster has "
                          f"{cpus_total:g}; use fewer workers or fewer CPUs per worker")


def check_data_fits(frames: int, cfg, max_frames: int = 0, store: str = "") -> None:
    """The store must hold at least one step's global batch (batch_size x workers), or every
    trial fails minutes later with an empty shard. The message says what to change."""
    usable = min(frames, max_frames) if max_frames else frames
    need = cfg.batch_size * cfg.workers
    if usable < need:
        used = f" (--max-frames {max_frames})" if max_frames and max_frames < frames else ""
        raise ConfigError(
            f"frame store {store or '?'} holds {usable} usable frames{used}, fewer than one step's global "
            f"batch of --batch-size {cfg.batch_size} x --workers {cfg.workers} = {need}: use "
            f"--batch-size {max(1, usable // cfg.workers)} or fewer workers, or more frames (a smaller "
            "--every-s, a bigger corpus)")


def is_multi_host(nodes: Iterable[Mapping] | None = None) -> bool:
    from sportray.storage import _alive_nodes
    alive = _alive_nodes(nodes)
    return len({n.get("NodeManagerAddress") or n.get("node_ip") for n in alive}) > 1


def check_multi_host(tracking_uri: str, paths: Mapping[str, str], *, nodes: Iterable[Mapping] | None = None,
                     mounts_text: str | None = None) -> None:
    """On a cluster of several hosts: no sqlite tracking (each node would write its own
    database) and every data path on a shared filesystem (the rule of storage.py)."""
    if not is_multi_host(nodes):
        return
    if tracking_uri.startswith("sqlite:") or ("://" not in tracking_uri and not tracking_uri.startswith("http")):
        raise ConfigError(
            f"--tracking-uri {tracking_uri}: this Ray cluster spans several hosts and each would write its "
            "own sqlite database (results split silently). Run an MLflow server on the head (see README, "
            "'On a cluster') and pass --tracking-uri http://HEAD:5000")
    from sportray.storage import _is_network_fs, mount_of
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text()
        except OSError:
            mounts_text = ""
    for flag, value in paths.items():
        if not value or "://" in value:
            continue
        real = os.path.realpath(os.path.abspath(os.path.expanduser(value)))
        point, fstype = mount_of(real, mounts_text)
        if not _is_network_fs(fstype):
            raise ConfigError(
                f"{flag} {value}: this Ray cluster spans several hosts, but {real} is on a node-local "
                f"filesystem ({fstype} at {point}), so trials on other nodes would not find it. Put it on a "
                "filesystem mounted at the same path on every node (NFS/EFS, Lustre) and pass that path")


# ----------------------------------------------------------------------------- entry points

def one_line(err: BaseException) -> str:
    """An error as the single line the user reads: the file for an OSError, no traceback."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


BAD_INPUT_ERRORS = ("TrackingError", "WeightsError", "CheckpointError")  # by name: no torch/mlflow import


def is_bad_input(err: BaseException) -> bool:
    from sportray.data.errors import DataError

    if isinstance(err, (ConfigError, DataError, OSError, ValueError)):
        return True
    return any(c.__name__ in BAD_INPUT_ERRORS for c in type(err).__mro__)


class OneLineParser(argparse.ArgumentParser):
    """argparse's refusals (an unknown option, a value of the wrong type) as one line and exit 2,
    like every other bad input: no usage block above it (--help has that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def run_edge(prog: str, fn: Callable[[], int]) -> int:
    """Run an entry point; bad input (ConfigError, DataError, TrackingError, WeightsError,
    CheckpointError, OSError, ValueError) becomes `PROG: error: ...` on one line and exit 2."""
    try:
        return fn()
    except Exception as err:
        if not is_bad_input(err):
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
