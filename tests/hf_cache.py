"""Lay out a local Hugging Face hub cache for a repo id, so hub-id loading can be tested offline."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    """`models--owner--name`, the hub cache's folder for a model repo."""
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def add_to_hf_cache(cache_dir: Path, repo_id: str, model: PreTrainedModel, commit: str = FAKE_COMMIT) -> Path:
    """Save `model` as snapshot `commit` of `repo_id` (config.json + model.safetensors); refs/main names it.

    Real caches keep blobs and symlink them from the snapshot; plain files load the same way offline."""
    root = repo_folder(cache_dir, repo_id)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(snapshot))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot
