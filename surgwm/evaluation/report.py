"""The comparison report behind the `report` stage: reports/comparison.md and PNG charts from measured metrics only.

For each run of `train.methods` and each baseline: training time, cost at `evaluate.gpu_prices`, peak memory,
final losses per component, every evaluation metric, the convergence epoch and the data-efficiency curve; a
winner per row; the device and data the numbers come from; the MLflow run ids behind them (reports/register.json).
A number the data cannot give is `n/a` with a numbered note saying why; a failed run is a `failed` column with
its reason while the others are still reported. Charts (matplotlib, PNG): loss_curves.png, data_efficiency.png,
metrics.png. `report_markdown()` returns the markdown (the flow publishes it as a Prefect markdown artifact);
the stage also attaches the report to the best run in MLflow when the tracking store is reachable.
"""

from __future__ import annotations

import shutil
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surgwm.io import read_json
from surgwm.io import atomic_write_text
from surgwm.params import REPO_ROOT, Params, load_params
from surgwm.paths import DECODED, METRICS, TRAIN
from surgwm.evaluation.charts import LOSSES, _num, plot_efficiency, plot_losses, plot_metrics
from surgwm.evaluation.records import Record, collect
from surgwm.paths import REGISTER_RECORD as RECORD
from surgwm.io import get_dotted

log = logging.getLogger("surgwm.evaluation.report")
REPORTS = REPO_ROOT / "reports"
CHARTS = "charts"                 # reports/charts/*.png, linked from reports/comparison.md


@dataclass(frozen=True)
class Row:
    label: str
    value: Callable[[Record], Any]     # a number, a string, or Missing
    better: str | None = None          # "high" | "low" | None (no winner)
    fmt: str = "{:.3f}"
    methods_only: bool = False


class Missing(str):
    """Why a number cannot be given (shown as n/a with a note)."""


def _ev(path: str, section_note: str | None = None) -> Callable[[Record], Any]:
    """A value of metrics/evaluate_<name>.json, or the section's `unavailable` reason."""

    def f(r: Record) -> Any:
        section = path.split(".")[0]
        sec = (r.evaluate or {}).get(section)
        if isinstance(sec, dict) and "unavailable" in sec:
            return Missing(sec["unavailable"])
        v = get_dotted(r.evaluate, path)
        if v is None:
            return Missing(section_note or f"not measured ({path} absent)")
        return v

    return f


def _train(key: str) -> Callable[[Record], Any]:
    def f(r: Record) -> Any:
        v = (r.train or {}).get(key)
        if v is None:
            return Missing(f"the train metrics have no {key}" + (" (no validation cases)" if key.startswith("val_")
                                                                 else ""))
        return v

    return f


def _priced(usd_per_hour: float) -> Callable[[Record], Any]:
    """Measured train time at a price per GPU-hour (applied here, so a price change re-runs no probe)."""
    secs = _ev("cost.train_time_s")

    def f(r: Record) -> Any:
        v = secs(r)
        return v if isinstance(v, Missing) else round(v / 3600 * usd_per_hour, 4)

    return f


