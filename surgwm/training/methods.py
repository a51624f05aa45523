"""The training methods, one table: what each initialises, trains and uses as its target encoder.

All three share one objective (tasks/train.py): the online encoder sees only the context frames, the predictor
predicts the target encoder's tokens of the future frames (target = the encoder applied to the FULL clip,
future positions kept, no gradient).

  scratch   V-JEPA 2-architecture ViT built from `model.*`, randomly initialised; EMA target encoder.
  frozen    the pretrained encoder from data/weights, frozen (it is also the target); only the predictor learns.
            Its encoder outputs never change, so they are computed once into a feature cache (surgwm/training/features.py).
  finetune  the pretrained encoder, trained too; EMA target encoder (V-JEPA 2 uses momentum 0.999 -> 0.99925).

params.yaml `train.methods` maps a run name to overrides of `train.*`; keys left None take these defaults.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models import Predictor, VideoEncoder, encoder_config
from models.encoder import PATCH, TUBELET
from surgwm.training.meta_checkpoint import WeightsError
from surgwm.params import METHOD_NAMES, DataParams, ModelParams, Params, TrainParams


@dataclass(frozen=True)
class Method:
    name: str
    pretrained: bool                # encoder starts from data/weights (else random, from model.*)
    train_encoder: bool             # encoder gets gradients (else frozen, and it is its own target)
    lr: float                       # default peak LR
    ema: tuple[float, float] | None  # default target-encoder momentum (start, end); None: no EMA copy
    doc: str


METHODS: dict[str, Method] = {
    "scratch": Method("scratch", pretrained=False, train_encoder=True, lr=5e-4, ema=(0.99, 0.999),
                      doc="random V-JEPA 2 ViT from model.*, trained end to end; EMA target"),
    "frozen": Method("frozen", pretrained=True, train_encoder=False, lr=2e-4, ema=None,
                     doc="pretrained encoder frozen; only the predictor learns"),
    "finetune": Method("finetune", pretrained=True, train_encoder=True, lr=1e-4, ema=(0.999, 0.99925),
                       doc="pretrained encoder trained too; EMA target"),
}
assert tuple(METHODS) == METHOD_NAMES, "surgwm/params.py METHOD_NAMES must list the methods of this table"


class ConfigError(ValueError):
    """The resolved run cannot work (the message names the key to change)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on, resolved: saved as config.json and hashed into the checkpoint fingerprint."""

    name: str
    method: Method
    train: TrainParams      # run overrides applied, lr / EMA filled from the method
    model: ModelParams
    data: DataParams

    @property
    def ema(self) -> tuple[float, float] | None:
        if self.method.ema is None:
            return None
        return (self.train.ema_momentum, self.train.ema_momentum_end)  # type: ignore[return-value]

    @property
    def uses_feature_cache(self) -> bool:
        return not self.method.train_encoder and self.train.feature_cache

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method.name,
            "train": self.train.model_dump(mode="json", exclude={"methods"}),
            "model": self.model.model_dump(mode="json"),
            "data": self.data.model_dump(mode="json", include={"fps", "size", "clip_frames", "clip_stride"}),
        }


def resolve(params: Params, name: str) -> RunConfig:
    """Run `name` of train.methods with its overrides and the method's defaults applied."""
    if name not in params.train.methods:
        raise ConfigError(f"no run '{name}' in train.methods (have: {', '.join(params.train.methods)})")
    try:
        train = params.train.resolve(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    method = METHODS[train.method_of(name)]
    fill: dict[str, Any] = {}
    if train.lr is None:
        fill["lr"] = method.lr
    if method.ema is not None:
        start = train.ema_momentum if train.ema_momentum is not None else method.ema[0]
        end = train.ema_momentum_end if train.ema_momentum_end is not None else max(start, method.ema[1])
        fill.update(ema_momentum=start, ema_momentum_end=end)
    cfg = RunConfig(name, method, train.model_copy(update=fill), params.model, params.data)
    return cfg


def weights_info(weights_dir: Path) -> dict[str, Any]:
    """weights.json of the weights stage (has `sha256` of the encoder file)."""
    meta = weights_dir / "weights.json"
    if not meta.is_file():
        raise WeightsError(f"{meta} not found: the pretrained methods need the `weights` stage "
                           "(`dvc repro weights` or `python -m tasks.weights`) to run first")
    return json.loads(meta.read_text())


def load_pretrained(weights_dir: Path) -> VideoEncoder:
    """The pretrained encoder, or a WeightsError that says what is wrong with the files."""
    try:
        enc = VideoEncoder.from_pretrained(weights_dir, local_files_only=True, use_safetensors=True)
    except Exception as err:  # noqa: BLE001 - transformers raises many types for a foreign file
        raise WeightsError(f"{weights_dir} does not hold a V-JEPA 2 encoder matching its config.json "
                           f"(wrong architecture or damaged file): {type(err).__name__}: {err}. "
                           "Re-run the weights stage or fix weights.model.") from None
    if enc.patch != PATCH or enc.tubelet != TUBELET:
        raise WeightsError(f"{weights_dir}: encoder has patch {enc.patch} / tubelet {enc.tubelet}; this pipeline's "
                           f"clips are cut for patch {PATCH} / tubelet {TUBELET} (V-JEPA 2)")
    return enc


def build_encoder(cfg: RunConfig, weights_dir: Path) -> VideoEncoder:
    if cfg.method.pretrained:
        return load_pretrained(weights_dir)
    m, d = cfg.model, cfg.data
    try:
        return VideoEncoder.from_config(encoder_config(m.encoder_dim, m.encoder_depth, m.encoder_heads,
                                                       d.size, d.clip_frames))
    except ValueError as err:
        raise ConfigError(f"model.encoder_*: {err}") from None


def architecture(encoder: VideoEncoder, cfg: RunConfig) -> dict[str, Any]:
    """The shapes a checkpoint's tensors depend on; resuming with different ones is refused."""
    c = encoder.config
    return {
        "method": cfg.method.name,
        "encoder_dim": int(c.hidden_size), "encoder_depth": int(c.num_hidden_layers),
        "encoder_heads": int(c.num_attention_heads), "encoder_mlp_ratio": float(c.mlp_ratio),
        "patch": encoder.patch, "tubelet": encoder.tubelet,
        "predictor_dim": cfg.model.predictor_dim, "predictor_depth": cfg.model.predictor_depth,
        "predictor_heads": cfg.model.predictor_heads,
    }


class Student(nn.Module):
    """What the optimizer trains (and DDP wraps): the online encoder when it learns, and the predictor.

    Input: context pixels (B, Tc, C, H, W) when the encoder learns, else context tokens (B, Nc, D)."""

    def __init__(self, encoder: VideoEncoder | None, predictor: Predictor):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor

    def forward(self, context: Tensor, grid: tuple[int, int, int], context_t: int) -> Tensor:
        tokens = self.encoder(context) if self.encoder is not None else context  # (B, Nc, D)
        return self.predictor(tokens, grid, context_t)  # (B, Nf, D)


@dataclass
class Models:
    encoder: VideoEncoder        # online encoder (frozen for `frozen`)
    target: VideoEncoder         # EMA copy, or the frozen encoder itself
    predictor: Predictor
    student: Student

    def state(self) -> dict[str, dict[str, Tensor]]:
        """What training changes (a frozen encoder is left out: the weights' sha256 is in the fingerprint)."""
        out = {"predictor": self.predictor.state_dict()}
        if self.student.encoder is not None:
            out |= {"encoder": self.encoder.state_dict(), "target": self.target.state_dict()}
        return out

    def load_state(self, state: dict[str, dict[str, Tensor]]) -> None:
        self.predictor.load_state_dict(state["predictor"])
        if self.student.encoder is not None:
            self.encoder.load_state_dict(state["encoder"])
            self.target.load_state_dict(state["target"])


def build(cfg: RunConfig, weights_dir: Path, device: torch.device) -> Models:
    """Seeded construction: the same config gives the same initial weights in every process."""
    torch.manual_seed(cfg.train.seed)
    encoder = build_encoder(cfg, weights_dir).to(device)
    m = cfg.model
    predictor = Predictor(encoder.dim, m.predictor_dim, m.predictor_depth, m.predictor_heads).to(device)
    if cfg.method.train_encoder:
        target = copy.deepcopy(encoder)
        student = Student(encoder, predictor)
    else:
        target = encoder
        student = Student(None, predictor)
    target.eval()
    for p in target.parameters():
        p.requires_grad_(False)
    return Models(encoder, target, predictor, student)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, in place."""
    t = [p for p in target.parameters()]
    o = [p.detach() for p in online.parameters()]
    torch._foreach_lerp_(t, o, 1.0 - momentum)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on 1-D params (biases, norm scales)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
