"""Typed configuration: the single source of truth for every stage.

CLI flags (sportray/cli.py) and sweep spaces (sportray/sweep.py, sweeps/*.py) map onto these
dataclasses by field name, and MLflow params are their flattened field names, so a field
added here shows up in the CLI, the sweep, and the MLflow compare view under one name.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A bad option value; the message names the option and what is wrong."""


# The 17 SoccerNet action-spotting classes, in the order of DESIGN.md §4 (probe label ids).
SOCCER_CLASSES: tuple[str, ...] = (
    "Penalty", "Kick-off", "Goal", "Substitution", "Offside", "Shots on target",
    "Shots off target", "Clearance", "Ball out of play", "Throw-in", "Foul",
    "Indirect free-kick", "Direct free-kick", "Corner", "Yellow card", "Red card",
    "Yellow->red card",
)

PROBE_SIZE = 224          # probe input side; 224 / 16 = 14 tiles per side
PATCH = 16
TILES = PROBE_SIZE // PATCH
TILE_COVER_MIN = 0.25     # a tile is "player" if the union of masks covers >= 25 % of it


def default_data_dir() -> Path:
    return Path(os.environ.get("SPORTRAY_DATA_DIR", "sportray-data"))


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")


def absolute_tracking_uri(uri: str) -> str:
    """sqlite:///mlflow.db -> sqlite:////abs/cwd/mlflow.db. Ray workers run in other working
    directories, so a relative sqlite path must be pinned to the user's directory first."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


_VIEW_GROUP = re.compile(r"^([1-9]\d*)x([1-9]\d*)$")


def parse_views(spec: str) -> tuple[tuple[int, int], ...]:
    """'2x224+6x96' -> ((2, 224), (6, 96)). The first group are the global views.

    Raises ConfigError naming the spec for things like '3x0' or '2x224+x96'.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--views {spec!r}: expected COUNTxSIZE[+COUNTxSIZE...], e.g. 2x224+6x96")
    groups = []
    for part in spec.strip().split("+"):
        m = _VIEW_GROUP.match(part.strip())
        if not m:
            raise ConfigError(
                f"--views {spec!r}: group {part!r} is not COUNTxSIZE with COUNT and SIZE positive "
                "integers (e.g. 2x224+6x96)")
        count, size = int(m.group(1)), int(m.group(2))
        if size % PATCH:
            raise ConfigError(f"--views {spec!r}: view size {size} is not a multiple of the patch size {PATCH}")
        groups.append((count, size))
    if groups[0][0] < 1:
        raise ConfigError(f"--views {spec!r}: needs at least one global view")
    return tuple(groups)


