"""Training many probe heads over one pass of the features (V-JEPA 2's multi-head probe evaluation).

A bank trains, for one probe seed and one set of training rows, every head of a learning-rate x weight-decay grid
(`evaluate.probe_lrs` x `evaluate.probe_weight_decays`) for every task that reads the same tokens: each batch of
features is read once and feeds all heads (models/probe.py: ProbeBank). Each head keeps the weights of its best
validation epoch; each task then picks its head on VALIDATION (the probe-validation cases), and only that head ever
scores the test clips. A head's initial weights depend only on (seed, task) and the batch order only on the seed,
so a head trained in a bank of one, with the same seed and rows, is the same probe (tests/test_probe_bank.py).

Optimiser: AdamW per head (each head its own learning rate and weight decay, decay on weight matrices only),
warmup + cosine (surgwm/training/schedule.py) over `evaluate.probe_epochs`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from models.probe import ProbeBank, with_changes
from surgwm.evaluation import metrics as M
from surgwm.training.schedule import warmup_cosine

WARMUP_FRACTION = 0.1        # share of the probe's steps spent warming up (V-JEPA 2's probes: a few epochs)
FINAL_LR_FRACTION = 0.0      # the cosine ends at 0
MAX_CLASS_WEIGHT = 20.0      # balanced losses: a class weighs at most this many times an average one
STANDARDIZE_ROWS = 2048      # training clips that set the per-feature mean and std
EVAL_BATCH = 256
FEATURE_CACHE_BYTES = 2 << 30   # probe inputs of every extracted clip kept in memory up to this size (Features)


@dataclass(frozen=True)
class Task:
    """One probe task over table rows: class indices (-1: no label) or, for regression, seconds (nan: no label)."""

    name: str
    y: np.ndarray
    outputs: int                 # classes; 1 for regression
    balanced: bool = False       # class-weighted loss (rare classes, e.g. the event)
    regression: bool = False     # L1 on log(1 + seconds)

    def rows(self, candidates: np.ndarray) -> np.ndarray:
        y = self.y[candidates]
        return candidates[~np.isnan(y)] if self.regression else candidates[y >= 0]

    def score(self, y: np.ndarray, out: np.ndarray) -> float | None:
        """What picks the epoch and the head, higher is better, on validation only."""
        if self.regression:
            mae = M.mae(y, out[:, 0])
            return None if mae is None else -mae
        if self.outputs == 2 and self.name == "event":
            return M.auroc(y, out[:, 1])
        if self.balanced:
            return M.mean_class_recall_at_k(y, out, 1)
        return M.accuracy(y, out.argmax(1))


@dataclass
class Features:
    """Token arrays (one row per clip in `rows`, the clips' table indices, sorted) read a batch at a time.

    `batch` gives a probe its input features (the tokens and their changes, models/probe.py with_changes) in the
    probe's precision. They do not depend on the probe seed, the bank or its standardisation (folded into the probe's
    weights), so when all of them fit in FEATURE_CACHE_BYTES they are formed once, for every bank and seed; else per
    batch from the memory-mapped tokens."""

    rows: np.ndarray
    arrays: list[np.ndarray]     # (len(rows), N_i, D) each; concatenated along the token axis
    _cache: dict[tuple[int, torch.dtype], Tensor | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._pos = {int(r): i for i, r in enumerate(self.rows)}

    @property
    def shape(self) -> tuple[int, int]:
        return sum(a.shape[1] for a in self.arrays), self.arrays[0].shape[2]

    def _positions(self, rows: np.ndarray) -> np.ndarray:
        return np.fromiter((self._pos[int(r)] for r in rows), dtype=np.int64, count=len(rows))

    def read(self, rows: np.ndarray, device: torch.device) -> Tensor:
        """(B, N, D) float32 tokens of table rows `rows` (each must have been extracted)."""
        pos = self._positions(rows)
        order = np.argsort(pos, kind="stable")                       # sorted reads from a memory map
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        parts = [torch.from_numpy(np.ascontiguousarray(a[pos[order]])) for a in self.arrays]    # stored dtype
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return x[torch.from_numpy(back)].to(device=device, dtype=torch.float32)    # torch converts fp16 2x faster

    def batch(self, rows: np.ndarray, device: torch.device, lag: int, dtype: torch.dtype) -> Tensor:
        """(B, N, F) features of `rows` in `dtype`: from the in-memory copy when it fits, else formed now."""
        key = (lag, dtype)
        if key not in self._cache:
            n, d = self.shape
            size = len(self.rows) * n * d * (2 if lag else 1) * torch.finfo(dtype).bits // 8
            self._cache[key] = self._form(self.rows, torch.device("cpu"), lag, dtype) \
                if size <= FEATURE_CACHE_BYTES else None
        every = self._cache[key]
        if every is None:
            return self._form(rows, device, lag, dtype)
        return every[torch.from_numpy(self._positions(rows))].to(device)

    def _form(self, rows: np.ndarray, device: torch.device, lag: int, dtype: torch.dtype) -> Tensor:
        return torch.cat([with_changes(self.read(rows[i:i + EVAL_BATCH], device), lag).to(dtype)
                          for i in range(0, len(rows), EVAL_BATCH)]) if len(rows) else torch.zeros(0)


@dataclass
class BankFit:
    """A trained bank: every head at its best validation epoch, and each task's chosen head."""

    bank: ProbeBank
    tasks: list[Task]
    heads: list[tuple[int, float, float]]      # (task index, lr, weight decay) per head
    best_epoch: list[int]
    val_score: list[float | None]
    chosen: dict[str, int]                     # task name -> head index (best validation score)
    history: list[list[float | None]] = field(default_factory=list)   # per epoch, per head: validation score

    def chosen_bank(self) -> tuple[ProbeBank, list[Task]]:
        """The chosen heads alone (one per task, in task order): what scores the test clips."""
        names = [t.name for t in self.tasks if t.name in self.chosen]
        return self.bank.select([self.chosen[n] for n in names]), [t for t in self.tasks if t.name in self.chosen]


