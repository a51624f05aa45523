"""The validated schema of `params.yaml`: every stage loads its config through `load_params`.

Run `python -m surgwm.params [PATH]` to validate a params file and print the resolved config.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from surgwm.io import set_dotted

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"
SYNTHETIC_ROOT = "data/synthetic"


class ParamsError(ValueError):
    """params.yaml is invalid; the message names each bad key and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(Strict):
    seed: int = 0
    cases: int = Field(24, ge=2, description="cases (surgeries) to generate")
    parts_per_case: int = Field(2, ge=1)
    part_seconds: float = Field(30.0, gt=0)
    width: int = Field(320, ge=32)
    height: int = Field(240, ge=32)
    fps: int = Field(15, gt=0)


class BorderParams(Strict):
    """Bands cut off the stored frame before the square crop (surgwm/data/geometry.py): top/bottom are fractions
    of its height, left/right of its width. SurgVU: `bottom: 0.08` removes the tool-list banner (docs/data.md)."""

    top: float = Field(0.0, ge=0, lt=0.5)
    bottom: float = Field(0.0, ge=0, lt=0.5)
    left: float = Field(0.0, ge=0, lt=0.5)
    right: float = Field(0.0, ge=0, lt=0.5)

    @model_validator(mode="after")
    def _leaves_a_frame(self) -> "BorderParams":
        for a, b, what in (("top", "bottom", "height"), ("left", "right", "width")):
            total = getattr(self, a) + getattr(self, b)
            if total > 0.9:
                raise ValueError(f"data.border.{a} + data.border.{b} = {total:g} leaves less than 10% of the "
                                 f"frame {what}; the border is a thin band (e.g. SurgVU's banner: bottom 0.08)")
        return self


def default_labels_root(source: str, root: str) -> str:
    """data.labels_root when it is null: labels/ inside data.root (the synthetic layout, and SurgVU when both
    archives are unpacked into one folder); the folder source reads no label folder, so data.root itself
    (dvc.yaml lists data.labels_root as a dependency of ingest, and DVC needs a path that exists)."""
    if source == "folder":
        return root
    return f"{SYNTHETIC_ROOT if source == 'synthetic' else root.rstrip('/')}/labels"


class DataParams(Strict):
    source: Literal["synthetic", "surgvu", "folder"] = "synthetic"
    root: str = SYNTHETIC_ROOT
    labels_root: str | None = Field(None, description="surgvu: the folder holding <case>/tasks.csv (+ tools.csv); "
                                    "null (outside params.yaml: DVC needs a path): labels/ inside data.root")
    labels_csv: str | None = None
    border: BorderParams = BorderParams()
    fps: float = Field(4.0, gt=0, le=120)
    size: int = Field(64, ge=16, le=1024)
    clip_frames: int = Field(8, ge=2)
    clip_stride: int = Field(4, ge=1)
    synthetic: SyntheticParams = SyntheticParams()

    @model_validator(mode="before")
    @classmethod
    def _fill_labels_root(cls, raw: Any) -> Any:
        """null becomes the concrete default, so every dump of the params (DVC's `${data.labels_root}`) has a path."""
        if isinstance(raw, dict) and raw.get("labels_root") is None:
            source, root = raw.get("source", "synthetic"), raw.get("root", SYNTHETIC_ROOT)
            if isinstance(source, str) and isinstance(root, str):
                raw = {**raw, "labels_root": default_labels_root(source, root)}
        return raw

    @model_validator(mode="after")
    def _root_matches_source(self, info: ValidationInfo) -> "DataParams":
        """The folders must exist, unless the caller plans without the data (`python -m tasks.plan --surgvu`)."""
        check_paths = (info.context or {}).get("check_paths", True)
        if self.source == "synthetic" and self.root != SYNTHETIC_ROOT:
            raise ValueError(
                f"data.root must be '{SYNTHETIC_ROOT}' when data.source is 'synthetic' "
                f"(the synthesize stage writes there); got '{self.root}'"
            )
        if self.source != "synthetic" and check_paths:
            root = resolve_path(self.root)
            if not root.is_dir():
                raise ValueError(f"data.root '{self.root}' does not exist or is not a directory ({root})")
        self._check_labels_root(check_paths)
        if self.labels_csv is not None:
            if self.source != "folder":
                raise ValueError("data.labels_csv is only used with data.source 'folder'")
            if check_paths and not resolve_path(self.labels_csv).is_file():
                raise ValueError(f"data.labels_csv '{self.labels_csv}' does not exist")
        return self

    def _check_labels_root(self, check_paths: bool = True) -> None:
        default = default_labels_root(self.source, self.root)
        if self.source == "synthetic":
            if self.labels_root.rstrip("/") != default and resolve_path(self.labels_root) != resolve_path(default):
                raise ValueError(f"data.labels_root must be '{default}' when data.source is 'synthetic' "
                                 f"(the synthesize stage writes the labels there); got '{self.labels_root}'")
            return
        labels = resolve_path(self.labels_root)
        if self.source == "surgvu":
            if labels.is_relative_to(resolve_path(SYNTHETIC_ROOT)):
                raise ValueError(f"data.labels_root '{self.labels_root}' holds the synthetic demo's labels, not "
                                 "SurgVU's: set it to the folder of the SurgVU label archive that holds "
                                 "case_XXX/tasks.csv (e.g. <data.root>/labels when both archives are unpacked there)")
            if check_paths and not labels.is_dir():
                which = " (the default: labels/ inside data.root)" if self.labels_root == default else ""
                raise ValueError(f"data.labels_root '{self.labels_root}'{which} does not exist or is not a directory "
                                 f"({labels}); data.root is '{self.root}'. SurgVU ships its labels as a separate "
                                 "archive: set data.labels_root to the folder holding case_XXX/tasks.csv")
        elif check_paths and not labels.is_dir():
            raise ValueError(f"data.labels_root '{self.labels_root}' does not exist ({labels}); the folder source "
                             "reads no label folder, but dvc.yaml lists it as a dependency of ingest: set it to "
                             "data.root's value")


