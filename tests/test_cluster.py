"""The cluster face of sportray: cluster.yaml as `ray up` would check it, the shared-storage
rule, and a real two-node Ray cluster on this machine running a tiny sweep end to end (two
trials; four with SPORTRAY_CLUSTER_TRIALS=4), looked at the way a person would: with Chromium
(see browser_tools.py), the Ray dashboard's actors and jobs pages while the trials train, then
the MLflow compare view of the trained trials (the screenshots go where test_browser.py's do);
and through a real Prometheus scraping the nodes (prometheus_tools.py), every Grafana panel.
One sweep serves all of them: a sweep is minutes of this 2-core machine.

The nodes come from conftest.py's `local_ray_cluster` fixture (`LocalRayCluster`, also used by
test_metrics.py and test_browser.py): `ray start --block` subprocesses with their own --temp-dir,
ports and auth token, never touching another Ray session on the machine. Never `ray stop`.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import prometheus_tools as pt
import pytest
import yaml
from browser_tools import HAVE_CHROMIUM, NO_CHROMIUM

from sportray.config import ConfigError
from sportray.storage import check_shared_storage, mount_of

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- cluster.yaml

def _cluster_config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _readme_install_line() -> str:
    """The README's install: the steps its two commands (run, test) share, set-up included."""
    text = (ROOT / "README.md").read_text()
    commands = [[part.strip() for part in line.split("&&")]
                for block in re.findall(r"```bash\n(.*?)```", text, re.S)
                for line in block.splitlines() if "pip install" in line and "&&" in line]
    assert len(commands) >= 2, commands
    shared = []
    for parts in zip(*commands):
        if len(set(parts)) > 1:
            break
        shared.append(parts[0])
    assert shared and shared[0].startswith("python3 -m venv"), commands
    return " && ".join(shared)


def test_cluster_yaml_validates_like_ray_up():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _cluster_config()
    assert cfg["provider"]["type"] == "aws"
    validate_config(prepare_config(cfg))  # schema + node-type sums, what `ray up` checks first


def test_cluster_yaml_installs_as_the_readme_and_has_4_gpu_workers():
    from ray.autoscaler._private.util import prepare_config

    cfg = prepare_config(_cluster_config())
    install = _readme_install_line()
    assert install == "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'"
    assert any(install in cmd for cmd in cfg["setup_commands"]), (install, cfg["setup_commands"])
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    gpu = [v for v in workers.values() if v["resources"].get("GPU") == 4]
    assert gpu, workers
    assert all(v["max_workers"] > v.get("min_workers", 0) for v in gpu)   # autoscaling
    assert head["resources"].get("GPU", 0) == 0                            # trials never land on the head
    # Ray from the project's venv, token auth on every node, the dashboard on loopback only.
    head_start = " ".join(cfg["head_start_ray_commands"])
    worker_start = " ".join(cfg["worker_start_ray_commands"])
    assert ".venv/bin/ray start --head" in head_start and ".venv/bin/ray start --address" in worker_start
    assert "RAY_AUTH_MODE=token" in head_start and "RAY_AUTH_MODE=token" in worker_start
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    # MLflow on the head, never on all interfaces; our dashboards beside Ray's.
    assert "mlflow server" in head_start and "0.0.0.0" not in head_start
    assert "RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR" in head_start and "dashboards/*.json" in head_start
    assert "boto3" in " ".join(cfg["head_setup_commands"])


