"""What a command uses when given no data path: the embedded synthetic default.

Every command that needs data and gets no path generates the synthetic corpus once into
`--data-dir` (default ./sportray-data) and reuses it after (DESIGN.md §3).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sportray.config import DataConfig


@dataclass(frozen=True)
class DataPaths:
    corpus: str          # pretraining videos (SoccerNet tree or any folder)
    soccer: str          # SoccerNet root with Labels-v2.json (soccer probe)
    basketball: str      # DeepSportRadar root (basketball probe)
    synthetic: bool      # True when any of them is the embedded default


def resolve(data: DataConfig) -> DataPaths:
    synthetic_root = None

    def synth() -> Path:
        nonlocal synthetic_root
        if synthetic_root is None:
            from sportray.data.synthetic import ensure_synthetic
            synthetic_root = Path(ensure_synthetic(data.data_dir, seed=data.split_seed))
        return synthetic_root

    corpus = data.corpus or str(synth() / "soccernet")
    soccer = data.soccer_labels or (data.corpus if data.corpus else str(synth() / "soccernet"))
    basketball = data.basketball or str(synth() / "deepsportradar")
    return DataPaths(corpus, soccer, basketball, synthetic_root is not None)


def frame_store(data: DataConfig, paths: DataPaths | None = None):
    """Build or reuse the frame store for this data config; returns frames.StoreInfo."""
    from sportray.data.frames import StoreInfo, build_store, check_store, parse_sources

    if data.store and (Path(data.store) / "manifest.json").exists():
        m = check_store(data.store)
        if data.corpus:
            _check_store_inputs(data, m)
        return StoreInfo(data.store, m["key"], m["frames"], m["videos"], m.get("bad_files", []), True)
    paths = paths or resolve(data)
    return build_store(parse_sources(paths.corpus, data.extra_sources), data.store or None,
                       every_s=data.every_s, data_dir=data.data_dir, seed=data.split_seed)


def _check_store_inputs(data: DataConfig, manifest: dict) -> None:
    """An explicit --store given beside --corpus must have been built from that corpus (and the
    extra sources) at that sampling interval; otherwise the run would train on other frames than
    its parameters say."""
    from sportray.data.errors import DataError
    from sportray.data.frames import parse_sources

    wanted = sorted((str(Path(s.root).resolve()), float(s.weight))
                    for s in parse_sources(data.corpus, data.extra_sources))
    built = sorted((str(Path(s["root"]).resolve()), float(s["weight"])) for s in manifest.get("sources", []))
    if wanted != built or float(manifest.get("every_s", data.every_s)) != float(data.every_s):
        raise DataError(data.store, f"this frame store was built from {built} at one frame every "
                                    f"{manifest.get('every_s')} s, not from --corpus {data.corpus} at "
                                    f"--every-s {data.every_s}: drop --store (sportray finds or builds "
                                    "the right one) or give the store's own inputs")

