"""The bare reference step: LeJEPA pretraining of a timm ViT-S/16 written the straightforward way,
with no sportray code (this module imports only torch and timm).

What one step does, all inside one torch.compile'd function (views, backbone, projector, loss),
then backward, global-norm clip and fused AdamW:
  - views made on the device from uint8 frames (B, H, W, 3), random numbers drawn on the device
    inside the compiled graph: per group and view, a random-resized crop (area `scale`, aspect
    3/4..4/3, one draw clamped to the frame) with a horizontal flip p 0.5 as one affine
    grid_sample; colour jitter p 0.8 (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1 as a
    YIQ rotation), grayscale p 0.2, Gaussian blur p 0.5 (sigma 0.1..2, 13 taps, per-image kernels
    as a grouped convolution), solarize p 0.2, ImageNet normalisation;
  - timm `vit_small_patch16_224` (num_classes=0, dynamic_img_size=True), mean of the patch tokens;
  - projector Linear-BN-ReLU, Linear-BN-ReLU, Linear (384 -> 2048 -> 2048 -> 128);
  - LeJEPA loss: invariance to the mean of the global views + SIGReg (Epps-Pulley, `directions`
    random unit directions drawn on the device each step, t in [0, 3], 17 knots), float32,
    lambda 0.05.

It is the yardstick sportray's step is measured against (bench/step.py runs both in one process).
"""
from __future__ import annotations

import math

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _crops(x: torch.Tensor, n_views: int, size: int, scale: tuple[float, float]) -> torch.Tensor:
    """x (B, 3, H, W) float -> (n_views * B, 3, size, size) random-resized, randomly flipped crops."""
    B, _, H, W = x.shape
    n = n_views * B
    dev = x.device
    area = torch.empty(n, device=dev).uniform_(*scale)
    log_r = torch.empty(n, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(log_r) * (H / W)                 # aspect in normalised units
    sw = torch.sqrt(area * ratio).clamp(max=1.0)       # crop width / frame width
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, device=dev) * 2 - 1) * (1 - sw)
    cy = (torch.rand(n, device=dev) * 2 - 1) * (1 - sh)
    flip = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
    zero = torch.zeros(n, device=dev)
    theta = torch.stack([torch.stack([sw * flip, zero, cx], 1), torch.stack([zero, sh, cy], 1)], 1)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    src = x.repeat(n_views, 1, 1, 1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _colour(v: torch.Tensor) -> torch.Tensor:
    n = v.shape[0]
    dev = v.device

    def draw(lo, hi):
        return torch.empty(n, 1, 1, 1, device=dev).uniform_(lo, hi)

    jit = torch.rand(n, 1, 1, 1, device=dev) < 0.8
    b = torch.where(jit, draw(0.6, 1.4), 1.0)
    c = torch.where(jit, draw(0.6, 1.4), 1.0)
    s = torch.where(jit, draw(0.8, 1.2), 1.0)
    h = torch.where(jit, draw(-0.1, 0.1), 0.0)
    gray_w = torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)
    v = (v * b).clamp(0, 1)
    mean = (v * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    v = (v * c + mean * (1 - c)).clamp(0, 1)
    gray = (v * gray_w).sum(1, keepdim=True)
    v = (v * s + gray * (1 - s)).clamp(0, 1)
    # hue: rotate the chroma plane of YIQ by 2 pi h
    r, g, bl = v.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    i = 0.596 * r - 0.274 * g - 0.322 * bl
    q = 0.211 * r - 0.523 * g + 0.312 * bl
    ang = (2 * math.pi * h).squeeze(1)
    cos, sin = torch.cos(ang), torch.sin(ang)
    i, q = i * cos - q * sin, i * sin + q * cos
    v = torch.stack([y + 0.956 * i + 0.621 * q, y - 0.272 * i - 0.647 * q, y - 1.106 * i + 1.703 * q], 1).clamp(0, 1)
    gray = (v * gray_w).sum(1, keepdim=True)
    return torch.where(torch.rand(n, 1, 1, 1, device=dev) < 0.2, gray.expand_as(v), v)


def _blur(v: torch.Tensor) -> torch.Tensor:
    n, c, h, w = v.shape
    dev = v.device
    sigma = torch.empty(n, 1, device=dev).uniform_(0.1, 2.0)
    t = torch.arange(-6, 7, device=dev, dtype=v.dtype).view(1, 13)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)            # (n*c, 13)
    y = v.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (6, 6, 0, 0), mode="reflect"), k.view(n * c, 1, 1, 13), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, 6, 6), mode="reflect"), k.view(n * c, 1, 13, 1), groups=n * c)
    return torch.where(torch.rand(n, 1, 1, 1, device=dev) < 0.5, y.view(n, c, h, w), v)


