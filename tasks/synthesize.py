"""DVC stage `synthesize`: (re)build data/synthetic from `data.synthetic` params, or leave a stub for real sources.

The dataset is written to a temp folder beside the target and renamed into place, so a killed run never leaves
half a dataset where `ingest` would read it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from surgwm import paths
from surgwm.data.synthetic import generate_dataset
from surgwm.io import replace_dir
from surgwm.params import Params, load_or_exit

UNUSED = "data/synthetic is unused: data.source is '{source}' (videos come from data.root = '{root}').\n"


def _clean_stale(out: Path) -> None:
    """Temp folders left by killed runs (any pid) are garbage."""
    for stale in out.parent.glob(f".{out.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)


def synthesize(params: Params, out: Path | None = None, progress: bool = False) -> Path:
    """Build the synthetic dataset (or the stub) at `out` (default data/synthetic) and return it."""
    out = Path(out or paths.SYNTHETIC)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.mkdir()
    try:
        data = params.data
        if data.source == "synthetic":
            s = data.synthetic
            generate_dataset(tmp, seed=s.seed, cases=s.cases, parts_per_case=s.parts_per_case,
                             part_seconds=s.part_seconds, width=s.width, height=s.height, fps=s.fps,
                             progress=progress)
        else:
            (tmp / "README.txt").write_text(UNUSED.format(source=data.source, root=data.root))
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    params = load_or_exit()
    try:
        out = synthesize(params, progress=True)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    s = params.data.synthetic
    if params.data.source == "synthetic":
        print(f"synthesize: {s.cases} cases x {s.parts_per_case} parts x {s.part_seconds:g} s "
              f"({s.width}x{s.height} @ {s.fps} fps, seed {s.seed}) -> {out}")
    else:
        print(f"synthesize: source is '{params.data.source}'; wrote an unused stub at {out}")


if __name__ == "__main__":
    main()
