"""A deterministic synthetic surgical-like video dataset in the SurgVU layout, so the pipeline runs anywhere.

What a model must learn: the motion class needs two or more frames (start positions are random and the
position marginals of opposite directions match); the step shows in the tissue pattern, its fat/fascia region,
the instrument count and the motion mix, never in one constant colour (per-case colour jitter); rare `breach`
events are gauze entering the field or the assisting instrument leaving it. The order of the steps varies between
cases (step_order), so the next step is not a lookup in the official order.

Reproducible to the byte on any x86-64 machine with the pinned versions (tests/test_repro.py): every float that
decides a pixel comes from exact IEEE operations (the portable math below, integer noise), and ffmpeg/x264 run with
bit-exact, CPU-independent, single-thread settings (surgwm/data/ffmpeg.py; docs/embedded_encoder.md says what
differed before, as measured). A change here that moves pixels also needs the hashes in tests/test_repro.py and a
re-made assets/vjepa2-tiny-surgical (tests/test_pretrain_embedded.py).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from surgwm.data.ffmpeg import NO_SIMD, SWS_FLAGS, X264_NO_ASM, X264_REPRODUCIBLE, ffmpeg_exe
from surgwm.data.classes import EVENT_LABEL, MOTION_CLASSES, STEP_CLASSES

SEGMENT_S = (3.0, 5.0)        # motion segments: longer than one 2 s clip at 4 fps; short, so many per case
SPEED = (0.12, 0.22)          # linear motions, frame heights per second (capped so the path stays in view)
EVENTS_PER_S = 1 / 15         # rare but learnable: ~1 in 5 clips of 2 s (stride 1 s) shows an event
EVENT_S = (1.5, 3.0)
ORDER_JITTER = 1.0            # step order: sd (in steps) of the noise on each step's place in the official order
REVISIT_P = 0.5               # chance, per try, that a case goes back to a step it did earlier ...
REVISITS = 2                  # ... tries per case
JAW_MAX = 1.0                 # rad, fully open grasper
SHAFT_R, WRIST_L, JAW_L, JAW_R = 0.035, 0.045, 0.09, 0.016  # instrument geometry, in frame heights
TASK_COLUMNS = ("start_part", "start_time", "stop_part", "stop_time", "groundtruth_taskname")
PART_COLUMNS = ("start_part", "start_time", "stop_part", "stop_time", "label")
_STREAMS = {"labelled": 0, "corpus": 1}  # separate random streams: the corpus never repeats a labelled case
_LINEAR = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


# ---------------------------------------------------------------- portable math (the same bits on every CPU)
# numpy picks SIMD kernels for sin/cos/exp/pow by CPU (float32 results measured to differ in the last bit with
# numpy's AVX2/AVX-512 kernels disabled), libm has FMA variants, and BLAS sums in CPU-specific orders. A last-bit
# difference flips a rounding to uint8 now and then (about one texture pixel per step), and x264 turns one pixel
# into a different file. Everything that decides a pixel therefore uses only + - * / sqrt rint ldexp (exact IEEE
# operations, one numpy ufunc each, so nothing is fused) through the functions below: slower than libm, but the
# textures are drawn once per step and the tracks are small.

_PIO2 = (1.57079632673412561417e+00, 6.07710050630396597660e-11, 2.02226624871116645580e-21)  # fdlibm's pi/2 split
_INV_PIO2 = 6.36619772367581382433e-01
_LN2 = (6.93147180369123816490e-01, 1.90821492927058770002e-10)                                 # fdlibm's ln 2 split
_INV_LN2 = 1.44269504088896338700e+00
_SIN_C = tuple((-1) ** i / math.factorial(2 * i + 1) for i in range(10))  # Taylor, |r| <= pi/4: error < 1e-19
_COS_C = tuple((-1) ** i / math.factorial(2 * i) for i in range(10))
_EXP_C = tuple(1 / math.factorial(i) for i in range(15))                 # |r| <= ln2/2: error < 1e-18


def _poly(x: np.ndarray, coeffs: tuple[float, ...]) -> np.ndarray:
    """Horner's rule, one multiply and one add per step (never an FMA: separate ufuncs)."""
    acc = np.full_like(x, coeffs[-1])
    for c in coeffs[-2::-1]:
        acc = acc * x
        acc = acc + c
    return acc


def psincos(x) -> tuple[np.ndarray, np.ndarray]:
    """(sin x, cos x) in float64, bit-identical on every IEEE machine; accurate to ~1 ulp for |x| < 1e6."""
    x = np.asarray(x, dtype=np.float64)
    k = np.rint(x * _INV_PIO2)
    r = x - k * _PIO2[0]   # k * _PIO2[i] is exact (33-bit constants): Cody-Waite reduction to |r| <= pi/4
    r = r - k * _PIO2[1]
    r = r - k * _PIO2[2]
    r2 = r * r
    s, c = _poly(r2, _SIN_C) * r, _poly(r2, _COS_C)
    q = np.mod(k, 4.0)     # quadrant 0..3
    sin = np.where(q == 0, s, np.where(q == 1, c, np.where(q == 2, -s, -c)))
    cos = np.where(q == 0, c, np.where(q == 1, -s, np.where(q == 2, -c, s)))
    return sin, cos


