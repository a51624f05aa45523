"""The `evaluate` stage: split by case, probes above chance on synthetic data, every section for a trained run,
outputs.npz as the contract names it, selection that never reads the test labels, the clip caps, failed runs,
missing labels, convergence and cost rows, the probe modules."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from eval_data import CLIP, CONTEXT, SIZE, eval_params, eval_raw, fake_run, synthetic_cache

import surgwm.evaluation.evaluate as E
from surgwm.evaluation.derived import convergence, cost
from surgwm.evaluation.errors import EvaluateError
from surgwm.evaluation.sources import load_source, method_source, rollout
from surgwm.evaluation.split import split_cases
from surgwm.evaluation.table import clip_table
from models.encoder import preprocess
from models.probe import PixelTokens, ProbeBank
from surgwm.data.clips import Clip
from surgwm.data.manifest import Interval, read_manifest, write_manifest
from surgwm.evaluation.sampling import balance_labels, sample_test, sample_train, sample_val
from surgwm.params import parse_params


@pytest.fixture(scope="module")
def seed0(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_seed0")
    cache, manifest = synthetic_cache(root, seed=0)
    return root, cache, manifest


def run_eval(name, params, root, cache, manifest, **kw):
    return E.evaluate(name, params, cache_dir=cache, manifest_path=manifest, train_root=root / "train",
                      weights_dir=root / "weights", metrics_dir=root / "metrics", out_root=root / "evaluate",
                      progress=False, **kw)


# ------------------------------------------------------------------------------------------------- split

@pytest.mark.parametrize("test_fraction", [None, 0.3])
@pytest.mark.parametrize("seed", range(4))
def test_split_is_by_case_never_by_clip(test_fraction, seed):
    rng = random.Random(seed)
    clips = [Clip(f"case{c}_p{p}", f"case{c}", s, rng.randrange(8), -1, 0)
             for c in range(rng.randrange(3, 15)) for p in (1, 2) for s in range(0, 40, 4)]
    params = eval_params(seed=seed, test_fraction=test_fraction)
    split = split_cases(clips, params)
    sides = [set(split.train), set(split.val), set(split.test)]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert set().union(*sides) == {c.case for c in clips}
    for case in {c.case for c in clips}:      # every clip of a case lands on the side of its case
        assert sum(case in s for s in sides) == 1
    assert split == split_cases(clips, params)
    if test_fraction is None:                # the cases the train stage held out: no world model saw them
        from surgwm.training.trainset import split_by_case

        assert list(split.test) == sorted(split_by_case(clips, params.train.val_fraction, params.train.seed).val_cases)
    subsets = [split.subset(f) for f in (0.25, 0.5, 1.0)]
    assert all(set(a) <= set(b) for a, b in zip(subsets, subsets[1:])) and set(subsets[-1]) == set(split.train)


def test_split_needs_three_cases():
    clips = [Clip("v", "case0", 0, 0, 0, 0), Clip("w", "case1", 0, 0, 0, 0)]
    with pytest.raises(EvaluateError, match="at least 3 cases"):
        split_cases(clips, eval_params())


# ---------------------------------------------------------------------------------------- probes vs chance

@pytest.mark.slow
def test_probes_beat_chance_on_the_synthetic_default(tmp_path):
    """The demo's data at the demo's scale (params.yaml: 24 cases x 60 s, 64 px, 4 fps) rendered in memory, and the
    default probe protocol (probe banks, 2 probe seeds) on raw-pixel tokens (no model to train): step, motion and
    event all clearly above chance on the held-out cases. Measured with seeds 0, 1, 2 of the data (the margins below
    hold on all three): step F1 per video 0.70, 0.74, 0.59; step accuracy 0.70, 0.72, 0.62 (majority 0.13, 0.08,
    0.16); motion accuracy 0.39, 0.44, 0.43 (chance 0.125, majority 0.19, 0.15, 0.07); event AUROC 0.95, 0.82, 0.89
    (chance 0.5; 44-46 positive test clips). Rendered square (the demo crops 4:3)."""
    from surgwm.params import load_params

    demo = load_params()
    cases, seconds = demo.data.synthetic.cases, demo.data.synthetic.parts_per_case * demo.data.synthetic.part_seconds
    cache, manifest = synthetic_cache(tmp_path, seed=0, cases=cases, seconds=seconds, size=demo.data.size)
    params = demo.model_copy(update={"evaluate": demo.evaluate.model_copy(update={"fractions": [1.0], "device": "cpu"}),
                                     "train": demo.train.model_copy(update={"methods": {}})})
    r = run_eval("raw_pixels", params, tmp_path, cache, manifest)
    print({t: {k: r[t].get(k) for k in ("f1_video", "acc", "majority_acc", "auroc", "positives_test")} for t in
           ("step", "motion", "event")})
    split = r["split"]
    assert set(split["test_cases"]).isdisjoint(split["train_cases"] + split["val_cases"])
    assert r["step"]["f1_video"] >= 0.45 and r["step"]["acc"] >= r["step"]["majority_acc"] + 0.3, r["step"]
    assert r["motion"]["acc"] >= 0.25 and r["motion"]["acc"] >= r["motion"]["majority_acc"] + 0.1, r["motion"]
    assert r["event"]["auroc"] >= 0.75 and r["event"]["positives_test"] >= 10, r["event"]


@pytest.mark.parametrize("seed", [0, 1])
def test_step_probe_beats_chance_on_small_data(seed, seed0, tmp_path):
    """The same protocol on a small, fast dataset (12 cases x 60 s at 32 px): step is still clearly learnable;
    motion and event need the demo's scale (previous test) and are only checked for being measured here."""
    if seed == 0:
        root, cache, manifest = seed0
    else:
        root = tmp_path
        cache, manifest = synthetic_cache(root, seed=seed)
    r = run_eval("raw_pixels", eval_params(seed=seed, fractions=[1.0]), root, cache, manifest)
    s = r["step"]
    assert set(r["split"]["test_cases"]).isdisjoint(r["split"]["train_cases"] + r["split"]["val_cases"])
    assert s["acc"] >= max(s["majority_acc"], s["chance"]) + 0.15, s
    assert s["f1_video"] >= 0.25, s
    for task in ("motion", "event", "anticipation"):       # measured and well-formed, whatever their level
        assert "unavailable" not in r[task], r[task]


