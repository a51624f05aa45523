"""A small transformer that predicts the encoder tokens of future frames from the context frames' tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.rope import apply_rope, grid_positions, rope_tables, split_head_dim


class Attention(nn.Module):
    """Multi-head self-attention (SDPA) with 3D RoPE on q and k, so tokens know their (t, h, w)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"predictor dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        split_head_dim(dim // heads)  # fail early on an unusable head dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        b, n, d = x.shape  # (B, N, D)
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
        q, k, v = qkv.unbind(0)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, hd)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))  # (B, N, D)


class Predictor(nn.Module):
    """Context tokens of the first `context_t` token-time-steps -> predicted tokens of the remaining ones.

    Future positions start as one learned query token; only RoPE tells them apart, so they cannot see any
    future content (none is passed in). Output order matches the encoder: t-major, then h, then w."""

    def __init__(self, enc_dim: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.enc_dim, self.dim, self.heads = enc_dim, dim, heads
        self._rope_cache: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.in_proj = nn.Linear(enc_dim, dim)
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out_proj = nn.Linear(dim, enc_dim)
        nn.init.trunc_normal_(self.query, std=0.02)
        self.apply(_init)

    def forward(self, context: Tensor, grid: tuple[int, int, int], context_t: int) -> Tensor:
        nc = context.shape[1]  # (B, Nc, enc_dim)
        if not 0 < context_t < grid[0]:
            raise ValueError(f"context_t={context_t} must be in 1..{grid[0] - 1} for a grid of {grid[0]} time steps")
        x = self._trunk(context, grid, context_t, None)  # (B, Nc + Nf, dim)
        return self.out_proj(self.norm(x[:, nc:]))  # (B, Nf, enc_dim)

    def predict_all(self, context: Tensor, grid: tuple[int, int, int], context_t: int,
                    masked: Tensor | None = None) -> Tensor:
        """Predictions at EVERY position of the grid (B, N, enc_dim), context positions first.

        Masked-modelling objectives (V-JEPA's own) need the context slots too: `masked` (B, Nc) bool replaces
        those context tokens by the learned query, so the predictor must fill them in from the others.
        context_t may equal the grid's time steps (no future: a whole clip with holes). The future part equals
        forward(context, grid, context_t) when nothing is masked."""
        if not 0 < context_t <= grid[0]:
            raise ValueError(f"context_t={context_t} must be in 1..{grid[0]} for a grid of {grid[0]} time steps")
        return self.out_proj(self.norm(self._trunk(context, grid, context_t, masked)))  # (B, N, enc_dim)

    def _trunk(self, context: Tensor, grid: tuple[int, int, int], context_t: int, masked: Tensor | None) -> Tensor:
        """Projected context (masked slots -> query) + one query per future position, through the blocks."""
        tg, hg, wg = grid
        b, nc, _ = context.shape  # (B, Nc, enc_dim)
        if nc != context_t * hg * wg:
            raise ValueError(f"got {nc} context tokens, expected {context_t}*{hg}*{wg}={context_t * hg * wg}")
        nf = (tg - context_t) * hg * wg
        rope = self.rope_for(grid, context.device)
        x = self.in_proj(context)  # (B, Nc, dim)
        if masked is not None:
            if masked.shape != (b, nc):
                raise ValueError(f"masked must be (B, Nc) = {(b, nc)}, got {tuple(masked.shape)}")
            x = torch.where(masked[..., None], self.query.to(x.dtype).expand_as(x), x)
        x = torch.cat([x, self.query.expand(b, nf, -1)], dim=1)  # (B, Nc + Nf, dim)
        for block in self.blocks:
            x = block(x, rope)
        return x

    def rope_for(self, grid: tuple[int, int, int], device: torch.device) -> tuple[Tensor, Tensor]:
        """cos/sin (Nc + Nf, head_dim/2) of the grid's positions, context first; constant, so kept per grid."""
        key = (*grid, str(device))
        if key not in self._rope_cache:
            pos = grid_positions(*grid, device=device)  # (N, 3)
            self._rope_cache[key] = rope_tables(pos, self.dim // self.heads)
        return self._rope_cache[key]


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
