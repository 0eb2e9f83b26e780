#!/usr/bin/env python
"""Path B: frozen DINOv3 + LoRA (r=8, 589,824 trainable) over training steps and seeds.

The study's first lesson: two points do not make a curve (10k looked better than 30k; 100k came
back). This sweep puts several step budgets on one curve, each with >= 2 seeds. Give the DINOv3
ViT-S/16 weights with --weights; without them the demo uses a small base pretrained on the
synthetic corpus, labelled base=synthetic-demo (never passed off as DINOv3).
"""
import sys

from sportray.presets import demo, paper   # the shared demo / paper bases
# tune.choice(...) here is sportray.sweep's: named now, built with Ray when the sweep runs,
# so --help and --print-config never import Ray
from sportray.sweep import Preset, SweepSpec, main, tune

SPEC = SweepSpec(
    name="lora_steps",
    description=__doc__,
    space={"steps": tune.choice([10_000, 30_000, 50_000, 100_000])},
    presets={
        "demo": Preset(
            pretrain=demo(arm="lora", base="synthetic-demo", views="2x224", warmup_steps=5, log_every=10,
                          checkpoint_every=40, lr=1e-3, clip=1.0, lambda_sigreg=0.2),
            data=dict(every_s=4.0), num_configs=3, seeds=(0, 1),
            space={"steps": tune.choice([20, 40, 80])},
            # a curve of three points, each with two seeds (the study: two points are not a curve)
            start_points=[dict(steps=20), dict(steps=40), dict(steps=80)]),
        "paper": Preset(
            pretrain=paper(arm="lora", views="2x224+6x96", warmup_steps=500),
            num_configs=4, seeds=(0, 1)),
    },
    metric="basketball_iou",
    references=("random", "dinov3"),
)

if __name__ == "__main__":
    sys.exit(main(SPEC))