# ------------------------------------------------------------------------------------ a trained run, in full

def test_trained_run_gets_every_section_and_files(seed0):
    root, cache, manifest = seed0
    params = eval_params(probe_epochs=4, seeds=[0, 1])    # the structure, not the scores, is under test here
    fake_run(root / "train", root / "metrics", "scratch")
    r = run_eval("scratch", params, root, cache, manifest)
    assert r["status"] == "ok" and r["kind"] == "method" and len(r["weights_sha256"]) == 64
    for section in ("step", "motion", "event", "anticipation", "future", "efficiency", "convergence", "cost"):
        assert "unavailable" not in r[section], (section, r[section])
    a, f, s = r["anticipation"], r["future"], r["step"]
    for key in ("recall_at_1_encoder", "recall_at_5_encoder", "recall_at_1_world_model", "recall_at_5_world_model"):
        assert 0 <= a[key] <= 1, key
    assert a["time_to_next_mae_s"] >= 0 and a["time_to_next_mae_s_median_rule"] >= 0
    assert 0 <= s["f1_video_official"] <= 1 and set(s["per_class_f1"]) == set(clip_table(
        read_manifest(manifest), params).step_classes)
    assert set(s["seed_sd"]) >= {"acc", "f1_video", "f1_video_official"} and len(s["chosen"]) == 2
    assert s["heads_per_seed"] == len(params.evaluate.probe_lrs) * len(params.evaluate.probe_weight_decays)
    assert 0 <= r["event"]["ap"] <= 1
    assert f["temporal"] > 0 and f["contrastive"] > 0 and 0 <= f["retrieval_top1"] <= 1
    assert f["batch_size"] == params.evaluate.batch_size and f["comparable_across_runs"] is False
    v = r["validation"]
    assert {"step", "motion", "event", "anticipation"} <= set(v) and 0 <= v["step"]["f1_video_official"] <= 1
    assert r["sizes"]["probe_seeds"] == 2 and r["sizes"]["test_cases"] == len(r["split"]["test_cases"])
    assert r["sizes"]["test_events"] > 0 and r["sizes"]["test_videos"] == s["videos_in_test"]
    assert set(r["efficiency"]) == {"50pct", "100pct"}
    assert r["efficiency"]["100pct"]["step_acc"] == r["step"]["acc"]
    assert r["convergence"]["epoch"] == 3 and r["cost"]["train_time_s"] == 12.5
    assert "usd" not in r["cost"]          # the report prices it: evaluate.gpu_prices re-runs no probe
    out = root / "evaluate" / "scratch"
    assert (out / "step_confusion.png").stat().st_size > 1000 and (out / "motion_confusion.png").is_file()
    assert (out / "outputs.npz").is_file() and not (out / ".features.tmp").exists()
    curve = json.loads((root / "metrics" / "evaluate_scratch_efficiency.json").read_text())
    assert [c["fraction"] for c in curve] == [0.5, 1.0]
    assert json.loads((root / "metrics" / "evaluate_scratch.json").read_text())["eval_key"] == r["eval_key"]


