"""examples/*.yaml are complete params files that pass the same validation as params.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from surgwm.io import flatten
from surgwm.params import REPO_ROOT, load_params

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))


def _keys(path: Path) -> set[str]:
    raw = yaml.safe_load(path.read_text())
    raw["train"]["methods"] = {}          # the runs are the user's choice; every other key must be there
    return set(flatten(raw))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_has_every_key_of_params_yaml(example: Path):
    assert _keys(example) == _keys(REPO_ROOT / "params.yaml")


def test_surgvu_vitl_validates_once_its_folders_exist(tmp_path: Path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "labels").mkdir()
    params = load_params(REPO_ROOT / "examples" / "surgvu-vitl.yaml",
                         {"data.root": str(tmp_path / "videos"), "data.labels_root": str(tmp_path / "labels")})
    assert params.data.source == "surgvu" and params.decode.store == "h264" and params.train.devices == 8
    assert params.data.border.bottom == pytest.approx(0.08)


def test_surgvu_vitl_names_its_missing_data_folder():
    from surgwm.params import ParamsError

    with pytest.raises(ParamsError, match="data.root"):
        load_params(REPO_ROOT / "examples" / "surgvu-vitl.yaml")
