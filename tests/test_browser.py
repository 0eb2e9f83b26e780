"""What a user sees in a browser: the MLflow compare view of a sweep's trials and the Ray
dashboard, loaded in headless Chromium (Debian's `chromium`; skipped without it).

Screenshots are kept for people to look at: the test prints where (browser-artifacts/ at the
repository root, or $SPORTRAY_BROWSER_ARTIFACTS).

The MLflow store is the one a finished tiny sweep leaves, written through sportray.tracking
(the same calls run_sweep/run_trial make: a parent run, four trial runs named
"<config key> s<seed>" with PretrainConfig params, train/* step curves, probe metrics with
their CIs, a training-curves panel and trial_config.json as artifacts) instead of training
four trials here, so the file stays well under two minutes. tests/test_cluster.py runs the
real sweep into MLflow and takes the same two looks at it: the dashboard's actors page while its
trials train, the compare view of its trained trials (ray_dashboard_sweep_*.png,
mlflow_compare_sweep.png). The helpers both files use are in browser_tools.py.

The Ray dashboard runs with Ray 2.60's token auth. Without a token its web UI asks for one
(a dialog; /api/* answers 401) -- the first screenshot shows that. The jobs and actors pages are
then loaded through a local reverse proxy that adds `Authorization: Bearer <token>` to every
request (what an authenticating proxy in front of the dashboard does; Ray also accepts
X-Ray-Authorization for that), since headless Chromium's command line cannot type into the
dialog or set the HttpOnly cookie it would leave.
"""
from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from browser_tools import (HAVE_CHROMIUM, NO_CHROMIUM, TOKEN_DIALOG, artifacts_dir as _artifacts_dir, chromium,
                           compare_url, mlflow_ui as _mlflow_ui, token_proxy, wait_http)

pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM, reason=NO_CHROMIUM)


@pytest.fixture(scope="module")
def artifacts_dir() -> Path:
    return _artifacts_dir()


# ----------------------------------------------------------------------------- MLflow

def write_finished_sweep(client, art: Path) -> tuple[str, list[tuple[str, str]]]:
    """A finished tiny sweep as run_sweep/run_trial log it: (experiment id, [(run id, run name)])."""
    from sportray import panels, tasks, tracking
    from sportray.config import PretrainConfig, flatten

    exp = tracking.experiment_id(client, "scratch_views", artifact_location=str(art))
    parent = tracking.parent_run(client, exp, "scratch_views", art / "scratch_views-20260101-000000",
                                 {"preset": "demo", "num_configs": 2, "seeds": "0,1", "metric": "valid/basketball_iou"})
    runs = []
    recipes = [dict(views="2x224", steps=40, clip=0.0, lr=5e-4), dict(views="2x224+6x96", steps=40, clip=1.0, lr=1e-3)]
    for i, recipe in enumerate(recipes):
        for seed in (0, 1):
            cfg = PretrainConfig(arm="scratch", model="vit_tiny_demo", batch_size=16, seed=seed, **recipe)
            key = tracking.config_key(cfg, vary=["lr"])
            run_id = tracking.trial_run(client, exp, parent, f"t{i}{seed}", key, flatten(cfg), seed)
            with tracking.StepLogger(client, run_id) as log:
                for step in range(10, 41, 10):
                    log.log(step, {"train/loss": 1.0 / step + 0.01 * seed, "train/inv": 0.5 / step,
                                   "train/sigreg": 2.0 / step, "train/grad_norm": 1.5, "train/weight_norm": 30.0,
                                   "train/rel_dist_init": step / 1000, "train/lr": recipe["lr"],
                                   "train/frames_per_s": 40.0})
            run_dir = art / f"panels-{i}{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            if not runs:  # one picture, drawn once (matplotlib is the slow part), logged by every trial
                history = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)]
                           for k in ("train/loss", "train/inv", "train/sigreg", "train/grad_norm")}
                curves = panels.training_curves(history, art / "training_curves.png", title=key)
            (run_dir / "trial_config.json").write_text(json.dumps({"pretrain": flatten(cfg), "status": "finished"}))
            iou, acc = 0.40 + 0.05 * i + 0.01 * seed, 0.20 + 0.04 * i - 0.01 * seed
            tracking.log_final(client, run_id, {
                "test/basketball_iou": iou, "test/basketball_iou_ci_low": iou - 0.05, "test/basketball_iou_ci_high": iou + 0.05,
                "test/basketball_frames": 24, "test/soccer_bal_acc": acc, "test/soccer_bal_acc_ci_low": acc - 0.06,
                "test/soccer_bal_acc_ci_high": acc + 0.06, "test/soccer_events": 34, "final_loss": 0.025,
                "diverged": 0.0, "steps_done": 40, **{f"test/soccer_recall/class {k}": 0.5 for k in range(17)}},
                [curves, run_dir / "trial_config.json"], status="finished", step=40,
                probe={"headline": tasks.headline(tasks.resolve())})
            runs.append((run_id, tracking.run_name(key, seed)))
    tracking.set_status(client, parent, "finished")
    return exp, runs


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory):
    from sportray import tracking

    d = tmp_path_factory.mktemp("mlflow-ui")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    client = tracking.connect(uri)   # creates the schema before the server opens the file
    with ThreadPoolExecutor(1) as pool:
        written = pool.submit(write_finished_sweep, client, d / "artifacts")   # while the server starts
        with _mlflow_ui(uri, d / "mlflow-ui.log") as base:
            exp, runs = written.result()
            yield base, exp, runs


