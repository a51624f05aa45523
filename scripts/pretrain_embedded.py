#!/usr/bin/env python
"""Re-make the shipped tiny encoder `assets/vjepa2-tiny-surgical/`: V-JEPA-2-style self-supervised pretraining on
the UNLABELLED synthetic surgical corpus (surgwm.data.synthetic, stream "corpus": never a case of the labelled demo
dataset), then `VideoEncoder.save_pretrained(--out)` + `pretraining.json` (arguments, geometry, code hash, log).

Geometry comes from the asset's config.json (--asset: crop, frames per clip, encoder width/depth/heads) and must
equal params.yaml's (data.size, data.clip_frames, model.encoder_*; the predictor and context frames are
params.yaml's model.*): a mismatch stops the script naming the keys, so the pipeline's scratch and pretrained runs
keep comparing like with like.

Data: each corpus case is drawn in memory at params.yaml's source size (data.synthetic.width x height) at the
decode rate (data.fps), scaled by ffmpeg's swscale (surgwm.data.ffmpeg.scale_rgb: the decode stage's scaler) to
short side data.size -> uint8 (T, 64, 85, 3) per case. The last --val-cases cases are held out for the final
losses. Clips: data.clip_frames frames; augmentation = a random data.size-wide window of the frame (the pipeline
uses the centre one) and a horizontal flip with p = 0.5 (the training stage's flip); models.preprocess normalises.

Objective, per clip (the training library does the rest: surgwm.training.methods.Student / param_groups /
ema_update, surgwm.training.schedule.WarmupCosine / ema_momentum):
  * the online encoder sees ONLY the context frames (model.context_frames); with probability --mask-prob a random
    block of 1-2 x 1-2 patches is blanked in them (pixels 0 = the dataset mean after normalisation);
  * an EMA copy (the target encoder, momentum --ema ramped linearly) encodes the FULL clip;
  * the predictor (models.Predictor.predict_all) predicts the target tokens of the future positions, and of the
    blanked context positions (their slots get the predictor's learned query);
  * a second pass, V-JEPA's own objective: the online encoder sees the FULL clip with a tube (all frames) of
    2-3 x 2-3 patches blanked and the predictor fills in the tube's target tokens (without it the online encoder
    would only ever see the context's time steps, while the pipeline's targets and probes run it on full clips);
  * loss = L1 to the layer-normed targets (models.temporal_loss; blanked context slots weighted --mask-weight,
    the full-clip tube --full-mask-weight) + --nce-weight * InfoNCE. "tokens" InfoNCE keeps space: the
    similarity of two clips is the mean over future positions of the cosine of prediction and target at the SAME
    position, and each batch holds --clips-per-video clips of each video at different times, so most negatives
    share the case's tissue, colours and step. "pooled" is models.contrastive_loss.
The LR follows one warmup + cosine schedule over --steps; --minutes only caps the wall time (a capped run says so
in pretraining.json: its schedule was cut). The encoder shipped is the EMA target encoder (as V-JEPA releases).

  python scripts/pretrain_embedded.py --threads 1 --workers 1 --steps 900 --out assets/vjepa2-tiny-surgical
  python scripts/pretrain_embedded.py --device cuda --steps 3000 --batch 512 --corpus-cases 512
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from models import Predictor, VideoEncoder, contrastive_loss, encoder_config, preprocess, temporal_loss  # noqa: E402
from models.encoder import PATCH, TUBELET  # noqa: E402
from surgwm.data import synthetic  # noqa: E402
from surgwm.data.decode import output_dims  # noqa: E402
from surgwm.data.ffmpeg import scale_rgb  # noqa: E402
from surgwm.io import file_sha256  # noqa: E402
from surgwm.params import load_params  # noqa: E402
from surgwm.training.methods import Student, ema_update, param_groups  # noqa: E402
from surgwm.training.schedule import WarmupCosine, ema_momentum  # noqa: E402

ASSET = REPO / "assets" / "vjepa2-tiny-surgical"
CORPUS_SEED = 1000  # the demo dataset is seed 0 of the *labelled* stream; the corpus is its own stream anyway
# what the asset is made from: a change to any of these (code, not comments or docstrings) makes the asset stale
CODE_FILES = ("surgwm/data/synthetic.py", "surgwm/data/classes.py", "surgwm/data/ffmpeg.py",
              "scripts/pretrain_embedded.py")


def code_hash(root: Path = REPO, files: tuple[str, ...] = CODE_FILES) -> str:
    """sha256 over the files' syntax trees without docstrings: what the code does, not how it is explained."""
    h = hashlib.sha256()
    for rel in files:
        tree = ast.parse((root / rel).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.update(rel.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------- geometry: the asset's config.json vs params.yaml

class GeometryError(ValueError):
    """The asset's architecture and params.yaml disagree (the message names both)."""


@dataclass(frozen=True)
class Geometry:
    size: int                     # crop side, px (data.size = config crop_size)
    clip_frames: int              # data.clip_frames = config frames_per_clip
    context_frames: int           # model.context_frames
    fps: float                    # data.fps: the decode stage's frame rate
    source: tuple[int, int]       # data.synthetic width, height: what the generator draws at
    encoder: tuple[int, int, int]  # dim, depth, heads (model.encoder_* = config hidden/layers/heads)
    predictor: tuple[int, int, int]  # model.predictor_dim, _depth, _heads

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.clip_frames // TUBELET, self.size // PATCH, self.size // PATCH

    @property
    def context_t(self) -> int:
        return self.context_frames // TUBELET


def geometry(asset: Path, params_path: Path) -> Geometry:
    """The asset's config.json, checked against params.yaml key by key."""
    cfg_path = asset / "config.json"
    if not cfg_path.is_file():
        raise GeometryError(f"{cfg_path} not found: --asset must be an HF-format encoder folder (config.json)")
    cfg = json.loads(cfg_path.read_text())
    p = load_params(params_path)
    d, m = p.data, p.model
    pairs = [("crop_size", "data.size", d.size), ("frames_per_clip", "data.clip_frames", d.clip_frames),
             ("hidden_size", "model.encoder_dim", m.encoder_dim),
             ("num_hidden_layers", "model.encoder_depth", m.encoder_depth),
             ("num_attention_heads", "model.encoder_heads", m.encoder_heads),
             ("patch_size", "models.encoder.PATCH", PATCH), ("tubelet_size", "models.encoder.TUBELET", TUBELET)]
    bad = [f"{key} {cfg.get(key)!r} vs {name} {want!r}" for key, name, want in pairs if cfg.get(key) != want]
    if bad:
        raise GeometryError(f"{cfg_path} and {params_path} disagree: " + "; ".join(bad)
                            + ". The shipped encoder must match the pipeline: change params.yaml or --asset.")
    return Geometry(d.size, d.clip_frames, m.context_frames, float(d.fps),
                    (d.synthetic.width, d.synthetic.height), (m.encoder_dim, m.encoder_depth, m.encoder_heads),
                    (m.predictor_dim, m.predictor_depth, m.predictor_heads))


# ---------------------------------------------------------------- the corpus, drawn into memory

def _render_job(job: tuple) -> tuple[int, np.ndarray, float]:
    """(case, uint8 (T, size, W', 3), CPU seconds) for one corpus case, in a worker process."""
    stream, seed, case, seconds, (width, height), fps, size = job
    cpu0 = time.process_time()
    plan = synthetic.plan_case(seed, case, seconds, width / height, stream=stream)
    frames = synthetic.case_frames(plan, width, height, fps)  # (T, H, W, 3), frame k at k / fps s
    small = scale_rgb(frames, *output_dims(width, height, 1.0, size))  # (T, size, W', 3)
    return case, small, time.process_time() - cpu0


def render_cases(stream: str, seed: int, cases: list[int], seconds: float, geo: Geometry, workers: int = 0,
                 log: bool = True) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Draw cases in parallel (spawned processes: safe after torch/CUDA is imported); per-case arrays in `cases`
    order and throughput figures. The frames do not depend on the worker count (tests/test_repro.py)."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(cases)))
    jobs = [(stream, seed, c, seconds, geo.source, geo.fps, geo.size) for c in cases]
    t0 = last = time.time()
    out: dict[int, np.ndarray] = {}
    cpu = 0.0
    pool = None if workers == 1 else ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        for case, arr, c in (map(_render_job, jobs) if pool is None else pool.map(_render_job, jobs, chunksize=1)):
            out[case], cpu = arr, cpu + c
            if log and time.time() - last > 10:
                last = time.time()
                print(f"render: {len(out)}/{len(cases)} cases, {time.time() - t0:.0f} s", flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
    wall = time.time() - t0
    frames = sum(len(a) for a in out.values())
    stats = {"cases": len(cases), "frames": frames, "drawn_at": f"{geo.source[0]}x{geo.source[1]}",
             "workers": workers, "wall_s": round(wall, 2), "frames_per_s": round(frames / wall, 1),
             "frames_per_cpu_s": round(frames / max(cpu, 1e-9), 1)}
    return [out[c] for c in cases], stats


class Corpus:
    """All frames of all cases in one uint8 tensor (N, size, W', 3) on `device`, plus case offsets."""

    def __init__(self, arrays: list[np.ndarray], clip_frames: int, device: torch.device):
        lengths = [len(a) for a in arrays]
        if min(lengths) < clip_frames:
            raise ValueError(f"every case needs >= {clip_frames} frames; got {min(lengths)}: raise --seconds-per-case")
        self.frames = torch.from_numpy(np.concatenate(arrays)).to(device)  # (N, H, W, 3) uint8
        self.lengths = torch.tensor(lengths)
        self.offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)[:-1]]))
        self.clip_frames = clip_frames
        self.device = device

    def __len__(self) -> int:
        return len(self.lengths)

    def sample(self, videos: int, per_video: int, gen: torch.Generator) -> Tensor:
        """uint8 (videos*per_video, T, H, W, 3); each video's clips start in different, equal-length strata of
        its valid range (so they are >= ~range/per_video apart: hard negatives, not near-duplicates)."""
        vid = torch.randint(0, len(self), (videos,), generator=gen)
        n_start = self.lengths[vid] - self.clip_frames + 1  # (V,)
        u = torch.rand(videos, per_video, generator=gen)
        starts = ((torch.arange(per_video) + u) * n_start[:, None] / per_video).long()
        starts = torch.minimum(starts, (n_start - 1)[:, None])
        first = (self.offsets[vid][:, None] + starts).reshape(-1, 1)  # (B, 1)
        idx = (first + torch.arange(self.clip_frames)).to(self.device, non_blocking=True)  # (B, T)
        return self.frames[idx]