def psin(x) -> np.ndarray:
    return psincos(x)[0]


def pcos(x) -> np.ndarray:
    return psincos(x)[1]


def pexp(x) -> np.ndarray:
    """exp in float64, bit-identical everywhere; inputs clipped to [-700, 700]."""
    x = np.clip(np.asarray(x, dtype=np.float64), -700.0, 700.0)
    k = np.rint(x * _INV_LN2)
    r = x - k * _LN2[0]
    r = r - k * _LN2[1]
    return np.ldexp(_poly(r, _EXP_C), k.astype(np.int32))  # ldexp scales by 2^k exactly


def plog(x) -> np.ndarray:
    """Natural log of positive float64 values, bit-identical everywhere (frexp + atanh series)."""
    m, e = np.frexp(np.asarray(x, dtype=np.float64))  # x = m * 2^e, m in [0.5, 1): exact
    low = m < 0.7071067811865476
    m = np.where(low, m * 2, m)                        # m in [0.707, 1.414)
    e = np.where(low, e - 1, e).astype(np.float64)
    s = (m - 1) / (m + 1)                              # |s| <= 0.172
    s2 = s * s
    series = _poly(s2, tuple(2 / (2 * i + 1) for i in range(12))) * s
    return e * _LN2[0] + (e * _LN2[1] + series)


def ppow(x, a: float) -> np.ndarray:
    return pexp(a * plog(x))


@dataclass(frozen=True)
class StepStyle:
    """How a surgical step looks; fixed across seeds so steps are learnable."""

    angle: float                       # vessel orientation (rad)
    freq: float                        # vessels per frame height
    region: tuple[float, float, float]  # fat/fascia region: centre x, y (fractions of the frame), radius (heights)
    tint: tuple[float, float, float]
    instruments: int
    motion_p: tuple[float, ...]        # motion-class mix of the primary instrument


def _step_styles() -> tuple[StepStyle, ...]:
    rng = np.random.default_rng(20240917)  # a constant: the same step looks alike in every case and seed
    tints = [(230, 190, 115), (215, 150, 140), (115, 28, 35), (205, 180, 170),
             (240, 210, 145), (165, 60, 95), (195, 125, 80), (150, 95, 100)]
    angles = np.linspace(0, math.pi, 8, endpoint=False)[rng.permutation(8)]
    freqs = np.array([1.2, 1.8, 2.4, 3.0, 3.6, 4.2, 5.0, 6.0])[rng.permutation(8)]
    counts = (1, 2, 2, 1, 2, 1, 2, 1)
    styles = []
    for i in range(len(STEP_CLASSES)):
        p = np.full(len(MOTION_CLASSES), 0.5 / (len(MOTION_CLASSES) - 2))  # each step favours two classes,
        p[[i, (i + 3) % len(MOTION_CLASSES)]] = 0.25                         # so over all steps they balance
        region = (float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.2, 0.4)))
        styles.append(StepStyle(float(angles[i]), float(freqs[i]), region, tints[i], counts[i], tuple(map(float, p))))
    return tuple(styles)


STEP_STYLES = _step_styles()


@dataclass(frozen=True)
class Step:
    start: float
    stop: float
    style: int                          # index into STEP_CLASSES / STEP_STYLES
    assist: tuple[float, float]         # the assisting (second) instrument's tip, in frame heights
    assist_jaw: float


@dataclass(frozen=True)
class Segment:
    """One motion class of the primary instrument; positions in frame heights, times in case seconds."""

    start: float
    stop: float
    motion: str
    p0: tuple[float, float]             # start (or circle centre)
    vel: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0
    omega: float = 0.0
    theta0: float = 0.0
    jaw: float = 0.0
    jaw_period: float = 2.0
    jaw_phase: float = 0.0
    tremor: tuple[float, float, float] = (0.003, 1.5, 0.0)  # amplitude, Hz, phase


@dataclass(frozen=True)
class Event:
    start: float
    stop: float
    kind: str                           # gauze | withdraw
    rest: tuple[float, float]           # gauze resting centre
    edge: int                           # 0 left, 1 right, 2 top: where gauze slides in from
    size: float
    seed: int


@dataclass(frozen=True)
class CasePlan:
    """Everything random about a case, decided before any pixel is drawn (labels need no rendering)."""

    case: str
    duration: float
    aspect: float
    steps: tuple[Step, ...]
    segments: tuple[Segment, ...]
    events: tuple[Event, ...]
    tissue: tuple[float, float, float]
    metal: tuple[float, float, float]
    angle_jitter: float
    entry: tuple[float, float]          # where the primary instrument enters (outside the frame)
    assist_entry: tuple[float, float]
    drift: tuple[float, float, float, float, float, float]  # amplitude x, y (heights), periods (s), phases
    texture_seed: int


def _working_area(aspect: float) -> tuple[float, float, float, float]:
    """A centred square: tips stay visible after a centre crop to a square."""
    return aspect / 2 - 0.42, aspect / 2 + 0.42, 0.1, 0.9


def _segment(rng: np.random.Generator, start: float, stop: float, motion: str, aspect: float) -> Segment:
    x0, x1, y0, y1 = _working_area(aspect)
    T = stop - start
    tremor = (float(rng.uniform(0.002, 0.004)), float(rng.uniform(1.0, 2.0)), float(rng.uniform(0, 2 * math.pi)))
    jaw = float(rng.uniform(0, 0.6 * JAW_MAX))
    if motion in _LINEAR:
        dx, dy = _LINEAR[motion]
        lo, hi = (x0, x1) if dx else (y0, y1)
        speed = min(float(rng.uniform(*SPEED)), 0.75 * (hi - lo) / T)
        travel = speed * T
        # start uniform over positions that keep the path inside: opposite directions share one marginal
        a = float(rng.uniform(lo, hi - travel)) if (dx + dy) > 0 else float(rng.uniform(lo + travel, hi))
        other = float(rng.uniform(y0, y1)) if dx else float(rng.uniform(x0, x1))
        p0 = (a, other) if dx else (other, a)
        return Segment(start, stop, motion, p0, (dx * speed, dy * speed), jaw=jaw, tremor=tremor)
    if motion.startswith("circle"):
        r = float(rng.uniform(0.07, 0.14))
        centre = (float(rng.uniform(x0 + r, x1 - r)), float(rng.uniform(y0 + r, y1 - r)))
        omega = 2 * math.pi / float(rng.uniform(2.0, 3.5)) * (1 if motion == "circle_cw" else -1)  # y points down
        return Segment(start, stop, motion, centre, radius=r, omega=omega, theta0=float(rng.uniform(0, 2 * math.pi)),
                       jaw=jaw, tremor=tremor)
    p0 = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
    return Segment(start, stop, motion, p0, jaw=jaw, jaw_period=float(rng.uniform(1.4, 2.4)),
                   jaw_phase=float(rng.uniform(0, 2 * math.pi)), tremor=tremor)


def _bounds(rng: np.random.Generator, duration: float) -> list[float]:
    b = [0.0]
    while b[-1] < duration:
        b.append(b[-1] + float(rng.uniform(*SEGMENT_S)))
    b[-1] = duration
    if len(b) > 2 and b[-1] - b[-2] < SEGMENT_S[0] / 2:
        del b[-2]
    return b


def _events(rng: np.random.Generator, duration: float, steps: list[Step], aspect: float) -> list[Event]:
    x0, x1, y0, y1 = _working_area(aspect)
    n = int(math.floor(duration * EVENTS_PER_S + rng.random()))
    events: list[Event] = []
    for _ in range(n):
        for _try in range(20):
            length = float(rng.uniform(*EVENT_S))
            if duration < length + 2:
                break
            start = float(rng.uniform(1.0, duration - length - 1.0))
            if all(start > e.stop + 3 or start + length < e.start - 3 for e in events):
                break
        else:
            continue
        if duration < length + 2:
            break
        stop = start + length
        inside = [s for s in steps if s.start <= start and stop <= s.stop]
        two = bool(inside) and STEP_STYLES[inside[0].style].instruments == 2
        kind = "withdraw" if two and rng.random() < 0.5 else "gauze"
        rest = (float(rng.uniform(x0 + 0.1, x1 - 0.1)), float(rng.uniform(y0 + 0.1, y1 - 0.1)))
        events.append(Event(start, stop, kind, rest, int(rng.integers(3)), float(rng.uniform(0.22, 0.36)),
                            int(rng.integers(2**31))))
    return sorted(events, key=lambda e: e.start)


def step_order(rng: np.random.Generator, n_seg: int) -> list[int]:
    """The steps of one case, in the order they happen: it varies between cases, as in real training sessions.

    A random subset of the steps (about one per three motion segments), each placed at its index in the official
    order plus Gaussian noise of ORDER_JITTER steps (neighbours swap, now and then a step moves further), then up
    to REVISITS returns to a step done earlier in the case, each with probability REVISIT_P (never next to
    itself). Every step keeps its own look, so a step's label stays learnable from its frames."""
    n = len(STEP_CLASSES)
    k = int(np.clip(round(n_seg / 3), 1, n))
    chosen = rng.choice(n, size=k, replace=False)
    order = [int(v) for v in chosen[np.argsort(chosen + rng.normal(0, ORDER_JITTER, k), kind="stable")]]
    for _ in range(REVISITS):
        if len(order) >= min(n_seg, 2 * k) or len(order) < 2 or rng.random() >= REVISIT_P:
            continue
        pos = int(rng.integers(2, len(order) + 1))  # insert before order[pos]: after at least two steps
        later = order[pos] if pos < len(order) else None
        earlier = sorted({v for v in order[:pos - 1]} - {order[pos - 1], later})
        if earlier:
            order.insert(pos, earlier[int(rng.integers(len(earlier)))])
    return order


