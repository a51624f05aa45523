"""DVC stage `weights`: fetch/convert the pretrained V-JEPA 2 encoder named by `weights.model` into one format.

`weights.model` is one of:
  embedded   the project's tiny encoder shipped in assets/vjepa2-tiny-surgical/ (HF format)
  a path     an HF-format dir (config.json + model.safetensors), or Meta's original checkpoint file (vitl.pt,
             ...; `weights.checkpoint_key` picks target_encoder or encoder), converted by surgwm/training/meta_checkpoint.py
  a hub id   e.g. facebook/vjepa2-vitl-fpc64-256, loaded through the HF cache; HF_HOME / HF_HUB_CACHE /
             HF_HUB_OFFLINE are read when the stage runs (offline: the cache must hold it)
Nothing pickled is ever executed: HF sources must be safetensors, Meta files load with weights_only=True.
Output (replaced atomically: built in a temp dir beside it, then renamed): `data/weights/` with the encoder
only (config.json + model.safetensors, loadable by `VideoEncoder.from_pretrained`) and weights.json
(source, resolved id/path, sha256, sizes), which is also printed.

Run: `python -m tasks.weights` (exit 1 with the reason when the weights cannot be used).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from models.encoder import VideoEncoder
from surgwm.io import file_sha256
from surgwm.training.meta_checkpoint import WeightsError, load_meta_encoder
from surgwm.params import EMBEDDED_WEIGHTS, Params, portable_path, resolve_path
from surgwm.paths import EMBEDDED_ENCODER, WEIGHTS

__all__ = ["WeightsError", "prepare_weights", "load_encoder", "resolve_source", "hub_kwargs"]

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
META_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt", ".bin")
_TRUE = {"1", "on", "yes", "true"}


def hub_kwargs() -> dict[str, Any]:
    """HF cache dir and offline flag read from the environment NOW (huggingface_hub reads them at import)."""
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not cache and env.get("HF_HOME"):
        cache = str(Path(env["HF_HOME"]).expanduser() / "hub")
    offline = any(env.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    kw: dict[str, Any] = {"local_files_only": offline}
    if cache:
        kw["cache_dir"] = str(Path(cache).expanduser())
    return kw


def resolve_source(model: str, embedded_dir: Path = EMBEDDED_ENCODER) -> tuple[str, str]:
    """(kind, location): kind is embedded | local | meta | hub; raises WeightsError for what cannot be used."""
    if model == EMBEDDED_WEIGHTS:
        if not (embedded_dir / "config.json").is_file():
            raise WeightsError(
                f"weights.model is '{EMBEDDED_WEIGHTS}' but the embedded encoder {embedded_dir} is missing "
                "(config.json + model.safetensors; not shipped yet). Set weights.model to a hub id such as "
                "facebook/vjepa2-vitl-fpc64-256, an HF-format dir, or Meta's .pt checkpoint file."
            )
        return "embedded", str(embedded_dir)
    path = resolve_path(model)
    if path.is_dir():
        return "local", str(path)
    if path.is_file():
        if path.suffix == ".safetensors" or path.name == "config.json":
            return "local", str(path.parent)
        return "meta", str(path)
    looks_like_path = model.startswith(("/", ".", "~")) or model.endswith(META_SUFFIXES + (".safetensors",))
    if not looks_like_path and HUB_ID.fullmatch(model):
        return "hub", model
    raise WeightsError(f"weights.model '{model}': no such file or directory ({path}), and not a hub id "
                       f"(owner/name) nor '{EMBEDDED_WEIGHTS}'")


def _load_hf(location: str, kind: str) -> VideoEncoder:
    """HF format (local dir or hub id), safetensors only; every failure becomes a WeightsError naming the source."""
    if kind != "hub":
        cfg = Path(location) / "config.json"
        if not cfg.is_file():
            raise WeightsError(f"{location}: not an HF-format model dir (no config.json)")
        model_type = json.loads(cfg.read_text()).get("model_type")
        if model_type != "vjepa2":
            raise WeightsError(f"{cfg}: model_type is '{model_type}', expected 'vjepa2' (a V-JEPA 2 model)")
    kw = hub_kwargs() if kind == "hub" else {"local_files_only": True}
    try:
        return VideoEncoder.from_pretrained(location, use_safetensors=True, **kw).eval()
    except ValueError as err:  # VideoEncoder.from_pretrained: encoder weights missing (names the source)
        raise WeightsError(" ".join(str(err).split())[:800]) from None
    except (OSError, RuntimeError) as err:
        msg = " ".join(str(err).split())[:800]
        if "ignore_mismatched_sizes" in msg:
            msg = "tensor shapes do not match its config.json (the load report above lists them)"
        hint = ""
        if kind == "hub" and kw["local_files_only"]:
            from huggingface_hub import constants

            hint = f" (offline: the HF cache {kw.get('cache_dir', constants.HF_HUB_CACHE)} must already hold it)"
        raise WeightsError(f"cannot load V-JEPA 2 encoder from {location}{hint}: {msg}") from None


def _hub_revision(hub_id: str) -> str | None:
    """The cached snapshot (commit) a hub id resolved to, for the record."""
    try:
        from huggingface_hub import try_to_load_from_cache

        kw = hub_kwargs()
        hit = try_to_load_from_cache(hub_id, "config.json", cache_dir=kw.get("cache_dir"))
        return Path(hit).parent.name if isinstance(hit, str) else None
    except Exception:  # noqa: BLE001 - the record is best effort
        return None


def load_encoder(params: Params, embedded_dir: Path = EMBEDDED_ENCODER) -> tuple[VideoEncoder, dict[str, Any]]:
    """The encoder `params.weights` names, and where it came from."""
    kind, location = resolve_source(params.weights.model, embedded_dir)
    if kind == "meta":
        encoder = load_meta_encoder(location, params.weights.checkpoint_key)
    else:
        encoder = _load_hf(location, kind)
    # a path inside the checkout is recorded relative to it, so data/weights hashes the same in every clone
    resolved = location if kind == "hub" else portable_path(location)
    source = {"source": kind, "model": params.weights.model, "resolved": resolved,
              "revision": _hub_revision(location) if kind == "hub" else None,
              "checkpoint_key": params.weights.checkpoint_key if kind == "meta" else None}
    return encoder, source


def describe(encoder: VideoEncoder) -> dict[str, Any]:
    cfg = encoder.config
    return {"params": sum(p.numel() for p in encoder.parameters()), "dim": encoder.dim,
            "depth": cfg.num_hidden_layers, "heads": cfg.num_attention_heads, "crop_size": cfg.crop_size,
            "frames_per_clip": cfg.frames_per_clip, "patch": encoder.patch, "tubelet": encoder.tubelet,
            "dtype": str(next(encoder.parameters()).dtype).removeprefix("torch.")}


def write_encoder(encoder: VideoEncoder, record: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Save into a temp dir beside `out_dir`, then swap it in: a failure leaves the old output (or none)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    try:
        encoder.save_pretrained(tmp)
        weights_file = tmp / "model.safetensors"
        if not weights_file.is_file():
            raise WeightsError(f"save_pretrained wrote no single model.safetensors into {tmp}")
        record = {**record, "sha256": file_sha256(weights_file), **describe(encoder),
                  "files": sorted(p.name for p in tmp.iterdir()) + ["weights.json"]}
        (tmp / "weights.json").write_text(json.dumps(record, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out_dir.exists():
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return record


def prepare_weights(params: Params, out_dir: Path = WEIGHTS, embedded_dir: Path = EMBEDDED_ENCODER) -> dict[str, Any]:
    """Load the encoder `params.weights` names and write it (encoder only, safetensors) to `out_dir`."""
    encoder, source = load_encoder(params, embedded_dir)
    return write_encoder(encoder, source, Path(out_dir))