class DecodeParams(Strict):
    workers: int = Field(2, ge=1, le=64)
    threads: int = Field(1, ge=0, le=64, description="ffmpeg -threads; 0 lets ffmpeg choose")
    chunk_frames: int = Field(32, ge=1, le=4096)
    engine: Literal["local", "dask"] = Field("local", description="local: a thread pool in the stage's process; "
                                             "dask: a Prefect flow with DaskTaskRunner (surgwm/data/fanout.py)")
    scheduler_address: str | None = Field(None, description="dask: a running scheduler (tcp://host:8786); "
                                          "None: a local cluster of `workers` processes")
    store: Literal["npy", "h264"] = Field("npy", description="npy: raw uint8 frames (demo scale); h264: the "
                                          "compressed clip store (surgwm/data/store.py), ~30x smaller")
    crf: int = Field(20, ge=0, le=51, description="h264 store: x264 constant rate factor (lower = larger, closer)")
    gop: int = Field(8, ge=1, le=256, description="h264 store: frames per keyframe interval (a clip read decodes "
                     "up to clip_frames + gop - 1 frames)")

    @model_validator(mode="after")
    def _address_needs_dask(self) -> "DecodeParams":
        if self.scheduler_address is not None and self.engine != "dask":
            raise ValueError("decode.scheduler_address is only used with decode.engine 'dask'")
        return self


METHOD_NAMES = ("scratch", "frozen", "finetune")   # the table in surgwm/training/methods.py; keep in sync (tested)


