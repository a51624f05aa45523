"""Files every stage writes or reads the same way: atomic writes, JSON, content hashes, dotted keys.

Atomic = written under a temp name in the same folder, then renamed: a reader (or a resumed stage after a kill)
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp name in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _plain(o: Any) -> Any:
    """JSON for numpy scalars, tuples and sets; anything else as its text."""
    item = getattr(o, "item", None)
    if callable(item) and getattr(o, "shape", None) == ():
        return item()
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=1, default=_plain) + "\n")


def read_json(path: Path) -> Any:
    """The parsed file, or None while it does not exist (or is not JSON): callers say what that means."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def file_sha256(path: str | Path) -> str:
    """Content hash of a file (videos, weights): what makes cached outputs safe to reuse."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(*parts: Any) -> str:
    """sha256 of the canonical JSON of `parts` (resolved config, data manifest, weights hash...)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def replace_dir(tmp: Path, out: Path) -> None:
    """Swap a complete folder `tmp` into `out` by renames; the old copy is removed only after the new one is in."""
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def get_dotted(d: Any, dotted: str) -> Any:
    """d["a"]["b"] for "a.b"; None where a key is missing."""
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    """d["a"]["b"] = value for "a.b", creating the mappings on the way."""
    *parents, leaf = dotted.split(".")
    for key in parents:
        if not isinstance(d.get(key), dict):
            d[key] = {}
        d = d[key]
    d[leaf] = value


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted key: leaf value} (lists are leaves)."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= flatten(v, f"{prefix}{k}.")
    return out
