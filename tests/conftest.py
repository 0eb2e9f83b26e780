"""Shared fixtures and helpers, each made once per test session: one Ray session (`ray_session`:
ray.init costs ~5 s here), one small synthetic corpus in the real formats, one tiny frame store,
one data dir for the sweeps, an MLflow schema template, and `local_ray_cluster` (LocalRayCluster:
Ray nodes of their own as subprocesses, for tests that need a node's metrics endpoint, a
dashboard or a second node).

Markers: `slow` marks what must stay slow (a real sweep, a real Train run, a cluster of its own);
`pytest -m "not slow"` is the quick loop, `pytest -q` (CI) runs everything.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 configure_logging=False, dashboard_host="127.0.0.1")
    yield ray
    # left running for the rest of the session; pytest exit shuts it down


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic corpus: a few short games and arenas (the real layouts and formats)."""
    from sportray.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic(root, seed=0, **TINY)


@pytest.fixture(scope="session")
def sweep_data_dir(tmp_path_factory):
    """One --data-dir for the sweep tests: frame stores and probe sets are content-addressed, so
    every sweep after the first on the same corpus reuses them instead of decoding again."""
    return tmp_path_factory.mktemp("sweep-data")


@pytest.fixture(scope="session")
def store(ray_session, tmp_path_factory):
    """A tiny frame store in the real format (96 smooth random frames, frames.write_store) for the
    Ray Train tests."""
    from sportray.data import frames as fr

    root = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(0)
    n = 96
    # smooth random images (a learnable structure beyond noise): low-res noise upsampled
    low = rng.integers(0, 255, (n, 14, 25, 3), dtype=np.uint8)
    imgs = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)[:, :fr.FRAME_H, :fr.FRAME_W]
    return fr.write_store(root / "store", np.ascontiguousarray(imgs), key="test")


