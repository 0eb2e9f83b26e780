"""Shared fixtures: one Ray session per test session (ray.init costs ~5 s here), and one small
synthetic corpus in the real formats, generated once."""
from __future__ import annotations

import os

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


TINY = dict(n_games=4, half_s=12, n_arenas=4, images_per_arena=6)
