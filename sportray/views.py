"""Multi-crop views built on the frames' device with batched torch ops.

Why on the device: the CPU recipe (PIL/torchvision per image) costs ~3 ms per frame for
2x224 + 6x96 views (DESIGN.md §1), i.e. 6-8 cores per GPU. Here uint8 frames (B, H, W, 3) are
shipped as they are and every crop of a view group comes out of one ``grid_sample`` call (the
crops of one frame are stacked along the output height, so the frame is never copied per crop);
the photometric augmentations are per-sample tensors of factors applied to the whole group.

The recipe is the LeJEPA/DINO one (DESIGN.md §4): random-resized crop (scale ``global_scale`` for
the first group, ``local_scale`` for the others; aspect ratio 3/4..4/3, torchvision's 10 tries then
the centre-crop fallback), horizontal flip p 0.5, colour jitter (brightness 0.4, contrast 0.4,
saturation 0.2, hue 0.1) p 0.8, grayscale p 0.2, Gaussian blur (sigma 0.1..2) p 0.5 on every group
(as the LeJEPA reference code), solarize p 0.2, ImageNet normalisation.

Deliberate differences from torchvision, each for speed on the device:
  - crop boxes are continuous (no rounding to whole pixels) and bilinear-sampled; a group whose
    crops shrink by >= 1.5x is supersampled (2x, 3x or 4x) and average-pooled, a cheap antialias;
  - the four jitter operations run in one random order per group and call (torchvision draws an
    order per image); non-jittered images get identity factors instead of being skipped;
  - blur: a per-image separable kernel, 13 taps (+-3 sigma at sigma 2), reflect padding, run on the
    selected images only (banded matmuls on a GPU, a depthwise convolution on the CPU).
Under ``compiled=True`` the colour operations are fused into the compiled training step. All draws
happen on the CPU and reach the GPU in one pinned, non-blocking copy per group, so building views
never makes the CPU wait for the GPU. On the CPU the same code is fine for tests and tiny demos,
not for CPU training at 224. What it costs, as measured (GPU and CPU): BENCHMARKS.md, "Figures
moved from docstrings".
All random numbers come from ``generator`` (drawn on the generator's device, so a CPU generator
gives the same views on CPU and GPU up to float round-off) in a fixed number of draws: same
generator state, same views.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Augment", "make_views", "normalize", "view_generator"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = (0.2989, 0.587, 0.114)     # torchvision's rgb_to_grayscale weights
_BLUR_TAPS = 13


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths and probabilities (defaults: the paper's ViT recipe)."""
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.2
    solarize_threshold: float = 128 / 255


