"""scripts/pretrain_embedded.py and the asset it makes: the predictor's public API it relies on, the geometry check,
a tiny run end to end, and the shipped asset's provenance (made by the current generator and script, README
generated from its measurements)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from models import Predictor, VideoEncoder
from surgwm.io import file_sha256

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import asset_readme  # noqa: E402
import pretrain_embedded as pe  # noqa: E402

GRID = (4, 2, 2)  # (time steps, rows, cols) of tokens


@pytest.fixture
def predictor() -> Predictor:
    torch.manual_seed(0)
    return Predictor(enc_dim=16, dim=16, depth=2, heads=2).eval()


def test_predict_all_ends_with_what_forward_predicts(predictor: Predictor):
    context = torch.randn(3, 2 * 2 * 2, 16)  # (B, Nc, D): 2 context time steps
    with torch.no_grad():
        every = predictor.predict_all(context, GRID, 2)  # (B, N, D)
        future = predictor(context, GRID, 2)  # (B, Nf, D)
    assert every.shape == (3, 16, 16)
    torch.testing.assert_close(every[:, 8:], future, rtol=0, atol=0)


def test_predict_all_fills_masked_slots_from_the_rest(predictor: Predictor):
    """A masked context token's content is replaced by the learned query: changing it changes nothing."""
    context = torch.randn(2, 16, 16)  # a whole clip as context (context_t = all 4 steps)
    masked = torch.zeros(2, 16, dtype=torch.bool)
    masked[:, [3, 7]] = True
    other = context.clone()
    other[:, [3, 7]] = torch.randn(2, 2, 16)
    with torch.no_grad():
        a = predictor.predict_all(context, GRID, 4, masked)
        b = predictor.predict_all(other, GRID, 4, masked)
        c = predictor.predict_all(other, GRID, 4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="masked must be"):
        predictor.predict_all(context, GRID, 4, masked[:, :8])


def test_geometry_comes_from_the_asset_and_must_match_params(tmp_path: Path):
    geo = pe.geometry(pe.ASSET, ROOT / "params.yaml")
    assert (geo.size, geo.clip_frames, geo.grid) == (64, 8, (4, 4, 4))
    cfg = json.loads((pe.ASSET / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"crop_size": 32, "num_hidden_layers": 2}))
    with pytest.raises(pe.GeometryError, match=r"crop_size 32 vs data\.size 64.*num_hidden_layers 2 vs model\.encoder_depth 3"):
        pe.geometry(tmp_path, ROOT / "params.yaml")


TINY = ["--device", "cpu", "--threads", "1", "--workers", "1", "--steps", "3", "--batch", "8",
        "--clips-per-video", "4", "--corpus-cases", "3", "--val-cases", "1", "--seconds-per-case", "4",
        "--log-every", "1"]


def test_tiny_pretraining_writes_a_loadable_encoder_and_its_record(tmp_path: Path):
    for run in ("a", "b"):
        assert pe.main(TINY + ["--out", str(tmp_path / run)]) == 0
    info = json.loads((tmp_path / "a" / "pretraining.json").read_text())
    assert info["code_sha256"] == pe.code_hash() and info["steps"] == 3 and not info["schedule_cut"]
    assert [row["step"] for row in info["log"]] == [1, 2, 3]
    assert info["log"][0]["lr"] < info["log"][1]["lr"] or info["args"]["warmup"] * 3 < 1  # warmup, then cosine
    assert info["model_safetensors_sha256"] == file_sha256(tmp_path / "a" / "model.safetensors")
    encoder = VideoEncoder.from_pretrained(tmp_path / "a")
    assert encoder.config.crop_size == 64 and encoder.config.frames_per_clip == 8
    # same command, same machine and threads: the same weights
    assert file_sha256(tmp_path / "b" / "model.safetensors") == info["model_safetensors_sha256"]


def test_code_hash_follows_code_not_docstrings(tmp_path: Path):
    for rel in pe.CODE_FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    before = pe.code_hash(tmp_path)
    target = tmp_path / "surgwm/data/synthetic.py"
    text = target.read_text()
    target.write_text(text.replace('"""Deterministic in (seed, case, stream, duration, aspect)',
                                   '"""Reworded docstring. Deterministic in (seed, case, stream, duration, aspect)', 1)
                      .replace("# rare but learnable", "# a reworded comment"))
    assert pe.code_hash(tmp_path) == before
    target.write_text(text.replace("REVISIT_P = 0.5", "REVISIT_P = 0.6", 1))
    assert pe.code_hash(tmp_path) != before


def test_shipped_asset_was_made_by_the_current_generator_and_script():
    """Change the generator or the script and this fails until the asset is re-made (scripts/pretrain_embedded.py,
    then scripts/transfer_check.py --json ...transfer_check.json and scripts/asset_readme.py), or until
    assets/vjepa2-tiny-surgical/STALE.md says why the old weights are kept."""
    info = json.loads((pe.ASSET / "pretraining.json").read_text())
    if (pe.ASSET / "STALE.md").is_file():
        pytest.skip(f"asset marked stale: {(pe.ASSET / 'STALE.md').read_text().strip()[:200]}")
    assert info["code_sha256"] == pe.code_hash(), (
        "surgwm/data/synthetic.py, classes.py, ffmpeg.py or scripts/pretrain_embedded.py changed since the embedded "
        "encoder was made: re-make it or write assets/vjepa2-tiny-surgical/STALE.md")
    assert info["model_safetensors_sha256"] == file_sha256(pe.ASSET / "model.safetensors")


def test_shipped_readme_is_generated_from_the_measurements():
    transfer = json.loads((pe.ASSET / "transfer_check.json").read_text())
    assert transfer["pretrained_sha256"] == file_sha256(pe.ASSET / "model.safetensors")
    assert asset_readme.main(["--check"]) == 0, "run: python scripts/asset_readme.py"
