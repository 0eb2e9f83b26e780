"""LeJEPA: SIGReg against direct evaluations (quadrature, loops, gradcheck), its behaviour on
Gaussian / collapsed / uniform embeddings, the loss terms, training on a tiny ViT, and a 2-process
gloo run whose loss and gradients must equal one process on the same frames.

Only torch/numpy/sportray.lejepa at import time: the DDP test's spawned workers import this file.
"""
from __future__ import annotations

import math
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

from sportray.lejepa import LeJEPA, Projector, draw_directions, sigreg, sigreg_per_direction


def _unit(a):
    return a / a.norm(dim=0, keepdim=True)


# ------------------------------------------------------------------------------------ SIGReg math

def test_sigreg_gaussian_small_collapsed_and_uniform_large():
    g = torch.Generator().manual_seed(0)
    n, d = 2048, 32
    dirs = draw_directions(d, 256, step=0, seed=0)
    z = torch.randn(n, d, generator=g)
    # E[N |ecf - phi|^2] = 1 - exp(-t^2) for Gaussian data, so E[stat] = int_-3^3 (1 - e^{-t^2}) e^{-t^2/2} dt = 1.05
    gauss = sigreg(z, dirs).item()
    assert abs(gauss - 1.05) < 0.5, gauss
    collapsed = sigreg(torch.full((n, d), 0.3), dirs).item()
    assert collapsed > 500, collapsed
    # Uniform[-sqrt 3, sqrt 3] (unit variance). Random projections of 32 iid uniforms are nearly
    # Gaussian (CLT), so test the marginals themselves: axis-aligned directions.
    u = (torch.rand(n, d, generator=g) * 2 - 1) * math.sqrt(3)
    axes = torch.eye(d)
    assert sigreg(z, axes).item() < 2.5
    assert sigreg(u, axes).item() > 15
    # scale matters: a Gaussian with std 2 is not N(0, 1)
    assert sigreg(2 * z, dirs).item() > 50


def _integrand(x, t):
    """|mean_n exp(i t x_n) - exp(-t^2/2)|^2 exp(-t^2/2) for 1-D float64 samples x."""
    c = sum(math.cos(t * v) for v in x) / len(x)
    s = sum(math.sin(t * v) for v in x) / len(x)
    phi = math.exp(-t * t / 2)
    return ((c - phi) ** 2 + s ** 2) * phi


def _small_case():
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(48, 4, generator=g, dtype=torch.float64) * 0.8 + 0.3)
    dirs = torch.randn(4, 3, generator=g, dtype=torch.float64)      # not unit: sigreg normalises
    return z, dirs


def test_sigreg_matches_quadrature():
    from scipy.integrate import quad

    z, dirs = _small_case()
    xs = (z @ _unit(dirs)).T.tolist()
    direct = sum(2 * len(x) * quad(lambda t: _integrand(x, t), 0.0, 3.0, epsabs=1e-12, epsrel=1e-10)[0]
                 for x in xs) / len(xs)
    ours = sigreg(z, dirs, t_max=3.0, n_points=1001).item()
    assert abs(ours - direct) / direct < 1e-3, (ours, direct)
    assert abs(sigreg(z, dirs).item() - direct) / direct < 0.05     # the default 17 knots are close


def test_sigreg_equals_loop_trapezoid():
    z, dirs = _small_case()
    t_max, k = 3.0, 17
    dt = t_max / (k - 1)
    stats = []
    for x in (z @ _unit(dirs)).T.tolist():
        total = 0.0
        for i in range(k):
            w = dt / 2 if i in (0, k - 1) else dt
            total += w * _integrand(x, i * dt)
        stats.append(len(x) * 2 * total)
    loop = sum(stats) / len(stats)
    assert abs(sigreg(z, dirs, t_max, k).item() - loop) <= 1e-6 * loop
    per_dir = sigreg_per_direction(z, dirs, t_max, k)
    assert torch.allclose(per_dir, torch.tensor(stats, dtype=torch.float64), rtol=1e-9)


def test_sigreg_gradcheck_and_dtype():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    dirs = torch.randn(3, 2, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: sigreg(v, dirs), (z,))
    assert sigreg(z.detach().to(torch.bfloat16), dirs.float()).dtype == torch.float32


def test_directions_fresh_per_step_and_reproducible():
    a = draw_directions(16, 8, step=5, seed=1)
    assert a.shape == (16, 8) and torch.allclose(a.norm(dim=0), torch.ones(8), atol=1e-6)
    assert torch.equal(a, draw_directions(16, 8, step=5, seed=1))
    assert not torch.allclose(a, draw_directions(16, 8, step=6, seed=1))
    assert not torch.allclose(a, draw_directions(16, 8, step=5, seed=2))
    torch.manual_seed(0)   # the global RNG does not enter (identical on every rank by construction)
    b = draw_directions(16, 8, step=5, seed=1)
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------ the loss

