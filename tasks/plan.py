"""The plan before a run (not a DVC stage): sizes, clip counts and measured-throughput times for the current params.

    python -m tasks.plan [--params FILE] [--manifest PATH] [--surgvu] [--set KEY=VALUE ...]
    make plan

Reads the ingested manifest (data/ingest/manifest.json; before ingest, the synthetic demo's params), or with
--surgvu a manifest of SurgVU 2024's shape (no data needed). Writes nothing. docs/plan.md explains the output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from surgwm.params import DEFAULT_PARAMS, ParamsError, load_params, parse_overrides
from surgwm.paths import CACHE, MANIFEST, METRICS, TRAIN
from surgwm.plan import PlanError, load_manifest, make_plan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.plan", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default params.yaml)")
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="ingested manifest to plan for")
    ap.add_argument("--surgvu", action="store_true", help="plan for SurgVU 2024 (155 cases, 840 h) without the data")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param (repeatable)")
    ap.add_argument("--cache", type=Path, default=CACHE, help="decode cache whose size on disk is shown if present")
    ap.add_argument("--metrics", type=Path, default=METRICS, help="this workspace's measured train/evaluate metrics")
    ap.add_argument("--runs", type=Path, default=TRAIN, help="this workspace's trained runs (their config.json)")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params, parse_overrides(args.set), check_paths=not args.surgvu)
        manifest, origin = load_manifest(params, args.manifest, args.surgvu)
    except (ParamsError, PlanError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"params: {args.params}" + (f" with {', '.join(args.set)}" if args.set else ""))
    cache = None if args.surgvu else args.cache          # this workspace's cache is not SurgVU's
    print(make_plan(params, manifest, origin, cache, args.metrics, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