def view_generator(seed: int, step: int, rank: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator for one (seed, step, rank): well-mixed via numpy's SeedSequence, so nearby
    (seed, step, rank) triples give unrelated streams and a resumed run redraws the same views."""
    state = np.random.SeedSequence([int(seed), int(step), int(rank), 0x5EED_7135]).generate_state(2, np.uint64)
    g = torch.Generator(device=device)
    g.manual_seed(int(state[0] % (2**63 - 1)))
    return g


def _to_float_bchw(frames: torch.Tensor) -> torch.Tensor:
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (B, H, W, 3), got {tuple(frames.shape)} {frames.dtype}")
    return frames.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()


_CONSTANTS: dict = {}


def _const(values: tuple, like: torch.Tensor) -> torch.Tensor:
    """A small constant tensor on x's device, made once: torch.tensor(..., device="cuda") is a
    pageable copy that waits for the GPU (a host sync per call)."""
    key = (values, like.device, like.dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=like.dtype).to(like.device)
    return _CONSTANTS[key]


def _normalize_(x: torch.Tensor) -> torch.Tensor:
    mean = _const(IMAGENET_MEAN, x).view(3, 1, 1)
    std = _const(IMAGENET_STD, x).view(3, 1, 1)
    return x.sub_(mean).div_(std)


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W), ImageNet-normalized, no augmentation (probes)."""
    return _normalize_(_to_float_bchw(frames))


# ---------------------------------------------------------------------------------------------
# per-sample colour operations: x (n, 3, h, w) in [0, 1], factors (n,)

def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(-3)


def _col(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _col(f)).add_(y * (1 - _col(f))).clamp_(0, 1)


def adjust_brightness(x, f):
    return (x * _col(f)).clamp_(0, 1)


def adjust_contrast(x, f):
    w = _const(_GRAY, x)
    mean = (x.mean(dim=(-2, -1)) @ w).view(-1, 1, 1, 1)           # mean of the grayscale image
    return _blend(x, mean, f)


def adjust_saturation(x, f):
    return _blend(x, _gray(x), f)


_HUE_N = (5.0, 3.0, 1.0)


def adjust_hue(x, f):
    """Shift hue by f (fraction of a turn) in HSV space, as torchvision's adjust_hue, without
    materialising H, S, V: with M = max, m = min, C = M - m (= V S) and the first maximal channel i,
    6 H = 2 i + (x[i+1] - x[i+2]) / C, and channel n of the result is
    M - C clamp(min(k, 4 - k), 0, 1) with k = (n + 6 H) mod 6, n = 5, 3, 1 for R, G, B."""
    maxc, imax = x.max(dim=-3, keepdim=True)                        # first max on ties: R, then G
    cr = maxc - x.amin(dim=-3, keepdim=True)
    nxt = x.gather(-3, torch.remainder(imax + 1, 3)) - x.gather(-3, torch.remainder(imax + 2, 3))
    h6 = nxt.div_(torch.where(cr == 0, torch.ones_like(cr), cr)).add_(2 * imax.to(x.dtype))
    h6 = h6.add_(6 * _col(f))
    n = _const(_HUE_N, x).view(1, 3, 1, 1)
    k = torch.remainder(h6 + n, 6.0)
    k = torch.minimum(k, 4.0 - k).clamp_(0, 1)
    return maxc - cr * k


def _blur_kernels(sigma: torch.Tensor, dtype) -> torch.Tensor:
    half = _BLUR_TAPS // 2
    t = torch.arange(-half, half + 1, device=sigma.device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma.to(dtype).view(-1, 1)) ** 2)
    return k / k.sum(dim=1, keepdim=True)                              # (n, taps)


