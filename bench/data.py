"""The data path's rates: decode -> frame store, and store -> iter_torch_batches.

1. decode: sportray's own decode UDF (frames.decode_segments: PyAV seek + decode one frame per
   sampled time) on one core, in-process, on real H.264 224p .mkv files from
   sportray.data.synthetic.write_synthetic; then frames.build_store end to end (probe, decode each
   frame into lz4 staging, gather into Parquet files in the seeded order) with the Ray CPUs given.
   bench/store_build.py has the build's own figures (before vs after, same run).
2. read: frames.read_store(store).iter_torch_batches(batch 256, uint8[, pinned, to the GPU]) with
   Ray Data limited to 1, 2, 4 CPUs (DataContext resource_limits); the consumer is this process.
   The store is bench/reader.v2_store's (sportray's format, frame-like content). bench/reader.py
   has the reader's own figures (old format vs new, same run).
3. encodings: the same frames as Parquet large_list<uint8> (Ray's tensor column, the store's format)
   vs binary / fixed_size_binary, read by pyarrow on one core (bench/_fmt.py).

    python bench/data.py [--ray-cpus 6]     # GPU host (reads go to cuda if there is one)
    python bench/data.py --tiny             # CPU, small
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import save_json, table
from reader import v2_store
import torch


def decode_rate(videos, every_s, max_videos=2):
    from sportray.data.frames import decode_segments
    from sportray.data.video import probe_video, sample_times
    n, t = 0, 0.0
    for v in videos[:max_videos]:
        times = sample_times(probe_video(str(v)).duration_s, every_s)
        batch = {"path": [str(v)], "source": [""], "video": [v.name], "game": [""], "half": [1],
                 "times": [json.dumps(times)]}
        t0 = time.perf_counter()
        out = decode_segments(batch)
        t += time.perf_counter() - t0
        n += len(out["frame"])
    return n / t, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--ray-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--read-frames", type=int, default=8192)
    ap.add_argument("--half-s", type=float, default=60)
    ap.add_argument("--skip-decode", action="store_true")
    args = ap.parse_args()
    import ray

    from sportray.data.frames import Source, build_store, read_store
    from sportray.data.synthetic import write_synthetic
    from sportray.data.video import list_videos

    cuda = torch.cuda.is_available() and not args.tiny
    half_s = 8 if args.tiny else args.half_s
    read_frames = 1024 if args.tiny else args.read_frames
    cpus_list = [c for c in (1, 2, 4) if c <= args.ray_cpus]
    work = Path(tempfile.mkdtemp(prefix="sportray-data-bench-"))
    info = {"host_cpus": os.cpu_count(), "ray_cpus": args.ray_cpus, "cuda": cuda,
            "device": torch.cuda.get_device_name() if cuda else "cpu", "date": time.strftime("%Y-%m-%d")}
    print(info, flush=True)
    rows = []
    ray.init(num_cpus=args.ray_cpus, num_gpus=0, include_dashboard=False)
    if not args.skip_decode:
        t0 = time.perf_counter()
        root = write_synthetic(work / "corpus", n_games=2, half_s=half_s, n_arenas=2, images_per_arena=2,
                               workers=args.ray_cpus)
        vids = list_videos(root / "soccernet")
        print(f"synthetic corpus: {len(vids)} videos of {half_s} s in {time.perf_counter() - t0:.1f} s", flush=True)
        for every in (4.0, 0.5):
            r, n = decode_rate(vids, every)
            rows.append({"what": f"decode_segments 1 core, every {every} s", "cpus": 1, "frames": n, "frames_s": r,
                         "frames_s_per_core": r})
            print(rows[-1], flush=True)
        every = 0.5 if args.tiny else 0.25
        t0 = time.perf_counter()
        st = build_store([Source(str(root / "soccernet"))], work / "store_dec", every_s=every)
        dt = time.perf_counter() - t0
        rows.append({"what": f"build_store (Ray Data, every {every} s)", "cpus": args.ray_cpus, "frames": st.frames,
                     "frames_s": st.frames / dt, "frames_s_per_core": st.frames / dt / args.ray_cpus, "seconds": dt})
        print(rows[-1], flush=True)

    store = v2_store(work / "store_read", read_frames, distinct=512 if not args.tiny else 128)
    size = sum(f.stat().st_size for f in (store / "data").glob("*"))
    print(f"read store: {read_frames} frames, {size / 2**20:.0f} MiB ({size / read_frames / 1e3:.0f} kB/frame)", flush=True)
    ctx = ray.data.DataContext.get_current()
    dev = torch.device("cuda") if cuda else torch.device("cpu")
    for c in cpus_list:
        ctx.execution_options.resource_limits = ray.data.ExecutionResources(cpu=c)
        for rep in range(2):            # first pass warms the page cache
            ds = read_store(store)
            n, t0 = 0, time.perf_counter()
            for b in ds.iter_torch_batches(batch_size=256, dtypes=torch.uint8, device=dev, drop_last=True,
                                           prefetch_batches=2, pin_memory=cuda):
                n += b["frame"].shape[0]
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        rows.append({"what": f"read_store -> iter_torch_batches ({dev.type}{', pinned' if cuda else ''})",
                     "cpus": c, "frames": n, "frames_s": n / dt, "frames_s_per_core": n / dt / c, "seconds": dt})
        print(rows[-1], flush=True)
    ray.shutdown()
    from _common import synth_frames
    from _fmt import format_rates
    rows += format_rates(synth_frames(128 if args.tiny else 1024), work)
    print(rows[-3:], flush=True)
    save_json("data_tiny.json" if args.tiny else "data.json", {"info": info, "rows": rows})
    print(f"\nDATA PATH  host cpus {info['host_cpus']}, Ray cpus {args.ray_cpus}, {info['device']}")
    print(table(rows, ["what", "cpus", "frames", "frames_s", "frames_s_per_core", "seconds", "kB_per_frame"]))


if __name__ == "__main__":
    main()
