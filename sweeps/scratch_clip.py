#!/usr/bin/env python
"""Path A at a long budget with and without gradient-norm clipping: the study's instability.

The study's 100k-step scratch run scored worse than 50k -- a loss spike near step 60k that never
recovered, weights 2.6x further from init -- and clipping brought it back within seed noise.
This sweep reruns that comparison with the diagnostics on (grad norm before clipping, distance
from init, spike guard): a trial that diverges ends with status diverged, not with a "finding".
"""
import sys

from sportray.presets import demo, paper   # the shared demo / paper bases
# tune.choice(...) here is sportray.sweep's: named now, built with Ray when the sweep runs,
# so --help and --print-config never import Ray
from sportray.sweep import Preset, SweepSpec, main, tune

SPEC = SweepSpec(
    name="scratch_clip",
    description=__doc__,
    space={"clip": tune.choice([0.0, 1.0])},
    presets={
        "demo": Preset(
            pretrain=demo(arm="scratch", views="2x224", steps=60, lr=3e-3, warmup_steps=5, log_every=5,
                          checkpoint_every=30),
            data=dict(every_s=1.0), num_configs=2, seeds=(0, 1)),
        "paper": Preset(
            pretrain=paper(arm="scratch", views="6x224", steps=100_000),
            num_configs=2, seeds=(0, 1)),
    },
    metric="basketball_iou",
)

if __name__ == "__main__":
    sys.exit(main(SPEC))