def test_outputs_npz_follows_the_contract(seed0):
    """docs/evaluation.md: per task and split, case/video/start/true (+ current), per-seed scores for val and
    test only, time_to_next as seconds, the official metric's frames, class names; no pickled objects."""
    root, cache, manifest = seed0
    params = eval_params(probe_epochs=2, seeds=[3, 4], fractions=[1.0])
    fake_run(root / "train", root / "metrics", "scratch")
    r = run_eval("scratch", params, root, cache, manifest)
    z = np.load(root / "evaluate" / "scratch" / "outputs.npz", allow_pickle=False)
    classes = {"step": len(z["step_classes"]), "motion": len(z["motion_classes"]), "event": 2,
               "anticipation": len(z["step_classes"]), "anticipation_wm": len(z["step_classes"])}
    for task in (*classes, "time_to_next"):
        for split in ("train", "val", "test"):
            p = f"{task}/{split}/"
            n = len(z[p + "case"])
            assert n > 0 and z[p + "case"].dtype.kind == z[p + "video"].dtype.kind == "U", p
            assert z[p + "start"].shape == z[p + "true"].shape == (n,)
            assert (p + "current" in z) == (task in ("anticipation", "anticipation_wm", "time_to_next"))
            if split == "train":
                assert p + "score" not in z and p + "pred" not in z
            elif task == "time_to_next":
                assert z[p + "pred"].shape == (2, n) and (z[p + "pred"] >= 0).all()
                assert z[p + "true"].dtype == np.float64
            else:
                s = z[p + "score"]
                assert s.shape == (2, n, classes[task]) and s.dtype == np.float32
                assert np.allclose(s.sum(-1), 1, atol=1e-4)
    assert set(np.unique(z["step/test/case"])) == set(r["split"]["test_cases"])
    assert set(np.unique(z["step/val/case"])) == set(r["split"]["val_cases"])
    assert len(z["step/test/case"]) == r["step"]["test_clips"]
    for split in ("val", "test"):
        p = f"step_official/{split}/"
        n = len(z[p + "time"])
        assert z[p + "pred"].shape == (2, n) and z[p + "true"].shape == (n,) and len(z[p + "video"]) == n
        assert (z[p + "true"] >= 0).all()
    acc = np.mean([(z["step/test/score"][i].argmax(1) == z["step/test/true"]).mean() for i in range(2)])
    assert acc == pytest.approx(r["step"]["acc"])          # the metrics are the scores' metrics


def test_selection_never_reads_the_test_labels(seed0, tmp_path):
    """Relabel every step of the test cases (a permutation of the classes): each seed's chosen heads, their best
    epochs and every validation number stay the same; only the test numbers move."""
    _, cache, manifest = seed0
    params = eval_params(probe_epochs=3, seeds=[0], fractions=[1.0])
    a = run_eval("raw_pixels", params, tmp_path / "a", cache, manifest)
    m = read_manifest(manifest)
    test = set(a["split"]["test_cases"])
    perm = dict(zip(m.step_classes, np.roll(m.step_classes, 3)))
    m = m.model_copy(update={"videos": [v if v.case not in test else v.model_copy(update={
        "steps": [Interval(start=iv.start, stop=iv.stop, label=perm[iv.label]) for iv in v.steps]}) for v in m.videos]})
    write_manifest(m, tmp_path / "manifest.json")
    b = run_eval("raw_pixels", params, tmp_path / "b", cache, tmp_path / "manifest.json")
    for task in ("step", "motion", "event"):
        assert a[task]["chosen"] == b[task]["chosen"], task
    assert a["anticipation"]["encoder_head"] == b["anticipation"]["encoder_head"]
    assert a["validation"] == b["validation"]
    assert a["step"]["acc"] != b["step"]["acc"]


