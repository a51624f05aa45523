"""3D rotary position embeddings over (time, height, width) token positions, for the predictor."""

from __future__ import annotations

import torch
from torch import Tensor


def grid_positions(t: int, h: int, w: int, t0: int = 0, device: torch.device | None = None) -> Tensor:
    """(t*h*w, 3) integer (time, row, col) positions in t-major, then h, then w order (the encoder's order)."""
    tt, hh, ww = torch.meshgrid(
        torch.arange(t0, t0 + t, device=device),
        torch.arange(h, device=device),
        torch.arange(w, device=device),
        indexing="ij",
    )
    return torch.stack([tt, hh, ww], dim=-1).reshape(-1, 3)  # (N, 3)


def split_head_dim(head_dim: int) -> tuple[int, int, int]:
    """Even sizes for the (time, height, width) parts of a head; time takes the remainder."""
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"3D RoPE needs an even head dim >= 6, got {head_dim}")
    per = 2 * ((head_dim // 3) // 2)
    return head_dim - 2 * per, per, per


def rope_tables(pos: Tensor, head_dim: int, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin (N, head_dim/2) for all three axes at once: computed once per forward, shared by every layer."""
    angles = []
    for axis, d in enumerate(split_head_dim(head_dim)):
        inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, device=pos.device, dtype=torch.float32) / d)  # (d/2,)
        angles.append(pos[:, axis].to(torch.float32)[:, None] * inv_freq[None, :])  # (N, d/2)
    ang = torch.cat(angles, dim=-1)  # (N, head_dim/2): time, then height, then width pairs
    return ang.cos(), ang.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each (even, odd) pair of x (..., N, head_dim) by the tables from `rope_tables`."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (..., N, head_dim/2) each
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (..., N, head_dim/2, 2)
    return out.flatten(-2)  # (..., N, head_dim)


def apply_rope_3d(x: Tensor, pos: Tensor, theta: float = 10000.0) -> Tensor:
    """Rotate q or k (B, heads, N, head_dim) by positions pos (N, 3): one slice of the head per axis."""
    return apply_rope(x, *rope_tables(pos, x.shape[-1], theta))
