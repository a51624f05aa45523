"""decode.engine 'dask': the decode stage fans its videos out as Prefect tasks on a Dask cluster (prefect-dask).

DVC stays in charge: the stage command is still `python -m tasks.decode`; only the loop over videos changes
(tasks/decode.py picks the mapper). Each task calls the same `decode_video` as the local thread pool and writes
straight into the cache folder, so every Dask worker must see the videos and `data/cache` at the same paths (one
machine, or a shared filesystem); only the small per-video Result travels back. The stage process then writes the
cache manifest exactly as the local engine does, so `dvc repro` and the flow leave the same outputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from surgwm import prefect_defaults

prefect_defaults.apply()  # before Prefect is imported

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.logging.handlers import APILogWorker  # noqa: E402
from prefect.server.api.server import SubprocessASGIServer  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402
from prefect_dask import DaskTaskRunner  # noqa: E402

from surgwm.data.decode import Result, decode_video  # noqa: E402
from surgwm.data.manifest import VideoEntry  # noqa: E402
from surgwm.params import Params  # noqa: E402

_finished: list[Callable[[int, Result], None]] = []   # the caller's per-video callback (not a flow parameter)


def _worker() -> str:
    """Which Dask worker ran the task (shown in the log and returned, so tests can see the fan-out)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:
        return "local"


@task(name="decode-video", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def decode_one(entry: VideoEntry, params: Params, cache_dir: str) -> tuple[Result, str]:
    """One video on whichever worker Dask picks; a lost worker makes Prefect retry it elsewhere."""
    return decode_video(entry, params, Path(cache_dir)), _worker()


@flow(name="decode-fanout", log_prints=True)
def decode_fanout(entries: list[VideoEntry], params: Params, cache_dir: str) -> dict[str, str]:
    """Submit every video at once; report each as it finishes. Returns video_id -> worker address."""
    logger = get_run_logger()
    futures = {decode_one.with_options(task_run_name=f"decode {e.video_id}").submit(e, params, cache_dir): i
               for i, e in enumerate(entries)}
    where: dict[str, str] = {}
    for fut in as_completed(list(futures)):
        result, worker = fut.result()
        where[result.video_id] = worker
        logger.info("%s: %s on %s", result.video_id, result.status, worker)
        for callback in _finished:
            callback(futures[fut], result)
    return where


def task_runner(params: Params) -> DaskTaskRunner:
    """A running cluster at decode.scheduler_address, else a temporary local one of decode.workers processes."""
    address = params.decode.scheduler_address
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": params.decode.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def dask_map(todo: list[tuple[int, VideoEntry]], params: Params, cache_dir: Path,
             finished: Callable[[int, Result], None]) -> dict[str, str]:
    """surgwm.data.decode Mapper for decode.engine 'dask'; returns video_id -> worker address."""
    if not todo:
        return {}
    logging.getLogger("httpx").setLevel(logging.WARNING)   # the stage logs at INFO; one line per API call is noise
    index = [i for i, _ in todo]
    _finished.append(lambda k, r: finished(index[k], r))
    try:
        with _one_api():
            run = decode_fanout.with_options(task_runner=task_runner(params))
            return run([e for _, e in todo], params, str(Path(cache_dir).resolve()))
    finally:
        _finished.pop()


@contextmanager
def _one_api() -> Iterator[None]:
    """Without PREFECT_API_URL (plain `dvc repro`) start ONE temporary server and hand its URL to the Dask workers
    through the environment; otherwise each worker process would start its own on the same SQLite database."""
    if PREFECT_API_URL.value():
        yield
        return
    server = SubprocessASGIServer()
    server.start(timeout=120)
    os.environ["PREFECT_API_URL"] = server.api_url      # inherited by the local cluster's worker processes
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield
    finally:
        APILogWorker.drain_all(timeout=5)               # send the run's logs before the server goes
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()