def resolve_precision(precision: str, device: torch.device, depth: int = 0) -> str:
    """auto: bf16 products on CUDA; on a CPU with AVX512-BF16 for the depth-0 pooler only (its few large products
    run ~4x faster than fp32 there; a depth >= 1 probe's many small ones ran slower in bf16: 9.4 vs 7.1 s CPU per head
    on the demo's tokens); fp32 elsewhere (emulated bf16 is slower)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    has_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return "bf16" if device.type == "cpu" and depth == 0 and has_bf16() else "fp32"


def init_seed(seed: int, task: str) -> int:
    """A head's initial weights: from the probe seed and its task only (not its place in the bank)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(task.encode())]).generate_state(1)[0])


class BankAdamW:
    """AdamW over stacked heads: per-head learning rate and weight decay (tensors of shape (H,)), V-JEPA 2's betas.
    The same update as torch.optim.AdamW applied to each head's slice on its own."""

    def __init__(self, bank: ProbeBank, lrs: Tensor, wds: Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = [getattr(bank, n) for n in bank.names]
        self.decay = [bank.decays(n) for n in bank.names]
        self.lrs, self.wds, self.betas, self.eps, self.t = lrs, wds, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self._shape = [(-1, *([1] * (p.dim() - 1))) for p in self.params]

    @torch.no_grad()
    def step(self, lr_factor: float) -> None:
        b1, b2 = self.betas
        self.t += 1
        grads = [p.grad for p in self.params]
        torch._foreach_lerp_(self.m, grads, 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, value=1 - b2)
        lr = self.lrs * lr_factor                                            # (H,)
        decayed = [p for p, d in zip(self.params, self.decay) if d]
        if decayed:
            keep = 1 - lr * self.wds
            torch._foreach_mul_(decayed, [keep.view(s) for s, d in zip(self._shape, self.decay) if d])
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, math.sqrt(1 - b2 ** self.t))
        torch._foreach_add_(denom, self.eps)
        upd = torch._foreach_div(self.m, denom)
        step = lr / (1 - b1 ** self.t)
        torch._foreach_mul_(upd, [step.view(s) for s in self._shape])
        torch._foreach_sub_(self.params, upd)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def class_weights(task: Task, rows: np.ndarray) -> np.ndarray:
    """Balanced class weights on the training rows (absent classes 0), capped at MAX_CLASS_WEIGHT."""
    if not task.balanced or task.regression:
        return np.ones(task.outputs)
    counts = np.bincount(task.y[rows].astype(int), minlength=task.outputs).astype(np.float64)
    w = np.where(counts > 0, len(rows) / (task.outputs * np.maximum(counts, 1)), 0.0)
    return np.minimum(w, MAX_CLASS_WEIGHT)


