"""The plan before a run (`python -m tasks.plan`, `make plan`): what the current params will cost on the ingested
data, before anything is decoded or trained. docs/plan.md explains every line.

Sizes come from surgwm/sizes.py (the same numbers the stages check against `storage.budget_gb`). Times come
only from measurements: CPU figures of bench/clip_store.py on this project's CPU box
(bench/results/clip_store_cpu.json) and GPU figures of bench/gpu_train.py (bench/results/gpu_train_h200.json,
one NVIDIA H200); anything else is printed as "not measured", never guessed.

`--surgvu` plans for SurgVU 2024 without the data: surgvu_manifest() builds a manifest with its shape (155 cases,
280 videos, 840 h at 1280x720, 60 fps).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surgwm.data.manifest import Manifest, VideoEntry, read_manifest
from surgwm.data.split import split_by_case, subsample_cases
from surgwm.params import REPO_ROOT, Params, resolve_path
from surgwm.device import same_device
from surgwm.io import read_json
from surgwm.paths import CACHE, EMBEDDED_ENCODER, METRICS, TRAIN, WEIGHTS
from surgwm.sizes import (GB, checkpoint_bytes, clip_count, clip_tokens, decode_cache_bytes_for, evaluate_bytes, evaluate_clips,
                          feature_cache_bytes, fmt_bytes, predictor_params, video_frames, vit_params)

CPU_FIGURES = REPO_ROOT / "bench" / "results" / "clip_store_cpu.json"
GPU_FIGURES = REPO_ROOT / "bench" / "results" / "gpu_train_h200.json"
HUB_ENCODERS = {"vitl": (1024, 24), "vith": (1280, 32), "vitg": (1408, 40)}   # V-JEPA 2 hub ids: (dim, depth)
SURGVU = {"cases": 155, "videos": 280, "hours": 840.0, "width": 1280, "height": 720, "fps": 60.0}


class PlanError(ValueError):
    """The plan cannot be made (no manifest); the message says what to run."""


# ------------------------------------------------------------------------------------------ inputs

def evaluate_time(name: str, probe_clips: int, test_clips: int, metrics_dir: Path = METRICS) -> str:
    """This workspace's last evaluation of `name` when it evaluated the clip counts this plan expects (the same
    data and caps), else "not measured": its time depends on the encoder, which only a run on these shapes tells."""
    r = read_json(metrics_dir / f"evaluate_{name}.json") or {}
    sizes, secs = r.get("sizes") or {}, r.get("eval_time_s")
    have = (sizes.get("train_clips", 0) + sizes.get("val_clips", 0), sizes.get("test_clips"))
    if r.get("status") != "ok" or not secs or have != (probe_clips, test_clips):
        return "not measured"
    return f"{_hours(secs)} on {r.get('eval_device', '?')} (this workspace's last run, the same clips)"


def measured_here(run: str, params: Params, enc: Any, metrics_dir: Path = METRICS,
                  train_root: Path = TRAIN) -> dict[str, Any] | None:
    """This workspace's last finished train@<run>, when it trained the same shapes as these params: its device,
    clips/s and feature-cache build time (metrics/train_<run>.json, data/train/<run>/config.json). A measurement
    on this machine, not a guess; None when there is none or the shapes differ."""
    metrics, config = read_json(metrics_dir / f"train_{run}.json"), read_json(train_root / run / "config.json")
    if not metrics or not config or not metrics.get("train_clips_per_s") or enc is None:
        return None
    d, m, rt = params.data, params.model, params.train.resolve(run)
    arch, cd, ct = config.get("arch", {}), config.get("data", {}), config.get("train", {})
    same = (cd.get("size"), cd.get("clip_frames"), config.get("model", {}).get("context_frames"),
            ct.get("batch_size"), arch.get("encoder_dim"), arch.get("encoder_depth"), arch.get("predictor_dim"),
            arch.get("predictor_depth")) == (d.size, d.clip_frames, m.context_frames, rt.batch_size, enc.dim,
                                             enc.depth, m.predictor_dim, m.predictor_depth)
    return metrics if same else None


def surgvu_manifest(seed: int = 0) -> Manifest:
    """SurgVU 2024's shape without its files: 155 cases, 280 videos (125 cases in 2 parts, 30 in 1), 840 h in all.

    Case lengths are drawn from a log-normal (sigma 0.35, seeded) and scaled so they sum to exactly 840 h; a case's
    parts share its length equally. The plan's sizes and times depend on the total hours (and, by less than one
    clip per video, on how they split), so any such spread gives the same plan to three digits."""
    rng = random.Random(seed)
    n, two = SURGVU["cases"], SURGVU["videos"] - SURGVU["cases"]
    raw = [rng.lognormvariate(0.0, 0.35) for _ in range(n)]
    scale = SURGVU["hours"] * 3600 / sum(raw)
    videos = []
    for i, r in enumerate(raw):
        parts = 2 if i < two else 1
        for p in range(parts):
            videos.append(VideoEntry(video_id=f"case_{i:03d}_part_{p + 1}", case=f"case_{i:03d}", part=p + 1,
                                     path=f"surgvu24/case_{i:03d}/case_{i:03d}_video_part_{p + 1:03d}.mp4",
                                     duration_s=r * scale / parts, fps=SURGVU["fps"], width=SURGVU["width"],
                                     height=SURGVU["height"]))
    return Manifest(source="surgvu", root="(SurgVU 2024 shape, no files)", videos=videos)


def synthetic_manifest(params: Params) -> Manifest:
    """The demo dataset the synthesize stage would write (before it has run)."""
    s = params.data.synthetic
    videos = [VideoEntry(video_id=f"case_{c:03d}_part_{p + 1}", case=f"case_{c:03d}", part=p + 1, path="(synthetic)",
                         duration_s=s.part_seconds, fps=float(s.fps), width=s.width, height=s.height)
              for c in range(s.cases) for p in range(s.parts_per_case)]
    return Manifest(source="synthetic", root=params.data.root, videos=videos)


def load_manifest(params: Params, path: Path, surgvu: bool) -> tuple[Manifest, str]:
    """(manifest, where it came from)."""
    if surgvu:
        return surgvu_manifest(), "SurgVU 2024's shape (surgwm/plan.py surgvu_manifest: no data needed)"
    if path.is_file():
        return read_manifest(path), str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)
    if params.data.source == "synthetic":
        return synthetic_manifest(params), "data.synthetic (the synthesize stage has not run yet)"
    raise PlanError(f"no ingested manifest at {path}: run the ingest stage first (`dvc repro ingest`), "
                    "or plan for SurgVU without the data: `python -m tasks.plan --surgvu`")


@dataclass(frozen=True)
class Encoder:
    dim: int
    depth: int
    name: str


def pretrained_encoder(params: Params) -> Encoder | None:
    """The architecture weights.model names: a V-JEPA 2 hub id, or the config.json of the embedded encoder, of an
    HF-format dir, or (a Meta .pt file) of what the weights stage converted; None if none is known."""
    model = params.weights.model
    if model == "embedded":
        cfg_file = EMBEDDED_ENCODER / "config.json"
    else:
        for tag, (dim, depth) in HUB_ENCODERS.items():
            if f"vjepa2-{tag}" in model:
                return Encoder(dim, depth, model)
        path = resolve_path(model)
        cfg_file = path / "config.json" if path.is_dir() else WEIGHTS / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
        return Encoder(int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), model)
    except (OSError, ValueError, KeyError):
        return None


def run_encoder(params: Params, method: str) -> Encoder | None:
    if method == "scratch":
        m = params.model
        return Encoder(m.encoder_dim, m.encoder_depth, "model.encoder_* (scratch)")
    return pretrained_encoder(params)


# ------------------------------------------------------------------------------------------ the plan

@dataclass
class Counts:
    videos: int
    cases: int
    hours: float
    source_frames: float
    frames: int                   # cached frames at data.fps
    clips: int
    clips_per_case: dict[str, int]


def count(manifest: Manifest, params: Params) -> Counts:
    d = params.data
    usable = manifest.usable()
    per_case: dict[str, int] = {}
    frames = 0
    for v in usable:
        n = video_frames(v.duration_s, d.fps)
        frames += n
        per_case[v.case] = per_case.get(v.case, 0) + clip_count(n, d.clip_frames, d.clip_stride)
    seconds = sum(v.duration_s or 0.0 for v in usable)
    source = sum((v.duration_s or 0.0) * (v.fps or 30.0) for v in usable)
    return Counts(len(usable), len({v.case for v in usable}), seconds / 3600, source, frames,
                  sum(per_case.values()), per_case)


@dataclass(frozen=True)
class _Case:
    case: str                     # what split_by_case reads of a clip: one stand-in per case gives the case split


def case_split(counts: Counts, params: Params, case_fraction: float = 1.0) -> tuple[int, int, int, int]:
    """(train clips, val clips, train cases, val cases): the train stage's own split functions on the case ids."""
    stand = [_Case(c) for c in sorted(counts.clips_per_case)]
    t = params.train
    split = subsample_cases(split_by_case(stand, t.val_fraction, t.seed), stand, case_fraction, t.seed)
    train = sum(counts.clips_per_case[c] for c in split.train_cases)
    val = sum(counts.clips_per_case[c] for c in split.val_cases)
    return train, val, len(split.train_cases), len(split.val_cases)


