"""Probe training for one evaluated name: the recipe before probe banks vs the bank protocol, side by side.

    .venv/bin/python bench/probe_bank.py [--workspace DIR] [--name frozen] [--repeat 1] [--depth1]

Both recipes train on the same tokens, same split and same clips (the demo's shapes: ~1,400 clips, 64 tokens of 128
values, 2 roll-outs of 32 tokens), one after the other in one process, `--repeat` times alternated:
  old  the recipe of commit a01e1f8 (copied below, unchanged): 11 probes trained one after another, each a
       1-block attentive probe (dim 64, 4 heads, deltas), AdamW lr 3e-3 wd 0.05, 15 epochs, batch 64: step,
       motion, event, anticipation (encoder; + world model), and step/motion/event on 25 % and 50 % of the cases
  new  surgwm.evaluation: per probe seed (params.yaml evaluate.seeds), banks over evaluate.probe_lrs x
       evaluate.probe_weight_decays for every task (+ time to next step), best epoch per head, head per task on
       validation, then the chosen heads on the validation and test clips
Printed: wall and CPU time (user+sys, steadier on a shared box), probe fits (heads), time per fit, the ratio new/old,
and the test metrics of both (one seed for old; seed means for new) so speed is not bought with quality.
`--depth1` adds the bank at probe_depth 1 (the old probe's architecture; one seed, lrs 1e-3 and 3e-3, batch 64 as
the old recipe) to show what a head of it costs.
Tokens: from the finished demo workspace's run `--name` (its encoder and predictor on its decode cache) when
present, otherwise demo-scale synthetic video rendered in memory and an untrained encoder (timings only).
Feature extraction is not timed here (it is the same for both; tasks.evaluate times it). Results:
bench/out/probe_bank.json.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from surgwm.data.clips import open_clips  # noqa: E402
from surgwm.data.manifest import read_manifest  # noqa: E402
from surgwm.evaluation import metrics as M  # noqa: E402
from surgwm.evaluation.probe_bank import Features  # noqa: E402
from surgwm.evaluation.probes import build_tasks, plan_banks, train_banks, unusable  # noqa: E402
from surgwm.evaluation.scoring import Scored, assemble, score_rows  # noqa: E402
from surgwm.evaluation.sources import extract, load_source  # noqa: E402
from surgwm.evaluation.split import split_cases  # noqa: E402
from surgwm.evaluation.table import clip_table  # noqa: E402
from surgwm.params import Params, load_params  # noqa: E402

# ---------------------------------------------------------------- the old recipe (commit a01e1f8), unchanged

OLD = {"dim": 64, "depth": 1, "heads": 4, "epochs": 15, "lr": 3e-3, "wd": 0.05, "batch": 64}


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _Pool(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_x = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        q = self.query.expand(x.shape[0], -1, -1)
        kv = self.norm_x(x)
        q = q + self.attn(q, kv, kv, need_weights=False)[0]
        q = q + self.mlp(self.norm_q(q))
        return q[:, 0]


class OldProbe(nn.Module):
    def __init__(self, in_dim: int, num_tokens: int, num_classes: int, dim: int, depth: int, heads: int, lag: int):
        super().__init__()
        self.lag = lag
        feat = in_dim * (2 if lag else 1)
        self.register_buffer("mean", torch.zeros(feat))
        self.register_buffer("std", torch.ones(feat))
        self.proj = nn.Linear(feat, dim)
        self.pos = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.blocks = nn.ModuleList([_Block(dim, heads) for _ in range(depth)])
        self.pool = _Pool(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def features(self, tokens: Tensor) -> Tensor:
        if not self.lag:
            return tokens
        delta = torch.zeros_like(tokens)
        delta[:, self.lag:] = tokens[:, self.lag:] - tokens[:, :-self.lag]
        return torch.cat([tokens, delta], dim=-1)

    @torch.no_grad()
    def standardize(self, tokens: Tensor) -> None:
        flat = self.features(tokens).reshape(-1, self.mean.shape[0]).float()
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp_min(1e-4))

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.proj((self.features(tokens) - self.mean) / self.std) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(self.pool(x)))


def _gather(arrays: list[np.ndarray], idx: np.ndarray) -> Tensor:
    return torch.from_numpy(np.concatenate([np.asarray(a[idx], dtype=np.float32) for a in arrays], axis=1))


@torch.no_grad()
def _predict(probe: OldProbe, arrays: list[np.ndarray], idx: np.ndarray, batch: int = 256) -> np.ndarray:
    probe.eval()
    return np.concatenate([F.softmax(probe(_gather(arrays, idx[i:i + batch])), -1).numpy()
                           for i in range(0, len(idx), batch)])


def old_fit(arrays: list[np.ndarray], y: np.ndarray, train: np.ndarray, val: np.ndarray, n_classes: int, lag: int,
            select: Callable[[np.ndarray, np.ndarray], float | None], balanced: bool = False,
            seed: int = 0) -> OldProbe:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    probe = OldProbe(arrays[0].shape[2], sum(a.shape[1] for a in arrays), n_classes, OLD["dim"], OLD["depth"],
                     OLD["heads"], lag)
    probe.standardize(_gather(arrays, np.sort(rng.permutation(train)[:2048])))
    opt = torch.optim.AdamW(probe.parameters(), lr=OLD["lr"], weight_decay=OLD["wd"])
    per_epoch = max(1, math.ceil(len(train) / OLD["batch"]))
    total, warm = OLD["epochs"] * per_epoch, max(1, OLD["epochs"] * per_epoch // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    weight = None
    if balanced:
        counts = np.bincount(y[train], minlength=n_classes).astype(np.float64)
        w = np.where(counts > 0, len(train) / (n_classes * np.maximum(counts, 1)), 0.0)
        weight = torch.tensor(np.minimum(w, 20.0), dtype=torch.float32)
    y_t = torch.from_numpy(y).long()
    best: tuple[float, Any] = (-math.inf, None)
    for _ in range(OLD["epochs"]):
        probe.train()
        perm = rng.permutation(train)
        for i in range(0, len(perm), OLD["batch"]):
            b = perm[i:i + OLD["batch"]]
            loss = F.cross_entropy(probe(_gather(arrays, b)), y_t[b], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        score = select(y[val], _predict(probe, arrays, val))
        if score is not None and score > best[0]:
            best = (score, {k: v.detach().clone() for k, v in probe.state_dict().items()})
    if best[1] is not None:
        probe.load_state_dict(best[1])
    return probe


def run_old(table: Any, tok: np.ndarray, rol: np.ndarray | None, split: Any, lag: int, k: int) -> dict[str, Any]:
    """The 11 fits of the old `score()`, one after another; returns the test metrics and the fit count."""
    acc = lambda y, s: M.accuracy(y, s.argmax(1))  # noqa: E731
    auroc = lambda y, s: M.auroc(y, s[:, 1])  # noqa: E731
    rec = lambda y, s: M.mean_class_recall_at_k(y, s, k)  # noqa: E731
    out: dict[str, Any] = {}
    fits = 0

    def rows(cases: Any, y: np.ndarray) -> np.ndarray:
        return table.rows(cases, y)

    def one(task: str, cases: tuple, arrays: list[np.ndarray]) -> dict[str, Any]:
        nonlocal fits
        y = {"step": table.step, "motion": table.motion, "event": table.event, "next": table.next_step}[task]
        n = {"event": 2, "motion": len(table.motion_classes)}.get(task, len(table.step_classes))
        tr, va, te = (rows(c, y) for c in cases)
        sel = {"event": auroc, "next": rec}.get(task, acc)
        probe = old_fit(arrays, y, tr, va, n, lag, sel, balanced=task in ("event", "next"))
        fits += 1
        s = _predict(probe, arrays, te)
        if task == "event":
            thr = M.best_threshold(y[va], _predict(probe, arrays, va)[:, 1]) or 0.5
            return {"f1": M.binary_counts(y[te], (s[:, 1] >= thr).astype(int))["f1"], "auroc": M.auroc(y[te], s[:, 1])}
        if task == "next":
            return {f"recall_at_1": M.mean_class_recall_at_k(y[te], s, 1), f"recall_at_{k}": rec(y[te], s)}
        return {"acc": M.accuracy(y[te], s.argmax(1))} | (
            {"f1_video": M.per_video_f1(y[te], s.argmax(1), table.video[te])} if task == "step" else {})

    full = (split.train, split.val, split.test)
    for task in ("step", "motion", "event"):
        out[task] = one(task, full, [tok])
    out["anticipation_encoder"] = one("next", full, [tok])
    if rol is not None:
        out["anticipation_world_model"] = one("next", full, [tok, rol])
    for frac in (0.25, 0.5):
        sub = split.subset(frac)
        for task in ("step", "motion", "event"):
            out[f"{round(frac * 100)}pct/{task}"] = one(task, (sub, split.val, split.test), [tok])
    return {"fits": fits, "test": out}


# ------------------------------------------------------------------------------------------ the bank protocol

def run_new(table: Any, tok: np.ndarray, rol: np.ndarray | None, split: Any, params: Params) -> dict[str, Any]:
    """Every bank of every probe seed, the chosen heads on validation and test; the test metrics."""
    device = torch.device("cpu")
    rows = np.arange(len(table.clips))
    feats = Features(rows, [tok])
    feats_wm = Features(rows, [tok, rol]) if rol is not None else None
    train, val, test = (table.rows(c) for c in (split.train, split.val, split.test))
    tasks = build_tasks(table)
    why = {n: unusable(t, train, test) for n, t in tasks.items()}
    plans = plan_banks({n: t for n, t in tasks.items() if why[n] is None}, train, split, table, params, rol is not None)
    fits = {s: train_banks(plans, feats, feats_wm, val, s, params, device) for s in params.evaluate.seeds}
    sc = Scored(table, train, val, test, score_rows(fits, feats, feats_wm, val, device),
                score_rows(fits, feats, feats_wm, test, device), {"val": None, "test": None}, fits, plans, {})
    res = assemble(sc, tasks, why, params)
    k = params.evaluate.top_k
    a = res["anticipation"]
    test = {"step": {m: res["step"].get(m) for m in ("acc", "f1_video")}, "motion": {"acc": res["motion"].get("acc")},
            "event": {m: res["event"].get(m) for m in ("f1", "auroc")},
            "anticipation_encoder": {"recall_at_1": a.get("recall_at_1_encoder"),
                                     f"recall_at_{k}": a.get(f"recall_at_{k}_encoder")},
            "anticipation_world_model": {"recall_at_1": a.get("recall_at_1_world_model"),
                                         f"recall_at_{k}": a.get(f"recall_at_{k}_world_model")},
            "time_to_next_mae_s": a.get("time_to_next_mae_s")}
    for name, e in res["efficiency"].items():
        if name != "100pct":
            test[f"{name}/step"] = {"acc": e["step_acc"], "f1_video": e["step_f1_video"]}
            test[f"{name}/motion"] = {"acc": e["motion_acc"]}
            test[f"{name}/event"] = {"f1": e["event_f1"], "auroc": e["event_auroc"]}
    return {"fits": sum(len(f.heads) for per in fits.values() for f in per.values()), "test": test}


# ------------------------------------------------------------------------------------------------- harness

def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    w, c = time.perf_counter(), cpu_s()
    out = fn()
    return out | {"wall_s": time.perf_counter() - w, "cpu_s": cpu_s() - c}


def tokens(args: argparse.Namespace, params: Params, tmp: Path) -> tuple[Any, Any, np.ndarray, np.ndarray | None, str]:
    """The demo's tokens: the workspace's run `--name` on its decode cache, else synthetic video + an untrained
    world model of the demo's shapes."""
    ws = Path(args.workspace)
    cache, manifest = ws / "data" / "cache", ws / "data" / "cache" / "manifest.json"
    device = torch.device("cpu")
    if manifest.is_file() and (ws / "data" / "train" / args.name / "config.json").is_file():
        src = load_source(args.name, params, ws / "data" / "train", ws / "data" / "weights", device)
        origin = f"run '{args.name}' of {ws} on its decode cache"
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from eval_data import synthetic_cache  # noqa: E402  (tests/: renders the demo's data in memory)

        from models import Predictor, VideoEncoder, encoder_config
        from surgwm.evaluation.sources import world_model_source

        d, s = params.data, params.data.synthetic
        cache, manifest = synthetic_cache(tmp, seed=0, cases=s.cases, seconds=s.parts_per_case * s.part_seconds,
                                          size=d.size)
        torch.manual_seed(0)
        m = params.model
        src = world_model_source("untrained", VideoEncoder.from_config(encoder_config(
            m.encoder_dim, m.encoder_depth, m.encoder_heads, d.size, d.clip_frames)),
            Predictor(m.encoder_dim, m.predictor_dim, m.predictor_depth, m.predictor_heads), m.context_frames,
            0.1, device)
        origin = "synthetic demo-scale video (no workspace found), untrained encoder: timings only"
    table = clip_table(read_manifest(manifest), params)
    split = split_cases(table.clips, params)
    tok, rol = extract(src, open_clips(cache, params.data.clip_frames), table.clips, np.arange(len(table.clips)),
                       params.evaluate.batch_size, device, tmp / "features", "float16", params.evaluate.rollouts)
    return table, split, np.asarray(tok), None if rol is None else np.asarray(rol), origin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=str(REPO), help="a checkout whose data/ holds a finished demo run")
    ap.add_argument("--name", default="frozen", help="the run whose tokens the probes read")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--depth1", action="store_true", help="also time the bank at probe_depth 1 (one seed)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(REPO / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        table, split, tok, rol, origin = tokens(args, params, Path(tmp))
        lag = (params.data.size // 16) ** 2
        print(f"tokens: {origin}; {tok.shape[0]} clips x {tok.shape[1]} tokens x {tok.shape[2]}"
              + (f" + roll-outs {rol.shape[1]} tokens" if rol is not None else "")
              + f"; {torch.get_num_threads()} thread(s)")
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for _ in range(args.repeat):
            runs["old"].append(timed(lambda: run_old(table, tok, rol, split, lag, params.evaluate.top_k)))
            runs["new"].append(timed(lambda: run_new(table, tok, rol, split, params)))
        if args.depth1:
            p1 = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={
                "probe_depth": 1, "seeds": params.evaluate.seeds[:1], "probe_lrs": [1e-3, 3e-3],
                "probe_batch_size": 64})})
            runs["new_depth1"] = [timed(lambda: run_new(table, tok, rol, split, p1))]
    ev = params.evaluate
    best = {k: min(v, key=lambda r: r["cpu_s"]) for k, v in runs.items()}
    old = best["old"]
    print(f"\n{'recipe':11s} {'fits':>5s} {'wall s':>8s} {'CPU s':>8s} {'wall/fit':>9s} {'CPU/fit':>8s}  "
          "ratio to old (wall, CPU)")
    for k, r in best.items():
        print(f"{k:11s} {r['fits']:5d} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['wall_s'] / r['fits']:9.2f} "
              f"{r['cpu_s'] / r['fits']:8.2f}  {r['wall_s'] / old['wall_s']:.2f}, {r['cpu_s'] / old['cpu_s']:.2f}")
    print(f"new: probe_depth {ev.probe_depth}, seeds {ev.seeds}, lrs {ev.probe_lrs} x wds {ev.probe_weight_decays}, "
          f"epochs {ev.probe_epochs}, batch {ev.probe_batch_size}, precision {ev.probe_precision}")
    print("\ntest metrics (old: one probe; new: mean over probe seeds):")
    keys = sorted(set(old["test"]) | set(best["new"]["test"]))
    for key in keys:
        row = [f"{key:26s}"]
        for k in best:
            v = best[k]["test"].get(key)
            row.append(json.dumps({m: (round(x, 3) if isinstance(x, float) else x) for m, x in v.items()}
                                  if isinstance(v, dict) else (round(v, 3) if isinstance(v, float) else v)))
        print("  ".join(row))
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe_bank.json").write_text(json.dumps({"tokens": origin, "runs": runs, "threads": args.threads},
                                                    indent=1, default=float))
    print(f"\nwritten: {out / 'probe_bank.json'}")


if __name__ == "__main__":
    main()