def bank_loss(out: Tensor, y: Tensor, head_task: Tensor, weight: Tensor, regression: Tensor) -> Tensor:
    """Sum over heads of each head's mean loss on its labelled rows (so each head gets its own gradient).
    out (H, B, C); y (T, B) labels (nan: none); head_task (H,); weight (H, C) class weights; regression (H,) bool."""
    yh = y[head_task]                                                    # (H, B)
    has = ~torch.isnan(yh)
    loss = out.new_zeros(())
    cls = ~regression
    if cls.any():
        o, t, m, w = out[cls], yh[cls], has[cls], weight[cls]
        idx = torch.where(m, t, torch.zeros_like(t)).long()              # (Hc, B)
        nll = -torch.log_softmax(o, -1).gather(-1, idx[..., None])[..., 0]
        wt = w.gather(-1, idx) * m                                       # (Hc, B)
        loss = loss + ((nll * wt).sum(1) / wt.sum(1).clamp_min(1e-12)).sum()
    if regression.any():
        o, t, m = out[regression][..., 0], yh[regression], has[regression]
        err = (o - torch.log1p(torch.where(m, t, torch.zeros_like(t)).clamp_min(0))).abs() * m
        loss = loss + (err.sum(1) / m.sum(1).clamp_min(1)).sum()
    return loss


@torch.no_grad()
def predict(bank: ProbeBank, feats: Features, rows: np.ndarray, regression: Sequence[bool],
            device: torch.device) -> np.ndarray:
    """(H, len(rows), C): class probabilities, or for regression heads seconds in column 0."""
    bank.eval()
    dtype = input_dtype(bank)
    outs = [bank.forward_features(feats.batch(rows[i:i + EVAL_BATCH], device, bank.lag, dtype))
            for i in range(0, len(rows), EVAL_BATCH)]
    if not outs:
        return np.zeros((len(bank.outputs), 0, max(bank.outputs)), dtype=np.float32)
    return to_scores(torch.cat(outs, dim=1), regression)


def input_dtype(bank: ProbeBank) -> torch.dtype:
    """The dtype a bank's input features are formed in: its products' precision."""
    return torch.bfloat16 if bank.precision == "bf16" else torch.float32


def to_scores(out: Tensor, regression: Sequence[bool]) -> np.ndarray:
    """Bank outputs (H, B, C) -> probabilities (masked columns 0), or seconds (column 0) for regression heads."""
    reg = torch.as_tensor(list(regression), device=out.device)[:, None, None]
    prob = torch.softmax(out, -1)
    secs = torch.expm1(out[..., :1].clamp(max=30.0)).clamp_min(0).expand_as(out)
    return torch.where(reg, secs, prob).float().cpu().numpy()