def gpu_applies(gpu: dict[str, Any], params: Params, enc: Encoder | None) -> list[str]:
    """How these settings differ from the measured ones (empty: the measurement applies)."""
    spec, m, d = gpu["spec"], params.model, params.data
    diffs = []
    if enc is None or (enc.dim, enc.depth) != tuple(spec["encoder"][:2]):
        diffs.append(f"encoder {f'{enc.dim}x{enc.depth}' if enc else 'unknown'} (measured "
                     f"{spec['encoder'][0]}x{spec['encoder'][1]})")
    if (m.predictor_dim, m.predictor_depth) != tuple(spec["predictor"][:2]):
        diffs.append(f"predictor {m.predictor_dim}x{m.predictor_depth} (measured "
                     f"{spec['predictor'][0]}x{spec['predictor'][1]})")
    for key, have in (("size", d.size), ("frames", d.clip_frames), ("context", m.context_frames)):
        if have != spec[key]:
            diffs.append(f"{key} {have} (measured {spec[key]})")
    return diffs


def _hours(s: float) -> str:
    return f"{s / 3600:,.1f} h" if s >= 360 else f"{s / 60:,.1f} min"


def make_plan(params: Params, manifest: Manifest, origin: str, cache_dir: Path | None = CACHE, metrics_dir: Path = METRICS,
              train_root: Path = TRAIN) -> str:
    """The plan as text; `metrics_dir`/`train_root`: where this workspace's last runs left their measurements."""
    d, dp, t, ev, m = params.data, params.decode, params.train, params.evaluate, params.model
    budget = params.storage.budget_gb
    c = count(manifest, params)
    out: list[str] = []
    say = out.append
    durations = [v.duration_s for v in manifest.usable()]
    say(f"Plan for data.source {manifest.source}, manifest: {origin}")
    say(f"  video: {c.videos} usable videos in {c.cases} cases, {_hours(c.hours * 3600)} "
        f"({c.source_frames:,.0f} source frames); {len(manifest.videos) - c.videos} unusable")
    train_clips, val_clips, train_cases, val_cases = case_split(c, params)
    say(f"  clips: data.fps {d.fps:g}, data.size {d.size}, data.clip_frames {d.clip_frames}, data.clip_stride "
        f"{d.clip_stride} -> {c.frames:,} cached frames, {c.clips:,} clips ({train_clips:,} train in {train_cases} "
        f"cases, {val_clips:,} validation/test in {val_cases} cases; train.val_fraction {t.val_fraction:g})")
    nc, nf = clip_tokens(d.size, d.clip_frames, m.context_frames)
    say(f"  tokens per clip: {nc + nf:,} ({nc:,} context + {nf:,} future)")

    say("")
    say(f"Storage (storage.budget_gb {budget:g} GB: each stage's large output must fit it, checked before it writes)")
    rows: list[tuple[str, float, str]] = []

    def flag(n: float) -> str:
        return "OVER BUDGET" if n > budget * GB else ""

    raw = decode_cache_bytes_for("npy", d.size, d.fps, durations)
    store = decode_cache_bytes_for("h264", d.size, d.fps, durations, dp.crf, dp.gop)
    chosen = store if dp.store == "h264" else raw
    rows.append(("decode cache, raw .npy" + ("  <- decode.store" if dp.store == "npy" else ""), raw,
                 flag(raw) and (flag(raw) + ": decode refuses" if dp.store == "npy" else "")))
    rows.append((f"decode cache, h264 store (crf {dp.crf}, gop {dp.gop}; estimate)"
                 + ("  <- decode.store" if dp.store == "h264" else ""), store,
                 flag(store) and (flag(store) + ": decode refuses" if dp.store == "h264" else "")))
    total = chosen
    ckpt_total = 0
    for run in t.methods:
        rt = t.resolve(run)
        method = rt.method_of(run)
        enc = run_encoder(params, method)
        if enc is None:
            rows.append((f"run {run}: encoder of weights.model '{params.weights.model}' unknown", math.nan, ""))
            continue
        if method == "frozen" and rt.feature_cache:
            n = feature_cache_bytes(c.clips, nc, nf, enc.dim, rt.feature_dtype)
            note = "OVER BUDGET: encoder runs on the fly" if n > budget * GB else ""
            rows.append((f"feature cache, run {run} ({enc.dim}-d tokens, {rt.feature_dtype})", n, note))
            total += 0 if note else n
        p_enc = vit_params(enc.dim, enc.depth)
        p_pred = predictor_params(enc.dim, m.predictor_dim, m.predictor_depth)
        ck = checkpoint_bytes(p_enc, p_pred, method != "frozen")
        ckpt_total += ck
        rows.append((f"checkpoint + final weights, run {run} (encoder {p_enc / 1e6:,.0f} M, predictor "
                     f"{p_pred / 1e6:,.1f} M params)", ck, ""))
    total += ckpt_total
    pre = pretrained_encoder(params)
    probe = evaluate_clips(train_clips, ev.max_train_clips, ev.max_val_clips)   # test videos are streamed
    for name in [*t.methods, *ev.baselines]:
        if name == "raw_pixels":
            dim, pred = 2 * 3 * ev.pixel_pool ** 2, False
        elif name in ev.baselines:
            enc = pre or Encoder(m.encoder_dim, m.encoder_depth, "model.*")
            dim, pred = enc.dim, False
        else:
            enc = run_encoder(params, t.resolve(name).method_of(name))
            if enc is None:
                continue
            dim, pred = enc.dim, True
        n = evaluate_bytes(probe, nc + nf, nf, dim, ev.feature_dtype, ev.rollouts, pred)
        rows.append((f"evaluation working data, {name} ({dim}-d, {ev.feature_dtype}, {probe:,} probe clips)", n,
                     flag(n)))
    width = max(len(r[0]) for r in rows)
    for label, n, note in rows:
        say(f"  {label:<{width}}  {fmt_bytes(n) if n == n else '?':>9}  {note}")
    say(f"  {'on disk at once (decode cache + feature caches that fit + checkpoints)':<{width}}  "
        f"{fmt_bytes(total):>9}")
    if cache_dir is not None and cache_dir.is_dir():
        have = sum(p.stat().st_size for p in cache_dir.iterdir() if p.is_file())
        where = cache_dir.relative_to(REPO_ROOT) if cache_dir.is_relative_to(REPO_ROOT) else cache_dir
        say(f"  {f'decode cache on disk now ({where})':<{width}}  {fmt_bytes(have):>9}")
    say("  (the h264 size is an estimate from bench/clip_store.py's surgical-like content; real footage differs:")
    say("   decode a few videos and compare with the line above)")

    say("")
    say("Time (from measurements only)")
    cpu = read_json(CPU_FIGURES)
    if cpu:
        dec_s = c.source_frames / cpu["decode_source_frames_per_cpu_s"]
        enc_s = c.frames / cpu["store_encode_frames_per_cpu_s"] if dp.store == "h264" else 0.0
        cores = dp.workers * max(1, dp.threads)
        say(f"  decode on CPU ({cpu['provenance']['machine']}, {cpu['provenance']['date']}): "
            f"{(dec_s + enc_s) / 3600:,.1f} CPU-hours")
        say(f"    source decode {c.source_frames:,.0f} frames at {cpu['decode_source_frames_per_cpu_s']:,.0f} per "
            f"CPU-second (measured on 720p30 at 15 Mbit/s)" + (f" + h264 store encode {c.frames:,} frames at "
            f"{cpu['store_encode_frames_per_cpu_s']:,.0f} per CPU-second" if dp.store == "h264" else ""))
        say(f"    wall: {_hours((dec_s + enc_s) / cores)} with decode.workers x decode.threads = {cores} busy cores; "
            f"{_hours((dec_s + enc_s) / 64)} on 64 cores")
    else:
        say(f"  decode: not measured (no {CPU_FIGURES.relative_to(REPO_ROOT)}: run bench/clip_store.py --save)")
    read = (cpu or {}).get("reads_clips_per_cpu_s", {}).get(dp.store)
    gpu = read_json(GPU_FIGURES)
    gpu_lo = gpu_hi = 0.0                       # GPU-hours at the measured high and low throughput
    for run in t.methods:
        rt = t.resolve(run)
        method = rt.method_of(run)
        enc = run_encoder(params, method)
        tr, _, _, _ = case_split(c, params, rt.case_fraction)
        steps = (tr // rt.batch_size) * rt.epochs
        clips = steps * rt.batch_size
        head = f"  train {run} ({method}, {rt.epochs} epochs x {tr // rt.batch_size:,} steps of {rt.batch_size} clips)"
        if not gpu:
            say(f"{head}: not measured (no {GPU_FIGURES.relative_to(REPO_ROOT)})")
            continue
        diffs = gpu_applies(gpu, params, enc)
        cached = method == "frozen" and rt.feature_cache and enc is not None and \
            feature_cache_bytes(c.clips, nc, nf, enc.dim, rt.feature_dtype) <= budget * GB
        key = "frozen_cached" if cached else ("finetune" if method != "frozen" else None)
        if diffs or key is None:
            here = measured_here(run, params, enc, metrics_dir, train_root)
            if here is not None:
                secs = clips / here["train_clips_per_s"] + float(here.get("feature_cache_s") or 0.0)
                say(f"{head}: {_hours(secs)} on {here.get('device_name', '?')} (this workspace's last train@{run}: "
                    f"{here['train_clips_per_s']:,.1f} clips/s" + (f", feature cache {here['feature_cache_s']:.0f} s"
                                                                 if here.get("feature_cache_s") else "") + ")")
                continue
            why = ", ".join(diffs) if diffs else "frozen with the encoder on the fly: no feature cache"
            say(f"{head}: not measured for these settings ({why})")
            continue
        lo, hi = gpu[key]["clips_per_s"]
        s_lo, s_hi = clips / hi, clips / lo
        gpu_lo, gpu_hi = gpu_lo + s_lo / 3600, gpu_hi + s_hi / 3600
        dev = max(1, rt.devices)
        say(f"{head}: {_hours(s_lo)} - {_hours(s_hi)} on one {gpu['device']} "
            f"({lo:g}-{hi:g} clips/s measured, {gpu[key]['peak_gib']} GiB peak; {gpu['provenance']['note']})")
        if rt.batch_size // dev != gpu["spec"]["batch"]:
            say(f"    (measured at {gpu['spec']['batch']} clips per GPU per step; this run has {rt.batch_size // dev})")
        if dev > 1:
            say(f"    with train.devices {dev}: ~{_hours(s_lo / dev)} - {_hours(s_hi / dev)} wall if DDP scaled "
                f"linearly (not measured)")
        if read and not cached:
            say(f"    clip reads ({dp.store}) at {hi:g} clips/s per GPU: {hi / read:.2f} CPU cores per GPU at the "
                f"measured {read:,.0f} clips per CPU-second")
        if cached:
            say("    + building the feature cache (encoder forward over every clip): not measured")
        if method == "scratch":
            say("    (scratch runs the same step as finetune: the finetune figure)")
    for name in [*t.methods, *ev.baselines]:
        say(f"  evaluate {name}: {evaluate_time(name, probe, c.clips - train_clips, metrics_dir)}")
    if gpu_hi:
        say(f"  GPU-hours of the training above ({gpu['device']}): {gpu_lo:,.1f} - {gpu_hi:,.1f} "
            "(feature-cache building and evaluation not included: not measured)")
        priced = False
        for price_name, price in ev.gpu_prices.items():
            if same_device(gpu["device"], price_name):
                priced = True
                say(f"    cost at evaluate.gpu_prices['{price_name}'] = {price:g} USD per GPU-hour: "
                    f"{gpu_lo * price:,.0f} - {gpu_hi * price:,.0f} USD")
            else:
                say(f"    cost at evaluate.gpu_prices['{price_name}']: n/a (a price applies to the device it names; "
                    f"training on {price_name} is not measured)")
        if not priced:
            say(f"    add `{gpu['device']}: <USD per GPU-hour>` to evaluate.gpu_prices for a cost")
    return "\n".join(out)