def parse_seeds(spec: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2): distinct non-negative seeds (a repeated seed is not a new sample)."""
    try:
        seeds = tuple(int(s) for s in str(spec).split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--seeds {spec!r}: expected a comma list of integers, e.g. 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {spec!r}: expected distinct non-negative integers, e.g. 0,1,2")
    return seeds


@dataclass
class DataConfig:
    """Where frames and probe sets come from. Empty paths mean the embedded default."""
    data_dir: str = field(default_factory=lambda: str(default_data_dir()))
    corpus: str = ""                 # SoccerNet root or any folder of videos; "" -> synthetic
    extra_sources: str = ""          # "DIR[:WEIGHT],DIR[:WEIGHT]" extra pretraining folders
    store: str = ""                  # frame store dir; "" -> content-addressed under data_dir
    every_s: float = 4.0             # one frame every this many seconds of video
    max_frames: int = 0              # 0 = all frames of the store
    basketball: str = ""             # DeepSportRadar root; "" -> synthetic
    soccer_labels: str = ""          # SoccerNet root for the soccer probe; "" -> corpus or synthetic
    test_arenas: str = ""            # comma list; "" -> the dataset's default held-out arenas
    split_seed: int = 0
    basketball_coco: str = ""        # the COCO file of the basketball probe: train|val|test|trainval|
                                     # trainvaltest|challenge or a .json path; "" -> trainvaltest.json
                                     # when present, else the only one
    basketball_images: str = ""      # folder the COCO file_names are relative to; "" -> detected (the
                                     # json's folder, the root, or basketball-instants-dataset/)
    soccer_splits: str = ""          # folder with SoccerNetGames{Train,Valid,Test}.json (SoccerNet's
                                     # official splits); "" -> the SoccerNet root's, else a seeded split
    soccer_include_not_shown: bool = False  # put "not shown" events back into the soccer probe

    def validate(self) -> "DataConfig":
        """Every field checked before anything starts: numbers in range, given input paths exist,
        a given --store is a sportray frame store (or a new/empty folder), --data-dir can be made."""
        _check_types(self)
        _finite(self, "every_s")
        if self.every_s <= 0:
            raise ConfigError(f"--every-s {self.every_s}: must be a positive number of seconds")
        if self.max_frames < 0:
            raise ConfigError(f"--max-frames {self.max_frames}: must be >= 0 (0 = every frame of the store)")
        if self.split_seed < 0:
            raise ConfigError(f"--split-seed {self.split_seed}: must be >= 0")
        for name in ("corpus", "basketball", "soccer_labels", "soccer_splits", "basketball_images"):
            value = getattr(self, name)
            if value and "://" not in value and not Path(value).is_dir():
                what = "is a file, not a folder" if Path(value).exists() else "no such folder"
                raise ConfigError(f"{_flag(name)} {value}: {what}")
        coco = self.basketball_coco
        if coco and (coco.lower().endswith(".json") or "/" in coco) and not Path(coco).is_file():
            raise ConfigError(f"--basketball-coco {coco}: no such file")
        for part in filter(None, (p.strip() for p in self.extra_sources.split(","))):
            folder, _, weight = part.rpartition(":") if ":" in part else (part, "", "1")
            try:
                ok = float(weight) > 0 and float(weight) < float("inf")
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"--extra-sources {self.extra_sources}: weight {weight!r} of {folder} "
                                  "must be a positive number")
            if not Path(folder).is_dir():
                raise ConfigError(f"--extra-sources {self.extra_sources}: {folder}: no such folder")
        from sportray.validate import check_store_dir, check_writable_dir
        check_writable_dir("--data-dir", self.data_dir)
        if self.store:
            check_store_dir("--store", self.store)
        return self

    def absolute(self) -> "DataConfig":
        """The same config with local paths made absolute: Ray workers (Tune trials, Train
        workers) run in other working directories, where a relative path names nothing."""
        def fix(path: str) -> str:
            return str(Path(path).resolve()) if path and "://" not in path else path

        def fix_sources(spec: str) -> str:
            out = []
            for part in filter(None, (p.strip() for p in spec.split(","))):
                folder, sep, weight = part.rpartition(":") if ":" in part else (part, "", "")
                out.append(fix(folder) + (sep + weight if sep else ""))
            return ",".join(out)

        coco = self.basketball_coco
        coco_is_path = "/" in coco or coco.lower().endswith(".json") and Path(coco).is_file()
        return dataclasses.replace(self, data_dir=fix(self.data_dir), corpus=fix(self.corpus),
                                   store=fix(self.store), basketball=fix(self.basketball),
                                   soccer_labels=fix(self.soccer_labels),
                                   extra_sources=fix_sources(self.extra_sources),
                                   basketball_coco=fix(coco) if coco_is_path else coco,
                                   basketball_images=fix(self.basketball_images),
                                   soccer_splits=fix(self.soccer_splits))


@dataclass
class PretrainConfig:
    """One LeJEPA pretraining run (one Ray Train `TorchTrainer.fit`)."""
    arm: str = "scratch"             # scratch | lora
    model: str = "vit_tiny_demo"     # vit_tiny_demo | vit_small (ViT-S/16)
    base: str = ""                   # lora arm: DINOv3 weights file, a sportray checkpoint, or synthetic-demo
    steps: int = 50
    views: str = "2x224+6x96"
    batch_size: int = 32             # frames per worker per step
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 10
    clip: float = 0.0                # gradient-norm clip; 0 = off
    lambda_sigreg: float = 0.05
    sigreg_directions: int = 256
    proj_dim: int = 128
    proj_hidden: int = 2048          # the projector's hidden width (Linear-BN-ReLU x 2 -> proj_dim)
    global_crop_min: float = 0.3     # random-resized-crop area scale of the global views ...
    global_crop_max: float = 1.0
    local_crop_min: float = 0.05     # ... and of the local ones (DINO's multi-crop recipe)
    local_crop_max: float = 0.3
    lora_rank: int = 8               # lora arm: adapter rank and alpha on every block's qkv/proj/fc1/fc2
    lora_alpha: int = 16
    seed: int = 0
    workers: int = 1
    gpus_per_worker: float = 0.0     # 0 = CPU (gloo)
    cpus_per_worker: float = 1.0
    compile: bool = False
    log_every: int = 5
    checkpoint_every: int = 25
    spike_factor: float = 5.0        # loss > factor x running median -> spike
    spike_patience: int = 20         # spiking this many logged steps in a row -> diverged
    max_failures: int = 2
    deterministic_data: bool = True  # data order fixed by seed and store (several workers: each reads
                                     # the whole stream and keeps its slice); False: Ray Data's
                                     # fastest order (streaming_split), not repeatable

    def validate(self) -> "PretrainConfig":
        """Every field checked (sportray/validate.py calls this at the edge, before Ray starts):
        a bad value raises ConfigError naming the flag and the value."""
        _check_types(self)
        if self.arm not in ("scratch", "lora"):
            raise ConfigError(f"--arm {self.arm!r}: expected scratch or lora")
        from sportray.backbones import ARCHS
        if self.model not in ARCHS:
            raise ConfigError(f"--model {self.model!r}: expected one of {', '.join(sorted(ARCHS))}")
        if self.steps <= 0:
            raise ConfigError(f"--steps {self.steps}: must be a positive number of steps")
        _finite(self, "lr", "weight_decay", "clip", "lambda_sigreg", "gpus_per_worker",
                "cpus_per_worker", "spike_factor")
        if self.clip < 0:
            raise ConfigError(f"--clip {self.clip}: must be > 0 to clip, or 0 to turn clipping off")
        if self.batch_size <= 0:
            raise ConfigError(f"--batch-size {self.batch_size}: must be positive")
        if self.workers <= 0:
            raise ConfigError(f"--workers {self.workers}: must be positive")
        if not 0.0 <= self.lambda_sigreg <= 1.0:
            raise ConfigError(f"--lambda-sigreg {self.lambda_sigreg}: must lie in [0, 1]")
        if self.lr <= 0:
            raise ConfigError(f"--lr {self.lr}: must be positive")
        for name in ("weight_decay", "warmup_steps", "seed", "max_failures", "gpus_per_worker"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: must be >= 0")
        for name in ("sigreg_directions", "proj_dim", "proj_hidden", "lora_rank", "lora_alpha", "log_every",
                     "checkpoint_every", "spike_patience", "cpus_per_worker"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: must be positive")
        if self.spike_factor <= 1:
            raise ConfigError(f"--spike-factor {self.spike_factor}: must be > 1 (a spike is a loss "
                              "above this many times the running median)")
        for kind in ("global", "local"):
            low, high = getattr(self, f"{kind}_crop_min"), getattr(self, f"{kind}_crop_max")
            if not (0 < low <= high <= 1):
                raise ConfigError(f"--{kind}-crop-min {low} / --{kind}-crop-max {high}: crop area scales need "
                                  "0 < min <= max <= 1")
        parse_views(self.views)
        if self.arm == "lora" and self.base not in ("", "synthetic-demo") and not Path(self.base).exists():
            raise ConfigError(f"--base {self.base}: no such file or directory (a DINOv3 weights file, a "
                              "sportray checkpoint directory, or synthetic-demo)")
        return self


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _finite(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not math.isfinite(value):
            raise ConfigError(f"{_flag(name)} {value}: must be a finite number")


def _check_types(cfg) -> None:
    """Each field holds its declared type (a bool is not an int, an int is a float): values from
    --set, presets or a --rerun record that are not refuse here instead of failing mid-run."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, kind = getattr(cfg, f.name), hints[f.name]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind is str:
            ok = isinstance(value, str)
        else:
            continue
        if not ok:
            raise ConfigError(f"{_flag(f.name)} {value!r}: expected a {kind.__name__}")


