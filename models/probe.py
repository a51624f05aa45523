"""The attentive probe of frozen evaluation (after V-JEPA 2's attentive pooler), and raw-pixel tokens.

AttentiveProbe: tokens (B, N, D_in) -> logits (B, C). Inputs standardised per feature with training statistics
(not a per-token LayerNorm: that would erase a pixel token's brightness, e.g. white gauze), a linear map to `dim`
(so every feature source, a ViT-L or 96-d pixel patches, gets a probe of the same size), a learned position embedding,
`depth` self-attention blocks, then cross-attention from one learned query over all tokens, then a linear head.
Two additions to V-JEPA 2's probe, both for telling motion apart on little labelled data: a position embedding
(V-JEPA 2's encoders use RoPE, so their output tokens carry no absolute (t, h, w), and pixel tokens carry none at
all), and, with `lag` (evaluate.probe_deltas), each token's change from the same place one token-time-step
earlier as extra input features (measured on the demo-like synthetic data: motion accuracy of raw-pixel tokens
0.21 -> 0.32 and 0.12 -> 0.19 on two seeds; set evaluate.probe_deltas: false for V-JEPA 2's plain probe).

PixelTokens: uint8 clips -> tokens on the encoder's grid (a tubelet of 2 frames x one 16x16 patch), each the
patch's normalised pixels average-pooled to `pool` x `pool` (2 * 3 * pool^2 values): a fixed linear map of
downsampled raw pixels, the "no encoder" baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.encoder import PATCH, TUBELET, preprocess


class Block(nn.Module):
    """Pre-norm self-attention block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))  # (B, N, dim)


class CrossAttentionPool(nn.Module):
    """One learned query attends over all tokens (V-JEPA 2's CrossAttentionBlock): (B, N, dim) -> (B, dim)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_x = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        q = self.query.expand(x.shape[0], -1, -1)  # (B, 1, dim)
        kv = self.norm_x(x)
        q = q + self.attn(q, kv, kv, need_weights=False)[0]
        q = q + self.mlp(self.norm_q(q))
        return q[:, 0]  # (B, dim)


class AttentiveProbe(nn.Module):
    def __init__(self, in_dim: int, num_tokens: int, num_classes: int, dim: int = 64, depth: int = 1,
                 heads: int = 4, lag: int = 0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"probe dim {dim} is not a multiple of heads {heads}")
        self.in_dim, self.num_tokens, self.lag = in_dim, num_tokens, lag
        feat = in_dim * (2 if lag else 1)
        self.register_buffer("mean", torch.zeros(feat))  # input standardisation, set by `standardize`
        self.register_buffer("std", torch.ones(feat))
        self.proj = nn.Linear(feat, dim)
        self.pos = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.pool = CrossAttentionPool(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def features(self, tokens: Tensor) -> Tensor:
        """(B, N, D_in) -> (B, N, D_in) or, with `lag`, each token and its change from `lag` tokens earlier (the
        same place one token-time-step before: tokens are t-major), zero for the first time step: (B, N, 2 D_in)."""
        b, n, d = tokens.shape
        if n != self.num_tokens or d != self.in_dim:
            raise ValueError(f"probe built for ({self.num_tokens}, {self.in_dim}) tokens, got ({n}, {d})")
        if not self.lag:
            return tokens
        delta = torch.zeros_like(tokens)
        delta[:, self.lag:] = tokens[:, self.lag:] - tokens[:, :-self.lag]
        return torch.cat([tokens, delta], dim=-1)

    @torch.no_grad()
    def standardize(self, tokens: Tensor) -> None:
        """Per-feature mean and std over training tokens (B, N, D_in), as a linear probe's scaler would."""
        flat = self.features(tokens).reshape(-1, self.mean.shape[0]).float()
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp_min(1e-4))

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.proj((self.features(tokens) - self.mean) / self.std) + self.pos  # (B, N, dim)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(self.pool(x)))  # (B, C)


class PixelTokens(nn.Module):
    """uint8 (B, T, H, W, 3) -> (B, N, 2 * 3 * pool^2), N = (T/2)(H/16)(W/16), t-major then h then w."""

    def __init__(self, pool: int = 4):
        super().__init__()
        if PATCH % pool:
            raise ValueError(f"pixel pool {pool} must divide the patch size {PATCH}")
        self.pool = pool
        self.dim = TUBELET * 3 * pool * pool

    def forward(self, frames: Tensor) -> Tensor:
        x = preprocess(frames)  # (B, T, C, H, W)
        b, t, c, h, w = x.shape
        x = F.adaptive_avg_pool2d(x.reshape(b * t, c, h, w), (h // PATCH * self.pool, w // PATCH * self.pool))
        hg, wg, p = h // PATCH, w // PATCH, self.pool
        x = x.view(b, t // TUBELET, TUBELET, c, hg, p, wg, p)  # (B, Tg, 2, C, Hg, p, Wg, p)
        x = x.permute(0, 1, 4, 6, 2, 3, 5, 7)  # (B, Tg, Hg, Wg, 2, C, p, p)
        return x.reshape(b, (t // TUBELET) * hg * wg, self.dim)  # (B, N, 2*C*p*p)
