"""The `train` stage: methods table, schedule, case split, the objective, the three methods end to end, bad input."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_data import CONTEXT, make_weights, tiny_params, tiny_raw, train_inputs, write_params

import surgwm.training.step as step
import surgwm.training.loop as stage
import tasks.train as train_stage
from surgwm.data.split import split_by_case
from surgwm.training import ddp
from surgwm.training.runs import load_run
from surgwm.training.trainset import NonFiniteLoss, OutOfMemory, TrainError
from surgwm.data.clips import Clip
from surgwm.training.methods import METHODS, ConfigError, build, resolve
from surgwm.params import METHOD_NAMES, ParamsError, parse_params
from surgwm.training.schedule import WarmupCosine, ema_momentum, warmup_cosine
from surgwm.training.weights import WeightsError



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    return train_inputs(root)


def run(name: str, data: dict, out: Path, params=None, **train) -> dict:
    params = params or tiny_params(**train)
    return stage.train(name, params, out_dir=out / "train" / name, metrics_dir=out / "metrics",
                       features_dir=out / "features", progress=False, **data)


# ------------------------------------------------------------------------------------------ config

def test_method_table_matches_params_and_defaults():
    assert tuple(METHODS) == METHOD_NAMES
    p = parse_params({"train": {"methods": {"scratch": {}, "frozen": {}, "finetune": {},
                                            "ft_slow": {"method": "finetune", "lr": 3e-5, "epochs": 2}}}})
    assert resolve(p, "frozen").train.lr == 2e-4 and resolve(p, "frozen").ema is None
    ft = resolve(p, "finetune")
    assert ft.train.lr == 1e-4 and ft.ema == (0.999, 0.99925)
    slow = resolve(p, "ft_slow")
    assert slow.method.name == "finetune" and slow.train.lr == 3e-5 and slow.train.epochs == 2
    assert resolve(p, "scratch").ema is not None
    with pytest.raises(ConfigError, match="no run 'nope'"):
        resolve(p, "nope")


@pytest.mark.parametrize(("methods", "text"), [
    ({"foo": {}}, "unknown method 'foo'"),
    ({"frozen": {"lrr": 1}}, "unknown key(s) lrr"),
    ({"frozen": {"lr": -1}}, "train.methods.frozen: lr"),
    ({"bad/name": {"method": "frozen"}}, "names a dir"),
])
def test_bad_method_overrides_are_refused(methods, text):
    with pytest.raises(ParamsError) as err:
        parse_params({"train": {"methods": methods}})
    assert text in str(err.value)


@pytest.mark.parametrize(("data", "text"), [
    ({"clip_frames": 7}, "tubelet size 2"),
    ({"size": 40}, "multiple of the 16-pixel patch"),
])
def test_clip_geometry_is_validated(data, text):
    with pytest.raises(ParamsError, match=text):
        parse_params({"data": data})


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, 0.01) == pytest.approx(0.01)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosine(opt, total_steps=20, warmup_steps=4, final_fraction=0.0)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] < 0.01
    assert ema_momentum(0, 11, 0.99, 0.999) == 0.99 and ema_momentum(10, 11, 0.99, 0.999) == pytest.approx(0.999)


def test_split_is_by_case_and_deterministic():
    clips = [Clip(f"v{c}", f"case{c}", s, -1, -1, 0) for c in range(10) for s in range(5)]
    a = split_by_case(clips, 0.2, seed=0)
    assert len(a.val_cases) == 2 and not set(a.val_cases) & set(a.train_cases)
    assert {clips[i].case for i in a.val} == set(a.val_cases)
    assert a == split_by_case(clips, 0.2, seed=0)
    assert split_by_case(clips, 0.0, seed=0).val == []


def test_case_fraction_trains_on_fewer_cases_with_the_same_validation():
    from surgwm.data.split import subsample_cases

    clips = [Clip(f"v{c}", f"case{c}", s, -1, -1, 0) for c in range(10) for s in range(5)]
    full = split_by_case(clips, 0.2, seed=0)
    quarter = subsample_cases(full, clips, 0.25, seed=0)
    assert len(quarter.train_cases) == 2 and set(quarter.train_cases) < set(full.train_cases)
    assert quarter.val == full.val and quarter.val_cases == full.val_cases
    assert {clips[i].case for i in quarter.train} == set(quarter.train_cases)
    assert quarter == subsample_cases(full, clips, 0.25, seed=0)
    assert subsample_cases(full, clips, 0.01, seed=0).train_cases  # never zero cases
    assert subsample_cases(full, clips, 1.0, seed=0) == full
    cfg = resolve(parse_params(tiny_raw(methods={"scratch_25": {"method": "scratch", "case_fraction": 0.25}})),
                  "scratch_25")
    assert cfg.train.case_fraction == 0.25 and cfg.method.name == "scratch"


# ------------------------------------------------------------------------------------------ objective

def test_context_never_sees_the_future(data, tmp_path):
    """The student's prediction depends only on the context frames; the targets do depend on the future."""
    cfg = resolve(tiny_params(), "scratch")
    models = build(cfg, data["weights_dir"], torch.device("cpu"))
    run_ = step.make_run(cfg, ddp.Dist(), torch.device("cpu"), models, list(range(8)))
    pixels = torch.randn(2, 4, 3, 32, 32)
    changed = pixels.clone()
    changed[:, CONTEXT:] = torch.randn(2, 4 - CONTEXT, 3, 32, 32)
    models.student.eval()
    with torch.no_grad():
        p1 = models.student(pixels[:, :CONTEXT], run_.grid, run_.context_t)
        p2 = models.student(changed[:, :CONTEXT], run_.grid, run_.context_t)
        t1, t2 = models.target(pixels)[:, 4:], models.target(changed)[:, 4:]
    assert torch.equal(p1, p2) and not torch.allclose(t1, t2)


