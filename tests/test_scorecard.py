"""sportray.scorecard on a fixture of MLflow runs written through sportray.tracking (sqlite),
and on constructed records whose per-item spread is known."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest

from sportray import probes as P
from sportray import tasks
from sportray import scorecard as S
from sportray import tracking as T
from sportray.config import PretrainConfig, flatten, replace


A = PretrainConfig(views="2x224", steps=100, clip=0.0)
C = PretrainConfig(views="2x224", steps=200, clip=0.0)
B = PretrainConfig(views="2x224+6x96", steps=200, clip=1.0)
D = PretrainConfig(views="6x224", steps=100, clip=0.0)
E = PretrainConfig(views="6x224", steps=200, clip=0.0)
KA, KB, KC, KD, KE = (T.config_key(c) for c in (A, B, C, D, E))
EXP = "fixture_sweep"
IOU, ACC = "basketball_iou", "soccer_bal_acc"

# The probe sets every fixture run is scored on (as the study: 84 test frames from 3 arenas).
UNITS = {"basketball": {"test": np.repeat(["arena1", "arena2", "arena3"], 28),
                        "valid": np.repeat(["arena4", "arena5"], 15)},
         "soccer": {"test": np.repeat([f"game{i}" for i in range(4)], 68),
                    "valid": np.repeat(["game4", "game5", "game6"], 34)}}
ARENA_EFFECT = {"test": np.repeat([-0.03, 0.0, 0.03], 28), "valid": np.repeat([-0.02, 0.02], 15)}


def _frames(mean: float, effect: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Per-frame IoU: `mean` + the frame's unit effect + frame noise, shifted to average `mean`."""
    v = mean + effect + np.random.default_rng(seed).normal(0, noise, len(effect))
    return v - v.mean() + mean


def _scored(seed: int, iou: dict[str, float], acc: dict[str, float]) -> tuple[dict, dict]:
    """One run's probe items (save_items' flat npz layout) and the metrics a probe logs for them."""
    rng = np.random.default_rng(100 + seed)
    arrays, metrics = {}, {}
    for split in ("valid", "test"):
        units = UNITS["basketball"][split]
        frames = _frames(iou[split], ARENA_EFFECT[split], 0.05, seed)
        arrays[f"basketball__{split}__unit"], arrays[f"basketball__{split}__iou"] = units, frames
        name = f"{split}/{IOU}"
        metrics[name] = float(frames.mean())
        metrics[name + "_ci_low"], metrics[name + "_ci_high"] = P.unit_bootstrap_ci(frames, units=units, n=200)
        units = UNITS["soccer"][split]
        true = np.arange(len(units)) % 17
        pred = np.where(rng.random(len(true)) < acc[split], true, (true + 1 + rng.integers(0, 16, len(true))) % 17)
        arrays[f"soccer__{split}__unit"], arrays[f"soccer__{split}__true"] = units, true
        arrays[f"soccer__{split}__pred"] = pred
        name = S.split_name(split, ACC)
        metrics[name] = P.balanced_accuracy(true, pred)
        metrics[name + "_ci_low"], metrics[name + "_ci_high"] = P.unit_bootstrap_ci(
            y_true=true, y_pred=pred, units=units, n=200)
    return arrays, metrics


HEADLINE = {"headline": tasks.headline(tasks.resolve())}    # what a probe record says is headline


