"""The Grafana dashboards against a real Prometheus: Debian's `prometheus` on 127.0.0.1 scrapes
a local Ray node's metrics endpoint while a tiny sweep runs on it, and every panel query of
dashboards/*.json (template variables filled as Grafana would: `.+` for "All", the trial
variable with a value of its own label query) is evaluated through Prometheus' HTTP API. Each
must return series at some point of the sweep -- the training panels while a trial trains,
the probe panels once trials are probed -- except the GPU panels on a machine without GPUs,
which must then be empty rather than wrong. `or vector(0)` fallbacks are stripped first, so a
panel cannot pass on its fallback alone.

Skipped without a `prometheus` binary (.ci/run installs Debian's, as it installs Chromium).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = os.environ.get("SPORTRAY_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"
pytestmark = pytest.mark.skipif(not Path(PROMETHEUS).exists(),
                                reason="no prometheus binary (Debian: apt-get install prometheus)")

FAST = ["--set", "steps=24", "--set", "views=2x32+2x16", "--set", "batch_size=4", "--set", "log_every=2",
        "--set", "checkpoint_every=24", "--set", "clip=1.0", "--set", "proj_dim=16",
        "--set", "sigreg_directions=16", "--set", "warmup_steps=1"]
GPU_ONLY = ("ray_node_gpus_utilization", "ray_node_gram_used", 'Name="GPU"')


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture
def cluster_cls(request):
    try:
        return request.getfixturevalue("local_ray_cluster")
    except pytest.FixtureLookupError:
        from test_cluster import LocalRayCluster
        return LocalRayCluster


@pytest.mark.slow
@pytest.mark.timeout(1800)   # a real sweep on a shared 2-core machine
def test_every_dashboard_query_returns_series_from_a_real_prometheus(tiny_synthetic, sweep_data_dir, tmp_path,
                                                                     cluster_cls):
    queries = panel_queries()
    assert len(queries) >= 30, queries
    t0 = time.monotonic()
    with cluster_cls(tmp_path / "cluster", nodes=1, cpus=2,
                     env={"RAY_metrics_report_interval_ms": "2000"}) as cluster:
        prom_port = _free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n"
            "scrape_configs:\n  - job_name: ray\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(f'127.0.0.1:{p}') for p in cluster.metrics_ports)}]\n")
        base = f"http://127.0.0.1:{prom_port}"
        prom_log = (tmp_path / "prometheus.log").open("w")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=prom_log, stderr=subprocess.STDOUT, start_new_session=True)
        sweep_log = tmp_path / "sweep.log"
        sweep = None
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(base + "/-/ready", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert prom.poll() is None and time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
                time.sleep(0.5)
            with sweep_log.open("w") as out:
                sweep = subprocess.Popen(
                    [sys.executable, str(ROOT / "sweeps" / "scratch_views.py"), "--address", cluster.address,
                     "--num-configs", "1", "--seeds", "0,1", "--data-dir", str(sweep_data_dir),
                     "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--storage", str(tmp_path / "runs"),
                     "--corpus", str(tiny_synthetic / "soccernet"), "--soccer-labels", str(tiny_synthetic / "soccernet"),
                     "--basketball", str(tiny_synthetic / "deepsportradar"), *FAST],
                    env=cluster.env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
                seen: dict[tuple[str, str, str], int] = {}
                trials: set[str] = set()
                deadline = time.monotonic() + 1500
                while time.monotonic() < deadline:
                    done = sweep.poll() is not None
                    for row in query(base, "ray_sportray_step"):
                        trials.add(row["metric"].get("trial", ""))
                    trial = sorted(trials)[0] if trials else "none"
                    for q in queries:
                        if not seen.get(q):
                            seen[q] = len(query(base, fill(q[2], trial)))
                    if done:
                        break
                    time.sleep(2)
                assert sweep.poll() == 0, sweep_log.read_text()[-3000:]
                time.sleep(5)   # one more scrape: the last trial's probe gauges
                for q in queries:
                    if not seen.get(q):
                        seen[q] = len(query(base, fill(q[2], trial)))
        finally:
            if sweep is not None and sweep.poll() is None:
                sweep.kill()
                sweep.wait(30)
            os.killpg(prom.pid, signal.SIGTERM)
            prom.wait(30)
            prom_log.close()

    gpu = any(query_ok for (d, t, e), query_ok in seen.items() if 'Name="GPU"' in e and query_ok)
    missing, gpu_panels = [], []
    for (dash, title, expr), n in seen.items():
        if any(g in expr for g in GPU_ONLY):
            gpu_panels.append((dash, title, n))
            continue
        if not n:
            missing.append(f"{dash} / {title}: {expr}")
    assert not missing, "panels whose query never returned a series:\n" + "\n".join(missing)
    assert len(trials) == 2, trials                                   # both seeds' gauges, by run name
    assert all(re.fullmatch(r".+ s[01]", t) for t in trials), trials
    print(f"\n[prometheus] {len(seen) - len(gpu_panels)} panel queries returned series; {len(gpu_panels)} GPU "
          f"panel queries {'returned series' if gpu else 'empty (no GPU here)'}; trials {sorted(trials)}; "
          f"{time.monotonic() - t0:.0f} s")
