"""The shared bases of the sweeps' presets: sweeps/*.py hold their search spaces and what their
recipe changes on top of these, nothing else.

- ``demo(...)``: the tiny ViT on the embedded synthetic default, CPU minutes (two trials at a time
  on 2 cores at ``cpus_per_worker`` 0.45);
- ``paper(...)``: ViT-S/16 at the study's budgets, each trial 4 GPU workers with 4 CPUs each,
  compiled.

Each takes the fields its sweep sets (those win over the base) and returns the PretrainConfig
fields of the preset, e.g. ``Preset(pretrain=demo(arm="scratch", lr=1e-3), ...)``.
"""
from __future__ import annotations

DEMO = dict(model="vit_tiny_demo", batch_size=16, cpus_per_worker=0.45, sigreg_directions=128, proj_dim=64)

PAPER = dict(model="vit_small", batch_size=256, warmup_steps=1000, log_every=50, checkpoint_every=2000,
             gpus_per_worker=1, cpus_per_worker=4, workers=4, compile=True, sigreg_directions=1024)


def demo(**fields) -> dict:
    """The demo base with `fields` on top (a sweep's own recipe wins)."""
    return {**DEMO, **fields}


def paper(**fields) -> dict:
    """The paper base with `fields` on top (a sweep's own recipe wins)."""
    return {**PAPER, **fields}