def plan_case(seed: int, case: int, duration: float, aspect: float = 4 / 3, stream: str = "labelled") -> CasePlan:
    """Deterministic in (seed, case, stream, duration, aspect); rendering adds no randomness."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, case, _STREAMS[stream]]))
    bounds = _bounds(rng, duration)
    n_seg = len(bounds) - 1
    chosen = step_order(rng, n_seg)
    k = len(chosen)
    least = 2 if n_seg >= 2 * k else 1
    sizes = least + rng.multinomial(n_seg - least * k, np.full(k, 1 / k)) if n_seg >= k else np.ones(n_seg, int)
    x0, x1, y0, y1 = _working_area(aspect)
    steps, segments, i = [], [], 0
    for style, size in zip(chosen, sizes):
        steps.append(Step(bounds[i], bounds[i + size], int(style),
                          (float(rng.uniform(x0, (x0 + x1) / 2)), float(rng.uniform(y0 + 0.1, y1))),
                          float(rng.uniform(0, 0.5 * JAW_MAX))))
        p = np.array(STEP_STYLES[style].motion_p)
        for j in range(i, i + size):
            motion = MOTION_CLASSES[int(rng.choice(len(MOTION_CLASSES), p=p))]
            segments.append(_segment(rng, bounds[j], bounds[j + 1], motion, aspect))
        i += size
    tissue = tuple(float(c) for c in np.clip(np.array([178.0, 68.0, 60.0]) * rng.uniform(0.85, 1.1)
                                             + rng.normal(0, 10, 3), 20, 235))
    metal = tuple(float(c) for c in np.clip(160 + rng.normal(0, 8) + rng.normal(0, 3, 3), 120, 200))  # x1.2 <= 255
    drift = (float(rng.uniform(0.03, 0.07)), float(rng.uniform(0.03, 0.07)), float(rng.uniform(12, 25)),
             float(rng.uniform(12, 25)), float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi)))
    entry = (aspect + float(rng.uniform(0.2, 0.3)), float(rng.uniform(1.1, 1.3)))
    assist_entry = (-float(rng.uniform(0.2, 0.3)), float(rng.uniform(0.5, 1.1)))
    events = _events(rng, duration, steps, aspect)
    return CasePlan(f"case_{case:03d}", duration, aspect, tuple(steps), tuple(segments), tuple(events), tissue,
                    metal, float(rng.normal(0, 0.12)), entry, assist_entry, drift, int(rng.integers(2**31)))


def tip_track(plan: CasePlan, times: np.ndarray) -> np.ndarray:
    """Primary instrument (x, y, jaw) at `times`; x, y in frame heights. Also what tests check motion against."""
    times = np.asarray(times, dtype=np.float64)
    out = np.zeros((len(times), 3))
    starts = np.array([s.start for s in plan.segments])
    idx = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(starts) - 1)
    for k, seg in enumerate(plan.segments):
        m = idx == k
        if not m.any():
            continue
        t = times[m] - seg.start
        if seg.motion.startswith("circle"):
            th = seg.theta0 + seg.omega * t
            sin, cos = psincos(th)
            x, y = seg.p0[0] + seg.radius * cos, seg.p0[1] + seg.radius * sin
        else:
            x, y = seg.p0[0] + seg.vel[0] * t, seg.p0[1] + seg.vel[1] * t
        amp, hz, ph = seg.tremor
        x = x + amp * psin(2 * math.pi * hz * t + ph)
        y = y + amp * psin(2 * math.pi * hz * 1.31 * t + 2 * ph)
        jaw = (JAW_MAX * (0.5 - 0.5 * pcos(2 * math.pi * t / seg.jaw_period + seg.jaw_phase))
               if seg.motion == "grasp" else np.full_like(t, seg.jaw))
        out[m] = np.stack([x, y, jaw], axis=1)
    return out


# ---------------------------------------------------------------- drawing (pixels)


def _box_width(sigma_px: float) -> int:
    """Odd width of a box filter that, applied 3 times, has about the variance of a Gaussian of `sigma_px`."""
    return 2 * int(round((math.sqrt(4 * sigma_px * sigma_px + 1) - 1) / 2)) + 1


def _box_wrap(a: np.ndarray, width: int, axis: int) -> np.ndarray:
    """Sum over a centred window of `width` (odd) along `axis`, wrapping around: integer in, integer out (exact)."""
    n, r = a.shape[axis], width // 2
    padded = np.take(a, np.arange(-r - 1, n + r) % n, axis=axis)  # one extra leading element for the difference
    c = np.cumsum(padded, axis=axis)
    return np.take(c, np.arange(width, n + width), axis=axis) - np.take(c, np.arange(0, n), axis=axis)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigma_px: float) -> np.ndarray:
    """Smoothed white noise, zero mean and unit variance, periodic: organic texture without scipy.

    Integer white noise blurred by three box filters per axis in int64 (exact on every CPU; a Gaussian blur by
    FFT would use libm's sin/cos twiddles and numpy's CPU-dependent exp), then standardised in float64."""
    out = rng.integers(-512, 512, size=(h, w), dtype=np.int64)
    k = _box_width(sigma_px)
    if k > 1:
        for axis in (0, 1):
            for _ in range(3):
                out = _box_wrap(out, k, axis)   # |values| < 512 * k^6 < 2^53: exact in float64 below
    x = out.astype(np.float64)
    x = x - x.mean()
    return (x / (x.std() + 1e-8)).astype(np.float32)


def _tissue(plan: CasePlan, style_index: int, h: int, w: int, H: int, W_: int) -> np.ndarray:
    """A (h, w) tissue texture for one step; the endoscope's vignette is baked in (drift is small)."""
    style = STEP_STYLES[style_index]
    rng = np.random.default_rng([plan.texture_seed, style_index, H])
    big, mid, fine = (_smooth_noise(rng, h, w, s * H) for s in (0.12, 0.03, 0.006))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / H
    ang = style.angle + plan.angle_jitter
    sin_a, cos_a = (float(v) for v in psincos(ang))
    u = xx * np.float32(cos_a) + yy * np.float32(sin_a)
    phase = 2 * math.pi * style.freq * u.astype(np.float64) + 1.8 * big + rng.uniform(0, 6.3)
    vessel = pexp(-np.square(psin(phase)) / 0.03).astype(np.float32)
    shade = (1 + 0.16 * big + 0.07 * mid + 0.04 * fine)[..., None]
    img = np.array(plan.tissue, np.float32) * shade
    img = img * (1 - 0.5 * vessel[..., None]) + vessel[..., None] * np.array([95, 25, 55], np.float32) * 0.5
    cx, cy, r = style.region
    ex, ey = xx - np.float32(cx * w / H), yy - np.float32(cy * h / H)
    d = np.sqrt(ex * ex + ey * ey) / np.float32(r) + 0.15 * mid
    region = (1 / (1 + pexp(np.clip((d - 1) / 0.06, -30, 30)))).astype(np.float32)[..., None]
    tint = (np.array(style.tint, np.float64)
            * ppow(np.array(plan.tissue, np.float64) / np.array([178, 68, 60]), 0.3)).astype(np.float32)
    img = img * (1 - 0.75 * region) + 0.75 * region * tint * shade
    spec = np.clip((fine + 0.6 * mid - 3.0) * 2.5, 0, 1)[..., None]
    img = img * (1 - spec) + 250 * spec
    vignette = 1 - 0.4 * (((xx - w / H / 2) / (0.75 * W_ / H)) ** 2 + ((yy - h / H / 2) / 0.75) ** 2)
    return np.clip(img * vignette[..., None], 0, 255).astype(np.float32)


