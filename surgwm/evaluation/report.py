"""The comparison report behind the `report` stage: reports/comparison.md, reports/comparison.json, PNG charts.

Everything comes from measured outputs only: metrics/*.json and data/evaluate/<name>/outputs.npz. compare.py
computes every interval, difference, reference rule, winner and claim; this module renders them. The report
opens with the sizes that bound the comparison and one generated sentence per headline claim saying whether its
interval supports it; test scores are the final measurement (the registry selected on validation cases).
A number the data cannot give is `n/a` with a numbered note saying why; a failed run is listed with its reason
while the others are still reported. Charts (matplotlib, PNG, reports/charts/): loss_curves.png,
data_efficiency.png, metrics.png (intervals), event_pr.png (the rare event's precision-recall curves).
docs/evaluation_report.md says how to read it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surgwm.evaluation.charts import LOSSES, _num, plot_efficiency, plot_losses, plot_metrics, plot_precision_recall
from surgwm.evaluation.compare import build, event_curves, load_units
from surgwm.evaluation.records import Record, collect
from surgwm.device import same_device
from surgwm.io import atomic_write_text, get_dotted, read_json, write_json
from surgwm.params import Params, load_params
from surgwm.paths import DECODED, EVALUATE, METRICS, REPORTS, TRAIN
from surgwm.paths import REGISTER_RECORD as RECORD

log = logging.getLogger("surgwm.evaluation.report")
CHARTS = "charts"                 # reports/charts/*.png, linked from reports/comparison.md


class Notes(list):
    """Numbered reasons behind `n/a [k]` cells."""

    def ref(self, why: str) -> str:
        if why not in self:
            self.append(why)
        return f"n/a [{self.index(why) + 1}]"


def _fmt(key: str) -> str:
    return "{:.2f}" if key.endswith("_s") else "{:.3f}"


def _cell(v: dict[str, Any] | None, fmt: str) -> str:
    if not v or v.get("point") is None:
        return "—"
    lo, hi = v.get("lo"), v.get("hi")
    rng = f" [{fmt.format(lo)}, {fmt.format(hi)}]" if lo is not None and hi is not None else " [n/a]"
    return fmt.format(v["point"]) + rng


# ---------------------------------------------------------------------------------------------- sections

def _events(sizes: dict[str, Any]) -> str:
    """'3 events in 7 clips'; a count the data does not give is left out, never printed as None."""
    events, clips = sizes.get("test_events"), sizes.get("test_event_clips")
    if events is None:
        return "events: not in this data"
    return f"{events} event{'' if events == 1 else 's'}" + (f" in {clips} clips" if clips is not None else "")


def _bounds(comparison: dict[str, Any], params: Params) -> list[str]:
    out = ["## What this comparison can and cannot tell", ""]
    groups = comparison.get("groups", [])
    if not groups:
        return out + ["No name has per-row evaluation outputs (data/evaluate/<name>/outputs.npz), so nothing below "
                      "carries an interval and no claim can be checked.", ""]
    for g in groups:
        s = g["sizes"]
        wm = s.get("world_model_seeds") or {}
        repeated = {n: m for n, m in wm.items() if m > 1}
        out.append(
            (f"- Evaluation key `{g['eval_key']}`: " if len(groups) > 1 else "- ")
            + f"**{s['test_cases']} test cases** ({s['test_videos']} videos, {s.get('test_clips', '?')} clips, "
              f"{_events(s)}); probe validation "
              f"{s['val_cases']} cases, probe training {s.get('train_cases', '?')} cases; "
              f"{s.get('probe_seeds', '?')} probe seed(s) per name; world-model seeds: "
            + (", ".join(f"`{n}` {m}" for n, m in repeated.items()) if repeated else "one run per method")
            + f"; {comparison['resamples']} bootstrap resamples.")
    out += ["- Every interval is a 95 % percentile bootstrap over **test cases** (a case is the unit: its clips are "
            "not independent), paired across names (every name sees the same cases in each resample); probe seeds "
            "and world-model seeds are resampled too where a name has several. `comparison.json` lists what each "
            "interval covers. With few cases the intervals are wide: read them before any ranking.",
            "- A winner is named only when the interval of its difference from the runner-up excludes zero AND it "
            "beats the best reference rule (chance, majority, label prior) the same way; otherwise "
            "\"no clear winner\". A method beats nothing that a rule already reaches.",
            "- Test scores are the final measurement only: the registry ranked the runs and gated the champion on "
            "the probe-validation cases (section *Selection*).",
            "- Not covered by any interval: training cost (one measurement per run, on the device named), "
            "data-efficiency points (no per-clip scores for those probes), future-prediction losses.", ""]
    claims = [c for g in groups for c in g.get("claims", [])]
    if claims:
        out += ["### Headline claims", ""]
        out += [f"- **{'supported' if c['supported'] else 'not supported'}**: {c['sentence']}" for c in claims]
        out.append("")
    return out


def _eval_tables(comparison: dict[str, Any], records: Sequence[Record], notes: Notes) -> list[str]:
    out: list[str] = []
    no_rows = [r for r in records if r.status == "ok" and not any(
        r.name in u["members"] for g in comparison.get("groups", []) for u in g["units"])]
    for g in comparison.get("groups", []):
        names = [u["name"] for u in g["units"]]
        label = {u["name"]: f"`{u['name']}`" + (f" ×{len(u['members'])}" if len(u["members"]) > 1 else "")
                 for u in g["units"]}
        rules = ["chance", "majority", "prior"]
        title = "## Evaluation on the test cases (final measurement; 95 % intervals)"
        out += [title + (f" — evaluation key `{g['eval_key']}`" if len(comparison["groups"]) > 1 else ""), ""]
        pooled = [u for u in g["units"] if len(u["members"]) > 1]
        if pooled:
            out += ["Pooled over world-model seeds: " + "; ".join(
                f"`{u['name']}` = " + ", ".join(f"`{m}`" for m in u["members"]) for u in pooled), ""]
        extra = [r.name for r in no_rows]
        out += ["| metric | " + " | ".join(label[n] for n in names) + "".join(f" | `{n}`" for n in extra)
                + " | chance | majority | label prior | winner | not clearly above the best rule |",
                "|---" * (len(names) + len(extra) + 6) + "|"]
        for row in g["rows"]:
            fmt = _fmt(row["key"])
            cells = [_cell(row["values"].get(n), fmt) for n in names]
            for n in extra:
                rec = next(r for r in records if r.name == n)
                v = get_dotted(rec.evaluate, row["key"])
                cells.append(fmt.format(v) + " " + notes.ref(f"`{n}`: no interval: data/evaluate/{n}/outputs.npz "
                                                              "is missing (point from its metrics JSON)")
                             if _num(v) else "—")
            cells += [_cell(row["rules"].get(r), fmt) for r in rules]
            below = ", ".join(f"`{n}`" for n in row["not_above_rule"]) or "—"
            if row.get("best_rule") is None:
                below = "— (no rule)"
            out.append(f"| {row['label']} | " + " | ".join(cells) + f" | {row['decision']['text']} | {below} |")
            for mm in row.get("json_mismatch", []):
                notes.ref(f"`{mm['name']}` {row['key']}: its metrics JSON says {mm['metrics_json']:.4f}, the "
                          f"scores in outputs.npz give {mm['outputs_npz']:.4f} (the table shows the latter)")
        out.append("")
        covers = {}
        for row in g["rows"]:
            for n, v in row["values"].items():
                covers.setdefault(n, v.get("covers"))
        if covers:
            out += ["Each interval covers: " + "; ".join(f"{label.get(n, n)}: {', '.join(c or ['n/a'])}"
                                                        for n, c in covers.items()) + ".", ""]
        if g.get("rules"):
            out += ["Reference rules (learned on the probe-training cases only, scored on the same rows with the same "
                    "resamples):", ""]
            for task, desc in g["rules"].items():
                out.append(f"- {task}: " + "; ".join(f"**{'label prior' if r == 'prior' else r}**: {d}"
                                                     for r, d in desc.items()))
            out.append("")
        out += _differences(g, label)
        out += _per_class(g, label)
    return out


def _differences(g: dict[str, Any], label: dict[str, str]) -> list[str]:
    out = ["### Differences (paired over the same resamples; 95 %)", "",
           "Method minus each baseline and minus the best reference rule, for the headline metrics; ✓ = the interval "
           "lies wholly on the method's better side of zero.", ""]
    rows = [r for r in g["rows"] if r["primary"] and (r["vs_baselines"] or r["vs_best_rule"])]
    if not rows:
        return []
    for r in rows:
        bases = list(dict.fromkeys(b for per in r["vs_baselines"].values() for b in per))
        names = [n for n in r["values"] if n in r["vs_best_rule"] or n in r["vs_baselines"]]
        rule = r.get("best_rule")
        head = [f"`{b}`" for b in bases] + ([f"rule `{rule}`"] if rule else [])
        if not head:
            continue
        out += [f"**{r['label']}** ({'higher' if r['better'] == 'high' else 'lower'} is better)", "",
                "| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        for n in names:
            cells = []
            for b in bases:
                v = r["vs_baselines"].get(n, {}).get(b)
                cells.append("—" if v is None else _diff(v))
            if rule:
                cells.append(_diff(r["vs_best_rule"].get(n)))
            out.append(f"| {label.get(n, n)} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _diff(v: dict[str, Any] | None) -> str:
    if not v or v.get("point") is None:
        return "—"
    lo = "n/a" if v.get("lo") is None else f"{v['lo']:+.3f}"
    hi = "n/a" if v.get("hi") is None else f"{v['hi']:+.3f}"
    return f"{v['point']:+.3f} [{lo}, {hi}]" + (" ✓" if v.get("beats") else "")


def _per_class(g: dict[str, Any], label: dict[str, str]) -> list[str]:
    rows = g.get("per_class_f1") or []
    if not rows:
        return []
    names = list(dict.fromkeys(n for r in rows for n in r["values"]))
    out = ["### Per-class step F1 (test clips, 95 %)", "",
           "| class | " + " | ".join(label.get(n, f"`{n}`") for n in names) + " | label prior |",
           "|---" * (len(names) + 2) + "|"]
    for r in rows:
        out.append(f"| {r['label'].removeprefix('step F1: ')} | " + " | ".join(
            _cell(r["values"].get(n), "{:.3f}") for n in names) + f" | {_cell(r['rules'].get('prior'), '{:.3f}')} |")
    return out + ["", "A class without test clips and never predicted has no F1 (—)." , ""]


def _selection(comparison: dict[str, Any], params: Params, register_record: dict[str, Any] | None) -> list[str]:
    out = ["## Selection (probe-validation cases, never test)", ""]
    metric = params.register.metric
    shown = False
    for g in comparison.get("groups", []):
        v = g.get("validation")
        if not v:
            continue
        shown = True
        fmt = _fmt(v["key"])
        out += [f"`register.metric` = `{metric}` on the {v['cases']} validation cases, with its interval over "
                "them (what the registry ranks by and gates on):", "",
                "| | " + " | ".join(f"`{n}`" for n in v["values"]) + " | best rule |",
                "|---" * (len(v["values"]) + 2) + "|",
                "| validation | " + " | ".join(_cell(x, fmt) for x in v["values"].values())
                + f" | {_cell(v['rules'].get(v['best_rule'] or ''), fmt)} {('`' + v['best_rule'] + '`') if v['best_rule'] else ''} |", ""]
    if not shown:
        out += [f"`{metric}` has no per-case validation scores to show (outputs.npz missing, or no such metric).", ""]
    dec = (register_record or {}).get("decision") or {}
    if dec.get("reason"):
        out += [f"The registry's decision: {dec['reason']}.", ""]
    return out


def _future(records: Sequence[Record], params: Params, notes: Notes) -> list[str]:
    ok = [r for r in records if r.status == "ok" and r.kind == "method"]
    if not ok:
        return []
    spaces = {r.name: get_dotted(r.evaluate, "future.space") for r in ok}
    common = len(set(spaces.values())) == 1 and None not in spaces.values()
    why = (f"one common space ({next(iter(spaces.values()))}), but the evaluation gives no per-clip future scores, "
           "so no interval and no winner" if common else
           "each run is scored against its own encoder's targets (future.space differs or is not stated): the rows "
           "do not compare like with like, so no winner")
    rows = [("future: held-out temporal loss", "future.temporal", "{:.4f}"),
            ("future: held-out contrastive loss", "future.contrastive", "{:.4f}"),
            (f"future: top-1 retrieval among {params.evaluate.batch_size}", "future.retrieval_top1", "{:.3f}")]
    out = ["## Future prediction (no intervals)", "", why[0].upper() + why[1:] + ".", "",
           "| | " + " | ".join(f"`{r.name}`" for r in ok) + " |", "|---" * (len(ok) + 1) + "|"]
    for lab, key, fmt in rows:
        cells = []
        for r in ok:
            sec = (r.evaluate or {}).get("future") or {}
            v = get_dotted(r.evaluate, key)
            cells.append(fmt.format(v) if _num(v) else notes.ref(sec.get("unavailable", f"{key} not measured")))
        out.append(f"| {lab} | " + " | ".join(cells) + " |")
    if any(spaces.values()):
        out.append("| scored in | " + " | ".join(str(spaces[r.name] or "not stated") for r in ok) + " |")
    return out + [""]


def cost_rows(params: Params, records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """Per run: train time + feature-cache build, device-hours, and USD where a price names its device exactly."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.kind != "method" or r.status != "ok":
            continue
        tm = r.train or {}
        train_s = tm.get("train_time_s", get_dotted(r.evaluate, "cost.train_time_s"))
        if not _num(train_s):
            out[r.name] = {"unavailable": "no train_time_s in the train metrics"}
            continue
        uses_cache = (r.config or {}).get("method") == "frozen" and get_dotted(r.config, "train.feature_cache")
        cache_s = tm.get("feature_cache_s")
        device = str(tm.get("device_name") or get_dotted(r.evaluate, "cost.device") or "unknown")
        world = int((r.config or {}).get("world_size") or 1)
        total = float(train_s) + (float(cache_s) if _num(cache_s) else 0.0)
        row: dict[str, Any] = {"device": device, "devices": world, "train_time_s": float(train_s),
                               "feature_cache_s": float(cache_s) if _num(cache_s) else None,
                               "total_time_s": total, "device_hours": total * world / 3600, "usd": {}}
        if uses_cache and not _num(cache_s):
            row["note"] = ("the train metrics do not record feature_cache_s (building frozen's feature cache): "
                           "the total leaves it out")
        for name, price in params.evaluate.gpu_prices.items():
            row["usd"][name] = (round(row["device_hours"] * price, 4) if same_device(device, name) else
                                {"unavailable": f"trained on {device}; the price names {name}"})
        out[r.name] = row
    return out


