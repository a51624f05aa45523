"""Meta's original V-JEPA 2 checkpoints (`vitl.pt`, ...) -> our HF-format `VideoEncoder`, without unsafe unpickling.

Key mapping follows transformers' `convert_vjepa2_to_hf.py` (not shipped in the wheel; read from the
transformers repository): `blocks.N.attn.qkv` is split into `encoder.layer.N.attention.{query,key,value}`,
`blocks.N.attn.proj` -> `...attention.proj`, `blocks.N.{norm1,norm2,mlp.fc1,mlp.fc2}` keep their names under
`encoder.layer.N.`, `patch_embed.proj` -> `encoder.embeddings.patch_embeddings.proj`, `norm` -> `encoder.layernorm`.
Meta's files still hold a `pos_embed` that the RoPE encoder never uses (Meta's own loader passes strict=False for
it): it is dropped. V-JEPA 1 files (same key names, but absolute positions) cannot be told apart by their keys.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import VJEPA2Config

from models.encoder import VideoEncoder

PREFIXES = ("module.", "backbone.", "_orig_mod.")
# Attention heads cannot be read off the weights: those of Meta's released sizes (hidden size -> heads).
KNOWN_HEADS = {1024: 16, 1280: 16, 1408: 22}
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_BLOCK_PARTS = {"norm1.", "norm2.", "mlp.fc1.", "mlp.fc2.", "attn.proj.", "attn.qkv."}


class WeightsError(ValueError):
    """Weights cannot be used (missing, unsafe to unpickle, or a different architecture); the message says why."""


def load_checkpoint(path: Path) -> Any:
    """torch.load with weights_only=True (no code runs); a pickle that needs more is refused, naming the file."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(
            f"refusing to load {path}: it needs unsafe unpickling (arbitrary code) beyond tensors and plain "
            f"containers, which this pipeline never does ({first}). Re-save it as a plain dict of state dicts."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {err})") from None


def select_state_dict(ckpt: Any, key: str, path: Path) -> dict[str, Tensor]:
    """The `key` ('target_encoder' or 'encoder') state dict, with `module.`/`backbone.` prefixes stripped."""
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path}: expected a dict of state dicts, got {type(ckpt).__name__}")
    if key in ckpt:
        sd = ckpt[key]
    elif ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        sd = ckpt  # a bare encoder state dict
    else:
        raise WeightsError(f"{path}: no '{key}' entry (weights.checkpoint_key); it has: {', '.join(map(str, ckpt))}")
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: '{key}' is not a state dict of tensors")
    out: dict[str, Tensor] = {}
    for name, value in sd.items():
        while name.startswith(PREFIXES):
            name = name.split(".", 1)[1]
        out[name] = value
    return out


def meta_to_hf(sd: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Rename Meta's encoder keys to transformers' `VJEPA2EncoderOnly` keys (qkv split into q, k, v)."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for name, value in sd.items():
        m = _BLOCK.fullmatch(name)
        if m and any(m.group(2).startswith(p) for p in _BLOCK_PARTS):
            layer, rest = f"encoder.layer.{m.group(1)}.", m.group(2)
            if rest.startswith("attn.qkv."):
                q, k, v = value.chunk(3, dim=0)
                suffix = rest.removeprefix("attn.qkv.")
                for part, t in (("query", q), ("key", k), ("value", v)):
                    out[f"{layer}attention.{part}.{suffix}"] = t
            else:
                out[layer + rest.replace("attn.", "attention.", 1)] = value
        elif name.startswith("patch_embed.proj."):
            out["encoder.embeddings.patch_embeddings." + name.removeprefix("patch_embed.")] = value
        elif name.startswith("norm."):
            out["encoder.layernorm." + name.removeprefix("norm.")] = value
        elif name == "pos_embed":
            continue  # unused by the RoPE encoder
        else:
            unknown.append(name)
    if unknown:
        raise WeightsError(f"{path}: not a V-JEPA 2 encoder; unexpected keys: {', '.join(sorted(unknown)[:5])}")
    return out


def infer_config(sd: dict[str, Tensor], path: Path) -> VJEPA2Config:
    """Architecture from weight shapes; heads from Meta's released sizes or a `config.json` beside the file."""
    w = sd.get("patch_embed.proj.weight")
    if w is None or w.ndim != 5 or w.shape[3] != w.shape[4]:
        raise WeightsError(f"{path}: no 3D patch embedding 'patch_embed.proj.weight'; not a V-JEPA 2 encoder")
    hidden, chans, tubelet, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2]), int(w.shape[3])
    depth = 1 + max((int(m.group(1)) for k in sd if (m := _BLOCK.fullmatch(k))), default=-1)
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if depth == 0 or fc1 is None:
        raise WeightsError(f"{path}: no transformer blocks ('blocks.N.*'); not a V-JEPA 2 encoder")
    sidecar = path.parent / "config.json"
    if sidecar.is_file():
        cfg = VJEPA2Config.from_dict(json.loads(sidecar.read_text()))
        if (cfg.hidden_size, cfg.num_hidden_layers) != (hidden, depth):
            raise WeightsError(f"{sidecar} says hidden {cfg.hidden_size} x {cfg.num_hidden_layers} layers, "
                               f"but {path.name} holds hidden {hidden} x {depth} layers")
        return cfg
    if hidden not in KNOWN_HEADS:
        raise WeightsError(f"{path}: hidden size {hidden} is not one of Meta's released models "
                           f"({', '.join(map(str, KNOWN_HEADS))}), so the number of attention heads is unknown; "
                           f"put an HF-format config.json (VJEPA2Config) beside the file")
    ratio = fc1.shape[0] / hidden
    if int(hidden * ratio) != fc1.shape[0]:  # float rounding (e.g. ViT-g's 48/11)
        ratio = (fc1.shape[0] + 0.5) / hidden
    return VJEPA2Config(
        crop_size=384 if "384" in path.name else 256,  # RoPE: only a default, no weights depend on it
        frames_per_clip=64,
        patch_size=patch,
        tubelet_size=tubelet,
        in_chans=chans,
        hidden_size=hidden,
        num_attention_heads=KNOWN_HEADS[hidden],
        num_hidden_layers=depth,
        mlp_ratio=ratio,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        layer_norm_eps=1e-6,
    )


def load_meta_encoder(path: str | Path, checkpoint_key: str = "target_encoder") -> VideoEncoder:
    """Meta's .pt -> `VideoEncoder` with exactly its weights (strict load: any mismatch is a WeightsError)."""
    path = Path(path)
    sd = select_state_dict(load_checkpoint(path), checkpoint_key, path)
    cfg = infer_config(sd, path)
    hf = meta_to_hf(sd, path)
    encoder = VideoEncoder.from_config(cfg)
    try:
        encoder.backbone.load_state_dict(hf, strict=True)
    except RuntimeError as err:
        msg = " ".join(str(err).split())
        raise WeightsError(f"{path}: weights do not fit the V-JEPA 2 encoder ({msg[:600]})") from None
    return encoder.eval()
