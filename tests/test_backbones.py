"""Backbones: shapes and readouts, seeded init, LoRA parameter counts, DINOv3 loading from a local
file (Meta and timm key layouts, clear errors), checkpoints with merged LoRA."""
from __future__ import annotations

import json

import pytest
import torch

from sportray.backbones import (
    CheckpointError, MissingWeightsError, WeightsError, add_lora, build_backbone, count_trainable,
    load_checkpoint, load_dinov3, save_checkpoint,
)

LORA_VITS16_R8 = 589_824            # r x 6,144 x 12 (DESIGN.md §4)
# per block r x (in + out) of qkv 96->288, proj 96->96, fc1 96->384, fc2 384->96; 4 blocks
LORA_TINY_R8 = 8 * ((96 + 288) + (96 + 96) + (96 + 384) + (384 + 96)) * 4     # 49,152


@pytest.fixture(scope="module")
def tiny():
    return build_backbone("vit_tiny_demo", seed=0).eval()


def test_tiny_shapes_and_readouts(tiny):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens = tiny.patch_tokens(x)
        pooled = tiny(x)
        feats = tiny.model.forward_features(x)
    assert tiny.embed_dim == 96 and tiny.num_prefix_tokens == 1
    assert tokens.shape == (2, 196, 96) and pooled.shape == (2, 96)
    assert torch.allclose(tokens, feats[:, 1:])                # CLS dropped, after the final norm
    assert torch.allclose(pooled, feats[:, 1:].mean(1))        # mean of patch tokens, not CLS
    assert not torch.allclose(pooled, feats.mean(1))
    with torch.no_grad():
        assert tiny.patch_tokens(torch.randn(1, 3, 96, 96)).shape == (1, 36, 96)    # dynamic size
        assert tiny(torch.randn(1, 3, 64, 128)).shape == (1, 96)


def test_seeded_init_does_not_touch_global_rng():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = build_backbone("vit_tiny_demo", seed=7)
    after = torch.rand(3)
    b = build_backbone("vit_tiny_demo", seed=7)
    c = build_backbone("vit_tiny_demo", seed=8)
    assert torch.equal(before, after)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.blocks.0.attn.qkv.weight"], sc["model.blocks.0.attn.qkv.weight"])
    assert a.arm == "scratch" and count_trainable(a) == sum(p.numel() for p in a.parameters())


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="vit_small"):
        build_backbone("vit_huge", seed=0)


def test_lora_count_vit_small():
    bb = add_lora(build_backbone("vit_small", seed=0), r=8)
    assert bb.arm == "lora"
    assert count_trainable(bb) == LORA_VITS16_R8
    names = [n for n, p in bb.named_parameters() if p.requires_grad]
    assert all(".lora_A." in n or ".lora_B." in n for n in names)
    assert not any("patch_embed" in n for n in names)         # the regex keeps the conv out
    with torch.no_grad():
        assert bb(torch.randn(1, 3, 96, 96)).shape == (1, 384)
        with torch.autocast("cpu", dtype=torch.bfloat16):     # fp32 adapters, bf16 autocast, no cast
            assert torch.isfinite(bb(torch.randn(1, 3, 32, 32))).all()


def test_dinov3_missing_weights_names_the_flag(tmp_path):
    for bad in (None, "", tmp_path / "nope.pth"):
        with pytest.raises(FileNotFoundError, match="--weights") as e:
            load_dinov3(bad)
        assert isinstance(e.value, MissingWeightsError)


