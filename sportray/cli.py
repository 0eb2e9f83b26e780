"""`sportray ...`: the command line. Flags are generated from the config dataclasses
(sportray/config.py), so `--steps` is PretrainConfig.steps and so on, one name everywhere."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
import typing
from pathlib import Path

from sportray.config import (ConfigError, DataConfig, PretrainConfig, ProbeConfig, default_tracking_uri,
                             parse_seeds)
from sportray.validate import OneLineParser

EXIT_BAD_INPUT = 2


# ----------------------------------------------------------------------------- dataclass <-> flags

def add_config_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One --flag per dataclass field (underscores -> dashes), typed, default shown in --help."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__, cls.__doc__.strip().splitlines()[0] if cls.__doc__ else None)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, dest=f.name, type=float, nargs="+", default=default,
                               help=f"default: {' '.join(map(str, default))}")
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=default, help=f"default: {default!r}")


def config_from_args(cls, args: argparse.Namespace):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    for f in dataclasses.fields(cls):
        if isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=default_tracking_uri(),
                        help="MLflow tracking URI (default sqlite:///mlflow.db here, or $MLFLOW_TRACKING_URI)")
    parser.add_argument("--address", default=None,
                        help="join an existing Ray cluster (auto, host:port, ray://host:10001); "
                             "default: start a local one")


# ----------------------------------------------------------------------------- commands

def cmd_synth(args) -> int:
    from sportray.data.synthetic import write_synthetic
    from sportray.validate import check_writable_dir

    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed}: must be >= 0")
    check_writable_dir("DIR", args.dir)
    root = write_synthetic(Path(args.dir), seed=args.seed)
    print(json.dumps({"written": str(root)}, indent=1))
    return 0


def cmd_inspect(args) -> int:
    from sportray.data.inspect import inspect

    summary, problems = inspect(args.dir, soccer_splits=args.soccer_splits,
                                basketball_coco=args.basketball_coco,
                                basketball_images=args.basketball_images)
    summary["problems"] = [{"file": p.path, "reason": p.reason} for p in problems]
    print(json.dumps(summary, indent=1, default=str))
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


def cmd_frames(args) -> int:
    from sportray.data.frames import build_store, parse_sources
    from sportray.runtime import init_ray
    from sportray.validate import check_store_dir

    # Everything checked before Ray starts (~30 s) and before anything is written.
    if not Path(args.corpus).is_dir():
        raise ConfigError(f"CORPUS {args.corpus}: no such folder (a folder of videos or a SoccerNet root)")
    DataConfig(data_dir=args.data_dir, corpus=args.corpus, extra_sources=args.extra_sources,
               every_s=args.every_s, max_frames=args.max_frames, split_seed=args.seed).validate()
    if args.out:
        check_store_dir("--out", args.out)
    init_ray(args.address)
    info = build_store(parse_sources(args.corpus, args.extra_sources), args.out, every_s=args.every_s,
                       data_dir=args.data_dir, seed=args.seed)
    if args.max_frames and args.max_frames < info.frames:
        print(f"note: the store keeps all {info.frames} frames; --max-frames {args.max_frames} "
              "takes its first (shuffled, so uniformly random) frames at training time", file=sys.stderr)
    print(json.dumps({"store": info.path, "frames": info.frames, "videos": info.videos,
                      "reused": info.reused, "seconds": round(info.seconds, 1),
                      "bad_files": info.bad_files}, indent=1))
    if info.bad_files:
        print(f"warning: {len(info.bad_files)} bad file(s) skipped (listed above)", file=sys.stderr)
    return 0


def _summary(title: str, payload: dict, tracking_uri: str, dashboard: str = "") -> None:
    print(json.dumps(payload, indent=1, default=str))
    print(f"\n{title}", file=sys.stderr)
    if dashboard:
        print(f"  Ray dashboard : {dashboard}", file=sys.stderr)
    print(f"  MLflow        : {tracking_uri}  (look: mlflow ui --backend-store-uri {tracking_uri} "
          "--host 127.0.0.1)", file=sys.stderr)


def cmd_pretrain(args) -> int:
    from sportray import trial
    from sportray.runtime import init_ray
    from sportray.tracking import connect
    from sportray.validate import (check_address, check_data_fits, check_multi_host, check_resources,
                                   check_storage, check_tracking_uri)
    original = None
    if not args.rerun:  # every option checked before anything is created (the sqlite file included)
        cfg = config_from_args(PretrainConfig, args).validate()
        data = config_from_args(DataConfig, args).validate()
    check_tracking_uri(args.tracking_uri)
    check_storage(args.storage)
    check_address(args.address)
    connect(args.tracking_uri)  # an unreachable tracking URI fails before any training starts
    if args.rerun:
        # Everything the trial ran with comes from its run: config, data (its store), probe seed.
        cfg, data, probe, original = trial.load_rerun(args.tracking_uri, args.rerun)
        cfg = cfg.validate()
    else:
        probe = ProbeConfig()
    ray_info = init_ray(args.address)
    check_resources(cfg)      # a request the cluster cannot meet would wait forever
    check_multi_host(args.tracking_uri, {"--data-dir": data.data_dir, "--corpus": data.corpus,
                                         "--basketball": data.basketball, "--storage": args.storage})
    # The run's identity includes its data: the frame store's content key, not only its paths (the
    # same command line on another corpus is another run).
    from sportray.data.defaults import frame_store
    store = frame_store(data)
    check_data_fits(store.frames, cfg, data.max_frames, store.path)
    trial_id = ("rerun-" + args.rerun) if args.rerun else "pretrain-" + hashlib.sha256(json.dumps(
        [dataclasses.asdict(cfg), dataclasses.asdict(data), store.key], sort_keys=True).encode()).hexdigest()[:12]
    metrics = trial.run_trial(cfg, data, probe, tracking_uri=args.tracking_uri,
                              experiment=args.experiment, parent_run_id=None, trial_id=trial_id,
                              storage=args.storage, do_probe=args.probe)
    _summary(f"pretrain {metrics.get('status')}: checkpoint {metrics.get('checkpoint', '')}", metrics,
             args.tracking_uri, ray_info["dashboard_url"])
    if original is not None:
        print(f"re-run of {args.rerun} (code {original.get('code_version', '?')} then, "
              f"{trial.code_version()} now):", file=sys.stderr)
        from sportray import tasks
        for name in ("final_loss", *(f"{split}/{t.metric}" for t in tasks.resolve(probe) for split in ("valid", "test"))):
            was, now = original["metrics"].get(name), metrics.get(name)
            if was is not None and now is not None:
                print(f"  {name:24s} original {was:.6f}  re-run {now:.6f}  diff {now - was:+.2e}",
                      file=sys.stderr)
    return 0 if metrics.get("status") == "finished" else 1


def cmd_probe(args) -> int:
    from sportray import references, trial
    from sportray.runtime import init_ray
    from sportray.validate import check_address, check_tracking_uri

    data = config_from_args(DataConfig, args).validate()
    probe_cfg = config_from_args(ProbeConfig, args).validate()
    if args.reference:
        try:
            references.check(args.reference, args.weights, args.model)
        except FileNotFoundError as exc:
            raise ConfigError(f"--reference {args.reference}: {exc}") from None
    elif args.weights and not Path(args.weights).is_file():
        raise ConfigError(f"--weights {args.weights}: no such file")
    from sportray import tasks
    chosen = tasks.resolve(probe_cfg)     # an unknown or unimportable task fails here, named
    if args.checkpoint and not (Path(args.checkpoint) / "meta.json").is_file():
        raise ConfigError(f"--checkpoint {args.checkpoint}: not a sportray backbone folder (no meta.json)")
    if args.reference:
        parse_seeds(args.seeds)
    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed}: must be >= 0")
    check_tracking_uri(args.tracking_uri)
    check_address(args.address)
    from sportray.tracking import connect
    connect(args.tracking_uri)
    ray_info = init_ray(args.address)
    if args.reference:
        seeds = parse_seeds(args.seeds)
        by_seed = trial.run_references([args.reference], seeds, data=data, probe=probe_cfg,
                                       tracking_uri=args.tracking_uri, experiment=args.experiment,
                                       weights=args.weights, model=args.model)
        metrics = {f"{k} s{seed}": v for (_ref, seed), m in by_seed.items() for k, v in m.items()
                   if k.startswith(("test/", "valid/")) and "recall" not in k}
        metrics["status"] = "finished"
    else:
        import tempfile

        sets = tasks.build_sets(data, chosen)
        with tempfile.TemporaryDirectory() as tmp:
            metrics, artifacts = trial.run_probe_task({"checkpoint": args.checkpoint}, sets, probe_cfg, tmp)
            from sportray import tracking
            client = tracking.connect(args.tracking_uri)
            exp = tracking.experiment_id(client, args.experiment)
            run_id = tracking.trial_run(client, exp, None, "probe-" + str(Path(args.checkpoint).resolve()),
                                        f"probe {Path(args.checkpoint).resolve()}",
                                        {"checkpoint": args.checkpoint}, args.seed)
            tracking.log_final(client, run_id, metrics, artifacts, status="finished",
                               probe=trial.probe_record(artifacts))
            metrics["mlflow_run_id"] = run_id
    _summary("probe done", metrics, args.tracking_uri, ray_info["dashboard_url"])
    return 0


def cmd_scorecard(args) -> int:
    from sportray import scorecard

    argv = ["--experiment", args.experiment, "--format", args.format, "--tracking-uri", args.tracking_uri]
    if args.out:
        argv += ["--out", args.out]
    return scorecard.main(argv) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sportray",
        description="Self-supervised pretraining on sport video vs. a foundation model, on Ray. "
                    "With no data paths every command uses the embedded synthetic default.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write the embedded default (mini SoccerNet + mini DeepSportRadar)")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_synth)

    p = sub.add_parser("inspect", help="JSON summary of a corpus or probe set; non-zero exit on bad input")
    p.add_argument("dir")
    p.add_argument("--soccer-splits", default="",
                   help="folder of SoccerNetGames{Train,Valid,Test}.json (default: DIR's own, if any)")
    p.add_argument("--basketball-coco", default="",
                   help="the COCO file the basketball probe uses (train|val|test|trainval|trainvaltest|"
                        "challenge or a path; default trainvaltest)")
    p.add_argument("--basketball-images", default="",
                   help="folder the COCO file_names are relative to (default: detected)")
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser("frames", help="decode a corpus into a frame store with Ray Data (reused when unchanged)")
    p.add_argument("corpus")
    p.add_argument("--out", default=None, help="store directory (default: DATA_DIR/stores/<content key>)")
    p.add_argument("--every-s", type=float, default=4.0, help="one frame every this many seconds")
    p.add_argument("--max-frames", type=int, default=0, help="frames used at training time (0 = all)")
    p.add_argument("--extra-sources", default="", help="DIR[:WEIGHT],... more pretraining folders")
    p.add_argument("--data-dir", default=DataConfig().data_dir)
    p.add_argument("--seed", type=int, default=0, help="write-time shuffle seed")
    add_common(p)
    p.set_defaults(fn=cmd_frames)

    p = sub.add_parser("pretrain", help="one LeJEPA run on Ray Train, logged to MLflow")
    add_config_args(p, PretrainConfig)
    add_config_args(p, DataConfig, skip=("split_seed",))
    p.add_argument("--storage", default="sportray-runs", help="Ray Train storage path (shared across nodes)")
    p.add_argument("--rerun", default="", metavar="RUN_ID",
                   help="run a logged trial again from its MLflow run (config, data, seed), into "
                        "--experiment, and print its metrics beside the original's")
    p.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                   help="run the probes on the final backbone")
    p.add_argument("--experiment", default="pretrain", help="MLflow experiment")
    add_common(p)
    p.set_defaults(fn=cmd_pretrain)

    p = sub.add_parser("probe", help="probe evaluation of a checkpoint or a reference, logged to MLflow")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a sportray backbone directory (…/backbone)")
    which.add_argument("--reference", choices=("random", "dinov3", "timm"),
                       help="random: the floor; dinov3: the bar (--weights FILE); timm: any timm ViT/16 "
                            "(--model NAME --weights FILE)")
    p.add_argument("--weights", default="", help="weights file of --reference dinov3 or timm")
    p.add_argument("--model", default="vit_small",
                   help="architecture of --reference random (a sportray model) or timm (a timm name)")
    p.add_argument("--experiment", default="references")
    p.add_argument("--seed", type=int, default=0, help="probe seed of --checkpoint")
    p.add_argument("--seeds", default="0,1",
                   help="seeds of --reference (random init and probe heads), the sweeps' default seeds")
    add_config_args(p, ProbeConfig, skip=("seed",))
    add_config_args(p, DataConfig, skip=("corpus", "extra_sources", "store", "every_s", "max_frames"))
    add_common(p)
    p.set_defaults(fn=cmd_probe)

    p = sub.add_parser("scorecard", help="the study's table from MLflow runs")
    p.add_argument("--experiment", required=True)
    p.add_argument("--format", choices=("md", "csv"), default="md")
    p.add_argument("--out", default="")
    p.add_argument("--tracking-uri", default=default_tracking_uri())
    p.set_defaults(fn=cmd_scorecard)

    # Listed here for --help; main() hands `sportray sweep NAME ...` to the sweep's own parser.
    sub.add_parser("sweep", help="run sweeps/NAME.py: sportray sweep NAME [--preset P] [--set F=V] ... "
                                 "(NAME --help for its options)", add_help=False)
    return parser


def sweeps_dir() -> Path:
    """Where the sweep scripts are: $SPORTRAY_SWEEPS, else ./sweeps, else the checkout's sweeps/
    beside this package (an editable install)."""
    for d in (os.environ.get("SPORTRAY_SWEEPS", ""), "sweeps", Path(__file__).resolve().parents[1] / "sweeps"):
        if d and Path(d).is_dir():
            return Path(d)
    raise ConfigError("sportray sweep: no sweeps/ folder here or beside the sportray package; "
                      "set SPORTRAY_SWEEPS to the folder of the sweep scripts")


def cmd_sweep(argv: list[str]) -> int:
    """`sportray sweep NAME [options]` = `python sweeps/NAME.py [options]`: the same SPEC and
    sweep.main (or the script's own main, for references.py), the same exit codes."""
    if not argv or argv[0] in ("-h", "--help"):
        names = sorted(f.stem for f in sweeps_dir().glob("*.py") if not f.name.startswith("_"))
        print("usage: sportray sweep NAME [--preset demo|paper] [--set FIELD=VALUE ...] [options]\n"
              f"NAME: {', '.join(names)} (sweeps/NAME.py; `sportray sweep NAME --help` for its options)")
        return 0 if argv else EXIT_BAD_INPUT
    name, rest = argv[0], argv[1:]
    try:
        path = sweeps_dir() / f"{name}.py"
        if not path.is_file():
            known = ", ".join(sorted(f.stem for f in path.parent.glob("*.py")))
            raise ConfigError(f"no sweep {name!r} in {path.parent} (known: {known})")
    except ConfigError as err:
        print(f"sportray sweep: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    spec = importlib.util.spec_from_file_location(f"sportray_sweeps_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "SPEC"):
        from sportray.sweep import main as sweep_main
        return sweep_main(module.SPEC, rest)
    return module.main(rest)


def main(argv: list[str] | None = None) -> int:
    from sportray.validate import run_edge

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "sweep":
        return cmd_sweep(argv[1:])
    args = build_parser().parse_args(argv)
    # Bad input (a bad option, a missing or unreadable file, OSError/ValueError): one line naming
    # the file or option and what is wrong, exit 2, no traceback (sportray/validate.py).
    return run_edge(f"sportray {args.command}", lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
