"""DVC stage `baseline@<name>`: a reference evaluated beside the trained runs, with the same split and probes.

    python -m tasks.baseline untrained_encoder|raw_pixels [--no-progress]

`untrained_encoder`: the pretrained encoder's architecture, randomly initialised; `raw_pixels`: no encoder, pooled
pixels. The report then says whether pretraining helped on this data instead of assuming it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from surgwm.evaluation.evaluate import run_stage
from surgwm.params import BASELINE_NAMES, DEFAULT_PARAMS


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.baseline", description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=BASELINE_NAMES, help="a baseline of evaluate.baselines")
    ap.add_argument("--params", default=str(DEFAULT_PARAMS))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    return run_stage(args.name, args.params, "baseline", progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
