"""DVC stage `ingest`: find the videos of `data.source`, hash and probe each, attach labels, write the manifest.

A video that cannot be probed is kept with a one-line `error` (ingest goes on); a bad label file stops ingest,
because training on wrong labels is worse than not training.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from surgwm import paths
from surgwm.data.labels import (normalise_task, read_events, read_folder_labels, read_motion, read_tasks,
                          split_by_part)
from surgwm.data.classes import EVENT_LABEL, MOTION_CLASSES, STEP_CLASSES
from surgwm.data.manifest import Interval, Manifest, VideoEntry, write_manifest
from surgwm.io import file_sha256
from surgwm.params import Params, portable_path, resolve_path

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
_PART = re.compile(r"_part_?(\d+)$", re.IGNORECASE)
_MAX_ID = 100


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


def discover_surgvu(root: Path) -> list[Found]:
    """SurgVU layout: root/<case>/<case>_video_part_NNN.mp4 (labels/ holds CSVs, not videos)."""
    found = []
    for case_dir in sorted(d for d in root.iterdir() if d.is_dir() and d.name != "labels" and d.name[0] != "."):
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


def _label_surgvu(root: Path, entries: list[VideoEntry], synthetic: bool) -> None:
    """Per case: labels/<case>/tasks.csv (+ motion.csv, events.csv for the synthetic source)."""
    by_case: dict[str, list[VideoEntry]] = {}
    for v in entries:
        by_case.setdefault(v.case, []).append(v)
    for case, videos in by_case.items():
        parts = Counter(v.part for v in videos)
        for v in videos:
            if parts[v.part] > 1 and v.error is None:
                v.error = f"case {case} has {parts[v.part]} videos for part {v.part}; labels would be ambiguous"
        durations = {v.part: (v.duration_s if v.error is None else None) for v in videos}
        folder = root / "labels" / case
        files = [("tasks.csv", "steps", read_tasks)]
        if synthetic:
            files += [("motion.csv", "motion", lambda p: read_motion(p, MOTION_CLASSES)),
                      ("events.csv", "events", lambda p: read_events(p, (EVENT_LABEL,)))]
        for name, field, reader in files:
            path = folder / name
            if path.is_file():
                _attach(videos, split_by_part(reader(path), durations, path), field)


def _label_folder(csv_path: Path, root: Path, found: list[Found], entries: list[VideoEntry]) -> list[str]:
    """Attach the folder CSV's intervals as steps; returns the step classes the labels use."""
    durations = {f.rel: (v.duration_s if v.error is None else None) for f, v in zip(found, entries)}
    labelled = read_folder_labels(csv_path, durations)
    for f, v in zip(found, entries):
        if v.error is None:
            v.steps = labelled.get(f.rel, [])
    names = sorted({i.label for ivs in labelled.values() for i in ivs})
    if all(normalise_task(n) in STEP_CLASSES for n in names):
        for v in entries:
            v.steps = [i.model_copy(update={"label": normalise_task(i.label)}) for i in v.steps]
        return list(STEP_CLASSES)
    return names


def ingest(params: Params, root: Path | None = None, out: Path | None = None, progress: bool = False) -> Manifest:
    """Build and atomically write the manifest (`out`, default data/ingest/manifest.json).

    Raises LabelError for any bad label file and IngestError when the source folder is missing.
    """
    data = params.data
    if root is None:
        root = paths.SYNTHETIC if data.source == "synthetic" else resolve_path(data.root)
    root = Path(root)
    out = Path(out) if out is not None else paths.MANIFEST
    if not root.is_dir():
        hint = " (run the synthesize stage first)" if data.source == "synthetic" else ""
        raise IngestError(f"{root}: no such directory for data.source '{data.source}'{hint}")
    found = discover_folder(root) if data.source == "folder" else discover_surgvu(root)
    found.sort(key=lambda f: (f.case, f.part, f.rel))
    ids = assign_ids(found)
    entries = [_entry(f, ids[f.rel]) for f in tqdm(found, desc="ingest", unit="video", disable=not progress)]
    step_classes = list(STEP_CLASSES)
    if data.source == "folder":
        if data.labels_csv:
            step_classes = _label_folder(resolve_path(data.labels_csv), root, found, entries)
    else:
        _label_surgvu(root, entries, synthetic=data.source == "synthetic")
    for v in entries:
        if v.error:
            log.warning("unusable video %s: %s", v.path, v.error)
    manifest = Manifest(source=data.source, root=portable_path(root), step_classes=step_classes,
                        motion_classes=list(MOTION_CLASSES) if data.source == "synthetic" else [], videos=entries)
    write_manifest(manifest, out)
    bad = sum(v.error is not None for v in entries)
    print(f"ingest: {len(entries)} videos ({len(entries) - bad} usable, {bad} unusable) in "
          f"{len({v.case for v in entries})} cases from {data.source} source {root} -> {out}")
    return manifest
