"""The report's charts (matplotlib, PNG, offline): loss curves, data efficiency, metrics, confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surgwm.evaluation.records import Record
from surgwm.io import get_dotted

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


def plot_metrics(records: Sequence[Record], k: int, path: Path) -> None:
    plt = _plt()
    keys = [("step.f1_video", "step F1"), ("step.acc", "step acc"), ("motion.acc", "motion acc"),
            (f"anticipation.recall_at_{k}_encoder", f"antic. R@{k}"),
            (f"anticipation.recall_at_{k}_world_model", f"antic. R@{k} +WM"), ("event.f1", "event F1"),
            ("event.auroc", "event AUROC"), ("future.retrieval_top1", "future top-1")]
    ok = [r for r in records if r.status == "ok"]
    fig, ax = plt.subplots(figsize=(13, 4))
    width = 0.8 / max(1, len(ok))
    for i, r in enumerate(ok):
        vals = [get_dotted(r.evaluate, key) for key, _ in keys]
        xs = [j + i * width for j, v in enumerate(vals) if _num(v)]
        ax.bar(xs, [v for v in vals if _num(v)], width, color=f"C{i}", label=r.name,
               hatch="//" if r.kind == "baseline" else None)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], [lab for _, lab in keys], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(5, len(ok)) or 1)
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
