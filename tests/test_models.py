"""Shapes, token order, context-only encoding, RoPE and losses of models/ (tiny configs, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.encoder import VideoEncoder, encoder_config, preprocess
from models.losses import contrastive_loss, temporal_loss
from models.predictor import Predictor
from models.rope import apply_rope_3d, grid_positions


@pytest.fixture(scope="module")
def enc() -> VideoEncoder:
    torch.manual_seed(0)
    return VideoEncoder.from_config(encoder_config(dim=32, depth=2, heads=2, crop_size=32, frames_per_clip=8)).eval()


def test_encoder_shapes_and_attributes(enc: VideoEncoder) -> None:
    assert (enc.dim, enc.tubelet, enc.patch) == (32, 2, 16)
    assert enc.config._attn_implementation == "sdpa"
    x = torch.randn(2, 8, 3, 32, 32)
    assert enc(x).shape == (2, 4 * 2 * 2, 32)
    assert enc(x[:, :4]).shape == (2, 2 * 2 * 2, 32)  # context frames alone
    assert enc(torch.randn(1, 2, 3, 64, 64)).shape == (1, 1 * 4 * 4, 32)  # other sizes than crop_size
    assert enc.grid(8, 32, 64) == (4, 2, 4)
    for bad in (torch.randn(1, 3, 3, 32, 32), torch.randn(1, 4, 3, 32, 48), torch.randn(1, 4, 3, 40, 40)):
        with pytest.raises(ValueError):
            enc(bad)


def test_encoder_has_no_unused_parameters() -> None:
    """Every parameter gets a gradient (DDP without find_unused_parameters); the predictor is not carried."""
    e = VideoEncoder.from_config(encoder_config(32, 1, 2, 32, 4))
    assert not any("predictor" in n for n, _ in e.named_parameters())
    e(torch.randn(1, 4, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in e.parameters())


def test_token_order_is_t_major_then_h_then_w(enc: VideoEncoder) -> None:
    """The patch embedding output equals a manual patchify in (t, h, w) order."""
    x = torch.randn(1, 4, 3, 32, 64)  # T=4, H=32, W=64 -> grid (2, 2, 4)
    emb = enc.backbone.encoder.embeddings(x)  # (1, 16, D)
    p = x.reshape(1, 2, 2, 3, 2, 16, 4, 16)  # (B, Tg, tub, C, Hg, ph, Wg, pw)
    p = p.permute(0, 1, 4, 6, 3, 2, 5, 7).reshape(1, 16, -1)  # (B, Tg*Hg*Wg, C*tub*ph*pw)
    conv = enc.backbone.encoder.embeddings.patch_embeddings.proj
    manual = p @ conv.weight.reshape(conv.weight.shape[0], -1).T + conv.bias  # (1, N, D)
    torch.testing.assert_close(emb, manual, atol=1e-4, rtol=1e-4)


def test_context_only_encoding_positions_and_no_leak(enc: VideoEncoder) -> None:
    """Context tokens get the first grid positions; the full clip's context tokens DO see the future."""
    x = torch.randn(1, 8, 3, 64, 64)  # crop_size is 32: also checks the RoPE grid follows the input
    ctx = enc(x[:, :4])  # (1, 2*4*4, D)
    attn = enc.backbone.encoder.layer[0].attention
    t, h, w = attn.get_position_ids(ctx)
    assert torch.equal(torch.stack([t, h, w], -1), grid_positions(2, 4, 4))
    y = x.clone()
    y[:, 4:] = torch.randn_like(y[:, 4:])  # change only the future frames
    assert torch.equal(enc(y[:, :4]), ctx)
    assert not torch.allclose(enc(y)[:, : ctx.shape[1]], enc(x)[:, : ctx.shape[1]])