def fit_bank(feats: Features, tasks: Sequence[Task], train: np.ndarray, val: np.ndarray,
             lrs: Sequence[float], wds: Sequence[float], seed: int, *, dim: int, depth: int, heads: int, lag: int,
             epochs: int, batch_size: int, device: torch.device, precision: str = "fp32",
             select: Callable[[Task, np.ndarray, np.ndarray], float | None] | None = None) -> BankFit:
    """Train one bank: heads = tasks x lrs x wds on the rows of `train` that any task labels, in one seeded order.
    `select(task, y_val, scores)` overrides Task.score (higher is better)."""
    tasks = list(tasks)
    grid = [(t, lr, wd) for t in range(len(tasks)) for lr in lrs for wd in wds]
    n_tokens, in_dim = feats.shape
    bank = ProbeBank(in_dim, n_tokens, [tasks[t].outputs for t, _, _ in grid],
                     [init_seed(seed, tasks[t].name) for t, _, _ in grid], dim, depth, heads, lag,
                     precision).to(device)
    rows = np.unique(np.concatenate([t.rows(train) for t in tasks]))
    rng = np.random.default_rng(seed)
    std_rows = np.sort(np.random.default_rng(seed).permutation(rows)[:STANDARDIZE_ROWS])
    bank.standardize(feats.read(std_rows, device))
    dtype = input_dtype(bank)
    head_task = torch.tensor([t for t, _, _ in grid], device=device)
    regression = torch.tensor([tasks[t].regression for t, _, _ in grid], device=device)
    cw = [class_weights(t, t.rows(train)) for t in tasks]
    weight = torch.zeros(len(grid), max(bank.outputs), device=device)
    for h, (t, _, _) in enumerate(grid):
        weight[h, :tasks[t].outputs] = torch.as_tensor(cw[t], dtype=torch.float32)
    y_all = np.stack([np.where(t.y >= 0, t.y, np.nan) if not t.regression else t.y for t in tasks]).astype(np.float32)
    opt = BankAdamW(bank, torch.tensor([lr for _, lr, _ in grid], device=device),
                    torch.tensor([wd for _, _, wd in grid], device=device))
    per_epoch = max(1, math.ceil(len(rows) / batch_size))
    total = epochs * per_epoch
    warm = max(1, round(WARMUP_FRACTION * total))
    val_rows = [t.rows(val) for t in tasks]
    union = np.unique(np.concatenate(val_rows)) if any(len(v) for v in val_rows) else np.zeros(0, int)
    val_idx = [np.searchsorted(union, v) for v in val_rows]                 # each task's rows in `union`
    pick = select or (lambda task, y, s: task.score(y, s))
    best_score = [-math.inf] * len(grid)
    best_epoch = [epochs] * len(grid)
    best = {n: getattr(bank, n).detach().clone() for n in bank.names}
    history: list[list[float | None]] = []
    step = 0
    for epoch in range(1, epochs + 1):
        bank.train()
        perm = rng.permutation(rows)
        for i in range(0, len(perm), batch_size):
            b = perm[i:i + batch_size]
            out = bank.forward_features(feats.batch(b, device, lag, dtype))             # (H, B, C)
            loss = bank_loss(out, torch.from_numpy(y_all[:, b]).to(device), head_task, weight, regression)
            opt.zero_grad()
            loss.backward()
            opt.step(warmup_cosine(step, total, warm, FINAL_LR_FRACTION))
            step += 1
        if not len(union):
            continue
        scores = predict(bank, feats, union, regression.tolist(), device)                  # (H, n, C)
        row_scores: list[float | None] = []
        improved = torch.zeros(len(grid), dtype=torch.bool, device=device)
        for h, (t, _, _) in enumerate(grid):
            vr = val_rows[t]
            s = pick(tasks[t], tasks[t].y[vr], scores[h, val_idx[t], :tasks[t].outputs]) if len(vr) else None
            row_scores.append(s)
            if s is not None and s > best_score[h]:
                best_score[h], best_epoch[h], improved[h] = s, epoch, True
        history.append(row_scores)
        if improved.any():
            with torch.no_grad():
                for n in bank.names:
                    best[n][improved] = getattr(bank, n)[improved]
    with torch.no_grad():
        for n in bank.names:
            getattr(bank, n).copy_(best[n])
    chosen: dict[str, int] = {}
    for t, task in enumerate(tasks):
        cands = [h for h, (tt, _, _) in enumerate(grid) if tt == t and best_score[h] > -math.inf]
        if cands:
            chosen[task.name] = max(cands, key=lambda h: (best_score[h], -h))
        else:                    # no validation label for this task: the grid's first head at its last epoch
            chosen[task.name] = next(h for h, (tt, _, _) in enumerate(grid) if tt == t)
    return BankFit(bank, tasks, grid, best_epoch, [s if s > -math.inf else None for s in best_score], chosen,
                   history)
