#!/usr/bin/env python
"""The reference rows of the scorecard, over seeds like any row: the floor (random-init backbone)
and the bar (frozen DINOv3 ViT-S/16 from --weights), each seed an MLflow run of its own.

Without --weights the bar is reported as unavailable; it is never replaced by a random model.
--experiment puts the rows beside a sweep's trials (e.g. --experiment scratch_views); use the
sweep's seeds (--seeds, default 0,1 as the sweeps' presets) so the rows compare like for like.
"""
import argparse
import sys

from sportray.config import ConfigError, DataConfig, ProbeConfig, default_tracking_uri, parse_seeds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python sweeps/references.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("demo", "paper"), default="demo",
                   help="demo: tiny ViT floor; paper: ViT-S/16 floor")
    p.add_argument("--weights", default="", help="DINOv3 ViT-S/16 weights file (the bar)")
    p.add_argument("--experiment", default="references")
    p.add_argument("--seeds", default="0,1", help="seeds of every reference (init and probe heads)")
    p.add_argument("--tracking-uri", default=default_tracking_uri())
    p.add_argument("--address", default=None, help="join an existing Ray cluster")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--basketball", default=None)
    p.add_argument("--soccer-labels", default=None)
    args = p.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ConfigError as err:
        print(f"references: error: {err}", file=sys.stderr)
        return 2

    from sportray.runtime import init_ray
    from sportray.trial import run_references

    data = DataConfig(**{k: v for k, v in {"data_dir": args.data_dir, "basketball": args.basketball,
                                           "soccer_labels": args.soccer_labels}.items() if v}).absolute()
    init_ray(args.address)
    model = "vit_tiny_demo" if args.preset == "demo" else "vit_small"
    results = run_references(("random", "dinov3"), seeds, data=data, probe=ProbeConfig(),
                             tracking_uri=args.tracking_uri, experiment=args.experiment,
                             weights=args.weights, model=model)
    for (ref, seed), m in results.items():
        print(f"{ref} seed {seed}: basketball IoU valid {m.get('valid/basketball_iou', float('nan')):.3f} "
              f"test {m.get('test/basketball_iou', float('nan')):.3f}; soccer balanced accuracy valid "
              f"{m.get('valid/soccer_bal_acc', float('nan')):.3f} test {m.get('test/soccer_bal_acc', float('nan')):.3f}")
    print(f"MLflow: {args.tracking_uri} experiment {args.experiment!r}; the scorecard: "
          f"sportray scorecard --experiment {args.experiment}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
