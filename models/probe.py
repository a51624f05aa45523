"""The probes of frozen evaluation (after V-JEPA 2's attentive probe), stacked into one bank, and raw-pixel tokens.

ProbeBank: H independent attentive probes that read the same tokens, with every weight stacked on a leading head
axis, so one batch of tokens trains all of them at once (V-JEPA 2's evaluation trains ~20 heads over a learning-rate x
weight-decay grid on each batch; here also every task that reads the same tokens). Heads share nothing but the input:
the loss is the sum of each head's own loss, so each head's gradient is the one it would get trained alone.

One probe (head h), tokens (B, N, D_in) -> outputs (B, C_h):
  1. features: the tokens and, with `lag` (evaluate.probe_deltas), each token's change from the same place one
     token-time-step earlier (tokens are t-major; zero for the first step): (B, N, F), F = D_in or 2 D_in;
     standardised per feature with training statistics (not a per-token LayerNorm: that would erase a pixel token's
     brightness, e.g. white gauze). Shared by all heads.
  2. depth >= 1: a linear map to `dim` (one GEMM for all heads), a learned position embedding, `depth` pre-norm
     self-attention blocks (V-JEPA 2's 4-block probe = depth 3 + the pooler below, `heads` 16).
     depth 0 (V-JEPA 2's depth-1 pooler): the standardised features go straight to the pooler, with a learned
     position term in its attention scores and values instead of a position embedding.
  3. the pooler: V-JEPA 2's cross-attention block with one learned query (q = query; q += attn(q, tokens);
     q += mlp(norm(q))), then a LayerNorm and a linear head.

Why the pooler is cheap here (exact, not an approximation): its query is a learned constant, so for attention head a
the score of token n is q_a . (W_k,a x_n + b_k,a) = x_n . (W_k,a^T q_a) + const; the constant cancels in the
softmax. And its output sum_n p_n (W_v,a x_n + b_v,a) = W_v,a (sum_n p_n x_n) + b_v,a. So the keys and values of
the N tokens are never formed: one vector u_a = W_k,a^T q_a per head scores the tokens and the tokens are pooled
before W_v. At depth 0 that turns O(N F dim) per clip and head into O(N F heads); the parameters and the function are
V-JEPA 2's (q, W_q, W_k, W_v, ...), only the order of the products changes.

PixelTokens: uint8 clips -> tokens on the encoder's grid (a tubelet of 2 frames x one 16x16 patch), each the
patch's normalised pixels average-pooled to `pool` x `pool` (2 * 3 * pool^2 values): a fixed linear map of
downsampled raw pixels, the "no encoder" baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.encoder import PATCH, TUBELET, preprocess

INIT_STD = 0.02     # V-JEPA 2's probe: trunc_normal(0.02) weights, zero biases, LayerNorms (1, 0)
MLP_RATIO = 4


def _lin(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """Per-head linear map: x (H, ..., I), w (H, I, O), b (H, O) -> (H, ..., O)."""
    h, *mid, i = x.shape
    y = torch.bmm(x.reshape(h, -1, i), w).view(h, *mid, w.shape[-1])
    return y if b is None else y + b.view(h, *([1] * len(mid)), -1)


def _norm(x: Tensor, g: Tensor, b: Tensor) -> Tensor:
    """Per-head LayerNorm over the last axis: x (H, ..., d), g and b (H, d)."""
    shape = (x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1])
    return F.layer_norm(x, x.shape[-1:]) * g.view(shape) + b.view(shape)


def with_changes(tokens: Tensor, lag: int) -> Tensor:
    """(B, N, D) -> (B, N, D), or with `lag` each token and its change from `lag` tokens earlier (the same place one
    token-time-step before: tokens are t-major), zero for the first time step: (B, N, 2 D)."""
    if not lag:
        return tokens
    delta = torch.zeros_like(tokens)
    delta[:, lag:] = tokens[:, lag:] - tokens[:, :-lag]
    return torch.cat([tokens, delta], dim=-1)


class ProbeBank(nn.Module):
    """H attentive probes over the same tokens, weights stacked on axis 0: (B, N, D_in) -> (H, B, max C).

    `outputs[h]` is head h's number of outputs (classes; 1 for a regression head); columns past it are masked out
    (-inf logits). `init_seeds[h]` seeds head h's initial weights, so a head starts the same whatever else is in the
    bank (a bank of one head with the same seed trains to the same probe). Only weight matrices (`*_w`) take weight
    decay (not biases, LayerNorms, position terms or the query), as in V-JEPA 2's evaluation."""

    def __init__(self, in_dim: int, num_tokens: int, outputs: Sequence[int], init_seeds: Sequence[int],
                 dim: int = 64, depth: int = 0, heads: int = 4, lag: int = 0, precision: str = "fp32"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"probe dim {dim} is not a multiple of heads {heads}")
        if len(outputs) != len(init_seeds) or not outputs:
            raise ValueError(f"{len(outputs)} heads' outputs but {len(init_seeds)} init seeds")
        self.in_dim, self.num_tokens, self.lag = in_dim, num_tokens, lag
        self.depth, self.heads, self.dim = depth, heads, dim
        self.outputs = [int(c) for c in outputs]
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        self.precision = precision          # bf16: the products over tokens in bf16 (fp32 weights and the rest)
        self.init_seeds = [int(s) for s in init_seeds]
        H, C, feat, hid = len(outputs), max(outputs), in_dim * (2 if lag else 1), dim * MLP_RATIO
        self.register_buffer("mean", torch.zeros(feat))   # standardisation, set by `standardize`
        self.register_buffer("std", torch.ones(feat))
        self.register_buffer("valid", torch.arange(C)[None, :] < torch.tensor(self.outputs)[:, None])  # (H, C)
        width = feat if depth == 0 else dim           # what the pooler reads
        shapes: dict[str, tuple[int, ...]] = {}
        if depth:
            shapes |= {"proj_w": (feat, dim), "proj_b": (dim,), "pos": (num_tokens, dim)}
            for i in range(depth):
                shapes |= {f"blk{i}_n1_g": (dim,), f"blk{i}_n1_b": (dim,), f"blk{i}_qkv_w": (dim, 3 * dim),
                           f"blk{i}_qkv_b": (3 * dim,), f"blk{i}_o_w": (dim, dim), f"blk{i}_o_b": (dim,),
                           f"blk{i}_n2_g": (dim,), f"blk{i}_n2_b": (dim,), f"blk{i}_fc1_w": (dim, hid),
                           f"blk{i}_fc1_b": (hid,), f"blk{i}_fc2_w": (hid, dim), f"blk{i}_fc2_b": (dim,)}
            shapes |= {"pool_nx_g": (width,), "pool_nx_b": (width,)}
        else:
            shapes |= {"pos_score": (heads, num_tokens), "pos_value": (num_tokens, dim)}
        shapes |= {"query": (dim,), "pool_q_w": (dim, dim), "pool_q_b": (dim,), "pool_k_w": (width, dim),
                   "pool_v_w": (width, dim), "pool_v_b": (dim,), "pool_o_w": (dim, dim), "pool_o_b": (dim,),
                   "pool_n2_g": (dim,), "pool_n2_b": (dim,), "pool_fc1_w": (dim, hid), "pool_fc1_b": (hid,),
                   "pool_fc2_w": (hid, dim), "pool_fc2_b": (dim,), "norm_g": (dim,), "norm_b": (dim,),
                   "head_w": (dim, C), "head_b": (C,)}
        self.names = list(shapes)
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.empty(H, *shape)))
        self.reset_parameters()

    @staticmethod
    def decays(name: str) -> bool:
        """Weight decay applies to weight matrices only."""
        return name.endswith("_w")

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Each head from its own generator, parameters in a fixed order: independent of the other heads."""
        random = [n for n in self.names if not n.endswith(("_g", "_b"))]   # weights, query, position terms
        sizes = [getattr(self, n)[0].numel() for n in random]
        for h, seed in enumerate(self.init_seeds):
            draw = torch.nn.init.trunc_normal_(torch.empty(sum(sizes)), std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD,
                                               generator=torch.Generator().manual_seed(seed))
            for name, part in zip(random, draw.split(sizes)):
                getattr(self, name)[h].copy_(part.view_as(getattr(self, name)[h]))
        for name in self.names:
            if name.endswith("_g"):
                getattr(self, name).fill_(1.0)
            elif name.endswith("_b"):
                getattr(self, name).zero_()

    def features(self, tokens: Tensor) -> Tensor:
        """(B, N, D_in) -> (B, N, F): the tokens and, with `lag`, their changes (module doc: with_changes)."""
        b, n, d = tokens.shape
        if n != self.num_tokens or d != self.in_dim:
            raise ValueError(f"probe built for ({self.num_tokens}, {self.in_dim}) tokens, got ({n}, {d})")
        return with_changes(tokens, self.lag)

    @torch.no_grad()
    def standardize(self, tokens: Tensor) -> None:
        """Per-feature mean and std over training tokens (B, N, D_in), as a linear probe's scaler would."""
        flat = self.features(tokens.float()).reshape(-1, self.mean.shape[0]).cpu().numpy()  # numpy: ~4x faster here
        self.mean.copy_(torch.from_numpy(flat.mean(0)))
        self.std.copy_(torch.from_numpy(flat.std(0, ddof=1)).clamp_min(1e-4))

    def _block(self, x: Tensor, i: int) -> Tensor:
        """Pre-norm self-attention block for every head: (H, B, N, dim) -> same."""
        H, B, N, d = x.shape
        p = lambda s: getattr(self, f"blk{i}_{s}")  # noqa: E731
        qkv = _lin(_norm(x, p("n1_g"), p("n1_b")), p("qkv_w"), p("qkv_b"))            # (H, B, N, 3 dim)
        q, k, v = qkv.view(H * B, N, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (H B, A, N, dh) each
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(H, B, N, d)
        x = x + _lin(a, p("o_w"), p("o_b"))
        return x + _lin(F.gelu(_lin(_norm(x, p("n2_g"), p("n2_b")), p("fc1_w"), p("fc1_b"))), p("fc2_w"), p("fc2_b"))

    def _query_scorer(self) -> tuple[Tensor, Tensor]:
        """The pooler's query q (H, A, dh) after W_q, and u = W_k^T q / sqrt(dh) (H, A, width): a token x scores
        x . u_a in attention head a (the key bias adds the same to every token: it cancels in the softmax)."""
        H, A, dh = len(self.outputs), self.heads, self.dim // self.heads
        q = (torch.bmm(self.query[:, None], self.pool_q_w)[:, 0] + self.pool_q_b).view(H, A, dh)
        width = self.pool_k_w.shape[1]
        return q, torch.einsum("hfad,had->haf", self.pool_k_w.view(H, width, A, dh), q) / math.sqrt(dh)

    def _pool_tokens(self, z: Tensor) -> Tensor:
        """Depth 0: the pooler's values (H, B, A, dh), position values included, on the standardised features z
        (B, N, F) (given unstandardised), shared by all heads: the standardisation folds into u and W_v (the softmax
        weights sum to 1). With precision bf16 the products over tokens run in bf16 (fp32 accumulation), the softmax
        and the rest in fp32."""
        H, A, dh = len(self.outputs), self.heads, self.dim // self.heads
        B, N, F_ = z.shape
        lo = torch.bfloat16 if self.precision == "bf16" else self.mean.dtype
        z = z.detach().to(lo)                                                       # inputs: no gradient
        _, u = self._query_scorer()
        u = (u / self.std).reshape(H * A, F_)                                       # (H A, F) in raw units
        s = (z.reshape(B * N, F_) @ u.T.to(lo)).view(B, N, H * A).to(self.mean.dtype)
        p = torch.softmax(s + self.pos_score.reshape(H * A, N).T, dim=1)            # (B, N, H A): over tokens
        pt = p.to(lo).transpose(1, 2)                                               # (B, H A, N)
        r = torch.cat([torch.bmm(pt, z), pt], dim=-1)                               # (B, H A, F + N): pooled, p
        wv = (self.pool_v_w / self.std[:, None]).view(H, F_, A, dh).permute(0, 2, 1, 3)   # (H, A, F, dh)
        w = torch.cat([wv, self.pos_value.view(H, N, A, dh).permute(0, 2, 1, 3)], dim=2)  # (H, A, F + N, dh)
        v = torch.bmm(r.transpose(0, 1), w.reshape(H * A, F_ + N, dh).to(lo))       # (H A, B, dh): one rounding
        shift = torch.einsum("f,hfad->had", self.mean / self.std, self.pool_v_w.view(H, F_, A, dh))
        v = v.to(self.mean.dtype).view(H, A, B, dh) - shift[:, :, None]
        return v.transpose(1, 2)                                                    # (H, B, A, dh)

    def _pool_blocks(self, x: Tensor) -> Tensor:
        """Depth >= 1: the pooler's values (H, B, A, dh) on the blocks' output x (H, B, N, dim), LayerNorm first."""
        H, B, N, width = x.shape
        A = self.heads
        _, u = self._query_scorer()
        x = _norm(x, self.pool_nx_g, self.pool_nx_b)
        p = torch.softmax(torch.einsum("hbnf,haf->hban", x, u), dim=-1)                    # (H, B, A, N)
        pooled = torch.bmm(p.reshape(H * B, A, N), x.reshape(H * B, N, width)).view(H, B, A, width)
        return torch.einsum("hbaf,hfad->hbad", pooled, self.pool_v_w.view(H, width, A, self.dim // A))

    def _pool_out(self, v: Tensor) -> Tensor:
        """The pooler's values (H, B, A, dh) -> output projection, residual MLP -> (H, B, dim)."""
        H, B = v.shape[:2]
        v = v.reshape(H, B, self.dim) + self.pool_v_b[:, None]                          # (H, B, dim)
        q = self.query[:, None] + _lin(v, self.pool_o_w, self.pool_o_b)                  # (H, B, dim)
        return q + _lin(F.gelu(_lin(_norm(q, self.pool_n2_g, self.pool_n2_b), self.pool_fc1_w, self.pool_fc1_b)),
                        self.pool_fc2_w, self.pool_fc2_b)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, N, D_in) -> outputs (H, B, C); masked columns (past a head's outputs) are -inf."""
        return self.forward_features(self.features(tokens))

    def forward_features(self, z: Tensor) -> Tensor:
        """The same from features (B, N, F) already formed (`features`, or with_changes for many clips at once; any
        float dtype, unstandardised)."""
        H = len(self.outputs)
        b, n, f = z.shape
        if n != self.num_tokens or f != self.mean.shape[0]:
            raise ValueError(f"probe built for ({self.num_tokens}, {self.mean.shape[0]}) features, got ({n}, {f})")
        if self.depth == 0:
            q = self._pool_out(self._pool_tokens(z))
        else:
            with torch.autocast(z.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
                x = (z.to(self.mean.dtype) - self.mean) / self.std                         # (B, N, F)
                x = (x.reshape(b * n, f) @ self.proj_w.permute(1, 0, 2).reshape(f, -1)).view(b, n, H, self.dim)
                x = x.permute(2, 0, 1, 3) + self.proj_b[:, None, None] + self.pos[:, None]  # (H, B, N, dim)
                for i in range(self.depth):
                    x = self._block(x, i)
                v = self._pool_blocks(x)
            q = self._pool_out(v.to(self.mean.dtype))
        out = _lin(_norm(q, self.norm_g, self.norm_b), self.head_w, self.head_b)         # (H, B, C)
        return out.masked_fill(~self.valid[:, None], float("-inf"))

    @torch.no_grad()
    def select(self, heads: Sequence[int]) -> "ProbeBank":
        """A bank of the given heads only (their current weights, the same standardisation)."""
        idx = torch.as_tensor(list(heads), dtype=torch.long)
        sub = ProbeBank(self.in_dim, self.num_tokens, [self.outputs[h] for h in heads],
                        [self.init_seeds[h] for h in heads], self.dim, self.depth, self.heads, self.lag,
                        self.precision)
        sub = sub.to(self.mean.device)
        sub.mean.copy_(self.mean)
        sub.std.copy_(self.std)
        C = sub.head_w.shape[-1]
        for name in self.names:
            src = getattr(self, name)[idx]
            if name.startswith("head"):
                src = src[..., :C]
            getattr(sub, name).copy_(src)
        return sub


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
