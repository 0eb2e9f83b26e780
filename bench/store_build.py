"""Frame-store build speed against the decoder's own (issue 17, item 7): before and after, one run.

Videos: sportray.data.synthetic.write_synthetic, generated here (--games x 2 halves of --half-s
seconds; H.264 398x224 at 25 fps, Constrained Baseline, a keyframe every 2 s).

Rates, per core:
  1. decoder ceiling, one process, no sportray code: PyAV decodes every frame (a) and also
     converts each to RGB (b);
  2. sportray's per-frame work in one process: video.decode_at at one frame every --every-s
     (decode, RGB of the sampled frames) and at every 4 s; and the build's decode task
     (frames._decode_span: decode_at + compress each frame + append to its staging file);
  3. frames.build_store end to end on --cpus Ray CPUs (run the process under taskset to say which
     cores): store key, plan (probe), decode, write, each timed;
  4. the build before this change (frames.py of commit 5f29ec9: Ray Data decode of 32-frame
     segments -> random_shuffle -> write_parquet of Ray's tensor column -> read_parquet count),
     on the first --old-videos videos, and the new build on the same videos, same Ray;
  5. SoccerNet's 300 h extrapolated from rows 2 and 3 (printed, labelled as arithmetic).

    taskset -c 0-15 python bench/store_build.py --cpus 16 --games 32 --half-s 128
    python bench/store_build.py --tiny
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import save_json, table

SOCCERNET_S = 300 * 3600      # the study's corpus: ~300 h of 224p halves


def decoder_ceiling(paths: list[str], rgb: bool) -> tuple[int, float]:
    import av

    n, t0 = 0, time.perf_counter()
    for p in paths:
        with av.open(p) as c:
            s = c.streams.video[0]
            s.thread_type, s.thread_count = "SLICE", 1
            for frame in c.decode(s):
                if rgb:
                    frame.to_ndarray(format="rgb24")
                n += 1
    return n, time.perf_counter() - t0


def one_process(paths: list[str], every_s: float, staging: Path | None = None) -> tuple[int, float]:
    """decode_at over whole videos (staging None), or the build's decode task on one span per video."""
    from sportray.data import frames as fr
    from sportray.data.video import probe_video, sample_times

    n, t0 = 0, time.perf_counter()
    for i, p in enumerate(paths):
        times = sample_times(probe_video(p).duration_s, every_s)
        if staging is None:
            n += len(fr.decode_at(p, times))
        else:
            out = fr._decode_span({"span": [i], "path": [p], "times": [json.dumps(times)]}, str(staging), fr.FRAME_CODEC)
            n += len(json.loads(str(out["sizes"][0])))
    return n, time.perf_counter() - t0


def old_build(corpus: Path, out: Path, every_s: float, seed: int = 0) -> tuple[int, float, dict]:
    """build_store before this change (commit 5f29ec9), stage for stage."""
    import ray

    from sportray.data import frames as fr

    t0 = time.time()
    sources = [fr.Source(str(corpus))]
    fr.store_key(sources, every_s, seed)
    segments, _ = fr.plan_segments(sources, every_s)     # 32 sampled frames per segment, as then
    t_plan = time.time()
    ds = ray.data.from_items(segments, override_num_blocks=len(segments))
    ds = ds.map_batches(fr.decode_segments, batch_size=1, batch_format="numpy", num_cpus=1)
    ds.context.execution_options.preserve_order = True
    ds.random_shuffle(seed=seed).write_parquet(str(out), min_rows_per_file=512, compression="zstd")
    t_write = time.time()
    frames = ray.data.read_parquet(str(out)).count()
    t1 = time.time()
    return frames, t1 - t0, {"key+plan": t_plan - t0, "decode+shuffle+write": t_write - t_plan, "count": t1 - t_write}


def new_build(corpus: Path, out: Path, every_s: float) -> tuple[int, float, dict]:
    from sportray.data import frames as fr

    info = fr.build_store([fr.Source(str(corpus))], out, every_s=every_s, data_dir=out.parent)
    return info.frames, info.seconds, info.stages


