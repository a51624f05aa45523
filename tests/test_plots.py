"""Offline plots (surgwm/plots.py): real `dvc plots show/diff --json` in a tiny temp repo, rendered to PNG files."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np

from surgwm.plots import dvc_plots_json, main, render
from tests.dvc_repo import git, make_tiny_repo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _history(project: Path, losses: list[float]) -> None:
    rows = [{"epoch": i + 1, "loss": v, "acc": 0.1 * (i + 1)} for i, v in enumerate(losses)]
    (project / "metrics").mkdir(exist_ok=True)
    (project / "metrics" / "train_history.json").write_text(json.dumps(rows))


def _assert_drawn_png(path: Path) -> None:
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 10  # lines and text, not a blank canvas


def test_workspace_plots_render_to_png_with_the_declared_axes(tmp_path, capsys):
    project = make_tiny_repo(tmp_path / "project")
    _history(project, [3.0, 2.0, 1.5])
    assert main(["--repo", str(project), "--out", str(tmp_path / "png")]) == 0
    png = tmp_path / "png" / "metrics_train_history.png"
    _assert_drawn_png(png)
    assert str(png) in capsys.readouterr().out

    (plot,) = render(dvc_plots_json(repo=project), tmp_path / "again", project)
    assert (plot.plot_id, plot.x, plot.y) == ("metrics/train_history.json", "epoch", "loss")
    (series,) = plot.series
    assert (series.label, series.x, series.y) == ("workspace", [1.0, 2.0, 3.0], [3.0, 2.0, 1.5])


def test_diff_draws_one_series_per_revision(tmp_path):
    project = make_tiny_repo(tmp_path / "project")
    _history(project, [3.0, 2.0, 1.5])
    git(project, "add", "metrics")
    git(project, "commit", "-q", "-m", "run 1")
    _history(project, [2.5, 1.0, 0.5, 0.25])
    (plot,) = render(dvc_plots_json(["HEAD", "workspace"], project), tmp_path / "png", project)
    _assert_drawn_png(plot.png)
    got = {s.label: s.y for s in plot.series}
    assert got == {"HEAD": [3.0, 2.0, 1.5], "workspace": [2.5, 1.0, 0.5, 0.25]}


def test_a_plot_with_several_y_fields_draws_each(tmp_path):
    project = make_tiny_repo(tmp_path / "project")
    _history(project, [3.0, 2.0])
    with open(project / "dvc.yaml", "a") as f:
        f.write("plots:\n  - curves:\n      x: epoch\n      y:\n        metrics/train_history.json: [loss, acc]\n")
    plots = {p.plot_id: p for p in render(dvc_plots_json(repo=project), tmp_path / "png", project)}
    _assert_drawn_png(plots["curves"].png)
    got = {s.label: s.y for s in plots["curves"].series}
    assert got == {"workspace · loss": [3.0, 2.0], "workspace · acc": [0.1, 0.2]}
