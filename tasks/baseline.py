"""DVC stage `baseline@<name>`: a reference evaluated beside the trained runs, with the same split and probes.

    python -m tasks.baseline untrained_encoder|raw_pixels [--no-progress]

`untrained_encoder`: the pretrained encoder's architecture, randomly initialised; `raw_pixels`: no encoder, pooled
pixels. The report then says whether pretraining helped on this data instead of assuming it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from surgwm.device import DeviceError
from surgwm.evaluation.errors import EvaluateError
from surgwm.evaluation.evaluate import evaluate
from surgwm.params import BASELINE_NAMES, DEFAULT_PARAMS, ParamsError, load_params


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.baseline", description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=BASELINE_NAMES, help="a baseline of evaluate.baselines")
    ap.add_argument("--params", default=str(DEFAULT_PARAMS))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        evaluate(args.name, load_params(args.params), progress=not args.no_progress)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (EvaluateError, DeviceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
