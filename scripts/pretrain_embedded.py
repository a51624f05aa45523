#!/usr/bin/env python
"""Reproduce the shipped tiny encoder `assets/vjepa2-tiny-surgical/`: V-JEPA-2-style self-supervised pretraining
on the UNLABELLED synthetic surgical corpus (surgwm.data.synthetic.corpus_frames: its own random stream, never a case
of the labelled demo dataset), then `VideoEncoder.save_pretrained(--out)` + `pretraining.json`.

Objective, per 8-frame clip (4 fps, 64x64 crop; tokens = 2 frames x 16x16 px, grid 4 x 4 x 4):
  * the online (context) encoder sees ONLY the first 4 frames; with probability --mask-prob a random block of
    1-2 x 1-2 patches of those frames is blanked (tube mask over both context tubelets, pixels set to the
    dataset mean), V-JEPA-style;
  * an EMA copy (the target encoder, momentum --ema ramped linearly over training) encodes the FULL clip;
  * the predictor (models.predictor.Predictor) gets the context tokens and predicts the target tokens of the
    future positions, and of the blanked context positions (their slots get the predictor's learned query);
  * a second pass, V-JEPA's own objective: the online encoder sees the FULL clip with a tube (all frames) of
    2-3 x 2-3 patches blanked and the predictor fills in the target tokens of the tube. Without it the online
    encoder would only ever be trained on 2 token time steps, while the pipeline's targets and the probes run
    it on full clips (4 time steps, RoPE time positions 2-3 never trained);
  * loss = L1 to the layer-normed targets (models.losses.temporal_loss; blanked context slots weighted
    --mask-weight, the full-clip tube --full-mask-weight)
         + --nce-weight * InfoNCE. The default InfoNCE ("tokens") keeps space: the similarity of two clips is
           the mean over future token positions of the cosine of prediction and target at the SAME position,
           and every batch holds --clips-per-video clips of each video at stratified, different times, so most
           negatives share the case's tissue, colours and step (background colour no longer solves it; see
           STACK_NOTES.md). "pooled" is models.losses.contrastive_loss (mean-pooled tokens).
Augmentation (one draw per clip, all 8 frames alike): random square crop of side s*64 px, s ~ U(--scale-min, 1),
anywhere in the 85x64 frame (the pipeline's centre crop is s=1 at x=10), resized to 64 (bilinear), horizontal
flip p=0.5. The encoder shipped is the EMA target encoder (--ship target; V-JEPA releases its target encoder).

Data: the corpus is rendered ONCE into memory (process pool, one case per task) at --render-size (the
generator's geometry is resolution-independent; 160x120 is ~2x cheaper than the demo's 320x240), sampled at
4 fps like the pipeline's decode, short side scaled to 64 with antialiasing (torch) -> uint8 (T, 64, 85, 3) per
case, kept on the training device; the last --val-cases cases are held out for the final losses.

Runs on a bare GPU machine with torch + transformers + numpy + safetensors: neither `models` nor
`surgwm.data.synthetic` needs pydantic or the project's venv.

  python scripts/pretrain_embedded.py --device cuda --minutes 5 --out /tmp/vjepa2-tiny-surgical
  python scripts/pretrain_embedded.py --device cpu --steps 20 --batch 32 --corpus-cases 8 --seconds-per-case 30
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import platform
import sys
import time
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

# the pipeline's geometry (params.yaml data.* / model.*): the shipped encoder must match it exactly
FPS = 4.0
SIZE = 64
CLIP = 8
CONTEXT = 4
ARCH = {"dim": 128, "depth": 3, "heads": 4}
PRED = {"dim": 64, "depth": 2, "heads": 4}
CORPUS_SEED = 1000  # the demo dataset is seed 0 of the *labelled* stream; the corpus is its own stream anyway


# ---------------------------------------------------------------- imports that must work without the venv

def import_synthetic() -> types.ModuleType:
    """surgwm.data.synthetic needs only numpy (and ffmpeg for encoding, unused here), so it runs on a bare GPU box."""
    import surgwm.data.synthetic as synthetic

    return synthetic


# ---------------------------------------------------------------- rendering into memory

def resize_short(frames: np.ndarray, size: int = SIZE, chunk: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, size, round(W*size/H), 3): the decode stage's scale (short side = size,
    long side keeps the aspect, rounded) done with torch's antialiased bilinear filter instead of ffmpeg's."""
    t, h, w, _ = frames.shape
    out_hw = (size, max(size, round(w * size / h))) if w >= h else (max(size, round(h * size / w)), size)
    out = np.empty((t, *out_hw, 3), np.uint8)
    for i in range(0, t, chunk):
        x = torch.from_numpy(frames[i:i + chunk]).permute(0, 3, 1, 2).float()  # (t, 3, H, W)
        y = F.interpolate(x, size=out_hw, mode="bilinear", antialias=True, align_corners=False)
        out[i:i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def centre_crop(frames: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(T, H, W, 3) -> (T, size, size, 3), offsets floor((W-size)/2) like ffmpeg's crop default."""
    h, w = frames.shape[1:3]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return frames[:, y0:y0 + size, x0:x0 + size]


def _render_job(job: tuple) -> tuple[int, np.ndarray, float]:
    """(case, uint8 (T, 64, W64, 3), CPU seconds) for one case, in a worker process."""
    stream, seed, case, seconds, width, height = job
    torch.set_num_threads(1)
    synthetic = import_synthetic()
    cpu0 = time.process_time()
    plan = synthetic.plan_case(seed, case, seconds, width / height, stream=stream)
    frames = synthetic.case_frames(plan, width, height, FPS)  # (T, H, W, 3), frame k at k/FPS s
    small = resize_short(frames)
    return case, small, time.process_time() - cpu0


def render_cases(stream: str, seed: int, cases: list[int], seconds: float, width: int, height: int,
                 workers: int = 0, log: bool = True) -> tuple[list[np.ndarray], dict[str, float]]:
    """Render cases in parallel (spawned processes: safe after torch/CUDA is imported); returns per-case arrays
    in `cases` order and throughput stats."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(cases)))
    jobs = [(stream, seed, c, seconds, width, height) for c in cases]
    t0 = time.time()
    out: dict[int, np.ndarray] = {}
    cpu = 0.0
    last = t0
    if workers == 1:
        results = map(_render_job, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_render_job, jobs, chunksize=1)
    try:
        for case, arr, c in results:
            out[case], cpu = arr, cpu + c
            if log and time.time() - last > 10:
                last = time.time()
                print(f"render: {len(out)}/{len(cases)} cases, {time.time() - t0:.0f} s", flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
    wall = time.time() - t0
    frames = sum(len(a) for a in out.values())
    stats = {"cases": len(cases), "frames": frames, "render_size": f"{width}x{height}", "workers": workers,
             "wall_s": round(wall, 2), "frames_per_s": round(frames / wall, 1),
             "frames_per_s_per_core_cpu": round(frames / max(cpu, 1e-9), 1)}
    return [out[c] for c in cases], stats


# ---------------------------------------------------------------- batches on the training device

class Corpus:
    """All frames of all cases in one uint8 tensor (N, 64, W, 3) on `device`, plus case offsets."""

    def __init__(self, arrays: list[np.ndarray], device: torch.device):
        lengths = [len(a) for a in arrays]
        if min(lengths) < CLIP:
            raise ValueError(f"every case needs >= {CLIP} frames; got {min(lengths)}")
        self.frames = torch.from_numpy(np.concatenate(arrays)).to(device)  # (N, H, W, 3) uint8
        self.lengths = torch.tensor(lengths)
        self.offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)[:-1]]))
        self.device = device

    def __len__(self) -> int:
        return len(self.lengths)

    def sample(self, videos: int, per_video: int, gen: torch.Generator) -> Tensor:
        """uint8 (videos*per_video, CLIP, H, W, 3); each video's clips start in different, equal-length strata
        of its valid range (so they are >= ~range/per_video apart: hard negatives, not near-duplicates)."""
        vid = torch.randint(0, len(self), (videos,), generator=gen)
        n_start = self.lengths[vid] - CLIP + 1  # (V,)
        u = torch.rand(videos, per_video, generator=gen)
        starts = ((torch.arange(per_video) + u) * n_start[:, None] / per_video).long()
        starts = torch.minimum(starts, (n_start - 1)[:, None])
        first = (self.offsets[vid][:, None] + starts).reshape(-1, 1)  # (B, 1)
        idx = (first + torch.arange(CLIP)).to(self.device, non_blocking=True)  # (B, CLIP)
        return self.frames[idx]


def to_pixels(clips: Tensor, gen: torch.Generator | None, scale_min: float = 0.8, flip: bool = True) -> Tensor:
    """uint8 (B, T, H, W, 3) -> ImageNet-normalised float (B, T, 3, 64, 64), as models.encoder.preprocess.

    gen None: the pipeline's centre crop (exact pixels). Otherwise one random crop (side s*64, s ~ U(scale_min, 1),
    anywhere in the frame) + flip per clip, resampled bilinearly to 64x64."""
    from models.encoder import IMAGENET_MEAN, IMAGENET_STD

    b, t, h, w, _ = clips.shape
    dev = clips.device
    x = clips.permute(0, 1, 4, 2, 3).reshape(b, t * 3, h, w).float()  # all frames of a clip share one transform
    if gen is None:
        s = torch.ones(b)
        x0 = torch.full((b,), float((w - SIZE) // 2))
        y0 = torch.full((b,), float((h - SIZE) // 2))
        sign = torch.ones(b)
    else:
        s = scale_min + (1 - scale_min) * torch.rand(b, generator=gen)
        c = s * SIZE
        x0 = torch.rand(b, generator=gen) * (w - c)
        y0 = torch.rand(b, generator=gen) * (h - c)
        sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    c = s * SIZE
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sign * c / w
    theta[:, 0, 2] = (2 * x0 + c) / w - 1
    theta[:, 1, 1] = c / h
    theta[:, 1, 2] = (2 * y0 + c) / h - 1
    grid = F.affine_grid(theta.to(dev), [b, t * 3, SIZE, SIZE], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x.view(b, t, 3, SIZE, SIZE) / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 1, 3, 1, 1)
    return (x - mean) / std


def block_masks(b: int, hg: int, wg: int, prob: float, sizes: tuple[int, int], gen: torch.Generator) -> Tensor:
    """bool (B, hg, wg): per clip, with probability `prob`, one random block of sizes[0]..sizes[1] patches per side."""
    bh = torch.randint(sizes[0], sizes[1] + 1, (b, 1, 1), generator=gen)
    bw = torch.randint(sizes[0], sizes[1] + 1, (b, 1, 1), generator=gen)
    y = (torch.rand(b, 1, 1, generator=gen) * (hg - bh + 1)).long()
    x = (torch.rand(b, 1, 1, generator=gen) * (wg - bw + 1)).long()
    on = (torch.rand(b, 1, 1, generator=gen) < prob)
    rows, cols = torch.arange(hg).view(1, hg, 1), torch.arange(wg).view(1, 1, wg)
    return on & (rows >= y) & (rows < y + bh) & (cols >= x) & (cols < x + bw)


# ---------------------------------------------------------------- model pieces

def predict_all(predictor, context: Tensor, grid: tuple[int, int, int], context_t: int,
                masked: Tensor | None) -> Tensor:
    """Predictor.forward, but it also returns the context positions and puts the learned query into the slots
    of masked context tokens (masked: bool (B, Nc)). With masked None the future part equals
    predictor(context, grid, context_t) exactly (checked in main)."""
    tg, hg, wg = grid
    b, nc, _ = context.shape
    nf = (tg - context_t) * hg * wg
    x = predictor.in_proj(context)  # (B, Nc, dim)
    q = predictor.query.to(x.dtype)
    if masked is not None:
        x = torch.where(masked[..., None], q.expand_as(x), x)
    x = torch.cat([x, q.expand(b, nf, -1)], dim=1)  # (B, N, dim)
    rope = predictor.rope_for(grid, context.device)
    for block in predictor.blocks:
        x = block(x, rope)
    return predictor.out_proj(predictor.norm(x))  # (B, N, enc_dim)


def token_nce(pred: Tensor, target: Tensor, temperature: float, per_video: int) -> tuple[Tensor, Tensor, Tensor]:
    """InfoNCE over the batch with a spatial similarity: mean over token positions of the cosine between the
    prediction and the (layer-normed) target at the same position. Returns (loss, batch top-1 accuracy,
    top-1 accuracy among the clips of the same video only: the hard part)."""
    p = F.normalize(pred, dim=-1)  # (B, N, D)
    t = F.normalize(F.layer_norm(target.detach(), target.shape[-1:]), dim=-1)
    logits = torch.einsum("bnd,cnd->bc", p, t) / (p.shape[1] * temperature)  # (B, B)
    labels = torch.arange(p.shape[0], device=p.device)
    loss = F.cross_entropy(logits, labels)
    with torch.no_grad():
        acc = (logits.argmax(1) == labels).float().mean()
        g = p.shape[0] // per_video
        blocks = logits.view(g, per_video, g, per_video).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (G, K, K)
        hard = (blocks.argmax(-1) == torch.arange(per_video, device=p.device)).float().mean()
    return loss, acc, hard


class Trainer:
    def __init__(self, args: argparse.Namespace, device: torch.device):
        from models import Predictor, VideoEncoder, encoder_config

        self.args, self.device = args, device
        torch.manual_seed(args.seed)
        cfg = encoder_config(ARCH["dim"], ARCH["depth"], ARCH["heads"], SIZE, CLIP)
        self.encoder = VideoEncoder.from_config(cfg).to(device)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False).eval()
        self.predictor = Predictor(ARCH["dim"], PRED["dim"], PRED["depth"], PRED["heads"]).to(device)
        self.grid = self.encoder.grid(CLIP, SIZE, SIZE)  # (4, 4, 4)
        self.context_t = CONTEXT // self.encoder.tubelet
        params = [p for m in (self.encoder, self.predictor) for p in m.parameters()]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        kw = {"fused": True} if device.type == "cuda" else {}
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=args.lr,
                                     betas=(0.9, 0.99), **kw)
        self.amp = device.type == "cuda"
        self.online_params = list(self.encoder.parameters())
        self.target_params = list(self.target.parameters())

    def context_masks(self, b: int, gen: torch.Generator) -> Tensor | None:
        a = self.args
        return block_masks(b, self.grid[1], self.grid[2], a.mask_prob, (1, 2), gen) if a.mask_prob > 0 else None

    def full_masks(self, b: int, gen: torch.Generator) -> Tensor | None:
        a = self.args
        return block_masks(b, self.grid[1], self.grid[2], 1.0, (2, 3), gen) if a.full_mask_weight > 0 else None

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    def _blank(self, px: Tensor, masks: Tensor) -> Tensor:
        """Set the pixels of masked patches (bool (B, hg, wg), the same in every frame) to 0 = the dataset mean."""
        pix = masks.repeat_interleave(self.encoder.patch, 1).repeat_interleave(self.encoder.patch, 2)  # (B, H, W)
        return px.masked_fill(pix[:, None, None], 0.0)

    @staticmethod
    def _masked_l1(out: Tensor, target: Tensor, masked: Tensor) -> Tensor:
        err = (out - F.layer_norm(target, target.shape[-1:])).abs().mean(-1)  # (B, n)
        return (err * masked).sum() / masked.sum().clamp(min=1)

    def losses(self, pixels: Tensor, masks: Tensor | None, full_masks: Tensor | None) -> dict[str, Tensor]:
        """pixels (B, T, 3, 64, 64); masks: bool (B, hg, wg) blanked context patches, or None; full_masks: bool
        (B, hg, wg) tube masks for the masked-modelling pass on the full clip, or None (pass skipped)."""
        a = self.args
        tg = self.grid[0]
        ctx_px = pixels[:, :CONTEXT]
        masked_tokens = None
        if masks is not None and bool(masks.any()):
            m = masks.to(self.device)
            ctx_px = self._blank(ctx_px, m)
            masked_tokens = m.flatten(1).repeat(1, self.context_t)  # (B, Nc): the same patches in each tubelet
        with self.autocast():
            ctx = self.encoder(ctx_px)  # (B, Nc, D): never sees the future
            with torch.no_grad():
                full = self.target(pixels)  # (B, N, D)
            out = predict_all(self.predictor, ctx, self.grid, self.context_t, masked_tokens)
        out, full = out.float(), full.float()
        nc = ctx.shape[1]
        from models.losses import contrastive_loss, temporal_loss

        l1 = temporal_loss(out[:, nc:], full[:, nc:])
        res = {"l1": l1}
        loss = l1
        if masked_tokens is not None:
            l1m = self._masked_l1(out[:, :nc], full[:, :nc], masked_tokens)
            res["l1_ctxmask"] = l1m.detach()
            loss = loss + a.mask_weight * l1m
        if full_masks is not None:
            # V-JEPA's own objective: the online encoder sees the whole clip (all 4 token time steps, so the
            # temporal attention over a full clip, which the pipeline's targets and probes use, is trained
            # too) with a tube of patches blanked in every frame, and the predictor fills the tube in
            fm = full_masks.to(self.device)
            fm_tokens = fm.flatten(1).repeat(1, tg)  # (B, N)
            with self.autocast():
                seen = self.encoder(self._blank(pixels, fm))  # (B, N, D)
                out_full = predict_all(self.predictor, seen, self.grid, tg, fm_tokens)
            l1f = self._masked_l1(out_full.float(), full, fm_tokens)
            res["l1_fullmask"] = l1f.detach()
            loss = loss + a.full_mask_weight * l1f
        if a.nce != "none":
            if a.nce == "tokens":
                nce, acc, hard = token_nce(out[:, nc:], full[:, nc:], a.temperature, a.clips_per_video)
                res["nce_hard_acc"] = hard
            else:
                nce, acc = contrastive_loss(out[:, nc:], full[:, nc:], a.temperature)
            res["nce"], res["nce_acc"] = nce.detach(), acc
            loss = loss + a.nce_weight * nce
        with torch.no_grad():  # collapse watch: spread across the batch of the pooled, normed future targets
            t = F.layer_norm(full[:, nc:], full.shape[-1:]).mean(1)
            res["tgt_std"] = t.std(0).mean()
        res["loss"] = loss
        return res

    def step(self, pixels: Tensor, masks: Tensor | None, full_masks: Tensor | None, lr: float,
             momentum: float) -> dict[str, Tensor]:
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.encoder.train()
        self.predictor.train()
        res = self.losses(pixels, masks, full_masks)
        self.opt.zero_grad(set_to_none=True)
        res["loss"].backward()
        res["grad_norm"] = torch.nn.utils.clip_grad_norm_(
            [p for m in (self.encoder, self.predictor) for p in m.parameters()], self.args.clip_grad)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.online_params, 1.0 - momentum)
        return {k: v.detach() for k, v in res.items()}

    @torch.no_grad()
    def evaluate(self, batches: list[Tensor]) -> dict[str, float]:
        """Held-out losses on fixed centre-cropped clips; the context is not masked, the full-clip pass uses a
        fixed set of tube masks."""
        self.encoder.eval()
        self.predictor.eval()
        sums: dict[str, float] = {}
        gen = torch.Generator().manual_seed(1234)
        for clips in batches:
            fm = self.full_masks(len(clips), gen)
            res = self.losses(to_pixels(clips, None), None, fm)
            for k, v in res.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return {k: round(v / len(batches), 5) for k, v in sums.items()}


def schedule(progress: float, args: argparse.Namespace) -> tuple[float, float]:
    """(lr, EMA momentum) at training progress 0..1: linear warmup then cosine to 5%; momentum ramps linearly."""
    if progress < args.warmup:
        lr = args.lr * max(progress / args.warmup, 0.01)
    else:
        q = (progress - args.warmup) / max(1 - args.warmup, 1e-9)
        lr = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(q, 1.0))))
    m0, m1 = args.ema
    return lr, m0 + (m1 - m0) * min(progress, 1.0)


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    if w % 2 or h % 2 or h < SIZE:
        raise argparse.ArgumentTypeError(f"render size WxH must be even and H >= {SIZE}, got {text}")
    return w, h


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--minutes", type=float, default=None, help="training wall-time budget (rendering not counted)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (with --minutes: whichever ends first; "
                   "the LR/EMA schedules follow --steps when given, else the time budget)")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default 512 on cuda, 48 on cpu)")
    p.add_argument("--clips-per-video", type=int, default=8, help="clips of one case per batch (hard negatives)")
    p.add_argument("--corpus-cases", type=int, default=512)
    p.add_argument("--seconds-per-case", type=float, default=90.0)
    p.add_argument("--val-cases", type=int, default=8, help="last corpus cases held out for the final losses")
    p.add_argument("--corpus-seed", type=int, default=CORPUS_SEED)
    p.add_argument("--render-size", type=parse_size, default=(160, 120), help="WxH the generator draws at")
    p.add_argument("--workers", type=int, default=0, help="render processes (0: os.cpu_count())")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.04)
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of training")
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--ema", type=float, nargs=2, default=(0.996, 0.9995), metavar=("START", "END"))
    p.add_argument("--nce", choices=["tokens", "pooled", "none"], default="tokens")
    p.add_argument("--nce-weight", type=float, default=0.1)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--mask-prob", type=float, default=0.5, help="clips whose context gets a blanked block")
    p.add_argument("--mask-weight", type=float, default=0.5, help="weight of the blanked context slots' L1")
    p.add_argument("--full-mask-weight", type=float, default=1.0,
                   help="weight of the full-clip masked-modelling L1 (0: skip that pass, ~40%% faster)")
    p.add_argument("--scale-min", type=float, default=0.8, help="crop side jitter: s*64 px, s ~ U(scale-min, 1)")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--ship", choices=["target", "online"], default="target", help="which encoder to save")
    p.add_argument("--seed", type=int, default=0, help="init + sampling seed")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--log-every", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--out", type=Path, default=REPO / "assets" / "vjepa2-tiny-surgical")
    a = p.parse_args(argv)
    if a.minutes is None and a.steps is None:
        p.error("give --minutes and/or --steps")
    if a.batch is None:
        a.batch = 512 if a.device == "cuda" else 48
    if a.batch % a.clips_per_video:
        p.error("--batch must be a multiple of --clips-per-video")
    if a.corpus_cases - a.val_cases < 1:
        p.error("--corpus-cases must exceed --val-cases")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.time()

    # 1. the corpus, once, in memory
    width, height = args.render_size
    arrays, render = render_cases("corpus", args.corpus_seed, list(range(args.corpus_cases)), args.seconds_per_case,
                                  width, height, args.workers)
    print(f"render: {render}", flush=True)
    train_arr, val_arr = arrays[:-args.val_cases], arrays[-args.val_cases:]
    corpus = Corpus(train_arr, device)
    val = Corpus(val_arr, device)
    del arrays, train_arr, val_arr

    trainer = Trainer(args, device)
    gen = torch.Generator().manual_seed(args.seed)
    videos = args.batch // args.clips_per_video
    vgen = torch.Generator().manual_seed(args.seed + 1)
    n_val = max(1, min(4, 2048 // args.batch))
    val_batches = [val.sample(videos, args.clips_per_video, vgen) for _ in range(n_val)]

    with torch.no_grad():  # the custom predictor pass equals Predictor.forward when nothing is masked
        px = to_pixels(val_batches[0][:4], None)
        ctx = trainer.encoder(px[:, :CONTEXT])
        ref = trainer.predictor(ctx, trainer.grid, trainer.context_t)
        mine = predict_all(trainer.predictor, ctx, trainer.grid, trainer.context_t, None)[:, ctx.shape[1]:]
        assert torch.allclose(ref, mine, rtol=1e-3, atol=1e-3), "predict_all diverges from Predictor.forward"
    initial = trainer.evaluate(val_batches)
    print(f"held-out before training: {initial}", flush=True)

    # 2. train
    budget = args.minutes * 60 if args.minutes else None
    t0 = time.time()
    last_log, step = t0, 0
    sums: dict[str, Tensor] = {}
    n_sum = 0
    window: dict[str, float] = {}
    while True:
        elapsed = time.time() - t0
        prog_t = elapsed / budget if budget else 0.0
        prog_s = step / args.steps if args.steps else 0.0
        if prog_t >= 1 or prog_s >= 1:
            break
        lr, momentum = schedule(prog_s if args.steps else prog_t, args)
        clips = corpus.sample(videos, args.clips_per_video, gen)
        pixels = to_pixels(clips, gen, args.scale_min, not args.no_flip)
        res = trainer.step(pixels, trainer.context_masks(args.batch, gen), trainer.full_masks(args.batch, gen), lr,
                           momentum)
        step += 1
        for k, v in res.items():
            sums[k] = sums.get(k, 0) + v
        n_sum += 1
        now = time.time()
        if now - last_log >= args.log_every:
            window = {k: round(float(v) / n_sum, 4) for k, v in sums.items()}
            if not all(math.isfinite(v) for v in window.values()):
                print(f"non-finite losses at step {step}: {window}", flush=True)
                return 1
            rate = step / (now - t0)
            print(f"step {step} | {now - t0:.0f} s | {rate:.2f} steps/s {rate * args.batch:.0f} clips/s | "
                  f"lr {lr:.2e} ema {momentum:.5f} | " + " ".join(f"{k} {v:.4f}" for k, v in window.items()),
                  flush=True)
            sums, n_sum, last_log = {}, 0, now
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t0
    if n_sum:
        window = {k: round(float(v) / n_sum, 4) for k, v in sums.items()}
    final = trainer.evaluate(val_batches)
    print(f"held-out after {step} steps: {final}", flush=True)

    # 3. save: HF-format encoder only, then check it loads back to the same outputs
    from models import VideoEncoder
    from surgwm.io import file_sha256

    shipped = trainer.target if args.ship == "target" else trainer.encoder
    args.out.mkdir(parents=True, exist_ok=True)
    shipped.save_pretrained(args.out)
    os.chmod(args.out / "model.safetensors", 0o644)  # save_pretrained leaves 0600
    back = VideoEncoder.from_pretrained(args.out).to(device).eval()
    with torch.no_grad():
        px = to_pixels(val_batches[0][:8], None)
        same = torch.allclose(back(px).float(), shipped.eval()(px).float(), rtol=1e-3, atol=1e-3)
    if not same:
        print("saved encoder does not reproduce its outputs", flush=True)
        return 1
    import transformers

    info: dict[str, Any] = {
        "command": " ".join(["python", "scripts/pretrain_embedded.py", *(sys.argv[1:] if argv is None else argv)]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "architecture": {"encoder": ARCH, "predictor": PRED, "crop_size": SIZE, "frames_per_clip": CLIP,
                         "context_frames": CONTEXT, "fps": FPS, "encoder_params": sum(p.numel() for p in shipped.parameters())},
        "shipped": f"{args.ship} encoder" + (" (EMA)" if args.ship == "target" else ""),
        "data": {"generator": "surgwm.data.synthetic.plan_case(stream='corpus') + case_frames", "corpus_seed": args.corpus_seed,
                 "train_cases": len(corpus), "val_cases": len(val), "train_frames": int(corpus.lengths.sum()),
                 "render": render},
        "steps": step, "clips_seen": step * args.batch, "train_seconds": round(train_s, 1),
        "steps_per_s": round(step / max(train_s, 1e-9), 2), "total_seconds": round(time.time() - t_start, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
        "final_train_losses": window, "heldout_initial": initial, "heldout_final": final,
        "max_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "model_safetensors_sha256": file_sha256(args.out / "model.safetensors"),
    }
    (args.out / "pretraining.json").write_text(json.dumps(info, indent=1) + "\n")
    summary = {"out": str(args.out), "steps": step, "train_s": info["train_seconds"], "steps_per_s": info["steps_per_s"],
               "render_s": render["wall_s"], "train_frames": info["data"]["train_frames"],
               "final_train": window, "heldout_l1": final.get("l1"), "heldout_l1_initial": initial.get("l1"),
               "heldout_nce_hard_acc": final.get("nce_hard_acc"), "max_gpu_gib": info["max_gpu_memory_gib"],
               "sha256": info["model_safetensors_sha256"][:16]}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
