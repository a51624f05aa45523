"""Two trainings never share one GPU: GPU stages hold a Prefect global concurrency slot per GPU machine.

The limit is named per host (`gpu-<hostname>`, limit 1) because Prefect's limits are server-wide while a GPU
belongs to one machine; a worker that owns only some GPUs of a host (CUDA_VISIBLE_DEVICES=0, =1, ...) sets its own
name with SURGWM_GPU_LIMIT. A multi-GPU training (train.devices > 1, torchrun) still takes the one slot: it uses
every GPU the worker can see.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GPU_STAGES = ("train", "evaluate", "baseline")   # stage groups (before '@') that may put work on a GPU
ENV_NAME = "SURGWM_GPU_LIMIT"


def limit_name() -> str:
    """This worker's GPU limit: SURGWM_GPU_LIMIT, else one per host."""
    return os.environ.get(ENV_NAME) or "gpu-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname())


def ensure_limit(name: str | None = None, limit: int = 1) -> str:
    """Create the global concurrency limit if it is missing (an existing one keeps the limit an admin set)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = name or limit_name()
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            except ObjectAlreadyExists:   # another worker created it meanwhile
                pass
    return name


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


@contextmanager
def gpu_slot(stage: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Around a GPU stage inside a Prefect run: wait for this machine's GPU slot; other stages pass straight through."""
    if stage.split("@")[0] not in GPU_STAGES or not _in_prefect_run():
        yield
        return
    from prefect.concurrency.sync import concurrency

    name = ensure_limit()
    log(f"{stage}: waiting for GPU slot '{name}' (global concurrency limit; one GPU stage at a time)")
    # strict: a missing limit is an error, never a silent pass; a transient lease-renewal hiccup must not kill
    # an hours-long training, though.
    with concurrency(name, occupy=1, strict=True, raise_on_lease_renewal_failure=False):
        log(f"{stage}: holds GPU slot '{name}'")
        yield
