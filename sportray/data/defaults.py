"""What a command uses when given no data path: the embedded synthetic default.

Every command that needs data and gets no path generates the synthetic corpus once into
`--data-dir` (default ./sportray-data) and reuses it after (DESIGN.md §3).
"""
from __future__ import annotations

from pathlib import Path

from sportray.config import DataConfig


class DataPaths:
    """Where each input is, the embedded synthetic default where no path was given. Lazy: the
    default is written (once per data_dir) only when an input that needs it is asked for, so a
    probe task of one's own never waits for a corpus it does not read."""

    def __init__(self, data: DataConfig):
        self._data = data
        self._synthetic_root: Path | None = None

    def _synthetic(self) -> Path:
        if self._synthetic_root is None:
            from sportray.data.synthetic import ensure_synthetic
            self._synthetic_root = Path(ensure_synthetic(self._data.data_dir, seed=self._data.split_seed))
        return self._synthetic_root

    @property
    def corpus(self) -> str:
        """Pretraining videos (a SoccerNet tree or any folder)."""
        return self._data.corpus or str(self._synthetic() / "soccernet")

    @property
    def soccer(self) -> str:
        """SoccerNet root with Labels-v2.json (the soccer probe)."""
        return self._data.soccer_labels or self._data.corpus or str(self._synthetic() / "soccernet")

    @property
    def basketball(self) -> str:
        """DeepSportRadar root (the basketball probe)."""
        return self._data.basketball or str(self._synthetic() / "deepsportradar")

    def ensure(self) -> "DataPaths":
        """Write the synthetic default now if the corpus or a built-in probe needs it."""
        self.corpus, self.soccer, self.basketball
        return self

    @property
    def synthetic(self) -> bool:
        """True once any input asked for is the embedded default."""
        return self._synthetic_root is not None


def resolve(data: DataConfig) -> DataPaths:
    return DataPaths(data)


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