# ------------------------------------------------------------------------------------------ end to end

def test_all_three_methods_train_and_write_outputs(data, tmp_path):
    for name in METHOD_NAMES:
        metrics = run(name, data, tmp_path)
        out = tmp_path / "train" / name
        assert metrics["steps"] == 8 and metrics["epochs"] == 2
        for key in ("train_temporal", "train_contrastive", "train_loss", "val_temporal", "val_contrastive",
                    "val_loss", "val_acc", "train_time_s"):
            assert math.isfinite(metrics[key]), key
        assert json.loads((tmp_path / "metrics" / f"train_{name}.json").read_text()) == metrics
        history = json.loads((tmp_path / "metrics" / f"train_{name}_history.json").read_text())
        assert [h["epoch"] for h in history] == [1, 2]
        assert {"train_acc", "val_acc", "lr", "epoch_time_s"} <= set(history[0])
        steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps] == list(range(1, 9))
        assert {"temporal", "contrastive", "loss", "acc", "lr"} <= set(steps[0])
        config = json.loads((out / "config.json").read_text())
        assert config["method"] == name and config["arch"]["encoder_dim"] == 32
        trained = load_run(out)
        enc, pred = trained.encoder, trained.predictor
        assert enc.dim == 32 and pred.dim == 24 and trained.config["method"] == name
        with torch.no_grad():  # the pair works as a world model: context frames in, future tokens out
            future = pred(enc(torch.randn(2, CONTEXT, 3, 32, 32)), enc.grid(4, 32, 32), CONTEXT // 2)
        assert future.shape == (2, 4, 32)
    frozen_enc = load_file(tmp_path / "train" / "frozen" / "encoder" / "model.safetensors")
    pretrained = load_file(data["weights_dir"] / "model.safetensors")
    assert all(torch.equal(frozen_enc[k], pretrained[k]) for k in pretrained)  # frozen stayed frozen
    tuned = load_file(tmp_path / "train" / "finetune" / "encoder" / "model.safetensors")
    assert not all(torch.equal(tuned[k], pretrained[k]) for k in pretrained)  # the EMA target moved


def test_frozen_feature_cache_equals_recomputing(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cached = run("frozen", data, tmp_path / "a", feature_dtype="float32")   # exact; float16 (the default) rounds
    assert "built" in caplog.text
    recomputed = run("frozen", data, tmp_path / "b", feature_cache=False, augment=False)
    for k in ("train_loss", "val_loss", "val_acc"):
        assert cached[k] == pytest.approx(recomputed[k], rel=1e-4, abs=1e-6), k
    caplog.clear()
    stage.train("frozen", tiny_params(epochs=1, feature_dtype="float32"), out_dir=tmp_path / "c",
                metrics_dir=tmp_path / "c",
                features_dir=tmp_path / "a" / "features", progress=False, **data)
    assert "reused" in caplog.text  # same weights, clips and geometry: same key
    key_dirs = list((tmp_path / "a" / "features").iterdir())
    assert len(key_dirs) == 1 and (key_dirs[0] / "target.npy").is_file()


# ------------------------------------------------------------------------------------------ bad input

def test_too_few_clips_for_a_batch(data, tmp_path):
    with pytest.raises(TrainError) as err:
        run("scratch", data, tmp_path, batch_size=64)
    msg = str(err.value)
    assert "too few clips for one batch: 36 training clips" in msg and "train.batch_size 64" in msg


def test_weights_of_the_wrong_architecture(data, tmp_path):
    bad = make_weights(tmp_path, dim=48, heads=2)
    cfg_text = json.loads((bad / "config.json").read_text())
    cfg_text["hidden_size"] = 64  # config says 64, tensors are 48 wide
    (bad / "config.json").write_text(json.dumps(cfg_text))
    with pytest.raises(WeightsError, match="does not hold a V-JEPA 2 encoder"):
        run("frozen", {**data, "weights_dir": bad}, tmp_path)
    (bad / "weights.json").unlink()
    with pytest.raises(WeightsError, match="weights.json not found"):
        run("finetune", {**data, "weights_dir": bad}, tmp_path)


def test_nan_loss_stops_with_step_and_checkpoint(data, tmp_path, monkeypatch):
    real = step.objective
    calls = {"n": 0}

    def poisoned(run_, pred, target, gather):
        loss, parts = real(run_, pred, target, gather)
        calls["n"] += run_.models.student.training
        if run_.models.student.training and calls["n"] == 5:
            loss = loss * float("nan")
            parts = {**parts, "loss": loss}
        return loss, parts

    monkeypatch.setattr(step, "objective", poisoned)  # train_step looks it up in surgwm.training.step
    with pytest.raises(NonFiniteLoss) as err:
        run("scratch", data, tmp_path)
    msg = str(err.value)
    assert "non-finite loss at step 5" in msg and "last good checkpoint" in msg and "(step 4)" in msg


def test_cuda_oom_names_the_knobs(data, tmp_path, monkeypatch):
    def oom(*_a, **_k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(stage, "train_step", oom)
    with pytest.raises(OutOfMemory) as err:
        run("scratch", data, tmp_path)
    msg = str(err.value)
    for knob in ("train.batch_size (now 8)", "data.size (now 32)", "data.clip_frames (now 4)", "model.encoder_dim",
                 "Tried to allocate"):
        assert knob in msg
    assert isinstance(err.value.__cause__, torch.cuda.OutOfMemoryError)


def test_cli_reports_errors_without_traceback(data, tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml")
    common = ["--params", str(params), "--cache", str(data["cache_dir"]), "--manifest", str(data["manifest_path"]),
              "--weights", str(data["weights_dir"]), "--out", str(tmp_path / "o"), "--metrics", str(tmp_path / "m"),
              "--no-progress"]
    assert train_stage.main(["nope", *common]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert train_stage.main(["scratch", *common, "--set", "train.batch_size=100"]) == 1
    assert "too few clips" in capsys.readouterr().err
    assert train_stage.main(["scratch", *common, "--set", "data.clip_frames=5"]) == 2
    assert "tubelet" in capsys.readouterr().err


def test_demo_defaults_are_consistent():
    """The shipped params resolve for every run and fit the demo data (~12 cases x 60 s at 4 fps)."""
    from surgwm.params import DEFAULT_PARAMS, load_params

    p = load_params(DEFAULT_PARAMS)
    assert set(p.train.methods) >= set(METHOD_NAMES)
    clips_per_case = (60 * p.data.fps - p.data.clip_frames) // p.data.clip_stride + 1
    train_cases = 12 - max(1, round(p.train.val_fraction * 12))
    for name in p.train.methods:
        cfg = resolve(p, name)
        assert clips_per_case * train_cases >= cfg.train.batch_size
    assert tiny_raw()["model"]["context_frames"] == CONTEXT


def test_decode_settings_are_part_of_the_data_signature():
    """A changed border, store or crf changes the cached pixels: the run's checkpoint and the frozen feature cache,
    both keyed on this signature, must not be reused."""
    from surgwm.data.manifest import Manifest, VideoEntry
    from surgwm.training.features import clips_signature

    video = VideoEntry(video_id="v", case="c", path="/v.mp4", sha256="ab", frames=12)
    clips = [Clip("v", "c", 0, -1, -1, 0), Clip("v", "c", 4, -1, -1, 0)]
    before = Manifest(source="folder", root="/", videos=[video], decode_key="k-border-0")
    after = before.model_copy(update={"decode_key": "k-border-0.08"})
    assert clips_signature(before, clips) != clips_signature(after, clips)
    assert clips_signature(before, clips) == clips_signature(before.model_copy(), clips)
