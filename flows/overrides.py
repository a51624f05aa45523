"""Parameters of a deployment run -> params.yaml overrides, validated by surgwm/params.py before any work.

DVC reads every stage's params from params.yaml, so an override only counts if the file DVC sees holds it. We do
what `dvc exp run -S key=value` does in the workspace: edit params.yaml (comments and order kept, via ruamel, as
DVC does), after validating the edited text with the project's pydantic schema; the write is atomic and the
previous file is kept under .pipeline/params-history/, and the run records the changed keys as an artifact.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from surgwm.io import atomic_write_text, flatten, get_dotted, set_dotted
from surgwm.params import Params, parse_params

HISTORY = Path(".pipeline") / "params-history"


@dataclass(frozen=True)
class ParamsChange:
    """What a run changed in params.yaml: (dotted key, before, after) per changed leaf, and where the old file is."""

    changed: list[tuple[str, Any, Any]]
    backup: Path | None
    params: Params

    def markdown(self) -> str:
        if not self.changed:
            return "No params overrides: the run used params.yaml as it was."
        rows = "\n".join(f"| `{k}` | `{a!r}` | `{b!r}` |" for k, a, b in self.changed)
        return (f"params.yaml overrides applied before any stage ran (previous file: `{self.backup}`)\n\n"
                f"| key | before | after |\n|---|---|---|\n{rows}\n")


def ui_overrides(
    data_source: str | None = None,
    data_root: str | None = None,
    methods: list[str] | None = None,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    current: Params | None = None,
) -> dict[str, Any]:
    """The UI's friendly fields as dotted params keys; explicit `overrides` win. `methods` keeps each run's settings."""
    out: dict[str, Any] = {}
    if data_source is not None:
        out["data.source"] = data_source
    if data_root is not None:
        out["data.root"] = data_root
    if epochs is not None:
        out["train.epochs"] = epochs
    if methods is not None:
        known = current.train.methods if current is not None else {}
        out["train.methods"] = {name: dict(known.get(name, {})) for name in methods}
    out.update(overrides or {})
    return out


def _yaml() -> YAML:
    y = YAML()                       # round-trip: keeps comments, key order and quoting, as `dvc exp run -S` does
    y.preserve_quotes = True
    y.width = 4096
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    y.representer.add_representer(float, lambda r, v: r.represent_scalar("tag:yaml.org,2002:float", _float(v)))
    return y


def _float(v: float) -> str:
    """3e-05 -> 3.0e-05: PyYAML (which the stages read with) takes a float only with a dot; DVC reads both."""
    text = repr(v)
    if v != v or v in (float("inf"), float("-inf")):
        return {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[text]
    mantissa, e, exp = text.partition("e")
    return (mantissa if "." in mantissa else mantissa + ".0") + (e + (exp if exp[0] in "+-" else "+" + exp) if e else "")


def _merge(node: Any, key: str, value: Any) -> None:
    """node[key] = value, but a mapping is edited in place, so the entries it keeps keep their style and comments."""
    old = node.get(key) if hasattr(node, "get") else None
    if isinstance(value, dict) and hasattr(old, "keys"):
        for k in [k for k in old if k not in value]:
            del old[k]
        for k, v in value.items():
            if k not in old or old[k] != v:
                _merge(old, k, v)
    else:
        node[key] = value


def _set(doc: Any, dotted: str, value: Any) -> None:
    """doc["a"]["b"] = value for "a.b" (surgwm/io.py), where a mapping value is merged in place (`_merge`)."""
    parent, _, leaf = dotted.rpartition(".")
    if parent and not isinstance(get_dotted(doc, parent), dict):
        set_dotted(doc, parent, {})          # creates the missing mappings on the way, as `dvc exp run -S` does
    _merge(get_dotted(doc, parent) if parent else doc, leaf, value)


_EMPTY = object()


def _leaves(doc: Any) -> dict[str, Any]:
    """{dotted key: value} per leaf (surgwm/io.py's flatten), where an empty mapping is a leaf too: dropping the run
    `scratch: {}` is a change to record. json's object_hook marks the empty mappings for flatten in one pass."""
    marked = json.loads(json.dumps(doc or {}, default=str), object_hook=lambda m: m or _EMPTY)
    if marked is _EMPTY:
        return {}
    return {k: {} if v is _EMPTY else v for k, v in flatten(marked).items()}


def edited_text(params_path: Path, overrides: dict[str, Any]) -> str:
    """params.yaml's text with the dotted overrides set; raises ParamsError (naming the key) if invalid."""
    y = _yaml()
    doc = y.load(params_path.read_text()) or {}
    for dotted, value in overrides.items():
        if not dotted or any(not part for part in dotted.split(".")):
            raise ValueError(f"override key {dotted!r} is not a dotted params key like 'train.epochs'")
        _set(doc, dotted, value)
    buf = io.StringIO()
    y.dump(doc, buf)
    text = buf.getvalue()
    parse_params(yaml.safe_load(text), f"{params_path} with overrides {sorted(overrides)}")  # raises naming the key
    return text


def apply_overrides(params_path: Path, overrides: dict[str, Any], run: str = "") -> ParamsChange:
    """Validate, then atomically rewrite params.yaml (only if something changes); keep the old file for the record."""
    params_path = Path(params_path)
    before_text = params_path.read_text()
    text = edited_text(params_path, overrides) if overrides else before_text
    params = parse_params(yaml.safe_load(text), str(params_path))
    before, after = _leaves(yaml.safe_load(before_text)), _leaves(yaml.safe_load(text))
    changed = [(k, before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys())
               if before.get(k) != after.get(k)]
    backup = None
    if changed:
        history = params_path.parent / HISTORY
        backup = history / f"{time.strftime('%Y%m%dT%H%M%S')}-{run or 'run'}.yaml"
        atomic_write_text(backup, before_text)
        atomic_write_text(params_path, text)
    return ParamsChange(changed, backup, params)