@dataclass
class ProbeConfig:
    """Linear probes on frozen features."""
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
    epochs: int = 60
    batch_size: int = 256
    weight_decay: float = 1e-4
    seed: int = 0
    bootstrap: int = 1000
    feature_batch: int = 64
    min_steps: int = 1000            # each probe's optimizer steps: cfg.epochs epochs clamped to
    max_steps: int = 2000            # [min_steps, max_steps] (sportray/probes.py, "Decisions")
    tasks: str = "basketball,soccer"  # probe tasks: registered names or "package.module:ATTRIBUTE"
                                      # (sportray/tasks/__init__.py)

    def validate(self) -> "ProbeConfig":
        _check_types(self)
        if not self.lrs or not all(isinstance(x, (int, float)) and 0 < x < float("inf") for x in self.lrs):
            raise ConfigError(f"--lrs {' '.join(map(str, self.lrs))}: expected positive learning rates")
        _finite(self, "weight_decay")
        for name in ("epochs", "batch_size", "bootstrap", "feature_batch", "min_steps", "max_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: must be positive")
        if self.min_steps > self.max_steps:
            raise ConfigError(f"--min-steps {self.min_steps} is above --max-steps {self.max_steps}")
        if not [t for t in self.tasks.split(",") if t.strip()]:
            raise ConfigError(f"--tasks {self.tasks!r}: name at least one probe task, e.g. basketball,soccer")
        if self.weight_decay < 0 or self.seed < 0:
            raise ConfigError(f"--weight-decay {self.weight_decay} / --seed {self.seed}: must be >= 0")
        return self


def flatten(cfg, prefix: str = "") -> dict[str, object]:
    """Dataclass -> {name: value} with stable names (MLflow params, sweep keys)."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, prefix + f.name + "."))
        else:
            out[prefix + f.name] = value
    return out


def replace(cfg, **overrides):
    """dataclasses.replace that rejects unknown names with a clear message."""
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown {type(cfg).__name__} option(s): {', '.join(unknown)}")
    return dataclasses.replace(cfg, **overrides)
