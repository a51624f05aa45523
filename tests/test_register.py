"""The `register` stage against a real MLflow SQLite store in a temp dir: runs, versions, the champion gate in both
directions, no duplicate versions, loading the champion back, an unreachable server, failed runs."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_data import CLIP, SIZE, eval_raw, fake_run

from surgwm.training.runs import load_run, weights_sha256, world_model
from surgwm.params import parse_params
from surgwm.tracking.registry import CHALLENGER, CHAMPION, RegisterError, register
from surgwm.tracking.client import TrackingUnavailable

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one costs seconds); each test uses its own model name."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root}/mlflow.db"


def params_for(methods, model):
    raw = eval_raw()
    raw["train"]["methods"] = {m: {"method": "scratch"} for m in methods}
    raw["evaluate"]["baselines"] = ["raw_pixels"]
    raw["register"] = {"model_name": model, "experiment": model}
    return parse_params(raw)


def evaluated(root: Path, name: str, score: float | None, seed: int = 0, key: str = "k1", kind: str = "method"):
    """metrics/evaluate_<name>.json as the evaluate stage writes it (only the keys register reads)."""
    metrics = root / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    rec = {"name": name, "kind": kind, "status": "ok", "eval_key": key,
           "step": {"f1_video": score, "acc": 0.5}, "motion": {"acc": 0.3}, "event": {"unavailable": "none here"},
           "efficiency": {"100pct": {"step_f1_video": score}}}
    if kind == "method":
        run = root / "train" / name
        if not run.is_dir():
            fake_run(root / "train", metrics, name, seed=seed)
        rec |= {"weights_sha256": weights_sha256(run), "convergence": {"epoch": 2}, "cost": {"train_time_s": 12.5}}
    (metrics / f"evaluate_{name}.json").write_text(json.dumps(rec))


def do_register(root: Path, params, uri: str, **kw):
    return register(params, metrics_dir=root / "metrics", train_root=root / "train", evaluate_root=root / "evaluate",
                    cache_dir=root / "cache", manifest_path=root / "none.json",
                    tracking_uri=uri, lock=root / "dvc.lock", record_path=root / "reports" / "register.json", **kw)


def clip(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (1, CLIP, SIZE, SIZE, 3), dtype=np.uint8))


def test_first_registration_is_champion_and_loads_back(store, tmp_path):
    import mlflow
    import mlflow.pytorch

    params = params_for(["a"], "wm-first")
    evaluated(tmp_path, "a", 0.6)
    evaluated(tmp_path, "raw_pixels", 0.9, kind="baseline")   # baselines are logged but never registered
    rec = do_register(tmp_path, params, store)
    assert rec["best"] == "a" and rec["version"] == "1"
    assert rec["aliases"] == {CHALLENGER: "1", CHAMPION: "1"} and rec["decision"]["reason"] == "no champion yet"
    assert set(rec["runs"]) == {"a", "raw_pixels"}
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    model = mlflow.pytorch.load_model("models:/wm-first@champion")
    x = clip()
    with torch.no_grad():
        embeddings, future = model.split(model(x))
        want = world_model(load_run(tmp_path / "train" / "a"), CLIP, SIZE)
        want_emb, want_fut = want.embed(x), want.predict_future(x)
    tokens, n_future = (CLIP // 2) * (SIZE // 16) ** 2, (CLIP // 4) * (SIZE // 16) ** 2
    assert embeddings.shape == (1, tokens, 32) and future.shape == (1, n_future, 32)
    assert torch.isfinite(embeddings).all() and torch.isfinite(future).all()
    assert torch.allclose(future, want_fut, atol=1e-5) and torch.allclose(embeddings, want_emb, atol=1e-5)
    served = mlflow.pyfunc.load_model("models:/wm-first@champion").predict(x.numpy())   # pyfunc flavour too
    assert served.shape == (1, tokens + n_future, 32)
    client = mlflow.MlflowClient(store)
    v = client.get_model_version("wm-first", "1")
    assert v.tags["weights_sha256"] == weights_sha256(tmp_path / "train" / "a") and v.tags["eval.k1.step.f1_video"]
    info = mlflow.models.get_model_info("models:/wm-first/1")
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
    run = client.get_run(rec["runs"]["a"]["run_id"])
    assert run.data.metrics["step.f1_video"] == 0.6 and run.data.tags["surgwm.kind"] == "method"
    assert "device" in run.data.tags and run.data.params["run.method"] == "scratch"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2, 3]
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "register")}
    assert any(p.startswith("register/decision_") for p in arts)


def test_same_weights_twice_make_no_duplicate_version(store, tmp_path):
    import mlflow

    params = params_for(["a"], "wm-dup")
    evaluated(tmp_path, "a", 0.6)
    first = do_register(tmp_path, params, store)
    second = do_register(tmp_path, params, store)
    assert first["version"] == second["version"] == "1"
    assert not second["runs"]["a"]["logged_now"]            # nothing new: the run is reused
    assert second["decision"]["moved"] is False
    evaluated(tmp_path, "a", 0.65)                          # same weights, new numbers: a new run, same version
    third = do_register(tmp_path, params, store)
    assert third["runs"]["a"]["logged_now"] and third["version"] == "1"
    client = mlflow.MlflowClient(store)
    assert len(client.search_model_versions("name = 'wm-dup'")) == 1


def test_champion_gate_both_directions(store, tmp_path):
    params_a, params_b = params_for(["a"], "wm-gate"), params_for(["b"], "wm-gate")
    evaluated(tmp_path, "a", 0.6, seed=0)
    assert do_register(tmp_path, params_a, store)["aliases"] == {CHALLENGER: "1", CHAMPION: "1"}
    evaluated(tmp_path, "b", 0.5, seed=1)                   # worse on the same evaluation data: stays challenger
    worse = do_register(tmp_path, params_b, store)
    assert worse["version"] == "2" and worse["aliases"] == {CHALLENGER: "2", CHAMPION: "1"}
    d = worse["decision"]
    assert not d["moved"] and d["champion_before"]["score"] == 0.6 and d["challenger"]["score"] == 0.5
    assert "does not beat" in d["reason"]
    evaluated(tmp_path, "b", 0.7, seed=1)                   # better: becomes champion (same weights: version 2)
    better = do_register(tmp_path, params_b, store)
    assert better["version"] == "2" and better["aliases"] == {CHALLENGER: "2", CHAMPION: "2"}
    assert better["decision"]["moved"] and "beats champion 0.6000" in better["decision"]["reason"]
    import mlflow

    v2 = mlflow.MlflowClient(store).get_model_version("wm-gate", "2")
    assert v2.tags["replaced_champion_version"] == "1" and "champion_since" in v2.tags


def test_lower_is_better_metric_and_other_eval_data_reevaluates_champion(store, tmp_path):
    params_a = params_for(["a"], "wm-lower")
    raw = params_a.model_dump(mode="json")
    raw["register"] |= {"metric": "step.f1_video", "greater_is_better": False}
    from surgwm.params import parse_params as pp

    lower = pp(raw)
    evaluated(tmp_path, "a", 0.6, seed=0, key="old")
    do_register(tmp_path, lower, store)
    evaluated(tmp_path, "a", 0.4, seed=2, key="new")   # other weights, other evaluation data
    import shutil

    shutil.rmtree(tmp_path / "train" / "a")
    evaluated(tmp_path, "a", 0.4, seed=2, key="new")
    calls = []

    def reevaluate(version):
        calls.append(str(version.version))
        return 0.45

    rec = do_register(tmp_path, lower, store, reevaluate=reevaluate)
    assert calls == ["1"] and rec["decision"]["moved"] and rec["aliases"][CHAMPION] == "2"
    assert rec["decision"]["champion_before"]["score_from"] == "re-evaluated now on the same evaluation data"


def test_champion_that_cannot_be_compared_is_kept(store, tmp_path):
    params = params_for(["a"], "wm-keep")
    evaluated(tmp_path, "a", 0.6, seed=0, key="old")
    do_register(tmp_path, params, store)
    import shutil

    shutil.rmtree(tmp_path / "train" / "a")
    evaluated(tmp_path, "a", 0.9, seed=3, key="new")

    def broken(version):
        raise RuntimeError("clips of another size")

    rec = do_register(tmp_path, params, store, reevaluate=broken)
    assert rec["aliases"] == {CHALLENGER: "2", CHAMPION: "1"}
    assert "could not be re-evaluated" in rec["decision"]["reason"]
    forced = do_register(tmp_path, params, store, reevaluate=broken, force_champion=True)
    assert forced["aliases"][CHAMPION] == "2" and "--force-champion" in forced["decision"]["reason"]


def test_failed_method_is_logged_as_failed_and_not_registered(store, tmp_path):
    import mlflow

    params = params_for(["a", "b", "c"], "wm-failed")
    evaluated(tmp_path, "a", 0.6)
    (tmp_path / "metrics" / "failures").mkdir(parents=True)
    (tmp_path / "metrics" / "failures" / "train@b.json").write_text(
        json.dumps({"stage": "train", "error": "non-finite loss at step 3"}))
    rec = do_register(tmp_path, params, store)                 # c: no metrics at all
    assert rec["best"] == "a" and rec["runs"]["b"]["status"] == "failed" and rec["runs"]["c"]["status"] == "missing"
    run = mlflow.MlflowClient(store).get_run(rec["runs"]["b"]["run_id"])
    assert run.info.status == "FAILED" and "non-finite loss" in run.data.tags["surgwm.error"]


def test_no_method_with_the_metric_fails_clearly(store, tmp_path):
    params = params_for(["a"], "wm-nometric")
    evaluated(tmp_path, "a", None)
    with pytest.raises(RegisterError, match="register.metric 'step.f1_video'.*step.acc"):
        do_register(tmp_path, params, store)


def test_unreachable_server_fails_fast_and_a_rerun_logs_everything(store, tmp_path):
    params = params_for(["a"], "wm-outage")
    evaluated(tmp_path, "a", 0.6)
    before = sorted((p.name, p.read_bytes()) for p in (tmp_path / "metrics").iterdir())
    with socket.socket() as s:             # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(TrackingUnavailable, match="unreachable.*metrics/\\*.json.*re-run"):
        do_register(tmp_path, params, f"http://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 15
    assert sorted((p.name, p.read_bytes()) for p in (tmp_path / "metrics").iterdir()) == before
    rec = do_register(tmp_path, params, store)
    assert rec["runs"]["a"]["logged_now"] and rec["aliases"][CHAMPION] == "1"


@pytest.mark.slow
def test_champion_from_other_eval_data_is_reevaluated_from_the_registry(store, tmp_path):
    """The real path: the champion is loaded from the registry and scored by the evaluate stage's protocol."""
    import mlflow

    from eval_data import synthetic_cache

    raw = eval_raw(probe_epochs=2, fractions=[1.0])
    raw["train"]["methods"] = {"a": {"method": "scratch"}}
    raw["evaluate"]["baselines"] = []
    raw["register"] = {"model_name": "wm-real", "experiment": "wm-real"}
    params = parse_params(raw)
    cache, manifest = synthetic_cache(tmp_path, seed=5, cases=4, seconds=20.0)
    evaluated(tmp_path, "a", 0.6, seed=0, key="old")
    kw = dict(metrics_dir=tmp_path / "metrics", train_root=tmp_path / "train", evaluate_root=tmp_path / "evaluate",
              cache_dir=cache, manifest_path=manifest, tracking_uri=store,
              lock=tmp_path / "dvc.lock", record_path=tmp_path / "register.json")
    register(params, **kw)
    import shutil

    shutil.rmtree(tmp_path / "train" / "a")
    evaluated(tmp_path, "a", 2.0, seed=4, key="new")          # an impossible F1: the challenger must win
    rec = register(params, **kw)
    before = rec["decision"]["champion_before"]
    assert before["score_from"] == "re-evaluated now on the same evaluation data", before
    assert 0 <= before["score"] <= 1 and rec["decision"]["moved"] and rec["aliases"][CHAMPION] == "2"
    v1 = mlflow.MlflowClient(store).get_model_version("wm-real", "1")
    assert float(v1.tags["eval.new.step.f1_video"]) == before["score"]