def _bar(shape: tuple[int, int], a: np.ndarray, b: np.ndarray, r: float, soft: float = 0.5, block: int = 32) -> list:
    """Coverage (alpha) and across-bar coordinate (-1..1) of a round-ended bar a->b, in bands of `block` rows.

    Bands keep a diagonal shaft's work near the bar instead of its whole bounding box; in-place ops because
    drawing dominates generation time.
    """
    f32 = np.float32
    H, W = shape
    dx, dy = float(b[0] - a[0]), float(b[1] - a[1])
    L = math.sqrt(dx * dx + dy * dy) + 1e-6
    ux, uy = dx / L, dy / L
    pad = r + 2
    y0, y1 = max(int(min(a[1], b[1]) - pad), 0), min(int(max(a[1], b[1]) + pad + 1), H)
    k, rs, inv_r = f32(1 / (2 * soft)), f32(r + soft), f32(1 / max(r, 1e-3))
    pieces = []
    for yb in range(y0, y1, block):
        ye = min(yb + block, y1)
        if abs(dy) > 1e-6:
            ta, tb = sorted(((yb - pad - a[1]) / dy, (ye + pad - a[1]) / dy))
            xa, xb = sorted((a[0] + max(ta, 0.0) * dx, a[0] + min(tb, 1.0) * dx))
        else:
            xa, xb = sorted((a[0], b[0]))
        x0, x1 = max(int(xa - pad), 0), min(int(xb + pad + 1), W)
        if x0 >= x1:
            continue
        px = np.arange(x0, x1, dtype=f32) + f32(0.5 - a[0])
        py = np.arange(yb, ye, dtype=f32)[:, None] + f32(0.5 - a[1])
        across = (px * f32(uy))[None, :] - py * f32(ux)
        along = (px * f32(ux))[None, :] + py * f32(uy)
        along -= f32(L / 2)
        np.abs(along, out=along)
        along -= f32(L / 2)
        np.maximum(along, 0, out=along)          # distance past either end, along the bar
        along *= along
        alpha = across * across
        alpha += along
        np.sqrt(alpha, out=alpha)
        np.subtract(rs, alpha, out=alpha)
        alpha *= k
        np.maximum(alpha, 0, out=alpha)          # (ufuncs: np.clip's Python overhead costs more here)
        np.minimum(alpha, 1, out=alpha)
        across *= inv_r
        pieces.append((yb, x0, alpha, across))
    return pieces


def _gbr(rgb) -> np.ndarray:
    """Frames are drawn as planar G, B, R uint8 planes: ffmpeg's gbrp, and long inner loops for numpy."""
    r, g, b = rgb
    return np.array([g, b, r], np.float32)


