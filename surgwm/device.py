"""Which torch device a stage runs on, and how reports name it (the cost rows match prices on this name)."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

if TYPE_CHECKING:          # torch is imported where it is used: the report and the plan need only same_device
    import torch


class DeviceError(RuntimeError):
    """The configured device is not there; the message names the key to change."""


def resolve_device(want: str, key: str, local_rank: int = 0) -> torch.device:
    """`want` is auto | cpu | cuda (the value of params key `key`); auto takes a GPU when there is one."""
    import torch

    if want == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{key} is 'cuda' but no CUDA device is available (set {key}: auto)")
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"process {local_rank} needs GPU {local_rank} but this machine has "
                              f"{torch.cuda.device_count()} GPU(s); lower train.devices")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    """The GPU model, or the CPU with its thread count: what the cost rows and MLflow tags name."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def same_device(device: str, price_name: str) -> bool:
    """A price applies to the device it names exactly (case and spacing aside): 'RTX 3090' is not 'RTX 4090', and
    a CPU time priced as an A100 hour says nothing about an A100."""
    def norm(s: str) -> str:
        return " ".join(s.split()).casefold()

    return norm(device) == norm(price_name)
