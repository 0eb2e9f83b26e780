"""Probe sets at full scale (issue 14): time and peak memory of building and reading them, on the
real public label and annotation files (../shared/real-formats) with synthesized pixels.

    .venv/bin/python bench/probeset_scale.py [--work DIR] [--fps 2] [--games 6] [--only soccer|basketball] [--cpus 2]

Soccer: the 6 real SoccerNet-v2 games (Labels-v2.json as published, official split lists) with
synthesized 398x224 H.264 halves as long as the labels need (--fps frames a second, a keyframe
every 2 s as in SoccerNet's 224p files). Basketball: the challenge repository's layout (real
annotations/, synthesized images of the listed sizes) and its default COCO file,
trainvaltest.json. Reports, per build: wall time, rows, bytes on disk, the driver's peak
anonymous RSS (RssAnon: the memory the process itself holds, not the page cache of the files it
writes or maps), and the peak summed RSS of the Ray worker processes; per read: load time and the
driver's RssAnon while every image is read once in batches of 64 (as probes.extract_features
does). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REAL = REPO.parent / "shared" / "real-formats"


def _status_kb(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Peak:
    """Samples the driver's RssAnon and the Ray workers' summed VmRSS every 0.1 s."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()
        self.driver_kb = self.workers_kb = self.worker_max_kb = self.workers = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.driver_kb = max(self.driver_kb, _status_kb("self", "RssAnon"))
            total = n = 0
            for p in self.me.children(recursive=True):
                try:
                    if p.name().startswith("ray::"):
                        kb = _status_kb(p.pid, "VmRSS")
                        total, n = total + kb, n + 1
                        self.worker_max_kb = max(self.worker_max_kb, kb)
                except Exception:
                    pass
            self.workers_kb = max(self.workers_kb, total)
            self.workers = max(self.workers, n)
            time.sleep(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _h264(path: Path, seconds: int, fps: int) -> None:
    import av

    container = av.open(str(path), mode="w", format="matroska")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 398, 224, "yuv420p"
    stream.options = {"preset": "ultrafast", "crf": "23"}
    stream.codec_context.gop_size = 2 * fps
    y, x = np.mgrid[0:224, 0:398]
    frames = [av.VideoFrame.from_ndarray(np.stack([(x + 3 * k) % 256, (y * 2 + k) % 256,
                                                   np.full_like(x, 5 * k % 256)], -1).astype(np.uint8),
                                         format="rgb24") for k in range(48)]   # moving gradients
    for k in range(seconds * fps):
        frame = frames[k % len(frames)]
        frame.pts, frame.time_base = k, Fraction(1, fps)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def soccernet_root(work: Path, fps: int, games: int) -> Path:
    from sportray.data import soccernet

    root = work / f"SoccerNet-{fps}fps-{games}"
    for labels in sorted((REAL / "soccernet").rglob(soccernet.LABELS_FILE))[:games]:
        gid = labels.parent.relative_to(REAL / "soccernet")
        folder = root / gid
        if (folder / "2_224p.mkv").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / soccernet.LABELS_FILE).exists():
            (folder / soccernet.LABELS_FILE).symlink_to(labels)
        events = soccernet.read_labels(labels)
        for half in (1, 2):
            end_s = max(e.position_ms for e in events if e.half == half) // 1000 + 3
            _h264(folder / f"{half}_224p.mkv", end_s, fps)
    return root


def challenge_repo(work: Path) -> Path:
    from PIL import Image

    from sportray.data.deepsportradar import IMAGES_DIR

    root = work / "instance-segmentation-challenge"
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    made: dict = {}
    for f in sorted((REAL / "deepsportradar" / "annotations").glob("*.json")):
        if not (root / "annotations" / f.name).exists():
            (root / "annotations" / f.name).symlink_to(f)
        for im in json.loads(f.read_text())["images"]:
            dest = root / IMAGES_DIR / im["file_name"]
            if dest.exists():
                continue
            size = (im["width"], im["height"])
            if size not in made:
                w, h = size
                yy, xx = np.mgrid[0:h, 0:w]
                img = np.stack([xx * 255 // w, yy * 255 // h, (xx ^ yy) % 256], -1).astype(np.uint8)
                made[size] = work / f"{w}x{h}.png"
                Image.fromarray(img).save(made[size])
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(made[size], dest)
    return root


def _bytes(npz: Path) -> int:
    return sum(p.stat().st_size for p in npz.parent.iterdir() if p.name.startswith(npz.stem + "."))


def measure(name: str, build) -> dict:
    from sportray.data import probesets

    with Peak() as peak:
        t0 = time.perf_counter()
        out = build()
        build_s = time.perf_counter() - t0
    base_kb = _status_kb("self", "RssAnon")
    with Peak() as read_peak:
        t0 = time.perf_counter()
        arrays = probesets.load(out)
        load_s = time.perf_counter() - t0
        images = arrays["images"]
        checksum = 0
        for start in range(0, len(images), 64):       # as extract_features: a contiguous batch
            checksum += int(np.ascontiguousarray(images[start:start + 64]).sum(dtype=np.int64))
        read_s = time.perf_counter() - t0
    rows = len(images)
    return {"probe_set": name, "rows": rows, "build_s": round(build_s, 1),
            "build_ms_per_row": round(1000 * build_s / rows, 1), "bytes": _bytes(out),
            "bytes_per_row": _bytes(out) // rows,
            "build_driver_peak_rss_anon_mb": round(peak.driver_kb / 1024, 1),
            "build_workers_peak_rss_mb": round(peak.workers_kb / 1024, 1),
            "build_worker_max_rss_mb": round(peak.worker_max_kb / 1024, 1), "ray_workers": peak.workers,
            "load_s": round(load_s, 3), "read_all_images_s": round(read_s, 2),
            "read_driver_rss_anon_growth_mb": round((read_peak.driver_kb - base_kb) / 1024, 1),
            "meta": probesets.describe(out), "checksum": checksum}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/sportray-probeset-bench")
    p.add_argument("--fps", type=int, default=2, help="frame rate of the synthesized halves")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--games", type=int, default=6, help="how many of the 6 real games (name order)")
    p.add_argument("--only", choices=("soccer", "basketball"), default=None)
    args = p.parse_args(argv)
    import ray

    from sportray.data import probesets

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sn = soccernet_root(work, args.fps, args.games) if args.only != "basketball" else None
    dsr_root = challenge_repo(work) if args.only != "soccer" else None
    synth_s = time.perf_counter() - t0
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    out_dir = work / f"sets-{time.time_ns()}"          # never a cached set
    results = []
    if sn is not None:
        results.append(measure("soccer", lambda: probesets.build_soccer(
            sn, out_dir, split_lists=str(REAL / "soccernet-splits"))))
    if dsr_root is not None:
        results.append(measure("basketball", lambda: probesets.build_basketball(dsr_root, out_dir)))
    full = {"soccer": 110_458, "basketball": 728}
    for r in results:
        n = full[r["probe_set"]]
        r["extrapolated"] = {"rows": n, "build_min_on_2_cpus": round(r["build_ms_per_row"] * n / 60000, 1),
                             "disk_gb": round(r["bytes_per_row"] * n / 1e9, 2)}
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpus": args.cpus, "fps": args.fps,
                      "games": args.games, "command": "bench/probeset_scale.py " + " ".join(argv or sys.argv[1:]),
                      "synthesis_s": round(synth_s, 1), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
