"""What the pipeline measured for each name (a run of `train.methods` or a baseline), read back from metrics/.

`register` logs these records to MLflow and `report` compares them; both read them through `collect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surgwm.failures import read_failure
from surgwm.io import read_json
from surgwm.params import Params
from surgwm.paths import METRICS, TRAIN


@dataclass
class Record:
    """Everything the pipeline measured for one name (a run of train.methods or a baseline)."""

    name: str
    kind: str                               # method | baseline
    status: str                             # ok | failed | missing
    error: str | None
    evaluate: dict[str, Any] | None
    train: dict[str, Any] | None
    history: list[dict[str, Any]] | None
    config: dict[str, Any] | None


def collect(params: Params, metrics_dir: Path = METRICS, train_root: Path = TRAIN) -> list[Record]:
    """Methods then baselines; a failure record (metrics/failures/, by the stage or the flow) wins over older
    metrics."""
    out = []
    for name in [*params.train.methods, *params.evaluate.baselines]:
        kind = "method" if name in params.train.methods else "baseline"
        ev = read_json(Path(metrics_dir) / f"evaluate_{name}.json")
        fails = [read_failure(stage, name, metrics_dir) for stage in ("train", "evaluate", "baseline")]
        fail = next((f for f in fails if f), None)
        if fail:
            status, error = "failed", f"{fail.get('stage', '?')}: {fail.get('error', 'no reason recorded')}"
        elif ev is None:
            status, error = "missing", (f"{Path(metrics_dir) / f'evaluate_{name}.json'} not found: run "
                                        f"`dvc repro evaluate@{name}` (or `python -m tasks.evaluate {name}`)")
        elif ev.get("status") != "ok":
            status, error = "failed", f"evaluate: {ev.get('error', 'no reason recorded')}"
        else:
            status, error = "ok", None
        train = history = config = None
        if kind == "method":
            train = read_json(Path(metrics_dir) / f"train_{name}.json")
            history = read_json(Path(metrics_dir) / f"train_{name}_history.json")
            config = read_json(Path(train_root) / name / "config.json")
        out.append(Record(name, kind, status, error, ev, train, history, config))
    return out
