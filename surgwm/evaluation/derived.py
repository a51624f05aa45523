"""Rows derived from the train stage's records: convergence epoch, cost, and the held-out check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


from surgwm.data.clips import Clip
from surgwm.data.split import split_by_case
from surgwm.params import Params
from surgwm.evaluation.split import EvalSplit


def convergence(history: Sequence[dict[str, Any]] | None, metric: str, fraction: float) -> dict[str, Any]:
    """First epoch whose `metric` reaches `fraction` of its final value; for losses (lower is better), the first
    epoch whose value is within final / fraction."""
    vals = [(h["epoch"], h[metric]) for h in history or [] if isinstance(h.get(metric), (int, float))]
    if not vals:
        return {"unavailable": f"no '{metric}' in the train history (needs validation cases: train.val_fraction > 0)"}
    final = vals[-1][1]
    lower = "loss" in metric or metric.endswith(("temporal", "contrastive"))
    if lower:
        reached = next(e for e, v in vals if v <= final / fraction) if final > 0 else vals[-1][0]
    else:
        reached = next(e for e, v in vals if v >= fraction * final)
    return {"epoch": int(reached), "epochs": len(vals), "metric": metric, "final": float(final),
            "rule": f"first epoch with {metric} {'<= final / ' if lower else '>= final * '}{fraction}"}


def cost(train_metrics: dict[str, Any] | None, run_config: dict[str, Any] | None) -> dict[str, Any]:
    """What the run cost where it ran: wall time, device, peak memory. The report prices it (evaluate.gpu_prices),
    so a price change re-runs no probe."""
    if not train_metrics or "train_time_s" not in train_metrics:
        return {"unavailable": "no train_time_s in the train metrics"}
    secs = float(train_metrics["train_time_s"])
    device = (train_metrics.get("device_name") or train_metrics.get("device")
              or (run_config or {}).get("device_name") or (run_config or {}).get("device") or "unknown")
    peak = next((train_metrics[k] for k in ("peak_memory_mb", "peak_gpu_memory_mb", "peak_rss_mb")
                 if isinstance(train_metrics.get(k), (int, float))), None)
    return {"train_time_s": secs, "device": str(device), "peak_memory_mb": peak,
            **({} if peak is not None else {"peak_memory_note": "not recorded by the train stage"})}


def held_out_check(name: str, params: Params, clips: Sequence[Clip], split: EvalSplit) -> list[str]:
    """Test cases whose (unlabelled) video this run's world model trained on: empty when the split is clean."""
    if name not in params.train.methods:
        return []
    t = params.train.resolve(name)
    seen = set(split_by_case(clips, t.val_fraction, t.seed).train_cases)
    return sorted(seen & set(split.test))