def _training(params: Params, records: Sequence[Record], costs: dict[str, dict[str, Any]],
              notes: Notes) -> list[str]:
    runs = [r for r in records if r.kind == "method"]
    if not runs:
        return []
    out = ["## Training and cost (one measurement per run; no interval, no winner)", "",
           "| | " + " | ".join(f"`{r.name}`" for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]

    def line(label: str, f) -> None:   # noqa: ANN001 - a cell function of one run
        out.append(f"| {label} | " + " | ".join(f(r) if r.status == "ok" else f"**{r.status}**" for r in runs) + " |")

    def cost(key: str, fmt: str, why: str | None = None):   # noqa: ANN202
        def f(r: Record) -> str:
            row = costs.get(r.name, {})
            if "unavailable" in row:
                return notes.ref(row["unavailable"])
            v = row.get(key)
            if v is None:
                return notes.ref(row.get("note") or why or f"{key} not recorded") if why or row.get("note") else "—"
            return fmt.format(v)
        return f

    line("train device", lambda r: costs.get(r.name, {}).get("device", "n/a"))
    line("train wall time (s)", cost("train_time_s", "{:.1f}"))
    line("feature-cache build (s)", lambda r: (cost("feature_cache_s", "{:.1f}")(r)
                                               if costs.get(r.name, {}).get("feature_cache_s") is not None
                                               or costs.get(r.name, {}).get("note") else "—"))
    line("total time (s)", cost("total_time_s", "{:.1f}"))
    line("device-hours (GPU-hours on a GPU; x devices)", cost("device_hours", "{:.4f}"))
    for name, price in params.evaluate.gpu_prices.items():
        def usd(r: Record, name: str = name) -> str:
            v = costs.get(r.name, {}).get("usd", {}).get(name)
            if isinstance(v, dict):
                return notes.ref(f"no USD: a price applies only to the device it names exactly ({v['unavailable']})")
            return "n/a" if v is None else f"{v:.4f}"
        line(f"cost at {name} ${price:.2f}/h (USD)", usd)

    def train_key(key: str, fmt: str):   # noqa: ANN202
        def f(r: Record) -> str:
            v = (r.train or {}).get(key)
            return fmt.format(v) if _num(v) else notes.ref(f"the train metrics have no {key}")
        return f

    line("peak memory (MB)", train_key("peak_memory_mb", "{:.0f}"))
    line("epochs", train_key("epochs", "{:.0f}"))
    line("train clips / cases", lambda r: (f"{r.train['train_clips']} / {r.train['train_cases']}" if r.train and
                                          "train_clips" in r.train else notes.ref("not in the train metrics")))
    for split in ("train", "val"):
        for c in LOSSES:
            line(f"final {split} {'total' if c == 'loss' else c} loss", train_key(f"{split}_{c}", "{:.4f}"))
    metric, frac = params.evaluate.convergence_metric, params.evaluate.convergence_fraction
    conv = (f"convergence epoch (first within {1 / frac - 1:.0%} of the final {metric})" if "loss" in metric
            else f"convergence epoch (first >= {frac:.0%} of the final {metric})")
    line(conv, lambda r: (str(get_dotted(r.evaluate, "convergence.epoch"))
                                         if _num(get_dotted(r.evaluate, "convergence.epoch")) else
                                         notes.ref(str(get_dotted(r.evaluate, "convergence.unavailable")
                                                       or "not measured"))))
    return out + [""]


def _efficiency(params: Params, records: Sequence[Record], notes: Notes) -> list[str]:
    ok = [r for r in records if r.status == "ok"]
    if not ok:
        return []
    out = ["## Data efficiency (probe trained on a share of the training cases; points only)", "",
           "No interval and no winner: the evaluation writes no per-clip scores for these probes.", "",
           "| | " + " | ".join(f"`{r.name}`" for r in ok) + " |", "|---" * (len(ok) + 1) + "|"]
    for frac in sorted(set(params.evaluate.fractions)):
        tag = f"{round(frac * 100)}pct"
        for key, lab in (("step_f1_video", "step F1"), ("motion_acc", "motion acc"), ("event_f1", "event F1"),
                         ("event_auroc", "event AUROC")):
            cells = []
            for r in ok:
                v = get_dotted(r.evaluate, f"efficiency.{tag}.{key}")
                cells.append(f"{v:.3f}" if _num(v) else notes.ref("fraction not evaluated" if get_dotted(
                    r.evaluate, f"efficiency.{tag}") is None else f"{lab} not measurable on this data"))
            out.append(f"| {lab} @ {frac:.0%} of training cases | " + " | ".join(cells) + " |")
    return out + [""]


def _data(params: Params, records: Sequence[Record], manifest: dict[str, Any] | None) -> list[str]:
    ok = [r for r in records if r.status == "ok"]
    ref = next((r.evaluate for r in ok if r.evaluate), {}) or {}
    split = ref.get("split", {})
    d = params.data
    videos = [v for v in (manifest or {}).get("videos", []) if not v.get("error")]
    lines = ["## Data and devices", "",
             f"- data: `data.source: {d.source}`, root `{d.root}`; {len({v['case'] for v in videos}) or '?'} cases, "
             f"{len(videos) or '?'} usable videos, {d.fps:g} fps, {d.size}x{d.size} px, clips of {d.clip_frames} "
             f"frames every {d.clip_stride}",
             f"- test cases ({split.get('test_from', 'n/a')}): {', '.join(split.get('test_cases', [])) or 'n/a'}; "
             f"probe validation cases: {', '.join(split.get('val_cases', [])) or 'n/a'}; probe training cases: "
             f"{len(split.get('train_cases', []))}",
             f"- evaluation key `{ref.get('eval_key', 'n/a')}` (same key = same rows, labels and probe recipe)",
             f"- evaluation device: {ref.get('eval_device', 'n/a')}"]
    for r in ok:
        if r.kind == "method":
            seen = get_dotted(r.evaluate, "split.test_cases_seen_by_world_model")
            lines.append(f"- `{r.name}` trained on {(r.train or {}).get('device_name') or get_dotted(r.evaluate, 'cost.device') or 'n/a'}"
                         + (f"; its world model saw test case video(s) {', '.join(seen)} (unlabelled)" if seen else ""))
    prices = ", ".join(f"{n} ${p:.2f}/h" for n, p in params.evaluate.gpu_prices.items())
    lines += [f"- cost = (train wall time + feature-cache build) x devices x price per GPU-hour ({prices}); a price "
              "applies only to the device it names exactly (the name torch reports); elsewhere USD is n/a.", ""]
    failed = [r for r in records if r.status != "ok"]
    if failed:
        lines += ["## Failed or missing", ""] + [f"- `{r.name}` ({r.kind}) **{r.status}**: {r.error}" for r in failed]
        lines.append("")
    return lines


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
    score = record.get("score")
    out += ["", f"Registered model `{record.get('model')}`: best on the validation cases by `{record.get('metric')}` "
            f"is `{record.get('best')}` ({'n/a' if score is None else f'{score:.4f}'}) = version "
            f"{record.get('version')} (alias `challenger`). Champion: version {get_dotted(record, 'aliases.champion')}"
            f" — {dec.get('reason', '')}.", ""]
    return out


# ------------------------------------------------------------------------------------------------ render

def comparison_markdown(params: Params, records: Sequence[Record], register_record: dict[str, Any] | None,
                        manifest: dict[str, Any] | None = None, charts: Sequence[str] = (),
                        comparison: dict[str, Any] | None = None, evaluate_root: Path = EVALUATE) -> str:
    comparison = comparison if comparison is not None else build(params, records, evaluate_root)
    notes = Notes()
    lines = ["# Comparison of training methods and baselines", "",
             "Every number was measured by this pipeline on the data named here; `n/a [k]` marks a number this data "
             "cannot give (note k says why). docs/evaluation_report.md says how to read this report.", ""]
    if not any(r.status == "ok" for r in records):
        lines += [f"`{params.register.metric}` (register.metric) was not measured for any run: nothing was "
                  "evaluated.", ""]
    lines += _bounds(comparison, params)
    lines += _data(params, records, manifest)
    lines += _eval_tables(comparison, records, notes)
    for left in comparison.get("left_out", []):
        notes.ref(f"`{left['name']}`: {left['why']}")
    lines += _selection(comparison, params, register_record)
    lines += _future(records, params, notes)
    lines += _training(params, records, cost_rows(params, records), notes)
    lines += _efficiency(params, records, notes)
    if notes:
        lines += ["Notes:", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)] + [""]
    lines += _registry(register_record, records)
    if charts:
        lines += ["## Charts", ""] + [f"![{Path(c).stem}]({c})" for c in charts] + [""]
    conf = [r.name for r in records if r.status == "ok" and get_dotted(r.evaluate, "step.f1_video") is not None]
    if conf:
        lines += ["Confusion matrices of the step probes: " + ", ".join(
            f"[`{n}`](../data/evaluate/{n}/step_confusion.png)" for n in conf), ""]
    return "\n".join(lines).rstrip() + "\n"