def _paint(img: np.ndarray, pieces: list, color: np.ndarray, shadow: tuple[int, int] | None = None) -> None:
    """Alpha-blend a cylinder-shaded bar into planar uint8 `img`; `shadow` (dy, dx) first darkens an offset copy."""
    _, H, W = img.shape
    if shadow is not None:
        for y0, x0, alpha, _ in pieces:
            h, w = alpha.shape
            sy, sx = y0 + shadow[0], x0 + shadow[1]
            ys, xs, ye, xe = max(sy, 0), max(sx, 0), min(sy + h, H), min(sx + w, W)
            if ys < ye and xs < xe:
                region = img[:, ys:ye, xs:xe]
                np.copyto(region, region * (1 - np.float32(0.4) * alpha[ys - sy:ye - sy, xs - sx:xe - sx]),
                          casting="unsafe")
    color = color[:, None, None]
    for y0, x0, alpha, s in pieces:
        h, w = alpha.shape
        np.minimum(s, 1, out=s)
        np.maximum(s, -1, out=s)
        s *= s
        s *= np.float32(-0.7)
        s += np.float32(1.2)                     # light: bright along the middle of the cylinder
        s *= alpha
        region = img[:, y0:y0 + h, x0:x0 + w]
        out = region * (1 - alpha)
        out += s * color
        np.copyto(region, out, casting="unsafe")  # blends of values in 0..255 stay in range


def _instrument(img: np.ndarray, entry: np.ndarray, tip: np.ndarray, jaw: float, H: int, metal: np.ndarray) -> None:
    """Shaft from outside the frame to the wrist (with its shadow), a dark wrist, two jaws opened by `jaw` rad."""
    d = tip - entry
    d = d / (math.sqrt(float(d[0]) * float(d[0]) + float(d[1]) * float(d[1])) + 1e-9)  # not BLAS: CPU-free
    wrist = tip + WRIST_L * H * d
    shape = img.shape[1:]
    shadow = (int(round(0.045 * H)), int(round(0.03 * H)))
    _paint(img, _bar(shape, entry, tip, SHAFT_R * H), metal, shadow)
    _paint(img, _bar(shape, tip, wrist, SHAFT_R * H * 0.9), _WRIST)
    for sign in (-1, 1):
        s, c = (float(v) for v in psincos(sign * jaw / 2))
        j = np.array([d[0] * c - d[1] * s, d[0] * s + d[1] * c])
        _paint(img, _bar(shape, wrist, wrist + JAW_L * H * j, JAW_R * H), metal * 0.75)


_WRIST = _gbr((48, 48, 52))


def _gauze(event: Event, H: int) -> np.ndarray:
    """Planar G, B, R, alpha float32 sprite of a crumpled gauze swab, sometimes blood-stained."""
    rng = np.random.default_rng([event.seed, H])
    n = max(int(event.size * H), 4)
    yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) + 0.5) / n - 0.5
    warp = _smooth_noise(rng, n, n, 0.12 * n)
    yy12 = yy * np.float32(1.2)
    alpha = np.clip((0.42 - np.sqrt(xx * xx + yy12 * yy12) + 0.06 * warp) * n / 2, 0, 1)
    weave = (0.93 + 0.04 * (psin(xx * n * 1.6) * psin(yy * n * 1.6)).astype(np.float32)
             + 0.03 * _smooth_noise(rng, n, n, 1.0))
    gbr = _gbr((240, 238, 230))[:, None, None] * weave
    stain = np.clip(_smooth_noise(rng, n, n, 0.1 * n) - rng.uniform(0.8, 2.5), 0, 1)
    gbr = gbr * (1 - 0.6 * stain) + 0.6 * stain * _gbr((150, 30, 35))[:, None, None]
    return np.concatenate([np.clip(gbr, 0, 255), alpha[None]], axis=0).astype(np.float32)


def _paste(img: np.ndarray, sprite: np.ndarray, cx: float, cy: float) -> None:
    _, H, W = img.shape
    n = sprite.shape[1]
    x, y = int(round(cx - n / 2)), int(round(cy - n / 2))
    sx0, sy0, dx0, dy0 = max(0, -x), max(0, -y), max(x, 0), max(y, 0)
    w, h = min(n - sx0, W - dx0), min(n - sy0, H - dy0)
    if w <= 0 or h <= 0:
        return
    s = sprite[:, sy0:sy0 + h, sx0:sx0 + w]
    region = img[:, dy0:dy0 + h, dx0:dx0 + w]
    np.copyto(region, region + s[3] * (s[:3] - region), casting="unsafe")


def _ramp(t: float, start: float, stop: float, ramp: float = 0.5) -> float:
    """0 outside [start, stop], rising to 1 over `ramp` s at each end: how far in/out an event is."""
    if t < start or t >= stop:
        return 0.0
    return float(min(1.0, (t - start) / ramp, (stop - t) / ramp))


