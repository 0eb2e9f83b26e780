#!/usr/bin/env python
"""Path A at equal steps on a subsample vs the whole frame store (the study: 32k vs 265k frames).

The store is shuffled when written, so --max-frames N takes a uniform random N frames. The study
found no difference (~0.704 IoU either way) and read it as "diversity, not volume": run it on
your sport, with seeds, before believing it.
"""
import sys

from sportray.presets import demo, paper   # the shared demo / paper bases
# tune.choice(...) here is sportray.sweep's: named now, built with Ray when the sweep runs,
# so --help and --print-config never import Ray
from sportray.sweep import Preset, SweepSpec, main, tune

SPEC = SweepSpec(
    name="data_volume",
    description=__doc__,
    space={"data.max_frames": tune.choice([32_000, 0])},   # 0 = the whole store (~265k frames)
    presets={
        "demo": Preset(
            pretrain=demo(arm="scratch", views="2x224", steps=60, warmup_steps=5, log_every=10,
                          checkpoint_every=30),
            data=dict(every_s=1.0), num_configs=2, seeds=(0, 1),
            space={"data.max_frames": tune.choice([100, 0])}),
        "paper": Preset(
            pretrain=paper(arm="scratch", views="2x224", steps=50_000),
            num_configs=2, seeds=(0, 1)),
    },
    metric="basketball_iou",
)

if __name__ == "__main__":
    sys.exit(main(SPEC))
