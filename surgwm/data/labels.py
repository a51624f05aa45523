"""Parse and check label CSVs before anything trains on them; every error names file, row and column.

SurgVU-style files (tasks.csv, and our motion.csv / events.csv) give intervals as (part, seconds in part) and
may span parts; `split_by_part` turns them into per-part-file `Interval`s. The folder source's optional CSV
gives `video,start_time,stop_time,label` with `video` relative to data.root.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Sequence

from surgwm.data.manifest import STEP_CLASSES, Interval

log = logging.getLogger(__name__)

TOLERANCE_S = 0.5           # labels may overrun a probed duration by this much (then they are clipped)
PART_COLUMNS = ("start_part", "start_time", "stop_part", "stop_time")
TASK_COLUMN = "groundtruth_taskname"
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
                  normalise=None, what: str = "label") -> list[PartSpan]:
    """Read a SurgVU-style interval file; labels are normalised, then checked against `allowed` (if given)."""
    path = Path(path)
    spans = []
    for row, line, values in _rows(path, PART_COLUMNS + (label_column,)):
        sp, ep = (_part(path, row, line, values, c) for c in ("start_part", "stop_part"))
        st, et = (_number(path, row, line, values, c) for c in ("start_time", "stop_time"))
        raw = values.get(label_column, "")
        label = normalise(raw) if normalise else raw
        if allowed is not None and label not in allowed:
            raise LabelError(f"{_where(path, row, line, label_column)}: unknown {what} {raw!r}; "
                             f"allowed: {', '.join(allowed)}")
        if (ep, et) < (sp, st):
            column = "stop_part" if ep < sp else "stop_time"
            raise LabelError(f"{_where(path, row, line, column)}: stop (part {ep}, {et:g} s) is before "
                             f"start (part {sp}, {st:g} s)")
        spans.append(PartSpan(row, line, sp, st, ep, et, label))
    return spans


def read_tasks(path: Path) -> list[PartSpan]:
    """SurgVU `tasks.csv`: step names are normalised to STEP_CLASSES (an extra leading index column is fine)."""
    return read_part_csv(path, TASK_COLUMN, STEP_CLASSES, normalise_task, what="task name")


def read_motion(path: Path, classes: Sequence[str]) -> list[PartSpan]:
    return read_part_csv(path, "label", classes, what="motion class")


def read_events(path: Path, labels: Sequence[str] = ("breach",)) -> list[PartSpan]:
    return read_part_csv(path, "label", labels, what="event label")


def split_by_part(spans: Sequence[PartSpan], durations: Mapping[int, float | None], path: Path,
                  tolerance: float = TOLERANCE_S) -> dict[int, list[Interval]]:
    """Per-part intervals in seconds from the start of each part file.

    A span from (1, 25) to (3, 10) becomes part 1 [25, end of part 1], part 2 [0, its duration], part 3 [0, 10].
    `durations` maps each part present on disk to its probed duration (None if the probe failed: its pieces
    are dropped, that video is unusable anyway). Parts absent from disk are skipped with a warning (a partial
    download); times beyond a probed duration by more than `tolerance` are an error, smaller overruns are clipped.
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
            for column, t in (("start_time", s.start_time if part == s.start_part else None),
                              ("stop_time", s.stop_time if part == s.stop_part else None)):
                if t is not None and t > dur + tolerance:
                    raise LabelError(f"{_where(Path(path), s.row, s.line, column)}: {t:g} s is outside the video "
                                     f"(part {part} lasts {dur:g} s; tolerance {tolerance:g} s)")
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
                    raise LabelError(f"{_where(path, row, line, column)}: {t:g} s is outside the video "
                                     f"({rel} lasts {dur:g} s; tolerance {tolerance:g} s)")
            start, stop = min(start, dur), min(stop, dur)
        if stop > start:
            out.setdefault(rel, []).append(Interval(start=start, stop=stop, label=label))
    for intervals in out.values():
        intervals.sort(key=lambda i: (i.start, i.stop, i.label))
    return out
