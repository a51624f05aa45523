"""DVC stage `weights`: the pretrained V-JEPA 2 encoder named by `weights.model`, in one format (data/weights/).

    python -m tasks.weights [--out DIR]

`weights.model`: embedded | a hub id | an HF-format folder | Meta's .pt (surgwm/training/weights.py says how
each is read). Writes the encoder (config.json + model.safetensors) and weights.json (source, sha256).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from surgwm.params import DEFAULT_PARAMS, load_or_exit
from surgwm.paths import WEIGHTS
from surgwm.training.meta_checkpoint import WeightsError
from surgwm.training.weights import prepare_weights


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.weights", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    ap.add_argument("--out", type=Path, default=WEIGHTS, help="output dir (replaced atomically)")
    args = ap.parse_args(argv)
    params = load_or_exit(args.params)
    try:
        record = prepare_weights(params, args.out)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