def to_pixels(clips: Tensor, size: int, gen: torch.Generator | None) -> Tensor:
    """uint8 (B, T, H, W, 3) -> normalised float (B, T, 3, size, size) by models.preprocess.

    gen None: the centre window (the decode stage's crop, offset floor((W - size) / 2)). Otherwise a random
    size-wide window per clip and a horizontal flip with p = 0.5, the same for all frames of a clip."""
    b, t, h, w, _ = clips.shape
    if gen is None:
        x0 = torch.full((b,), (w - size) // 2)
    else:
        x0 = torch.randint(0, w - size + 1, (b,), generator=gen)
    y0 = (h - size) // 2
    cols = (x0[:, None] + torch.arange(size)).to(clips.device)  # (B, size)
    idx = cols.view(b, 1, 1, size, 1).expand(b, t, size, size, 3)
    out = clips[:, :, y0:y0 + size].gather(3, idx)  # (B, T, size, size, 3)
    if gen is not None:
        flips = (torch.rand(b, generator=gen) < 0.5).to(clips.device)
        out = torch.where(flips.view(b, 1, 1, 1, 1), out.flip(3), out)
    return preprocess(out)  # (B, T, 3, size, size)


def block_masks(b: int, hg: int, wg: int, prob: float, sizes: tuple[int, int], gen: torch.Generator) -> Tensor:
    """bool (B, hg, wg): per clip, with probability `prob`, one random block of sizes[0]..sizes[1] patches a side."""
    bh = torch.randint(sizes[0], sizes[1] + 1, (b, 1, 1), generator=gen)
    bw = torch.randint(sizes[0], sizes[1] + 1, (b, 1, 1), generator=gen)
    y = (torch.rand(b, 1, 1, generator=gen) * (hg - bh + 1)).long()
    x = (torch.rand(b, 1, 1, generator=gen) * (wg - bw + 1)).long()
    on = torch.rand(b, 1, 1, generator=gen) < prob
    rows, cols = torch.arange(hg).view(1, hg, 1), torch.arange(wg).view(1, 1, wg)
    return on & (rows >= y) & (rows < y + bh) & (cols >= x) & (cols < x + bw)


def token_nce(pred: Tensor, target: Tensor, temperature: float, per_video: int) -> tuple[Tensor, Tensor, Tensor]:
    """InfoNCE over the batch with a spatial similarity: mean over token positions of the cosine between the
    prediction and the (layer-normed) target at the same position. Returns (loss, batch top-1 accuracy, top-1
    accuracy among the clips of the same video only: the hard part)."""
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


def masked_l1(pred: Tensor, target: Tensor, masked: Tensor) -> Tensor:
    """models.temporal_loss restricted to the `masked` (B, N) positions."""
    err = (pred - F.layer_norm(target.detach(), target.shape[-1:])).abs().mean(-1)  # (B, N)
    return (err * masked).sum() / masked.sum().clamp(min=1)


# ---------------------------------------------------------------- training

class Trainer:
    """Online encoder + predictor (the library's Student), an EMA target encoder, AdamW with the library's
    parameter groups and warmup + cosine schedule."""

    def __init__(self, geo: Geometry, args: argparse.Namespace, device: torch.device):
        self.geo, self.args, self.device = geo, args, device
        torch.manual_seed(args.seed)
        dim, depth, heads = geo.encoder
        self.encoder = VideoEncoder.from_config(encoder_config(dim, depth, heads, geo.size, geo.clip_frames)).to(device)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False).eval()
        self.predictor = Predictor(dim, *geo.predictor).to(device)
        self.student = Student(self.encoder, self.predictor)
        kw = {"fused": True} if device.type == "cuda" else {}
        self.opt = torch.optim.AdamW(param_groups(self.student, args.weight_decay), lr=args.lr, betas=(0.9, 0.99),
                                     **kw)
        self.sched = WarmupCosine(self.opt, args.steps, round(args.warmup * args.steps), args.final_lr_fraction)
        self.amp = device.type == "cuda"

    def context_masks(self, b: int, gen: torch.Generator) -> Tensor | None:
        _, hg, wg = self.geo.grid
        return block_masks(b, hg, wg, self.args.mask_prob, (1, 2), gen) if self.args.mask_prob > 0 else None

    def full_masks(self, b: int, gen: torch.Generator) -> Tensor | None:
        _, hg, wg = self.geo.grid
        return block_masks(b, hg, wg, 1.0, (2, 3), gen) if self.args.full_mask_weight > 0 else None

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    @staticmethod
    def _blank(px: Tensor, masks: Tensor) -> Tensor:
        """Set the pixels of masked patches (bool (B, hg, wg), the same in every frame) to 0 = the dataset mean."""
        pix = masks.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)  # (B, H, W)
        return px.masked_fill(pix[:, None, None], 0.0)

    def losses(self, pixels: Tensor, masks: Tensor | None, full_masks: Tensor | None) -> dict[str, Tensor]:
        """pixels (B, T, 3, S, S); masks: bool (B, hg, wg) blanked context patches, or None; full_masks: bool
        (B, hg, wg) tube masks for the masked-modelling pass on the full clip, or None (pass skipped)."""
        a, grid, ct = self.args, self.geo.grid, self.geo.context_t
        ctx_px = pixels[:, :self.geo.context_frames]
        masked_tokens = None
        if masks is not None and bool(masks.any()):
            m = masks.to(self.device)
            ctx_px = self._blank(ctx_px, m)
            masked_tokens = m.flatten(1).repeat(1, ct)  # (B, Nc): the same patches in each context tubelet
        with self.autocast():
            ctx = self.encoder(ctx_px)  # (B, Nc, D): never sees the future
            with torch.no_grad():
                full = self.target(pixels)  # (B, N, D)
            out = self.predictor.predict_all(ctx, grid, ct, masked_tokens)  # (B, N, D)
        out, full = out.float(), full.float()
        nc = ctx.shape[1]
        l1 = temporal_loss(out[:, nc:], full[:, nc:])
        res = {"l1": l1}
        loss = l1
        if masked_tokens is not None:
            l1m = masked_l1(out[:, :nc], full[:, :nc], masked_tokens)
            res["l1_ctxmask"] = l1m.detach()
            loss = loss + a.mask_weight * l1m
        if full_masks is not None:
            fm = full_masks.to(self.device)
            fm_tokens = fm.flatten(1).repeat(1, grid[0])  # (B, N)
            with self.autocast():
                seen = self.encoder(self._blank(pixels, fm))  # (B, N, D)
                out_full = self.predictor.predict_all(seen, grid, grid[0], fm_tokens)  # (B, N, D)
            l1f = masked_l1(out_full.float(), full, fm_tokens)
            res["l1_fullmask"] = l1f.detach()
            loss = loss + a.full_mask_weight * l1f
        if a.nce == "tokens":
            nce, acc, hard = token_nce(out[:, nc:], full[:, nc:], a.temperature, a.clips_per_video)
            res["nce_hard_acc"] = hard
        elif a.nce == "pooled":
            nce, acc = contrastive_loss(out[:, nc:], full[:, nc:], a.temperature)
        if a.nce != "none":
            res["nce"], res["nce_acc"] = nce.detach(), acc
            loss = loss + a.nce_weight * nce
        with torch.no_grad():  # collapse watch: spread across the batch of the pooled, normed future targets
            res["tgt_std"] = F.layer_norm(full[:, nc:], full.shape[-1:]).mean(1).std(0).mean()
        res["loss"] = loss
        return res

    def step(self, step: int, pixels: Tensor, masks: Tensor | None, full_masks: Tensor | None) -> dict[str, Tensor]:
        self.student.train()
        res = self.losses(pixels, masks, full_masks)
        self.opt.zero_grad(set_to_none=True)
        res["loss"].backward()
        res["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.args.clip_grad)
        res["lr"] = torch.tensor(self.opt.param_groups[0]["lr"])
        self.opt.step()
        self.sched.step()
        momentum = ema_momentum(step, self.args.steps, *self.args.ema)
        ema_update(self.target, self.encoder, momentum)
        res["ema"] = torch.tensor(momentum)
        return {k: v.detach() for k, v in res.items()}

    @torch.no_grad()
    def evaluate(self, batches: list[Tensor]) -> dict[str, float]:
        """Held-out losses on fixed centre-window clips; the context is not masked, the full-clip pass uses a
        fixed set of tube masks."""
        self.student.eval()
        sums: dict[str, float] = {}
        gen = torch.Generator().manual_seed(1234)
        for clips in batches:
            res = self.losses(to_pixels(clips, self.geo.size, None), None, self.full_masks(len(clips), gen))
            for k, v in res.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return {k: round(v / len(batches), 5) for k, v in sums.items()}


# ---------------------------------------------------------------- command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, required=True, help="optimizer steps: the LR and EMA schedules span them")
    p.add_argument("--minutes", type=float, default=None, help="wall-time cap on training (cuts the schedule)")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default 512 on cuda, 48 on cpu)")
    p.add_argument("--clips-per-video", type=int, default=8, help="clips of one case per batch (hard negatives)")
    p.add_argument("--corpus-cases", type=int, default=96)
    p.add_argument("--seconds-per-case", type=float, default=60.0)
    p.add_argument("--val-cases", type=int, default=6, help="last corpus cases held out for the final losses")
    p.add_argument("--corpus-seed", type=int, default=CORPUS_SEED)
    p.add_argument("--workers", type=int, default=0, help="drawing processes (0: os.cpu_count())")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--final-lr-fraction", type=float, default=0.05, help="cosine decays to lr * this")
    p.add_argument("--weight-decay", type=float, default=0.04)
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of --steps")
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--ema", type=float, nargs=2, default=(0.996, 0.9995), metavar=("START", "END"))
    p.add_argument("--nce", choices=["tokens", "pooled", "none"], default="tokens")
    p.add_argument("--nce-weight", type=float, default=0.1)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--mask-prob", type=float, default=0.5, help="clips whose context gets a blanked block")
    p.add_argument("--mask-weight", type=float, default=0.5, help="weight of the blanked context slots' L1")
    p.add_argument("--full-mask-weight", type=float, default=1.0,
                   help="weight of the full-clip masked-modelling L1 (0: skip that pass, ~40%% faster)")
    p.add_argument("--ship", choices=["target", "online"], default="target", help="which encoder to save")
    p.add_argument("--seed", type=int, default=0, help="init + sampling seed")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--log-every", type=int, default=25, help="steps between progress lines (and log entries)")
    p.add_argument("--asset", type=Path, default=ASSET, help="the encoder whose config.json gives the geometry")
    p.add_argument("--params", type=Path, default=REPO / "params.yaml")
    p.add_argument("--out", type=Path, default=ASSET)
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error("--steps must be >= 1")
    if a.batch is None:
        a.batch = 512 if a.device == "cuda" else 48
    if a.batch % a.clips_per_video:
        p.error("--batch must be a multiple of --clips-per-video")
    if a.corpus_cases - a.val_cases < 1 or a.val_cases < 1:
        p.error("need 1 <= --val-cases < --corpus-cases")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        geo = geometry(args.asset, args.params)
    except (GeometryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.time()
    code = code_hash()

    # 1. the corpus, once, in memory
    arrays, render = render_cases("corpus", args.corpus_seed, list(range(args.corpus_cases)), args.seconds_per_case,
                                  geo, args.workers)
    print(f"render: {render}", flush=True)
    corpus = Corpus(arrays[:-args.val_cases], geo.clip_frames, device)
    val = Corpus(arrays[-args.val_cases:], geo.clip_frames, device)
    del arrays

    trainer = Trainer(geo, args, device)
    gen = torch.Generator().manual_seed(args.seed)
    videos = args.batch // args.clips_per_video
    vgen = torch.Generator().manual_seed(args.seed + 1)
    val_batches = [val.sample(videos, args.clips_per_video, vgen) for _ in range(max(1, min(4, 2048 // args.batch)))]
    initial = trainer.evaluate(val_batches)
    print(f"held-out before training: {initial}", flush=True)

    # 2. train
    t0 = time.time()
    step, n_sum, cut = 0, 0, False
    sums: dict[str, Tensor] = {}
    window: dict[str, float] = {}
    log: list[dict[str, float]] = []
    while step < args.steps:
        if args.minutes is not None and time.time() - t0 >= args.minutes * 60:
            cut = True
            print(f"--minutes {args.minutes} reached at step {step} of {args.steps}: the schedule was cut", flush=True)
            break
        clips = corpus.sample(videos, args.clips_per_video, gen)
        pixels = to_pixels(clips, geo.size, gen)
        res = trainer.step(step, pixels, trainer.context_masks(args.batch, gen), trainer.full_masks(args.batch, gen))
        step += 1
        for k, v in res.items():
            sums[k] = sums.get(k, 0) + v
        n_sum += 1
        if step % args.log_every == 0 or step == args.steps:
            window = {k: round(float(v) / n_sum, 5) for k, v in sums.items()}
            if not all(math.isfinite(v) for v in window.values()):
                print(f"non-finite losses at step {step}: {window}", flush=True)
                return 1
            now = time.time()
            log.append({"step": step, "seconds": round(now - t0, 1), **window})
            print(f"step {step} | {now - t0:.0f} s | {(step) / (now - t0):.2f} steps/s | "
                  + " ".join(f"{k} {v:.4g}" for k, v in window.items()), flush=True)
            sums, n_sum = {}, 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t0
    final = trainer.evaluate(val_batches)
    print(f"held-out after {step} steps: {final}", flush=True)

    # 3. save: HF-format encoder only, then check it loads back to the same outputs
    shipped = trainer.target if args.ship == "target" else trainer.encoder
    args.out.mkdir(parents=True, exist_ok=True)
    shipped.save_pretrained(args.out)
    os.chmod(args.out / "model.safetensors", 0o644)  # save_pretrained leaves 0600
    back = VideoEncoder.from_pretrained(args.out).to(device).eval()
    with torch.no_grad():
        px = to_pixels(val_batches[0][:8], geo.size, None)
        same = torch.allclose(back(px).float(), shipped.eval()(px).float(), rtol=1e-3, atol=1e-3)
    if not same:
        print("saved encoder does not reproduce its outputs", flush=True)
        return 1
    import transformers

    info: dict[str, Any] = {
        "command": " ".join(["python", "scripts/pretrain_embedded.py", *(sys.argv[1:] if argv is None else argv)]),
        "code_sha256": code, "code_files": list(CODE_FILES),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "geometry": asdict(geo) | {"grid": geo.grid, "encoder_params": sum(p.numel() for p in shipped.parameters())},
        "shipped": f"{args.ship} encoder" + (" (EMA)" if args.ship == "target" else ""),
        "data": {"generator": "surgwm.data.synthetic.plan_case(stream='corpus') + case_frames, "
                              "scaled by surgwm.data.ffmpeg.scale_rgb",
                 "corpus_seed": args.corpus_seed, "train_cases": len(corpus), "val_cases": len(val),
                 "train_frames": int(corpus.lengths.sum()), "render": render},
        "steps": step, "schedule_cut": cut, "clips_seen": step * args.batch, "train_seconds": round(train_s, 1),
        "steps_per_s": round(step / max(train_s, 1e-9), 3), "total_seconds": round(time.time() - t_start, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
        "final_train_losses": window, "heldout_initial": initial, "heldout_final": final, "log": log,
        "max_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "model_safetensors_sha256": file_sha256(args.out / "model.safetensors"),
    }
    (args.out / "pretraining.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps({"out": str(args.out), "steps": step, "train_s": info["train_seconds"],
                      "heldout_l1": final.get("l1"), "heldout_l1_initial": initial.get("l1"),
                      "heldout_nce_hard_acc": final.get("nce_hard_acc"), "sha256": info["model_safetensors_sha256"][:16]}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
