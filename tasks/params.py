"""The validated schema of `params.yaml`: every stage loads its config through `load_params`.

Run `python -m tasks.params [PATH]` to validate a params file and print the resolved config.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"
SYNTHETIC_ROOT = "data/synthetic"


class ParamsError(ValueError):
    """params.yaml is invalid; the message names each bad key and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(Strict):
    seed: int = 0
    cases: int = Field(12, ge=2, description="cases (surgeries) to generate")
    parts_per_case: int = Field(2, ge=1)
    part_seconds: float = Field(30.0, gt=0)
    width: int = Field(320, ge=32)
    height: int = Field(240, ge=32)
    fps: int = Field(30, gt=0)


class DataParams(Strict):
    source: Literal["synthetic", "surgvu", "folder"] = "synthetic"
    root: str = SYNTHETIC_ROOT
    labels_csv: str | None = None
    fps: float = Field(4.0, gt=0, le=120)
    size: int = Field(64, ge=16, le=1024)
    clip_frames: int = Field(8, ge=2)
    clip_stride: int = Field(4, ge=1)
    synthetic: SyntheticParams = SyntheticParams()

    @model_validator(mode="after")
    def _root_matches_source(self) -> "DataParams":
        if self.source == "synthetic" and self.root != SYNTHETIC_ROOT:
            raise ValueError(
                f"data.root must be '{SYNTHETIC_ROOT}' when data.source is 'synthetic' "
                f"(the synthesize stage writes there); got '{self.root}'"
            )
        if self.source != "synthetic":
            root = resolve_path(self.root)
            if not root.is_dir():
                raise ValueError(f"data.root '{self.root}' does not exist or is not a directory ({root})")
        if self.labels_csv is not None:
            if self.source != "folder":
                raise ValueError("data.labels_csv is only used with data.source 'folder'")
            if not resolve_path(self.labels_csv).is_file():
                raise ValueError(f"data.labels_csv '{self.labels_csv}' does not exist")
        return self


class DecodeParams(Strict):
    workers: int = Field(2, ge=1, le=64)
    threads: int = Field(1, ge=0, le=64, description="ffmpeg -threads; 0 lets ffmpeg choose")
    chunk_frames: int = Field(32, ge=1, le=4096)


class Params(Strict):
    data: DataParams = DataParams()
    decode: DecodeParams = DecodeParams()


def resolve_path(path: str | Path) -> Path:
    """Paths in params.yaml are relative to the repository root, wherever the caller runs from."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Name the keys or values allowed at `loc`, so the error says what to write instead."""
    cls: Any = model
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return ""
        cls = field.annotation
    if not loc:
        return ""
    field = cls.model_fields.get(loc[-1]) if isinstance(loc[-1], str) else None
    if field is None:
        return f" (allowed keys: {', '.join(cls.model_fields)})"
    args = getattr(field.annotation, "__args__", None)
    if getattr(field.annotation, "__origin__", None) is Literal and args:
        return f" (allowed values: {', '.join(map(str, args))})"
    return ""


def format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid:"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p != "__root__")
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = f" (got {e['input']!r})" if e["type"] not in ("extra_forbidden", "missing", "value_error") else ""
        lines.append(f"  {key}: {msg}{got}{_allowed(Params, loc)}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ParamsError(format_errors(err, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Params:
    """Read, merge dotted `overrides` (e.g. {"data.fps": 2}) and validate; fails before any work."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such params file") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_params(raw, str(path))


def load_or_exit(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Stage entry points call this: a bad params file ends the stage with the message, no traceback."""
    try:
        return load_params(path)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    params = load_or_exit(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PARAMS)
    print(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), end="")


if __name__ == "__main__":
    main()