def test_mlflow_compare_view_lists_every_trial_and_the_probe_metric(mlflow_ui, artifacts_dir, tmp_path):
    base, exp, runs = mlflow_ui
    assert len(runs) >= 4
    t0 = time.monotonic()
    url = compare_url(base, exp, [r for r, _ in runs])
    shot = artifacts_dir / "mlflow_compare.png"
    dom = chromium(url, tmp_path / "profile", screenshot=shot, size="1600,2600")  # down to the metrics table
    for _run_id, name in runs:
        assert name in dom, (name, dom[:3000])
    assert "test/basketball_iou" in dom and "test/soccer_bal_acc" in dom
    # where the README sends people first: the experiment's runs (trials nest under the sweep's parent run)
    chromium(f"{base}/#/experiments/{exp}/runs", tmp_path / "profile",
             screenshot=artifacts_dir / "mlflow_experiment.png")
    print(f"\n[browser] MLflow compare view of {len(runs)} trials: {shot} "
          f"(+ mlflow_experiment.png), {time.monotonic() - t0:.0f} s")


# ----------------------------------------------------------------------------- Ray dashboard

DRIVER = r"""
import sys, ray
from sportray.metrics import report_probe
ray.init(address=sys.argv[1], logging_level="ERROR")
# leaves the long-lived sportray-metrics actor behind: the actors page has a row to show
assert report_probe("scratch 2x224 steps=40 clip=off s0", "scratch", {"test/basketball_iou": 0.42, "status": "finished"})
print("ok")
"""


def test_ray_dashboard_jobs_and_actors_pages(tmp_path, artifacts_dir, local_ray_cluster):
    t0 = time.monotonic()
    with local_ray_cluster(tmp_path / "cluster", nodes=1, cpus=1, dashboard=True) as cluster:
        base = cluster.dashboard_url
        assert wait_http(base + "/api/version", timeout=180) == 401            # token auth is on
        bearer = {"Authorization": f"Bearer {cluster.token}"}
        assert wait_http(base + "/api/version", headers=bearer) == 200
        out = cluster.run_python(DRIVER, args=[cluster.address])
        assert out.returncode == 0, out.stderr[-3000:]

        # 1. no token: the UI asks for one (what a newcomer meets first)
        dom = chromium(base + "/#/jobs", tmp_path / "p1", screenshot=artifacts_dir / "ray_dashboard_login.png")
        assert TOKEN_DIALOG in dom and "ray get-auth-token" in dom, dom[:2000]

        # 2. with the token added by a local proxy: jobs and actors
        proxy, purl = token_proxy(base, cluster.token)
        try:
            jobs_dom = chromium(purl + "/#/jobs", tmp_path / "p2", budget_ms=30000,
                                screenshot=artifacts_dir / "ray_dashboard_jobs.png")
            assert TOKEN_DIALOG not in jobs_dom
            assert "01000000" in jobs_dom and "SUCCEEDED" in jobs_dom, jobs_dom[:3000]   # the driver's job
            actors_dom = chromium(purl + "/#/actors", tmp_path / "p2", budget_ms=30000,
                                  screenshot=artifacts_dir / "ray_dashboard_actors.png")
            assert "SportrayMetrics" in actors_dom and "sportray-metrics" in actors_dom, actors_dom[:3000]
        finally:
            proxy.shutdown()
    print(f"\n[browser] Ray dashboard screenshots in {artifacts_dir}: ray_dashboard_login.png, "
          f"ray_dashboard_jobs.png, ray_dashboard_actors.png ({time.monotonic() - t0:.0f} s)")


def test_mlflow_opens_on_the_probe_view_and_a_trial_page_leads_with_its_probe_metrics(mlflow_ui, artifacts_dir,
                                                                                      tmp_path):
    """What the sweep's closing URL opens (tracking.probe_view): MLflow's model-training view
    (not GenAI), the trial and reference runs as one list ranked on valid/basketball_iou with
    the probe metrics as columns; and a trial page whose metrics are the probe metrics, their
    intervals and the LeJEPA curves -- no per-class recall rows (those are an artifact)."""
    from sportray import tracking

    base, exp, runs = mlflow_ui
    client = tracking.connect(base)   # through the server's REST API
    view = tracking.probe_view(client, exp, ["basketball_iou", "soccer_bal_acc"])
    t0 = time.monotonic()
    dom = chromium(f"{base}/{view}", tmp_path / "p", screenshot=artifacts_dir / "mlflow_runs.png",
                   budget_ms=30000)
    (artifacts_dir / "mlflow_runs.html").write_text(dom)
    text = re.sub(r"<[^>]+>", " ", dom)
    assert "Detect Issues" not in text and "Traces" in text, "opened in the GenAI view"   # GenAI opens on traces
    assert "sportray: probe metrics" in text and re.search(r"\b4\s+matching runs", text), text[-3000:]
    for column in ("test/basketball_", "final_loss"):
        assert column in dom, column
    for _run_id, name in runs:
        assert name[:20] in dom, name
    run_id = runs[0][0]
    page = chromium(f"{base}/#/experiments/{exp}/runs/{run_id}?workflowType=machine_learning", tmp_path / "p",
                    screenshot=artifacts_dir / "mlflow_trial.png", budget_ms=30000, size="1600,1400")
    assert "valid/basketball_iou" in page or "test/basketball_iou" in page, page[:3000]
    assert "soccer_recall" not in page
    print(f"\n[browser] MLflow probe view and trial page: mlflow_runs.png, mlflow_trial.png "
          f"({time.monotonic() - t0:.0f} s)")