def test_preprocess_matches_imagenet_normalisation() -> None:
    frames = torch.zeros(1, 2, 16, 16, 3, dtype=torch.uint8)
    frames[..., 0] = 255
    out = preprocess(frames)
    assert out.shape == (1, 2, 3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, 0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    with pytest.raises(ValueError):
        preprocess(frames.float())


def test_predictor_shapes_and_gradients(enc: VideoEncoder) -> None:
    torch.manual_seed(0)
    pred = Predictor(enc_dim=32, dim=24, depth=2, heads=2)
    x = torch.randn(2, 8, 3, 32, 32)
    grid = enc.grid(8, 32, 32)  # (4, 2, 2)
    ctx = enc(x[:, :4])  # (2, 8, 32)
    out = pred(ctx, grid, context_t=2)
    assert out.shape == (2, 2 * 2 * 2, 32)
    out.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pred.parameters())
    with pytest.raises(ValueError):
        pred(ctx, grid, context_t=3)  # token count does not match
    with pytest.raises(ValueError):
        pred(torch.randn(2, 16, 32), grid, context_t=4)  # nothing left to predict


def test_rope_depends_on_position() -> None:
    torch.manual_seed(0)
    pred = Predictor(enc_dim=16, dim=24, depth=1, heads=2).eval()
    with torch.no_grad():  # larger weights than the 0.02 init, so attention is far from uniform
        for prm in pred.parameters():
            prm.normal_(0.0, 0.3)
    ctx = torch.randn(1, 8, 16)  # grid (4, 2, 2), context_t=2
    out = pred(ctx, (4, 2, 2), 2)  # (1, 8, 16)
    # Future queries start identical: only RoPE makes their outputs differ.
    assert (out[0, 0] - out[0, 1:]).abs().amax(dim=-1).min() > 1e-4
    # Moving the same context tokens to other positions changes the prediction.
    perm = torch.randperm(8)
    assert not torch.allclose(pred(ctx[:, perm], (4, 2, 2), 2), out, atol=1e-5)


def test_rope_scores_are_relative() -> None:
    """q.k after 3D RoPE depends only on position differences (a shift of all positions changes nothing)."""
    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 12, 16), torch.randn(1, 2, 12, 16)
    pos = grid_positions(3, 2, 2)
    shift = torch.tensor([5, 3, 7])
    s1 = apply_rope_3d(q, pos) @ apply_rope_3d(k, pos).transpose(-1, -2)
    s2 = apply_rope_3d(q, pos + shift) @ apply_rope_3d(k, pos + shift).transpose(-1, -2)
    torch.testing.assert_close(s1, s2, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(apply_rope_3d(q, pos), q)


def test_temporal_loss_is_l1_to_layer_normed_detached_target() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(2, 5, 8, requires_grad=True), torch.randn(2, 5, 8, requires_grad=True)
    loss = temporal_loss(pred, target)
    mu, var = target.mean(-1, keepdim=True), target.var(-1, unbiased=False, keepdim=True)
    manual = (pred - (target - mu) / torch.sqrt(var + 1e-5)).abs().mean()
    torch.testing.assert_close(loss, manual)
    loss.backward()
    assert target.grad is None and pred.grad is not None
    assert temporal_loss(F.layer_norm(target, (8,)).detach(), target).item() < 1e-6


def test_contrastive_loss_accuracy() -> None:
    torch.manual_seed(0)
    target = torch.randn(6, 5, 8)  # distinct futures
    for pred in (target.clone(), F.layer_norm(target, (8,))):
        loss, acc = contrastive_loss(pred, target, temperature=0.1)
        assert acc.item() == 1.0
    matched, _ = contrastive_loss(F.layer_norm(target, (8,)), target, 0.1)
    shuffled, acc = contrastive_loss(F.layer_norm(target, (8,)).roll(1, dims=0), target, 0.1)
    assert acc.item() == 0.0 and shuffled > matched
    pred = torch.randn(6, 5, 8, requires_grad=True)
    loss, acc = contrastive_loss(pred, target, 0.1)
    loss.backward()
    assert pred.grad is not None and not acc.requires_grad
