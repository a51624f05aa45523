"""DVC stage `decode`: decode every usable video once into the clip cache (surgwm/data/decode.py).

    python -m tasks.decode [--manifest M] [--cache DIR]

Writes data/cache/ (one file per video + manifest.json with frames or a one-line error per video; `decode.store`
picks raw .npy or the h264 clip store); exit 1 only when no video is usable, exit 2 before writing anything when
the cache's estimated size exceeds `storage.budget_gb`. A killed run resumes: finished videos are kept, temp
files are never read.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from surgwm.data.decode import PROGRESS, Mapper, decode, progress_writer, summary, thread_map
from surgwm.params import DEFAULT_PARAMS, Params, load_or_exit
from surgwm.paths import CACHE, MANIFEST
from surgwm.sizes import BudgetError


def engine_mapper(params: Params) -> Mapper:
    """The per-video fan-out for `decode.engine`; both call decode_video, so the cache is the same either way."""
    if params.decode.engine == "dask":
        from surgwm.data.fanout import dask_map   # Prefect + Dask: imported only when asked for

        return dask_map
    return thread_map


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.decode", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="ingest manifest to read")
    ap.add_argument("--cache", type=Path, default=CACHE, help="cache folder (the output manifest goes here)")
    ap.add_argument("--progress", type=Path, default=PROGRESS, help="progress JSON for other processes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    params = load_or_exit(args.params)
    if not args.manifest.is_file():
        print(f"error: no manifest at {args.manifest}: run the ingest stage first", file=sys.stderr)
        return 2
    statuses: dict[str, str] = {}
    try:
        out = decode(params, args.manifest, args.cache, progress_writer(args.progress), statuses, engine_mapper(params))
    except BudgetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(out, statuses))
    usable = out.usable()
    if not usable:
        print(f"error: no video could be used ({len(out.videos)} in the manifest); "
              f"the reason for each is in {args.cache / 'manifest.json'}", file=sys.stderr)
        return 1
    print(f"{len(usable)}/{len(out.videos)} videos cached in {args.cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
