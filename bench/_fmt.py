"""Parquet encodings of a uint8 frame column, read back on one core (pyarrow, no Ray):
ray's tensor extension (large_list<uint8>, what the store holds now) vs one binary value per frame."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def format_rates(frames: np.ndarray, work: Path, reps: int = 2) -> list[dict]:
    from ray.data._internal.tensor_extensions.arrow import ArrowTensorArray  # what Ray writes
    n = len(frames)
    flat = frames.reshape(n, -1)
    cols = {
        "ray tensor (large_list<uint8>)": ArrowTensorArray.from_numpy(frames),
        "binary (one value per frame)": pa.array([r.tobytes() for r in flat], type=pa.binary()),
        "fixed_size_binary": pa.FixedSizeBinaryArray.from_buffers(pa.binary(flat.shape[1]), n,
                                                                  [None, pa.py_buffer(flat.tobytes())]),
    }
    rows = []
    for name, col in cols.items():
        f = work / (name.split()[0] + ".parquet")
        pq.write_table(pa.table({"frame": col}), f, compression="zstd", row_group_size=256)
        best = 1e9
        for _ in range(reps):
            t0 = time.perf_counter()
            t = pq.read_table(f, use_threads=False)
            c = t.column("frame").combine_chunks()
            if name.startswith("ray"):
                arr = c.to_numpy_ndarray() if hasattr(c, "to_numpy_ndarray") else c.to_numpy()
            elif name.startswith("binary"):
                arr = np.frombuffer(b"".join(x.as_buffer() for x in c), np.uint8)  # noqa: F841
            else:
                arr = np.frombuffer(c.buffers()[1], np.uint8)[: n * flat.shape[1]]  # noqa: F841
            best = min(best, time.perf_counter() - t0)
        rows.append({"what": f"pyarrow read 1 core: {name}", "cpus": 1, "frames": n, "frames_s": n / best,
                     "frames_s_per_core": n / best, "kB_per_frame": f.stat().st_size / n / 1e3})
    return rows
