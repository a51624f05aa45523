"""The report's charts (matplotlib, PNG, offline): loss curves, data efficiency, metrics, confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surgwm.evaluation.records import Record

LOSSES = ("temporal", "contrastive", "loss")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:  # noqa: ANN001 - matplotlib's module and Figure
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_losses(histories: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Train (solid) and validation (dashed) losses per epoch, one panel per component."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, comp in zip(axes, LOSSES):
        for i, (name, hist) in enumerate(histories.items()):
            color = f"C{i}"
            for split, style in (("train", "-"), ("val", "--")):
                pts = [(h["epoch"], h[f"{split}_{comp}"]) for h in hist if _num(h.get(f"{split}_{comp}"))]
                if pts:
                    ax.plot(*zip(*pts), style, color=color, marker=".", label=f"{name} {split}")
        ax.set_title(f"{comp} loss" if comp != "loss" else "total loss")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(plt, fig, path)


def plot_efficiency(records: Sequence[Record], path: Path) -> None:
    plt = _plt()
    keys = (("step_f1_video", "step F1 (per video)"), ("motion_acc", "motion accuracy"), ("event_f1", "event F1"),
            ("event_auroc", "event AUROC"))
    fig, axes = plt.subplots(1, len(keys), figsize=(15, 3.6))
    for ax, (key, title) in zip(axes, keys):
        for i, r in enumerate(x for x in records if x.status == "ok"):
            eff = (r.evaluate or {}).get("efficiency") or {}
            pts = sorted((p["fraction"], p.get(key)) for p in eff.values() if "fraction" in p)
            pts = [(f, v) for f, v in pts if _num(v)]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=f"C{i}", linestyle="-" if r.kind == "method" else ":",
                        label=r.name)
        ax.set_title(title)
        ax.set_xlabel("share of training cases")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(plt, fig, path)


def plot_metrics(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Headline test metrics (reports/comparison.json rows with `better: high`): one bar per name with its 95 %
    interval as an error bar, and the best reference rule as a grey tick."""
    plt = _plt()
    rows = [r for r in rows if r.get("better") == "high"]
    names = list(dict.fromkeys(n for r in rows for n in r["values"]))
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(rows) + 2), 4.2))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        pts = [(j, r["values"][name]) for j, r in enumerate(rows) if name in r["values"]
               and _num(r["values"][name].get("point"))]
        if not pts:
            continue
        xs = [j + i * width for j, _ in pts]
        ys = [v["point"] for _, v in pts]
        err = [[max(0.0, v["point"] - v["lo"]) if _num(v.get("lo")) else 0.0 for _, v in pts],
               [max(0.0, v["hi"] - v["point"]) if _num(v.get("hi")) else 0.0 for _, v in pts]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, color=f"C{i}", label=name)
    for j, r in enumerate(rows):
        rule = r.get("best_rule")
        v = (r.get("rules") or {}).get(rule or "", {}).get("point")
        if _num(v):
            ax.hlines(v, j - width / 2, j + 0.8 - width / 2, colors="0.3", linestyles="--", linewidth=1,
                      label="best reference rule" if j == 0 else None)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], [_short(r["key"]) for r in rows], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test score (95 % interval)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(5, len(names) + 1) or 1)
    _save(plt, fig, path)


def _short(key: str) -> str:
    """A tick label for a metrics-JSON key: step.f1_video -> 'step F1', anticipation.recall_at_5_world_model ->
    'antic. R@5 +WM'."""
    task, _, name = key.partition(".")
    if task == "anticipation" and name.startswith("recall_at_"):
        k, _, who = name.removeprefix("recall_at_").partition("_")
        return f"antic. R@{k}" + (" +WM" if who == "world_model" else "")
    return {"f1_video": "step F1", "f1_video_official": "step F1\nofficial", "acc": f"{task} acc",
            "f1": f"{task} F1", "auroc": f"{task} AUROC"}.get(name, key)


def precision_recall(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct threshold, highest threshold first."""
    y = np.asarray(y) == 1
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, ys = np.asarray(scores)[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]
    tp, fp = np.cumsum(ys)[last], np.cumsum(~ys)[last]
    return tp / max(1, y.sum()), tp / (tp + fp)


def plot_precision_recall(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """The rare event's precision-recall curves on the test cases (seed-mean scores per name); the dotted line is
    the event rate (a random score's precision)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    rate = None
    for i, (name, (y, s)) in enumerate(curves.items()):
        if not (np.asarray(y) == 1).any():
            continue
        rec, prec = precision_recall(y, s)
        rule = name.startswith("rule:")
        ax.step(np.r_[0, rec], np.r_[prec[0], prec], where="post", color="0.4" if rule else f"C{i}",
                linestyle="--" if rule else "-", label=name)
        rate = float(np.mean(np.asarray(y) == 1))
    if rate is not None:
        ax.axhline(rate, color="0.6", linestyle=":", label=f"event rate {rate:.3f} (chance)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("rare event: precision-recall (test cases)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(plt, fig, path)


def plot_confusion(cm: np.ndarray, classes: Sequence[str], title: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 1.0 * len(classes) + 1.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
