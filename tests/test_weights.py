"""The `weights` stage: embedded / hub id (offline cache) / HF dir / Meta .pt sources, refusals, atomic output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hf_cache import FAKE_COMMIT, add_to_hf_cache
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import VJEPA2Config, VJEPA2Model

import tasks.weights as weights_stage
from models.encoder import VideoEncoder, encoder_config
from surgwm.training.meta_checkpoint import infer_config
from surgwm.params import Params, parse_params
from surgwm.io import file_sha256 as sha256_file
from surgwm.training.weights import WeightsError, prepare_weights

HUB_ID = "facebook/vjepa2-vitl-fpc64-256"
X = torch.randn(1, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # a fixed input


def tiny_cfg(dim: int = 48) -> VJEPA2Config:
    return encoder_config(dim=dim, depth=2, heads=2, crop_size=32, frames_per_clip=4)


def full_model(dim: int = 48, seed: int = 0) -> VJEPA2Model:
    """A tiny full V-JEPA 2 model (encoder + built-in predictor), as hub checkpoints hold."""
    torch.manual_seed(seed)
    return VJEPA2Model(tiny_cfg(dim)).eval()


@torch.no_grad()
def reference(model: VJEPA2Model) -> torch.Tensor:
    return model(X, skip_predictor=True).last_hidden_state  # (1, N, D)


@torch.no_grad()
def stage_output(out_dir: Path) -> torch.Tensor:
    return VideoEncoder.from_pretrained(out_dir).eval()(X)


def params(model: str, key: str = "target_encoder") -> Params:
    return parse_params({"weights": {"model": model, "checkpoint_key": key}})


def to_meta(hf_sd: dict[str, torch.Tensor], prefix: str = "module.backbone.") -> dict[str, torch.Tensor]:
    """Inverse of the conversion: transformers' encoder keys -> Meta's (qkv fused), written out key by key."""
    out: dict[str, torch.Tensor] = {}
    for k, v in hf_sd.items():
        if m := re.fullmatch(r"encoder\.layer\.(\d+)\.attention\.query\.(weight|bias)", k):
            n, kind = m.groups()
            parts = [hf_sd[f"encoder.layer.{n}.attention.{p}.{kind}"] for p in ("query", "key", "value")]
            out[f"blocks.{n}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
        elif re.fullmatch(r"encoder\.layer\.\d+\.attention\.(key|value)\..*", k):
            continue
        elif m := re.fullmatch(r"encoder\.layer\.(\d+)\.attention\.proj\.(.*)", k):
            out[f"blocks.{m[1]}.attn.proj.{m[2]}"] = v
        elif m := re.fullmatch(r"encoder\.layer\.(\d+)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.(.*)", k):
            out[f"blocks.{m[1]}.{m[2]}.{m[3]}"] = v
        elif k.startswith("encoder.embeddings.patch_embeddings.proj."):
            out["patch_embed.proj." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("encoder.layernorm."):
            out["norm." + k.rsplit(".", 1)[1]] = v
        else:
            raise AssertionError(f"unmapped key {k}")
    out["pos_embed"] = torch.zeros(1, 8, hf_sd["encoder.layernorm.weight"].shape[0])  # real files keep one (unused)
    return {prefix + k: v.clone() for k, v in out.items()}


def encoder_sd(model: VJEPA2Model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}


def test_hub_id_from_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = full_model()
    add_to_hf_cache(tmp_path / "hub", HUB_ID, model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "weights"
    record = prepare_weights(params(HUB_ID), out_dir=out)
    assert record["source"] == "hub" and record["resolved"] == HUB_ID and record["revision"] == FAKE_COMMIT
    assert record["sha256"] == sha256_file(out / "model.safetensors")
    assert (record["dim"], record["depth"], record["heads"], record["crop_size"]) == (48, 2, 2, 32)
    assert record["params"] == sum(v.numel() for v in encoder_sd(model).values())
    assert json.loads((out / "weights.json").read_text()) == record
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "weights.json"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:  # encoder only
        assert all(k.startswith("encoder.") for k in f.keys())
    torch.testing.assert_close(stage_output(out), reference(model), atol=0, rtol=0)


def test_hub_id_missing_from_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match=f"{HUB_ID}.*offline"):
        prepare_weights(params(HUB_ID), out_dir=tmp_path / "weights")
    assert not (tmp_path / "weights").exists()


def test_local_hf_dir_and_embedded(tmp_path: Path) -> None:
    model = full_model(seed=1)
    model.save_pretrained(tmp_path / "hf")
    record = prepare_weights(params(str(tmp_path / "hf")), out_dir=tmp_path / "w1")
    assert record["source"] == "local"
    torch.testing.assert_close(stage_output(tmp_path / "w1"), reference(model), atol=0, rtol=0)
    # the stage's own output is a valid embedded folder (how assets/vjepa2-tiny-surgical gets shipped)
    record = prepare_weights(params("embedded"), out_dir=tmp_path / "w2", embedded_dir=tmp_path / "w1")
    assert record["source"] == "embedded"
    assert record["sha256"] == sha256_file(tmp_path / "w1" / "model.safetensors")


def test_missing_embedded_folder(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="embedded encoder .*missing"):
        prepare_weights(params("embedded"), out_dir=tmp_path / "w", embedded_dir=tmp_path / "nope")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("key", ["target_encoder", "encoder"])
def test_meta_checkpoint_conversion(tmp_path: Path, key: str) -> None:
    target, online = full_model(seed=2), full_model(seed=3)
    ckpt = {"encoder": to_meta(encoder_sd(online)), "target_encoder": to_meta(encoder_sd(target)),
            "predictor": {"module.backbone.predictor_embed.weight": torch.zeros(4, 48)}, "epoch": 10}
    (tmp_path / "meta").mkdir()
    torch.save(ckpt, tmp_path / "meta" / "vitl.pt")
    with pytest.raises(WeightsError, match="number of attention heads is unknown"):
        prepare_weights(params(str(tmp_path / "meta" / "vitl.pt"), key), out_dir=tmp_path / "w")
    tiny_cfg().save_pretrained(tmp_path / "meta")  # heads are not in the weights: a config.json beside it
    record = prepare_weights(params(str(tmp_path / "meta" / "vitl.pt"), key), out_dir=tmp_path / "w")
    assert record["source"] == "meta" and record["checkpoint_key"] == key
    expected = reference(target if key == "target_encoder" else online)
    torch.testing.assert_close(stage_output(tmp_path / "w"), expected, atol=1e-6, rtol=1e-6)


def test_meta_config_inferred_for_released_sizes() -> None:
    """ViT-g: heads from the released sizes, the 48/11 MLP ratio rounds back to 6144, crop from the name."""
    sd = {"patch_embed.proj.weight": torch.empty(1408, 3, 2, 16, 16, device="meta"),
          "blocks.0.mlp.fc1.weight": torch.empty(6144, 1408, device="meta"),
          "blocks.0.attn.qkv.bias": torch.empty(3 * 1408, device="meta"),
          "blocks.39.norm1.weight": torch.empty(1408, device="meta")}
    cfg = infer_config(sd, Path("/nowhere/vitg-384.pt"))
    assert (cfg.num_attention_heads, cfg.num_hidden_layers, cfg.crop_size) == (22, 40, 384)
    assert int(cfg.hidden_size * cfg.mlp_ratio) == 6144 and cfg.qkv_bias


class Evil:
    """Anything but tensors and plain containers needs unsafe unpickling."""

    def __reduce__(self):  # noqa: ANN204
        return (print, ("pickled code ran",))


def test_unsafe_pickle_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"target_encoder": {"w": torch.zeros(1)}, "extra": Evil()}, path)
    with pytest.raises(WeightsError, match=r"refusing to load .*evil\.pt: it needs unsafe unpickling"):
        prepare_weights(params(str(path)), out_dir=tmp_path / "w")
    assert "pickled code ran" not in capsys.readouterr().out


def test_wrong_architecture_is_refused(tmp_path: Path) -> None:
    # a Meta-style file holding some other network
    torch.save({"target_encoder": {"conv1.weight": torch.zeros(8, 3, 3, 3)}}, tmp_path / "resnet.pt")
    with pytest.raises(WeightsError, match="resnet.pt.*not a V-JEPA 2 encoder"):
        prepare_weights(params(str(tmp_path / "resnet.pt")), out_dir=tmp_path / "w")
    # a Meta file whose config.json beside it disagrees with the weights
    (tmp_path / "m").mkdir()
    torch.save({"target_encoder": to_meta(encoder_sd(full_model()))}, tmp_path / "m" / "vitl.pt")
    VJEPA2Config(**{**tiny_cfg().to_dict(), "mlp_ratio": 2.0}).save_pretrained(tmp_path / "m")  # MLP too narrow
    with pytest.raises(WeightsError, match="vitl.pt: weights do not fit"):
        prepare_weights(params(str(tmp_path / "m" / "vitl.pt")), out_dir=tmp_path / "w")
    # an HF dir whose config.json does not match its safetensors
    full_model(dim=32).save_pretrained(tmp_path / "hf")
    tiny_cfg(dim=64).save_pretrained(tmp_path / "hf")
    with pytest.raises(WeightsError, match="cannot load V-JEPA 2 encoder from .*hf: tensor shapes do not match"):
        prepare_weights(params(str(tmp_path / "hf")), out_dir=tmp_path / "w")
    # an HF dir of another model type
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(WeightsError, match="model_type is 'bert'"):
        prepare_weights(params(str(tmp_path / "bert")), out_dir=tmp_path / "w")
    # an HF dir whose safetensors holds something else
    (tmp_path / "other").mkdir()
    tiny_cfg().save_pretrained(tmp_path / "other")
    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "other" / "model.safetensors"))
    with pytest.raises(WeightsError, match="other: not a V-JEPA 2 encoder checkpoint .* weights missing"):
        prepare_weights(params(str(tmp_path / "other")), out_dir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_output_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = full_model()
    model.save_pretrained(tmp_path / "hf")
    out = tmp_path / "weights"
    first = prepare_weights(params(str(tmp_path / "hf")), out_dir=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_save(self: VideoEncoder, directory: Path) -> None:
        (Path(directory) / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(VideoEncoder, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        prepare_weights(params(str(tmp_path / "hf")), out_dir=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "weights"]  # no temp dirs left
    monkeypatch.undo()
    assert prepare_weights(params(str(tmp_path / "hf")), out_dir=out)["sha256"] == first["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "weights"]


def test_main_reports_error_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("weights:\n  model: ./no/such/vitl.pt\n")
    assert weights_stage.main(["--params", str(p), "--out", str(tmp_path / "w")]) == 1
    assert "no such file or directory" in capsys.readouterr().err


def test_embedded_weights_record_a_path_relative_to_the_checkout(tmp_path: Path) -> None:
    """weights.json is hashed into dvc.lock: an absolute path would make every clone's hash differ."""
    from surgwm.paths import EMBEDDED_ENCODER

    record = prepare_weights(params("embedded"), out_dir=tmp_path / "w")
    assert record["resolved"] == "assets/vjepa2-tiny-surgical" and EMBEDDED_ENCODER.is_dir()
