#!/usr/bin/env python
"""The two reference rows of the scorecard, each an MLflow run of its own:
the floor (random-init backbone) and the bar (frozen DINOv3 ViT-S/16 from --weights).

Without --weights the bar is reported as unavailable; it is never replaced by a random model.
--experiment puts the rows beside a sweep's trials (e.g. --experiment scratch_views).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sportray.config import DataConfig, ProbeConfig, default_tracking_uri  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python sweeps/references.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("demo", "paper"), default="demo",
                   help="demo: tiny ViT floor; paper: ViT-S/16 floor")
    p.add_argument("--weights", default="", help="DINOv3 ViT-S/16 weights file (the bar)")
    p.add_argument("--experiment", default="references")
    p.add_argument("--seeds", default="0,1", help="seeds of the random floor")
    p.add_argument("--tracking-uri", default=default_tracking_uri())
    p.add_argument("--address", default=None, help="join an existing Ray cluster")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--basketball", default=None)
    p.add_argument("--soccer-labels", default=None)
    args = p.parse_args(argv)

    from sportray.runtime import init_ray
    from sportray.trial import run_reference

    data = DataConfig(**{k: v for k, v in {"data_dir": args.data_dir, "basketball": args.basketball,
                                           "soccer_labels": args.soccer_labels}.items() if v})
    init_ray(args.address)
    model = "vit_tiny_demo" if args.preset == "demo" else "vit_small"
    for seed in (int(s) for s in args.seeds.split(",")):
        m = run_reference("random", data=data, probe=ProbeConfig(seed=seed), tracking_uri=args.tracking_uri,
                          experiment=args.experiment, model=model, seed=seed)
        print(f"random init ({model}, seed {seed}): basketball IoU {m.get('basketball_iou'):.3f}, "
              f"soccer balanced accuracy {m.get('soccer_bal_acc'):.3f}")
    if args.weights:
        m = run_reference("dinov3", data=data, probe=ProbeConfig(), tracking_uri=args.tracking_uri,
                          experiment=args.experiment, weights=args.weights)
        print(f"frozen DINOv3: basketball IoU {m.get('basketball_iou'):.3f}, "
              f"soccer balanced accuracy {m.get('soccer_bal_acc'):.3f}")
    else:
        print("frozen DINOv3: unavailable (no --weights file); never replaced by a random model")
    print(f"MLflow: {args.tracking_uri} experiment {args.experiment!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
