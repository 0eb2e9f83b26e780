"""What a researcher reads first: a sweep script's --help (fast, defaults shown), --print-config,
the sweep's compact ending, and Tune's compact trial table. The quiet console of a real sweep
is checked in tests/test_sweep.py (the resumed sweep's whole output)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["scratch_views", "lora_steps", "scratch_clip", "data_volume"]


def test_sweep_help_is_fast_imports_neither_torch_nor_ray_and_shows_defaults():
    for name in SCRIPTS:
        best = 1e9
        for _ in range(2):   # the best of two: a 2-core machine shared with other work
            t0 = time.monotonic()
            out = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "sweeps" / f"{name}.py"), "--help"],
                                 capture_output=True, text=True, timeout=60)
            best = min(best, time.monotonic() - t0)
        assert out.returncode == 0, out.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time")}
        assert not {"ray", "torch", "mlflow", "optuna"} & imported, sorted(imported & {"ray", "torch", "mlflow"})
        # -X importtime itself costs a little; the plain --help is faster still
        assert best < 1.5, f"{name} --help took {best:.2f} s"
        text = " ".join(out.stdout.split())
        assert "(default: sportray-runs)" in text and "(default: fifo)" in text and "(default: 0)" in text
        assert "default per preset: demo:" in text and "--print-config" in text


def test_print_config_resolves_preset_set_and_space_without_starting_anything(tmp_path):
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "scratch_views.py"), "--print-config",
                          "--set", "steps=10", "--seeds", "0,1,2", "--storage", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = json.loads(out.stdout)
    assert cfg["preset"] == "demo" and cfg["seeds"] == [0, 1, 2] and cfg["num_configs"] == 2
    assert cfg["pretrain"]["steps"] == 10 and cfg["pretrain"]["model"] == "vit_tiny_demo"
    assert "steps" not in cfg["space"]                      # fixed by --set: no longer searched
    assert cfg["space"]["views"] == {"choice": ["2x224", "2x224+4x64"]}
    assert cfg["space"]["lr"] == {"loguniform": [0.0003, 0.002]}
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()   # nothing written
    print(f"\n[console] --print-config {time.monotonic() - t0:.1f} s")


def _card():
    import numpy as np

    from sportray import scorecard as S

    rng = np.random.default_rng(0)

    def rec(key, seed, valid, test, kind="trial", reference=None):
        items = {s: {"unit": (np.arange(40) % 4).astype(str), "iou": np.clip(v + rng.normal(0, .02, 40), 0, 1)}
                 for s, v in (("valid", valid), ("test", test))}
        return S.RunRecord(run_id=f"{key}{seed}", run_name=f"{key} s{seed}", kind=kind, config_key=key,
                           status="finished", params={"arm": "scratch", "steps": "40", "seed": str(seed)},
                           metrics={"valid/basketball_iou": float(items["valid"]["iou"].mean()),
                                    "test/basketball_iou": float(items["test"]["iou"].mean())},
                           items={"basketball": items}, reference=reference)

    records = [rec("scratch views=2x224+4x64 steps=40 clip=1 lr=0.001", s, 0.6, 0.5) for s in (0, 1)] + \
              [rec("scratch views=2x224 steps=40 clip=1 lr=0.001", s, 0.3, 0.6) for s in (0, 1)] + \
              [rec("reference random", s, 0.1, 0.1, kind="reference", reference="random") for s in (0, 1)]
    return S.build(records, metrics=("basketball_iou",), n_boot=200), records


def test_final_lines_fit_100_columns_and_say_what_to_run_next(tmp_path, monkeypatch):
    from sportray.sweep import SweepSpec, best_recipe, final_lines

    monkeypatch.chdir(tmp_path)
    card, records = _card()
    best = best_recipe(card, "basketball_iou")
    spec = SweepSpec(name="scratch_views", description="", space={}, presets={})
    summary = {"scorecard": str(tmp_path / "runs" / "sv-1" / "scorecard" / "scorecard.md"),
               "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    lines = final_lines(spec, card, best, {r.run_id: r.run_name for r in records}, summary,
                        tmp_path / "runs" / "sv-1", 4, 0, "1")
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 100, text
    assert len(lines) <= 20, text
    assert "Best recipe by valid/basketball_iou (mean of 2 seeds): scratch views=2x224+4x64" in text
    assert "runs: scratch views=2x224+4x64 steps=40 clip=1 lr=0.001 s0" in " ".join(text.split())
    assert "Floor (random init, 2 seeds), test: basketball_iou 0.099 [" in text
    mlflow = Path(sys.executable).parent / "mlflow"
    assert f"{mlflow} ui --backend-store-uri sqlite:///mlflow.db --port 5000" in text   # relative to the cwd
    assert "\nhttp://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning&viewStateShareKey=probes" in text
    assert "optuna-dashboard sqlite:///runs/sv-1/optuna.db" in text
    assert "get-auth-token" in text and "--address auto" in text


class _Trial:
    def __init__(self, trial_id, name, steps):
        self.trial_id, self.name, self.config = trial_id, name, {"steps": steps}

    def __str__(self):
        return self.name


def test_tune_table_names_trials_by_recipe_and_seed_with_step_loss_and_metric(capsys):
    from sportray.console import TrialNamer
    from sportray.tuneconsole import SweepConsole

    class T:   # what Tune hands the name creator: the trial's config with the Repeater's index
        config = {"views": "2x224+4x64", "steps": 40, "clip": 1.0, "lr": 0.001, "__trial_index__": 3}
    namer = TrialNamer((0, 1))
    assert namer(T()) == "2x224+4x64 40st clip1 lr1e-3 s1"
    assert namer(T()) == "2x224+4x64 40st clip1 lr1e-3 s1 #2"    # Optuna proposed the recipe again

    con = SweepConsole(total=2, steps=40, metric="valid/basketball_iou", every_s=0.0)
    a, b = _Trial("a", "2x224 40st clip1 lr1e-3 s0", 40), _Trial("b", "2x224 40st clip1 lr1e-3 s1", 40)
    for t in (a, b):
        con.on_trial_start(0, [], t)
    con.on_trial_result(0, [], a, {"step": 20, "train/loss": 0.51})
    con.on_step_end(0, [])
    con.on_trial_result(0, [], a, {"step": 40, "train/loss": 0.42, "valid/basketball_iou": 0.061,
                                   "final_loss": 0.41, "status": "finished"})
    con.on_trial_complete(0, [], a)
    err = capsys.readouterr().err
    assert "trials 0/2 done" in err
    assert "2x224 40st clip1 lr1e-3 s0 running 20/40 0.5100" in " ".join(err.split())
    assert "trials 1/2 done" in err and "left" in err
    row = [line for line in err.splitlines() if line.strip().startswith("2x224 40st clip1 lr1e-3 s0")][-1]
    assert row.split()[5:] == ["done", "40/40", "0.4100", "0.0610"], row
    assert max(len(line) for line in err.splitlines()) <= 100
    import pickle
    assert pickle.loads(pickle.dumps(con)).rows.keys() == {"a", "b"}   # Tune pickles callbacks (--resume)


def test_console_lines_fit_100_columns_with_paths_kept_whole(capsys):
    from sportray.console import Stage, say

    path = "sportray-runs/scratch_views-20261202-120000/optuna.db"
    say(f"trials: 2 recipes x 2 seeds, up to 4 at a time; Optuna study {path}")
    with Stage("frame store: decoding sampled frames with Ray Data") as stage:
        stage.detail = "1024 frames from 16 videos (reused), 0 bad files"
    with Stage("probe sets: basketball, soccer") as stage:
        stage.detail = "2 sets"
    lines = capsys.readouterr().err.splitlines()
    assert all(len(line) <= 100 for line in lines), lines
    assert any(line.strip() == path for line in lines)            # wrapped between words, never inside one
    assert lines[-2].strip() == "1024 frames from 16 videos (reused), 0 bad files"   # too long: its own line
    assert lines[-1].endswith("; 2 sets") and lines[-1].startswith("[sportray] probe sets")


def test_tunes_own_slowness_warnings_stay_off_a_quiet_console(caplog, monkeypatch):
    import logging
    import time as _time

    monkeypatch.delenv("SPORTRAY_VERBOSE", raising=False)
    from ray.tune.utils import util as tune_util
    from ray.tune.utils.util import warn_if_slow

    from sportray.console import quiet_process

    quiet_process()
    tune_log = logging.getLogger("ray.tune.utils.util")
    tune_log.addHandler(caplog.handler)     # Ray's loggers do not propagate to the root's
    try:
        # what a loaded driver triggers (Tune stays silent in its first minute)
        monkeypatch.setattr(tune_util, "START_OF_TIME", _time.time() - 120)
        with warn_if_slow("process_trial_result", threshold=1e-6):
            _time.sleep(0.01)
        tune_log.warning("another warning")                          # Tune's other warnings still show
    finally:
        tune_log.removeHandler(caplog.handler)
    assert "another warning" in caplog.text and "performance bottleneck" not in caplog.text, caplog.text