class TrainParams(Strict):
    """Defaults for every method; `methods` maps a run name (its output dir) to keys of this section it overrides.

    A run name is a method of surgwm/training/methods.py, or any name with `method: <one of them>` among its overrides.
    Keys left None take the method's own default (lr, EMA momentum), see surgwm/training/methods.py.
    """

    methods: dict[str, dict[str, Any]] = Field(default_factory=lambda: {m: {} for m in METHOD_NAMES})
    seed: int = 0
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1, description="global batch: split across train.devices")
    lr: float | None = Field(None, gt=0, description="peak LR; None: the method's default")
    final_lr_fraction: float = Field(0.01, ge=0, le=1, description="cosine ends at lr * this")
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="share of all steps spent warming up")
    weight_decay: float = Field(0.05, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 turns clipping off")
    ema_momentum: float | None = Field(None, ge=0, le=1, description="target-encoder EMA at the start")
    ema_momentum_end: float | None = Field(None, ge=0, le=1, description="... ramped linearly to this")
    temporal_weight: float = Field(1.0, ge=0)
    contrastive_weight: float = Field(0.25, ge=0)
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of CASES held out for validation")
    case_fraction: float = Field(1.0, gt=0, le=1, description="share of the training cases this run trains on "
                                 "(data efficiency of the world model: e.g. a run scratch_25 with 0.25)")
    checkpoint_every: int = Field(50, ge=0, description="steps between checkpoints (0: epoch ends only)")
    feature_cache: bool = Field(True, description="frozen: encode every clip once, train on cached tokens")
    feature_dtype: Literal["float32", "float16"] = Field("float16", description="frozen feature cache storage "
                                                         "dtype (float16 halves it; tokens are read back as float32)")
    augment: bool = Field(True, description="random horizontal flip (not possible on cached features)")
    compile: bool = Field(False, description="torch.compile the encoder and predictor")
    devices: int = Field(1, ge=1, le=64, description="> 1: relaunch under torchrun, one process each (DDP)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, le=256, description="torch CPU threads (0: torch's default, one per core)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    deterministic: bool = Field(True, description="torch.use_deterministic_algorithms (bit-exact resume on CPU)")

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> "TrainParams":
        if self.temporal_weight + self.contrastive_weight <= 0:
            raise ValueError("train.temporal_weight + train.contrastive_weight must be > 0")
        if self.batch_size % self.devices:
            raise ValueError(f"train.batch_size ({self.batch_size}) must be divisible by train.devices "
                             f"({self.devices}): the global batch is split evenly across processes")
        if not self.methods:
            raise ValueError("train.methods is empty: name at least one of " + ", ".join(METHOD_NAMES))
        if not (info.context or {}).get("resolving"):
            for name, over in self.methods.items():
                self.resolve(name, over)
        return self

    def resolve(self, name: str, over: dict[str, Any] | None = None) -> "TrainParams":
        """This section with run `name`'s overrides applied (validated); `method` is popped into `methods`."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"train.methods: run name '{name}' must be letters, digits, '_', '-', '.' (names a dir)")
        over = dict(self.methods.get(name, {}) if over is None else over or {})
        method = over.pop("method", name)
        if method not in METHOD_NAMES:
            raise ValueError(f"train.methods.{name}: unknown method '{method}' (allowed values: "
                             f"{', '.join(METHOD_NAMES)}; or add `method: <one of them>` to its overrides)")
        bad = sorted(set(over) - (set(type(self).model_fields) - {"methods"}))
        if bad:
            raise ValueError(f"train.methods.{name}: unknown key(s) {', '.join(bad)} (allowed: method, "
                             f"{', '.join(k for k in type(self).model_fields if k != 'methods')})")
        merged = {**self.model_dump(exclude={"methods"}), **over, "methods": {name: {"method": method}}}
        try:
            return type(self).model_validate(merged, context={"resolving": True})
        except ValidationError as err:
            raise ValueError(f"train.methods.{name}: " + "; ".join(
                ".".join(map(str, e["loc"])) + ": " * bool(e["loc"]) + e["msg"].removeprefix("Value error, ")
                for e in err.errors())) from None

    def method_of(self, name: str) -> str:
        return self.methods.get(name, {}).get("method", name)


EMBEDDED_WEIGHTS = "embedded"   # weights.model value for the shipped tiny encoder (assets/vjepa2-tiny-surgical)


class WeightsParams(Strict):
    """Which pretrained V-JEPA 2 encoder the `weights` stage prepares (see tasks/weights.py)."""

    model: str = Field(EMBEDDED_WEIGHTS, min_length=1,
                       description="'embedded', a Hugging Face hub id, an HF-format dir, or Meta's .pt file")
    checkpoint_key: Literal["target_encoder", "encoder"] = "target_encoder"


class ModelParams(Strict):
    """The scratch encoder's architecture and the predictor's (tokens: tubelet 2 frames x 16x16 pixels)."""

    encoder_dim: int = Field(128, ge=8)
    encoder_depth: int = Field(3, ge=1)
    encoder_heads: int = Field(4, ge=1)
    predictor_dim: int = Field(64, ge=6)
    predictor_depth: int = Field(2, ge=1)
    predictor_heads: int = Field(4, ge=1)
    context_frames: int = Field(4, ge=2, description="frames of a clip given as context; the rest are predicted")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelParams":
        if self.encoder_dim % self.encoder_heads:
            raise ValueError(f"model.encoder_dim ({self.encoder_dim}) must be a multiple of model.encoder_heads")
        if self.predictor_dim % self.predictor_heads:
            raise ValueError(f"model.predictor_dim ({self.predictor_dim}) must be a multiple of model.predictor_heads")
        head = self.predictor_dim // self.predictor_heads
        if head % 2 or head < 6:
            raise ValueError(f"model.predictor_dim / model.predictor_heads = {head}: must be even and >= 6 (3D RoPE)")
        return self


BASELINE_NAMES = ("untrained_encoder", "raw_pixels")  # evaluated beside the methods (tasks/evaluate.py)


class EvaluateParams(Strict):
    """Frozen evaluation (tasks/evaluate.py): banks of attentive probes on the encoders' tokens, split by case."""

    test_fraction: float | None = Field(None, gt=0, lt=1, description="share of cases for test; None: the cases "
                                        "the train stage held out (train.val_fraction, train.seed)")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of the other cases for probe validation")
    seed: int = Field(0, description="the split, the clip samples and the untrained baseline's weights")
    seeds: list[int] = Field(default_factory=lambda: [0, 1], description="probe seeds (initial weights, batch "
                             "order): every probe is trained once per seed; reported as means with seed_sd")
    fractions: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0],
                                   description="shares of the probe's training cases (data efficiency)")
    baselines: list[Literal["untrained_encoder", "raw_pixels"]] = Field(default_factory=lambda: list(BASELINE_NAMES))
    probe_dim: int = Field(64, ge=8, description="width of the probe's query (and of its blocks)")
    probe_depth: int = Field(0, ge=0, description="self-attention blocks before the cross-attention pooler (0: "
                             "V-JEPA 2's pooler alone; 3 with probe_heads 16: its 4-block probe)")
    probe_heads: int = Field(4, ge=1)
    probe_deltas: bool = Field(True, description="the probe also sees each token's change over one time step")
    probe_epochs: int = Field(15, ge=1)
    probe_lrs: list[float] = Field(default_factory=lambda: [3e-3, 1e-2, 3e-2],
                                   description="learning-rate grid: one probe head per lr x weight decay")
    probe_weight_decays: list[float] = Field(default_factory=lambda: [0.05], description="weight-decay grid")
    probe_batch_size: int = Field(128, ge=2)
    probe_precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="the probes' products over tokens: "
                                                             "auto = bf16 on CUDA, or on a CPU with AVX512-BF16 at "
                                                             "probe_depth 0; else fp32")
    max_train_clips: int | None = Field(20000, ge=1, description="probe training clips kept (balanced per class, "
                                        "every case keeps one); None: all")
    max_val_clips: int | None = Field(5000, ge=1, description="probe-validation clips kept (evenly spaced); None: all")
    max_test_clips_per_video: int | None = Field(2000, ge=1, description="test clips scored per video (evenly "
                                                 "spaced; streamed, never stored); None: all")
    pixel_pool: Literal[1, 2, 4, 8, 16] = Field(4, description="raw_pixels: each 16x16 patch pooled to this side")
    rollouts: int = Field(2, ge=1, description="predictor roll-outs appended for step anticipation")
    top_k: int = Field(5, ge=1, description="anticipation recall@k")
    batch_size: int = Field(32, ge=2, description="encoding batch; future retrieval is among this many clips")
    feature_dtype: Literal["float32", "float16"] = "float16"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, le=256)
    convergence_metric: str = Field("val_loss", description="a key of train history records")
    convergence_fraction: float = Field(0.9, gt=0, le=1)
    gpu_prices: dict[str, float] = Field(
        default_factory=lambda: {"NVIDIA A100-SXM4-80GB": 2.50, "NVIDIA GeForce RTX 3090": 0.50},
        description="USD per GPU-hour, keyed by the device name exactly as torch reports it (the train metrics' "
                    "device_name); a price applies to that device only")
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000, description="report/register: bootstrap resamples "
                                     "of the cases behind every 95 % interval (surgwm/evaluation/intervals.py)")

    @model_validator(mode="after")
    def _check(self) -> "EvaluateParams":
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"evaluate.fractions must be shares in (0, 1], got {self.fractions}")
        if self.probe_dim % self.probe_heads:
            raise ValueError(f"evaluate.probe_dim ({self.probe_dim}) must be a multiple of evaluate.probe_heads")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"evaluate.seeds must be a non-empty list of distinct seeds, got {self.seeds}")
        if not self.probe_lrs or any(lr <= 0 for lr in self.probe_lrs):
            raise ValueError(f"evaluate.probe_lrs must be a non-empty list of learning rates > 0, got {self.probe_lrs}")
        if not self.probe_weight_decays or any(wd < 0 for wd in self.probe_weight_decays):
            raise ValueError("evaluate.probe_weight_decays must be a non-empty list of weight decays >= 0, got "
                             f"{self.probe_weight_decays}")
        if any(v < 0 for v in self.gpu_prices.values()):
            raise ValueError("evaluate.gpu_prices: prices must be >= 0 (USD per GPU-hour)")
        if any(not k.strip() for k in self.gpu_prices):
            raise ValueError("evaluate.gpu_prices: a device name is empty (use the name torch reports, e.g. "
                             "'NVIDIA H100 80GB HBM3')")
        return self


