"""LeJEPA loss: SIGReg (sliced Epps-Pulley) + multi-view invariance (Balestriero & LeCun 2025).

For V views of N frames with projected embeddings z (V, N, K):
  inv    = mean_v mean((c - z_v)^2),  c = mean of the *global* views (group 0);
  sigreg = mean over views and S random unit directions a of the Epps-Pulley statistic of the
           1-D projections x = z_v a:
             N * integral_R |mean_n exp(i t x_n) - exp(-t^2/2)|^2 exp(-t^2/2) dt,
           by the trapezoid rule on t in [0, t_max] (n_points knots) with doubled weights (the
           integrand is even in t);
  loss   = (1 - lambda) inv + lambda sigreg.
SIGReg is computed per view and then averaged (not on all views flattened), so the paper's lambda
values transfer. No teacher, stop-gradient or predictor.

DDP. The statistic is a function of the *global* batch's characteristic function, so each rank
all-reduces its cos/sin means (sum / world size) with the gradient-carrying
``torch.distributed.nn.functional.all_reduce`` and uses N_global = N x world size. Gradients: each
rank's backward gets d loss / d (its local means) summed over ranks; DDP then averages parameter
gradients, which gives exactly the single-process gradient on the global batch (tests check loss
and gradients of 2 gloo workers against 1 process). A plain ``dist.all_reduce`` (no gradient) or a
missing world-size factor silently rescales lambda by the GPU count.

Precision: the loss is computed in float32 with autocast off, since cos/sin of bf16 projections are
too coarse for a statistic that multiplies the squared error by N.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["sigreg", "sigreg_per_direction", "draw_directions", "GlobalBatchNorm1d", "Projector", "LeJEPA",
           "world_size"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_mean(t: torch.Tensor, ws: int) -> torch.Tensor:
    """Mean over ranks, carrying gradients (the backward all-reduces the gradients)."""
    import torch.distributed.nn.functional as dist_fn
    with warnings.catch_warnings():   # deprecated in newer torch in favour of functional collectives
        warnings.simplefilter("ignore", FutureWarning)
        return dist_fn.all_reduce(t, op=dist.ReduceOp.SUM) / ws


def _knots(t_max: float, n_points: int, device, dtype):
    """Knots t, target phi(t) = exp(-t^2/2) and weights (trapezoid on [0, t_max], doubled, times
    the exp(-t^2/2) window)."""
    if n_points < 2:
        raise ValueError(f"n_points={n_points}: need at least 2 knots")
    t = torch.linspace(0.0, float(t_max), n_points, device=device, dtype=dtype)
    dt = float(t_max) / (n_points - 1)
    w = torch.full((n_points,), 2 * dt, device=device, dtype=dtype)
    w[0] = w[-1] = dt
    phi = torch.exp(-0.5 * t * t)
    return t, phi, w * phi


def sigreg_per_direction(z: torch.Tensor, directions: torch.Tensor, t_max: float = 3.0,
                         n_points: int = 17) -> torch.Tensor:
    """Epps-Pulley statistic per direction: z (..., N, D), directions (D, S) -> (..., S).

    Leading dims (e.g. views) are independent statistics; under torch.distributed (world size > 1)
    the batch dim N is the local shard and the statistic is the global one.
    """
    a = directions / directions.norm(dim=0, keepdim=True)
    x = z @ a                                                        # (..., N, S)
    n = z.shape[-2]
    t, phi, w = _knots(t_max, n_points, z.device, z.dtype)
    xt = x.unsqueeze(-1) * t                                         # (..., N, S, T)
    cos_m = torch.cos(xt).mean(dim=-3)                               # (..., S, T)
    sin_m = torch.sin(xt).mean(dim=-3)
    ws = world_size()
    if ws > 1:
        cos_m = _all_reduce_mean(cos_m, ws)
        sin_m = _all_reduce_mean(sin_m, ws)
    err = (cos_m - phi).square() + sin_m.square()
    return (err @ w) * (n * ws)


def sigreg(z: torch.Tensor, directions: torch.Tensor, t_max: float = 3.0, n_points: int = 17) -> torch.Tensor:
    """Scalar SIGReg: mean over the S directions of the Epps-Pulley statistic of z (N, D) projected
    on the unit-normalised columns of directions (D, S). Computed in float32 or wider (float64 in
    stays float64), autocast off."""
    dtype = torch.promote_types(z.dtype, torch.float32)
    with torch.autocast(device_type=z.device.type, enabled=False):
        return sigreg_per_direction(z.to(dtype), directions.to(dtype), t_max, n_points).mean()


def draw_directions(dim: int, n: int, step: int, seed: int, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(dim, n) unit-column random directions, fresh each step and identical on every rank: drawn on
    the CPU from a generator seeded by (seed, step) alone (the same numbers on any device), then
    moved to `device` without a host sync."""
    state = np.random.SeedSequence([int(seed), int(step), 0x51_6E_E6]).generate_state(1, np.uint64)[0]
    g = torch.Generator(device="cpu")
    g.manual_seed(int(state % (2**63 - 1)))
    a = torch.randn(dim, n, generator=g, dtype=torch.float32)
    a = (a / a.norm(dim=0, keepdim=True)).to(dtype)
    device = torch.device(device)
    if device.type == "cuda":
        # pinned + non-blocking: a pageable copy would make the CPU wait for the GPU every step
        return a.pin_memory().to(device, non_blocking=True)
    return a.to(device)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the global batch (all ranks), so that N
    workers of batch B train the model one worker of batch N x B would. Works on gloo and NCCL
    (nn.SyncBatchNorm refuses CPU tensors); one gradient-carrying all-reduce of 2 x C floats per
    layer. Ranks must hold equal batch sizes (the loop drops last partial batches). Same
    parameters and state_dict keys as nn.BatchNorm1d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ws = world_size()
        if not self.training or ws == 1:
            return super().forward(x)
        xf = x.float()
        stats = _all_reduce_mean(torch.cat([xf.mean(dim=0), xf.square().mean(dim=0)]), ws)
        mean, mean_sq = stats.chunk(2)
        var = (mean_sq - mean.square()).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            n = x.shape[0] * ws
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / max(1, n - 1), m)
                self.num_batches_tracked += 1
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y.to(x.dtype)


