"""UI parameters become params.yaml overrides: validated first (bad key named, file untouched), then written so DVC
sees them, with comments kept and the change recorded."""

from __future__ import annotations

import shutil

import pytest
import yaml
from workspace_data import TINY_SYNTHETIC, make_workspace

from flows.overrides import apply_overrides, ui_overrides
from surgwm.params import REPO_ROOT, ParamsError, load_params


def test_override_keeps_comments_and_records_change(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", params)
    before = params.read_text()
    epochs_before = load_params(params).train.epochs
    change = apply_overrides(params, ui_overrides(epochs=3, methods=["frozen", "finetune"],
                                                   current=load_params(params)), run="ui-run")
    after = params.read_text()
    assert change.params.train.epochs == 3 and list(change.params.train.methods) == ["frozen", "finetune"]
    assert ("train.epochs", epochs_before, 3) in change.changed and ("train.methods.scratch", {}, None) in change.changed
    assert change.params.train.methods["frozen"] == {"lr": 2.0e-4}          # a kept run keeps its settings
    assert "# The single source of truth" in after and "# frames per second kept in the decode cache" in after
    assert after.count("\n") < before.count("\n")                          # only the dropped run's line went
    assert change.backup.read_text() == before and "ui-run" in change.backup.name
    assert "`train.epochs`" in change.markdown()


@pytest.mark.parametrize(("fields", "key"), [
    ({"epochs": 0}, "train.epochs"),
    ({"overrides": {"data.fps": -1}}, "data.fps"),
    ({"overrides": {"train.nope": 1}}, "train.nope"),
    ({"methods": ["scratch", "sgd"]}, "train.methods.sgd"),
    ({"data_source": "folder", "data_root": "/no/such/dir"}, "data.root"),
])
def test_invalid_override_names_key_and_leaves_file(tmp_path, fields, key):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", params)
    before = params.read_text()
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        apply_overrides(params, ui_overrides(**fields, current=load_params(params)))
    assert params.read_text() == before and not (tmp_path / ".pipeline").exists()


def test_run_pipeline_applies_overrides_that_dvc_sees(tmp_path, prefect_harness):
    from flows.run import run_pipeline

    ws = make_workspace(tmp_path / "ws", {"data": {"synthetic": TINY_SYNTHETIC}})
    rows = run_pipeline(stages=["synthesize"], overrides={"data.synthetic.seed": 11}, workdir=str(ws))
    assert rows[0]["stage"] == "synthesize" and rows[0]["ran"]
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert lock["stages"]["synthesize"]["params"]["params.yaml"]["data.synthetic.seed"] == 11
    assert list((ws / ".pipeline" / "params-history").iterdir())

    before = (ws / "params.yaml").read_text()
    with pytest.raises(ParamsError, match=r"train\.epochs"):
        run_pipeline(stages=["synthesize"], epochs=0, workdir=str(ws))
    assert (ws / "params.yaml").read_text() == before


def test_second_run_in_a_busy_workspace_fails_naming_it(tmp_path, prefect_harness):
    from concurrent.futures import ThreadPoolExecutor

    from flows.run import run_pipeline
    from flows.workspace_lock import WorkspaceBusy, workspace_lock

    ws = make_workspace(tmp_path / "ws", {"data": {"synthetic": TINY_SYNTHETIC}})
    before = (ws / "params.yaml").read_text()
    with workspace_lock(ws, timeout_s=0, run="first-run"), ThreadPoolExecutor(1) as pool:
        second = pool.submit(run_pipeline, stages=["synthesize"], epochs=2, workdir=str(ws), lock_timeout_s=0)
        with pytest.raises(WorkspaceBusy, match=f"workspace {ws.resolve()} is busy.*run first-run"):
            second.result()
    assert (ws / "params.yaml").read_text() == before and not (ws / "dvc.lock").exists()
