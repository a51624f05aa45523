"""The `register` stage against a real MLflow SQLite store in a temp dir: runs with dataset inputs, versions with a
model card, selection and the champion gate on VALIDATION only (beyond the validation noise), no duplicate
versions, loading the champion back, an unreachable server, failed runs. Evaluation outputs are written in the
evaluation's contract format by tests/eval_outputs.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_data import CLIP, SIZE, eval_raw, fake_run
from eval_outputs import make_world, outputs_for, read_npz, write_name, write_outputs

from surgwm.params import parse_params
from surgwm.tracking.client import TrackingUnavailable
from surgwm.tracking.registry import CHALLENGER, CHAMPION, RegisterError, register
from surgwm.training.runs import load_run, weights_sha256, world_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")
WORLD = make_world(0)
LOCK = """schema: '2.0'
stages:
  synthesize:
    outs:
    - path: data/synthetic
      md5: 5f62d544a50dd566cb62da49d5ef989d.dir
  ingest:
    outs:
    - path: data/ingest/manifest.json
      md5: 43ae0a36a2efdcade5636d2339c904ae
  decode:
    outs:
    - path: data/cache
      md5: 0123456789abcdef0123456789abcdef.dir
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one costs seconds); each test uses its own model name."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root}/mlflow.db"


def params_for(methods, model, **register):
    raw = eval_raw(bootstrap_resamples=400)
    raw["train"]["methods"] = {m: {"method": "scratch"} for m in methods}
    raw["evaluate"]["baselines"] = ["raw_pixels"]
    raw["register"] = {"model_name": model, "experiment": model, "data_license": "CC-BY-test", **register}
    return parse_params(raw)


def evaluated(root: Path, name: str, quality: float, seed: int = 0, key: str = "k1", kind: str = "method",
              variant: int = 0, z: dict | None = None) -> dict:
    """metrics/evaluate_<name>.json + data/evaluate/<name>/outputs.npz as the evaluation writes them, and (for a
    method) a tiny trained run with weights from `seed`."""
    if kind == "method" and not (root / "train" / name).is_dir():
        fake_run(root / "train", root / "metrics", name, seed=seed)
    if z is not None:
        return write_outputs(root, WORLD, name, z, kind, key)
    return write_name(root, WORLD, name, quality, kind, eval_key=key, variant=variant)


def do_register(root: Path, params, uri: str, **kw):
    (root / "dvc.lock").write_text(LOCK)
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
    assert rec["best"] == "a" and rec["version"] == "1" and rec["selected_on"] == "validation"
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
    assert torch.allclose(future, want_fut, atol=1e-5) and torch.allclose(embeddings, want_emb, atol=1e-5)
    served = mlflow.pyfunc.load_model("models:/wm-first@champion").predict(x.numpy())   # pyfunc flavour too
    assert served.shape == (1, tokens + n_future, 32)
    client = mlflow.MlflowClient(store)
    v = client.get_model_version("wm-first", "1")
    assert v.tags["weights_sha256"] == weights_sha256(tmp_path / "train" / "a")
    assert float(v.tags["val.k1.step.f1_video"]) == rec["score"]
    info = mlflow.models.get_model_info("models:/wm-first/1")
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
    run = client.get_run(rec["runs"]["a"]["run_id"])
    assert run.data.tags["surgwm.kind"] == "method" and run.data.params["run.method"] == "scratch"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3]
    assert any(a.path.startswith("register/decision_") for a in client.list_artifacts(run.info.run_id, "register"))


def test_version_carries_a_model_card(store, tmp_path):
    import mlflow

    params = params_for(["a"], "wm-card")
    evaluated(tmp_path, "a", 0.6)
    rec = do_register(tmp_path, params, store)
    v = mlflow.MlflowClient(store).get_model_version("wm-card", rec["version"])
    t = v.tags
    assert t["card.data.license"] == "CC-BY-test" and t["card.data.source"].startswith("synthetic")
    assert t["card.data.dvc.cache"] == "0123456789abcdef0123456789abcdef.dir"
    assert t["card.data.dvc.source"] == "5f62d544a50dd566cb62da49d5ef989d.dir"
    assert "probes: 15 training / 4 validation / 5 test cases" in t["card.data.cases"]
    assert json.loads(t["card.recipe"])["method"] == "scratch"
    f1 = t["card.eval.step.f1_video"]                       # "0.561 [0.50, 0.62] (covers test cases (5), ...)"
    lo, hi = (float(x) for x in f1.split("[")[1].split("]")[0].split(","))
    assert lo <= float(f1.split()[0]) <= hi and "test cases (5)" in f1 and "best rule" in f1
    assert "SYNTHETIC" in t["card.limits"] and t["card.selection"].startswith("step.f1_video on validation")
    for part in ("**Data**", "CC-BY-test", "**Recipe**", "**Evaluation**", "**Known limits**", "not used"):
        assert part in v.description