class StorageParams(Strict):
    """Disk the pipeline may fill: each stage that writes large data checks its own estimate first (surgwm/sizes.py)."""

    budget_gb: float = Field(200.0, gt=0, description="GB (10^9 bytes) that one stage's large output may take: "
                             "the decode cache, a run's feature cache, an evaluation's working data")


class RegisterParams(Strict):
    """MLflow logging and the model registry (tasks/register.py)."""

    experiment: str = Field("surgical-world-model", min_length=1)
    model_name: str = Field("surgical-world-model", min_length=1)
    metric: str = Field("step.f1_video", description="dotted key of the `validation` block of "
                        "metrics/evaluate_<run>.json: ranks the runs and gates the champion (never test scores)")
    greater_is_better: bool = True
    data_license: str = Field("unspecified", min_length=1, description="the licence of the training data, "
                              "written on every registered version's model card")


# `register` names the stage's section; pydantic warns that the metaclass has a `register` method (ABC), but
# instances read the field as usual.
warnings.filterwarnings("ignore", message='Field name "register" in "Params" shadows', category=UserWarning)


class Params(Strict):
    data: DataParams = DataParams()
    decode: DecodeParams = DecodeParams()
    train: TrainParams = TrainParams()
    weights: WeightsParams = WeightsParams()
    model: ModelParams = ModelParams()
    evaluate: EvaluateParams = EvaluateParams()
    register: RegisterParams = RegisterParams()
    storage: StorageParams = StorageParams()

    @model_validator(mode="after")
    def _clips_fit_model(self) -> "Params":
        """Cross-section checks: clips must split into whole tubelets (2 frames) and 16-pixel patches."""
        m, d = self.model, self.data
        if d.size % 16:
            raise ValueError(f"data.size ({d.size}) must be a multiple of the 16-pixel patch size")
        if m.context_frames % 2 or d.clip_frames % 2:
            raise ValueError(f"model.context_frames ({m.context_frames}) and data.clip_frames ({d.clip_frames}) "
                             "must be multiples of the tubelet size 2")
        if m.context_frames >= d.clip_frames:
            raise ValueError(f"model.context_frames ({m.context_frames}) must be less than data.clip_frames "
                             f"({d.clip_frames}): the rest of the clip is what gets predicted")
        return self


def resolve_path(path: str | Path) -> Path:
    """Paths in params.yaml are relative to the repository root, wherever the caller runs from."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def portable_path(path: str | Path) -> str:
    """Paths inside the checkout are stored relative to it, so outputs hash the same in every clone."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)


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


def parse_params(raw: dict[str, Any], source: str = "params.yaml", check_paths: bool = True) -> Params:
    """Validate; `check_paths=False` skips the checks that data folders exist (planning without the data)."""
    try:
        return Params.model_validate(raw or {}, context={"check_paths": check_paths})
    except ValidationError as err:
        raise ParamsError(format_errors(err, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None,
                check_paths: bool = True) -> Params:
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
        set_dotted(raw, dotted, value)
    return parse_params(raw, str(path), check_paths)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` overrides (`--set train.lr=1e-4`), values parsed as YAML; feed them to `load_params`."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


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