# ----------------------------------------------------------------------------- shared storage

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw 0 0
fs-1.efs.us-west-2.amazonaws.com:/ /mnt/shared nfs4 rw,vers=4.1 0 0
s3fs /mnt/bucket fuse.s3fs rw 0 0
lustre@tcp:/fsx /fsx lustre rw 0 0
/dev/nvme1n1 /mnt/shared/local ext4 rw 0 0
//nas/runs /mnt/my\\040runs cifs rw 0 0
"""


def _nodes(*ips, dead=()):
    return [{"Alive": True, "NodeManagerAddress": ip} for ip in ips] + \
           [{"Alive": False, "NodeManagerAddress": ip} for ip in dead]


@pytest.mark.parametrize("storage", ["s3://bucket/sportray-runs", "gs://b/runs", "/mnt/shared/runs",
                                     "file:///mnt/shared/runs", "/mnt/bucket/x", "/fsx/runs",
                                     "/mnt/my runs/sweep"])
def test_shared_storage_accepts_uris_and_network_filesystems(storage):
    check_shared_storage(storage, nodes=_nodes("10.0.0.1", "10.0.0.2"), mounts_text=MOUNTS)


@pytest.mark.parametrize("storage", ["sportray-runs", "/tmp/runs", "/mnt/shared/local/runs", "file:///tmp/runs"])
def test_shared_storage_refuses_node_local_paths_on_a_multi_host_cluster(storage):
    with pytest.raises(ConfigError) as ei:
        check_shared_storage(storage, nodes=_nodes("10.0.0.1", "10.0.0.2", "10.0.0.3"), mounts_text=MOUNTS)
    msg = str(ei.value)
    assert msg.startswith(f"--storage {storage}:") and "3 nodes on 3 hosts" in msg
    assert "s3://" in msg and "NFS" in msg  # names the fix


def test_shared_storage_allows_local_paths_on_one_host():
    # one node; several nodes of one host (the two-node test cluster); dead nodes don't count
    check_shared_storage("/tmp/runs", nodes=_nodes("10.0.0.1"), mounts_text=MOUNTS)
    check_shared_storage("/tmp/runs", nodes=_nodes("192.0.2.2", "192.0.2.2"), mounts_text=MOUNTS)
    check_shared_storage("/tmp/runs", nodes=_nodes("10.0.0.1", dead=["10.0.0.2"]), mounts_text=MOUNTS)


def test_mount_of_picks_the_longest_mount_point():
    assert mount_of("/mnt/shared/local/x", MOUNTS) == ("/mnt/shared/local", "ext4")
    assert mount_of("/mnt/shared/x", MOUNTS) == ("/mnt/shared", "nfs4")
    assert mount_of("/mnt/sharedx", MOUNTS) == ("/", "ext4")
    assert mount_of("/mnt/my runs/a", MOUNTS) == ("/mnt/my runs", "cifs")


# ----------------------------------------------------------------------------- two nodes, one sweep

CHECK_NODES = r"""
import json, sys, time, ray
from sportray.storage import check_shared_storage
ray.init(address=sys.argv[1], logging_level="ERROR")
for _ in range(120):
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2:
        break
    time.sleep(1)
check_shared_storage(sys.argv[2])      # two nodes, one host: a local path is allowed
print(json.dumps({"alive": len(alive), "ips": sorted({n["NodeManagerAddress"] for n in alive}),
                  "cpus": ray.cluster_resources().get("CPU")}))
"""


class MetricsWatcher:
    """Scrapes the nodes' metrics endpoints every 2 s in a thread; remembers every
    ray_sportray_* name seen, and the trials whose probe gauge (basketball_iou) was seen."""

    def __init__(self, ports: list[int]):
        import threading

        self.ports, self.seen, self.probed = ports, set(), set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def scrape(self) -> None:
        import urllib.request

        for port in self.ports:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                continue
            self.seen |= set(re.findall(r"^(ray_sportray_[a-z0-9_]+)\{", text, re.M))
            self.probed |= set(re.findall(r'^ray_sportray_basketball_iou\{.*?trial="([^"]*)"', text, re.M))

    def _run(self) -> None:
        while not self._stop.wait(2):
            self.scrape()

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(10)
        self.scrape()
        return self.seen


# The sweep of the two-node test: two recipes (2x224 vs 2x224+6x96 views, the sweep's
# question), 4 steps each, training at once on the 2 CPUs. SPORTRAY_CLUSTER_TRIALS=4 adds seed 1
# (4 trials, as the README's demo; what docs/screenshots show) at ~4 more minutes on 2 cores:
# every trial's Train controller, worker, helpers and probe are CPU time whatever the steps.
SWEEP_TRIALS = int(os.environ.get("SPORTRAY_CLUSTER_TRIALS", "2"))
assert SWEEP_TRIALS in (2, 4), "SPORTRAY_CLUSTER_TRIALS: 2 or 4"
SWEEP_ARGS = ["--num-configs", "2", "--seeds", "0" if SWEEP_TRIALS == 2 else "0,1",
              "--set", "steps=4", "--set", "batch_size=4", "--set", "log_every=2", "--set", "checkpoint_every=4",
              # all trials at once: run_sweep fits (CPUs - 1 spare) // cpus_per_worker trials
              "--set", f"cpus_per_worker={0.45 if SWEEP_TRIALS == 2 else 0.2}"]
# Whichever of the module's sweep tests runs first pays for the fixture's sweep (pytest-timeout
# counts setup too): ~3-5 min on an idle 2-core machine, far more on a busy one.
SWEEP_TIMEOUT_S = 1800
# What the dashboard's actors page shows of a training trial (Ray 2.60, Train v2 under Tune):
# Tune's trial actor (class ImplicitFunc, repr "_trainable"), its Train controller and the
# training worker (DDP rank 0 of the trial's TorchTrainer).
TRIAL_ACTORS = ("ImplicitFunc", "TrainController", "RayTrainWorker")


@dataclass
class SweepRun:
    """What the two-node test's fixture leaves for its tests (the cluster is gone by then)."""
    workdir: Path
    db: Path
    info: dict
    returncode: int
    output: str
    seen: set
    probed: set
    t_up: float
    t_sweep: float
    t_total: float
    logs_tail: str
    dashboard: dict | Exception | None   # what watch_dashboard saw; None without Chromium
    mlflow_url: str                      # `mlflow ui` on the store, up until the module's tests end
    panels: "pt.PanelWatcher | None"     # Prometheus' view of the panels; None without prometheus


