"""DVC stage `ingest`: find the videos of `data.source`, hash and probe each, attach labels, write the manifest.

A video that cannot be probed is kept with a one-line `error` (ingest goes on); a malformed label file stops
ingest, because training on wrong labels is worse than not training. SurgVU layout (docs/data.md): videos in
<data.root>/<case>/<case>_video_part_NNN.mp4, labels in <data.labels_root>/<case>/{tasks,tools}.csv (two archives).

Errors (IngestError): no video under data.root (the message says what is there and where the cases seem to
be); no case with labels under data.source surgvu (names both roots and data.labels_root). Warnings, ingest
goes on: cases without tasks.csv (listed: they still serve world-model training), cases without tools.csv,
label folders of cases without videos, part numbers with gaps, tools.csv rows naming no tool, and labels past
the end of a video (clipped, surgwm/data/labels.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from surgwm import paths
from surgwm.data.labels import (TOOL_PART_COLUMNS, canonical_tools, normalise_task, read_events, read_folder_labels,
                                read_motion, read_tasks, read_tools, split_by_part, tool_counts)
from surgwm.data.classes import EVENT_LABEL, MOTION_CLASSES, STEP_CLASSES
from surgwm.data.manifest import MANIFEST_SCHEMA, Interval, Manifest, VideoEntry, write_manifest
from surgwm.io import file_sha256
from surgwm.params import Params, portable_path, resolve_path

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
_PART = re.compile(r"_part_?(\d+)$", re.IGNORECASE)
_MAX_ID = 100
_LIST = 20                # names listed in a warning before "... and N more"
_SCAN_DIRS = 5000         # folders looked at when guessing where the cases are (a mistyped root can be huge)


class IngestError(ValueError):
    """The source cannot be ingested at all (e.g. its folder is missing)."""


class ProbeError(Exception):
    """Why a file is not a usable video, in one line."""


@dataclass(frozen=True)
class Found:
    path: Path
    rel: str            # POSIX path relative to the source root
    case: str
    part: int
    base_id: str        # video_id before the uniqueness/safety rule


def _part_of(stem: str) -> int:
    m = _PART.search(stem)
    return int(m.group(1)) if m else 1


def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in VIDEO_EXTS and not p.name.startswith(".")


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return []


def discover_surgvu(root: Path, skip: Iterable[Path] = ()) -> list[Found]:
    """SurgVU layout: root/<case>/<case>_video_part_NNN.mp4; `labels/` and the folders in `skip` (the labels
    root, when it lies inside root) hold CSVs, not videos."""
    skipped = {Path(p).resolve() for p in skip}
    found = []
    for case_dir in (d for d in _subdirs(root) if d.name != "labels" and d.resolve() not in skipped):
        for p in sorted(case_dir.iterdir()):
            if _is_video(p):
                found.append(Found(p, p.relative_to(root).as_posix(), case_dir.name, _part_of(p.stem), p.stem))
    return found


def discover_folder(root: Path) -> list[Found]:
    """Any videos below root; case = top-level folder name, or the file stem for files at the top level."""
    found = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not _is_video(p):
            continue
        case = rel.parts[0] if len(rel.parts) > 1 else p.stem
        base = rel.with_suffix("").as_posix().replace("/", "__")
        found.append(Found(p, rel.as_posix(), case, _part_of(p.stem), base))
    return found


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._-")[:_MAX_ID] or "video"


def assign_ids(found: list[Found]) -> dict[str, str]:
    """rel -> video_id. Safe names stay as they are (SurgVU: the stem); lossy or colliding slugs (also
    case-insensitively) get '-' + 8 hex of sha1(rel), so ids are unique, stable and filesystem-safe."""
    slugs = {f.rel: _slug(f.base_id) for f in found}
    counts = Counter(s.lower() for s in slugs.values())
    ids = {}
    for f in found:
        s = slugs[f.rel]
        if s != f.base_id or counts[s.lower()] > 1:
            s = f"{s[:_MAX_ID - 9]}-{hashlib.sha1(f.rel.encode()).hexdigest()[:8]}"
        ids[f.rel] = s
    return ids


def _one_line(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())[:200]


def probe(path: Path) -> dict:
    """Duration, average fps, size and sample aspect ratio via PyAV, plus one decoded frame (catches truncation)."""
    import av

    if path.stat().st_size == 0:
        raise ProbeError("empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except Exception as err:  # PyAV raises a family of FFmpegError subclasses; all mean "not a readable video"
        raise ProbeError(f"not a readable video ({_one_line(err)})") from None
    with container:
        if not container.streams.video:
            raise ProbeError("no video stream")
        s = container.streams.video[0]
        width, height = s.codec_context.width, s.codec_context.height
        if not width or not height:
            raise ProbeError("video stream has no frame size")
        rate = s.average_rate or s.guessed_rate or s.base_rate
        duration = None
        if s.duration and s.time_base:
            duration = float(s.duration * s.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        sar = s.sample_aspect_ratio
        try:
            frame = next(container.decode(s), None)
        except Exception as err:
            raise ProbeError(f"cannot decode ({_one_line(err)})") from None
        if frame is None:
            raise ProbeError("no decodable frames")
        if duration is None:  # e.g. some webm/mkv: the last packet's end is the duration
            container.seek(0)
            ends = [float((p.pts + (p.duration or 0)) * p.time_base) for p in container.demux(s) if p.pts is not None]
            duration = max(ends, default=None)
    if not duration or duration <= 0:
        raise ProbeError("unknown or zero duration")
    return {"duration_s": round(duration, 6), "fps": round(float(rate), 6) if rate else None, "width": width,
            "height": height, "sar": float(sar) if sar and float(sar) > 0 else 1.0}


def _entry(f: Found, video_id: str) -> VideoEntry:
    entry = VideoEntry(video_id=video_id, case=f.case, part=f.part, path=portable_path(f.path))
    try:
        entry.sha256 = file_sha256(f.path)
        for key, value in probe(f.path).items():
            setattr(entry, key, value)
    except (ProbeError, OSError) as err:
        entry.error = _one_line(err)
    except Exception as err:  # noqa: BLE001 - a strange file must not stop ingest
        entry.error = f"{type(err).__name__}: {_one_line(err)}"
    return entry


def _attach(videos: list[VideoEntry], intervals: dict[int, list[Interval]], field: str) -> None:
    for v in videos:
        if v.error is None:
            setattr(v, field, intervals.get(v.part, []))


def _names(items: Iterable[str], limit: int = _LIST) -> str:
    items = list(items)
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _case_key(name: str) -> str:
    """Label folders match video cases by this key, so 'case_001' and 'Case001' are one case."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _label_folders(labels_root: Path) -> dict[str, Path]:
    return {_case_key(d.name): d for d in _subdirs(labels_root)}


