"""A frame store's identity: what makes a store "the same", what a dead build leaves behind, and an
explicit --store that does not match the corpus it is given with (issue 19, item 6). No Ray: the
key, the clean-up and the check are plain functions of files."""
import json
import os
import subprocess
import sys

import pytest

from sportray.config import DataConfig
from sportray.data import defaults
from sportray.data import frames as fr
from sportray.data.errors import DataError


def _corpus(root, n=3, size=(3 << 20)):
    """Videos as the key sees them: files with a video suffix (the key never decodes them)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"clip{i}.mp4").write_bytes(os.urandom(size))
    return root


def test_the_key_is_stable_and_changes_with_the_seed(tmp_path):
    sources = [fr.Source(str(_corpus(tmp_path / "c")))]
    assert fr.store_key(sources, 4.0, seed=0) == fr.store_key(sources, 4.0, seed=0)
    assert fr.store_key(sources, 4.0, seed=0) != fr.store_key(sources, 4.0, seed=1)
    assert fr.store_key(sources, 4.0, seed=0) != fr.store_key(sources, 2.0, seed=0)


@pytest.mark.parametrize("offset", [100, -100], ids=["header", "index at the end"])
def test_an_edit_that_keeps_size_and_mtime_still_changes_the_key(tmp_path, offset):
    root = _corpus(tmp_path / "c")
    sources = [fr.Source(str(root))]
    before = fr.store_key(sources, 4.0)
    video = root / "clip1.mp4"
    st = video.stat()
    data = bytearray(video.read_bytes())
    data[offset] ^= 0xFF
    video.write_bytes(bytes(data))
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert video.stat().st_size == st.st_size and video.stat().st_mtime_ns == st.st_mtime_ns
    assert fr.store_key(sources, 4.0) != before


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_dead_builds_temporary_folder_is_removed_and_nothing_else(tmp_path):
    store = tmp_path / "stores" / "abc"
    store.parent.mkdir()
    import socket

    def tmp(name, owner):
        d = store.with_name(store.name + ".tmp-" + name)
        d.mkdir()
        (d / "data.parquet").write_bytes(b"x")
        if owner is not None:
            (d / fr.OWNER_FILE).write_text(json.dumps(owner))
        return d

    dead = tmp("dead", {"host": socket.gethostname(), "pid": _dead_pid()})
    running = tmp("running", {"host": socket.gethostname(), "pid": os.getpid()})
    elsewhere = tmp("elsewhere", {"host": "another-node", "pid": _dead_pid()})
    unknown = tmp("unknown", None)
    users = tmp_path / "stores" / "abc-notes"
    users.mkdir()

    assert fr.clean_stale_builds(store) == [dead]
    assert not dead.exists()
    assert running.exists() and elsewhere.exists() and unknown.exists() and users.exists()


def _fake_store(path, corpus, every_s):
    (path / "data").mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({
        "version": fr.STORE_VERSION, "key": "k", "frames": 8, "videos": 1, "every_s": every_s,
        "sources": [{"root": str(corpus), "weight": 1.0}], "bad_files": []}))
    return path


def test_an_explicit_store_of_another_corpus_is_refused_naming_the_store(tmp_path):
    built_from = _corpus(tmp_path / "a", n=1, size=10)
    other = _corpus(tmp_path / "b", n=1, size=10)
    store = _fake_store(tmp_path / "store", built_from, 4.0)

    same = defaults.frame_store(DataConfig(store=str(store), corpus=str(built_from), every_s=4.0,
                                           data_dir=str(tmp_path / "d")))
    assert same.path == str(store) and same.reused

    with pytest.raises(DataError, match="built from") as err:
        defaults.frame_store(DataConfig(store=str(store), corpus=str(other), every_s=4.0,
                                        data_dir=str(tmp_path / "d")))
    assert str(store) in str(err.value)
    with pytest.raises(DataError, match="every-s 2.0"):
        defaults.frame_store(DataConfig(store=str(store), corpus=str(built_from), every_s=2.0,
                                        data_dir=str(tmp_path / "d")))