def watch_dashboard(cluster, sweep: subprocess.Popen, workdir: Path, want_workers: int) -> dict:
    """While the sweep's trials train: the dashboard's actors and jobs pages in headless
    Chromium (through the token-adding proxy), screenshots in the artifacts dir.

    The actors page lists 10 actors a page, ALIVE first and newest first; a sweep has ~20
    alive (per trial: Tune's actor, Train's controller, worker, and helpers; Ray Data's), so,
    like a person, the page size is raised to see them all."""
    import browser_tools as bt

    base, token = cluster.dashboard_url, cluster.token
    assert bt.wait_http(base + "/api/version", timeout=180, headers={"Authorization": f"Bearer {token}"}) == 200

    def training() -> list[dict]:
        return [a for a in bt.dashboard_actors(base, token)
                if a["class_name"] == "RayTrainWorker" and a["state"] == "ALIVE"]

    def wait_for_training(t_max: float) -> tuple[list[dict], float]:
        """Until a trial trains, then (up to t_max s) for the others to join it."""
        t0, first, workers = time.monotonic(), None, []
        while sweep.poll() is None and time.monotonic() - t0 < 600:
            workers = training()
            if workers and first is None:
                first = time.monotonic()
            if workers and (len(workers) >= want_workers or time.monotonic() - first > t_max):
                break
            time.sleep(1)
        assert sweep.poll() is None, "the sweep ended before a trial was seen training"
        assert first is not None, "no RayTrainWorker came ALIVE within 600 s"
        return workers, time.monotonic() - t0

    workers, t_wait = wait_for_training(45)
    art = bt.artifacts_dir()
    actors_png, jobs_png = art / "ray_dashboard_sweep_actors.png", art / "ray_dashboard_sweep_jobs.png"
    proxy, purl = bt.token_proxy(base, token)
    try:
        with bt.Page(workdir / "chromium", width=1600, height=1000) as page:
            for attempt in range(3):   # a trial can finish training while the page loads: look again
                if attempt == 0:
                    page.goto(purl + "/#/actors")
                else:
                    page.reload()
                page.wait_for("/ALIVE\\s*x\\s*\\d/.test(document.body.innerText)")  # the state counter: loaded
                page.eval("""[...document.querySelectorAll('.MuiTextField-root')]
                    .find(t => t.querySelector('label')?.textContent === 'Page Size')
                    .setAttribute('data-sportray', 'page-size')""")
                page.type_into("[data-sportray=page-size] input", "30")
                page.wait_for(" && ".join(f"document.body.innerText.includes('{c}')" for c in TRIAL_ACTORS))
                rows = page.eval("[...document.querySelectorAll('tbody tr')].map(r => r.innerText)")
                alive = [row for row in rows if "ALIVE" in row]
                if all(any(c in row for row in alive) for c in TRIAL_ACTORS) or attempt == 2:
                    break
                workers, _ = wait_for_training(0)
            actors_text = page.text()
            page.screenshot(actors_png, max_height=3600)
            alive_then = {a["class_name"] for a in bt.dashboard_actors(base, token) if a["state"] == "ALIVE"}
            page.goto(purl + "/#/jobs")
            page.wait_for("document.body.innerText.includes('scratch_views.py')")
            jobs_text = page.text()
            page.screenshot(jobs_png, full_page=False)
    finally:
        proxy.shutdown()
    return {"actors_text": actors_text, "actor_rows": rows, "jobs_text": jobs_text,
            "alive_then": alive_then, "workers_seen": len(workers), "t_wait": t_wait,
            "still_running": sweep.poll() is None, "screenshots": [actors_png, jobs_png]}