@dataclass
class LabelReport:
    """What the SurgVU-layout labelling found, for the warnings and errors of `ingest`."""

    cases: list[str] = field(default_factory=list)            # cases with videos
    without_tasks: list[str] = field(default_factory=list)    # ... and no tasks.csv
    without_tools: list[str] = field(default_factory=list)    # ... with a tasks.csv but no tools.csv (surgvu only)
    orphans: list[str] = field(default_factory=list)          # label folders with a tasks.csv but no video case
    no_tool_rows: int = 0                                      # tools.csv rows naming no tool (skipped)
    no_tool_files: int = 0


def _label_surgvu(labels_root: Path, entries: list[VideoEntry], synthetic: bool) -> LabelReport:
    """Per case: <labels_root>/<case>/tasks.csv and tools.csv (motion.csv, events.csv for the synthetic source)."""
    by_case: dict[str, list[VideoEntry]] = {}
    for v in entries:
        by_case.setdefault(v.case, []).append(v)
    folders = _label_folders(labels_root)
    report = LabelReport(cases=sorted(by_case))
    for case, videos in by_case.items():
        parts = Counter(v.part for v in videos)
        for v in videos:
            if parts[v.part] > 1 and v.error is None:
                v.error = f"case {case} has {parts[v.part]} videos for part {v.part}; labels would be ambiguous"
        durations = {v.part: (v.duration_s if v.error is None else None) for v in videos}
        folder = labels_root / case if (labels_root / case).is_dir() else folders.get(_case_key(case))
        read: list[str] = []
        files = [("tasks.csv", "steps", read_tasks)]
        if synthetic:
            files += [("motion.csv", "motion", lambda p: read_motion(p, MOTION_CLASSES)),
                      ("events.csv", "events", lambda p: read_events(p, (EVENT_LABEL,)))]
        for name, attr, reader in files:
            path = folder / name if folder is not None else None
            if path is not None and path.is_file():
                _attach(videos, split_by_part(reader(path), durations, path), attr)
                read.append(name)
        if "tasks.csv" not in read:
            report.without_tasks.append(case)
        tools = folder / "tools.csv" if folder is not None else None
        if tools is not None and tools.is_file():
            no_tool: list[int] = []
            spans = read_tools(tools, skipped=no_tool)
            _attach(videos, split_by_part(spans, durations, tools, time_columns=(TOOL_PART_COLUMNS[1],
                                                                                  TOOL_PART_COLUMNS[3])), "tools")
            read.append("tools.csv")
            report.no_tool_rows += len(no_tool)
            report.no_tool_files += bool(no_tool)
        elif not synthetic and "tasks.csv" in read:       # cases without any label are reported once, above
            report.without_tools.append(case)
        for v in videos:
            v.label_files = list(read)
    video_keys = {_case_key(c) for c in by_case}
    report.orphans = sorted(d.name for k, d in folders.items()
                            if k not in video_keys and (d / "tasks.csv").is_file())
    _merge_tool_spellings(entries)
    return report