# ------------------------------------------------------------------------------------------------- the caps

def test_training_sample_is_capped_balanced_and_keeps_every_case(seed0):
    _, _, manifest = seed0
    params = eval_params()
    t = clip_table(read_manifest(manifest), params)
    rows = t.rows(split_cases(t.clips, params).train)
    cap = 120
    got = sample_train(t, rows, cap, seed=0)
    assert len(got) == cap and set(got) <= set(rows) and (np.diff(got) > 0).all()
    assert set(t.case[got]) == set(t.case[rows])                   # every case keeps a clip
    counts = np.bincount(balance_labels(t)[got][balance_labels(t)[got] >= 0])
    have = np.bincount(balance_labels(t)[rows][balance_labels(t)[rows] >= 0])
    small = have < cap // len(have)                                 # classes too rare to fill their share keep all
    assert (counts[small] == have[small]).all()
    assert counts[~small].max() - counts[~small].min() <= len(set(t.case[rows])) + 1   # the rest: as equal as can be
    assert np.array_equal(got, sample_train(t, rows, cap, seed=0))  # seeded
    assert not np.array_equal(got, sample_train(t, rows, cap, seed=1))
    assert np.array_equal(sample_train(t, rows, None, 0), np.sort(rows))
    with pytest.raises(EvaluateError, match="evaluate.max_train_clips"):
        sample_train(t, rows, 2, 0)


def test_validation_and_test_samples_are_evenly_spaced(seed0):
    _, _, manifest = seed0
    params = eval_params()
    t = clip_table(read_manifest(manifest), params)
    split = split_cases(t.clips, params)
    val = sample_val(t, t.rows(split.val), 20)
    assert 20 <= len(val) <= 20 + len(split.val) and set(t.case[val]) == set(split.val)
    per_video = sample_test(t, t.rows(split.test), 7)
    assert len(per_video) == len(set(t.video[t.rows(split.test)]))
    for rows in per_video:
        starts = t.start[rows]
        assert len(rows) == 7 and len(set(t.video[rows])) == 1 and (np.diff(starts) > 0).all()
        assert np.ptp(np.diff(starts)) <= params.data.clip_stride     # evenly spaced, first and last clip kept
        assert starts[0] == 0 and starts[-1] == t.start[t.video == t.video[rows[0]]].max()


def test_storage_budget_refuses_before_any_write(seed0, tmp_path):
    """storage.budget_gb below the estimate of the probe clips' tokens: the stage fails naming the key, the
    estimate and the caps that shrink it, and writes no token (nor any output but the failure record)."""
    _, cache, manifest = seed0
    raw = eval_raw(seeds=[0], fractions=[1.0])
    params = parse_params({**raw, "storage": {"budget_gb": 1e-4}})             # 100 kB
    with pytest.raises(EvaluateError, match=r"storage.budget_gb \(0.0001 GB\).*evaluate.max_train_clips"):
        run_eval("raw_pixels", params, tmp_path, cache, manifest)
    assert not (tmp_path / "evaluate" / "raw_pixels").exists()
    rec = json.loads((tmp_path / "metrics" / "evaluate_raw_pixels.json").read_text())
    assert rec["status"] == "failed" and "needs an estimated" in rec["error"]
    assert (tmp_path / "metrics" / "failures" / "baseline@raw_pixels.json").is_file()


def test_caps_bound_what_evaluate_extracts_and_scores(seed0, tmp_path):
    """Caps below the data's size: the probe trains on max_train_clips, validates on ~max_val_clips, scores
    max_test_clips_per_video per test video; the storage estimate is the size of the tokens written."""
    _, cache, manifest = seed0
    params = eval_params(probe_epochs=2, seeds=[0], fractions=[1.0], max_train_clips=60, max_val_clips=30,
                         max_test_clips_per_video=9)
    r = run_eval("raw_pixels", params, tmp_path, cache, manifest)
    z = r["sizes"]
    assert z["train_clips"] == 60 and 30 <= z["val_clips"] <= 30 + z["val_cases"]
    assert z["test_clips"] == 9 * z["test_videos"]
    assert r["probe_fits"]["feature_bytes"] == (z["train_clips"] + z["val_clips"]) * 16 * 96 * 2   # float16 tokens
    assert 0 <= r["step"]["f1_video_official"] <= 1                  # every 1-fps frame still predicted