def test_dinov3_wrong_architecture_says_so(tmp_path, tiny):
    path = tmp_path / "tiny.pth"
    torch.save(tiny.model.state_dict(), path)
    with pytest.raises(WeightsError, match="not a DINOv3 ViT-S/16") as e:
        load_dinov3(path)
    assert str(path) in str(e.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_dinov3(junk)


def _to_meta_format(sd):
    """timm Eva keys -> Meta dinov3 keys (the inverse of timm's eva checkpoint_filter_fn)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[k] = v
        if k.endswith("attn.qkv.weight"):   # Meta's qkv bias (zero) and its k mask
            out[k[:-6] + "bias"] = torch.zeros(v.shape[0])
            out[k[:-6] + "bias_mask"] = torch.ones(v.shape[0])
    out["mask_token"] = torch.zeros(1, 384)
    out["rope_embed.periods"] = torch.ones(16)
    return out


def test_dinov3_layouts_and_lora_count(tmp_path):
    src = build_backbone("dinov3_vits16", seed=3).eval()
    with torch.no_grad():          # fp16-exact weights, so the files can be fp16 (half the disk I/O)
        for p in src.parameters():
            p.copy_(p.half().float())
    sd = {k: v.half() if v.is_floating_point() else v
          for k, v in src.model.state_dict().items() if "rope" not in k}
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = src.patch_tokens(x)
    for name, state in (("meta.pth", _to_meta_format(sd)), ("timm.pth", sd)):
        path = tmp_path / name
        torch.save(state, path)
        bb = load_dinov3(path)
        assert bb.arm == "reference" and count_trainable(bb) == 0 and not bb.training
        with torch.no_grad():
            assert torch.allclose(bb.patch_tokens(x), want, atol=1e-5), name
        path.unlink()
    bad = _to_meta_format(sd)
    bad["blocks.0.attn.qkv.bias"] = torch.full((1152,), 0.5)
    torch.save(bad, tmp_path / "bias.pth")
    with pytest.raises(WeightsError, match="qkv.bias is non-zero"):
        load_dinov3(tmp_path / "bias.pth")
    # the DINOv3 architecture: 1 CLS + 4 registers, 196 patch tokens at 224, and the same LoRA count
    # as timm's ViT-S/16 (same widths: qkv 384->1152, proj 384->384, MLP 384->1536->384)
    assert src.num_prefix_tokens == 5 and src.embed_dim == 384 and want.shape == (1, 196, 384)
    add_lora(src, r=8)
    assert count_trainable(src) == LORA_VITS16_R8


def _perturb_lora(bb, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in bb.named_parameters():
            if "lora_B" in n:                                   # B starts at zero: make the delta real
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_checkpoint_scratch_roundtrip(tmp_path, tiny):
    save_checkpoint(tiny, tmp_path / "ck", dict(step=5, views="2x224+6x96", seed=0))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["backbone.pt", "meta.json"]
    bb, meta = load_checkpoint(tmp_path / "ck", expect_arm="scratch")
    assert meta["step"] == 5 and meta["model"] == "vit_tiny_demo" and meta["arm"] == "scratch"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(bb(x), tiny(x))
    with pytest.raises(CheckpointError, match=r"meta\.json.*arm 'scratch', expected arm 'lora'"):
        load_checkpoint(tmp_path / "ck", expect_arm="lora")
    with pytest.raises(CheckpointError, match="meta.json"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(ValueError, match="contradicts"):
        save_checkpoint(tiny, tmp_path / "ck2", dict(arm="lora"))


def test_checkpoint_lora_is_merged_and_resumable(tmp_path):
    import timm

    bb = add_lora(build_backbone("vit_tiny_demo", seed=1), r=8).eval()
    _perturb_lora(bb)
    assert count_trainable(bb) == LORA_TINY_R8
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = bb(x)
        base_out = build_backbone("vit_tiny_demo", seed=1).eval()(x)
    assert not torch.allclose(want, base_out, atol=1e-4)        # the adapter does something
    d = save_checkpoint(bb, tmp_path / "ck", dict(step=10))
    sd = torch.load(d / "backbone.pt", weights_only=True)
    assert not any("lora" in k or "base_layer" in k for k in sd)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["arm"] == "lora" and meta["lora_r"] == 8
    # a probe loads backbone.pt as a plain timm ViT and gets the LoRA model's features
    plain = timm.create_model(meta["timm_name"], **meta["timm_kwargs"]).eval()
    plain.load_state_dict(sd, strict=True)
    with torch.no_grad():
        assert torch.allclose(plain.forward_features(x)[:, 1:].mean(1), want, atol=1e-5)
    adapter = torch.load(d / "adapter.pt", weights_only=True)
    assert adapter and all(".lora_" in k for k in adapter)
    assert sum(v.numel() for v in adapter.values()) == LORA_TINY_R8

    merged, _ = load_checkpoint(d, expect_arm="lora")
    assert count_trainable(merged) == 0
    resumed, _ = load_checkpoint(d, expect_arm="lora", merged=False)
    assert count_trainable(resumed) == LORA_TINY_R8
    with torch.no_grad():
        assert torch.allclose(merged(x), want, atol=1e-5)
        assert torch.allclose(resumed(x), want, atol=1e-5)
        assert torch.allclose(resumed.model.blocks[0].attn.qkv.base_layer.weight,
                              bb.model.blocks[0].attn.qkv.base_layer.weight, atol=1e-6)
    (d / "adapter.pt").unlink()
    with pytest.raises(CheckpointError, match="adapter.pt"):
        load_checkpoint(d, merged=False)


def test_any_timm_vit16_loads_frozen_from_a_weights_file_and_other_models_are_refused(tmp_path):
    import timm
    import torch

    from sportray.backbones import MissingWeightsError, WeightsError, load_timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    torch.save(model.state_dict(), tmp_path / "vit.pth")
    bb = load_timm("vit_tiny_patch16_224", tmp_path / "vit.pth")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert bb.patch_tokens(x).shape == (1, 196, 192)
        assert torch.allclose(bb.patch_tokens(x), model.eval().forward_features(x)[:, 1:])   # the file's weights
    assert not any(p.requires_grad for p in bb.parameters()) and bb.arm == "reference"
    with pytest.raises(MissingWeightsError, match="no such file"):
        load_timm("vit_tiny_patch16_224", tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="does not load"):
        load_timm("vit_small_patch16_224", tmp_path / "vit.pth")              # another architecture's file
    torch.save(timm.create_model("vit_small_patch8_224", num_classes=0).state_dict(), tmp_path / "p8.pth")
    with pytest.raises(WeightsError, match="16x16-pixel patch tokens"):
        load_timm("vit_small_patch8_224", tmp_path / "p8.pth")