def test_runs_log_their_data_as_dataset_inputs_and_the_experiment_is_model_training(store, tmp_path):
    import mlflow

    params = params_for(["a"], "wm-data")
    evaluated(tmp_path, "a", 0.6)
    evaluated(tmp_path, "raw_pixels", 0.4, kind="baseline")
    rec = do_register(tmp_path, params, store)
    client = mlflow.MlflowClient(store)
    inputs = client.get_run(rec["runs"]["a"]["run_id"]).inputs.dataset_inputs
    by_context = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in inputs}
    assert set(by_context) == {"training", "probe-training", "validation", "test"}
    test = by_context["test"]
    assert test.dataset.digest == "0123456789abcdef0123456789abcdef.dir" and "(5)" in test.dataset.name
    assert {t.key: t.value for t in test.tags}["cases"] == ", ".join(WORLD.split["test"])
    base = client.get_run(rec["runs"]["raw_pixels"]["run_id"]).inputs.dataset_inputs
    assert "training" not in {t.value for i in base for t in i.tags}   # a baseline trains no world model
    assert client.get_experiment(rec["experiment_id"]).tags["mlflow.experimentKind"] == "custom_model_development"


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
    assert len(mlflow.MlflowClient(store).search_model_versions("name = 'wm-dup'")) == 1


def test_selection_ranks_on_validation_not_test(store, tmp_path):
    params = params_for(["a", "b"], "wm-select")
    evaluated(tmp_path, "a", 0.7, seed=0)
    z = outputs_for(WORLD, "b", 0.3)                        # b: worse on validation ...
    good = outputs_for(WORLD, "b", 0.95)
    z |= {k: v for k, v in good.items() if "/test/" in k}   # ... but far better on test
    evaluated(tmp_path, "b", 0.0, seed=1, z=z)
    rec = do_register(tmp_path, params, store)
    ev_b = json.loads((tmp_path / "metrics" / "evaluate_b.json").read_text())
    ev_a = json.loads((tmp_path / "metrics" / "evaluate_a.json").read_text())
    assert ev_b["step"]["f1_video"] > ev_a["step"]["f1_video"]            # b wins on test ...
    assert rec["best"] == "a" and rec["score"] == ev_a["validation"]["step"]["f1_video"]   # ... a on validation


def _corrupt_test_numbers(root: Path) -> None:
    """Every test number in metrics JSON and outputs.npz replaced by noise; validation left alone."""
    rng = np.random.default_rng(99)
    keep = {"validation", "sizes", "split", "status", "kind", "name", "eval_key", "eval_device", "cost",
            "convergence", "weights_sha256"}

    def scramble(d):
        if isinstance(d, dict):
            return {k: scramble(v) for k, v in d.items()}
        return float(rng.random() * 3) if isinstance(d, (int, float)) and not isinstance(d, bool) else d

    for f in (root / "metrics").glob("evaluate_*.json"):
        ev = json.loads(f.read_text())
        f.write_text(json.dumps({k: (v if k in keep else scramble(v)) for k, v in ev.items()}))
    for f in (root / "evaluate").glob("*/outputs.npz"):
        z = read_npz(f)
        for k, v in z.items():
            if "/test/" in k and k.rsplit("/", 1)[1] in ("score", "pred"):
                z[k] = rng.random(v.shape).astype(v.dtype) if v.dtype.kind == "f" else rng.integers(0, 8, v.shape)
        np.savez_compressed(f, **z)


