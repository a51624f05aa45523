"""DVC stage `report`: reports/comparison.md, reports/comparison.json and PNG charts from measured outputs only.

    python -m tasks.report [--no-mlflow]

surgwm/evaluation/report.py renders what surgwm/evaluation/compare.py computes (95 % case-bootstrap intervals,
reference rules, the winner rule, one sentence per claim); docs/evaluation_report.md says how to read it. The
stage also attaches both files to the best MLflow run when the store answers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from surgwm.evaluation.report import attach_to_mlflow, write_report
from surgwm.io import read_json
from surgwm.params import DEFAULT_PARAMS, ParamsError, load_params
from surgwm.paths import REGISTER_RECORD as RECORD

log = logging.getLogger("tasks.report")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.report", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(DEFAULT_PARAMS))
    ap.add_argument("--no-mlflow", action="store_true", help="do not attach the report to the MLflow run")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(args.params)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = write_report(params)
    print(path.read_text())
    if not args.no_mlflow:
        rid = attach_to_mlflow(path.parent, read_json(RECORD))
        if rid:
            log.info("report attached to MLflow run %s (artifacts: report/)", rid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