def linked_corpus(paths: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, p in enumerate(paths):       # flat: the build sees exactly these videos
        os.link(p, folder / f"{i:03d}_{Path(p).name}")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--games", type=int, default=32)
    ap.add_argument("--half-s", type=float, default=128)
    ap.add_argument("--every-s", type=float, default=0.25)
    ap.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)), help="Ray CPUs")
    ap.add_argument("--old-videos", type=int, default=8, help="videos for the before/after pair")
    ap.add_argument("--one-process-videos", type=int, default=4)
    ap.add_argument("--out", default="store_build.json")
    args = ap.parse_args()
    if args.tiny:
        args.games, args.half_s, args.old_videos, args.one_process_videos = 2, 16, 2, 1
    import ray

    from sportray.data.synthetic import write_synthetic
    from sportray.data.video import list_videos

    info = {"host_cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "ray_cpus": args.cpus,
            "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "every_s": args.every_s,
            "games": args.games, "half_s": args.half_s}
    print(info, flush=True)
    work = Path(tempfile.mkdtemp(prefix="store-bench-"))
    rows: list[dict] = []
    try:
        t0 = time.time()
        root = write_synthetic(work / "synth", n_games=args.games, half_s=args.half_s, n_arenas=1,
                               images_per_arena=1, workers=args.cpus)
        paths = [str(p) for p in list_videos(root / "soccernet")]
        info["synthetic_s"] = time.time() - t0
        print(f"{len(paths)} videos of {args.half_s} s in {info['synthetic_s']:.0f} s", flush=True)

        one = paths[: args.one_process_videos]
        for name, (n, dt) in [("PyAV decode, every frame (no RGB)", decoder_ceiling(one, False)),
                              ("PyAV decode + RGB, every frame", decoder_ceiling(one, True)),
                              (f"decode_at, one frame every {args.every_s} s", one_process(one, args.every_s)),
                              ("decode_at, one frame every 4 s", one_process(one, 4.0)),
                              (f"build's decode task (decode_at + {'lz4_raw'} + staging write), every {args.every_s} s",
                               one_process(one, args.every_s, Path(tempfile.mkdtemp(dir=work))))]:
            rows.append({"what": f"1 process: {name}", "cpus": 1, "frames": n, "seconds": dt, "per_core": n / dt})
            print(rows[-1], flush=True)

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        sub = linked_corpus(paths[: args.old_videos], work / "subset")
        for name, fn in [("build before (5f29ec9), subset", lambda: old_build(sub, work / "old", args.every_s)),
                         ("build_store now, subset", lambda: new_build(sub, work / "new_sub", args.every_s)),
                         ("build_store now, all videos", lambda: new_build(root / "soccernet", work / "new_all", args.every_s))]:
            n, dt, stages = fn()
            rows.append({"what": name, "cpus": args.cpus, "frames": n, "seconds": dt,
                         "per_core": n / dt / args.cpus, "stages": {k: round(v, 2) for k, v in stages.items()}})
            print(rows[-1], flush=True)
            shutil.rmtree(work / "old", ignore_errors=True)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {r["what"]: r for r in rows}
    now_all = rows[-1]
    rate4 = next(r["per_core"] for r in rows if "every 4 s" in r["what"])
    dense = next(r["per_core"] for r in rows if r["what"].startswith("1 process: build's decode task"))
    eff = now_all["per_core"] / dense       # end-to-end per core / the decode task alone
    info["soccernet_extrapolation"] = {
        f"every {args.every_s} s": {"frames": SOCCERNET_S / args.every_s,
                                     "core_hours": SOCCERNET_S / args.every_s / now_all["per_core"] / 3600},
        "every 4 s (decode_at at 4 s x this run's end-to-end efficiency)": {
            "frames": SOCCERNET_S / 4, "efficiency": eff,
            "core_hours": SOCCERNET_S / 4 / (rate4 * eff) / 3600}}
    old, new = by.get("build before (5f29ec9), subset"), by.get("build_store now, subset")
    if old and new:
        info["subset_new_vs_old"] = new["per_core"] / old["per_core"]
    save_json(args.out, {"info": info, "rows": rows})
    print(f"\nSTORE BUILD  affinity {info['affinity']} cores, Ray CPUs {args.cpus}, every {args.every_s} s")
    print(table(rows, ["what", "cpus", "frames", "seconds", "per_core", "stages"]))
    print(json.dumps({k: v for k, v in info.items() if k in ("subset_new_vs_old", "soccernet_extrapolation")}, indent=1))


if __name__ == "__main__":
    main()
