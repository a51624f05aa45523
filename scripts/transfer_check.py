#!/usr/bin/env python
"""Does the pretrained tiny encoder transfer? Frozen features + linear probes on LABELLED synthetic cases.

Data: the demo dataset's cases (surgwm.data.synthetic labelled stream, --seed 0 cases 0..--cases-1, as params.yaml's
demo), drawn in memory exactly as scripts/pretrain_embedded.py draws its corpus (params.yaml's source size, data.fps,
ffmpeg's scaler to short side data.size; no H.264), centre-cropped like the decode stage. Each case is cut into
--parts parts like the demo's mp4 parts; clips of data.clip_frames frames every data.clip_stride frames within a
part, labelled as surgwm/data/clips.py does: motion and step at the clip's centre time, event = 1 if a `breach`
event overlaps it.

Features, side by side (same clips, same probes):
  pretrained   the encoder in --pretrained (frozen) on the full 8-frame clip
  untrained    the same architecture, randomly initialised with --untrained-seed (default: the pretraining
               seed from pretraining.json, i.e. the pretrained encoder's own starting point)
  pixels       raw pixels average-pooled to 8x8 per frame, all 8 frames, RGB (1536 values)
Encoder tokens (4 time steps x 4 x 4 patches x D) are pooled keeping temporal and coarse spatial structure:
per time step the mean over space (4 x D) and 2x2 spatial pooling (4 x 2 x 2 x D), concatenated (20 x D).

Probe: standardised features + logistic regression (scikit-learn), split BY CASE: --folds outer folds of test
cases; of the remaining training cases a fraction (--fractions; the low-label regime matters) is used, averaged
over --repeats random case subsets. Scores: motion accuracy (8 classes), step accuracy (8), event average
precision (rare positives; the base rate is the AP of a constant). The inverse regularisation C is taken from
--Cs per (features, label, fraction) by the best mean over folds: the same small optimistic bias for every
feature set (reported in the JSON with all Cs).

  python scripts/transfer_check.py --pretrained assets/vjepa2-tiny-surgical
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pretrain_embedded as pe  # noqa: E402  (also puts the repo root on sys.path)

LABELS = ("motion", "step", "event")


def clip_labels(plan, frames: int, parts: int, clip: int, stride: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(starts (M,), labels (M, 3): motion, step, event) for clips within each part, as surgwm/data/clips.py."""
    synthetic = pe.synthetic
    motion_index = {m: i for i, m in enumerate(synthetic.MOTION_CLASSES)}
    per_part = frames // parts
    starts, labels = [], []
    for p in range(parts):
        for s in range(0, per_part - clip + 1, stride):
            g = p * per_part + s
            t0, t1 = g / fps, (g + clip) / fps
            mid = (t0 + t1) / 2
            motion = next((motion_index[seg.motion] for seg in plan.segments if seg.start <= mid < seg.stop), -1)
            step = next((st.style for st in plan.steps if st.start <= mid < st.stop), -1)
            event = int(any(e.start < t1 and e.stop > t0 for e in plan.events))
            starts.append(g)
            labels.append((motion, step, event))
    return np.array(starts), np.array(labels)