def rows(params: Params, records: Sequence[Record]) -> list[tuple[str, list[Row]]]:
    k = params.evaluate.top_k
    prices = params.evaluate.gpu_prices
    train = [Row("train device", _ev("cost.device"), methods_only=True),
             Row("train wall time (s)", _ev("cost.train_time_s"), "low", "{:.1f}", True)]
    train += [Row(f"cost at {name} ${p:.2f}/h (USD)", _priced(p), "low", "{:.4f}", True)
              for name, p in prices.items()]
    train += [Row("peak memory (MB)", _ev("cost.peak_memory_mb", "the train stage did not record peak memory "
                                            "(peak_memory_mb in metrics/train_<run>.json)"), "low", "{:.0f}", True),
              Row("epochs", _train("epochs"), None, "{:.0f}", True),
              Row("train clips / cases", lambda r: (f"{r.train['train_clips']} / {r.train['train_cases']}"
                                                     if r.train and "train_clips" in r.train else
                                                     Missing("not in the train metrics")), None, "{}", True)]
    train += [Row(f"final train {c} loss" if c != "loss" else "final train total loss", _train(f"train_{c}"),
                  "low", "{:.4f}", True) for c in LOSSES]
    train += [Row(f"final val {c} loss" if c != "loss" else "final val total loss", _train(f"val_{c}"),
                  "low", "{:.4f}", True) for c in LOSSES]
    metric, frac = params.evaluate.convergence_metric, params.evaluate.convergence_fraction
    conv = (f"convergence epoch (first within {1 / frac - 1:.0%} of the final {metric})" if "loss" in metric
            else f"convergence epoch (first >= {frac:.0%} of the final {metric})")
    train += [Row(conv, _ev("convergence.epoch"), "low", "{:.0f}", True)]
    ev = [Row("step: per-video weighted F1 (SurgVU)", _ev("step.f1_video"), "high"),
          Row("step: top-1 accuracy", _ev("step.acc"), "high"),
          Row("motion: top-1 accuracy", _ev("motion.acc"), "high"),
          Row(f"anticipation: next-step mean class recall@{k}, encoder only",
              _ev(f"anticipation.recall_at_{k}_encoder"), "high"),
          Row("anticipation: ... with the predictor's rolled-out future",
              _ev(f"anticipation.recall_at_{k}_world_model", "no predictor (baseline)"), "high"),
          Row("event: accuracy", _ev("event.acc"), "high"),
          Row("event: F1", _ev("event.f1"), "high"),
          Row("event: precision", _ev("event.precision"), "high"),
          Row("event: recall", _ev("event.recall"), "high"),
          Row("event: AUROC", _ev("event.auroc", "undefined: one class only in the test cases"), "high"),
          Row("future: held-out temporal loss", _ev("future.temporal"), "low", "{:.4f}"),
          Row("future: held-out contrastive loss", _ev("future.contrastive"), "low", "{:.4f}"),
          Row(f"future: top-1 retrieval among {params.evaluate.batch_size}", _ev("future.retrieval_top1"), "high")]
    eff = []
    for frac in sorted(set(params.evaluate.fractions)):
        tag = f"{round(frac * 100)}pct"
        for key, label in (("step_f1_video", "step F1"), ("motion_acc", "motion acc"), ("event_f1", "event F1"),
                           ("event_auroc", "event AUROC")):
            eff.append(Row(f"{label} @ {frac:.0%} of training cases", _eff(tag, key), "high"))
    return [("Training and cost", train), ("Evaluation (frozen encoder, attentive probe, test cases)", ev),
            ("Data efficiency (probe trained on a share of the training cases)", eff)]


def _eff(tag: str, key: str) -> Callable[[Record], Any]:
    def f(r: Record) -> Any:
        point = get_dotted(r.evaluate, f"efficiency.{tag}")
        if point is None:
            return Missing("fraction not evaluated")
        v = point.get(key)
        return v if v is not None else Missing(f"{key.split('_')[0]} not measurable on this data")

    return f


def table(section_rows: list[Row], records: Sequence[Record], notes: list[str]) -> list[str]:
    names = [r.name for r in records]
    out = ["| | " + " | ".join(f"`{n}`" for n in names) + " | winner |", "|---" * (len(names) + 2) + "|"]
    for row in section_rows:
        cells, scored = [], []
        for r in records:
            if row.methods_only and r.kind != "method":
                cells.append("—")
                continue
            if r.status != "ok":
                cells.append(f"**{r.status}**")
                continue
            v = row.value(r)
            if isinstance(v, Missing):
                if v not in notes:
                    notes.append(v)
                cells.append(f"n/a [{notes.index(v) + 1}]")
            elif _num(v):
                cells.append(row.fmt.format(v))
                scored.append((r.name, float(v)))
            else:
                cells.append(str(v))
        winner = "—"
        if row.better and len(scored) >= 2:
            best = (max if row.better == "high" else min)(v for _, v in scored)
            tied = [n for n, v in scored if abs(v - best) <= 1e-9 + 1e-6 * abs(best)]
            winner = (f"`{tied[0]}`" if len(tied) == 1 else "none (all equal)" if len(tied) == len(scored)
                      else "tie: " + ", ".join(f"`{n}`" for n in tied))
        out.append(f"| {row.label} | " + " | ".join(cells) + f" | {winner} |")
    return out


