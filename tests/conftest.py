"""Shared fixtures: one Ray session per test session (ray.init costs ~5 s here), one small
synthetic corpus in the real formats, and one tiny frame store, each made once."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 configure_logging=False, dashboard_host="127.0.0.1")
    yield ray
    # left running for the rest of the session; pytest exit shuts it down


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic corpus: a few short games and arenas (the real layouts and formats)."""
    from sportray.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic(root, seed=0, **TINY)


@pytest.fixture(scope="session")
def sweep_data_dir(tmp_path_factory):
    """One --data-dir for the sweep tests: frame stores and probe sets are content-addressed, so
    every sweep after the first on the same corpus reuses them instead of decoding again."""
    return tmp_path_factory.mktemp("sweep-data")


@pytest.fixture(scope="session")
def store(ray_session, tmp_path_factory):
    """A tiny frame store in the real format (96 smooth random frames, Parquet + manifest) for the
    Ray Train tests."""
    import json

    import ray

    from sportray.data import frames as fr

    root = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(0)
    n = 96
    # smooth random images (a learnable structure beyond noise): low-res noise upsampled
    low = rng.integers(0, 255, (n, 14, 25, 3), dtype=np.uint8)
    imgs = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)[:, :fr.FRAME_H, :fr.FRAME_W]
    ds = ray.data.from_items([{"frame": imgs[i], "t_ms": i} for i in range(n)])
    ds.write_parquet(str(root / "data"))
    (root / "manifest.json").write_text(json.dumps({"version": fr.STORE_VERSION, "key": "test", "frames": n,
                                                    "videos": 1, "bad_files": []}))
    return root


TINY = dict(n_games=4, half_s=12, n_arenas=4, images_per_arena=6)