def test_untrained_encoder_baseline_uses_the_pretrained_architecture(seed0, tmp_path):
    root, cache, manifest = seed0
    from models import VideoEncoder, encoder_config

    VideoEncoder.from_config(encoder_config(48, 1, 2, SIZE, CLIP)).save_pretrained(tmp_path / "weights")
    params = eval_params(fractions=[1.0], probe_epochs=2)
    src = load_source("untrained_encoder", params, tmp_path / "train", tmp_path / "weights", torch.device("cpu"))
    assert src.encoder.dim == 48 and src.predictor is None
    src = load_source("untrained_encoder", params, tmp_path / "train", tmp_path / "none", torch.device("cpu"))
    assert src.encoder.dim == params.model.encoder_dim


def test_run_that_did_not_train_is_recorded_as_failed(seed0, tmp_path):
    _, cache, manifest = seed0
    with pytest.raises(EvaluateError, match="did not complete"):
        run_eval("frozen", eval_params(), tmp_path, cache, manifest)
    rec = json.loads((tmp_path / "metrics" / "evaluate_frozen.json").read_text())
    assert rec["status"] == "failed" and "train@frozen" in rec["error"]
    assert (tmp_path / "metrics" / "failures" / "evaluate@frozen.json").is_file()


def test_missing_labels_and_absent_classes_do_not_crash(seed0, tmp_path):
    """No event or motion labels: those sections say why; step classes absent from the test cases are fine."""
    _, cache, manifest = seed0
    params = eval_params(probe_epochs=3, fractions=[1.0])
    m = read_manifest(manifest)
    test_cases = split_cases(clip_table(m, params).clips, params).test
    gone = m.videos[[v.case for v in m.videos].index(test_cases[0])].steps[0].label   # a class the test loses
    m = m.model_copy(update={"motion_classes": [], "videos": [v.model_copy(update={
        "events": [], "motion": [], "steps": [iv for iv in v.steps if v.case not in test_cases or iv.label != gone]})
        for v in m.videos]})
    write_manifest(m, tmp_path / "manifest.json")
    r = run_eval("raw_pixels", params, tmp_path, cache, tmp_path / "manifest.json")
    assert r["event"] == {"unavailable": "no event labels in this data"}
    assert r["motion"] == {"unavailable": "no motion labels in this data"}
    assert r["step"]["classes_in_test"] < 8 and 0 <= r["step"]["f1_video"] <= 1
    assert r["step"]["per_class_f1"][gone] is None
    assert 0 <= r["anticipation"]["recall_at_5_encoder"] <= 1
    assert r["efficiency"]["100pct"]["motion_acc"] is None


def test_clip_table_labels_next_step_and_time_to_it(seed0):
    _, _, manifest = seed0
    m = read_manifest(manifest)
    params = eval_params()
    t = clip_table(m, params)
    assert t.missing == {} and (t.event == 1).any() and (t.event == 0).any()
    has = t.next_step >= 0
    assert has.any() and (t.next_step[has] != t.step[has]).all()
    videos = {v.video_id: v for v in m.videos}
    assert np.isnan(t.time_to_next[~has]).all() and (t.time_to_next[has] > 0).all()
    i = int(np.flatnonzero(has)[0])
    c = t.clips[i]
    mid = (c.start + params.data.clip_frames / 2) / params.data.fps
    starts = [iv.start for iv in videos[c.video_id].steps if iv.start > mid]
    assert t.time_to_next[i] == pytest.approx(min(starts) - mid)


# ---------------------------------------------------------------------------------- derived rows, modules

def test_convergence_rule():
    hist = [{"epoch": e, "val_loss": v, "val_acc": a} for e, (v, a) in
            enumerate([(2.0, 0.1), (1.3, 0.5), (1.05, 0.85), (1.0, 0.9)], 1)]
    c = convergence(hist, "val_loss", 0.9)
    assert c["epoch"] == 3 and c["final"] == 1.0           # 1.05 <= 1.0 / 0.9
    assert convergence(hist, "val_acc", 0.9)["epoch"] == 3  # 0.85 >= 0.81
    assert "unavailable" in convergence([{"epoch": 1, "train_loss": 1.0}], "val_loss", 0.9)
    assert "unavailable" in convergence(None, "val_loss", 0.9)