def _select_and_gate(root: Path, store: str, model: str, corrupt: bool) -> list[dict]:
    """a is registered first (champion); then a and b compete and b, clearly better on validation, is gated."""
    out = []
    evaluated(root, "a", 0.45, seed=0)
    if corrupt:
        _corrupt_test_numbers(root)
    out.append(do_register(root, params_for(["a"], model), store))
    evaluated(root, "b", 0.8, seed=1)
    if corrupt:
        _corrupt_test_numbers(root)
    out.append(do_register(root, params_for(["a", "b"], model), store))
    return out


def test_register_never_reads_test_scores(store, tmp_path):
    clean = _select_and_gate(tmp_path / "clean", store, "wm-clean", corrupt=False)
    dirty = _select_and_gate(tmp_path / "dirty", store, "wm-dirty", corrupt=True)
    ev_clean = json.loads((tmp_path / "clean" / "metrics" / "evaluate_b.json").read_text())
    ev_dirty = json.loads((tmp_path / "dirty" / "metrics" / "evaluate_b.json").read_text())
    assert ev_clean["step"] != ev_dirty["step"]                       # the test numbers did change
    for c, d in zip(clean, dirty):
        for key in ("best", "score", "version", "aliases"):
            assert c[key] == d[key], key
        for key in ("moved", "reason", "difference", "champion_before"):
            want, got = c["decision"].get(key), d["decision"].get(key)
            if isinstance(want, dict):
                want, got = ({k: v for k, v in x.items() if k != "run_id"} for x in (want, got))
            assert want == got, key
    assert clean[1]["decision"]["moved"] and "beyond the validation noise" in clean[1]["decision"]["reason"]


def test_gate_keeps_the_champion_within_the_validation_noise(store, tmp_path):
    evaluated(tmp_path, "a", 0.5, seed=0)
    first = do_register(tmp_path, params_for(["a"], "wm-noise"), store)
    assert first["aliases"][CHAMPION] == "1"
    z = read_npz(tmp_path / "evaluate" / "a" / "outputs.npz")   # b = a's scores with ONE more correct val clip
    s, y = z["step/val/score"], z["step/val/true"]
    wrong = np.flatnonzero(s[0].argmax(-1) != y)[0]
    s = s.copy()
    s[:, wrong] = np.eye(s.shape[-1])[y[wrong]]
    z["step/val/score"] = s
    evaluated(tmp_path, "b", 0.0, seed=1, z=z)
    rec = do_register(tmp_path, params_for(["b"], "wm-noise"), store)
    d = rec["decision"]
    assert rec["score"] > first["score"]                    # b is better on validation, by one clip ...
    assert not d["moved"] and rec["aliases"] == {CHALLENGER: "2", CHAMPION: "1"}   # ... which is noise
    assert d["difference"]["paired"] and d["difference"]["lo"] <= 0 < d["difference"]["point"]
    assert "within the validation noise" in d["reason"]
    evaluated(tmp_path, "b", 0.9, seed=1)                   # clearly better: the alias moves
    better = do_register(tmp_path, params_for(["b"], "wm-noise"), store)
    assert better["decision"]["moved"] and better["aliases"][CHAMPION] == "2"
    assert better["decision"]["difference"]["lo"] > 0
    import mlflow

    v2 = mlflow.MlflowClient(store).get_model_version("wm-noise", "2")
    assert v2.tags["replaced_champion_version"] == "1" and "champion_since" in v2.tags


def test_lower_is_better_metric_and_other_eval_data_reevaluates_champion(store, tmp_path):
    metric = dict(metric="anticipation.time_to_next_mae_s", greater_is_better=False)
    evaluated(tmp_path, "a", 0.5, seed=0, key="old")
    do_register(tmp_path, params_for(["a"], "wm-lower", **metric), store)
    import shutil

    shutil.rmtree(tmp_path / "train" / "a")                 # other weights, other evaluation data
    evaluated(tmp_path, "a", 0.8, seed=2, key="new")
    calls = []

    def reevaluate(version):
        calls.append(str(version.version))
        return 30.0                                         # the old champion's validation error: far worse

    rec = do_register(tmp_path, params_for(["a"], "wm-lower", **metric), store, reevaluate=reevaluate)
    assert calls == ["1"] and rec["decision"]["moved"] and rec["aliases"][CHAMPION] == "2"
    assert rec["decision"]["champion_before"]["score_from"] == "re-evaluated now on the same evaluation data"
    assert "outside the challenger's interval" in rec["decision"]["reason"]