def _finish(v: torch.Tensor) -> torch.Tensor:
    sol = (torch.rand(v.shape[0], 1, 1, 1, device=v.device) < 0.2) & (v >= 0.5)
    v = torch.where(sol, 1.0 - v, v)
    mean = torch.tensor(MEAN, device=v.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=v.device).view(1, 3, 1, 1)
    return (v - mean) / std


def make_views(frames: torch.Tensor, groups, scales) -> list[torch.Tensor]:
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    return [_finish(_blur(_colour(_crops(x, count, size, scale)))) for (count, size), scale in zip(groups, scales)]


def sigreg(z: torch.Tensor, n_directions: int) -> torch.Tensor:
    """z (V, N, K) float32 -> mean over views and directions of the Epps-Pulley statistic."""
    a = torch.randn(z.shape[-1], n_directions, device=z.device)
    a = a / a.norm(dim=0, keepdim=True)
    x = z @ a                                                          # (V, N, S)
    t = torch.linspace(0, 3, 17, device=z.device)
    phi = torch.exp(-0.5 * t * t)
    w = torch.full((17,), 2 * 3 / 16, device=z.device)
    w[0] = w[-1] = 3 / 16
    xt = x.unsqueeze(-1) * t
    err = (torch.cos(xt).mean(1) - phi).square() + torch.sin(xt).mean(1).square()
    return ((err @ (w * phi)) * z.shape[1]).mean()


class BareLeJEPA(nn.Module):
    def __init__(self, n_directions: int = 256, lambda_sigreg: float = 0.05):
        super().__init__()
        self.vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0,
                                     dynamic_img_size=True)
        d = self.vit.embed_dim
        self.proj = nn.Sequential(nn.Linear(d, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True),
                                  nn.Linear(2048, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True),
                                  nn.Linear(2048, 128))
        self.n_directions, self.lam = n_directions, lambda_sigreg

    def forward(self, frames: torch.Tensor, groups, scales) -> torch.Tensor:
        B = frames.shape[0]
        emb = []
        with torch.autocast(frames.device.type, dtype=torch.bfloat16, enabled=frames.is_cuda):
            for v in make_views(frames, groups, scales):
                tokens = self.vit.forward_features(v)[:, self.vit.num_prefix_tokens:]
                emb.append(tokens.mean(1))
            e = torch.cat(emb)                                              # (V*B, D), view-major
            z = self.proj(e).float().view(-1, B, 128)
        n_global = groups[0][0]
        inv = (z[:n_global].mean(0) - z).square().mean()
        return (1 - self.lam) * inv + self.lam * sigreg(z, self.n_directions)


class BareStep:
    """One training step of the bare reference: compiled views + model + loss, backward,
    global-norm clip 1.0, fused AdamW (lr 5e-4, wd 0.05) on CUDA."""

    def __init__(self, device, groups=((2, 224), (6, 96)), scales=((0.3, 1.0), (0.05, 0.3)),
                 n_directions: int = 256, compile: bool = True):
        self.model = BareLeJEPA(n_directions).to(device)
        self.groups, self.scales = tuple(groups), tuple(scales)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=5e-4, weight_decay=0.05,
                                     fused=torch.device(device).type == "cuda")
        self.loss_fn = torch.compile(self.model) if compile else self.model

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(frames, self.groups, self.scales)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
        self.opt.step()
        return loss
