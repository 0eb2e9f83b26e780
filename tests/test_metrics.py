"""sportray's Ray custom metrics and the Grafana dashboards that draw them.

The end-to-end test starts its own one-node Ray head (a subprocess: the metrics endpoint is
per node and must not be the shared `ray_session` one), sets the metrics from a Ray actor the
way pretrain.py's rank 0 does and from the driver the way trial.py does after probing, scrapes
the node's Prometheus endpoint, and checks that every `ray_sportray_*` series a dashboard panel
queries is exported, with the labels the panels filter on.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sportray import metrics as M

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
TRIAL = "scratch 2x224+6x96 steps=4 clip=off lr=0.0005 s0"   # an MLflow run name, special characters and all


def _exprs(path: Path) -> list[str]:
    out = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(path.read_text()))
    return out


def dashboard_metric_names() -> set[str]:
    return {m for p in DASHBOARDS for e in _exprs(p) for m in re.findall(r"\bray_sportray_[a-z0-9_]+", e)}


# ----------------------------------------------------------------------------- dashboards (static)

def test_dashboards_are_grafana_json_on_the_prometheus_datasource():
    assert {p.name for p in DASHBOARDS} >= {"sportray_sweep.json", "sportray_trial.json"}
    uids = set()
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        assert d["uid"] not in uids and d["title"].startswith("sportray")
        uids.add(d["uid"])
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        panels = [p for p in d["panels"] if p["type"] != "row"]
        assert len(panels) >= 8, path.name
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for p in panels:
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (path.name, p["title"])
            assert p["targets"] and all(t["expr"] for t in p["targets"]), (path.name, p["title"])
            assert p.get("description"), (path.name, p["title"])  # every panel says what it shows
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24


def test_sweep_dashboard_covers_trials_throughput_loss_wait_gpu_and_object_store():
    exprs = " ".join(_exprs(ROOT / "dashboards" / "sportray_sweep.json"))
    for name in ("ray_sportray_step", "ray_sportray_frames_per_s", "ray_sportray_loss", "ray_sportray_data_wait_s",
                 "ray_sportray_basketball_iou", "ray_sportray_soccer_bal_acc", "ray_node_gpus_utilization",
                 "ray_object_store_memory"):
        assert name in exprs, name
    assert "by (trial)" in exprs  # per-trial series


def test_trial_dashboard_is_one_trial_chosen_by_a_variable():
    d = json.loads((ROOT / "dashboards" / "sportray_trial.json").read_text())
    trial = next(v for v in d["templating"]["list"] if v["name"] == "trial")
    assert trial["type"] == "query" and not trial["multi"] and "ray_sportray_step" in trial["definition"]
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    assert all('trial="$trial"' in e for e in exprs), exprs  # exact match: names hold + . =
    names = " ".join(exprs)
    for n in ("loss", "inv", "sigreg", "grad_norm", "rel_dist_init", "frames_per_s", "data_wait_s",
              "basketball_iou", "soccer_bal_acc"):
        assert f"ray_sportray_{n}" in names, n


def test_dashboards_query_only_metrics_sportray_exports():
    assert dashboard_metric_names() <= set(M.metric_names()), dashboard_metric_names() - set(M.metric_names())


# ----------------------------------------------------------------------------- without Ray

def test_metrics_are_a_no_op_without_ray():
    code = ("from sportray.metrics import TrainMetrics, report_probe\n"
            "m = TrainMetrics(trial='t', arm='scratch')\n"
            "m.update(3, {'train/loss': 1.0, 'train/frames_per_s': float('nan')})\n"
            "import ray\n"
            "print(m.enabled, report_probe('t', 'scratch', {'test/basketball_iou': 0.5}), ray.is_initialized())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_non_finite_and_missing_values_are_skipped():
    assert M._value(float("nan")) is None and M._value(float("inf")) is None
    assert M._value(None) is None and M._value("x") is None
    assert M._value(3) == 3.0 and M._value("0.5") == 0.5


# ----------------------------------------------------------------------------- on a Ray node

SCRAPE = r"""
import json, sys, time, urllib.request
import ray
from sportray.metrics import TrainMetrics, report_probe

address, trial, want = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
ray.init(address=address, logging_level="ERROR")

