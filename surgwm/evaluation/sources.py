"""Feature sources: what turns uint8 clips into tokens (a trained run, the untrained encoder, raw pixels)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import Tensor

from models import Predictor, VideoEncoder, encoder_config, preprocess
from models.probe import PixelTokens
from surgwm.data.clips import Clip, ClipReader
from surgwm.params import Params, portable_path
from surgwm.evaluation.errors import EvaluateError
from surgwm.training.runs import RunNotFinished, load_run


@dataclass
class Source:
    """What turns uint8 clips into tokens; methods also have the predictor (future and roll-outs)."""

    name: str
    kind: str                                   # method | baseline
    tokens: Callable[[Tensor], Tensor]          # uint8 (B, T, H, W, 3) -> (B, N, D)
    encoder: VideoEncoder | None = None
    predictor: Predictor | None = None
    context_frames: int = 0
    temperature: float = 0.1
    info: dict[str, Any] = field(default_factory=dict)


def method_source(name: str, run_dir: Path, device: torch.device) -> Source:
    try:
        run = load_run(run_dir, name)
    except RunNotFinished as err:
        raise EvaluateError(str(err)) from None
    return world_model_source(name, run.encoder, run.predictor, run.context_frames,
                              run.config["train"]["temperature"], device,
                              {"weights_sha256": run.weights_sha256, "method": run.config.get("method"),
                               "train_device": run.config.get("device")})


def world_model_source(name: str, encoder: VideoEncoder, predictor: Predictor, context_frames: int,
                       temperature: float, device: torch.device, info: dict[str, Any] | None = None) -> Source:
    encoder, predictor = encoder.to(device).eval(), predictor.to(device).eval()
    return Source(name, "method", lambda f: encoder(preprocess(f)), encoder, predictor, context_frames,
                  temperature, info or {})


def baseline_source(name: str, params: Params, weights_dir: Path, device: torch.device) -> Source:
    if name == "raw_pixels":
        pix = PixelTokens(params.evaluate.pixel_pool).to(device)
        return Source(name, "baseline", pix, info={"tokens": f"pixels pooled to {pix.pool}x{pix.pool} per patch"})
    torch.manual_seed(params.evaluate.seed)
    cfg_file = weights_dir / "config.json"
    if cfg_file.is_file():
        from transformers import VJEPA2Config

        cfg, arch = VJEPA2Config.from_json_file(str(cfg_file)), f"{portable_path(cfg_file)} (the pretrained encoder's)"
    else:
        m, d = params.model, params.data
        cfg = encoder_config(m.encoder_dim, m.encoder_depth, m.encoder_heads, d.size, d.clip_frames)
        arch = "model.* (no pretrained weights found)"
    encoder = VideoEncoder.from_config(cfg).to(device).eval()
    return Source(name, "baseline", lambda f: encoder(preprocess(f)), encoder,
                  info={"architecture": arch, "init_seed": params.evaluate.seed})


def load_source(name: str, params: Params, train_root: Path, weights_dir: Path, device: torch.device) -> Source:
    if name in params.evaluate.baselines:
        return baseline_source(name, params, weights_dir, device)
    if name in params.train.methods:
        return method_source(name, train_root / name, device)
    raise EvaluateError(f"'{name}' is neither a run of train.methods ({', '.join(params.train.methods)}) nor a "
                        f"baseline of evaluate.baselines ({', '.join(params.evaluate.baselines)})")


def rollout(src: Source, frames: Tensor, steps: int) -> Tensor:
    """Predicted tokens beyond the clip: the last `context_frames` frames alone are the first context, then each
    roll's prediction (the latest context_t token-time-steps) is the next context. -> (B, steps * Nf, D)."""
    assert src.encoder is not None and src.predictor is not None
    b, t, h, w, _ = frames.shape
    grid = src.encoder.grid(t, h, w)
    ct = src.context_frames // src.encoder.tubelet
    n_ctx = ct * grid[1] * grid[2]
    context = src.encoder(preprocess(frames[:, t - src.context_frames:]))  # (B, Nc, D)
    outs = []
    for _ in range(steps):
        fut = src.predictor(context, grid, ct)  # (B, Nf, D)
        outs.append(fut)
        context = torch.cat([context, fut], dim=1)[:, -n_ctx:]
    return torch.cat(outs, dim=1)


@torch.no_grad()
def encode(src: Source, frames: Tensor, rollouts: int) -> tuple[Tensor, Tensor | None]:
    """uint8 clips (B, T, H, W, 3) -> tokens (B, N, D) and, for methods, rolled-out future tokens (B, R Nf, D)."""
    tok = src.tokens(frames).float()
    return tok, (rollout(src, frames, rollouts).float() if src.predictor is not None else None)


def read_clips(cache: ClipReader, clips: Sequence[Clip], rows: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.stack([cache.read(clips[int(r)]) for r in rows])).to(device)  # (B, T, H, W, 3)


@torch.no_grad()
def token_shapes(src: Source, cache: ClipReader, clip: Clip, rollouts: int,
                 device: torch.device) -> list[tuple[int, int]]:
    """(tokens, dim) of what `extract` stores per clip (tokens; roll-outs for methods), from one clip."""
    tok, rol = encode(src, read_clips(cache, [clip], np.zeros(1, int), device), rollouts)
    return [tuple(tok.shape[1:])] + ([tuple(rol.shape[1:])] if rol is not None else [])  # type: ignore[list-item]


@torch.no_grad()
def extract(src: Source, cache: ClipReader, clips: Sequence[Clip], rows: np.ndarray, batch_size: int,
            device: torch.device, workdir: Path, dtype: str, rollouts: int,
            progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Tokens (len(rows), N, D) of the clips `rows` (table indices, sorted) and, for methods, the rolled-out future
    tokens (len(rows), R Nf, D), in memory-mapped files under `workdir`."""
    from tqdm import tqdm

    workdir.mkdir(parents=True, exist_ok=True)
    tokens = rolled = None
    for lo in tqdm(range(0, len(rows), batch_size), desc=f"encode {src.name}", disable=not progress, unit="batch"):
        chunk = rows[lo:lo + batch_size]
        tok, rol = encode(src, read_clips(cache, clips, chunk, device), rollouts)
        if tokens is None:
            tokens = open_memmap(workdir / "tokens.npy", "w+", dtype, (len(rows), *tok.shape[1:]))
        tokens[lo:lo + len(chunk)] = tok.cpu().numpy()
        if rol is not None:
            if rolled is None:
                rolled = open_memmap(workdir / "rolled.npy", "w+", dtype, (len(rows), *rol.shape[1:]))
            rolled[lo:lo + len(chunk)] = rol.cpu().numpy()
    assert tokens is not None, "no clips to extract"
    return tokens, rolled
