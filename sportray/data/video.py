"""PyAV: probe a video and decode single frames at chosen times.

Why not Ray Data's `read_videos`: it decodes with decord at an integer fps >= 1 and every frame
in between, so sampling one frame every 4 s costs 100x the decode work. Here we seek to the
keyframe before each sampled time and decode forward to it (one decoder thread per task: the
parallelism comes from Ray tasks, one per video segment).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sportray.data.errors import DataError

VIDEO_SUFFIXES = (".mkv", ".mp4", ".avi", ".mov", ".webm")


@dataclass(frozen=True)
class VideoInfo:
    path: str
    codec: str
    width: int
    height: int
    frames_per_s: float
    duration_s: float


def _open(path: str | Path):
    import av

    path = Path(path)
    if not path.exists():
        raise DataError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises InvalidDataError, FFmpegError, ...
        raise DataError(path, f"not a readable video ({type(exc).__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise DataError(path, "has no video stream")
    return container


def probe_video(path: str | Path) -> VideoInfo:
    """Codec, size, frame rate and duration, from the container header (no decode)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        if rate <= 0 or duration <= 0:
            raise DataError(path, f"no usable frame rate ({rate}) or duration ({duration:.2f} s)")
        return VideoInfo(str(path), stream.codec_context.name, stream.codec_context.width,
                         stream.codec_context.height, rate, duration)
    finally:
        container.close()


def sample_times(duration_s: float, every_s: float, offset_s: float | None = None) -> list[float]:
    """Times (s) of one frame every `every_s` seconds, centred in each interval."""
    if every_s <= 0:
        raise ValueError(f"every_s must be positive, got {every_s}")
    offset = every_s / 2 if offset_s is None else offset_s
    n = int(max(0.0, duration_s - offset) // every_s) + (1 if duration_s > offset else 0)
    return [offset + i * every_s for i in range(n) if offset + i * every_s < duration_s]


def resize_short_side(frame: np.ndarray, side: int) -> np.ndarray:
    """uint8 HxWx3 -> short side `side` (aspect kept). No-op when it already is."""
    h, w = frame.shape[:2]
    if min(h, w) == side:
        return frame
    import torch
    import torch.nn.functional as F

    scale = side / min(h, w)
    size = (max(side, round(h * scale)), max(side, round(w * scale)))
    t = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def resize_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 HxWx3 -> exactly height x width (aspect not kept: probe inputs are squares)."""
    import torch
    import torch.nn.functional as F

    if frame.shape[:2] == (height, width):
        return frame
    t = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def decode_at(path: str | Path, times_s: list[float], short_side: int | None = None
              ) -> list[tuple[int, np.ndarray]]:
    """Decode the frame shown at each time (sorted ascending); returns [(t_ms, uint8 HxWx3)].

    A time past the end of the stream raises DataError naming the file; a stream that ends
    early (truncated file) does too, with the last time reached.
    """
    return list(iter_frames_at(path, times_s, short_side))


def iter_frames_at(path: str | Path, times_s: list[float], short_side: int | None = None
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """decode_at as a generator: each (t_ms, frame) as soon as it is decoded, so a caller can
    compress and write frame k while holding none of the others (the store build decodes a
    minute of video per task). Errors as decode_at's, raised when reached."""
    times = sorted(float(t) for t in times_s)
    if not times:
        return
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.thread_count = 1
        tb = float(stream.time_base)
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        half_frame = 0.5 / rate
        i = 0
        last_t = -1.0
        frames = None   # ONE decode generator, continued from sample to sample: a segment's dense
        #                 samples are decoded in a single forward pass (restarting the generator per
        #                 sample cost 3-6x at one frame every 0.25 s; BENCHMARKS.md)
        while i < len(times):
            target = times[i]
            found: list[tuple[int, np.ndarray]] = []
            try:
                # Seek only when the next sample is far ahead; otherwise decoding forward is cheaper.
                # (Inside the try: a seek into a damaged file raises too, and must name the file.)
                if frames is None or target - last_t > 2.0:
                    container.seek(int(max(0.0, target - 0.5) / tb), stream=stream, backward=True,
                                   any_frame=False)
                    frames = container.decode(stream)
                for frame in frames:
                    if frame.pts is None:
                        continue
                    t = frame.pts * tb
                    last_t = t
                    if t + half_frame >= target:
                        img = frame.to_ndarray(format="rgb24")
                        if short_side:
                            img = resize_short_side(img, short_side)
                        # several samples may fall on one decoded frame (dense sampling)
                        while i < len(times) and t + half_frame >= times[i]:
                            found.append((int(round(times[i] * 1000)), img))
                            i += 1
                        break
            except Exception as exc:
                raise DataError(path, f"decode failed near {target:.2f} s "
                                      f"({type(exc).__name__}: {exc})") from None
            if not found:
                raise DataError(path, f"stream ends before {target:.2f} s (last frame at "
                                      f"{max(last_t, 0):.2f} s): truncated, or the time is past the end")
            yield from found
    finally:
        container.close()


def list_videos(root: str | Path) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(root, "is neither a video file nor a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
