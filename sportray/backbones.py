"""Backbones: scratch ViT-S/16, frozen DINOv3 ViT-S/16 (+ LoRA via peft), a tiny demo ViT.

Every backbone is wrapped in :class:`Backbone` so the rest of sportray sees one interface:
``forward(x) -> (B, D)`` (mean of the patch tokens, the LeJEPA embedding and the soccer probe's
pooled readout) and ``patch_tokens(x) -> (B, N, D)`` (the basketball probe's per-tile features).
Mean-pooling the *patch* tokens (not CLS, not the DINOv3 registers) keeps the pooled and the per-tile
readouts on the same features for all arms, and a scratch ViT trained with LeJEPA never trains its
CLS token otherwise.

Weights never come from the network: the only pretrained weights are a local DINOv3 file given
with ``--weights``; a missing file is an error that says so (DESIGN.md §4).

Checkpoints (``save_checkpoint`` / ``load_checkpoint``) hold
  - ``backbone.pt``: a plain timm ``state_dict`` with LoRA merged in, so a probe or any timm user
    loads it into the plain architecture (``timm.create_model(meta["timm_name"], **meta["timm_kwargs"])``),
  - ``adapter.pt``: the LoRA weights alone (lora arm), small enough to keep for every step,
  - ``meta.json``: model, arm, base, LoRA rank/alpha, and the caller's fields (step, views, seed, ...).
Only tensors are stored and everything is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "Backbone", "ARCHS", "LORA_TARGET_MODULES", "WeightsError", "MissingWeightsError", "CheckpointError",
    "build_backbone", "load_dinov3", "load_timm", "add_lora", "count_trainable",
    "save_checkpoint", "load_checkpoint", "merged_state_dict",
]

# sportray model name -> (timm architecture, creation kwargs). The kwargs are stored in meta.json so
# a checkpoint is rebuilt exactly, and `dynamic_img_size=True` lets one model take 224 global and
# 96 local views (abs. position embeddings are interpolated; DINOv3 uses RoPE and is dynamic anyway).
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    # ViT-S/16 as in the study: dim 384, depth 12, heads 6, ~22 M params.
    "vit_small": ("vit_small_patch16_224", dict(num_classes=0, dynamic_img_size=True)),
    # A ~0.5 M-param ViT with the same patch size and token layout, for CPU demos and tests.
    "vit_tiny_demo": ("vit_small_patch16_224", dict(
        num_classes=0, dynamic_img_size=True, embed_dim=96, depth=4, num_heads=3)),
    # DINOv3 ViT-S/16 (timm class Eva: RoPE, 1 CLS + 4 register tokens). Not the `_qkvb` variant:
    # its attention calls F.linear(x, qkv.weight, bias) and so bypasses a LoRA-wrapped `qkv`.
    "dinov3_vits16": ("vit_small_patch16_dinov3", dict(num_classes=0, img_size=224)),
}

# peft regex (full match on module names): attention qkv/proj and MLP fc1/fc2 of every block. A plain
# name list ["qkv", "proj", "fc1", "fc2"] would also wrap patch_embed.proj (the conv) -> 599,040 params.
LORA_TARGET_MODULES = r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"
LORA_ADAPTER = "default"

PATCH_SIZE = 16                  # every probe reads a 14x14 grid of 16-pixel patch tokens at 224
_BACKBONE_FILE = "backbone.pt"
_ADAPTER_FILE = "adapter.pt"
_META_FILE = "meta.json"
_FORMAT = 1


class WeightsError(ValueError):
    """A pretrained-weights file that cannot be used; the message names the file and why."""


class MissingWeightsError(FileNotFoundError):
    """No DINOv3 weights file was given or it does not exist (sportray never downloads weights)."""


class CheckpointError(ValueError):
    """A sportray checkpoint directory that cannot be loaded; the message names the file."""


class Backbone(nn.Module):
    """A timm ViT with sportray's two readouts.

    Attributes: ``model`` (the timm model, possibly with LoRA layers injected), ``embed_dim``,
    ``num_prefix_tokens`` (1 for timm ViT-S, 5 for DINOv3: CLS + 4 registers), ``model_name``
    (a key of :data:`ARCHS`), ``arm`` ("scratch" | "lora" | "reference"), ``base`` (where the
    initial weights came from: "" for random init, a weights path, ...), ``lora_r``/``lora_alpha``
    (0 when no LoRA is attached).

    Input: float (B, 3, H, W) normalized with ImageNet mean/std (``sportray.views.normalize``),
    H and W multiples of 16.
    """

    def __init__(self, model: nn.Module, model_name: str, arm: str, base: str = ""):
        super().__init__()
        if arm not in ("scratch", "lora", "reference"):
            raise ValueError(f"arm {arm!r}: expected scratch, lora or reference")
        self.model = model
        self.model_name = model_name
        self.arm = arm
        self.base = base
        self.embed_dim = int(model.embed_dim)
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.lora_r = 0
        self.lora_alpha = 0

    @property
    def timm_name(self) -> str:
        return ARCHS[self.model_name][0] if self.model_name in ARCHS else self.model_name

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) patch tokens after the final norm (prefix tokens dropped); N = 196 at 224."""
        return self.model.forward_features(x)[:, self.num_prefix_tokens:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D): mean of the patch tokens."""
        return self.patch_tokens(x).mean(dim=1)

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, arm={self.arm!r}, lora_r={self.lora_r}"


def count_trainable(module: nn.Module) -> int:
    """Number of parameters with requires_grad (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _create_timm(model_name: str, seed: int | None, **extra) -> nn.Module:
    import timm

    if model_name not in ARCHS:
        raise ValueError(f"model {model_name!r}: expected one of {', '.join(sorted(ARCHS))}")
    timm_name, kwargs = ARCHS[model_name]
    kwargs = dict(kwargs, **extra)
    if seed is None:
        return timm.create_model(timm_name, **kwargs)
    # Seeded init without disturbing the caller's global RNG (the data order, dropout, ... of the
    # caller stay what they were).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(timm_name, **kwargs)


def build_backbone(model: str, seed: int) -> Backbone:
    """A randomly initialised backbone (the scratch arm and the random-init floor).

    ``model``: "vit_small" (timm vit_small_patch16_224) or "vit_tiny_demo" (dim 96, depth 4,
    heads 3, patch 16). "dinov3_vits16" gives the DINOv3 architecture with random weights (used to
    rebuild checkpoints and in tests; load real weights with :func:`load_dinov3`). Same seed, same
    weights; no weights are downloaded.
    """
    return Backbone(_create_timm(model, seed, pretrained=False), model, arm="scratch")


def _unwrap_state_dict(sd: Any) -> dict:
    """The tensors of a checkpoint, looking inside the usual wrappers as timm does."""
    for key in ("state_dict_ema", "model_ema", "state_dict", "model", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise TypeError(f"expected a state dict, found {type(sd).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def _read_weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path), device="cpu")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # mmap needs the zipfile format; older files load without it
        sd = torch.load(path, map_location="cpu", weights_only=True)
    return _unwrap_state_dict(sd)


def _check_dinov3_vits16(path: Path, sd: dict) -> None:
    """Raise WeightsError unless `sd` is a DINOv3 ViT-S/16 (Meta or timm key layout).

    Checked before timm loads the file so that a wrong file gets a message that says what it is,
    not a list of 200 missing keys.
    """
    def shape(key):
        v = sd.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    regs_key = "storage_tokens" if "storage_tokens" in sd else "reg_token"
    depth = len({m.group(1) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m})
    found = (f"cls_token {shape('cls_token')}, {regs_key} {shape(regs_key)}, "
             f"patch_embed.proj.weight {shape('patch_embed.proj.weight')}, {depth} blocks")
    expected = "cls_token (1, 1, 384), 4 register tokens, patch 16x16, 12 blocks"
    ok = (shape("cls_token") == (1, 1, 384) and shape(regs_key) == (1, 4, 384)
          and shape("patch_embed.proj.weight") == (384, 3, 16, 16) and depth == 12)
    if not ok:
        kind = "a timm ViT (abs. pos_embed, no register tokens)" if "pos_embed" in sd else "another architecture"
        raise WeightsError(
            f"{path}: not a DINOv3 ViT-S/16 checkpoint (looks like {kind}): found {found}; "
            f"expected {expected}. Pass --weights with Meta's dinov3_vits16 .pth or timm's "
            "vit_small_patch16_dinov3 weights.")
    # Meta checkpoints carry a qkv bias (k part masked). timm's vit_small_patch16_dinov3 has none and
    # its filter drops it, which is exact only if the bias is zero; otherwise refuse, since the
    # `_qkvb` variant that keeps it cannot take LoRA on qkv.
    for k, v in sd.items():
        if k.endswith("attn.qkv.bias"):
            mask = sd.get(k + "_mask")
            b = v.float() * (mask.float() if isinstance(mask, torch.Tensor) else 1.0)
            if b.abs().max().item() > 1e-3:
                raise WeightsError(
                    f"{path}: {k} is non-zero (max |b| = {b.abs().max().item():.3g}); "
                    "vit_small_patch16_dinov3 has no qkv bias and would silently drop it.")


def load_dinov3(weights_path: str | os.PathLike | None, img_size: int = 224) -> Backbone:
    """Frozen DINOv3 ViT-S/16 from a local weights file (the "reference" arm, and the LoRA base).

    Loads through timm (``pretrained=True, pretrained_cfg_overlay=dict(file=PATH)``), whose
    ``eva.checkpoint_filter_fn`` converts Meta-format checkpoints (storage_tokens -> reg_token,
    ls1/ls2.gamma -> gamma_1/2, rope periods and mask_token dropped) and passes timm-format ones
    through. ``img_size`` only sets the default grid: RoPE makes the model size-agnostic.
    The returned model is in eval mode with every parameter frozen.

    Raises MissingWeightsError (a FileNotFoundError) naming ``--weights`` when no file is given or it
    does not exist, and WeightsError when the file is not a DINOv3 ViT-S/16.
    """
    if weights_path is None or str(weights_path).strip() == "":
        raise MissingWeightsError(
            "DINOv3 ViT-S/16 weights are required (reference 'dinov3' and the lora arm) and none were "
            "given: pass --weights PATH to a local Meta dinov3_vits16 .pth or timm "
            "vit_small_patch16_dinov3 .safetensors/.pth file; sportray never downloads weights.")
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(
            f"{path}: DINOv3 weights file not found (--weights {weights_path}); sportray never "
            "downloads weights, so pass --weights PATH to a local file.")
    try:
        sd = _read_weights(path)
    except Exception as e:  # not a torch/safetensors file at all
        raise WeightsError(f"{path}: cannot read as a PyTorch or safetensors checkpoint ({e})") from e
    _check_dinov3_vits16(path, sd)
    del sd
    try:
        # timm's filter prints "`q_bias` is not an nn.Parameter" once per block when it drops Meta's
        # (checked zero) qkv bias; that is expected here, so keep it off the user's console.
        with contextlib.redirect_stdout(io.StringIO()):
            model = _create_timm("dinov3_vits16", None, pretrained=True, img_size=img_size,
                                 pretrained_cfg_overlay=dict(file=str(path)))
    except RuntimeError as e:  # strict load_state_dict: missing/unexpected keys, shape mismatch
        raise WeightsError(f"{path}: does not load into vit_small_patch16_dinov3: {e}") from e
    model.requires_grad_(False)
    bb = Backbone(model, "dinov3_vits16", arm="reference", base=str(path))
    bb.eval()
    return bb


def load_timm(timm_name: str, weights_path: str | os.PathLike) -> Backbone:
    """Any timm ViT with 16-pixel patches, frozen, from a local weights file (a reference of
    your own: `--reference timm --model NAME --weights PATH`). The file goes through timm's own
    checkpoint filter for that architecture; no weights are downloaded.

    Raises MissingWeightsError when the file does not exist and WeightsError when it is not a
    checkpoint of that architecture or the architecture has no 16-pixel patch tokens."""
    import timm

    path = Path(weights_path).expanduser()
    if not str(weights_path).strip() or not path.is_file():
        raise MissingWeightsError(f"--weights {weights_path}: no such file (the timm reference "
                                  f"{timm_name} needs a local weights file; sportray never downloads weights)")
    if not timm.is_model(timm_name):
        raise WeightsError(f"--model {timm_name}: not a timm architecture (timm.list_models() lists them)")
    try:
        model = timm.create_model(timm_name, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay=dict(file=str(path)))
    except Exception as e:  # unreadable file, missing/unexpected keys, shape mismatch
        raise WeightsError(f"{path}: does not load into timm {timm_name}: {e}") from e
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if tuple(patch or ()) != (PATCH_SIZE, PATCH_SIZE) or not hasattr(model, "num_prefix_tokens"):
        raise WeightsError(f"--model {timm_name}: sportray's probes read 16x16-pixel patch tokens of a "
                           f"ViT; this architecture has patch size {patch}")
    model.requires_grad_(False)
    bb = Backbone(model, timm_name, arm="reference", base=str(path))
    bb.eval()
    return bb


def add_lora(backbone: Backbone, r: int = 8, alpha: int = 16, dropout: float = 0.0) -> Backbone:
    """Freeze the base and inject LoRA (peft) into every block's qkv, proj, fc1, fc2 (in place).

    On ViT-S/16 this is r x 6,144 x 12 = 589,824 trainable parameters for r = 8, on both
    ``vit_small_patch16_224`` and ``vit_small_patch16_dinov3`` (same dims: 384 -> 1152 qkv,
    384 -> 384 proj, 384 -> 1536 -> 384 MLP; measured on random weights). ``alpha`` = 2 r (scaling 2)
    is the common LoRA choice; it is stored in the checkpoint meta. peft's
    ``inject_adapter_in_model`` keeps the timm module tree (no PeftModel wrapper), so
    ``forward_features`` and the other readouts work unchanged.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if backbone.lora_r:
        raise ValueError("add_lora: this backbone already has LoRA layers")
    backbone.model.requires_grad_(False)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                     target_modules=LORA_TARGET_MODULES)
    backbone.model = inject_adapter_in_model(cfg, backbone.model, adapter_name=LORA_ADAPTER)
    # peft casts each LoRA input to the adapter's dtype (fp32). sportray keeps fp32 weights and runs
    # bf16 only under autocast, which casts again for the matmul, so the cast is a pure extra pass
    # over the activations: off, it saves ~12 % of a LoRA step (H100, ViT-S/16, 2x224+6x96, B=128).
    for layer in _lora_layers(backbone.model).values():
        layer.cast_input_dtype_enabled = False
    backbone.arm = "lora"
    backbone.lora_r, backbone.lora_alpha = r, alpha
    return backbone


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def _unwrap_module(m: nn.Module) -> nn.Module:
    """Strip DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if isinstance(m, nn.parallel.DistributedDataParallel):
            m = m.module
        elif hasattr(m, "_orig_mod"):
            m = m._orig_mod
        else:
            return m


@torch.no_grad()
def merged_state_dict(backbone: Backbone) -> dict[str, torch.Tensor]:
    """The timm model's state dict with LoRA merged (W + scaling B A), as plain timm keys, on CPU."""
    backbone = _unwrap_module(backbone)
    model = _unwrap_module(backbone.model)
    lora = _lora_layers(model)
    out = {}
    for k, v in model.state_dict().items():
        if ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v.detach().clone().cpu()
    for name, layer in lora.items():
        w = layer.get_base_layer().weight
        out[name + ".weight"] = (w + layer.get_delta_weight(LORA_ADAPTER).to(w.dtype)).detach().cpu()
    return out


def _adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items() if ".lora_" in k}


def save_checkpoint(backbone: Backbone, directory: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write backbone.pt (merged, plain timm state dict), adapter.pt (lora arm only), meta.json.

    ``meta`` adds the caller's fields (step, views, seed, ...); the backbone's own fields (model,
    arm, base, timm name/kwargs, LoRA rank) are written by this function, and a ``meta`` value
    contradicting them is an error. Files are written to a temporary name and renamed, so a
    crash mid-save never leaves a half-written file under the final name.
    """
    backbone = _unwrap_module(backbone)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    own = dict(
        format=_FORMAT, model=backbone.model_name, arm=backbone.arm, base=backbone.base,
        timm_name=backbone.timm_name, timm_kwargs=ARCHS[backbone.model_name][1],
        embed_dim=backbone.embed_dim, num_prefix_tokens=backbone.num_prefix_tokens,
        lora_r=backbone.lora_r, lora_alpha=backbone.lora_alpha,
        lora_target_modules=LORA_TARGET_MODULES if backbone.lora_r else "",
    )
    meta = dict(meta or {})
    for k in ("model", "arm"):
        if k in meta and meta[k] != own[k]:
            raise ValueError(f"save_checkpoint: meta[{k!r}]={meta[k]!r} contradicts the backbone's {own[k]!r}")
    full = {**meta, **own}

    def _write(name, obj):
        tmp = directory / (name + ".tmp")
        if name.endswith(".json"):
            tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
        else:
            torch.save(obj, tmp)
        os.replace(tmp, directory / name)

    _write(_BACKBONE_FILE, merged_state_dict(backbone))
    if backbone.lora_r:
        _write(_ADAPTER_FILE, _adapter_state_dict(_unwrap_module(backbone.model)))
    elif (directory / _ADAPTER_FILE).exists():
        (directory / _ADAPTER_FILE).unlink()   # a stale adapter would contradict meta.json
    _write(_META_FILE, full)                   # last: a directory with meta.json is complete
    return directory


def load_checkpoint(directory: str | os.PathLike, expect_arm: str | None = None,
                    merged: bool = True) -> tuple[Backbone, dict]:
    """Read a checkpoint written by :func:`save_checkpoint` -> (Backbone in eval mode, meta).

    ``merged=True`` (probes): a plain timm model with LoRA merged in, all parameters frozen.
    ``merged=False`` for a lora checkpoint (resuming the adapter): the base with LoRA re-injected and
    adapter.pt loaded; the base weights are recovered as merged - scaling B A (float32 round-off only),
    so no external base file is needed. Scratch checkpoints come back trainable, others frozen.
    ``expect_arm``: raise CheckpointError naming meta.json if the checkpoint is of another arm.
    """
    directory = Path(directory)
    meta_path = directory / _META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: not found; {directory} is not a sportray checkpoint directory")
    try:
        meta = json.loads(meta_path.read_text())
        model_name, arm = meta["model"], meta["arm"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint meta ({e!r})") from e
    if expect_arm is not None and arm != expect_arm:
        raise CheckpointError(f"{meta_path}: checkpoint of arm {arm!r}, expected arm {expect_arm!r}")
    if model_name not in ARCHS:
        raise CheckpointError(f"{meta_path}: unknown model {model_name!r}")
    bb_path = directory / _BACKBONE_FILE
    if not bb_path.is_file():
        raise CheckpointError(f"{bb_path}: not found (meta.json present but no weights)")
    sd = torch.load(bb_path, map_location="cpu", weights_only=True)
    model = _create_timm(model_name, None, pretrained=False)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{bb_path}: does not match model {model_name!r}: {e}") from e
    bb = Backbone(model, model_name, arm=arm, base=meta.get("base", ""))
    if arm == "lora" and not merged:
        ad_path = directory / _ADAPTER_FILE
        if not ad_path.is_file():
            raise CheckpointError(f"{ad_path}: not found (lora checkpoint without its adapter)")
        add_lora(bb, r=int(meta["lora_r"]), alpha=int(meta["lora_alpha"]))
        adapter = torch.load(ad_path, map_location="cpu", weights_only=True)
        result = bb.model.load_state_dict(adapter, strict=False)
        missing = [k for k in result.missing_keys if ".lora_" in k]
        if result.unexpected_keys or missing:
            raise CheckpointError(f"{ad_path}: adapter does not match: unexpected "
                                  f"{result.unexpected_keys[:5]}, missing {missing[:5]}")
        with torch.no_grad():
            for layer in _lora_layers(bb.model).values():
                w = layer.get_base_layer().weight
                w.sub_(layer.get_delta_weight(LORA_ADAPTER).to(w.dtype))
    else:
        bb.model.requires_grad_(arm == "scratch")
    bb.eval()
    return bb, meta