def _run_sweep(cluster, tmp: Path, runs: Path, db: Path, synth: Path, data_dir: Path):
    """The README's sweep script, joining the cluster with --address; (process, its log)."""
    log_path = tmp / "sweep.out"
    with log_path.open("w") as log:
        sweep = subprocess.Popen(
            [sys.executable, "sweeps/scratch_views.py", "--address", cluster.address, *SWEEP_ARGS,
             "--data-dir", str(data_dir), "--tracking-uri", f"sqlite:///{db}", "--storage", str(runs),
             "--corpus", str(synth / "soccernet"), "--soccer-labels", str(synth / "soccernet"),
             "--basketball", str(synth / "deepsportradar")],
            env=cluster.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return sweep, log_path


@pytest.fixture(scope="module")
def two_node_sweep(tmp_path_factory, tiny_synthetic, sweep_data_dir, local_ray_cluster, mlflow_db_at) -> SweepRun:
    """Head + a second node (`ray start --address`, token auth), then the README's sweep script
    joins with --address and trains SWEEP_TRIALS trials into MLflow; the nodes' metrics
    endpoints are watched throughout and, with Chromium, the Ray dashboard is looked at while
    the trials train, and `mlflow ui` is started on the store (the sweep mostly waits on Ray;
    the server's start hides in it) for test_mlflow_compare_view_of_the_trained_sweep."""
    import browser_tools as bt

    tmp = tmp_path_factory.mktemp("two-node")
    t0 = time.monotonic()
    runs, db = tmp / "runs", tmp / "m.db"
    dashboard: dict | Exception | None = None
    mlflow_url = ""
    mlflow_db_at(db)   # the schema, before the server opens the file
    with contextlib.ExitStack() as stack:
        if bt.HAVE_CHROMIUM:
            mlflow_url = stack.enter_context(bt.mlflow_ui(f"sqlite:///{db}", tmp / "mlflow-ui.log", wait=False))
        with local_ray_cluster(tmp / "cluster", nodes=2, cpus=1, dashboard=bt.HAVE_CHROMIUM,
                               env={"RAY_metrics_report_interval_ms": "2000"}) as cluster:
            t_up = time.monotonic() - t0
            watcher = MetricsWatcher(cluster.metrics_ports)
            # a real Prometheus on the same endpoints evaluates every Grafana panel's query
            with (pt.PanelWatcher(tmp / "prometheus", cluster.metrics_ports) if pt.HAVE_PROMETHEUS
                  else contextlib.nullcontext()) as panels:
                out = cluster.run_python(CHECK_NODES, args=[cluster.address, str(runs)])
                assert out.returncode == 0, out.stderr[-3000:] + cluster.logs_tail()
                info = json.loads(out.stdout.strip().splitlines()[-1])
                sweep, log_path = _run_sweep(cluster, tmp, runs, db, tiny_synthetic, sweep_data_dir)
                try:
                    if bt.HAVE_CHROMIUM:
                        try:
                            dashboard = watch_dashboard(cluster, sweep, tmp, want_workers=SWEEP_TRIALS)
                        except Exception as exc:   # test_ray_dashboard_* reports it; the sweep goes on
                            dashboard = exc
                    sweep.wait(timeout=900)
                finally:
                    if sweep.poll() is None:
                        sweep.kill()
                        sweep.wait(30)
                t_sweep = time.monotonic() - t0 - t_up
                time.sleep(3)  # one more export interval for the probe gauges of the last trial
            watcher.stop()
            logs_tail = cluster.logs_tail()
        yield SweepRun(workdir=tmp, db=db, info=info, returncode=sweep.returncode,
                       output=log_path.read_text(errors="replace"), seen=watcher.seen, probed=watcher.probed,
                       t_up=t_up, t_sweep=t_sweep, t_total=time.monotonic() - t0, logs_tail=logs_tail,
                       dashboard=dashboard, mlflow_url=mlflow_url, panels=panels)


def _trial_runs(db: Path):
    from mlflow.entities import ViewType

    from sportray import tracking

    client = tracking.connect(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("scratch_views")
    assert exp is not None
    all_runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    trials = [r for r in all_runs if r.data.tags.get(tracking.TAG_KIND) == tracking.KIND_TRIAL]
    return client, exp, all_runs, trials


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TIMEOUT_S)
def test_two_node_cluster_runs_a_tiny_sweep_into_mlflow(two_node_sweep):
    """Every trial and its probe metrics land in MLflow, and the live metrics reach the nodes'
    metrics endpoints: rank 0's training gauges while it trains, every trial's probe gauges."""
    run = two_node_sweep
    assert run.info["alive"] == 2 and run.info["cpus"] == 2, run.info
    assert run.returncode == 0, (f"sweep failed ({run.returncode}), output in {run.workdir / 'sweep.out'}\n"
                                 + run.output[-5000:] + run.logs_tail)
    # pretrain.py's rank 0 exported its training gauges while it trained
    assert {"ray_sportray_step", "ray_sportray_loss", "ray_sportray_frames_per_s"} <= run.seen, run.seen

    from sportray import tracking

    client, _exp, all_runs, trials = _trial_runs(run.db)
    assert len(trials) == SWEEP_TRIALS, [r.data.tags for r in all_runs]
    for trial in trials:
        assert trial.data.tags[tracking.TAG_STATUS] == "finished", trial.data.tags
        for name in ("test/basketball_iou", "test/soccer_bal_acc", "test/basketball_iou_ci_low", "test/soccer_bal_acc_ci_high"):
            assert 0.0 <= trial.data.metrics[name] <= 1.0, (name, trial.data.metrics)
        assert trial.data.metrics["steps_done"] == 4
        assert client.get_metric_history(trial.info.run_id, "train/loss")  # rank 0 logged its steps
    names = {r.info.run_name for r in trials}
    assert len(names) == SWEEP_TRIALS, names           # each recipe x seed its own name
    # every trial's probe gauges reached the endpoint (the sportray-metrics actor outlives trials)
    assert {"ray_sportray_basketball_iou", "ray_sportray_soccer_bal_acc"} <= run.seen, run.seen
    assert run.probed == names, (run.probed, names)
    print(f"\n[two-node] cluster up {run.t_up:.0f} s, sweep of {len(trials)} trials {run.t_sweep:.0f} s, "
          f"total {run.t_total:.0f} s; nodes {run.info}; metrics seen: {sorted(run.seen)}")


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TIMEOUT_S)
@pytest.mark.skipif(not pt.HAVE_PROMETHEUS, reason=pt.NO_PROMETHEUS)
def test_every_grafana_panel_query_returns_series_from_a_real_prometheus(two_node_sweep):
    """Every panel query of dashboards/*.json, evaluated by a real Prometheus scraping the two
    nodes while the sweep ran, returned series at some point: the training panels while a trial
    trained, the probe panels once trials were probed. The GPU panels, on a machine without
    GPUs, must be empty rather than wrong."""
    run = two_node_sweep
    assert run.returncode == 0, "the sweep failed: see test_two_node_cluster_runs_a_tiny_sweep_into_mlflow"
    w = run.panels
    if w.error is not None:
        raise w.error
    assert len(w.queries) >= 30, w.queries
    gpu_panels = {q: n for q, n in w.seen.items() if any(g in q[2] for g in pt.GPU_ONLY)}
    missing = [f"{dash} / {title}: {expr}" for (dash, title, expr), n in w.seen.items()
               if not n and (dash, title, expr) not in gpu_panels]
    assert not missing, "panels whose query never returned a series:\n" + "\n".join(missing)
    _client, _exp, _all, trials = _trial_runs(run.db)
    assert w.trials == {r.info.run_name for r in trials}, w.trials   # every trial's gauges, by run name
    gpu = any(n for q, n in gpu_panels.items() if 'Name="GPU"' in q[2])
    print(f"\n[prometheus] {len(w.seen) - len(gpu_panels)} panel queries returned series; {len(gpu_panels)} GPU "
          f"panel queries {'returned series' if gpu else 'empty (no GPU here)'}; trials {sorted(w.trials)}")


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TIMEOUT_S)
@pytest.mark.skipif(not HAVE_CHROMIUM, reason=NO_CHROMIUM)
def test_ray_dashboard_shows_the_sweeps_trials_training(two_node_sweep):
    """The Ray dashboard a person opens during the sweep: the actors page lists the trials'
    actors (Tune's `_trainable`, Train's controller and worker) ALIVE, the jobs page the sweep's
    driver RUNNING -- not the token dialog."""
    import browser_tools as bt

    d = two_node_sweep.dashboard
    if isinstance(d, Exception):
        raise d
    assert d["still_running"], "the sweep ended before the pages were loaded"
    text = d["actors_text"]
    assert bt.TOKEN_DIALOG not in text, text[:2000]
    alive_rows = [row for row in d["actor_rows"] if "ALIVE" in row]
    for cls in TRIAL_ACTORS:
        assert any(cls in row for row in alive_rows), (cls, alive_rows)
    assert "_trainable" in text, text[:4000]                         # Tune's trial actor, by its repr
    assert {"ImplicitFunc", "RayTrainWorker"} <= d["alive_then"], d["alive_then"]   # still training after
    jobs = d["jobs_text"]
    assert bt.TOKEN_DIALOG not in jobs and "RUNNING" in jobs, jobs[:3000]
    print(f"\n[browser] Ray dashboard during the sweep ({d['workers_seen']} trial(s) training, seen after "
          f"{d['t_wait']:.0f} s): " + ", ".join(str(p) for p in d["screenshots"]))


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TIMEOUT_S)
@pytest.mark.skipif(not HAVE_CHROMIUM, reason=NO_CHROMIUM)
def test_mlflow_compare_view_of_the_trained_sweep(two_node_sweep, tmp_path):
    """`mlflow ui` on the sweep's store, the compare view of all its trials: every trial by
    name, the probe metrics, and the parallel-coordinates chart drawn over them. As a person
    would: the assistant side panel closed, the probe metrics added to the chart (the sweep's
    objective, basketball_iou, last: it colours the lines)."""
    import browser_tools as bt

    run = two_node_sweep
    assert run.returncode == 0, "the sweep failed: see test_two_node_cluster_runs_a_tiny_sweep_into_mlflow"
    _client, exp, _all, trials = _trial_runs(run.db)
    assert len(trials) == SWEEP_TRIALS
    trials.sort(key=lambda r: r.info.run_name)
    t0 = time.monotonic()
    shot = bt.artifacts_dir() / "mlflow_compare_sweep.png"
    base = run.mlflow_url
    assert bt.wait_http(base + "/health") == 200, base
    with bt.Page(tmp_path / "chromium", width=1600, height=1650) as page:
        page.goto(bt.compare_url(base, exp.experiment_id, [r.info.run_id for r in trials]))
        page.wait_for("document.body.innerText.includes('test/basketball_iou') && document.querySelector('.js-plotly-plot')")
        if page.eval("!!document.querySelector('button[aria-label=Close]')"):
            page.click("button[aria-label=Close]")                      # MLflow 3's assistant panel
        page.eval("""[...document.querySelectorAll('div')].find(d => d.textContent === 'Metrics:')
            .nextElementSibling.setAttribute('data-sportray', 'chart-metrics')""")
        for metric in ("test/soccer_bal_acc", "test/basketball_iou"):
            page.click("[data-sportray=chart-metrics] .du-bois-light-select-selector")
            page.type(metric)
            time.sleep(0.5)
            page.press("Enter")
        page.press("Escape")
        page.wait_for("[...document.querySelectorAll('.js-plotly-plot text')].some(t => t.textContent === 'test/basketball_iou')")
        page.click("button[aria-label='Parameters - Show diff only']")   # what differs: seed, views
        time.sleep(1)
        text, dom = page.text(), page.dom()
        page.screenshot(shot, full_page=False)
    assert f"Comparing {len(trials)} Runs" in text, text[:3000]
    for r in trials:
        assert r.info.run_name in text, (r.info.run_name, text[:3000])
    assert "test/basketball_iou" in text and "test/soccer_bal_acc" in dom, text[:3000]
    axes = re.findall(r'class="axis-title"[^>]*>([^<]+)<', dom)
    assert {"test/basketball_iou", "test/soccer_bal_acc", "views"} <= set(axes), axes   # the chart, drawn
    print(f"\n[browser] MLflow compare view of the {len(trials)} trained trials: {shot} "
          f"({time.monotonic() - t0:.0f} s)")