def comparison_markdown(params: Params, records: Sequence[Record], register_record: dict[str, Any] | None,
                        manifest: dict[str, Any] | None = None, charts: Sequence[str] = ()) -> str:
    ok = [r for r in records if r.status == "ok"]
    ref = next((r.evaluate for r in ok if r.evaluate), {}) or {}
    split = ref.get("split", {})
    lines = ["# Comparison of training methods and baselines", "",
             "Every number below was measured by this pipeline on the data named here; `n/a [k]` marks a number "
             "this data cannot give (note k says why). Baselines are not trained, so their training rows are `—`.",
             ""]
    d = params.data
    videos = [v for v in (manifest or {}).get("videos", []) if not v.get("error")]
    lines += ["## Data and devices", "",
              f"- data: `data.source: {d.source}`, root `{d.root}`; {len({v['case'] for v in videos}) or '?'} cases, "
              f"{len(videos) or '?'} usable videos, {d.fps:g} fps, {d.size}x{d.size} px, clips of {d.clip_frames} "
              f"frames every {d.clip_stride}",
              f"- test cases ({split.get('test_from', 'n/a')}): {', '.join(split.get('test_cases', [])) or 'n/a'}; "
              f"{split.get('test_clips', '?')} test clips; probe validation cases: "
              f"{', '.join(split.get('val_cases', [])) or 'n/a'}; probe training cases: "
              f"{len(split.get('train_cases', []))}",
              f"- evaluation key `{ref.get('eval_key', 'n/a')}` (same key = same test clips, labels and probe recipe)",
              f"- evaluation device: {ref.get('eval_device', 'n/a')}"]
    for r in ok:
        if r.kind == "method":
            seen = get_dotted(r.evaluate, "split.test_cases_seen_by_world_model")
            lines.append(f"- `{r.name}` trained on {get_dotted(r.evaluate, 'cost.device') or 'n/a'}"
                         + (f"; its world model saw test case video(s) {', '.join(seen)} (unlabelled)" if seen else ""))
    prices = ", ".join(f"{n} ${p:.2f}/h" for n, p in params.evaluate.gpu_prices.items())
    lines += [f"- cost = measured train wall time x price per GPU-hour ({prices}). A price is only meaningful for "
              "the device it names: on another device (or a CPU) the same work takes a different time.", ""]
    failed = [r for r in records if r.status != "ok"]
    if failed:
        lines += ["## Failed or missing", ""]
        lines += [f"- `{r.name}` ({r.kind}) **{r.status}**: {r.error}" for r in failed]
        lines.append("")
    lines += _headline(params, records)
    notes: list[str] = []
    for title, section_rows in rows(params, records):
        lines += [f"## {title}", ""] + table(section_rows, records, notes) + [""]
    if notes:
        lines += ["Notes:", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)] + [""]
    lines += _registry(register_record, records)
    if charts:
        lines += ["## Charts", ""] + [f"![{Path(c).stem}]({c})" for c in charts] + [""]
    conf = [r.name for r in ok if r.evaluate and get_dotted(r.evaluate, "step.f1_video") is not None]
    if conf:
        lines += ["Confusion matrices of the step probes: " + ", ".join(
            f"[`{n}`](../data/evaluate/{n}/step_confusion.png)" for n in conf), ""]
    return "\n".join(lines).rstrip() + "\n"


def _headline(params: Params, records: Sequence[Record]) -> list[str]:
    metric = params.register.metric
    scored = [(r.name, r.kind, get_dotted(r.evaluate, metric)) for r in records if r.status == "ok"]
    scored = [(n, k, v) for n, k, v in scored if _num(v)]
    if not scored:
        return ["## Headline", "", f"`{metric}` (register.metric) was not measured for any run.", ""]
    scored.sort(key=lambda t: t[2], reverse=params.register.greater_is_better)
    out = ["## Headline", "", f"Ranking by `{metric}` (register.metric; "
           f"{'higher' if params.register.greater_is_better else 'lower'} is better):", ""]
    out += [f"{i}. `{n}` ({k}): {v:.3f}" for i, (n, k, v) in enumerate(scored, 1)]
    greater = params.register.greater_is_better
    bases = [v for _, k, v in scored if k == "baseline"]
    best_base = (max if greater else min)(bases) if bases else None
    if best_base is not None and any(k == "method" for _, k, _ in scored):
        beat = [n for n, k, v in scored if k == "method" and (v > best_base if greater else v < best_base)]
        out += ["", ("Methods beating every baseline on it: " + ", ".join(f"`{n}`" for n in beat)) if beat else
                "No trained method beats the best baseline on it on this data."]
    return out + [""]