TINY = dict(n_games=4, half_s=12, n_arenas=4, images_per_arena=6)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store with its schema: the migration (~8 s) runs once per session and
    `fresh_mlflow_store` copies the file."""
    from sportray import tracking

    template = tmp_path_factory.getbasetemp() / "mlflow-template.db"
    tracking.connect(f"sqlite:///{template}")
    return template


@pytest.fixture(scope="session")
def mlflow_db_at(mlflow_template):
    """mlflow_db_at(path) -> sqlite URI of an MLflow store at `path`, its schema already there
    (a copy of the template): no migration per test, and no two processes migrating one new
    file at once (a test that polls the store a sweep writes)."""
    def make(path) -> str:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mlflow_template, path)
        return f"sqlite:///{path}"
    return make


@pytest.fixture(scope="session")
def fresh_mlflow_store(tmp_path_factory, mlflow_db_at):
    """fresh_mlflow_store(name) -> sqlite URI of a new MLflow store in a new folder."""
    return lambda name: mlflow_db_at(tmp_path_factory.mktemp(name) / "mlflow.db")


@pytest.fixture(scope="session")
def local_ray_cluster():
    """The LocalRayCluster class: `with local_ray_cluster(workdir, nodes=2) as cluster: ...`."""
    return LocalRayCluster


ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


# ----------------------------------------------------------------------------- a local cluster

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterStartError(RuntimeError):
    pass


class LocalRayCluster:
    """Ray nodes as `ray start --block` subprocesses on this machine.

    nodes: how many (1 head + nodes-1 workers), each with `cpus` CPUs. dashboard: run the
    dashboard head on 127.0.0.1:<free port> (`self.dashboard_url`). auth: "token" (Ray 2.60's
    default; a fresh token in the work dir, handed to every process via RAY_AUTH_TOKEN_PATH)
    or "disabled". env: extra environment for the nodes and for `run_python` clients.
    """

    def __init__(self, workdir: Path, *, nodes: int = 1, cpus: int = 1, dashboard: bool = False,
                 auth: str = "token", env: dict | None = None, start_timeout_s: float = 180):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes, self.cpus, self.dashboard, self.auth = nodes, cpus, dashboard, auth
        self.start_timeout_s = start_timeout_s
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.temp_dir = ""
        self.port = 0
        self.dashboard_url = ""
        self.metrics_ports: list[int] = []
        self.token = ""
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        self.env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
                         "RAY_AUTH_MODE": auth, "RAY_DEDUP_LOGS": "0",
                         "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"})
        if auth == "token":
            from ray._private.authentication.authentication_token_generator import (
                generate_new_authentication_token)
            self.token = generate_new_authentication_token()
            token_file = self.workdir / "auth_token"
            token_file.write_text(self.token)
            token_file.chmod(0o600)  # the cluster's password: owner only
            self.env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
        self.env.update(env or {})

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- start / stop
    def start(self, attempts: int = 4) -> "LocalRayCluster":
        """Start the head, then the other nodes. On a loaded machine a node can die while
        starting (its raylet gives the dashboard agent ~30 s to come up): that node alone is
        started again, up to `attempts` times."""
        # A short temp dir: Ray's socket paths must stay under 107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="sr-", dir="/tmp")
        self.metrics_ports = []
        try:
            self._start_node("head", self._head_args, attempts)
            for i in range(1, self.nodes):
                self._start_node(f"node{i}", lambda: ["--address", self.address], attempts)
        except BaseException:
            self.stop()
            raise
        return self

    def _head_args(self) -> list[str]:
        self.port = free_port()
        args = ["--head", "--port", str(self.port), "--temp-dir", self.temp_dir,
                "--ray-client-server-port", str(free_port())]
        if self.dashboard:
            dport = free_port()
            self.dashboard_url = f"http://127.0.0.1:{dport}"
            return args + ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                           "--dashboard-port", str(dport)]
        return args + ["--include-dashboard", "false", "--dashboard-port", str(free_port())]

    def _start_node(self, name: str, make_args, attempts: int) -> None:
        errors = []
        for _ in range(attempts):
            mport = free_port()
            cmd = [RAY, "start", "--block", "--num-cpus", str(self.cpus), "--disable-usage-stats",
                   "--metrics-export-port", str(mport), "--dashboard-agent-listen-port", str(free_port()),
                   "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
                   *make_args()]
            log = self.workdir / f"{name}-{len(self.logs)}.log"
            self.logs.append(log)
            with log.open("w") as out:
                proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=self.workdir)
            deadline = time.monotonic() + self.start_timeout_s
            while time.monotonic() < deadline and proc.poll() is None:
                text = log.read_text(errors="replace")
                if "block forever" in text or "Ray runtime started" in text:
                    self.procs.append(proc)
                    self.metrics_ports.append(mport)
                    return
                time.sleep(0.5)
            text = log.read_text(errors="replace")
            errors.append(f"{name}: {'exited ' + str(proc.returncode) if proc.poll() is not None else 'timed out'}; "
                          f"log {log}: {text.strip().splitlines()[-1] if text.strip() else ''}")
            self._terminate([proc])
            if name == "head":  # nothing else runs in this temp dir yet
                self._kill_leftovers(self.temp_dir)
        raise ClusterStartError("could not start a local Ray cluster:\n" + "\n".join(errors))

    def stop(self) -> None:
        self._terminate(list(reversed(self.procs)))  # workers first, the head last
        self.procs = []
        if self.temp_dir:
            self._kill_leftovers(self.temp_dir)
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = ""

    @staticmethod
    def _kill_leftovers(temp_dir: str) -> None:
        """Ray processes of a node whose `ray start` died while starting, found by this
        cluster's own --temp-dir in their command line (no other process has it)."""
        import psutil

        left = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(temp_dir in arg for arg in (p.info["cmdline"] or [])):
                    p.kill()
                    left.append(p)
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)

    @staticmethod
    def _terminate(procs: list[subprocess.Popen]) -> None:
        """SIGTERM our `ray start --block` processes (each stops the Ray processes it started),
        then SIGKILL whatever is left of their process trees."""
        import psutil

        tree: list[psutil.Process] = []
        for proc in procs:
            try:
                tree += psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                pass
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        _gone, alive = psutil.wait_procs(tree, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients
    def run_python(self, code: str, timeout: float = 180, args: list[str] = ()) -> subprocess.CompletedProcess:
        """Run `code` in a fresh interpreter with the cluster's environment (a Ray client must
        not share the test process, which may hold another Ray session)."""
        return subprocess.run([sys.executable, "-c", code, *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def run(self, cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def logs_tail(self, n: int = 2000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}" for p in self.logs if p.exists())