def test_lejepa_terms():
    torch.manual_seed(0)
    model = LeJEPA(embed_dim=12, proj_dim=6, n_directions=32, lambda_sigreg=0.2, hidden_dim=16)
    g = torch.Generator().manual_seed(3)
    emb = [torch.randn(2, 20, 12, generator=g), torch.randn(3, 20, 12, generator=g) + 1.0]
    out = model(emb, step=4, seed=9)
    z = model.projector(torch.cat(emb).reshape(-1, 12)).reshape(5, 20, 6)
    c = z[:2].mean(0)                                   # centre = the 2 global views only
    inv = torch.stack([((c - z[v]) ** 2).mean() for v in range(5)]).mean()
    a = draw_directions(6, 32, step=4, seed=9)
    sg = torch.stack([sigreg(z[v], a) for v in range(5)]).mean()    # per view, then averaged
    assert torch.allclose(out["inv"], inv, rtol=1e-5)
    assert torch.allclose(out["sigreg"], sg, rtol=1e-5)
    assert torch.allclose(out["loss"], 0.8 * inv + 0.2 * sg, rtol=1e-5)
    assert not torch.allclose(out["inv"], (z - z.mean(0)).square().mean())  # not the all-view centre
    assert not torch.allclose(out["sigreg"], sigreg(z.reshape(-1, 6), a))   # not views flattened
    assert not torch.allclose(model(emb, step=5, seed=9)["sigreg"], out["sigreg"])  # fresh directions
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    assert isinstance(model.projector, Projector)


def test_loss_decreases_training_tiny_vit():
    from sportray.backbones import build_backbone
    from sportray.views import make_views, view_generator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny ops: threads only add sync overhead on a shared machine
    try:
        losses = _train_tiny(make_views, view_generator, build_backbone)
    finally:
        torch.set_num_threads(threads)
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, losses


def _train_tiny(make_views, view_generator, build_backbone):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    # 32 smooth random "frames" (upsampled low-res noise) so crops of one frame share content
    low = torch.rand(32, 3, 6, 10, generator=g)
    frames = (torch.nn.functional.interpolate(low, size=(48, 80), mode="bilinear") * 255).to(torch.uint8)
    frames = frames.permute(0, 2, 3, 1).contiguous()
    backbone = build_backbone("vit_tiny_demo", seed=0)
    # lambda 0.5 rather than the paper's 0.05: at init the views already agree (inv is small), so
    # with 0.05 the loss only drifts ~10 %; the SIGReg term gives a clear signal in 30 steps.
    head = LeJEPA(embed_dim=backbone.embed_dim, proj_dim=32, n_directions=64, lambda_sigreg=0.5,
                  hidden_dim=128)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    losses = []
    for step in range(30):
        idx = torch.randperm(32, generator=g)[:16]
        views = make_views(frames[idx], ((2, 64), (2, 32)), view_generator(0, step))
        emb = [backbone(v.flatten(0, 1)).view(v.shape[0], v.shape[1], -1) for v in views]
        out = head(emb, step=step, seed=0)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    return losses


# ------------------------------------------------------------------------------------ DDP

D, K, S, LAM, B, STEP, SEED = 12, 8, 64, 0.3, 16, 3, 7


def _ddp_inputs():
    g = torch.Generator().manual_seed(11)
    torch.manual_seed(5)
    model = LeJEPA(D, K, S, LAM, hidden_dim=24)
    # train(): the projector's BatchNorms take global-batch statistics across ranks
    # (GlobalBatchNorm1d), so a shard per rank must give the full batch's loss and gradients.
    emb = [torch.randn(2, B, D, generator=g), torch.randn(3, B, D, generator=g) * 1.5]
    return model.train(), emb


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    try:
        model, emb = _ddp_inputs()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        per = B // world
        shard = [e[:, rank * per:(rank + 1) * per].clone().requires_grad_(True) for e in emb]
        out = ddp(shard, step=STEP, seed=SEED)
        out["loss"].backward()
        # standalone sigreg on the shard of one view: must be the full-batch statistic
        z = emb[1][0, rank * per:(rank + 1) * per]
        sg_standalone = sigreg(z, draw_directions(D, S, STEP, SEED))
        res = {k: v.detach() for k, v in out.items()}
        res["sg_standalone"] = sg_standalone.detach()
        res["grads"] = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        res["emb_grads"] = [e.grad.detach().clone() for e in shard]
        torch.save(res, os.path.join(path, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_workers_match_one_process(tmp_path):
    import torch.multiprocessing as mp

    world = 2
    # spawn, not fork: the pytest process may hold Ray/gRPC or OpenMP threads that a fork copies
    # half-alive; the price is one torch import per worker (a few seconds).
    mp.start_processes(_ddp_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world,
                       join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]

    model, emb = _ddp_inputs()
    emb = [e.clone().requires_grad_(True) for e in emb]
    out = model(emb, step=STEP, seed=SEED)
    out["loss"].backward()
    full_grads = {n: p.grad for n, p in model.named_parameters()}
    sg_full = sigreg(emb[1][0].detach(), draw_directions(D, S, STEP, SEED))

    per = B // world
    for r, res in enumerate(ranks):
        # SIGReg is the global-batch statistic on every rank (N_global = N x world size)
        assert torch.allclose(res["sigreg"], out["sigreg"], rtol=1e-5), (res["sigreg"], out["sigreg"])
        assert torch.allclose(res["sg_standalone"], sg_full, rtol=1e-5)
        # projector gradients after DDP averaging = single-process gradients on the full batch
        for n, gr in res["grads"].items():
            assert torch.allclose(gr, full_grads[n], rtol=1e-4, atol=1e-6), n
        # input gradients: each rank's loss is a mean over its shard -> world x the full-batch ones
        for e_full, g_rank in zip(emb, res["emb_grads"]):
            want = e_full.grad[:, r * per:(r + 1) * per]
            assert torch.allclose(g_rank / world, want, rtol=1e-4, atol=1e-7)
    # the invariance term is a per-rank mean: its average over ranks is the full-batch one
    inv = sum(res["inv"] for res in ranks) / world
    loss = sum(res["loss"] for res in ranks) / world
    assert torch.allclose(inv, out["inv"], rtol=1e-5)
    assert torch.allclose(loss, out["loss"], rtol=1e-5)