def test_cost_reports_missing_memory_and_the_device():
    c = cost({"train_time_s": 3600.0}, {"device": "cuda:0", "device_name": "NVIDIA A100-SXM4-80GB"})
    assert c["train_time_s"] == 3600.0 and c["device"] == "NVIDIA A100-SXM4-80GB"
    assert c["peak_memory_mb"] is None and c["peak_memory_note"] == "not recorded by the train stage"
    assert cost({"train_time_s": 1.0, "peak_memory_mb": 321.0}, None)["peak_memory_mb"] == 321.0
    assert "unavailable" in cost(None, None)


def test_pixel_tokens_follow_the_encoder_token_order():
    frames = torch.randint(0, 256, (2, CLIP, SIZE, SIZE, 3), dtype=torch.uint8)
    tok = PixelTokens(pool=16)(frames)  # pool 16: no pooling, each token is its raw tubelet patch
    x = preprocess(frames)  # (B, T, C, H, W)
    t, h, w = 1, 1, 0  # token n = (t * Hg + h) * Wg + w
    n = (t * (SIZE // 16) + h) * (SIZE // 16) + w
    patch = x[:, 2 * t:2 * t + 2, :, 16 * h:16 * h + 16, 16 * w:16 * w + 16]  # (B, 2, C, 16, 16)
    assert tok.shape == (2, (CLIP // 2) * (SIZE // 16) ** 2, 2 * 3 * 256)
    assert torch.allclose(tok[:, n], patch.reshape(2, -1), atol=1e-6)
    assert PixelTokens(pool=4)(frames).shape[-1] == 2 * 3 * 16


def test_probe_bank_shapes_and_checks():
    bank = ProbeBank(in_dim=40, num_tokens=16, outputs=[8, 2, 1], init_seeds=[0, 1, 2], dim=32, depth=2, heads=4)
    out = bank(torch.randn(3, 16, 40))
    assert out.shape == (3, 3, 8) and torch.isinf(out[1, :, 2:]).all() and torch.isfinite(out[0]).all()
    with pytest.raises(ValueError, match="built for"):
        bank(torch.randn(3, 15, 40))
    with pytest.raises(ValueError, match="multiple of heads"):
        ProbeBank(40, 16, [2], [0], dim=30, heads=4)


def test_rollout_starts_from_the_clip_end_and_never_reads_the_future(seed0):
    """Roll-outs depend on the last context frames only; the future metric's context on the first ones only."""
    root, _, _ = seed0
    run = fake_run(root / "train_roll", root / "metrics_roll", "scratch")
    src = method_source("scratch", run, torch.device("cpu"))
    frames = torch.randint(0, 256, (2, CLIP, SIZE, SIZE, 3), dtype=torch.uint8)
    changed = frames.clone()
    changed[:, :CLIP - CONTEXT] = torch.randint(0, 256, changed[:, :CLIP - CONTEXT].shape, dtype=torch.uint8)
    with torch.no_grad():
        a, b = rollout(src, frames, 2), rollout(src, changed, 2)
    assert a.shape == (2, 2 * 2 * (SIZE // 16) ** 2, 32)
    assert torch.equal(a, b)
    assert np.isfinite(a.numpy()).all()


def test_unlabelled_time_of_a_labelled_video_is_other_as_surgvu_scores_it(make_params):
    """A gap between two steps is `other` (the official metric's rule); a video with no step labels stays unknown."""
    from surgwm.data.manifest import Interval, Manifest, VideoEntry

    steps = [Interval(start=0, stop=4, label="range_of_motion"), Interval(start=6, stop=10, label="suturing")]
    videos = [VideoEntry(video_id=v, case=v, path=f"/v/{v}.mp4", duration_s=10, frames=40, steps=s)
              for v, s in (("a", steps), ("b", []))]
    table = clip_table(Manifest(source="surgvu", root="/v", videos=videos), make_params())
    mids = {(c.video_id, (c.start + 4) / 4): int(y) for c, y in zip(table.clips, table.step)}  # centre, seconds
    other = table.step_classes.index("other")
    assert mids[("a", 1.0)] == table.step_classes.index("range_of_motion")
    assert mids[("a", 5.0)] == other and mids[("a", 7.0)] == table.step_classes.index("suturing")
    assert {y for (v, _), y in mids.items() if v == "b"} == {-1}
