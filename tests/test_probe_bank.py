"""Probe banks (models/probe.py, surgwm/evaluation/probe_bank.py): the pooler computed without keys and values is the
textbook cross-attention block, the per-head AdamW is torch's AdamW, and a head trained in a bank is the head trained
alone (same seed, same rows): same best epoch, same predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_data import eval_params, synthetic_cache

from models.probe import ProbeBank
from surgwm.data.clips import open_clips
from surgwm.data.manifest import read_manifest
from surgwm.evaluation.probe_bank import BankAdamW, Features, fit_bank, predict
from surgwm.evaluation.probes import build_tasks
from surgwm.evaluation.sources import extract, load_source
from surgwm.evaluation.split import split_cases
from surgwm.evaluation.table import clip_table
from surgwm.training.schedule import warmup_cosine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Raw-pixel tokens of a small synthetic dataset (8 cases x 40 s at 32 px), every clip."""
    root = tmp_path_factory.mktemp("bank")
    cache, manifest = synthetic_cache(root, seed=3, cases=8, seconds=40.0)
    params = eval_params(fractions=[1.0])
    table = clip_table(read_manifest(manifest), params)
    split = split_cases(table.clips, params)
    src = load_source("raw_pixels", params, root, root, torch.device("cpu"))
    rows = np.arange(len(table.clips))
    tok, _ = extract(src, open_clips(cache, params.data.clip_frames), table.clips, rows, 16, torch.device("cpu"),
                     root / "features", "float32", 1)
    return table, split, Features(rows, [np.asarray(tok)]), params


