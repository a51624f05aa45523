"""params.yaml validation: a bad file fails before any work, naming the key and what is allowed."""

import subprocess
import sys

import pytest
import yaml

from surgwm.params import DEFAULT_PARAMS, ParamsError, load_params, parse_params


def test_shipped_params_are_valid():
    params = load_params(DEFAULT_PARAMS)
    assert params.data.source == "synthetic"
    assert params.data.fps > 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"data": {"fps": -1}}, ["data.fps", "greater than 0", "-1"]),
        ({"data": {"fps": "fast"}}, ["data.fps", "valid number", "'fast'"]),
        ({"data": {"fpz": 3}}, ["data.fpz", "unknown key", "allowed keys:", "fps"]),
        ({"trian": {}}, ["trian", "unknown key", "allowed keys:", "data"]),
        ({"data": {"source": "youtube"}}, ["data.source", "allowed values: synthetic, surgvu, folder"]),
        ({"data": {"source": "surgvu", "root": "/no/such/surgvu"}}, ["data.root", "/no/such/surgvu", "does not exist"]),
        ({"decode": {"workers": 0}}, ["decode.workers", "greater than or equal to 1"]),
    ],
)
def test_invalid_params_name_the_key(raw, expected):
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    for text in expected:
        assert text in str(err.value)


def test_overrides_are_validated_like_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"fps": 2}}))
    assert load_params(path, {"data.size": 32}).data.size == 32
    with pytest.raises(ParamsError, match="data.size"):
        load_params(path, {"data.size": -5})


def test_stage_entry_fails_before_any_work(tmp_path):
    """The CLI validator exits 2 with the message and no traceback."""
    bad = tmp_path / "params.yaml"
    bad.write_text("data:\n  fps: -3\n")
    out = subprocess.run([sys.executable, "-m", "surgwm.params", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "data.fps" in out.stderr and "Traceback" not in out.stderr
