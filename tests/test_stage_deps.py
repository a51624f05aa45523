"""dvc.yaml declares the truth: each stage's code deps are exactly the project modules it imports (lazy imports
included), its params are listed by key, and the layers import in one direction: tasks -> surgwm -> models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from stage_imports import ROOT, as_deps, direct_imports, docstring_only, stage_closure

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
CODE = ("tasks/", "surgwm", "models", "flows/")
# A whole section is listed only where the stage really uses every key of it: register logs the evaluate section
# whole as MLflow params (and re-scores the champion with its probe recipe).
WHOLE_SECTIONS = {("register", "evaluate")}


def _stage(name: str) -> dict:
    spec = DVC[name]
    return spec.get("do", spec)


def _code_deps(name: str) -> set[str]:
    return {d for d in _stage(name)["deps"] if isinstance(d, str) and d.startswith(CODE)}


def _files(kind: str) -> list[Path]:
    return sorted(p for p in (ROOT / kind).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("stage", sorted(DVC))
def test_stage_declares_exactly_the_code_it_imports(stage):
    want, have = set(as_deps(stage_closure(stage))), _code_deps(stage)
    assert have == want, (f"dvc.yaml stage '{stage}': missing {sorted(want - have)}, not imported "
                          f"{sorted(have - want)} (python tests/stage_imports.py {stage} prints the list)")


@pytest.mark.parametrize("stage", sorted(DVC))
def test_stage_params_exist_and_are_listed_by_key(stage):
    for key in _stage(stage).get("params", []):
        node = PARAMS
        parts = key.split(".")
        for part in parts:
            if part.startswith("${"):
                break
            assert isinstance(node, dict) and part in node, f"{stage}: params key '{key}' is not in params.yaml"
            node = node[part]
        if len(parts) == 1:
            assert (stage, key) in WHOLE_SECTIONS, f"{stage}: lists the whole section '{key}'; list the keys it reads"


def test_no_stage_imports_another_stage_or_a_flow():
    for path in _files("tasks"):
        bad = [p.relative_to(ROOT).as_posix() for p in direct_imports(path)
               if p.relative_to(ROOT).parts[0] in ("tasks", "flows")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: move the shared code into surgwm/"


def test_library_never_imports_stages_or_flows():
    for path in _files("surgwm") + _files("models"):
        bad = [p.relative_to(ROOT).as_posix() for p in direct_imports(path)
               if p.relative_to(ROOT).parts[0] in ("tasks", "flows")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_models_hold_torch_modules_only():
    for path in _files("models"):
        bad = [p.relative_to(ROOT).as_posix() for p in direct_imports(path) if p.relative_to(ROOT).parts[0] != "models"]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: models/ is torch modules only"


def test_no_import_cycles():
    graph = {p: direct_imports(p) for kind in ("surgwm", "models", "tasks", "flows") for p in _files(kind)}
    state: dict[Path, int] = {}

    def visit(node: Path, path: list[Path]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(p.relative_to(ROOT).as_posix() for p in cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_library_package_inits_hold_only_a_docstring():
    """So importing a package runs no code (and the closure above may leave them out)."""
    inits = [p for kind in ("surgwm", "tasks") for p in (ROOT / kind).rglob("__init__.py")]
    assert inits and all(docstring_only(p) for p in inits), [str(p) for p in inits if not docstring_only(p)]


def test_stage_modules_are_thin():
    for path in _files("tasks"):
        lines = len(path.read_text().splitlines())
        assert lines < 100, f"{path.relative_to(ROOT)} has {lines} lines: move the logic into surgwm/"