def _blur_conv(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable blur as a depthwise convolution (one kernel per image); fast on the CPU."""
    n, c, h, w = x.shape
    half = _BLUR_TAPS // 2
    k = _blur_kernels(sigma, x.dtype).repeat_interleave(c, dim=0)      # (n*c, taps)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode="reflect"), k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode="reflect"), k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def _blur_matrix(size: int, k: torch.Tensor) -> torch.Tensor:
    """(n, size, size) banded matrices M with (M @ v) = v blurred by k with reflect padding."""
    n, taps = k.shape
    half = taps // 2
    i = torch.arange(size, device=k.device).view(size, 1)
    j = (i + torch.arange(-half, half + 1, device=k.device).view(1, taps)).abs()
    j = torch.where(j > size - 1, 2 * (size - 1) - j, j)
    m = torch.zeros(n, size, size, device=k.device, dtype=k.dtype)
    return m.scatter_add_(2, j.expand(n, size, taps), k.view(n, 1, taps).expand(n, size, taps))


def _blur_matmul(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable blur as two batched matmuls with banded matrices; on a GPU this beats the
    depthwise convolution (~4x on an H100) and needs no padded copy."""
    n, c, h, w = x.shape
    k = _blur_kernels(sigma, x.dtype)
    mh = _blur_matrix(h, k).unsqueeze(1)
    mw = mh if w == h else _blur_matrix(w, k).unsqueeze(1)
    return torch.matmul(torch.matmul(mh, x), mw.transpose(-1, -2))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Blur images where `apply` (bool (n,)) with their own sigma (n,), reflect padding,
    _BLUR_TAPS taps; the other images are returned unchanged. Only the selected images are
    processed; keep `apply` and `sigma` on the CPU to avoid a device sync for the selection."""
    idx = apply.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    sig = _to_device(sigma.index_select(0, idx.to(sigma.device)).float(), x.device)
    idx = _to_device(idx, x.device)
    sub = x.index_select(0, idx)
    blurred = _blur_matmul(sub, sig) if x.is_cuda else _blur_conv(sub, sig)
    # under bf16 autocast (pretrain.py builds the views inside it) the matmuls return bf16
    return x.index_copy(0, idx, blurred.to(x.dtype))


# ---------------------------------------------------------------------------------------------
# crops

def _rand(shape, g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=g.device, dtype=torch.float64) * (hi - lo) + lo


def sample_boxes(n: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                 g: torch.Generator, tries: int = 10) -> torch.Tensor:
    """(n, 4) boxes (x0, y0, w, h) in pixels, torchvision RandomResizedCrop.get_params vectorised:
    up to `tries` (area fraction, log-uniform aspect) draws, the first that fits wins, else the
    centre crop clamped to the ratio range. Continuous (not rounded). On the generator's device."""
    area = height * width
    target = area * _rand((n, tries), g, *scale)
    aspect = torch.exp(_rand((n, tries), g, math.log(ratio[0]), math.log(ratio[1])))
    w = torch.sqrt(target * aspect)
    h = torch.sqrt(target / aspect)
    ok = (w <= width) & (h <= height)
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    found = ok.any(dim=1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), width / ratio[0]
    elif in_ratio > ratio[1]:
        fw, fh = height * ratio[1], float(height)
    else:
        fw, fh = float(width), float(height)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    u = _rand((n, 2), g)
    x0 = torch.where(found, u[:, 0] * (width - w), (width - w) / 2)
    y0 = torch.where(found, u[:, 1] * (height - h), (height - h) / 2)
    return torch.stack([x0, y0, w, h], dim=1)


def _crop_group(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, count: int, size: int,
                shrink: float) -> torch.Tensor:
    """x (B, 3, H, W); boxes (count*B, 4) and flip (count*B,) on x's device, crop index c*B + b.
    -> (count*B, 3, size, size): one grid_sample, crops of frame b stacked along the output height.
    ``shrink``: the largest crop side / size; >= 1.5 supersamples (bilinear alone aliases)."""
    B, _, H, W = x.shape
    ss = int(min(4, max(1, round(shrink))))
    m = size * ss
    u = (torch.arange(m, device=x.device, dtype=torch.float32) * 2 + 1) / m - 1        # pixel centres
    x0, y0, bw, bh = [t.to(torch.float32).view(count, B, 1) for t in boxes.unbind(1)]
    fl = flip.view(count, B, 1)
    ux = torch.where(fl, -u, u)                                                       # (count, B, m)
    gx = (2 * x0 + (ux + 1) * bw) / W - 1                                             # (count, B, m) along width
    gy = (2 * y0 + (u + 1) * bh) / H - 1                                              # (count, B, m) along height
    grid = torch.stack(torch.broadcast_tensors(gx.unsqueeze(2), gy.unsqueeze(3)), dim=-1)  # (count, B, m, m, 2)
    grid = grid.permute(1, 0, 2, 3, 4).reshape(B, count * m, m, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out.view(B, 3, count, m, m).permute(2, 0, 1, 3, 4).reshape(count * B, 3, m, m)
    if ss > 1:
        out = F.avg_pool2d(out, ss)
    return out


def _draw_group(count: int, total: int, offset: int, B: int, H: int, W: int, scale, aug: Augment,
                g: torch.Generator) -> dict:
    """Every random number of one view group, drawn on the generator's device for the `total`
    samples of the global batch (all ranks), then sliced to this rank's `B` samples from
    `offset`: sample i of a step gets the same views whatever the number of workers."""
    n = count * total

    def mine(t: torch.Tensor) -> torch.Tensor:       # (count*total, ...) -> (count*B, ...)
        return t.view(count, total, *t.shape[1:])[:, offset:offset + B].reshape(count * B, *t.shape[1:])

    boxes = sample_boxes(n, H, W, scale, aug.ratio, g)
    # supersampling factor from the global batch, so that every rank resamples alike
    shrink = float(torch.maximum(boxes[:, 2], boxes[:, 3]).max())
    return {"boxes": mine(boxes), "shrink": shrink,
            "flip": mine(_rand(n, g) < aug.flip_p),
            "jit": mine(_rand(n, g) < aug.jitter_p),
            "fac": mine(_rand((n, 4), g)),
            "order": torch.randperm(4, generator=g, device=g.device).tolist(),
            "gray": mine(_rand(n, g) < aug.gray_p),
            "blur": mine(_rand(n, g) < aug.blur_p),
            "sigma": mine(_rand(n, g, *aug.blur_sigma)),
            "sol": mine(_rand(n, g) < aug.solarize_p)}


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU -> GPU without a host sync: pinned memory and a non-blocking copy (a pageable copy
    waits for the stream, stalling the CPU that should be queueing the next kernels)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _augment_group(x: torch.Tensor, count: int, size: int, scale, aug: Augment, g: torch.Generator,
                   offset: int, total: int, compiled: bool = False) -> torch.Tensor:
    B, _, H, W = x.shape
    dev = x.device
    r = _draw_group(count, total, offset, B, H, W, scale, aug, g)

    # The per-sample factors, identity where the image is not jittered (torchvision skips it).
    center = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    strength = torch.tensor([aug.brightness, aug.contrast, aug.saturation, aug.hue], dtype=torch.float64)
    fac = center.to(r["fac"].device) + (2 * r["fac"] - 1) * strength.to(r["fac"].device)
    fac = torch.where(r["jit"].unsqueeze(1), fac, center.to(r["fac"].device))
    # One transfer for the whole group: boxes (4), flip, factors (4), gray, solarize.
    packed = torch.cat([r["boxes"], r["flip"].unsqueeze(1).double(), fac,
                        r["gray"].unsqueeze(1).double(), r["sol"].unsqueeze(1).double()], dim=1)
    packed = _to_device(packed.float(), dev)
    boxes, flip, fac, gray, sol = packed[:, :4], packed[:, 4] > 0.5, packed[:, 5:9], packed[:, 9], packed[:, 10]

    v = _crop_group(x, boxes, flip, count, size, r["shrink"] / size)

    ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
    for i in r["order"]:
        v = _fused(ops[i], compiled)(v, fac[:, i].to(v.dtype))
    v = _fused(_grayscale_where, compiled)(v, gray)
    v = gaussian_blur(v, r["sigma"], r["blur"])
    v = _fused(_solarize_normalize, compiled)(v, sol, aug.solarize_threshold)
    return v.view(count, B, 3, size, size)


def _grayscale_where(v: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    return torch.where(_col(gray > 0.5), _gray(v).expand_as(v), v)


def _solarize_normalize(v: torch.Tensor, sol: torch.Tensor, threshold: float) -> torch.Tensor:
    v = torch.where(_col(sol > 0.5) & (v >= threshold), 1.0 - v, v)
    # per-channel scalars, not a constant tensor: traceable by torch.compile and sync-free
    return torch.stack([(v[:, c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c] for c in range(3)], dim=1)


_FUSED: dict = {}


def _fused(fn, compiled: bool):
    """`fn` itself, or its torch.compile'd form (one fused kernel instead of ~5-15 passes over the
    views; static shapes: one compile per view size). Only worth it on a GPU."""
    if not compiled:
        return fn
    if fn not in _FUSED:
        _FUSED[fn] = torch.compile(fn, dynamic=False, fullgraph=True)
    return _FUSED[fn]


def make_views(frames: torch.Tensor, groups: Sequence[tuple[int, int]] = ((2, 224), (6, 96)),
               generator: torch.Generator | None = None,
               global_scale: tuple[float, float] = (0.3, 1.0),
               local_scale: tuple[float, float] = (0.05, 0.3),
               aug: Augment = Augment(), offset: int = 0, total: int | None = None,
               compiled: bool = False) -> list[torch.Tensor]:
    """uint8 frames (B, H, W, 3) on any device -> one float32 tensor (count, B, 3, size, size) per
    group, normalized, on the frames' device. Group 0 are the global views (``global_scale``), the
    others local (``local_scale``).

    ``generator``: seed it per (seed, step), e.g. with :func:`view_generator`; keep it on the CPU
    (the draws are tiny, and a CPU generator means no host sync on a GPU). None draws from torch's
    default CPU generator. ``offset``/``total``: these frames are samples offset..offset+B of a
    global batch of ``total`` (data-parallel ranks): the draws are made for the global batch and
    sliced, so a sample's views do not depend on how the batch is split over workers.
    ``compiled``: fuse the colour operations with torch.compile (GPU training with --compile)."""
    g = generator if generator is not None else torch.default_generator
    B = frames.shape[0]
    total = B if total is None else int(total)
    if not (0 <= offset and offset + B <= total):
        raise ValueError(f"frames {offset}..{offset + B} lie outside a global batch of {total}")
    x = _to_float_bchw(frames)
    out = []
    for gi, (count, size) in enumerate(groups):
        scale = global_scale if gi == 0 else local_scale
        out.append(_augment_group(x, int(count), int(size), scale, aug, g, offset, total, compiled))
    return out
