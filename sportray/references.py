"""References: backbones probed as they are, beside the trials -- the floor, the bar, your own.

    random   the floor: a randomly initialised ViT (`--model`, default vit_small) of each seed
    dinov3   the bar: frozen DINOv3 ViT-S/16 from `--weights FILE` (never downloaded)
    base     the LoRA arm's frozen base when it is not DINOv3 (the demo's synthetic base)
    timm     any timm ViT with 16-pixel patches from `--weights FILE` and `--model NAME`

Each is a run of its own (tracking.reference_run) and a row of the scorecard; the probe heads and
the bootstrap follow the run's seed, so a reference has a spread over seeds like a trial. A
reference of your own is one more `Reference` in REFERENCES.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sportray.config import ConfigError


def _random(source: dict):
    # torch and timm load here, not at import: the scorecard and every --help read this registry
    from sportray import backbones

    return backbones.build_backbone(source.get("model") or "vit_small", seed=int(source.get("seed", 0)))


def _dinov3(source: dict):
    from sportray import backbones

    return backbones.load_dinov3(source.get("weights") or None)


def _checkpoint(source: dict):
    from sportray import backbones

    return backbones.load_checkpoint(source.get("checkpoint") or source["weights"])[0]


def _timm(source: dict):
    from sportray import backbones

    return backbones.load_timm(source["model"], source["weights"])


@dataclass(frozen=True)
class Reference:
    name: str
    title: str                        # its scorecard row
    weights: str                      # what --weights must be: "" (none), "file" or "dir"
    load: Callable[[dict], object]    # source dict -> backbones.Backbone
    role: str = ""                    # "floor" (random init), "bar" (what to beat), "base" (LoRA's base)
    names_model: bool = False         # the model is part of its identity (timm NAME)

    def label(self, model: str = "") -> str:
        """What tells two references apart: "dinov3", "timm vit_base_patch16_224"."""
        return f"{self.name} {model}" if self.names_model else self.name

    def logged_model(self, model: str) -> str:
        return {"dinov3": "vit_small_patch16_dinov3", "base": "frozen base"}.get(self.name, model)


REFERENCES: dict[str, Reference] = {r.name: r for r in (
    Reference("random", "Random init (reference)", "", _random, role="floor"),
    Reference("dinov3", "Frozen DINOv3 (reference)", "file", _dinov3, role="bar"),
    Reference("base", "Frozen LoRA base (reference)", "dir", _checkpoint, role="base"),
    Reference("timm", "Frozen timm model (reference)", "file", _timm, names_model=True),
)}


def get(name: str) -> Reference:
    if name not in REFERENCES:
        raise ConfigError(f"reference {name!r}: expected one of {', '.join(REFERENCES)}")
    return REFERENCES[name]


def check(name: str, weights: str = "", model: str = "") -> Reference:
    """The reference, after checking what it needs exists (before anything starts)."""
    ref = get(name)
    if ref.name == "dinov3" and not weights:
        raise FileNotFoundError("the frozen-DINOv3 bar is unavailable: no weights file given. Pass "
                                "--weights PATH (a DINOv3 ViT-S/16 checkpoint); sportray never downloads "
                                "weights and never substitutes a random model for the bar")
    if ref.weights == "file" and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights}: file does not exist (reference {name})")
    if ref.weights == "dir" and not Path(weights, "meta.json").is_file():
        raise FileNotFoundError(f"reference {name}: {weights} is not a sportray backbone directory")
    if ref.names_model and not model:
        raise ConfigError(f"reference {name}: name the architecture with --model (a timm model name)")
    return ref


def load(source: dict):
    """The backbone a probe source names: {"checkpoint": dir} (a trained trial) or
    {"reference": name, "model": ..., "seed": ..., "weights": ...}."""
    if "reference" not in source:
        return _checkpoint(source)
    return get(source["reference"]).load(source)
