"""DVC stage `evaluate@<run>`: frozen-encoder probes for one trained run (surgwm/evaluation/evaluate.py).

    python -m tasks.evaluate <run> [--no-progress]

Writes metrics/evaluate_<run>.json (test metrics, the `validation` block, sizes), metrics/evaluate_<run>_efficiency.json
and data/evaluate/<run>/ (outputs.npz, confusion matrices, the split; docs/evaluation.md). A run whose training did
not finish gets {"status": "failed"} and exit status 1; metrics/failures/ says why.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from surgwm.evaluation.evaluate import run_stage
from surgwm.params import DEFAULT_PARAMS


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("name", help="a key of train.methods")
    ap.add_argument("--params", default=str(DEFAULT_PARAMS))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    return run_stage(args.name, args.params, "method", progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
