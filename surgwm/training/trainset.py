"""Training data: clips of the decode cache, split into train/val by case, shuffled per epoch; the stage's errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from surgwm.training import ddp
from surgwm.data.clips import Clip, ClipReader, build_clips, open_clips
from surgwm.training.features import FeatureStore, clips_signature
from surgwm.data.manifest import Manifest, read_manifest
from surgwm.data.split import Split, split_by_case, subsample_cases
from surgwm.training.methods import RunConfig


class TrainError(RuntimeError):
    """The run cannot go on; the message says why and which knob to turn."""


class NonFiniteLoss(TrainError):
    pass


class OutOfMemory(TrainError):
    pass


class EpochSampler:
    """A fresh shuffle of the train clips each epoch from its own generator (its state is checkpointed)."""

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int):
        self.indices = list(indices)
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm: Tensor | None = None
        self.epoch = -1

    def __len__(self) -> int:
        return len(self.indices) // self.batch_size

    def start_epoch(self, epoch: int) -> None:
        self.perm = torch.randperm(len(self.indices), generator=self.gen)
        self.epoch = epoch

    def batch(self, i: int, d: ddp.Dist) -> list[int]:
        """This rank's share of global batch i."""
        assert self.perm is not None, "start_epoch first"
        per = self.batch_size // d.world
        lo = i * self.batch_size + d.rank * per
        return [self.indices[j] for j in self.perm[lo:lo + per].tolist()]

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.epoch = state["perm"], state["epoch"]


@dataclass
class Data:
    clips: list[Clip]
    split: Split
    cache: ClipReader
    signature: str                      # clip list + video content: part of the checkpoint fingerprint
    store: FeatureStore | None = None   # frozen + feature_cache: cached tokens, indexed like `clips`
    feature_cache: str = "not used"     # cached | off: <why> (frozen runs; recorded in the run's metrics)


def load_data(cfg: RunConfig, cache_dir: Path, manifest_path: Path, world: int) -> Data:
    """Clips and the case split, with the errors a user can act on."""
    if not manifest_path.is_file():
        raise TrainError(f"{manifest_path} not found: run the decode stage first (`dvc repro decode`)")
    manifest: Manifest = read_manifest(manifest_path)
    d, t = cfg.data, cfg.train
    clips = build_clips(manifest, d.clip_frames, d.clip_stride, d.fps)
    if not clips:
        usable = [v for v in manifest.usable() if v.frames]
        raise TrainError(f"no clips: {len(usable)} usable decoded video(s) in {manifest_path}, none with "
                         f">= data.clip_frames ({d.clip_frames}) frames")
    split = subsample_cases(split_by_case(clips, t.val_fraction, t.seed), clips, t.case_fraction, t.seed)
    if t.batch_size % world:
        raise TrainError(f"train.batch_size ({t.batch_size}) must be divisible by the number of processes ({world})")
    if len(split.train) < t.batch_size:
        raise TrainError(
            f"too few clips for one batch: {len(split.train)} training clips (of {len(clips)}; "
            f"{len(split.val)} from {len(split.val_cases)} case(s) held out for validation) < train.batch_size "
            f"{t.batch_size}. Lower train.batch_size or train.val_fraction, shorten data.clip_stride, or add videos.")
    return Data(clips, split, open_clips(cache_dir, d.clip_frames), clips_signature(manifest, clips))