def _merge_tool_spellings(entries: list[VideoEntry]) -> None:
    """One class per tool however the files spell it (surgwm/data/labels.py:canonical_tools)."""
    names = canonical_tools(tool_counts(entries))
    for v in entries:
        if v.tools:
            v.tools = [iv.model_copy(update={"label": names[iv.label]}) for iv in v.tools]


def _warn_labels(report: LabelReport, source: str, root: Path, labels_root: Path) -> None:
    n = len(report.cases)
    if len(report.without_tasks) == n:
        raise IngestError(_no_labels_message(report, source, root, labels_root))
    if report.without_tasks:
        log.warning("%d of %d cases have no tasks.csv under data.labels_root %s: %s. Their videos still serve "
                    "world-model training but carry no step labels", len(report.without_tasks), n, labels_root,
                    _names(report.without_tasks))
    labelled = n - len(report.without_tasks)
    if report.without_tools and len(report.without_tools) == labelled:
        log.warning("no case has a tools.csv under data.labels_root %s: the manifest has no tool labels", labels_root)
    elif report.without_tools:
        log.warning("%d of the %d cases with a tasks.csv have no tools.csv under data.labels_root %s: %s (their "
                    "tool presence is unknown, not 'no tool')", len(report.without_tools), labelled, labels_root,
                    _names(report.without_tools))
    if report.orphans:
        log.warning("%d label folder(s) under data.labels_root %s have no videos under data.root %s (a partial "
                    "download?): %s", len(report.orphans), labels_root, root, _names(report.orphans))
    if report.no_tool_rows:
        log.warning("tools.csv: skipped %d row(s) in %d file(s) whose groundtruth_toolname names no tool (empty, "
                    "or 'nan(camera in)': the endoscope)", report.no_tool_rows, report.no_tool_files)


def _warn_part_gaps(found: list[Found]) -> None:
    """SurgVU parts are numbered 1, 2, ... per case; a gap is a missing file (labels there are skipped)."""
    parts: dict[str, set[int]] = {}
    for f in found:
        parts.setdefault(f.case, set()).add(f.part)
    for case, have in sorted(parts.items()):
        missing = sorted(set(range(1, max(have) + 1)) - have)
        if missing:
            log.warning("case %s: video part(s) %s missing under data.root (found part(s) %s); labels of the "
                        "missing parts are skipped, the other parts keep their own times", case,
                        ", ".join(map(str, missing)), ", ".join(map(str, sorted(have))))