def _registry(record: dict[str, Any] | None, records: Sequence[Record]) -> list[str]:
    out = ["## MLflow runs and the registry", ""]
    if not record:
        return out + ["Not logged: reports/register.json is missing (the register stage has not run, or the "
                      "tracking store was unreachable). Every number above comes from metrics/*.json.", ""]
    if record.get("status") == "failed":
        return out + [f"Not logged: the register stage failed: {record.get('error')}. Every number above comes from "
                      "metrics/*.json; re-running `register` logs them.", ""]
    out += [f"Tracking store `{record.get('tracking_uri')}`, experiment `{record.get('experiment')}` "
            f"(id {record.get('experiment_id')}).", "", "| name | status | MLflow run id |", "|---|---|---|"]
    runs = record.get("runs", {})
    out += [f"| `{r.name}` | {r.status} | `{runs.get(r.name, {}).get('run_id', 'not logged')}` |" for r in records]
    dec = record.get("decision", {})
    out += ["", f"Registered model `{record.get('model')}`: best by `{record.get('metric')}` is `{record.get('best')}` "
            f"({record.get('score', float('nan')):.4f}) = version {record.get('version')} (alias `challenger`). "
            f"Champion: version {get_dotted(record, 'aliases.champion')} — {dec.get('reason', '')}.", ""]
    return out


# --------------------------------------------------------------------------------------------------- stage

def report_markdown(params: Params | None = None, *, metrics_dir: Path = METRICS, train_root: Path = TRAIN, manifest_path: Path = DECODED, register_path: Path = RECORD,
                    charts: Sequence[str] = ()) -> str:
    """The comparison as markdown, from the metrics files (what the flow publishes as a Prefect artifact)."""
    params = params or load_params()
    records = collect(params, metrics_dir, train_root)
    return comparison_markdown(params, records, read_json(register_path), read_json(manifest_path), charts)


def write_report(params: Params, *, metrics_dir: Path = METRICS, train_root: Path = TRAIN,
                 manifest_path: Path = DECODED, register_path: Path = RECORD, out_dir: Path = REPORTS) -> Path:
    out_dir = Path(out_dir)
    chart_dir = out_dir / CHARTS
    shutil.rmtree(chart_dir, ignore_errors=True)  # charts of runs that no longer exist must not linger
    chart_dir.mkdir(parents=True, exist_ok=True)
    records = collect(params, metrics_dir, train_root)
    charts = []
    histories = {r.name: r.history for r in records if r.kind == "method" and r.status == "ok" and r.history}
    if histories:
        plot_losses(histories, chart_dir / "loss_curves.png")
        charts.append(f"{CHARTS}/loss_curves.png")
    if any(r.status == "ok" for r in records):
        plot_efficiency(records, chart_dir / "data_efficiency.png")
        plot_metrics(records, params.evaluate.top_k, chart_dir / "metrics.png")
        charts += [f"{CHARTS}/data_efficiency.png", f"{CHARTS}/metrics.png"]
    md = comparison_markdown(params, records, read_json(register_path), read_json(manifest_path), charts)
    path = out_dir / "comparison.md"
    atomic_write_text(path, md)
    return path


def attach_to_mlflow(report_dir: Path, register_record: dict[str, Any] | None) -> str | None:
    """Log the report to the best run (reports/register.json); best effort: a warning, never a failure."""
    if not register_record or not register_record.get("best"):
        return None
    run_id = get_dotted(register_record, f"runs.{register_record['best']}.run_id")
    try:
        from surgwm.tracking.client import connect

        client = connect(register_record.get("tracking_uri"))
        client.log_artifact(run_id, str(Path(report_dir) / "comparison.md"), "report")
        if (Path(report_dir) / CHARTS).is_dir():
            client.log_artifacts(run_id, str(Path(report_dir) / CHARTS), f"report/{CHARTS}")
        return run_id
    except Exception as err:  # noqa: BLE001 - the report on disk is what matters
        log.warning("report not attached to MLflow run %s: %s", run_id, err)
        return None