def load_clips(args: argparse.Namespace, geo: "pe.Geometry", stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 clips (M, T, S, S, 3), labels (M, 3), case id (M,)."""
    width, height = geo.source
    key = f"{pe.code_hash()}_{args.seed}_{args.cases}_{args.seconds}_{args.parts}_{width}x{height}_{stride}"
    cache = Path(args.frames_cache) if args.frames_cache else None
    if cache and cache.is_file():
        data = np.load(cache)
        if str(data["key"]) == key:
            print(f"clips from {cache}", flush=True)
            return data["clips"], data["labels"], data["cases"]
    arrays, stats = pe.render_cases("labelled", args.seed, list(range(args.cases)), args.seconds, geo, args.workers)
    print(f"render: {stats}", flush=True)
    clips, labels, cases = [], [], []
    for case, arr in enumerate(arrays):
        x0 = (arr.shape[2] - geo.size) // 2
        frames = arr[:, :, x0:x0 + geo.size]  # (T, S, S, 3): the decode stage's centre crop
        plan = pe.synthetic.plan_case(args.seed, case, args.seconds, width / height, stream="labelled")
        starts, lab = clip_labels(plan, len(frames), args.parts, geo.clip_frames, stride, geo.fps)
        clips.append(np.stack([frames[s:s + geo.clip_frames] for s in starts]))
        labels.append(lab)
        cases.append(np.full(len(starts), case))
    out = np.concatenate(clips), np.concatenate(labels), np.concatenate(cases)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, clips=out[0], labels=out[1], cases=out[2], key=key)
    return out


# ---------------------------------------------------------------- features

def pixel_features(clips: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 255.0  # (M, T, 3, S, S)
    m, t, _, s, _ = x.shape
    pooled = F.avg_pool2d(x.reshape(m * t, 3, s, s), s // 8)  # (M*T, 3, 8, 8)
    return pooled.reshape(m, -1).numpy()


@torch.no_grad()
def encoder_features(encoder, clips: np.ndarray, batch: int = 64) -> np.ndarray:
    """Per time step: mean over space (D) + 2x2 spatial pooling (4D) -> (M, tg * 5 * D)."""
    from models import preprocess

    encoder.eval()
    tg, hg, wg = encoder.grid(*clips.shape[1:4])
    out = []
    for i in range(0, len(clips), batch):
        tok = encoder(preprocess(torch.from_numpy(clips[i:i + batch])))  # (B, N, D), t-major then h then w
        b, _, d = tok.shape
        tok = tok.view(b, tg, hg, wg, d)
        mean = tok.mean(dim=(2, 3))  # (B, tg, D)
        quad = tok.view(b, tg, 2, hg // 2, 2, wg // 2, d).mean(dim=(3, 5))  # (B, tg, 2, 2, D)
        out.append(torch.cat([mean.reshape(b, -1), quad.reshape(b, -1)], dim=1).numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------- probes

def score(label: str, y_true: np.ndarray, model, x: np.ndarray, constant: int | None) -> float:
    from sklearn.metrics import average_precision_score

    if label == "event":
        if y_true.sum() == 0:
            return float("nan")
        s = np.zeros(len(y_true)) if constant is not None else model.decision_function(x)
        return float(average_precision_score(y_true, s))
    pred = np.full(len(y_true), constant) if constant is not None else model.predict(x)
    return float((pred == y_true).mean())


def fit_eval(label: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, c: float) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(ytr)) < 2:
        return score(label, yte, None, xte, int(ytr[0]))
    scaler = StandardScaler().fit(xtr)
    model = LogisticRegression(C=c, max_iter=300, tol=1e-3,
                               class_weight="balanced" if label == "event" else None)
    model.fit(scaler.transform(xtr), ytr)
    return score(label, yte, model, scaler.transform(xte), None)


def splits(cases: np.ndarray, folds: int, fractions: list[float], repeats: int, seed: int):
    """(fold, fraction, repeat, train case ids, test case ids), deterministic."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.unique(cases))
    for f, test in enumerate(np.array_split(ids, folds)):
        train_all = np.setdiff1d(ids, test)
        for frac in fractions:
            n = max(1, int(round(frac * len(train_all))))
            reps = 1 if n >= len(train_all) else repeats
            for r in range(reps):
                sub = np.random.default_rng([seed, f, r, n]).choice(train_all, n, replace=False)
                yield f, frac, r, np.sort(sub), test


def probe_all(feats: dict[str, np.ndarray], labels: np.ndarray, cases: np.ndarray,
              args: argparse.Namespace) -> dict[str, Any]:
    """results[method][label][fraction][C] = list of scores over folds x repeats (+ a majority baseline)."""
    res: dict[str, Any] = {m: {lab: {} for lab in LABELS} for m in list(feats) + ["majority"]}
    for f, frac, r, train, test in splits(cases, args.folds, args.fractions, args.repeats, args.split_seed):
        tr, te = np.isin(cases, train), np.isin(cases, test)
        for li, lab in enumerate(LABELS):
            y = labels[:, li]
            ok_tr, ok_te = tr & (y >= 0), te & (y >= 0)
            ytr, yte = y[ok_tr], y[ok_te]
            if lab == "event":
                base = float(yte.mean()) if yte.sum() else float("nan")
            else:
                vals, counts = np.unique(ytr, return_counts=True)
                base = float((yte == vals[counts.argmax()]).mean())
            res["majority"][lab].setdefault(frac, {}).setdefault("-", []).append(base)
            for m, x in feats.items():
                for c in args.Cs:
                    s = fit_eval(lab, x[ok_tr], ytr, x[ok_te], yte, c)
                    res[m][lab].setdefault(frac, {}).setdefault(c, []).append(s)
    return res


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """best C per (method, label, fraction): mean, sd, n, C."""
    out: dict[str, Any] = {}
    for m, by_label in res.items():
        for lab, by_frac in by_label.items():
            for frac, by_c in by_frac.items():
                best = max(by_c.items(), key=lambda kv: np.nanmean(kv[1]))
                v = np.array(best[1], dtype=float)
                out.setdefault(m, {}).setdefault(lab, {})[str(frac)] = {
                    "mean": round(float(np.nanmean(v)), 4), "sd": round(float(np.nanstd(v)), 4),
                    "n": int(np.isfinite(v).sum()), "C": best[0]}
    return out


def print_table(summary: dict[str, Any], methods: list[str], fractions: list[float], n_train: int) -> None:
    metric = {"motion": "acc", "step": "acc", "event": "AP"}
    cols = methods + ["majority"]
    print(f"\n{'label':<8}{'metric':<7}{'train cases':>12}  " + "".join(f"{m:>18}" for m in cols))
    for lab in LABELS:
        for frac in fractions:
            n = max(1, int(round(frac * n_train)))
            cells = []
            for m in cols:
                s = summary[m][lab][str(frac)]
                cells.append(f"{s['mean']:.3f}±{s['sd']:.3f}".rjust(18))
            print(f"{lab:<8}{metric[lab]:<7}{f'{n} ({frac:.0%})':>12}  " + "".join(cells))
    print("(mean±sd over case folds x random case subsets; majority = most frequent training class, "
          "for event the positive rate = AP of a constant)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrained", type=Path, default=pe.REPO / "assets" / "vjepa2-tiny-surgical")
    p.add_argument("--untrained-seed", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="labelled dataset seed (the demo's is 0)")
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--seconds", type=float, default=60.0, help="case length (demo: 2 parts x 30 s)")
    p.add_argument("--parts", type=int, default=2)
    p.add_argument("--params", type=Path, default=pe.REPO / "params.yaml", help="geometry checked against --pretrained")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--frames-cache", default=None, help="npz to keep the rendered clips between runs")
    p.add_argument("--fractions", type=lambda s: [float(v) for v in s.split(",")], default=[0.1, 0.25, 1.0])
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3, help="random case subsets per fold for fractions < 1")
    p.add_argument("--Cs", type=lambda s: [float(v) for v in s.split(",")], default=[0.01, 0.1, 1.0])
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (1 is fastest on a shared 2-core box)")
    p.add_argument("--json", type=Path, default=None, help="write the full results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    from models import VideoEncoder, encoder_config
    from surgwm.io import file_sha256
    from surgwm.params import load_params

    try:
        geo = pe.geometry(args.pretrained, args.params)  # the encoder must fit the pipeline's clips
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stride = load_params(args.params).data.clip_stride
    pretrained = VideoEncoder.from_pretrained(args.pretrained)
    cfg = pretrained.config
    seed = args.untrained_seed
    info_path = args.pretrained / "pretraining.json"
    if seed is None:
        seed = json.loads(info_path.read_text())["args"]["seed"] if info_path.is_file() else 0
    torch.manual_seed(seed)  # as scripts/pretrain_embedded.py's Trainer: seed, then build
    untrained = VideoEncoder.from_config(encoder_config(cfg.hidden_size, cfg.num_hidden_layers,
                                                        cfg.num_attention_heads, cfg.crop_size, cfg.frames_per_clip))

    clips, labels, cases = load_clips(args, geo, stride)
    n_pos = int(labels[:, 2].sum())
    print(f"{len(clips)} clips from {args.cases} cases; events in {n_pos} clips ({n_pos / len(clips):.1%}); "
          f"{time.time() - t0:.0f} s", flush=True)
    t1 = time.time()
    feats = {"pretrained": encoder_features(pretrained, clips), "untrained": encoder_features(untrained, clips),
             "pixels": pixel_features(clips)}
    print("features: " + ", ".join(f"{k} {v.shape[1]}" for k, v in feats.items()) + f"; {time.time() - t1:.0f} s",
          flush=True)
    t2 = time.time()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.threads):  # BLAS threads fighting other processes cost 10x here
        res = probe_all(feats, labels, cases, args)
    summary = summarise(res)
    n_train = args.cases - len(np.array_split(np.arange(args.cases), args.folds)[0])
    print_table(summary, list(feats), args.fractions, n_train)
    print(f"probes {time.time() - t2:.0f} s, total {time.time() - t0:.0f} s", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        weights = args.pretrained / "model.safetensors"
        args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                         "command": " ".join(["python", "scripts/transfer_check.py",
                                                              *(sys.argv[1:] if argv is None else argv)]),
                                         "pretrained_sha256": file_sha256(weights) if weights.is_file() else None,
                                         "code_sha256": pe.code_hash(), "untrained_seed": seed,
                                         "clips": len(clips), "cases": args.cases, "event_clips": n_pos,
                                         "seconds": round(time.time() - t0, 1), "summary": summary,
                                         "all": {m: {lab: {str(fr): {str(c): v for c, v in byc.items()}
                                                           for fr, byc in byf.items()} for lab, byf in byl.items()}
                                                 for m, byl in res.items()}}, indent=1) + "\n")
    headline = {m: {lab: summary[m][lab][str(min(args.fractions))]["mean"] for lab in LABELS} for m in summary}
    print(json.dumps({"lowest_fraction": min(args.fractions), "scores": headline}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
