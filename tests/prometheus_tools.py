"""A real Prometheus for the tests (Debian's `prometheus` binary; $SPORTRAY_PROMETHEUS overrides
the path): `PanelWatcher` starts one on 127.0.0.1 scraping Ray nodes' metrics endpoints and, in a
thread, evaluates every panel query of dashboards/*.json through Prometheus' HTTP API while a
sweep runs, remembering which returned series. test_cluster.py's two-node sweep uses it, so one
real sweep serves the cluster, dashboard and Prometheus checks.

Queries are filled as Grafana fills them (`.+` for "All"; the trial variable with a value of its
own label query) and `or vector(0)` fallbacks are stripped first, so a panel cannot pass on its
fallback alone.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = os.environ.get("SPORTRAY_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"
HAVE_PROMETHEUS = Path(PROMETHEUS).exists()
NO_PROMETHEUS = "no prometheus binary (Debian: apt-get install prometheus)"
# panels that only have series on a machine with GPUs
GPU_ONLY = ("ray_node_gpus_utilization", "ray_node_gram_used", 'Name="GPU"')


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) of every panel target, fallbacks removed."""
    out = []
    for f in sorted((ROOT / "dashboards").glob("*.json")):
        d = json.loads(f.read_text())
        for p in d.get("panels", []):
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f.stem, p.get("title", ""), re.sub(r"\s+or\s+vector\(0\)\s*$", "", t["expr"])))
    return out


def fill(expr: str, trial: str) -> str:
    """Template variables as Grafana fills them: "All" is a regex `.+`; $trial is one trial."""
    expr = expr.replace('trial="$trial"', f'trial="{trial}"')
    return expr.replace("$SessionName", ".+").replace("$arm", ".+").replace("$trial", ".+")


def query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PanelWatcher:
    """`with PanelWatcher(workdir, metrics_ports) as w: ...run a sweep...`; then `w.seen`
    ({(dashboard, title, expr): most series any evaluation returned}) and `w.trials` (the trial
    labels of ray_sportray_step). Scrapes and evaluates every second, and once more as the block
    ends (leave a few seconds after the sweep for the last trial's probe gauges)."""

    def __init__(self, workdir: Path, metrics_ports: list[int]):
        self.workdir, self.ports = Path(workdir), metrics_ports
        self.queries = panel_queries()
        self.seen: dict[tuple[str, str, str], int] = {q: 0 for q in self.queries}
        self.trials: set[str] = set()
        self.error: BaseException | None = None
        self.base = ""
        self._stop = threading.Event()

    def __enter__(self) -> "PanelWatcher":
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: ray\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(f'127.0.0.1:{p}') for p in self.ports)}]\n")
        self.base = f"http://127.0.0.1:{port}"
        self._log = (self.workdir / "prometheus.log").open("w")
        self._proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{port}"],
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._shutdown()
                raise RuntimeError("prometheus did not start: " + (self.workdir / "prometheus.log").read_text()[-2000:])
            time.sleep(0.5)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def evaluate(self) -> None:
        for row in query(self.base, "ray_sportray_step"):
            self.trials.add(row["metric"].get("trial", ""))
        trial = sorted(self.trials)[0] if self.trials else "none"
        for q in self.queries:
            if not self.seen[q]:
                self.seen[q] = len(query(self.base, fill(q[2], trial)))

    def _run(self) -> None:
        while not self._stop.wait(1):
            try:
                self.evaluate()
            except BaseException as exc:   # the test reports it; the sweep goes on
                self.error = exc
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        try:
            if self.error is None:
                self.evaluate()
        except BaseException as e:
            self.error = e
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        os.killpg(self._proc.pid, signal.SIGTERM)
        self._proc.wait(30)
        self._log.close()
