"""The V-JEPA 2 video encoder (transformers' implementation) without its built-in predictor.

Token order (verified in tests/test_models.py against a manual patchify): the Conv3d patch embedding is
flattened t-major, then h, then w, so token n sits at (t, h, w) with n = (t * Hg + h) * Wg + w, t counted in
tubelets of 2 frames. No CLS token. Encoding only the context frames (T smaller than frames_per_clip) is
supported: RoPE positions are derived from the token index, so the context tokens get the same (t, h, w)
positions as the first tokens of the full clip, and they see nothing of the later frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import VJEPA2Config
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2Encoder, VJEPA2PreTrainedModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TUBELET = 2
PATCH = 16


def encoder_config(dim: int, depth: int, heads: int, crop_size: int, frames_per_clip: int) -> VJEPA2Config:
    """A V-JEPA 2 config for a scratch encoder; the built-in predictor fields are a tiny stub we never build."""
    if dim % heads:
        raise ValueError(f"encoder dim {dim} is not a multiple of heads {heads}")
    return VJEPA2Config(
        patch_size=PATCH,
        tubelet_size=TUBELET,
        crop_size=crop_size,
        frames_per_clip=frames_per_clip,
        hidden_size=dim,
        num_attention_heads=heads,
        num_hidden_layers=depth,
        mlp_ratio=4.0,
        pred_hidden_size=32,
        pred_num_attention_heads=2,
        pred_num_hidden_layers=1,
        pred_num_mask_tokens=1,
    )


def preprocess(frames: Tensor) -> Tensor:
    """uint8 (B, T, H, W, 3) -> float32 (B, T, 3, H, W), scaled to [0, 1] and ImageNet-normalised (as V-JEPA 2's processor)."""
    if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (B, T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(1, 1, 3, 1, 1)
    x = frames.permute(0, 1, 4, 2, 3).to(torch.float32) / 255.0  # (B, T, 3, H, W)
    return (x - mean) / std


class VJEPA2EncoderOnly(VJEPA2PreTrainedModel):
    """`VJEPA2Model` minus the predictor: same weight names (`encoder.*`) and the same from/save_pretrained
    machinery (HF cache, offline mode, SDPA), but no unused predictor parameters (DDP needs none)."""

    # A full VJEPA2Model or a video classifier checkpoint loads too; their extra parts are skipped quietly.
    _keys_to_ignore_on_load_unexpected = [r"predictor\.", r"pooler\.", r"classifier\."]

    def __init__(self, config: VJEPA2Config):
        super().__init__(config)
        self.encoder = VJEPA2Encoder(config)
        self.post_init()

    def forward(self, pixel_values_videos: Tensor) -> Tensor:
        return self.encoder(pixel_values_videos=pixel_values_videos).last_hidden_state  # (B, N, D)


class VideoEncoder(nn.Module):
    """Pixels (B, T, C, H, W) -> tokens (B, N, D), N = (T/2)(H/16)(W/16), t-major then h then w."""

    def __init__(self, backbone: VJEPA2EncoderOnly):
        super().__init__()
        self.backbone = backbone
        cfg = backbone.config
        patch = cfg.patch_size
        self.patch: int = patch if isinstance(patch, int) else int(patch[0])
        self.tubelet: int = int(cfg.tubelet_size)
        self.dim: int = int(cfg.hidden_size)

    @property
    def config(self) -> VJEPA2Config:
        return self.backbone.config

    @classmethod
    def from_config(cls, cfg: VJEPA2Config, attn_implementation: str = "sdpa") -> "VideoEncoder":
        """Random init (transformers' V-JEPA 2 init: truncated normal 0.02)."""
        return cls(VJEPA2EncoderOnly._from_config(cfg, attn_implementation=attn_implementation))

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, **kw: Any) -> "VideoEncoder":
        """Load from a hub id or an HF-format dir; `kw` go to `from_pretrained` (cache_dir, local_files_only, ...).

        Raises ValueError when the checkpoint lacks encoder weights (a different architecture)."""
        kw.setdefault("attn_implementation", "sdpa")
        backbone, info = VJEPA2EncoderOnly.from_pretrained(str(path_or_hub_id), output_loading_info=True, **kw)
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise ValueError(
                f"{path_or_hub_id}: not a V-JEPA 2 encoder checkpoint matching its config; "
                f"{len(missing)} encoder weights missing, e.g. {missing[:3]}"
            )
        return cls(backbone)

    def save_pretrained(self, directory: str | Path) -> None:
        """HF format (config.json + model.safetensors, encoder weights only); `from_pretrained` reads it back."""
        self.backbone.save_pretrained(str(directory))

    def grid(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        return t // self.tubelet, h // self.patch, w // self.patch

    def forward(self, pixels: Tensor) -> Tensor:
        b, t, c, h, w = pixels.shape  # (B, T, C, H, W)
        if t < self.tubelet or t % self.tubelet:
            raise ValueError(f"frames T={t} must be a positive multiple of the tubelet size {self.tubelet}")
        if h != w or h % self.patch:
            raise ValueError(f"frames must be square with a side divisible by {self.patch}, got {h}x{w}")
        # transformers derives RoPE (row, col) from the token index with grid = crop_size / patch; follow the
        # real input size instead, so inputs other than crop_size get correct positions (as in Meta's code).
        side = h // self.patch
        for layer in self.backbone.encoder.layer:
            layer.attention.grid_size = side
        return self.backbone(pixels)  # (B, N, D)
