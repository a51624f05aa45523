"""DVC stage `evaluate@<run>`: frozen-encoder probes for one trained run (surgwm/evaluation/evaluate.py).

    python -m tasks.evaluate <run> [--no-progress]

Writes metrics/evaluate_<run>.json (test metrics, the `validation` block, sizes), metrics/evaluate_<run>_efficiency.json
and data/evaluate/<run>/ (outputs.npz, confusion matrices, the split; docs/evaluation.md). A run whose training did
not finish gets {"status": "failed"} and exit status 1; metrics/failures/ says why.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from surgwm.device import DeviceError
from surgwm.evaluation.errors import EvaluateError
from surgwm.evaluation.evaluate import evaluate
from surgwm.params import DEFAULT_PARAMS, ParamsError, load_params


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("name", help="a key of train.methods")
    ap.add_argument("--params", default=str(DEFAULT_PARAMS))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(args.params)
        if args.name not in params.train.methods:
            raise EvaluateError(f"'{args.name}' is not a run of train.methods ({', '.join(params.train.methods)}); "
                                "baselines are evaluated by `python -m tasks.baseline <name>`")
        evaluate(args.name, params, progress=not args.no_progress)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (EvaluateError, DeviceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
