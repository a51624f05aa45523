"""What evaluate leaves in data/evaluate/<name>/ besides the metrics: outputs.npz, confusion matrices, the split.

outputs.npz (np.savez_compressed, no pickle; docs/evaluation.md, the contract with register/report): per task T
and split S in {train, val, test}: `T/S/case`, `T/S/video`, `T/S/start`, `T/S/true` (+ `T/S/current`, the clip's own
step, for anticipation tasks); val and test also `T/S/score` (R, n, C) per probe seed (time_to_next: `T/S/pred`
(R, n) seconds). The official step metric's frames: `step_official/S/{video,case,time,true,pred}`. Class names in
`step_classes`, `motion_classes`. A task the data cannot score is absent.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from surgwm.evaluation import metrics as M
from surgwm.evaluation.charts import plot_confusion
from surgwm.evaluation.scoring import Scored
from surgwm.evaluation.split import EvalSplit
from surgwm.io import write_json

# (task in outputs.npz, bank, task in the bank)
TASKS = (("step", "main", "step"), ("motion", "main", "motion"), ("event", "main", "event"),
         ("anticipation", "main", "anticipation"), ("anticipation_wm", "wm", "anticipation_wm"),
         ("time_to_next", "main", "time_to_next"))
CURRENT = ("anticipation", "anticipation_wm", "time_to_next")


def output_arrays(sc: Scored) -> dict[str, np.ndarray]:
    """Every array of outputs.npz, keyed as the contract names them."""
    t = sc.table
    labels = {"step": t.step, "motion": t.motion, "event": t.event, "anticipation": t.next_step,
              "anticipation_wm": t.next_step, "time_to_next": t.time_to_next}
    out: dict[str, np.ndarray] = {"step_classes": np.array(t.step_classes, dtype=str),
                                  "motion_classes": np.array(t.motion_classes, dtype=str)}
    for name, bank, task in TASKS:
        if (bank, task) not in sc.test:
            continue
        y = labels[name]
        for split, rows in (("train", sc.train_rows), ("val", sc.val_rows), ("test", sc.test_rows)):
            sel = np.flatnonzero(~np.isnan(y[rows]) if name == "time_to_next" else y[rows] >= 0)
            r = rows[sel]
            p = f"{name}/{split}/"
            out |= {p + "case": t.case[r].astype(str), p + "video": t.video[r].astype(str),
                    p + "start": t.start[r].astype(np.int64),
                    p + "true": y[r].astype(np.float64 if name == "time_to_next" else np.int64)}
            if name in CURRENT:
                out[p + "current"] = t.step[r].astype(np.int64)
            if split != "train":
                s = sc.scores(split)[(bank, task)][:, sel]                       # (R, n, C)
                if name == "time_to_next":
                    out[p + "pred"] = s[..., 0].astype(np.float32)
                else:
                    out[p + "score"] = s.astype(np.float32)
    for split, pred in sc.official.items():
        f = sc.frames[split]
        if f is None:
            continue
        p = f"step_official/{split}/"
        out |= {p + "video": f.video.astype(str), p + "case": f.case.astype(str), p + "time": f.time,
                p + "true": f.true.astype(np.int64), p + "pred": pred.astype(np.int64)}
    return out


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed under a temporary name, then renamed: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(name: str, result: dict[str, Any], sc: Scored, split: EvalSplit, out_dir: Path) -> None:
    """outputs.npz, confusion matrices of step and motion on the test cases (summed over seeds), split.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = output_arrays(sc)
    save_npz(out_dir / "outputs.npz", arrays)
    for task, classes in (("step", sc.table.step_classes), ("motion", sc.table.motion_classes)):
        key = f"{task}/test/score"
        if key in arrays:
            y, s = arrays[f"{task}/test/true"], arrays[key]
            cm = sum(M.confusion_matrix(y, s[r].argmax(1), len(classes)) for r in range(len(s)))
            plot_confusion(cm, classes, f"{name}: {task} (test cases {', '.join(split.test)}; "
                                        f"{len(s)} probe seed{'s' if len(s) > 1 else ''})",
                           out_dir / f"{task}_confusion.png")
    write_json(out_dir / "split.json", result["split"])
