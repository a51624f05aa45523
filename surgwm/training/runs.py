"""A finished training run on disk, `data/train/<run>/`: how train writes its models and how every reader loads them.

Layout (written by `save_models` at the end of train, read by evaluate, register and the registry's re-scoring):
  encoder/               final encoder, HF format (VideoEncoder.from_pretrained)
  predictor.safetensors  final predictor; its dims as JSON in the one metadata key `predictor`
  config.json            the resolved run config (train, model, data, provenance)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models import Predictor, VideoEncoder
from models.world_model import WorldModel
from surgwm.io import file_sha256, fingerprint, read_json

MODEL_FILES = ("encoder/config.json", "encoder/model.safetensors", "predictor.safetensors", "config.json")


class RunNotFinished(RuntimeError):
    """The run's final model files are missing: its train stage did not complete."""


@dataclass
class TrainedRun:
    encoder: VideoEncoder          # eval mode
    predictor: Predictor           # eval mode
    config: dict[str, Any]         # config.json
    context_frames: int
    weights_sha256: str            # one hash over the encoder and predictor files


def save_models(out_dir: Path, encoder: VideoEncoder, predictor: Predictor, context_frames: int) -> None:
    """Final encoder (HF dir) and predictor (safetensors), each replaced atomically."""
    tmp = out_dir / f".encoder.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    encoder.save_pretrained(tmp)
    shutil.rmtree(out_dir / "encoder", ignore_errors=True)
    os.replace(tmp, out_dir / "encoder")
    # one metadata key: safetensors writes a metadata map in arbitrary order, and the file must be reproducible
    meta = {"predictor": json.dumps({"enc_dim": predictor.enc_dim, "dim": predictor.dim,
                                     "depth": len(predictor.blocks), "heads": predictor.heads,
                                     "context_frames": context_frames}, sort_keys=True)}
    ptmp = out_dir / f".predictor.safetensors.tmp{os.getpid()}"
    save_file({k: v.detach().contiguous().cpu() for k, v in predictor.state_dict().items()}, ptmp, meta)
    os.replace(ptmp, out_dir / "predictor.safetensors")


def load_predictor(path: Path) -> tuple[Predictor, dict[str, Any]]:
    """(predictor in eval mode, its dims and context_frames from the file's metadata)."""
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {})["predictor"])
    pred = Predictor(meta["enc_dim"], meta["dim"], meta["depth"], meta["heads"])
    pred.load_state_dict(load_file(str(path)))
    return pred.eval(), meta


def weights_sha256(run_dir: Path) -> str:
    """One hash for a trained run's weights: the encoder file and the predictor file."""
    run_dir = Path(run_dir)
    return fingerprint(file_sha256(run_dir / "encoder" / "model.safetensors"),
                       file_sha256(run_dir / "predictor.safetensors"))


def load_run(run_dir: Path, name: str | None = None) -> TrainedRun:
    """The finished run in `run_dir`; RunNotFinished names the missing files and the command that makes them."""
    run_dir = Path(run_dir)
    name = name or run_dir.name
    missing = [str(run_dir / f) for f in MODEL_FILES if not (run_dir / f).is_file()]
    if missing:
        raise RunNotFinished(f"run '{name}' has no finished model ({', '.join(missing)} missing): its train stage "
                             f"did not complete; run `dvc repro train@{name}` (or `python -m tasks.train {name}`)")
    encoder = VideoEncoder.from_pretrained(run_dir / "encoder", local_files_only=True, use_safetensors=True)
    predictor, meta = load_predictor(run_dir / "predictor.safetensors")
    return TrainedRun(encoder.eval(), predictor, read_json(run_dir / "config.json") or {}, meta["context_frames"],
                      weights_sha256(run_dir))


def world_model(run: TrainedRun, clip_frames: int, size: int) -> WorldModel:
    """The module the registry stores: uint8 clip -> embeddings + predicted future tokens."""
    return WorldModel(run.encoder, run.predictor, run.context_frames, clip_frames, size).eval()