def test_champion_that_cannot_be_compared_is_kept(store, tmp_path):
    params = params_for(["a"], "wm-keep")
    evaluated(tmp_path, "a", 0.5, seed=0, key="old")
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
    evaluated(tmp_path, "a", 0.6)
    f = tmp_path / "metrics" / "evaluate_a.json"
    ev = json.loads(f.read_text())
    del ev["validation"]["step"]["f1_video"]                   # test scores are there; validation lacks it
    f.write_text(json.dumps(ev))
    with pytest.raises(RegisterError, match="validation score for register.metric 'step.f1_video'.*step.acc"):
        do_register(tmp_path, params, store)


def test_an_error_metric_ranked_higher_is_better_is_refused_before_logging(store, tmp_path):
    params = params_for(["a"], "wm-direction", metric="anticipation.time_to_next_mae_s", greater_is_better=True)
    evaluated(tmp_path, "a", 0.6)
    with pytest.raises(RegisterError, match="lower-is-better, but register.greater_is_better is true: set it to false"):
        do_register(tmp_path, params, store)
    assert not (tmp_path / "reports" / "register.json").exists()


def test_unreachable_server_fails_fast_and_a_rerun_logs_everything(store, tmp_path):
    params = params_for(["a"], "wm-outage")
    evaluated(tmp_path, "a", 0.6)
    before = sorted((p.name, p.read_bytes()) for p in (tmp_path / "metrics").iterdir())
    with socket.socket() as s:             # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingUnavailable, match="unreachable.*metrics/\\*.json.*re-run"):
        do_register(tmp_path, params, f"http://127.0.0.1:{port}")
    assert sorted((p.name, p.read_bytes()) for p in (tmp_path / "metrics").iterdir()) == before
    rec = do_register(tmp_path, params, store)
    assert rec["runs"]["a"]["logged_now"] and rec["aliases"][CHAMPION] == "1"


@pytest.mark.slow
def test_champion_from_other_eval_data_is_reevaluated_from_the_registry(store, tmp_path):
    """The real path: the champion is loaded from the registry and scored by the evaluate stage's protocol (its
    `validation` block)."""
    import mlflow

    from eval_data import synthetic_cache

    raw = eval_raw(probe_epochs=2, fractions=[1.0], bootstrap_resamples=200)
    raw["train"]["methods"] = {"a": {"method": "scratch"}}
    raw["evaluate"]["baselines"] = []
    raw["register"] = {"model_name": "wm-real", "experiment": "wm-real"}
    params = parse_params(raw)
    cache, manifest = synthetic_cache(tmp_path, seed=5, cases=4, seconds=20.0)
    evaluated(tmp_path, "a", 0.5, seed=0, key="old")
    kw = dict(metrics_dir=tmp_path / "metrics", train_root=tmp_path / "train", evaluate_root=tmp_path / "evaluate",
              cache_dir=cache, manifest_path=manifest, tracking_uri=store,
              lock=tmp_path / "dvc.lock", record_path=tmp_path / "register.json")
    register(params, **kw)
    import shutil

    shutil.rmtree(tmp_path / "train" / "a")
    evaluated(tmp_path, "a", 1.0, seed=4, key="new")
    rec = register(params, **kw)
    before = rec["decision"]["champion_before"]
    assert before["score_from"] == "re-evaluated now on the same evaluation data", before
    assert 0 <= before["score"] <= 1
    v1 = mlflow.MlflowClient(store).get_model_version("wm-real", "1")
    assert float(v1.tags["val.new.step.f1_video"]) == before["score"]


def test_the_checkouts_store_is_recorded_relative_to_it():
    """reports/register.json is hashed by DVC: the default store must read the same in every clone."""
    from surgwm.params import REPO_ROOT
    from surgwm.tracking.client import absolute_uri, recorded_uri

    here = f"sqlite:///{REPO_ROOT / 'mlflow.db'}"
    assert recorded_uri(here) == "sqlite:///mlflow.db" and absolute_uri("sqlite:///mlflow.db") == here
    assert recorded_uri("sqlite:////elsewhere/m.db") == "sqlite:////elsewhere/m.db"
    assert recorded_uri("http://mlflow.internal:5000") == "http://mlflow.internal:5000"