class Projector(nn.Module):
    """MLP head as in the LeJEPA reference (torchvision MLP(D, [H, H, K], norm_layer=BatchNorm1d)):
    Linear-BN-ReLU, Linear-BN-ReLU, Linear -> proj_dim. hidden 2048 for ViT-S; smaller for the tiny
    demo. The BatchNorms use global-batch statistics under DDP (GlobalBatchNorm1d)."""

    def __init__(self, embed_dim: int, proj_dim: int = 128, hidden_dim: int = 2048):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim), GlobalBatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), GlobalBatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, proj_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeJEPA(nn.Module):
    """Projector + LeJEPA loss.

    forward(embeddings, step, seed) or forward(embeddings, directions=a): embeddings is a list, one
    (count, B, D) tensor per view group (group 0 = global views; all groups share B), as the
    backbone's pooled outputs. All views are projected in one call (BatchNorm sees every view, as in
    the reference). Returns dict(loss, inv, sigreg), scalar tensors. The SIGReg directions are
    `directions` (proj_dim, n_directions), or drawn from (seed, step) with :func:`draw_directions`.
    Passing them in keeps the forward free of Python ints that change every step, so a compiled
    step is traced once (pretrain.py draws them before the step).
    """

    def __init__(self, embed_dim: int, proj_dim: int = 128, n_directions: int = 256,
                 lambda_sigreg: float = 0.05, hidden_dim: int = 2048, t_max: float = 3.0,
                 n_points: int = 17):
        super().__init__()
        self.projector = Projector(embed_dim, proj_dim, hidden_dim)
        self.proj_dim = proj_dim
        self.n_directions = n_directions
        self.lambda_sigreg = float(lambda_sigreg)
        self.t_max = t_max
        self.n_points = n_points

    def forward(self, embeddings: Sequence[torch.Tensor], step: int | None = None, seed: int | None = None,
                directions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if not embeddings:
            raise ValueError("LeJEPA: no view groups")
        n_global = embeddings[0].shape[0]
        e = torch.cat(list(embeddings), dim=0)                           # (V, B, D)
        V, B, D = e.shape
        z = self.projector(e.reshape(V * B, D)).reshape(V, B, -1)
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            c = z[:n_global].mean(dim=0)
            inv = (c - z).square().mean()
            if directions is None:
                if step is None or seed is None:
                    raise ValueError("LeJEPA: pass directions, or step and seed to draw them")
                directions = draw_directions(z.shape[-1], self.n_directions, step, seed, z.device)
            sg = sigreg_per_direction(z, directions.float(), self.t_max, self.n_points).mean()
            loss = (1.0 - self.lambda_sigreg) * inv + self.lambda_sigreg * sg
        return dict(loss=loss, inv=inv, sigreg=sg)