# ---------------------------------------------------------------- when the roots hold no videos or no labels

def _video_cases(folder: Path) -> int:
    """Sub-folders of `folder` that hold a video directly (SurgVU case folders)."""
    n = 0
    for d in _subdirs(folder):
        try:
            n += any(_is_video(p) for p in d.iterdir())
        except OSError:
            pass
    return n


def _label_cases(folder: Path) -> int:
    """Sub-folders of `folder` that hold a tasks.csv (SurgVU label folders)."""
    return sum((d / "tasks.csv").is_file() for d in _subdirs(folder))


def _find_cases(top: Path, count: Callable[[Path], int], depth: int = 3) -> tuple[Path, int] | None:
    """The folder below `top` (nearest level first, then most cases) whose sub-folders look like cases."""
    frontier, seen = [top], 0
    for _ in range(depth):
        best, nxt = None, []
        for folder in frontier:
            for d in _subdirs(folder):
                seen += 1
                if seen > _SCAN_DIRS:
                    return best
                n = count(d)
                if n and (best is None or n > best[1]):
                    best = (d, n)
                nxt.append(d)
        if best:
            return best
        frontier = nxt
    return None


def _contents(folder: Path) -> str:
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as err:
        return f"it cannot be read ({_one_line(err)})"
    if not entries:
        return "it is empty"
    dirs = [p.name + "/" for p in entries if p.is_dir()]
    files = [p.name for p in entries if not p.is_dir()]
    return f"it holds {len(dirs)} folder(s) and {len(files)} file(s): {_names(dirs + files, 8)}"


def _no_video_message(root: Path, source: str) -> str:
    if source == "folder":
        return (f"no video file ({', '.join(VIDEO_EXTS)}) anywhere under data.root '{root}' (data.source 'folder'); "
                f"{_contents(root)}")
    msg = (f"no video found under data.root '{root}' (data.source '{source}' expects "
           f"<data.root>/<case>/<case>_video_part_NNN.mp4); {_contents(root)}")
    if source == "synthetic":
        return msg + ". Run the synthesize stage first (dvc repro synthesize)"
    loose = sum(_is_video(p) for p in root.iterdir())
    if loose:
        msg += (f". data.root holds {loose} video file(s) directly, like a single case folder: set data.root to "
                f"the folder that holds the case folders (e.g. '{root.parent}'), or use data.source 'folder'")
    cases = _find_cases(root, _video_cases)
    if cases:
        msg += (f". The sub-folder '{cases[0].relative_to(root).as_posix()}' holds {cases[1]} case folders with "
                f"videos: set data.root to '{cases[0]}'")
        labels = _find_cases(root, _label_cases)
        if labels:
            msg += f" and data.labels_root to '{labels[0]}' ({labels[1]} case folders with tasks.csv)"
    return msg


def _no_labels_message(report: LabelReport, source: str, root: Path, labels_root: Path) -> str:
    example = labels_root / report.cases[0] / "tasks.csv"
    msg = (f"data.source '{source}': no case has labels: none of the {len(report.cases)} case folders under "
           f"data.root '{root}' has a tasks.csv under data.labels_root '{labels_root}' (expected "
           f"<data.labels_root>/<case>/tasks.csv, e.g. {example}). ")
    if not labels_root.is_dir():
        msg += "data.labels_root does not exist. "
    else:
        here = {d.name: d for d in _subdirs(labels_root) if (d / "tasks.csv").is_file()}
        deeper = _find_cases(labels_root, _label_cases)
        if here:
            msg += (f"data.labels_root holds {len(here)} label folder(s) ({_names(sorted(here), 5)}) but none is "
                    f"named like a video case ({_names(report.cases, 5)}). ")
        elif deeper:
            msg += (f"Its sub-folder '{deeper[0].relative_to(labels_root).as_posix()}' holds {deeper[1]} case "
                    f"folders with tasks.csv: set data.labels_root to '{deeper[0]}'. ")
        else:
            msg += f"About data.labels_root: {_contents(labels_root)}. "
    return msg + ("Set data.labels_root in params.yaml to the folder of the SurgVU label archive that holds "
                  "case_XXX/tasks.csv (its default is labels/ inside data.root).")


