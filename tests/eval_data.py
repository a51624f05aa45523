"""A small labelled decode cache rendered in memory by surgwm/data/synthetic.py (no ffmpeg), and a trained-run dir, for the
evaluate / register / report tests.

- `synthetic_cache(root, seed, cases, seconds, size)`: root/cache/<case>.npy (uint8 (N, S, S, 3) at 4 fps, one video
  per case) and root/cache/manifest.json with the plan's step, motion and event intervals (what `ingest` + `decode`
  would produce from the SurgVU-layout files). Deterministic in its arguments.
- `fake_run(train_root, name, seed)`: data/train/<name>/ as the train stage leaves it (encoder/ in HF format,
  predictor.safetensors with its dims, config.json), tiny and untrained, plus metrics/train_<name>.json and history.
- `eval_params(**evaluate)`: params for SIZE px, CLIP-frame clips and a probe small enough for CPU tests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from surgwm.data.manifest import Interval, Manifest, VideoEntry, write_manifest
from surgwm.params import Params, parse_params
from surgwm.data.synthetic import EVENT_LABEL, MOTION_CLASSES, case_frames, plan_case

SIZE, CLIP, CONTEXT, FPS = 32, 8, 4, 4


def synthetic_cache(root: Path, seed: int = 0, cases: int = 12, seconds: float = 60.0,
                    size: int = SIZE) -> tuple[Path, Path]:
    from surgwm.data.manifest import STEP_CLASSES

    cache = Path(root) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    videos = []
    for c in range(cases):
        plan = plan_case(seed, c, seconds, 1.0)
        frames = case_frames(plan, size, size, FPS)  # (N, S, S, 3)
        np.save(cache / f"{plan.case}.npy", frames)
        videos.append(VideoEntry(
            video_id=plan.case, case=plan.case, path=f"/synthetic/{plan.case}.mp4",
            sha256=hashlib.sha256(frames.tobytes()).hexdigest(), frames=len(frames), fps=FPS,
            steps=[Interval(start=s.start, stop=s.stop, label=STEP_CLASSES[s.style]) for s in plan.steps],
            motion=[Interval(start=s.start, stop=s.stop, label=s.motion) for s in plan.segments],
            events=[Interval(start=e.start, stop=e.stop, label=EVENT_LABEL) for e in plan.events]))
    manifest = cache / "manifest.json"
    write_manifest(Manifest(source="synthetic", root=str(root), motion_classes=list(MOTION_CLASSES),
                            videos=videos), manifest)
    return cache, manifest


def eval_raw(**evaluate: Any) -> dict[str, Any]:
    return {
        "data": {"size": SIZE, "clip_frames": CLIP, "clip_stride": 4, "fps": FPS},
        "model": {"encoder_dim": 32, "encoder_depth": 1, "encoder_heads": 2, "predictor_dim": 24,
                  "predictor_depth": 1, "predictor_heads": 2, "context_frames": CONTEXT},
        "train": {"methods": {"scratch": {}, "frozen": {}}, "val_fraction": 0.25, "batch_size": 8},
        "evaluate": {"probe_dim": 32, "probe_heads": 2, "probe_depth": 0, "probe_epochs": 20,
                     "probe_batch_size": 32, "batch_size": 16, "fractions": [0.5, 1.0], "rollouts": 1,
                     "device": "cpu", **evaluate},
    }


def eval_params(**evaluate: Any) -> Params:
    return parse_params(eval_raw(**evaluate))


def fake_run(train_root: Path, metrics_dir: Path, name: str, seed: int = 0, method: str = "scratch",
             epochs: int = 3, train_time_s: float = 12.5) -> Path:
    """A tiny (untrained) world model in the train stage's output layout, plus its train metrics and history."""
    import torch
    from safetensors.torch import save_file

    from models import Predictor, VideoEncoder, encoder_config

    torch.manual_seed(seed)
    run = Path(train_root) / name
    run.mkdir(parents=True, exist_ok=True)
    VideoEncoder.from_config(encoder_config(32, 1, 2, SIZE, CLIP)).save_pretrained(run / "encoder")
    pred = Predictor(32, 24, 1, 2)
    meta = {"predictor": json.dumps({"enc_dim": 32, "dim": 24, "depth": 1, "heads": 2, "context_frames": CONTEXT},
                                    sort_keys=True)}
    save_file({k: v.contiguous() for k, v in pred.state_dict().items()}, run / "predictor.safetensors", meta)
    config = {"name": name, "method": method, "train": {"temperature": 0.1, "lr": 5e-4, "epochs": epochs},
              "model": {"encoder_dim": 32}, "data": {"size": SIZE}, "device": "cpu"}
    (run / "config.json").write_text(json.dumps(config))
    history = [{"epoch": e, "step": 10 * e, "train_temporal": 1.0 / e, "train_contrastive": 2.0 / e,
                "train_loss": 1.5 / e, "train_acc": 0.1 * e, "val_temporal": 1.1 / e, "val_contrastive": 2.1 / e,
                "val_loss": 1.6 / e, "val_acc": 0.1 * e, "epoch_time_s": train_time_s / epochs}
               for e in range(1, epochs + 1)]
    Path(metrics_dir).mkdir(parents=True, exist_ok=True)
    (Path(metrics_dir) / f"train_{name}_history.json").write_text(json.dumps(history))
    final = {"run": name, "method": method, "epochs": epochs, "steps": 10 * epochs, "train_clips": 100,
             "val_clips": 20, "train_cases": 6, "val_cases": 2, **{k: v for k, v in history[-1].items()
                                                                    if k.startswith(("train_", "val_"))},
             "train_time_s": train_time_s}
    (Path(metrics_dir) / f"train_{name}.json").write_text(json.dumps(final))
    return run
