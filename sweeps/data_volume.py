#!/usr/bin/env python
"""Path A at equal steps on a subsample vs the whole frame store (the study: 32k vs 265k frames).

The store is shuffled when written, so --max-frames N takes a uniform random N frames. The study
found no difference (~0.704 IoU either way) and read it as "diversity, not volume": run it on
your sport, with seeds, before believing it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# tune.choice(...) here is sportray.sweep's: named now, built with Ray when the sweep runs,
# so --help and --print-config never import Ray
from sportray.sweep import Preset, SweepSpec, main, tune  # noqa: E402

SPEC = SweepSpec(
    name="data_volume",
    description=__doc__,
    space={"data.max_frames": tune.choice([32_000, 0])},   # 0 = the whole store (~265k frames)
    presets={
        "demo": Preset(
            pretrain=dict(arm="scratch", model="vit_tiny_demo", views="2x224", steps=60, batch_size=16,
                          warmup_steps=5, log_every=10, checkpoint_every=30, cpus_per_worker=0.45,
                          sigreg_directions=128, proj_dim=64),
            data=dict(every_s=1.0), num_configs=2, seeds=(0, 1),
            space={"data.max_frames": tune.choice([100, 0])}),
        "paper": Preset(
            pretrain=dict(arm="scratch", model="vit_small", views="2x224", steps=50_000, batch_size=256,
                          warmup_steps=1000, log_every=50, checkpoint_every=2000, gpus_per_worker=1,
                          cpus_per_worker=4, workers=4, compile=True, sigreg_directions=1024),
            num_configs=2, seeds=(0, 1)),
    },
    metric="basketball_iou",
)

if __name__ == "__main__":
    sys.exit(main(SPEC))
