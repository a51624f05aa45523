"""Frozen's cost includes building its feature cache: the train stage records `feature_cache_s`, and a run that
reuses the cache (a resumed run, another seed) records the build time kept beside it."""

from __future__ import annotations

import json

import pytest
from train_data import tiny_params, train_inputs

import surgwm.training.loop as stage


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return train_inputs(tmp_path_factory.mktemp("cache_cost"))


def test_frozen_records_its_feature_cache_build_time_and_reuse_keeps_it(data, tmp_path):
    features = tmp_path / "features"
    first = stage.train("frozen", tiny_params(epochs=1), out_dir=tmp_path / "a", metrics_dir=tmp_path / "ma",
                        features_dir=features, progress=False, **data)
    assert first["feature_cache_s"] > 0
    assert json.loads((tmp_path / "ma" / "train_frozen.json").read_text())["feature_cache_s"] == first["feature_cache_s"]
    again = stage.train("frozen", tiny_params(epochs=1, seed=1), out_dir=tmp_path / "b", metrics_dir=tmp_path / "mb",
                        features_dir=features, progress=False, **data)          # another seed reuses the cache
    assert again["feature_cache_s"] == first["feature_cache_s"]
    scratch = stage.train("scratch", tiny_params(epochs=1), out_dir=tmp_path / "c", metrics_dir=tmp_path / "mc",
                          features_dir=features, progress=False, **data)
    assert "feature_cache_s" not in scratch                                    # no cache, nothing to add