def report_markdown(params: Params | None = None, *, metrics_dir: Path = METRICS, train_root: Path = TRAIN,
                    evaluate_root: Path = EVALUATE, manifest_path: Path = DECODED, register_path: Path = RECORD,
                    charts: Sequence[str] = ()) -> str:
    """The comparison as markdown, from the measured outputs (what the flow publishes as a Prefect artifact)."""
    params = params or load_params()
    records = collect(params, metrics_dir, train_root)
    return comparison_markdown(params, records, read_json(register_path), read_json(manifest_path), charts,
                               evaluate_root=evaluate_root)


def write_report(params: Params, *, metrics_dir: Path = METRICS, train_root: Path = TRAIN,
                 evaluate_root: Path = EVALUATE, manifest_path: Path = DECODED, register_path: Path = RECORD,
                 out_dir: Path = REPORTS) -> Path:
    """reports/comparison.md, reports/comparison.json and reports/charts/*.png; returns the markdown's path."""
    out_dir = Path(out_dir)
    chart_dir = out_dir / CHARTS
    shutil.rmtree(chart_dir, ignore_errors=True)  # charts of runs that no longer exist must not linger
    chart_dir.mkdir(parents=True, exist_ok=True)
    records = collect(params, metrics_dir, train_root)
    loaded = load_units(params, records, evaluate_root)
    comparison = build(params, records, evaluate_root, loaded)
    charts = []
    histories = {r.name: r.history for r in records if r.kind == "method" and r.status == "ok" and r.history}
    if histories:
        plot_losses(histories, chart_dir / "loss_curves.png")
        charts.append(f"{CHARTS}/loss_curves.png")
    if any(r.status == "ok" for r in records):
        plot_efficiency(records, chart_dir / "data_efficiency.png")
        charts.append(f"{CHARTS}/data_efficiency.png")
    rows = [r for g in comparison["groups"][:1] for r in g["rows"] if r["primary"]]
    if rows:
        plot_metrics(rows, chart_dir / "metrics.png")
        charts.append(f"{CHARTS}/metrics.png")
    curves = event_curves(params, [u for u in loaded[0] if u.key == comparison["groups"][0]["eval_key"]]
                          if comparison["groups"] else [])
    if any(not n.startswith("rule:") for n in curves):
        plot_precision_recall(curves, chart_dir / "event_pr.png")
        charts.append(f"{CHARTS}/event_pr.png")
    register_record = read_json(register_path)
    md = comparison_markdown(params, records, register_record, read_json(manifest_path), charts, comparison)
    write_json(out_dir / "comparison.json", {**comparison, "cost": cost_rows(params, records),
                                             "registry": _registry_summary(register_record)})
    path = out_dir / "comparison.md"
    atomic_write_text(path, md)
    return path


def _registry_summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if not record or record.get("status") == "failed":
        return record
    return {k: record.get(k) for k in ("model", "metric", "best", "score", "version", "aliases", "decision")}


def attach_to_mlflow(report_dir: Path, register_record: dict[str, Any] | None) -> str | None:
    """Log the report to the best run (reports/register.json); best effort: a warning, never a failure."""
    if not register_record or not register_record.get("best"):
        return None
    run_id = get_dotted(register_record, f"runs.{register_record['best']}.run_id")
    try:
        from surgwm.tracking.client import connect

        client = connect(register_record.get("tracking_uri"))
        for name in ("comparison.md", "comparison.json"):
            if (Path(report_dir) / name).is_file():
                client.log_artifact(run_id, str(Path(report_dir) / name), "report")
        if (Path(report_dir) / CHARTS).is_dir():
            client.log_artifacts(run_id, str(Path(report_dir) / CHARTS), f"report/{CHARTS}")
        return run_id
    except Exception as err:  # noqa: BLE001 - the report on disk is what matters
        log.warning("report not attached to MLflow run %s: %s", run_id, err)
        return None
