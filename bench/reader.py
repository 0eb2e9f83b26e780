"""The frame-store reader, issue 17 item 4: the store format before and after, in one run.

Rows (all in one process, one run; frames from bench/_common.synth_frames: smooth colour fields,
blobs and noise, the same content the earlier reader figures used):
  1. one core, no Ray: how fast each frame encoding turns into uint8 frames (pyarrow + numpy):
     v1 = Ray's tensor column in zstd Parquet (what stores held before), v2 = one binary value per
     frame compressed alone (this code, frames.FRAME_CODEC), and v2 with zstd for comparison;
  2. frames.read_store -> iter_torch_batches(256, uint8, pinned, to the GPU, prefetch 2), exactly
     as pretrain.py consumes it, with Ray Data limited to 1, 2, 4 CPUs (DataContext
     resource_limits); the same for a v1 store through the reader before this change (its code is
     `_v1_read` below, from frames.py of commit 5f29ec9);
  3. the plumbing's ceiling: the same Ray Data path with read tasks that yield frames already in
     memory (no file, no codec), and the v2 read without pinning / without torch.

Run the whole process on the cores it may use (Ray's workers inherit the affinity):

    taskset -c 0-3 python bench/reader.py --frames 8192     # GPU host: 4 cores in all, consumer included
    python bench/reader.py --tiny                           # CPU smoke test
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import save_json, synth_frames, table
import torch

DISTINCT = 512      # distinct frames written; the store repeats them (hard links) up to --frames


def _v1_read(batch: dict):
    """The reader before issue 17 item 4 (frames._read_frames of commit 5f29ec9): Ray's tensor
    column, 64-frame record batches."""
    import pyarrow.parquet as pq

    for path, rows in zip(batch["path"], batch["rows"]):
        left = int(rows)
        for rb in pq.ParquetFile(str(path)).iter_batches(batch_size=64, columns=["frame"]):
            if left <= 0:
                break
            rb = rb.slice(0, left)
            left -= rb.num_rows
            yield {"frame": rb.column(0).to_numpy()}


_MEMORY: list[np.ndarray] = []


def _memory_read(batch: dict):
    """Read tasks with no file and no codec: each item's frames already in the worker's memory,
    yielded as one array (one block per item, as frames._read_frames does)."""
    for rows in batch["rows"]:
        while not _MEMORY or len(_MEMORY[0]) < int(rows):   # a cheap non-zero pattern, made once per worker
            n = max(int(rows), 64)
            _MEMORY[:] = [np.resize(np.arange(251, dtype=np.uint8), n * 224 * 398 * 3).reshape(n, 224, 398, 3)]
        yield {"frame": _MEMORY[0][: int(rows)]}


def files_dataset(files: list[str], fn, rows_per_file: int):
    """read_store's plumbing (driver-listed files, quarter-CPU tasks, order kept) around `fn`."""
    import ray

    items = [{"path": f, "rows": rows_per_file} for f in files]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds.context.execution_options.preserve_order = True
    return ds.map_batches(fn, batch_size=1, batch_format="numpy", num_cpus=0.25)


def v1_store(work: Path, frames: np.ndarray, copies: int) -> list[str]:
    """A version-1 store's files: Ray's tensor column written by Ray Data (as build_store wrote it),
    one file of DISTINCT frames hard-linked `copies` times."""
    import ray

    work.mkdir(parents=True, exist_ok=True)
    seed_dir = work / "v1seed"
    ray.data.from_numpy(frames).rename_columns({"data": "frame"}).repartition(1).write_parquet(
        str(seed_dir), min_rows_per_file=len(frames), compression="zstd")
    src = next(seed_dir.glob("*.parquet"))
    (work / "v1").mkdir()
    out = []
    for i in range(copies):
        out.append(str(work / "v1" / f"part-{i:05d}.parquet"))
        os.link(src, out[-1])
    return out


