"""DVC stage `register`: log every run to MLflow, register the best world model ON VALIDATION, gate the champion.

    python -m tasks.register [--force-champion]

surgwm/tracking/registry.py says how (selection and gate never read test scores; the champion moves only beyond
the validation noise; each version carries a model card). Writes reports/register.json (run ids, version,
aliases, the decision, the card). An unreachable tracking store fails the stage naming the URI; nothing is lost
(metrics/ stays) and a re-run logs all.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from surgwm.io import write_json
from surgwm.params import DEFAULT_PARAMS, ParamsError, load_params
from surgwm.paths import REGISTER_RECORD as RECORD
from surgwm.tracking.client import TrackingUnavailable, recorded_uri
from surgwm.tracking.client import tracking_uri as default_tracking_uri
from surgwm.tracking.registry import RegisterError, register


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.register", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(DEFAULT_PARAMS))
    ap.add_argument("--force-champion", action="store_true",
                    help="make the challenger champion even when it does not win (logged as forced)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        register(load_params(args.params), force_champion=args.force_champion)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (RegisterError, TrackingUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        # the report says why nothing was logged; the metrics stay in metrics/*.json for the next `register`
        write_json(RECORD, {"status": "failed", "error": str(err), "tracking_uri": recorded_uri(default_tracking_uri()),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