def _frames_gbrp(plan: CasePlan, width: int, height: int, fps: float, start_s: float = 0.0,
                 n_frames: int | None = None) -> Iterator[np.ndarray]:
    """Planar uint8 (3, H, W) frames in G, B, R order (ffmpeg's gbrp)."""
    H, W = height, width
    if n_frames is None:
        n_frames = int(round((plan.duration - start_s) * fps))
    margin = int(math.ceil(0.08 * H)) + 2
    textures: dict[int, np.ndarray] = {}
    sprites: dict[int, np.ndarray] = {}
    times = start_s + np.arange(n_frames) / fps
    track = tip_track(plan, times)
    ax, ay, px, py, phx, phy = plan.drift
    metal = _gbr(plan.metal)
    entry, assist_entry = np.array(plan.entry) * H, np.array(plan.assist_entry) * H
    step_starts = np.array([s.start for s in plan.steps])

    def tissue(style: int) -> np.ndarray:
        if style not in textures:
            rgb = _tissue(plan, style, H + 2 * margin, W + 2 * margin, H, W)
            textures[style] = np.ascontiguousarray(np.rint(rgb).astype(np.uint8).transpose(2, 0, 1)[[1, 2, 0]])
        return textures[style]

    for i, t in enumerate(times):
        k = min(max(int(np.searchsorted(step_starts, t, side="right")) - 1, 0), len(plan.steps) - 1)
        step = plan.steps[k]
        ox = margin + int(round(min(ax * H, margin) * float(psin(2 * math.pi * t / px + phx))))
        oy = margin + int(round(min(ay * H, margin) * float(psin(2 * math.pi * t / py + phy))))
        img = tissue(step.style)[:, oy:oy + H, ox:ox + W].copy()
        # cross-fade 1 s around step changes: the camera moves on to the next site
        for other in (k - 1, k + 1):
            if 0 <= other < len(plan.steps):
                edge = plan.steps[k].start if other < k else plan.steps[k].stop
                w_other = 0.5 - abs(t - edge)
                if w_other > 0:
                    blend = img + np.float32(w_other) * (tissue(plan.steps[other].style)[:, oy:oy + H, ox:ox + W]
                                                         - img.astype(np.float32))
                    np.copyto(img, blend, casting="unsafe")
        withdraw = 0.0
        for e_i, ev in enumerate(plan.events):
            amount = _ramp(t, ev.start, ev.stop)
            if ev.start <= t < ev.stop and ev.kind == "gauze":
                if e_i not in sprites:
                    sprites[e_i] = _gauze(ev, H)
                rest = np.array(ev.rest) * H
                out = rest.copy()
                out[0 if ev.edge < 2 else 1] = [-0.6 * ev.size * H, W + 0.6 * ev.size * H, -0.6 * ev.size * H][ev.edge]
                pos = out + amount * (rest - out)
                _paste(img, sprites[e_i], pos[0], pos[1])
            elif ev.kind == "withdraw":
                withdraw = max(withdraw, amount)
        if STEP_STYLES[step.style].instruments == 2 and withdraw < 0.97:
            a = np.array(step.assist) * H + 0.003 * H * float(psin(2.1 * t + k))
            _instrument(img, assist_entry, a + withdraw * (assist_entry - a), step.assist_jaw, H, metal * 0.92)
        x, y, jaw = track[i]
        _instrument(img, entry, np.array([x, y]) * H, float(jaw), H, metal)
        yield img


