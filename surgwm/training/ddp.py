"""Multi-process data parallelism: relaunch under torchrun, set up the process group, gather across ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch(devices: int, argv: list[str]) -> int:
    """Run `python -m torch.distributed.run --nproc_per_node=devices <argv>`; returns its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}", *argv]
    print("relaunching under torchrun:", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def setup(device_type: str) -> Dist:
    """Join the process group torchrun describes (nccl on GPU, gloo on CPU); a no-op outside torchrun."""
    if not under_torchrun():
        return Dist()
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if device_type == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(rank, world, local)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradient over ranks and returns each rank its own slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.lo, ctx.n = dist.get_rank() * x.shape[0], x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.lo:ctx.lo + ctx.n]


def gather_with_grad(x: Tensor, d: Dist) -> Tensor:
    """Concatenate every rank's `x` (same shape everywhere) along dim 0; gradients flow back to each rank's slice.

    Every rank then computes the same global loss; DDP's gradient averaging over ranks makes the result the
    gradient of that global loss, as a single process with the whole batch would get."""
    if not d.enabled:
        return x
    if not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(d.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)
    return _GatherWithGrad.apply(x)


def sum_across(values: dict[str, float], d: Dist) -> dict[str, float]:
    """Sum scalar metrics over ranks (float64)."""
    if not d.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def mean_across(values: dict[str, float], d: Dist) -> dict[str, float]:
    """Average scalar metrics over ranks."""
    return {k: v / d.world for k, v in sum_across(values, d).items()}


def same_everywhere(digest: str, d: Dist) -> bool:
    """True when every rank passes the same string (e.g. a hash of its parameters)."""
    if not d.enabled:
        return True
    out: list[str | None] = [None] * d.world
    dist.all_gather_object(out, digest)
    return len(set(out)) == 1