def _items_file(directory: Path, arrays: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / tasks.ITEMS_ARTIFACT
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def store(fresh_mlflow_store):
    uri = fresh_mlflow_store("sc")
    d = Path(uri.removeprefix("sqlite:///")).parent
    client = T.connect(uri)
    exp = T.experiment_id(client, EXP, artifact_location=str(d / "art"))
    parent = T.parent_run(client, exp, EXP, d / "sweep1", {"num_samples": 7})
    logged = {}      # (config, seed) -> metrics as logged

    def log(run, name, seed, valid_iou, test_iou, acc, loss, status="finished", items=True, **extra):
        arrays, metrics = _scored(seed, {"valid": valid_iou, "test": test_iou}, {"valid": acc + 0.01, "test": acc})
        metrics.update({"final_loss": loss, "diverged": 0, **extra})
        artifacts = [_items_file(d / "items" / run, arrays)] if items else []
        T.log_final(client, run, metrics, artifacts, status, probe=HEADLINE)   # client.log_artifact for the npz
        logged[(name, seed)] = metrics

    def trial(cfg, seed, *args, status="finished", items=True, **extra):
        run = T.trial_run(client, exp, parent, f"{T.config_key(cfg)}-{seed}", T.config_key(cfg),
                          flatten(replace(cfg, seed=seed)), seed)
        if status != "running":
            log(run, T.config_key(cfg), seed, *args, status=status, items=items, **extra)
        return run

    #        seed  valid  test   acc    loss        validation ranks A above C; test has C above A
    trial(A, 0, 0.40, 0.30, 0.20, 3.0)
    trial(A, 1, 0.44, 0.36, 0.21, 2.9)
    trial(C, 0, 0.38, 0.34, 0.22, 2.8)
    trial(C, 1, 0.41, 0.40, 0.23, 2.7)
    trial(B, 0, 0.55, 0.50, 0.30, 2.2)
    trial(B, 1, 0.57, 0.52, 0.32, 2.1)
    trial(E, 0, 0.45, 0.45, 0.25, 2.4)
    trial(E, 1, 0.46, 0.46, 0.25, 2.3, items=False)     # no probe_items.npz: row without interval
    trial(A, 2, 0.20, 0.18, 0.15, 50.0, status="diverged", diverged=1, diverged_step=70)
    trial(B, 2, status="running")  # still running: skipped
    for seed in (0, 1):            # the random-init floor, over the trials' seeds
        rnd = T.reference_run(client, exp, None, "random", {}, seed=seed)   # shared: no parent
        log(rnd, "reference random", seed, 0.20, 0.19 + 0.01 * seed, 0.06, None)
    ref = T.reference_run(client, exp, parent, "dinov3", {"weights": "dinov3.pth"})
    T.log_final(client, ref, {"valid/basketball_iou": 0.70, "valid/basketball_iou_ci_low": 0.65,
                              "valid/basketball_iou_ci_high": 0.75, "test/basketball_iou": 0.67,
                              "test/basketball_iou_ci_low": 0.62, "test/basketball_iou_ci_high": 0.72,
                              "test/basketball_units": 3, "valid/soccer_bal_acc": 0.29,
                              "test/soccer_bal_acc": 0.282, "test/soccer_bal_acc_ci_low": 0.279,
                              "test/soccer_bal_acc_ci_high": 0.285}, probe=HEADLINE)   # an older run: no items
    # another sweep in the same experiment
    other = T.parent_run(client, exp, EXP, d / "sweep2", {})
    r = T.trial_run(client, exp, other, "d0", KD, flatten(D), 0)
    log(r, KD, 0, 0.45, 0.45, 0.23, 2.5)
    return dict(client=client, uri=uri, parent=parent, dir=d, logged=logged)


@pytest.fixture(scope="module")
def records(store):
    return S.load_runs(store["client"], EXP, parent_run_id=store["parent"])


@pytest.fixture(scope="module")
def card(records):
    return S.build(records, n_boot=500)


def _mean(store, key, split, metric, seeds=(0, 1)):
    return float(np.mean([store["logged"][(key, s)][S.split_name(split, metric)] for s in seeds]))


def test_load_runs_reads_each_counted_runs_items(store, records):
    keys = sorted(r.config_key for r in records)
    # 8 finished + 1 diverged trial, 3 references; the running trial and the other sweep are out
    assert len(records) == 12 and KD not in keys
    assert keys.count(KA) == 3 and keys.count(KB) == 2 and keys.count("reference random") == 2
    div = [r for r in records if r.diverged]
    assert len(div) == 1 and div[0].config_key == KA and div[0].status == "diverged"
    assert div[0].items is None                                   # not counted: not downloaded
    with_items = {(r.config_key, r.seed) for r in records if r.items is not None}
    assert (KE, "1") not in with_items and ("reference dinov3", "0") not in with_items  # no artifact: tolerated
    assert (KE, "0") in with_items and ("reference random", "1") in with_items and len(with_items) == 9
    a0 = next(r for r in records if r.config_key == KA and r.seed == "0")
    np.testing.assert_array_equal(a0.split_items("basketball", "test")["unit"], UNITS["basketball"]["test"])
    assert a0.split_items("soccer", "valid")["pred"].dtype == np.int64
    everything = S.load_runs(store["client"], EXP, items=False)
    assert KD in {r.config_key for r in everything} and len(everything) == 13
    assert all(r.items is None for r in everything)
    with pytest.raises(T.TrackingError, match="no experiment named 'nope'"):
        S.load_runs(store["client"], "nope")


def test_rows_means_stds_counts_deltas(card, store):
    assert [r.config for r in card.rows] == ["reference random", "reference dinov3", KA, KC, KB, KE]
    a, b = card.row(KA), card.row(KB)
    ia, ib = a.stats[IOU], b.stats[IOU]
    assert (a.n_seeds, b.n_seeds, card.row("reference random").n_seeds) == (2, 2, 2)
    assert a.n_diverged == 1 and b.n_diverged == 0
    assert ia.test.mean == pytest.approx(0.33) and ia.test.std == pytest.approx(math.sqrt(0.0018))
    assert (ia.test.min, ia.test.max) == (pytest.approx(0.30), pytest.approx(0.36))
    assert ia.valid.mean == pytest.approx(0.42) and ia.valid.n == 2
    assert ib.test.mean == pytest.approx(0.51) and ib.test.std == pytest.approx(math.sqrt(0.0002))
    assert ia.delta_vs_dinov3 == pytest.approx(0.33 - 0.67)             # on test means
    dino = card.row("reference dinov3").stats[IOU]
    assert dino.test.n == 1 and dino.test.std is None and dino.delta_vs_dinov3 is None
    assert card.row(KB).stats[ACC].test.mean == pytest.approx(_mean(store, KB, "test", ACC))
    assert card.row(KB).stats[ACC].valid.mean == pytest.approx(_mean(store, KB, "valid", ACC))
    assert [r.run_id for r in card.diverged] and card.diverged[0].config_key == KA


def test_row_intervals_come_from_the_items_with_the_logged_ci_only_for_one_seed(card):
    a = card.row(KA).stats[IOU]
    for s in (a.valid, a.test):
        assert s.source == "items" and s.low < s.mean < s.high
    assert (a.test.unit, a.test.n_units, a.valid.unit, a.valid.n_units) == ("arena", 3, "arena", 2)
    assert card.row(KA).stats[ACC].test.unit == "game" and card.row(KA).stats[ACC].test.n_units == 4
    # one seed without probe_items.npz: its own logged CI is that run's unit bootstrap
    dino = card.row("reference dinov3").stats[IOU].test
    assert (dino.low, dino.high, dino.source, dino.unit) == (0.62, 0.72, "run", "arena")
    # two seeds, one without items: no interval (never the mean of the bounds), and it says why
    e = card.row(KE).stats[IOU].test
    assert e.mean == pytest.approx(0.455) and not e.has_interval
    assert e.note == "no probe_items.npz for 1 of 2 seeds"
    assert card.row("reference dinov3").stats[ACC].valid.note          # no items, no logged CI


def test_ranking_reads_validation_not_test(card):
    iou = {r.config: r.stats[IOU] for r in card.rows}
    # test alone would put C (0.37) above A (0.33); validation says A (0.42) over C (0.395)
    assert iou[KC].test.mean > iou[KA].test.mean and iou[KA].valid.mean > iou[KC].valid.mean
    order = ["reference dinov3", KB, KE, KA, KC, "reference random"]
    assert [iou[k].rank for k in order] == [1, 2, 3, 4, 5, 6]
    assert [r.config for r in card.ranked(IOU)] == order
    assert iou["reference dinov3"].not_separable is None               # top row: nothing above
    assert iou[KC].above == KA and iou[KC].not_separable is True
    assert iou[KC].reason == "interval overlap"
    assert iou[KE].not_separable is True and iou[KE].reason == "no interval"
    assert iou["reference random"].not_separable is False              # far below C on validation


def _rec(key, seed, valid=None, test=None, loss=None, status="finished", arm="scratch", end=0,
         kind="trial", units=None):
    """A RunRecord for basketball_iou: a float is a logged metric only; per-frame IoUs become the
    run's items (`units`: their arenas, default 4) and the metric is their mean."""
    metrics, items = {}, {}
    for split, v in (("valid", valid), ("test", test)):
        if v is None:
            continue
        if np.ndim(v):
            v = np.asarray(v, dtype=float)
            u = np.asarray(units if units is not None else np.arange(len(v)) % 4).astype(str)
            items[split] = {"unit": u, "iou": v}
            v = float(v.mean())
        metrics[S.split_name(split, IOU)] = v
    if loss is not None:
        metrics["final_loss"] = loss
    return S.RunRecord(run_id=f"{key}-{seed}-{end}", run_name=f"{key} s{seed}", kind=kind,
                       config_key=key, status=status,
                       params={"arm": arm, "steps": "100", "views": "2x224", "clip": "0.0",
                               "seed": str(seed)}, metrics=metrics, end_time=end,
                       items={"basketball": items} if items else None,
                       reference="random" if key == S.FLOOR_KEY else None)


def _width(s: S.SplitStats) -> float:
    return s.high - s.low


def test_rank_one_is_the_row_better_on_validation_and_the_markdown_says_so():
    arenas = np.repeat(np.arange(4), 20)
    effect = np.repeat([-0.02, 0.0, 0.01, 0.01], 20)
    recs = [_rec(k, s, valid=_frames(v, effect, 0.03, s), test=_frames(t, effect, 0.03, 10 + s), units=arenas)
            for k, v, t in (("better-on-valid", 0.60, 0.40), ("better-on-test", 0.50, 0.70)) for s in (0, 1)]
    card = S.build(recs, metrics=(IOU,), n_boot=300)
    assert [r.config for r in card.ranked(IOU)] == ["better-on-valid", "better-on-test"]
    top, second = card.row("better-on-valid").stats[IOU], card.row("better-on-test").stats[IOU]
    assert top.rank == 1 and second.rank == 2 and second.not_separable is False
    md = S.to_markdown(card)
    assert "Ranked on validation (valid/basketball_iou); test shown, never used to choose" in md
    assert md.index("better-on-valid") < md.index("better-on-test")
    rows = {r["config"]: r for r in csv.DictReader(io.StringIO(S.to_csv(card)))}
    assert rows["better-on-valid"][f"{IOU}_rank"] == "1" and rows["better-on-test"][f"{IOU}_rank"] == "2"


def test_row_interval_over_seeds_and_units():
    """3 seeds at 0.45 / 0.50 / 0.55 (true mean 0.50), unit effects sd 0.1, frame noise 0.05."""
    def row(n_units, offsets, key):
        rng = np.random.default_rng(n_units)
        units = np.repeat(np.arange(n_units), 10)
        effect = np.repeat(rng.normal(0, 0.1, n_units), 10)
        frames = [0.5 + effect + rng.normal(0, 0.05, len(units)) for _ in offsets]
        recs = [_rec(key, s, test=f + off, units=units) for s, (f, off) in enumerate(zip(frames, offsets))]
        return S.build(recs, metrics=(IOU,), n_boot=1000).row(key).stats[IOU].test

    seeds = (-0.05, 0.0, 0.05)
    rows = {k: row(k, seeds, f"{k} units") for k in (4, 16, 64)}
    for k, s in rows.items():
        assert s.low < 0.5 < s.high, (k, s.low, s.high)                 # covers the true mean
        assert s.n == 3 and s.unit == "arena" and s.n_units == k
    single = row(16, (0.0,), "one seed")                                 # that seed's unit bootstrap
    assert single.n == 1 and _width(rows[16]) > 1.2 * _width(single)     # seeds disagree: wider
    assert _width(rows[4]) > _width(rows[16]) > _width(rows[64])         # more units: narrower
    assert _width(rows[64]) < 0.7 * _width(rows[4])
    agree = row(16, (0.0, 0.0, 0.0), "seeds agree")                      # no seed spread to add
    assert _width(agree) == pytest.approx(_width(single), rel=0.15)


def test_vs_floor_compares_test_intervals_with_the_random_init_row():
    units = np.repeat(np.arange(4), 15)
    effect = np.repeat([-0.02, 0.0, 0.01, 0.01], 15)

    def recs(key, test_mean, kind="trial"):
        return [_rec(key, s, valid=_frames(test_mean, effect, 0.05, s), test=_frames(test_mean, effect, 0.05, 20 + s),
                     units=units, kind=kind) for s in (0, 1)]

    card = S.build(recs(S.FLOOR_KEY, 0.20, kind="reference") + recs("far above", 0.60) + recs("close", 0.21)
                   + recs("far below", 0.02), metrics=(IOU,), n_boot=300)
    vs = {r.config: r.stats[IOU].vs_floor for r in card.rows}
    assert vs == {S.FLOOR_KEY: None, "far above": "above", "close": "≈", "far below": "below"}
    floor, close = card.row(S.FLOOR_KEY).stats[IOU].test, card.row("close").stats[IOU].test
    assert close.low <= floor.high and floor.low <= close.high               # "≈": the intervals overlap
    assert card.beats_floor() == [("far above", IOU)]
    md = S.to_markdown(card)
    assert "| above |" in md and "| ≈ |" in md and "| below |" in md and "| floor |" in md


def test_spearman_constructed():
    recs = [_rec(f"k{i}", 0, valid=iou, test=1 - iou, loss=loss) for i, (iou, loss) in
            enumerate([(0.5, 1.0), (0.4, 2.0), (0.3, 3.0), (0.2, 4.0), (0.1, 5.0)])]
    recs.append(_rec("kx", 0, valid=0.9, loss=9.0, status="diverged"))  # excluded
    rho, p, n = S.spearman(recs, IOU)                                      # validation by default
    assert rho == pytest.approx(-1.0) and n == 5 and p < 0.05
    assert S.spearman(recs, IOU, split="test")[0] == pytest.approx(1.0)
    assert S.spearman(recs[:2], IOU) is None
    assert S.spearman(recs, IOU, arm="lora") is None


def test_spearman_fixture(card):
    rho, p, n = card.spearman[IOU]["all"]
    # losses 3.0 2.9 2.8 2.7 2.2 2.1 2.4 2.3 against valid IoU .40 .44 .38 .41 .55 .57 .45 .46:
    # rank differences 6 3 5 2 -5 -7 -1 -3 (hand-ranked, no ties)
    assert n == 8 and rho == pytest.approx(1 - 6 * 158 / (8 * 63))      # -0.881


def test_duplicate_seed_and_no_interval_rule():
    recs = [_rec("x", 0, valid=0.30, end=1), _rec("x", 0, valid=0.40, end=2),  # same seed twice: latest counts
            _rec("y", 0, valid=0.39)]                                          # one seed each, no items or CI
    card = S.build(recs, metrics=(IOU,), n_boot=100)
    x = card.row("x").stats[IOU]
    assert card.row("x").n_seeds == 1 and x.valid.mean == pytest.approx(0.40) and len(card.duplicates) == 1
    y = card.row("y").stats[IOU]
    assert y.not_separable is True and y.reason == "no interval"


def test_markdown_csv_plot(card, records, tmp_path):
    md = S.to_markdown(card)
    a = card.row(KA).stats[IOU]
    for s in ("### Basketball IoU", "### Soccer bal. acc", "Ranked on validation (valid/basketball_iou)",
              "Ranked on validation (valid/soccer_bal_acc)", f"0.330 ± 0.042 [{a.test.low:.3f}, {a.test.high:.3f}]",
              f"0.420 [{a.valid.low:.3f}, {a.valid.high:.3f}]", "−0.340", "0.670 [0.620, 0.720]",
              "Frozen DINOv3", "2 (+1 diverged)", "diverged", "ρ = −0.88", "not separable", "test: arena (3)",
              "no probe_items.npz for 1 of 2 seeds", "| 5 ≈ |"):
        assert s in md, s
    assert max(len(line) for line in md.splitlines() if line.startswith("|")) <= 160
    rows = {r["config"]: r for r in csv.DictReader(io.StringIO(S.to_csv(card)))}
    ra = rows[KA]
    assert float(ra[f"{IOU}_test_mean"]) == pytest.approx(0.33)
    assert float(ra[f"{IOU}_test_std"]) == pytest.approx(0.042426, abs=1e-6)
    assert float(ra[f"{IOU}_valid_mean"]) == pytest.approx(0.42)
    assert float(ra[f"{IOU}_test_low"]) == pytest.approx(a.test.low, abs=1e-6)
    assert ra[f"{IOU}_test_unit"] == "arena" and ra[f"{IOU}_test_n_units"] == "3"
    assert ra["n_seeds"] == "2" and ra["diverged"] == "1" and ra[f"{IOU}_rank"] == "4"
    assert rows[KC][f"{IOU}_not_separable"] == "1" and ra[f"{IOU}_vs_floor"] == "above"
    assert float(ra[f"{IOU}_delta_vs_dinov3"]) == pytest.approx(-0.34)
    assert rows["reference dinov3"][f"{IOU}_delta_vs_dinov3"] == ""
    assert rows[KE][f"{IOU}_test_low"] == ""
    for col in ("config", "arm", "steps", "views", "clip", "n_seeds"):
        assert col in ra
    png = S.plot_vs_steps(card, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert S.plot_vs_steps(records, tmp_path / "r.png", metrics=(IOU,)).stat().st_size > 5000


def test_main(store, tmp_path, capsys):
    out = tmp_path / "out"
    rc = S.main(["--experiment", EXP, "--tracking-uri", store["uri"], "--out", str(out),
                 "--parent-run", store["parent"], "--bootstrap", "200"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "0.330 ± 0.042 [" in printed and "Ranked on validation" in printed
    for f in ("scorecard.md", "scorecard.csv", "scorecard.png"):
        assert (out / f).stat().st_size > 0
    assert S.main(["--experiment", EXP, "--tracking-uri", store["uri"], "--format", "csv",
                   "--bootstrap", "100"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("config,") and KD in printed  # whole experiment: both sweeps
    assert S.main(["--experiment", "nope", "--tracking-uri", store["uri"]]) == 2
    assert "no experiment named" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        S.main(["--help"])
    assert e.value.code == 0
