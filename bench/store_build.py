"""Frame-store build speed against the decoder's own (issue 17, item 7).

Three rates on the same videos, one process (then Ray for the end-to-end build), per core:
  1. decoder ceiling: plain PyAV, every frame decoded and converted to RGB (no sportray code);
  2. `video.decode_at` at one frame every `--every-s` seconds, one process;
  3. `frames.build_store` end to end (probe, decode, shuffle, write Parquet) on `--cpus` Ray CPUs.

    python bench/store_build.py --corpus sportray-data/synthetic-v2/soccernet --videos 16 \\
        --every-s 0.25 --cpus 2
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def decoder_ceiling(paths: list[str]) -> tuple[int, float]:
    import av

    n, t0 = 0, time.perf_counter()
    for p in paths:
        with av.open(p) as c:
            s = c.streams.video[0]
            s.thread_type, s.thread_count = "SLICE", 1
            for frame in c.decode(s):
                frame.to_ndarray(format="rgb24")
                n += 1
    return n, time.perf_counter() - t0


def sportray_decode(paths: list[str], every_s: float) -> tuple[int, float]:
    import av

    from sportray.data.video import decode_at

    n, t0 = 0, time.perf_counter()
    for p in paths:
        with av.open(p) as c:
            s = c.streams.video[0]
            seconds = float(s.duration * s.time_base) if s.duration else float(c.duration) / 1e6
        times = list(np.arange(0.0, max(seconds - 0.1, 0.0), every_s))
        n += len(decode_at(p, times))
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--videos", type=int, default=16, help="the first N videos of the corpus")
    ap.add_argument("--every-s", type=float, default=0.25)
    ap.add_argument("--cpus", type=int, default=2, help="Ray CPUs for the end-to-end build")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from sportray.data.frames import Source, build_store, list_videos

    paths = [str(p) for p in list_videos(args.corpus)[: args.videos]]
    work = Path(tempfile.mkdtemp(prefix="store-bench-"))
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        for i, p in enumerate(paths):   # flat copy: the build sees exactly these videos
            shutil.copy(p, corpus / f"{i:03d}_{Path(p).name}")
        n_all, t_all = decoder_ceiling(paths)
        n_dec, t_dec = sportray_decode(paths, args.every_s)
        import ray

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        info = build_store([Source(str(corpus))], work / "store", every_s=args.every_s, data_dir=work)
        ray.shutdown()
        row = {"videos": len(paths), "every_s": args.every_s, "cpus": args.cpus,
               "decoder_frames_per_s_per_core": n_all / t_all,
               "decode_at_sampled_per_s_per_core": n_dec / t_dec,
               "build_store_sampled_per_s_per_core": info.frames / info.seconds / args.cpus,
               "build_store_s": info.seconds, "frames": info.frames}
        row["decode_at_vs_decoder_frames"] = row["decode_at_sampled_per_s_per_core"] / row["decoder_frames_per_s_per_core"]
        print(json.dumps(row, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(row, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