@ray.remote(num_cpus=0)
class Rank0:
    # Stands in for pretrain.py's rank-0 Train worker: it lives while training, and so do its gauges.
    def step(self, step, last):
        if not hasattr(self, "m"):
            self.m = TrainMetrics(trial=trial, arm="scratch")
        self.m.update(step, last)
        return self.m.enabled

last = {"train/loss": 0.25, "train/inv": 0.2, "train/sigreg": 1.25, "train/grad_norm": 2.0,
        "train/weight_norm": 30.0, "train/rel_dist_init": 0.01, "train/lr": 5e-4,
        "train/frames_per_s": 123.0, "train/data_wait_s": 0.002}
rank0 = Rank0.remote()
assert ray.get(rank0.step.remote(2, last))
# trial.py after probing (the Tune trial's process ends right after: the values must outlive it)
t0 = time.time()
published = report_probe(trial, "scratch", {"test/basketball_iou": 0.5, "test/soccer_bal_acc": 0.25, "final_loss": 0.25,
                                            "diverged": 0.0, "status": "finished"}, timeout_s=240)
t_publish = time.time() - t0
ports = [n["MetricsExportPort"] for n in ray.nodes() if n["Alive"]]


def scrape():
    found, samples = set(), []
    for port in ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        for line in text.splitlines():
            if line.startswith("ray_sportray_"):
                found.add(line.split("{", 1)[0].split(" ", 1)[0])
                samples.append(line)
    return found, samples


deadline = time.time() + 150
while time.time() < deadline:
    found, samples = scrape()
    if want <= found:
        break
    time.sleep(1)
t_found = time.time()
# Ray 2.60 drops a gauge two export intervals after it was last set: nothing is set any more
# now, so after 5 intervals everything must still be there thanks to sportray's keeper thread.
time.sleep(5)
later, _ = scrape()
print(json.dumps({"published": published, "t_publish": t_publish, "t_scrape": t_found - t0 - t_publish,
                  "still_there": sorted(later),
                  "ports": ports, "found": sorted(found), "samples": samples}))
"""


@pytest.fixture(scope="module")
def metrics_node(tmp_path_factory, local_ray_cluster):
    # Export every second (the default is 10 s) so the scrape sees the values quickly.
    with local_ray_cluster(tmp_path_factory.mktemp("metrics-node"), nodes=1, cpus=1,
                         env={"RAY_metrics_report_interval_ms": "1000"}) as cluster:
        yield cluster


@pytest.mark.slow
def test_every_dashboard_metric_is_exported_by_a_ray_node(metrics_node):
    want = dashboard_metric_names()
    assert len(want) >= 12, want
    out = metrics_node.run_python(SCRAPE, args=[metrics_node.address, TRIAL, ",".join(sorted(want))], timeout=480)
    assert out.returncode == 0, out.stderr[-4000:] + metrics_node.logs_tail()
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["published"] is True, res
    missing = want - set(res["found"])
    assert not missing, (missing, res["samples"])
    gone = want - set(res["still_there"])
    assert not gone, f"dropped 5 export intervals after the last update: {sorted(gone)}"

    # The labels the panels filter and group on, with the values that were set.
    def sample(name):
        lines = [s for s in res["samples"] if s.startswith(name + "{")]
        assert lines, name
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', lines[0].split("}", 1)[0]))
        return labels, float(lines[0].rsplit(" ", 1)[1])

    labels, value = sample("ray_sportray_loss")
    assert labels["trial"] == TRIAL and labels["arm"] == "scratch" and labels.get("SessionName"), labels
    assert value == 0.25
    assert sample("ray_sportray_step")[1] == 2
    assert sample("ray_sportray_frames_per_s")[1] == 123.0
    labels, value = sample("ray_sportray_basketball_iou")
    assert labels["trial"] == TRIAL and labels.get("SessionName") and value == 0.5
    labels, value = sample("ray_sportray_trials_finished_total")
    assert labels["status"] == "finished" and value == 1.0
    print(f"\n[metrics] {len(want)} dashboard series exported; probe metrics published in {res['t_publish']:.1f} s, "
          f"all on the endpoint {res['t_scrape']:.1f} s later; e.g. "
          + next(s for s in res["samples"] if s.startswith("ray_sportray_loss{")))
