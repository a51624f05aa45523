"""Parse and check label CSVs before anything trains on them; every error names file, row and column.

SurgVU-style files (tasks.csv, tools.csv, and our motion.csv / events.csv) give intervals as (part, seconds in
part) and may span parts; `split_by_part` turns them into per-part-file `Interval`s. The folder source's optional
CSV gives `video,start_time,stop_time,label` with `video` relative to data.root.

What stops ingest and what does not: a malformed file (missing column, a cell that is not a number, a stop before
its start, an unknown step name) is a LabelError naming file, row and column, because training on misread labels
is worse than not training. Labels that run past the end of a video (the probed duration) are a warning naming
file, row, column and overrun, and the interval is clipped: one overrunning row must not stop ingest of 155 cases.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Mapping, Sequence

from surgwm.data.manifest import STEP_CLASSES, Interval, VideoEntry

log = logging.getLogger(__name__)

TOLERANCE_S = 0.5           # labels may overrun a probed duration by this much (then they are clipped)
PART_COLUMNS = ("start_part", "start_time", "stop_part", "stop_time")
TASK_COLUMN = "groundtruth_taskname"
# SurgVU tools.csv: index,install_case_part,install_case_time,uninstall_case_part,uninstall_case_time,arm,
# commercial_toolname,groundtruth_toolname; parts may be written `1.0`, times as HH:MM:SS.ffffff.
TOOL_PART_COLUMNS = ("install_case_part", "install_case_time", "uninstall_case_part", "uninstall_case_time")
TOOL_COLUMN = "groundtruth_toolname"
# groundtruth_toolname values that name no tool: empty, and "nan(camera in)" (the endoscope going in)
_NO_TOOL = re.compile(r"(nan|none|null)?(\s*\(.*\))?", re.IGNORECASE)
FOLDER_COLUMNS = ("video", "start_time", "stop_time", "label")
# SurgVU's released files spell steps as prose ("Rectal artery/vein", "Retraction and collision avoidance").
_TASK_ALIASES = {"retraction_and_collision_avoidance": "retraction_collision_avoidance", "": "other"}


class LabelError(ValueError):
    """A label file is unusable; the message says where (file, row, column) and what is allowed."""


@dataclass(frozen=True)
class PartSpan:
    """One CSV row: an interval from (start_part, start_time) to (stop_part, stop_time); parts are 1-based."""

    row: int
    line: int
    start_part: int
    start_time: float
    stop_part: int
    stop_time: float
    label: str


def _where(path: Path, row: int | None = None, line: int | None = None, column: str | None = None) -> str:
    out = str(path)
    if row is not None:
        out += f": data row {row} (line {line})"
    if column is not None:
        out += f", column '{column}'"
    return out


def normalise_task(name: str) -> str:
    """'Rectal artery/vein' -> 'rectal_artery_vein'; empty -> 'other' (as SurgVU's own tools read it)."""
    key = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    return _TASK_ALIASES.get(key, key)


def normalise_tool(name: str) -> str | None:
    """'Needle Driver ' / 'needle  driver' -> 'needle_driver', ' Single Site"' -> 'single_site'; None for a row
    that names no tool (empty, 'nan', 'nan(camera in)'). Spelling variants beyond case, spacing and punctuation
    ('tip-up' vs 'tipup') are merged over the whole dataset by canonical_tools."""
    text = unicodedata.normalize("NFKC", name).strip().strip("\"'").strip()
    if _NO_TOOL.fullmatch(text):
        return None
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or None


def _compact(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def canonical_tools(counts: Mapping[str, int]) -> dict[str, str]:
    """Normalised name -> class name; names equal but for separators ('tip_up_x' / 'tipup_x') are one class,
    named by their most frequent spelling (ties: the one with more separators, then alphabetical)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in counts:
        groups[_compact(name)].append(name)
    out = {}
    for names in groups.values():
        best = sorted(names, key=lambda n: (-counts[n], -n.count("_"), n))[0]
        out.update({n: best for n in names})
    return out


def tool_counts(videos: Sequence[VideoEntry]) -> Counter:
    """Intervals per tool class over `videos` (the vocabulary with its support)."""
    return Counter(iv.label for v in videos for iv in (v.tools or []))


def parse_seconds(text: str) -> float:
    """Seconds as a number, or [HH:]MM:SS[.fff]; ValueError otherwise."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) > 3 or not all(parts):
            raise ValueError(text)
        value = 0.0
        for p in parts:
            value = value * 60 + float(p)
    else:
        value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _rows(path: Path, expected: Sequence[str]) -> Iterable[tuple[int, int, dict[str, str]]]:
    """(data row, line, row dict) with header names stripped; missing columns are one error listing them."""
    path = Path(path)
    try:
        f = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise LabelError(f"{path}: cannot read: {err.strerror}") from None
    with f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise LabelError(f"{path}: empty file; expected a header with columns: {', '.join(expected)}") from None
        except csv.Error as err:
            raise LabelError(f"{path}: line 1: not valid CSV: {err}") from None
        missing = [c for c in expected if c not in header]
        if missing:
            raise LabelError(f"{path}: line 1 (header): missing column(s) {', '.join(repr(c) for c in missing)}; "
                             f"expected columns: {', '.join(expected)} (found: {', '.join(header) or 'none'})")
        row = 0
        try:
            for values in reader:
                if not any(v.strip() for v in values):
                    continue
                row += 1
                yield row, reader.line_num, dict(zip(header, (v.strip() for v in values)))
        except csv.Error as err:
            raise LabelError(f"{path}: line {reader.line_num}: not valid CSV: {err}") from None


def _number(path: Path, row: int, line: int, values: dict[str, str], column: str) -> float:
    text = values.get(column, "")
    try:
        value = parse_seconds(text)
    except ValueError:
        raise LabelError(f"{_where(path, row, line, column)}: not a number: {text!r}") from None
    if value < 0:
        raise LabelError(f"{_where(path, row, line, column)}: negative time {value:g}")
    return value


def _part(path: Path, row: int, line: int, values: dict[str, str], column: str) -> int:
    text = values.get(column, "")
    try:
        value = float(text)
    except ValueError:
        raise LabelError(f"{_where(path, row, line, column)}: not a part number: {text!r}") from None
    if value != int(value) or value < 1:
        raise LabelError(f"{_where(path, row, line, column)}: part numbers are integers from 1, got {text!r}")
    return int(value)


def read_part_csv(path: Path, label_column: str = "label", allowed: Sequence[str] | None = None,
                  normalise: Callable[[str], str | None] | None = None, what: str = "label",
                  columns: Sequence[str] = PART_COLUMNS, skipped: list[int] | None = None) -> list[PartSpan]:
    """Read a SurgVU-style interval file; labels are normalised, then checked against `allowed` (if given).

    `columns` names (start part, start time, stop part, stop time). A row whose label `normalise`s to None is
    skipped before its other cells are read (its data row number is appended to `skipped`, if given).
    """
    path = Path(path)
    c_sp, c_st, c_ep, c_et = columns
    spans = []
    for row, line, values in _rows(path, tuple(columns) + (label_column,)):
        raw = values.get(label_column, "")
        label = normalise(raw) if normalise else raw
        if label is None:
            if skipped is not None:
                skipped.append(row)
            continue
        sp, ep = (_part(path, row, line, values, c) for c in (c_sp, c_ep))
        st, et = (_number(path, row, line, values, c) for c in (c_st, c_et))
        if allowed is not None and label not in allowed:
            raise LabelError(f"{_where(path, row, line, label_column)}: unknown {what} {raw!r}; "
                             f"allowed: {', '.join(allowed)}")
        if (ep, et) < (sp, st):
            column = c_ep if ep < sp else c_et
            raise LabelError(f"{_where(path, row, line, column)}: stop (part {ep}, {et:g} s) is before "
                             f"start (part {sp}, {st:g} s)")
        spans.append(PartSpan(row, line, sp, st, ep, et, label))
    return spans


def read_tasks(path: Path) -> list[PartSpan]:
    """SurgVU `tasks.csv`: step names are normalised to STEP_CLASSES (an extra leading index column is fine)."""
    return read_part_csv(path, TASK_COLUMN, STEP_CLASSES, normalise_task, what="task name")


def read_tools(path: Path, skipped: list[int] | None = None) -> list[PartSpan]:
    """SurgVU `tools.csv`: one row per tool installed on an arm, keyed by its normalised `groundtruth_toolname`.

    Why the ground-truth name and not `commercial_toolname`: the commercial name tells instrument models apart
    ("Large Needle Driver", "Mega SutureCut Needle Driver") that the ground-truth name groups into the tool
    classes SurgVU scores; the vocabulary is whatever classes the data holds (no fixed list), after
    normalise_tool. Rows naming no tool (empty, 'nan(camera in)') are skipped and counted in `skipped`.
    """
    return read_part_csv(path, TOOL_COLUMN, None, normalise_tool, what="tool", columns=TOOL_PART_COLUMNS,
                         skipped=skipped)


def read_motion(path: Path, classes: Sequence[str]) -> list[PartSpan]:
    return read_part_csv(path, "label", classes, what="motion class")


def read_events(path: Path, labels: Sequence[str] = ("breach",)) -> list[PartSpan]:
    return read_part_csv(path, "label", labels, what="event label")


def overrun_warning(where: str, t: float, video: str, dur: float, tolerance: float, dropped: bool) -> None:
    """The one text for labels past the end of a video (ingest goes on, the interval is clipped)."""
    what = "the interval starts after the end and is dropped" if dropped else "the interval is clipped to the video"
    log.warning("%s: %g s is outside the video (%s lasts %g s): overrun %.3f s > tolerance %g s; %s",
                where, t, video, dur, t - dur, tolerance, what)


def split_by_part(spans: Sequence[PartSpan], durations: Mapping[int, float | None], path: Path,
                  tolerance: float = TOLERANCE_S,
                  time_columns: tuple[str, str] = ("start_time", "stop_time")) -> dict[int, list[Interval]]:
    """Per-part intervals in seconds from the start of each part file.

    A span from (1, 25) to (3, 10) becomes part 1 [25, end of part 1], part 2 [0, its duration], part 3 [0, 10].
    `durations` maps each part present on disk to its probed duration (None if the probe failed: its pieces
    are dropped, that video is unusable anyway). Parts absent from disk are skipped with a warning (a partial
    download). Times beyond a probed duration are clipped to it: silently within `tolerance` (rounding of
    the annotation tool), with a warning naming file, row, column and overrun beyond it.
    """
    out: dict[int, list[Interval]] = {p: [] for p in durations}
    missing: set[int] = set()
    for s in spans:
        for part in range(s.start_part, s.stop_part + 1):
            if part not in durations:
                missing.add(part)
                continue
            dur = durations[part]
            if dur is None:
                continue
            for column, t in ((time_columns[0], s.start_time if part == s.start_part else None),
                              (time_columns[1], s.stop_time if part == s.stop_part else None)):
                if t is not None and t > dur + tolerance:
                    overrun_warning(_where(Path(path), s.row, s.line, column), t, f"part {part}", dur, tolerance,
                                    dropped=s.start_part == s.stop_part and s.start_time >= dur)
                    break                                   # one warning per row and part
            start = min(s.start_time, dur) if part == s.start_part else 0.0
            stop = min(s.stop_time, dur) if part == s.stop_part else dur
            if stop > start:
                out[part].append(Interval(start=round(start, 6), stop=round(stop, 6), label=s.label))
    if missing:
        log.warning("%s: labels cover part(s) %s with no video file; those pieces are skipped", path,
                    ", ".join(map(str, sorted(missing))))
    for intervals in out.values():
        intervals.sort(key=lambda i: (i.start, i.stop, i.label))
    return out


def read_folder_labels(path: Path, videos: Mapping[str, float | None],
                       tolerance: float = TOLERANCE_S) -> dict[str, list[Interval]]:
    """The folder source's CSV; `videos` maps each video's path relative to data.root (POSIX) to its duration."""
    path = Path(path)
    out: dict[str, list[Interval]] = {}
    by_nfc = {unicodedata.normalize("NFC", rel): rel for rel in videos}  # macOS file names are NFD
    for row, line, values in _rows(path, FOLDER_COLUMNS):
        raw = values.get("video", "")
        rel = by_nfc.get(unicodedata.normalize("NFC", PurePosixPath(raw.replace("\\", "/")).as_posix()))
        if rel is None:
            raise LabelError(f"{_where(path, row, line, 'video')}: no video {raw!r} under data.root")
        start, stop = (_number(path, row, line, values, c) for c in ("start_time", "stop_time"))
        label = values.get("label", "")
        if not label:
            raise LabelError(f"{_where(path, row, line, 'label')}: empty label")
        if stop < start:
            raise LabelError(f"{_where(path, row, line, 'stop_time')}: stop {stop:g} s is before start {start:g} s")
        dur = videos[rel]
        if dur is not None:
            for column, t in (("start_time", start), ("stop_time", stop)):
                if t > dur + tolerance:
                    overrun_warning(_where(path, row, line, column), t, rel, dur, tolerance, dropped=start >= dur)
                    break
            start, stop = min(start, dur), min(stop, dur)
        if stop > start:
            out.setdefault(rel, []).append(Interval(start=start, stop=stop, label=label))
    for intervals in out.values():
        intervals.sort(key=lambda i: (i.start, i.stop, i.label))
    return out
