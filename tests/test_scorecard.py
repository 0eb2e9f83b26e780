"""sportray.scorecard on a fixture of MLflow runs written through sportray.tracking (sqlite)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest

from sportray import scorecard as S
from sportray import tracking as T
from sportray.config import PretrainConfig, flatten, replace


def fresh_store(tmp_path_factory, name: str) -> str:
    """sqlite URI of a new MLflow store; the schema migration (~8 s) runs once per session
    into a template file that later stores copy."""
    import shutil
    template = tmp_path_factory.getbasetemp() / "mlflow-template.db"
    if not template.exists():
        T.connect(f"sqlite:///{template}")
    d = tmp_path_factory.mktemp(name)
    shutil.copyfile(template, d / "mlflow.db")
    return f"sqlite:///{d}/mlflow.db"

A = PretrainConfig(views="2x224", steps=100, clip=0.0)
C = PretrainConfig(views="2x224", steps=200, clip=0.0)
B = PretrainConfig(views="2x224+6x96", steps=200, clip=1.0)
D = PretrainConfig(views="6x224", steps=100, clip=0.0)
KA, KB, KC, KD = (T.config_key(c) for c in (A, B, C, D))
EXP = "fixture_sweep"


def _final(iou, acc, loss, **extra):
    return {"basketball_iou": iou, "basketball_iou_ci_low": iou - 0.05,
            "basketball_iou_ci_high": iou + 0.05, "basketball_test_frames": 84,
            "soccer_bal_acc": acc, "soccer_bal_acc_ci_low": acc - 0.01,
            "soccer_bal_acc_ci_high": acc + 0.01, "soccer_test_events": 500,
            "final_loss": loss, "diverged": 0, **extra}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = fresh_store(tmp_path_factory, "sc")
    d = Path(uri.removeprefix("sqlite:///")).parent
    client = T.connect(uri)
    exp = T.experiment_id(client, EXP, artifact_location=str(d / "art"))
    parent = T.parent_run(client, exp, EXP, d / "sweep1", {"num_samples": 7})

    def trial(cfg, seed, status="finished", **final):
        run = T.trial_run(client, exp, parent, f"{T.config_key(cfg)}-{seed}", T.config_key(cfg),
                          flatten(replace(cfg, seed=seed)), seed)
        if status != "running":
            T.log_final(client, run, final, [], status)
        return run

    trial(A, 0, **_final(0.30, 0.200, 3.0))
    trial(A, 1, **_final(0.36, 0.202, 2.9))
    trial(C, 0, **_final(0.34, 0.205, 2.8))
    trial(C, 1, **_final(0.40, 0.207, 2.7))
    trial(B, 0, **_final(0.50, 0.240, 2.2))
    trial(B, 1, **_final(0.52, 0.250, 2.1))
    trial(A, 2, status="diverged", **_final(0.18, 0.150, 50.0, diverged=1, diverged_step=70))
    trial(B, 2, status="running")  # still running: skipped
    ref = T.reference_run(client, exp, parent, "dinov3", {"weights": "dinov3.pth"})
    T.log_final(client, ref, {"basketball_iou": 0.67, "basketball_iou_ci_low": 0.62,
                              "basketball_iou_ci_high": 0.72, "soccer_bal_acc": 0.282,
                              "soccer_bal_acc_ci_low": 0.279, "soccer_bal_acc_ci_high": 0.285})
    rnd = T.reference_run(client, exp, None, "random", {})  # shared reference, no parent
    T.log_final(client, rnd, {"basketball_iou": 0.192, "basketball_iou_ci_low": 0.15,
                              "basketball_iou_ci_high": 0.23, "soccer_bal_acc": 0.06,
                              "soccer_bal_acc_ci_low": 0.055, "soccer_bal_acc_ci_high": 0.065})
    # another sweep in the same experiment
    other = T.parent_run(client, exp, EXP, d / "sweep2", {})
    r = T.trial_run(client, exp, other, "d0", KD, flatten(D), 0)
    T.log_final(client, r, _final(0.45, 0.23, 2.5))
    return dict(client=client, uri=uri, parent=parent, dir=d)


@pytest.fixture(scope="module")
def records(store):
    return S.load_runs(store["client"], EXP, parent_run_id=store["parent"])


@pytest.fixture(scope="module")
def card(records):
    return S.build(records)


def test_load_runs(store, records):
    keys = sorted(r.config_key for r in records)
    # 6 finished + 1 diverged trial, 2 references; the running trial and the other sweep are out
    assert len(records) == 9 and KD not in keys
    assert keys.count(KA) == 3 and keys.count(KB) == 2
    div = [r for r in records if r.diverged]
    assert len(div) == 1 and div[0].config_key == KA and div[0].status == "diverged"
    everything = S.load_runs(store["client"], EXP)
    assert KD in {r.config_key for r in everything} and len(everything) == 10
    with pytest.raises(T.TrackingError, match="no experiment named 'nope'"):
        S.load_runs(store["client"], "nope")


def test_rows_means_stds_counts_deltas(card):
    assert [r.config for r in card.rows] == ["reference random", "reference dinov3", KA, KC, KB]
    a, b, c = card.row(KA), card.row(KB), card.row(KC)
    ia, ib, ic = (r.stats["basketball_iou"] for r in (a, b, c))
    assert (a.n_seeds, b.n_seeds, c.n_seeds) == (2, 2, 2)
    assert a.n_diverged == 1 and b.n_diverged == 0
    assert ia.mean == pytest.approx(0.33) and ia.std == pytest.approx(math.sqrt(0.0018))
    assert (ia.min, ia.max) == (pytest.approx(0.30), pytest.approx(0.36))
    assert ib.mean == pytest.approx(0.51) and ib.std == pytest.approx(math.sqrt(0.0002))
    assert ic.mean == pytest.approx(0.37)
    assert (ia.ci_low, ia.ci_high) == (pytest.approx(0.28), pytest.approx(0.38))
    assert ia.delta_vs_dinov3 == pytest.approx(-0.34)
    assert ib.delta_vs_dinov3 == pytest.approx(-0.16)
    dino = card.row("reference dinov3").stats["basketball_iou"]
    assert dino.n == 1 and dino.std is None and dino.delta_vs_dinov3 is None
    assert (dino.ci_low, dino.ci_high) == (pytest.approx(0.62), pytest.approx(0.72))
    rnd = card.row("reference random").stats["basketball_iou"]
    assert rnd.delta_vs_dinov3 == pytest.approx(0.192 - 0.67)
    assert card.row(KB).stats["soccer_bal_acc"].mean == pytest.approx(0.245)
    assert [r.run_id for r in card.diverged] and card.diverged[0].config_key == KA


def test_not_separable_flags(card):
    iou = {r.config: r.stats["basketball_iou"] for r in card.rows}
    assert [iou[k].rank for k in ("reference dinov3", KB, KC, KA, "reference random")] == [1, 2, 3, 4, 5]
    assert iou["reference dinov3"].not_separable is None          # top row: nothing above
    assert iou[KB].not_separable is False                         # 0.16 gap, CIs apart
    assert iou[KC].not_separable is False
    assert iou[KA].not_separable is True and iou[KA].above == KC  # 0.04 gap <= std 0.042
    assert iou[KA].reason == "spread+ci"
    assert iou["reference random"].not_separable is False
    acc = {r.config: r.stats["soccer_bal_acc"] for r in card.rows}
    # 0.005 gap is > both stds (0.0014) but the test-set CIs overlap: flagged by the CI rule
    assert acc[KA].not_separable is True and acc[KA].reason == "ci"
    assert acc[KC].not_separable is False and acc[KB].not_separable is False


def _rec(key, seed, iou, loss=None, status="finished", arm="scratch", end=0, ci=None, kind="trial"):
    m = {"basketball_iou": iou}
    if loss is not None:
        m["final_loss"] = loss
    if ci is not None:
        m["basketball_iou_ci_low"], m["basketball_iou_ci_high"] = iou - ci, iou + ci
    return S.RunRecord(run_id=f"{key}-{seed}-{end}", run_name=f"{key} s{seed}", kind=kind,
                       config_key=key, status=status,
                       params={"arm": arm, "steps": "100", "views": "2x224", "clip": "0.0",
                               "seed": str(seed)}, metrics=m, end_time=end)


def test_spearman_constructed():
    recs = [_rec(f"k{i}", 0, iou, loss) for i, (iou, loss) in
            enumerate([(0.5, 1.0), (0.4, 2.0), (0.3, 3.0), (0.2, 4.0), (0.1, 5.0)])]
    recs.append(_rec("kx", 0, 0.9, 9.0, status="diverged"))  # excluded
    rho, p, n = S.spearman(recs, "basketball_iou")
    assert rho == pytest.approx(-1.0) and n == 5 and p < 0.05
    assert S.spearman(recs[:2], "basketball_iou") is None
    assert S.spearman(recs, "basketball_iou", arm="lora") is None


def test_spearman_fixture(card):
    rho, p, n = card.spearman["basketball_iou"]["all"]
    assert n == 6 and rho == pytest.approx(1 - 6 * 68 / (6 * 35))  # hand-ranked: -0.943


def test_duplicate_seed_and_no_spread_rule():
    recs = [_rec("x", 0, 0.30, end=1), _rec("x", 0, 0.40, end=2),  # same seed twice: latest counts
            _rec("y", 0, 0.39)]                                     # one seed each, no CI
    card = S.build(recs, metrics=("basketball_iou",))
    x = card.row("x").stats["basketball_iou"]
    assert card.row("x").n_seeds == 1 and x.mean == pytest.approx(0.40) and len(card.duplicates) == 1
    y = card.row("y").stats["basketball_iou"]
    assert y.not_separable is True and y.reason == "no spread/CI"


def test_markdown_csv_plot(card, records, tmp_path):
    md = S.to_markdown(card)
    for s in ("0.330 ± 0.042", "0.510 ± 0.014", "−0.340", "−0.160", "4 ≈", "0.670 (1 seed)",
              "Frozen DINOv3", "diverged", "ρ = −0.94", "not separable"):
        assert s in md, s
    rows = {r["config"]: r for r in csv.DictReader(io.StringIO(S.to_csv(card)))}
    a = rows[KA]
    assert float(a["basketball_iou_mean"]) == pytest.approx(0.33)
    assert float(a["basketball_iou_std"]) == pytest.approx(0.042426, abs=1e-6)
    assert a["n_seeds"] == "2" and a["diverged"] == "1" and a["basketball_iou_not_separable"] == "1"
    assert float(a["basketball_iou_delta_vs_dinov3"]) == pytest.approx(-0.34)
    assert rows[KB]["basketball_iou_not_separable"] == "0"
    assert rows["reference dinov3"]["basketball_iou_delta_vs_dinov3"] == ""
    for col in ("config", "arm", "steps", "views", "clip", "n_seeds"):
        assert col in a
    png = S.plot_vs_steps(records, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_main(store, tmp_path, capsys):
    out = tmp_path / "out"
    rc = S.main(["--experiment", EXP, "--tracking-uri", store["uri"], "--out", str(out),
                 "--parent-run", store["parent"]])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "0.330 ± 0.042" in printed
    for f in ("scorecard.md", "scorecard.csv", "scorecard.png"):
        assert (out / f).stat().st_size > 0
    assert S.main(["--experiment", EXP, "--tracking-uri", store["uri"], "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("config,") and KD in printed  # whole experiment: both sweeps
    assert S.main(["--experiment", "nope", "--tracking-uri", store["uri"]]) == 2
    assert "no experiment named" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        S.main(["--help"])
    assert e.value.code == 0