def _label_folder(csv_path: Path, root: Path, found: list[Found], entries: list[VideoEntry]) -> list[str]:
    """Attach the folder CSV's intervals as steps; returns the step classes the labels use."""
    durations = {f.rel: (v.duration_s if v.error is None else None) for f, v in zip(found, entries)}
    labelled = read_folder_labels(csv_path, durations)
    for f, v in zip(found, entries):
        v.label_files = [csv_path.name] if f.rel in labelled else []
        if v.error is None:
            v.steps = labelled.get(f.rel, [])
    names = sorted({i.label for ivs in labelled.values() for i in ivs})
    if all(normalise_task(n) in STEP_CLASSES for n in names):
        for v in entries:
            v.steps = [i.model_copy(update={"label": normalise_task(i.label)}) for i in v.steps]
        return list(STEP_CLASSES)
    return names


def ingest(params: Params, root: Path | None = None, out: Path | None = None, progress: bool = False,
           labels_root: Path | None = None) -> Manifest:
    """Build and atomically write the manifest (`out`, default data/ingest/manifest.json).

    `root` / `labels_root` override data.root / data.labels_root (an overridden root brings its own labels/
    folder unless `labels_root` is given too). Raises LabelError for a malformed label file and IngestError when
    the source folder is missing, holds no video, or (SurgVU layout) no case has labels; nothing is written then.
    """
    data = params.data
    if root is None:
        root = paths.SYNTHETIC if data.source == "synthetic" else resolve_path(data.root)
        labels_root = Path(labels_root) if labels_root is not None else resolve_path(data.labels_root)
    root = Path(root)
    labels_root = Path(labels_root) if labels_root is not None else root / "labels"
    out = Path(out) if out is not None else paths.MANIFEST
    if not root.is_dir():
        hint = " (run the synthesize stage first)" if data.source == "synthetic" else ""
        raise IngestError(f"{root}: no such directory for data.source '{data.source}'{hint}")
    surgvu_layout = data.source != "folder"
    found = discover_surgvu(root, skip=[labels_root]) if surgvu_layout else discover_folder(root)
    if not found:
        raise IngestError(_no_video_message(root, data.source))
    found.sort(key=lambda f: (f.case, f.part, f.rel))
    if surgvu_layout:
        _warn_part_gaps(found)
    ids = assign_ids(found)
    entries = [_entry(f, ids[f.rel]) for f in tqdm(found, desc="ingest", unit="video", disable=not progress)]
    step_classes = list(STEP_CLASSES)
    if data.source == "folder":
        for v in entries:
            v.label_files = []
        if data.labels_csv:
            step_classes = _label_folder(resolve_path(data.labels_csv), root, found, entries)
    else:
        _warn_labels(_label_surgvu(labels_root, entries, synthetic=data.source == "synthetic"), data.source, root,
                     labels_root)
    for v in entries:
        if v.error:
            log.warning("unusable video %s: %s", v.path, v.error)
    tools = tool_counts(entries)
    manifest = Manifest(schema_version=MANIFEST_SCHEMA, source=data.source, root=portable_path(root),
                        labels_root=portable_path(labels_root) if surgvu_layout else None,
                        step_classes=step_classes,
                        motion_classes=list(MOTION_CLASSES) if data.source == "synthetic" else [],
                        tool_classes=sorted(tools), videos=entries)
    write_manifest(manifest, out)
    bad = sum(v.error is not None for v in entries)
    labelled = len({v.case for v in entries if v.label_files})
    print(f"ingest: {len(entries)} videos ({len(entries) - bad} usable, {bad} unusable) in "
          f"{len({v.case for v in entries})} cases ({labelled} with labels) from {data.source} source "
          f"{root} -> {out}")
    if tools:
        print(f"ingest: {len(tools)} tool classes (intervals): "
              + ", ".join(f"{name} ({n})" for name, n in sorted(tools.items())))
    return manifest
