"""DVC stage `train@<run>`: train one run of `train.methods` (surgwm/training/loop.py), resuming from its checkpoint.

    python -m tasks.train frozen [--set train.epochs=3] [--out DIR] [--metrics DIR] ...

Writes data/train/<run>/ (checkpoint, encoder/, predictor.safetensors, config.json, steps.jsonl) and
metrics/train_<run>.json + metrics/train_<run>_history.json. `train.devices > 1` relaunches under torchrun.
A failure is recorded in metrics/failures/ so the report can show it while other runs go on.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from surgwm.device import DeviceError
from surgwm.failures import clear_failure, record_failure
from surgwm.params import DEFAULT_PARAMS, ParamsError, load_params, parse_overrides
from surgwm.paths import CACHE, DECODED, FEATURES, METRICS, WEIGHTS
from surgwm.training import ddp
from surgwm.training.checkpoint import ArchitectureMismatch
from surgwm.training.loop import train
from surgwm.training.meta_checkpoint import WeightsError
from surgwm.training.methods import ConfigError, resolve
from surgwm.training.trainset import TrainError


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m tasks.train", description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a key of train.methods in params.yaml (scratch, frozen, finetune, ...)")
    ap.add_argument("--params", default=str(DEFAULT_PARAMS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param (repeatable)")
    ap.add_argument("--cache", default=str(CACHE), help="decode cache dir")
    ap.add_argument("--manifest", default=str(DECODED), help="decoded manifest")
    ap.add_argument("--weights", default=str(WEIGHTS), help="pretrained encoder dir (weights stage)")
    ap.add_argument("--out", default=None, help="run dir (default data/train/<run>)")
    ap.add_argument("--metrics", default=str(METRICS), help="dir for train_<run>.json and _history.json")
    ap.add_argument("--features", default=str(FEATURES), help="frozen feature cache root")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(args.params, parse_overrides(args.set))
        cfg = resolve(params, args.run)
    except (ParamsError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if cfg.train.devices > 1 and not ddp.under_torchrun():
        return ddp.relaunch(cfg.train.devices, ["-m", "tasks.train", *argv])
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        train(args.run, params, cache_dir=Path(args.cache), manifest_path=Path(args.manifest),
              weights_dir=Path(args.weights), out_dir=Path(args.out) if args.out else None,
              metrics_dir=Path(args.metrics), features_dir=Path(args.features), progress=not args.no_progress)
    except (TrainError, ConfigError, WeightsError, ArchitectureMismatch, DeviceError) as err:
        print(f"error: {err}", file=sys.stderr)
        if rank == 0:  # the report shows the run as failed, with this reason
            record_failure("train", args.run, str(err), Path(args.metrics))
        return 1
    if rank == 0:
        clear_failure("train", args.run, Path(args.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