def textbook(bank: ProbeBank, x: torch.Tensor, h: int) -> torch.Tensor:
    """Head h as written in V-JEPA 2's probe: keys and values of every token formed, then the softmax."""
    P = lambda n: getattr(bank, n)[h]  # noqa: E731
    d, A = bank.dim, bank.heads
    t = (bank.features(x) - bank.mean) / bank.std
    if bank.depth:
        t = t @ P("proj_w") + P("proj_b") + P("pos")
        for i in range(bank.depth):
            p = lambda s: P(f"blk{i}_{s}")  # noqa: E731
            z = F.layer_norm(t, (d,)) * p("n1_g") + p("n1_b")
            q, k, v = (z @ p("qkv_w") + p("qkv_b")).split(d, -1)
            heads = lambda a: a.view(*a.shape[:2], A, -1).transpose(1, 2)  # noqa: E731
            att = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(d // A), -1) @ heads(v)
            t = t + att.transpose(1, 2).reshape(t.shape) @ p("o_w") + p("o_b")
            t = t + F.gelu((F.layer_norm(t, (d,)) * p("n2_g") + p("n2_b")) @ p("fc1_w") + p("fc1_b")) @ p("fc2_w") \
                + p("fc2_b")
        t = F.layer_norm(t, (d,)) * P("pool_nx_g") + P("pool_nx_b")
    B, N = t.shape[:2]
    q = (P("query") @ P("pool_q_w") + P("pool_q_b")).view(A, -1)
    k = (t @ P("pool_k_w")).view(B, N, A, -1)
    v = (t @ P("pool_v_w") + P("pool_v_b") + (0 if bank.depth else P("pos_value"))).view(B, N, A, -1)
    s = torch.einsum("ad,bnad->ban", q, k) / math.sqrt(d // A) + (0 if bank.depth else P("pos_score")[None])
    o = torch.einsum("ban,bnad->bad", torch.softmax(s, -1), v).reshape(B, d)
    o = P("query") + o @ P("pool_o_w") + P("pool_o_b")
    o = o + F.gelu((F.layer_norm(o, (d,)) * P("pool_n2_g") + P("pool_n2_b")) @ P("pool_fc1_w") + P("pool_fc1_b")) \
        @ P("pool_fc2_w") + P("pool_fc2_b")
    return (F.layer_norm(o, (d,)) * P("norm_g") + P("norm_b")) @ P("head_w") + P("head_b")


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_pooler_without_keys_and_values_is_the_textbook_block(depth):
    torch.manual_seed(depth)
    bank = ProbeBank(12, 8, [3, 5], [1, 2], dim=16, depth=depth, heads=4, lag=2).double()
    with torch.no_grad():
        for n in bank.names:                                  # move off the init (zero biases, unit norms)
            getattr(bank, n).add_(torch.randn_like(getattr(bank, n)) * 0.1)
        bank.mean.copy_(torch.randn(24))
        bank.std.copy_(torch.rand(24) + 0.5)
    x = torch.randn(5, 8, 12, dtype=torch.double)
    out = bank(x)                                             # (H, B, C)
    for h, c in enumerate(bank.outputs):
        assert torch.allclose(out[h, :, :c], textbook(bank, x, h)[:, :c], atol=1e-10)
        assert torch.isinf(out[h, :, c:]).all()


def test_bank_adamw_is_torch_adamw_per_head():
    """Two heads, different lr and weight decay: each head's update is torch.optim.AdamW's on its own slices
    (decay on weight matrices only), through a warmup + cosine schedule."""
    torch.manual_seed(0)
    bank = ProbeBank(6, 4, [3, 3], [5, 6], dim=8, depth=0, heads=2, lag=0)
    lrs, wds = torch.tensor([1e-2, 3e-3]), torch.tensor([0.1, 0.0])
    ref = []
    for h in range(2):
        params = {n: torch.nn.Parameter(getattr(bank, n)[h].detach().clone()) for n in bank.names}
        groups = [{"params": [p for n, p in params.items() if bank.decays(n)], "weight_decay": float(wds[h])},
                  {"params": [p for n, p in params.items() if not bank.decays(n)], "weight_decay": 0.0}]
        ref.append((params, torch.optim.AdamW(groups, lr=float(lrs[h]))))
    opt = BankAdamW(bank, lrs, wds)
    for step in range(5):
        grads = {n: torch.randn_like(getattr(bank, n)) for n in bank.names}
        factor = warmup_cosine(step, 5, 2, 0.0)
        for n in bank.names:
            getattr(bank, n).grad = grads[n].clone()
        opt.step(factor)
        for h, (params, o) in enumerate(ref):
            for g in o.param_groups:
                g["lr"] = float(lrs[h]) * factor
            for n, p in params.items():
                p.grad = grads[n][h].clone()
            o.step()
    for h, (params, _) in enumerate(ref):
        for n, p in params.items():
            assert torch.allclose(getattr(bank, n)[h], p, atol=1e-6), n


@pytest.mark.parametrize(("depth", "precision"), [(0, "fp32"), (0, "bf16"), (1, "fp32")])
def test_chosen_head_is_the_head_trained_alone(tiny, depth, precision):
    """A 3 x 2 grid for step and event: the step task's chosen head, trained again alone (a bank of one head, its
    lr and weight decay, the same seed and rows), keeps the same best epoch and gives the same predictions."""
    table, split, feats, params = tiny
    tasks = build_tasks(table)
    train, val, test = (table.rows(c) for c in (split.train, split.val, split.test))
    common = dict(dim=32, depth=depth, heads=2, lag=(32 // 16) ** 2, epochs=6, batch_size=32,
                  device=torch.device("cpu"), precision=precision)
    big = fit_bank(feats, [tasks["step"], tasks["event"]], train, val, [1e-3, 3e-3, 1e-2], [0.0, 0.1], seed=7,
                   **common)
    h = big.chosen["step"]
    _, lr, wd = big.heads[h]
    assert np.array_equal(tasks["step"].rows(train), tasks["event"].rows(train)), "same rows in both banks"
    alone = fit_bank(feats, [tasks["step"]], train, val, [lr], [wd], seed=7, **common)
    assert alone.best_epoch[0] == big.best_epoch[h] and alone.val_score[0] == pytest.approx(big.val_score[h])
    a = predict(alone.bank.select([0]), feats, test, [False], torch.device("cpu"))[0]
    b = predict(big.bank.select([h]), feats, test, [False], torch.device("cpu"))[0]
    assert np.allclose(a, b, atol=1e-4)
    assert (a.argmax(1) == b.argmax(1)).all()


def test_select_keeps_the_chosen_heads(tiny):
    table, _, feats, _ = tiny
    torch.manual_seed(0)
    bank = ProbeBank(feats.shape[1], feats.shape[0], [8, 2, 8, 1], [1, 2, 3, 4], dim=32, depth=0, heads=2, lag=4)
    with torch.no_grad():
        for n in bank.names:
            getattr(bank, n).add_(torch.randn_like(getattr(bank, n)) * 0.1)
    x = feats.read(np.arange(6), torch.device("cpu"))
    sub = bank.select([2, 1])
    assert torch.allclose(sub(x)[0], bank(x)[2]) and torch.allclose(sub(x)[1][:, :2], bank(x)[1][:, :2])
