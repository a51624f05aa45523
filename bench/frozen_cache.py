"""Frozen method: one training epoch on the feature cache vs one epoch recomputing the encoder, side by side.

    .venv/bin/python bench/frozen_cache.py [--configs demo,vitl] [--repeat 2] [--vitl-clips 16] [--threads N]

Both epochs run the stage's own code (surgwm.training.loop.make_batch + train_step) over the same clips, alternated
`--repeat` times; the ratio is recompute / cached (wall time, and CPU time, which is steadier on shared machines).
The one-time cache build is reported too, with the break-even: after how many epochs the cache has paid for itself.

  demo  the demo's size: ~700 clips (12 cases x 2 parts x 120 frames at 64x64, 8-frame clips, stride 4),
        encoder 128 x 3 layers, predictor 64 x 2 (params.yaml defaults)
  vitl  a ViT-L encoder (1024 x 24, 16 heads; random weights) with V-JEPA 2's predictor (384 x 12), same clip
        geometry, scaled down in data only: `--vitl-clips` clips
Synthetic clips are written to a temp dir (no decode stage or ffmpeg needed). Results: bench/out/frozen_cache.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models import Predictor, VideoEncoder, encoder_config  # noqa: E402
from surgwm.training import ddp  # noqa: E402
from surgwm.data.clips import ClipCache, build_clips  # noqa: E402
from surgwm.training.features import build as build_features  # noqa: E402
from surgwm.data.manifest import Manifest, VideoEntry, write_manifest  # noqa: E402
from surgwm.training.methods import Models, Student, resolve  # noqa: E402
from surgwm.params import parse_params  # noqa: E402
from surgwm.training.step import make_batch, make_run, train_step  # noqa: E402
from surgwm.data.split import split_by_case  # noqa: E402
from surgwm.training.trainset import Data  # noqa: E402

CONFIGS = {
    "demo": {"encoder": (128, 3, 4), "predictor": (64, 2, 4), "videos": (12, 2, 120)},
    "vitl": {"encoder": (1024, 24, 16), "predictor": (384, 12, 12), "videos": None},
}
SIZE, CLIP, STRIDE, CONTEXT, BATCH = 64, 8, 4, 4, 32


def write_videos(root: Path, cases: int, parts: int, frames: int) -> Path:
    """Noisy frames with a drifting square per video: uint8 .npy cache + decoded manifest."""
    rng = np.random.default_rng(0)
    videos = []
    for c in range(cases):
        for p in range(parts):
            vid = f"case{c:02d}_p{p + 1}"
            arr = rng.integers(0, 255, (frames, SIZE, SIZE, 3), dtype=np.uint8)
            np.save(root / f"{vid}.npy", arr)
            videos.append(VideoEntry(video_id=vid, case=f"case{c:02d}", part=p + 1, path=vid, sha256=vid,
                                     frames=frames))
    write_manifest(Manifest(source="synthetic", root=str(root), videos=videos), root / "manifest.json")
    return root / "manifest.json"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), cpu_s()
    fn()
    return time.perf_counter() - w, cpu_s() - c


def bench(name: str, videos: tuple[int, int, int], repeat: int, tmp: Path) -> dict:
    spec = CONFIGS[name]
    (ed, el, eh), (pd, pl, ph) = spec["encoder"], spec["predictor"]
    root = tmp / name
    root.mkdir()
    manifest_path = write_videos(root, *videos)
    params = parse_params({
        "data": {"size": SIZE, "clip_frames": CLIP, "clip_stride": STRIDE},
        "model": {"predictor_dim": pd, "predictor_depth": pl, "predictor_heads": ph, "context_frames": CONTEXT},
        "train": {"batch_size": BATCH, "epochs": 2 * repeat + 1, "val_fraction": 0.2 if name == "demo" else 0.0},
    })
    cfg = resolve(params, "frozen")
    from surgwm.data.manifest import read_manifest

    clips = build_clips(read_manifest(manifest_path), CLIP, STRIDE, cfg.data.fps)
    split = split_by_case(clips, cfg.train.val_fraction, 0)
    batch = min(BATCH, len(split.train))
    cfg = resolve(parse_params({**params.model_dump(mode="json"),
                                "train": {**params.train.model_dump(mode="json"), "batch_size": batch}}), "frozen")
    device = torch.device("cpu")
    torch.manual_seed(0)
    encoder = VideoEncoder.from_config(encoder_config(ed, el, eh, SIZE, CLIP)).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    predictor = Predictor(ed, pd, pl, ph)
    models = Models(encoder, encoder, predictor, Student(None, predictor))
    run = make_run(cfg, ddp.Dist(), device, models, split.train)
    data = Data(clips, split, ClipCache(root, CLIP), "bench")

    build_wall, build_cpu = timed(lambda: build_features(root / "features", encoder, clips, data.cache, CONTEXT,
                                                         batch, device, progress=False))
    from surgwm.training.features import FeatureStore

    store = FeatureStore(root / "features")
    epoch = 0

    def one_epoch(cached: bool) -> None:
        nonlocal epoch
        data.store = store if cached else None
        run.sampler.start_epoch(epoch)
        epoch += 1
        for i in range(len(run.sampler)):
            flips = None if cached else torch.rand(len(run.sampler.batch(i, run.dist)), generator=run.aug) < 0.5
            train_step(run, *make_batch(run, data, run.sampler.batch(i, run.dist), flips))

    one_epoch(True)  # warm-up (allocator, first-call overheads)
    cached, recomputed = [], []
    for _ in range(repeat):
        cached.append(timed(lambda: one_epoch(True)))
        recomputed.append(timed(lambda: one_epoch(False)))
    c_wall, c_cpu = (min(x[i] for x in cached) for i in (0, 1))
    r_wall, r_cpu = (min(x[i] for x in recomputed) for i in (0, 1))
    res = {
        "config": name, "encoder": spec["encoder"], "predictor": spec["predictor"], "clips": len(clips),
        "train_clips": len(split.train), "batch": batch, "steps_per_epoch": len(run.sampler),
        "cache_build_s": round(build_wall, 3), "cached_epoch_s": round(c_wall, 3),
        "recompute_epoch_s": round(r_wall, 3), "ratio_wall": round(r_wall / c_wall, 2),
        "ratio_cpu": round(r_cpu / max(c_cpu, 1e-9), 2),
        "break_even_epochs": round(build_wall / max(r_wall - c_wall, 1e-9), 2), "threads": torch.get_num_threads(),
    }
    print(f"{name:5s} {len(split.train)} train clips, batch {batch}: cache build {build_wall:.2f}s; epoch cached "
          f"{c_wall:.3f}s vs recompute {r_wall:.3f}s -> {res['ratio_wall']}x wall ({res['ratio_cpu']}x CPU); "
          f"the cache pays for itself after {res['break_even_epochs']} epochs", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="demo,vitl")
    ap.add_argument("--repeat", type=int, default=2, help="alternated timed epochs per variant (min is reported)")
    ap.add_argument("--vitl-clips", type=int, default=16, help="clips for the ViT-L config (4 cases)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    per_case = max(1, args.vitl_clips // 4)
    CONFIGS["vitl"]["videos"] = (4, 1, CLIP + STRIDE * (per_case - 1))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            results.append(bench(name, CONFIGS[name]["videos"], args.repeat, Path(tmp)))
    out = REPO / "bench" / "out" / "frozen_cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
