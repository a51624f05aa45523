"""GPU training throughput: `finetune` and `frozen` with a ViT-L encoder at 16 frames x 256x256, random weights.

    python bench/gpu_train.py [--steps 200] [--batch 16] [--methods finetune,frozen] [--compile] [--out DIR]
    python bench/gpu_train.py --tiny            # the same code path on CPU with a tiny model (a smoke test)

Runs the stage's own step (surgwm.training.loop.pixel_inputs + train_step: bf16 autocast, SDPA attention, AdamW, grad
clipping, EMA target) on random clips generated on the device (no data files). `frozen` trains on cached
features, as the stage does: the frozen encoder first encodes `--cache-batches` batches once (timed apart).
Prints per method: clips/s, step time, peak GPU memory, and model FLOPs utilisation = FLOPs of one step (counted
with torch.utils.flop_counter.FlopCounterMode: forward, backward and the target encoder's forward) / step time /
the GPU's peak dense bf16 FLOP/s (H100 SXM and H200: 989e12). Results also go to <out>/gpu_train.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from models import Predictor, VideoEncoder, encoder_config  # noqa: E402
from surgwm.training import ddp  # noqa: E402
from surgwm.training.features import encode_pair  # noqa: E402
from surgwm.training.methods import Models, Student, resolve  # noqa: E402
from surgwm.params import parse_params  # noqa: E402
from surgwm.training.step import make_run, pixel_inputs, train_step, wrap  # noqa: E402

PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12}
VITL = {"encoder": (1024, 24, 16), "predictor": (384, 12, 12), "frames": 16, "size": 256, "context": 8}
TINY = {"encoder": (128, 3, 4), "predictor": (64, 2, 4), "frames": 8, "size": 64, "context": 4}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16.items():  # most specific names first
        if key in name:
            return value
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(method: str, spec: dict, batch: int, steps: int, device: torch.device, compile_: bool):
    (ed, el, eh), (pd, pl, ph) = spec["encoder"], spec["predictor"]
    params = parse_params({
        "data": {"size": spec["size"], "clip_frames": spec["frames"]},
        "model": {"predictor_dim": pd, "predictor_depth": pl, "predictor_heads": ph, "context_frames": spec["context"]},
        "train": {"batch_size": batch, "epochs": 1, "compile": compile_, "deterministic": False},
    })
    cfg = resolve(params, method)
    torch.manual_seed(0)
    encoder = VideoEncoder.from_config(encoder_config(ed, el, eh, spec["size"], spec["frames"])).to(device)
    predictor = Predictor(ed, pd, pl, ph).to(device)
    if method == "frozen":
        encoder.eval().requires_grad_(False)
        models = Models(encoder, encoder, predictor, Student(None, predictor))
    else:
        target = copy.deepcopy(encoder).eval().requires_grad_(False)
        models = Models(encoder, target, predictor, Student(encoder, predictor))
    run = make_run(cfg, ddp.Dist(), device, models, range(batch * steps))
    wrap(run)
    return run


def clips(run, batch: int, spec: dict) -> torch.Tensor:
    """Random normalised clips (B, T, C, H, W), made on the device."""
    return torch.randn(batch, spec["frames"], 3, spec["size"], spec["size"], device=run.device)


def bench_method(method: str, spec: dict, args: argparse.Namespace, device: torch.device) -> dict:
    total = args.warmup + args.steps + 1
    run = build(method, spec, args.batch, total, device, args.compile)
    res: dict = {"method": method}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    if method == "frozen":  # the feature cache, built once on the device
        sync(device)
        t0 = time.perf_counter()
        cache = []
        with torch.no_grad(), run.autocast():
            for _ in range(args.cache_batches):
                ctx, tgt = encode_pair(run.models.encoder, clips(run, args.batch, spec), spec["context"])
                cache.append((ctx.float(), tgt.float()))
        sync(device)
        build_s = time.perf_counter() - t0
        res |= {"cache_build_s": round(build_s, 3), "cache_encode_clips_per_s": round(
            args.cache_batches * args.batch / build_s, 1)}
        batches = lambda i: cache[i % len(cache)]  # noqa: E731
    else:
        batches = lambda i: pixel_inputs(run, clips(run, args.batch, spec))  # noqa: E731

    for i in range(args.warmup):
        train_step(run, *batches(i))
    with FlopCounterMode(display=False) as counter:  # one step, target encoder included
        train_step(run, *batches(0))
    flops = counter.get_total_flops()
    sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        vals = train_step(run, *batches(i))
    sync(device)
    dt = (time.perf_counter() - t0) / args.steps
    peak = peak_flops(device)
    res |= {
        "clips_per_s": round(args.batch / dt, 2), "step_s": round(dt, 4), "gflop_per_step": round(flops / 1e9, 1),
        "achieved_tflops": round(flops / dt / 1e12, 3), "mfu": round(flops / dt / peak, 4) if peak else None,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "final_loss": round(vals["loss"], 4),
    }
    mem = f"{res['peak_mem_gib']} GiB" if res["peak_mem_gib"] is not None else "n/a (CPU)"
    mfu = (f"{100 * res['mfu']:.1f}%" if res["mfu"] is not None
           else "n/a (CPU)" if device.type == "cpu" else "n/a (no peak known for this GPU)")
    print(f"{method:9s} {res['clips_per_s']:8.1f} clips/s  {1000 * dt:7.1f} ms/step  {flops / 1e9:.1f} GFLOP/step  "
          f"{res['achieved_tflops']} TFLOP/s  MFU {mfu}  peak mem {mem}"
          + (f"  (cache: {res['cache_encode_clips_per_s']} clips/s)" if method == "frozen" else ""), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="finetune,frozen")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per method")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16, help="clips per step")
    ap.add_argument("--cache-batches", type=int, default=8, help="frozen: distinct cached batches to cycle through")
    ap.add_argument("--compile", action="store_true", help="torch.compile the student and the target encoder")
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU, few steps (smoke test)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench" / "out"))
    args = ap.parse_args()
    spec = TINY if args.tiny else VITL
    if args.tiny:
        args.steps, args.warmup, args.batch, args.cache_batches = min(args.steps, 5), 1, 8, 2
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}; encoder {spec['encoder']}, predictor {spec['predictor']}, "
          f"{spec['frames']} frames x {spec['size']}^2 ({spec['context']} context), batch {args.batch}, "
          f"{args.steps} steps{' compiled' if args.compile else ''}", flush=True)
    t0 = time.perf_counter()
    results = [bench_method(m, spec, args, device) for m in args.methods.split(",")]
    out = Path(args.out) / "gpu_train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": name, "torch": torch.__version__, "spec": spec, "batch": args.batch,
                               "steps": args.steps, "compile": args.compile, "results": results}, indent=1) + "\n")
    print(f"total {time.perf_counter() - t0:.0f}s; wrote {out}")


if __name__ == "__main__":
    main()