def v2_store(path: Path, n_frames: int, distinct: int = DISTINCT) -> Path:
    """A store of this version (frames.write_store) of `distinct` synth_frames, its first file
    hard-linked until it holds n_frames (a multiple of `distinct`): the reader pays the same per
    frame, the content repeats every `distinct` frames. Shared by bench/pipeline.py and bench/data.py."""
    import json

    from sportray.data import frames as fr

    distinct = min(distinct, n_frames, fr.ROWS_PER_FILE)
    store = fr.write_store(path, synth_frames(distinct))
    src = store / "data" / "part-00000.parquet"
    copies = max(1, n_frames // distinct)
    for i in range(1, copies):
        os.link(src, store / "data" / f"part-{i:05d}.parquet")
    m = json.loads((store / "manifest.json").read_text())
    m["frames"] = copies * distinct
    (store / "manifest.json").write_text(json.dumps(m))
    return store


def one_core_rates(work: Path, frames: np.ndarray, v1_file: str) -> list[dict]:
    """Row 1: pyarrow + numpy on this core, no Ray; best of 3 passes over one file."""
    import pyarrow.parquet as pq

    from sportray.data import frames as fr

    rows = []
    zstd = work / "zstd.parquet"
    blobs = [fr._codec("zstd").compress(np.ascontiguousarray(f)).to_pybytes() for f in frames]
    fr._write_parquet(str(zstd), blobs, [("", "", "", 0, i) for i in range(len(frames))])
    cases = [("v1: Ray tensor column, zstd Parquet", v1_file,
              lambda p: [rb.column(0).to_numpy() for rb in pq.ParquetFile(p).iter_batches(batch_size=64, columns=["frame"])]),
             (f"v2: binary, each frame {fr.FRAME_CODEC}", str(work / "v2" / "data" / "part-00000.parquet"),
              lambda p: list(fr.iter_store_file(p, fr.FRAME_CODEC))),
             ("v2 layout, each frame zstd level 1", str(zstd), lambda p: list(fr.iter_store_file(p, "zstd")))]
    for name, path, read in cases:
        best = 1e9
        for _ in range(3):
            t0 = time.perf_counter()
            n = sum(len(a) for a in read(path))
            best = min(best, time.perf_counter() - t0)
        rows.append({"what": f"1 core, no Ray: {name}", "cpus": 1, "frames": n, "frames_s": n / best,
                     "kB_per_frame": os.path.getsize(path) / n / 1e3})
        print(rows[-1], flush=True)
    return rows


def consume(ds, device: torch.device, pin: bool, mode: str = "torch") -> tuple[int, float]:
    """Iterate as pretrain.py does (mode torch) or as plain numpy batches; (frames, seconds)."""
    n, t0 = 0, time.perf_counter()
    if mode == "numpy":
        for b in ds.iter_batches(batch_size=256, batch_format="numpy", drop_last=True, prefetch_batches=2):
            n += len(b["frame"])
    else:
        for b in ds.iter_torch_batches(batch_size=256, dtypes=torch.uint8, device=device, drop_last=True,
                                       prefetch_batches=2, pin_memory=pin):
            n += b["frame"].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n, time.perf_counter() - t0


def ray_rates(store: Path, v1_files: list[str], device: torch.device, cpus_list: list[int]) -> list[dict]:
    """Rows 2 and 3: second pass of each (the first starts the workers and warms the page cache)."""
    import ray

    from sportray.data import frames as fr

    pin = device.type == "cuda"
    cases = [("v2 read_store (this code) -> iter_torch_batches", c, lambda: fr.read_store(store), "torch", pin)
             for c in cpus_list]
    cases += [("v1 reader before (Ray tensor column) -> iter_torch_batches", c,
               lambda: files_dataset(v1_files, _v1_read, DISTINCT), "torch", pin) for c in (cpus_list[0], cpus_list[-1])]
    top = cpus_list[-1]
    cases += [("ceiling: frames already in the read tasks' memory -> iter_torch_batches", top,
               lambda: files_dataset(v1_files, _memory_read, DISTINCT), "torch", pin)]
    if pin:
        cases += [("v2 read_store -> iter_torch_batches, not pinned", top, lambda: fr.read_store(store), "torch", False)]
    cases += [("v2 read_store -> iter_batches (numpy, no torch)", top, lambda: fr.read_store(store), "numpy", False)]
    ctx = ray.data.DataContext.get_current()
    rows = []
    for name, cpus, make, mode, pinned in cases:
        ctx.execution_options.resource_limits = ray.data.ExecutionResources(cpu=cpus)
        for _ in range(2):
            n, dt = consume(make(), device, pinned, mode)
        rows.append({"what": name, "cpus": cpus, "frames": n, "frames_s": n / dt, "seconds": dt})
        print(rows[-1], flush=True)
    return rows


def variants(store: Path, device: torch.device, log: Path) -> list[dict]:
    """--variants: read_store's knobs (frames.READ_ITEM_ROWS, READ_TASKS, the order) against the
    plumbing's ceiling (same items, frames already in memory) and the reader before (v1), at Ray
    Data CPU limits 1, 2, 4; Ray Data's own stats of each to `log`."""
    import ray

    from sportray.data import frames as fr

    pin = device.type == "cuda"
    files = sorted(str(p) for p in (store / "data").glob("*.parquet"))
    memory_items = [{"path": f, "start": a, "rows": 256} for f in files for a in range(0, DISTINCT, 256)]

    def memory():
        ds = ray.data.from_items(memory_items, override_num_blocks=len(memory_items))
        return ds.map_batches(_memory_read, batch_size=1, batch_format="numpy", num_cpus=0.25)

    v1_files = v1_store(store.parent, synth_frames(DISTINCT), len(files))
    free = 1000     # reads in flight not capped (Ray Data's CPU limit decides: 4 per CPU)
    cases = [("v2 read_store", 1, 256, free, True), ("v2 read_store", 2, 256, free, True),
             ("v2 read_store", 4, 256, free, True), ("ceiling: items in memory", 1, 256, free, True),
             ("ceiling: items in memory", 4, 256, free, True), ("v2 read_store", 4, 256, 4, True),
             ("v2 read_store", 4, 64, free, True), ("v2 read_store", 4, 256, free, False),
             ("v1 reader before", 4, 512, free, True)]
    ctx = ray.data.DataContext.get_current()
    rows = []
    for name, cpus, item_rows, tasks, order in cases:
        ctx.execution_options.resource_limits = ray.data.ExecutionResources(cpu=cpus)
        fr.READ_ITEM_ROWS, fr.READ_TASKS = item_rows, tasks
        for _ in range(2):
            ds = (fr.read_store(store) if name.startswith("v2") else memory() if name.startswith("ceiling")
                  else files_dataset(v1_files, _v1_read, DISTINCT))
            ds.context.execution_options.preserve_order = order
            n, dt = consume(ds, device, pin)
        cap = "not capped" if tasks == free else f"<= {tasks}"
        rows.append({"what": f"{name}: items of {item_rows}, reads in flight {cap}, order kept {order}", "cpus": cpus,
                     "frames": n, "frames_s": n / dt, "seconds": dt})
        print(rows[-1], flush=True)
        with open(log, "a") as f:
            f.write(f"\n===== {rows[-1]}\n{ds.stats()}\n")
    fr.READ_ITEM_ROWS, fr.READ_TASKS = 256, None
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--frames", type=int, default=8192, help="frames per read pass")
    ap.add_argument("--ray-cpus", type=int, default=4, help="Ray's CPUs (the largest Data limit measured)")
    ap.add_argument("--out", default="reader.json")
    ap.add_argument("--variants", action="store_true", help="read_store's knobs only (no v1, no one-core rows)")
    args = ap.parse_args()
    import ray

    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    n_frames = 1024 if args.tiny else args.frames
    cpus_list = [c for c in (1, 2, 4) if c <= args.ray_cpus]
    info = {"device": torch.cuda.get_device_name() if cuda else "cpu", "host_cpus": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)), "ray_cpus": args.ray_cpus,
            "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "frames_per_pass": n_frames}
    print(info, flush=True)
    work = Path(tempfile.mkdtemp(prefix="sportray-reader-"))
    try:
        frames = synth_frames(DISTINCT)
        ray.init(num_cpus=args.ray_cpus, num_gpus=0, include_dashboard=False, log_to_driver=False)
        copies = max(1, n_frames // DISTINCT)
        store = v2_store(work / "v2", copies * DISTINCT)
        if args.variants:
            import ray as _ray
            info["object_store_bytes"] = _ray.cluster_resources().get("object_store_memory")
            info["dev_shm"] = shutil.disk_usage("/dev/shm")._asdict() if os.path.exists("/dev/shm") else None
            print(info, flush=True)
            rows = variants(store, device, Path(os.environ.get("OUT", ".")) / "reader_stats.log")
        else:
            v1_files = v1_store(work, frames, copies)
            rows = one_core_rates(work, frames, v1_files[0])
            rows += ray_rates(store, v1_files, device, cpus_list)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    v1 = {r["cpus"]: r["frames_s"] for r in rows if r["what"].startswith("v1 reader")}
    for r in rows:
        if r["what"].startswith("v2 read_store (this") and r["cpus"] in v1:
            r["vs_v1_same_cpus"] = r["frames_s"] / v1[r["cpus"]]
    save_json(args.out, {"info": info, "rows": rows})
    print(f"\nREADER  {info['device']}, affinity {len(info['affinity'])} cores, Ray CPUs {args.ray_cpus}")
    print(table(rows, ["what", "cpus", "frames", "frames_s", "vs_v1_same_cpus", "kB_per_frame", "seconds"]))


if __name__ == "__main__":
    main()
