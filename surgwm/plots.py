"""Offline plots: DVC's plots as PNG files, because `dvc plots show` writes HTML that loads Vega from a CDN and
renders blank without internet. Reads `dvc plots show/diff --json` (so it follows dvc.yaml); draws with matplotlib.

    .venv/bin/python -m surgwm.plots                      # the workspace's plots -> reports/plots/*.png (make plots)
    .venv/bin/python -m surgwm.plots HEAD workspace       # `dvc plots diff`: one line per revision
    .venv/bin/python -m surgwm.plots --out DIR --repo DIR
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surgwm.params import REPO_ROOT

OUT = Path("reports") / "plots"
# Datapoint fields DVC adds to tell series apart: revision, file (several files in one plot), y field (several y).
SERIES_FIELDS = ("rev", "filename", "field")


@dataclass
class Series:
    label: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)


@dataclass
class Plot:
    """One rendered plot: where the PNG went and what it shows (tests and the summary read this)."""
    plot_id: str
    png: Path
    x: str
    y: str
    series: list[Series]


def dvc_plots_json(revs: Sequence[str] = (), repo: Path = REPO_ROOT) -> dict[str, Any]:
    """`dvc plots show --json`, or `dvc plots diff --json REVS` when revisions are given."""
    cmd = [sys.executable, "-m", "dvc", "plots", *(["diff", *revs] if revs else ["show"]), "--json"]
    r = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed in {repo}:\n{r.stderr or r.stdout}")
    return json.loads(r.stdout)


def _encodings(spec: Any) -> Iterator[dict[str, Any]]:
    """Every `encoding` block of a Vega-Lite spec, outer first (DVC nests y inside layers)."""
    if isinstance(spec, dict):
        if isinstance(spec.get("encoding"), dict):
            yield spec["encoding"]
        for value in spec.values():
            yield from _encodings(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from _encodings(value)


def _channel(spec: dict[str, Any], name: str) -> dict[str, Any]:
    for enc in _encodings(spec):
        if isinstance(enc.get(name), dict) and "field" in enc[name] and "aggregate" not in enc[name]:
            return enc[name]
    raise ValueError(f"plot spec has no '{name}' field")


def series_of(spec: dict[str, Any]) -> tuple[str, str, list[Series]]:
    """(x title, y title, one Series per revision/file/field) from a DVC Vega-Lite spec with inline values."""
    x, y = _channel(spec, "x"), _channel(spec, "y")
    values = spec.get("data", {}).get("values", [])
    groups: dict[tuple, Series] = {}
    for point in values:
        if point.get(x["field"]) is None or point.get(y["field"]) is None:
            continue
        key = tuple(str(point[f]) for f in SERIES_FIELDS if f in point)
        s = groups.setdefault(key, Series(" · ".join(key) or y["field"]))
        s.x.append(float(point[x["field"]]))
        s.y.append(float(point[y["field"]]))
    for s in groups.values():
        order = sorted(range(len(s.x)), key=s.x.__getitem__)
        s.x, s.y = [s.x[i] for i in order], [s.y[i] for i in order]
    return x.get("title", x["field"]), y.get("title", y["field"]), list(groups.values())


def png_name(plot_id: str) -> str:
    """metrics/train_scratch_history.json -> metrics_train_scratch_history.png"""
    stem = re.sub(r"\.(json|csv|tsv|ya?ml)$", "", plot_id)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_") + ".png"


def render(plots: dict[str, Any], out_dir: Path, repo: Path = REPO_ROOT) -> list[Plot]:
    """Draw each vega plot to out_dir/<id>.png; image plots (PNG files DVC tracks) are copied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[Plot] = []
    for plot_id, entries in plots.get("data", {}).items():
        for entry in entries:
            png = out_dir / png_name(plot_id)
            if entry.get("type") == "image":
                src = repo / entry["url"] if not Path(entry["url"]).is_absolute() else Path(entry["url"])
                rev = "_".join(entry.get("revisions", []))
                png = out_dir / png_name(f"{plot_id}_{rev}")
                shutil.copyfile(src, png)
                done.append(Plot(plot_id, png, "", "", []))
                continue
            spec = entry["content"]
            xt, yt, series = series_of(spec)
            fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
            for s in series:
                ax.plot(s.x, s.y, marker="o", markersize=3, label=s.label)
            title = spec.get("title")
            ax.set_title(title.get("text", plot_id) if isinstance(title, dict) else title or plot_id, fontsize=10)
            ax.set_xlabel(xt)
            ax.set_ylabel(yt)
            ax.grid(alpha=0.3)
            if series:
                ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(png)
            plt.close(fig)
            done.append(Plot(plot_id, png, xt, yt, series))
    for message in plots.get("errors", []) or []:
        print(f"dvc reported: {message}", file=sys.stderr)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revs", nargs="*", help="revisions to compare (dvc plots diff); none: the workspace")
    ap.add_argument("--repo", type=Path, default=REPO_ROOT, help="the DVC project (default: this checkout)")
    ap.add_argument("--out", type=Path, default=None, help=f"output folder (default: <repo>/{OUT})")
    args = ap.parse_args(argv)
    out = args.out or args.repo / OUT
    done = render(dvc_plots_json(args.revs, args.repo), out, args.repo)
    for p in done:
        labels = ", ".join(f"{s.label} ({len(s.x)} pts)" for s in p.series)
        print(f"{p.png}  {p.y} vs {p.x}: {labels}" if p.series else f"{p.png}")
    if not done:
        print("no plots declared in dvc.yaml (or none of their files exist yet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