def render_case(plan: CasePlan, width: int, height: int, fps: float, start_s: float = 0.0,
                n_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield uint8 RGB (height, width, 3) frames at `fps` from `start_s`; deterministic, no ffmpeg needed."""
    for frame in _frames_gbrp(plan, width, height, fps, start_s, n_frames):
        yield np.ascontiguousarray(frame[[2, 0, 1]].transpose(1, 2, 0))


def case_frames(plan: CasePlan, width: int, height: int, fps: float) -> np.ndarray:
    """All frames of a case as one uint8 (T, H, W, 3) array, for in-process pretraining without ffmpeg."""
    return np.stack(list(render_case(plan, width, height, fps)))


def corpus_frames(seed: int, case: int, seconds: float, width: int, height: int, fps: float) -> np.ndarray:
    """One unlabelled pretraining case in memory; its random stream never overlaps the labelled dataset's."""
    return case_frames(plan_case(seed, case, seconds, width / height, stream="corpus"), width, height, fps)


# ---------------------------------------------------------------- files: mp4 parts + SurgVU-style label CSVs


def _check_size(width: int, height: int) -> None:
    if width % 2 or height % 2:
        raise ValueError(f"synthetic width and height must be even for H.264 yuv420p (got {width}x{height})")


def encode_mp4(frames: Iterator[np.ndarray], path: Path, width: int, height: int, fps: float,
               pix_fmt: str = "rgb24", simd: bool = True) -> int:
    """Pipe raw uint8 frames (rgb24 HWC, or gbrp planar) into libx264 and return how many were written.

    The same frames give the same file on every x86-64 CPU: a bit-exact swscale conversion to yuv420p, x264's
    cpu-independent mode, one thread, no timestamps or metadata (surgwm/data/ffmpeg.py says what each flag fixed,
    as measured). `simd=False` runs the same encode on ffmpeg's and x264's C paths only (slow; for tests)."""
    x264 = list(X264_REPRODUCIBLE)
    if not simd:
        x264[1] += ":" + X264_NO_ASM
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *(() if simd else NO_SIMD),
           "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "-",
           "-an", "-filter_threads", "1", "-vf", f"scale=flags={SWS_FLAGS},format=yuv420p",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", *x264, "-movflags", "+faststart", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    n = 0
    try:
        for frame in frames:
            proc.stdin.write(frame.tobytes())
            n += 1
    except BrokenPipeError:
        pass
    finally:
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {path} (exit {proc.returncode}): {err.strip()[-500:]}")
    return n


def _part_time(t: float, part_s: float, parts: int, is_stop: bool) -> tuple[int, float]:
    """Case seconds -> (1-based part, seconds in that part); a stop on a boundary stays in the earlier part."""
    p = math.ceil(t / part_s - 1e-9) if is_stop else math.floor(t / part_s + 1e-9) + 1
    p = min(max(p, 1), parts)
    return p, round(t - (p - 1) * part_s, 3)


def label_rows(plan: CasePlan, parts: int, part_s: float) -> dict[str, list[dict[str, object]]]:
    """tasks.csv / motion.csv / events.csv rows (SurgVU columns: intervals may span parts)."""
    def span(start: float, stop: float) -> dict[str, object]:
        sp, st = _part_time(start, part_s, parts, False)
        ep, et = _part_time(stop, part_s, parts, True)
        return {"start_part": sp, "start_time": st, "stop_part": ep, "stop_time": et}

    return {
        "tasks.csv": [span(s.start, s.stop) | {"groundtruth_taskname": STEP_CLASSES[s.style]} for s in plan.steps],
        "motion.csv": [span(s.start, s.stop) | {"label": s.motion} for s in plan.segments],
        "events.csv": [span(e.start, e.stop) | {"label": EVENT_LABEL, "kind": e.kind} for e in plan.events],
    }


def _write_csv(path: Path, rows: list[dict[str, object]], columns: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def part_frames(part_seconds: float, fps: float) -> int:
    return max(int(round(part_seconds * fps)), 1)


def write_case(root: Path, plan: CasePlan, parts: int, width: int, height: int, fps: float,
               labels: bool = True, simd: bool = True) -> list[Path]:
    """Render one case continuously and cut it into part files; labels go to root/labels/<case>/.
    `simd=False` encodes on ffmpeg's and x264's C paths (the same bytes, slower: for tests)."""
    _check_size(width, height)
    n = part_frames(plan.duration / parts, fps)
    frames = _frames_gbrp(plan, width, height, fps, n_frames=n * parts)
    paths = []
    for p in range(1, parts + 1):
        path = root / plan.case / f"{plan.case}_video_part_{p:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        encode_mp4(itertools.islice(frames, n), path, width, height, fps, pix_fmt="gbrp", simd=simd)
        paths.append(path)
    if labels:
        rows = label_rows(plan, parts, n / fps)
        for name, columns in (("tasks.csv", TASK_COLUMNS), ("motion.csv", PART_COLUMNS),
                              ("events.csv", PART_COLUMNS + ("kind",))):
            _write_csv(root / "labels" / plan.case / name, rows[name], columns)
    return paths


def _run_cases(root: Path, seed: int, cases: int, stream: str, parts: int, part_seconds: float, width: int,
               height: int, fps: float, labels: bool, progress: bool, desc: str) -> list[Path]:
    """Cases one after another: drawing (numpy) and x264 already keep two cores busy, so no process pool."""
    from tqdm import tqdm

    _check_size(width, height)
    n = part_frames(part_seconds, fps)
    paths: list[Path] = []
    for case in tqdm(range(cases), unit="case", desc=desc, disable=not progress):
        plan = plan_case(seed, case, n * parts / fps, width / height, stream=stream)
        paths += write_case(Path(root), plan, parts, width, height, fps, labels=labels)
    return paths


def generate_dataset(root: Path, seed: int = 0, cases: int = 12, parts_per_case: int = 2, part_seconds: float = 30.0,
                     width: int = 320, height: int = 240, fps: float = 30, progress: bool = False) -> Path:
    """The labelled dataset in the SurgVU layout: root/case_XXX/*.mp4 and root/labels/case_XXX/*.csv."""
    root = Path(root)
    _run_cases(root, seed, cases, "labelled", parts_per_case, part_seconds, width, height, fps, True, progress,
               "synthesize")
    info = {"seed": seed, "cases": cases, "parts_per_case": parts_per_case,
            "part_seconds": part_frames(part_seconds, fps) / fps, "width": width, "height": height, "fps": fps,
            "motion_classes": list(MOTION_CLASSES), "step_classes": list(STEP_CLASSES), "event_label": EVENT_LABEL,
            "step_styles": {STEP_CLASSES[i]: asdict(s) for i, s in enumerate(STEP_STYLES)}}
    (root / "synthetic.json").write_text(json.dumps(info, indent=1) + "\n")
    return root


def generate_corpus(out_dir: Path, seed: int, cases: int, parts_per_case: int = 1, part_seconds: float = 30.0,
                    width: int = 320, height: int = 240, fps: float = 30, progress: bool = False) -> list[Path]:
    """An unlabelled pretraining corpus of the same kind (mp4s only, same layout) from its own random stream."""
    return _run_cases(Path(out_dir), seed, cases, "corpus", parts_per_case, part_seconds, width, height, fps, False,
                      progress, "corpus")
