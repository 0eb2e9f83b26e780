"""Views: shapes, determinism, crop geometry (identity / flip / box statistics), and each colour
operation against torchvision's reference implementation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from sportray import views as V
from sportray.views import IMAGENET_MEAN, IMAGENET_STD, Augment, make_views, normalize, view_generator

NO_AUG = Augment(flip_p=0, jitter_p=0, gray_p=0, blur_p=0, solarize_p=0)


def _frames(b=3, h=40, w=72, seed=0):
    return torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_shapes_dtype_and_range():
    f = _frames()
    out = make_views(f, ((2, 32), (3, 16)), view_generator(0, 0))
    assert [tuple(v.shape) for v in out] == [(2, 3, 3, 32, 32), (3, 3, 3, 16, 16)]
    lo = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    hi = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    for v in out:
        assert v.dtype == torch.float32 and v.device == f.device and torch.isfinite(v).all()
        assert v.min() >= lo - 1e-4 and v.max() <= hi + 1e-4
    # the views of one frame differ from each other (random crops), and between frames
    assert not torch.allclose(out[0][0], out[0][1])
    with pytest.raises(ValueError, match="uint8"):
        make_views(f.float(), ((1, 16),), view_generator(0, 0))


def test_deterministic_given_generator():
    f = _frames()
    groups = ((2, 32), (2, 16))
    a = make_views(f, groups, view_generator(3, 7))
    b = make_views(f, groups, view_generator(3, 7))
    c = make_views(f, groups, view_generator(3, 8))
    d = make_views(f, groups, view_generator(3, 7, rank=1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(not torch.allclose(x, y) for x, y in zip(a, c))
    assert all(not torch.allclose(x, y) for x, y in zip(a, d))


def test_normalize():
    f = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)            # (1, 1, 1, 3)
    out = normalize(f)
    assert out.shape == (1, 3, 1, 1) and out.dtype == torch.float32
    want = [(v / 255 - m) / s for v, m, s in zip((0, 128, 255), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(out.flatten(), torch.tensor(want), atol=1e-6)


def test_full_crop_is_identity_and_flip_flips():
    f = _frames(h=32, w=32)
    # square frame, scale 1: every ratio draw but 1 is rejected -> centre fallback = the whole frame
    out = make_views(f, ((2, 32),), view_generator(0, 0), global_scale=(1.0, 1.0), aug=NO_AUG)[0]
    assert torch.allclose(out[0], normalize(f), atol=1e-5) and torch.allclose(out[1], normalize(f), atol=1e-5)
    flip = Augment(flip_p=1, jitter_p=0, gray_p=0, blur_p=0, solarize_p=0)
    out = make_views(f, ((1, 32),), view_generator(0, 0), global_scale=(1.0, 1.0), aug=flip)[0]
    assert torch.allclose(out[0], normalize(f).flip(-1), atol=1e-5)
    # 2x shrink is supersampled then averaged: equals 2x2 average pooling for a full crop
    out = make_views(f, ((1, 16),), view_generator(0, 0), global_scale=(1.0, 1.0), aug=NO_AUG)[0]
    assert torch.allclose(out[0], F.avg_pool2d(normalize(f), 2), atol=1e-5)


def test_crop_follows_the_box():
    # A frame whose pixel value encodes its column: a crop's mean column tells where it came from.
    h, w = 48, 96
    col = torch.arange(w, dtype=torch.float32).mul(255 / (w - 1)).round().to(torch.uint8)
    f = col.view(1, 1, w, 1).expand(2, h, w, 3).contiguous()
    g = view_generator(1, 1)
    state = g.get_state()
    out = make_views(f, ((4, 16),), g, global_scale=(0.05, 0.3), aug=NO_AUG)[0]
    g.set_state(state)
    boxes = V.sample_boxes(8, h, w, (0.05, 0.3), NO_AUG.ratio, g)      # the same draws
    x = out[:, :, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]              # back to [0, 1], red channel
    got_mean_col = x.mean(dim=(-2, -1)).flatten() * (w - 1)           # crop index c*B + b
    want = boxes[:, 0] + boxes[:, 2] / 2 - 0.5
    assert torch.allclose(got_mean_col, want.float(), atol=0.6)


def test_box_statistics():
    g = torch.Generator().manual_seed(0)
    h, w, n = 224, 398, 4000
    for scale in ((0.3, 1.0), (0.05, 0.3)):
        b = V.sample_boxes(n, h, w, scale, (3 / 4, 4 / 3), g)
        x0, y0, bw, bh = b.unbind(1)
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + bw <= w + 1e-6).all() and (y0 + bh <= h + 1e-6).all()
        area = bw * bh / (h * w)
        ratio = bw / bh
        fallback = (area - 224 * 298 / (h * w)).abs() < 1e-9         # centre crop at the max ratio
        assert (area[~fallback] >= scale[0] - 1e-9).all() and (area[~fallback] <= scale[1] + 1e-9).all()
        assert (ratio >= 3 / 4 - 1e-9).all() and (ratio <= 4 / 3 + 1e-9).all()
        assert fallback.float().mean() < 0.02
        # positions are spread over the frame, not stuck at a corner or the centre
        cx = (x0 + bw / 2) / w
        assert 0.45 < cx.mean() < 0.55 and cx.std() > 0.1 * (1 - math.sqrt(scale[1]))


@pytest.mark.parametrize("f", [-0.1, -0.04, 0.0, 0.07, 0.1])
def test_hue_matches_torchvision(f):
    x = torch.rand(4, 3, 9, 11, generator=torch.Generator().manual_seed(1))
    x[0, :, :3] = 0.5                      # gray pixels (C = 0)
    x[1, 1] = x[1, 0]                      # ties between R and G
    x[2, :, :2, :2] = 0                    # black
    want = torch.stack([TF.adjust_hue(xi, f) for xi in x])
    assert torch.allclose(V.adjust_hue(x, torch.full((4,), f)), want, atol=1e-5)


def test_colour_ops_match_torchvision():
    x = torch.rand(3, 3, 9, 11, generator=torch.Generator().manual_seed(2))
    fs = torch.tensor([0.6, 1.0, 1.4])
    for ours, ref in ((V.adjust_brightness, TF.adjust_brightness), (V.adjust_contrast, TF.adjust_contrast),
                      (V.adjust_saturation, TF.adjust_saturation)):
        want = torch.stack([ref(xi, float(fi)) for xi, fi in zip(x, fs)])   # per-image factors
        assert torch.allclose(ours(x, fs), want, atol=1e-6), ours.__name__
    want = torch.stack([TF.rgb_to_grayscale(xi, num_output_channels=1) for xi in x])
    assert torch.allclose(V._gray(x), want, atol=1e-6)


def test_blur_matches_torchvision_per_image():
    x = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([0.5, 2.0, 1.2])
    want = [TF.gaussian_blur(x[i], kernel_size=[13, 13], sigma=[float(sigma[i])] * 2) for i in range(3)]
    for impl in (V._blur_conv, V._blur_matmul):               # the CPU and the GPU formulation
        out = impl(x, sigma)
        for i in range(3):
            assert torch.allclose(out[i], want[i], atol=1e-5), (impl.__name__, i)
    out = V.gaussian_blur(x, sigma, torch.tensor([True, False, True]))
    assert torch.allclose(out[0], want[0], atol=1e-5) and torch.allclose(out[2], want[2], atol=1e-5)
    assert torch.equal(out[1], x[1])
    assert torch.equal(V.gaussian_blur(x, sigma, torch.zeros(3, dtype=torch.bool)), x)


def test_augmentation_rates():
    """Per-image decisions happen at their configured rates (grayscale views have R = G = B)."""
    f = _frames(b=64, h=32, w=32, seed=4)
    only_gray = Augment(flip_p=0, jitter_p=0, gray_p=0.2, blur_p=0, solarize_p=0)
    out = make_views(f, ((4, 16),), view_generator(0, 0), aug=only_gray)[0]
    x = out * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    is_gray = ((x[:, :, 0] - x[:, :, 1]).abs().amax(dim=(-2, -1)) < 1e-5).float()
    assert 0.12 < is_gray.mean() < 0.28                                   # 256 draws at p = 0.2


def test_a_samples_views_do_not_depend_on_how_the_batch_is_split_over_workers():
    # Two ranks of 3 frames each (offset 0 and 3 of a global batch of 6) get exactly the views
    # one worker gets for all 6: runs with different worker counts are comparable.
    f = _frames(6, 48, 80, seed=5)
    groups = ((2, 32), (3, 16))
    whole = make_views(f, groups, view_generator(2, 9))
    rank0 = make_views(f[:3], groups, view_generator(2, 9), offset=0, total=6)
    rank1 = make_views(f[3:], groups, view_generator(2, 9), offset=3, total=6)
    for w, a, b in zip(whole, rank0, rank1):
        assert torch.allclose(torch.cat([a, b], dim=1), w, atol=1e-5)
    # and the split is not a no-op: the two halves of the batch got different views
    assert not torch.allclose(rank0[0], rank1[0])
    # a slice outside the global batch is refused
    with pytest.raises(ValueError, match="outside a global batch of 6"):
        make_views(f[3:], groups, view_generator(2, 9), offset=4, total=6)


def test_compiled_colour_operations_give_the_eager_views():
    # --compile fuses the colour chain with torch.compile; it must not change what is computed.
    f = _frames(4, 40, 72, seed=7)
    groups = ((2, 24),)   # one view size: each compiles ~6 kernels for ~4 s apiece on 2 cores
    eager = make_views(f, groups, view_generator(1, 3))
    fused = make_views(f, groups, view_generator(1, 3), compiled=True)
    for a, b in zip(eager, fused):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
