"""The project modules a stage runs: the import closure of `tasks/<stage>.py`, lazy imports included.

Used by tests/test_stage_deps.py to keep `dvc.yaml` honest. `python tests/stage_imports.py` prints each stage's
closure as the `deps` lines dvc.yaml needs (files; a folder stands for all of its .py files).
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("surgwm", "models", "tasks", "flows")


def module_file(name: str) -> Path | None:
    """surgwm.data.clips -> surgwm/data/clips.py (or the package's __init__.py); None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


@cache
def docstring_only(path: Path) -> bool:
    """A package __init__ that holds only its docstring runs no code: tests/test_stage_deps.py keeps them so."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def _package_inits(name: str) -> list[Path]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first (left out when they hold only a docstring)."""
    parts = name.split(".")
    inits = [ROOT.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
    return [p for p in inits if p.is_file() and not docstring_only(p)]


@cache
def direct_imports(path: Path) -> frozenset[Path]:
    """Project files that `path` imports anywhere in its body (module level, functions, conditionals)."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(ROOT).with_suffix("")
    pkg = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    found: set[Path] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            target = module_file(name)
            if target is not None and not (target.name == "__init__.py" and docstring_only(target)):
                found.add(target)
                found.update(_package_inits(name))
    found.discard(path)
    # a module inside package P runs after P/__init__.py: importing a sibling does not run that __init__ again
    found -= {parent / "__init__.py" for parent in path.parents}
    return frozenset(found)


def closure(path: Path) -> set[Path]:
    """Every project file reachable from `path` by imports, `path` included."""
    seen, todo = {path}, [path]
    todo += _package_inits(".".join(path.relative_to(ROOT).with_suffix("").parts))
    seen.update(todo)
    while todo:
        for dep in direct_imports(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def stage_closure(stage: str) -> set[str]:
    """Relative POSIX paths of the code `python -m tasks.<stage>` runs."""
    return {p.relative_to(ROOT).as_posix() for p in closure(ROOT / "tasks" / f"{stage}.py")}


def as_deps(files: set[str]) -> list[str]:
    """Files, with a folder in place of its files when the closure holds every .py file below it (docstring-only
    __init__.py files aside)."""
    out: set[str] = set(files)
    for folder in sorted({str(Path(f).parent) for f in files}, key=lambda s: -s.count("/")):
        if folder == ".":
            continue
        below = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*.py")
                 if not (p.name == "__init__.py" and docstring_only(p))}
        if below and below <= files and below <= out | {f for f in out if f.startswith(folder + "/")}:
            out = {f for f in out if not f.startswith(folder + "/")} | {folder}
    return sorted(out)


if __name__ == "__main__":
    stages = sys.argv[1:] or sorted(p.stem for p in (ROOT / "tasks").glob("*.py") if p.stem != "__init__")
    for stage in stages:
        print(f"{stage}:")
        for dep in as_deps(stage_closure(stage)):
            print(f"  - {dep}")
