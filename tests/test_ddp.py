"""Multi-process training: `train.devices: 2` relaunches under torchrun (gloo on CPU) and matches one process."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from train_data import make_cache, make_weights, tiny_params, write_params

import surgwm.training.loop as stage
import tasks.train as train_stage



@pytest.mark.parametrize("method", ["scratch"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, method):
    cache, manifest = make_cache(tmp_path)
    weights = make_weights(tmp_path)
    train = {"epochs": 2, "batch_size": 8}
    single = stage.train(method, tiny_params(**train), cache_dir=cache, manifest_path=manifest, weights_dir=weights,
                         out_dir=tmp_path / "one", metrics_dir=tmp_path / "m1", progress=False)

    params = write_params(tmp_path / "params.yaml", devices=2, **train)
    rc = train_stage.main([method, "--params", str(params), "--cache", str(cache), "--manifest", str(manifest),
                     "--weights", str(weights), "--out", str(tmp_path / "two"), "--metrics", str(tmp_path / "m2"),
                     "--no-progress"])
    assert rc == 0
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["world_size"] == 2 and config["replicas_identical"] is True  # checked by hashing every rank
    double = json.loads((tmp_path / "m2" / f"train_{method}.json").read_text())
    for key in ("train_loss", "train_temporal", "train_contrastive", "val_loss", "val_acc"):
        assert double[key] == pytest.approx(single[key], rel=1e-4, abs=1e-5), key
    for part in ("encoder/model.safetensors", "predictor.safetensors"):
        a, b = load_file(tmp_path / "one" / part), load_file(tmp_path / "two" / part)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=f"{part}:{k}")
    odd = [method, "--params", str(params), "--set", "train.batch_size=7", "--out", str(tmp_path / "odd")]
    assert train_stage.main(odd) == 2  # refused by params validation, before relaunching
