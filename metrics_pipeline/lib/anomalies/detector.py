"""An online anomaly detector per series: four views of each point, ranked against the series' own past.

Every point is looked at four ways ("views"), each a number compared with the history of that same number
for this series:
- **spike**: the value minus the median of the 8 samples before it (a jump, a spike, a drop);
- **level**: the mean of the last 24 values (a level shift, a drift, a value outside the usual range);
- **seasonal**: the value minus the median of the values at the same time 1, 2 and 3 days and 1 week
  earlier, when the series has that history (a missing daily peak, an unusual hour for a busy service);
- **burst**: the mean evidence of the spike and seasonal views over the last 12 points (a run of moderately
  unusual points, more spikes than usual, noise that changes character).

A view's history is a histogram of its past numbers (on an ``asinh`` scale: linear near zero, 5 % wide
bins for large deviations, from 1e-17 to 1e17 of the series' own unit) whose counts fade with a memory of
``memory`` samples (4 weeks of 5-minute buckets). A point's number gets its two-sided tail probability from
the histogram (one-sided for burst), and past the most extreme value ever seen an exponential tail in
``asinh`` space, i.e. a power law, fitted on the outer 1 %. No distribution is assumed: a spiky count, a
square wave and a noisy gauge are each judged against what is normal for them, and a view that does not fit
a series (the seasonal one without a daily pattern) has a wide histogram and says little. Anomalies enter the
histograms like any other point, so a new normal stops being surprising as it accumulates.

The views' probabilities are combined with Fisher's method (``-2 sum ln p`` against chi-square): a point
that several views find unusual is more surprising than one only one view finds unusual. The surprise is
``-log10`` of that probability, divided by ``scale`` (10, so 1.0 reads "one in ten billion") and capped at 1.
The score reported is the surprise where it beats the highest of the last ``refractory`` points (a day of
5-minute buckets) by ``margin``, and half of it otherwise: an event fires once, at its start, not at every point while it
lasts. NAB rewards the earliest detection in a window and charges every detection outside one; an on-call
engineer wants one page per event. The surprise itself is returned too, for rules on persistence.

Cost and state: everything a point's result depends on lies in a bounded past (``reach`` samples: a week
plus one sample, for the weekly lag) or in the histograms, which change only at block boundaries (every
``block`` samples, counted from the series' first sample). So the state is the last ``reach`` samples, four
histograms, the statistics of the unfinished block and two short tails, and scoring in pieces gives the same
floats as scoring at once. Work per point is a few vectorised numpy operations; per block, one pass over the
histograms.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

DAY = 86_400.0
VIEWS = ("spike", "level", "seasonal", "burst")
NV = len(VIEWS)
SPIKE, LEVEL, SEASONAL, BURST = range(NV)

# Histogram on asinh(d / unit), bins of BIN_WIDTH centred on 0.
BIN_WIDTH = 0.05
CENTER = 800
BINS = 2 * CENTER + 1
TAIL = 0.01  # outer share of a histogram that fits the exponential tail beyond it
BAND = (0.005, 0.995)  # the band of normal values: these quantiles of the baseline view
EVIDENCE_CAP = 6.0  # a single point adds at most this much (-log10 p) to the burst view


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's parameters. The defaults are meant for any series; only ``step`` is per series.

    Attributes:
        step: sampling interval in seconds (300 for 5-minute buckets). Seasonal lags are counted in steps;
            a gap advances time by its length.
        spike_window: samples before a point whose median is its spike baseline.
        level_window: samples averaged by the level view.
        burst_window: points whose evidence the burst view averages.
        memory: samples after which a histogram count has faded to 1/e.
        block: histograms are updated every this many samples (cost; counted from the first sample).
        min_history: samples a view needs before it scores (warm-up).
        refractory: samples during which a new event needs a higher surprise than the last one.
        seasonal_days: daily lags of the seasonal view (and one week, if under ``max_history``).
        max_history: cap on the lags, so on the samples a state retains.
        scale: surprise (``-log10`` of the combined probability) that maps to 1.0.
        margin: how much a surprise must beat the highest of the last ``refractory`` points to fire again
            (0.05 of the scale: half a decade of probability, about three times rarer).
    """

    step: float = 300.0
    spike_window: int = 8
    level_window: int = 24
    burst_window: int = 12
    memory: float = 8064.0
    block: int = 128
    min_history: int = 96
    refractory: int = 288
    seasonal_days: int = 3
    max_history: int = 4096
    scale: float = 10.0
    margin: float = 0.05

    def __post_init__(self):
        if not (self.step > 0 and math.isfinite(self.step)):
            raise ValueError(f"step must be a positive number of seconds, not {self.step!r}")
        for name in ("spike_window", "level_window", "burst_window", "block", "min_history", "refractory"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.memory <= 0 or self.scale <= 0:
            raise ValueError("memory and scale must be positive")

    def lags(self) -> tuple[int, ...]:
        """Seasonal lags in samples: 1..seasonal_days days and a week, when a day is a whole number of
        at least 4 steps and the lag fits under ``max_history``."""
        per_day = DAY / self.step
        if per_day < 4 or abs(per_day - round(per_day)) > 1e-9:
            return ()
        per_day = int(round(per_day))
        lags = [d * per_day for d in range(1, self.seasonal_days + 1)] + [7 * per_day]
        return tuple(sorted({lag for lag in lags if lag < self.max_history}))

    def reach(self) -> int:
        """Samples before a point that its statistics may read."""
        return max([self.spike_window, self.level_window, *self.lags()]) + 1

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class DetectorState:
    """Everything the detector remembers of one series (``to_bytes``/``from_bytes`` to store it)."""

    config: DetectorConfig
    count: int = 0  # samples scored so far
    origin: float = 0.0  # timestamp (s) of the first sample
    last_tick: int = 0  # round((last timestamp - origin) / step)
    last_slot: int = 0  # the last sample's slot: ticks with gaps capped at reach + 1 and repeats moved on
    values: np.ndarray = field(default_factory=lambda: np.empty(0))  # the last `reach` samples
    slots: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    units: np.ndarray = field(default_factory=lambda: np.zeros(NV))  # per view; 0 until a deviation is seen
    counts: np.ndarray = field(default_factory=lambda: np.zeros((NV, BINS)))  # faded histogram counts
    pending: np.ndarray = field(default_factory=lambda: np.empty((NV, 0)))  # the unfinished block's statistics
    surprise: np.ndarray = field(default_factory=lambda: np.empty(0))  # the last `refractory` surprises
    evidence: np.ndarray = field(default_factory=lambda: np.empty(0))  # the last burst_window - 1 evidences


@dataclass
class Scores:
    """Per input point: ``score`` (in [0, 1], fired once per event), ``surprise`` (in [0, 1], every point of
    an event), the ``expected`` value and the band ``lower``..``upper`` of normal values (NaN while warming
    up and for a missing value, whose scores are 0)."""

    score: np.ndarray
    surprise: np.ndarray
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def new_state(config: DetectorConfig | None = None) -> DetectorState:
    """The state of a series never seen."""
    return DetectorState(config or DetectorConfig())


def score_series(timestamps, values, config: DetectorConfig | None = None) -> Scores:
    """Score a whole series from its first point (the batch command's path)."""
    return score(new_state(config), timestamps, values)[0]


def _seconds(timestamps) -> np.ndarray:
    arr = np.asarray(timestamps)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[ns]").astype(np.int64) / 1e9
    return arr.astype(float)


def _nan_median_rows(windows: np.ndarray) -> np.ndarray:
    """Median of each (short) row ignoring NaN; NaN for a row without a value."""
    ordered = np.sort(windows, axis=1)  # NaN sort last
    count = np.count_nonzero(~np.isnan(windows), axis=1)
    rows = np.arange(len(windows))
    lo = np.maximum((count - 1) // 2, 0)
    hi = np.minimum(count // 2, windows.shape[1] - 1)
    med = 0.5 * (ordered[rows, lo] + ordered[rows, hi])
    med[count == 0] = np.nan
    return med


def _row_sums(windows: np.ndarray) -> np.ndarray:
    """Sum of each row, NaN as 0, added column by column: the same floats whatever the number of rows
    (numpy's reductions may pair terms differently for different shapes, which would break resuming)."""
    total = np.zeros(len(windows))
    for j in range(windows.shape[1]):
        col = windows[:, j]
        total = total + np.where(np.isnan(col), 0.0, col)
    return total


def _statistics(x: np.ndarray, slots: np.ndarray, first: int, cfg: DetectorConfig):
    """The point views' statistics at positions ``first..`` of ``x`` (``(NV, n)``, NaN where a view cannot
    say; the burst row is filled later) and the spike and seasonal baselines (``(2, n)``).
    ``x[:first]`` holds at least ``cfg.reach()`` samples, or all of the series' past."""
    n = len(x) - first
    d = np.full((NV, n), np.nan)
    baseline = np.full((2, n), np.nan)
    k, m = cfg.spike_window, cfg.level_window
    lead = max(k, m)
    pad = np.concatenate((np.full(lead, np.nan), x))
    before = sliding_window_view(pad, k)[first + lead - k: first + lead - k + n]  # x[u-k .. u-1]
    baseline[0] = _nan_median_rows(before)
    d[SPIKE] = x[first:] - baseline[0]
    recent = sliding_window_view(pad, m)[first + lead - m + 1: first + lead - m + 1 + n]  # x[u-m+1 .. u]
    valid = np.count_nonzero(~np.isnan(recent), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d[LEVEL] = _row_sums(recent) / valid
    lags = cfg.lags()
    if lags:
        target = slots[first:, None] - np.asarray(lags)[None, :]
        idx = np.minimum(np.searchsorted(slots, target), len(slots) - 1)
        lagged = np.where(slots[idx] == target, x[idx], np.nan)
        baseline[1] = _nan_median_rows(lagged)
        d[SEASONAL] = x[first:] - baseline[1]
    return d, baseline


def _bin_index(y: np.ndarray) -> np.ndarray:
    """Histogram bin of each asinh-scaled statistic (NaN lands in the centre bin; callers mask it)."""
    i = np.floor(np.where(np.isnan(y), 0.0, y) * (1.0 / BIN_WIDTH) + 0.5)
    return np.clip(i, -CENTER, CENTER).astype(np.int64) + CENTER


def _units(units: np.ndarray) -> np.ndarray:
    return np.where(units > 0, units, 1.0)


def _tail_probability(counts, cum, units, d, one_sided: bool) -> np.ndarray:
    """Tail probability of each ``d`` (``(V, n)``) under each view's histogram (``(V, BINS)``): the
    histogram's share beyond it (half its own bin), and past the outermost occupied bin an exponential tail
    in asinh space fitted on the outer TAIL share of the histogram."""
    rows = np.arange(len(counts))[:, None]
    tot = cum[:, -1:]
    y = np.arcsinh(d / _units(units)[:, None])
    i = _bin_index(y)
    here = counts[rows, i]
    # A tie counts half on each side; one-sided (the burst view, where 0 is the calm mode) it counts whole.
    upper = (tot - cum[rows, i] + (1.0 if one_sided else 0.5) * here + 0.5) / (tot + 1)
    lower = (cum[rows, i] - here + 0.5 * here + 0.5) / (tot + 1)
    occupied = counts > 0
    top = (BINS - 1 - np.argmax(occupied[:, ::-1], axis=1))[:, None]
    bottom = np.argmax(occupied, axis=1)[:, None]
    q_hi = np.argmax(cum >= (1 - TAIL) * tot, axis=1)[:, None]
    q_lo = np.argmax(cum >= TAIL * tot, axis=1)[:, None]
    spread = np.log(np.maximum(TAIL * (tot + 1), math.e))
    beta_hi = np.maximum(top - q_hi, 1) * BIN_WIDTH / spread
    beta_lo = np.maximum(q_lo - bottom, 1) * BIN_WIDTH / spread
    upper = np.where(i > top, np.exp(-(y - (top - CENTER) * BIN_WIDTH) / beta_hi) * 0.5 / (tot + 1), upper)
    lower = np.where(i < bottom, np.exp(-((bottom - CENTER) * BIN_WIDTH - y) / beta_lo) * 0.5 / (tot + 1), lower)
    p = np.minimum(1.0, upper if one_sided else 2.0 * np.minimum(upper, lower))
    return np.where(np.isnan(d), 1.0, p)


def _quantiles(cum: np.ndarray, units: np.ndarray, q: float) -> np.ndarray:
    i = np.argmax(cum >= q * cum[:, -1:], axis=1)
    return _units(units) * np.sinh((i - CENTER) * BIN_WIDTH)


def _add_block(units: np.ndarray, counts: np.ndarray, block: np.ndarray, fade: float) -> None:
    """Fold one finished block's statistics (``(NV, block)``) into the histograms, in place. A view's unit
    is the median deviation of the first block in which it deviates at all."""
    valid = ~np.isnan(block)
    for v in np.flatnonzero(units == 0.0):
        nonzero = np.abs(block[v][valid[v] & (block[v] != 0)])
        if nonzero.size:
            units[v] = float(np.median(nonzero))
    counts *= fade
    flat = _bin_index(np.arcsinh(block / _units(units)[:, None])) + (np.arange(NV) * BINS)[:, None]
    counts += np.bincount(flat[valid], minlength=NV * BINS).reshape(NV, BINS)


def _fisher(p: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``-log10`` of Fisher's combined probability of the active views' ``p`` (``(NV, n)``)."""
    x = _row_sums(-np.log(np.maximum(p, 1e-300)).T)  # half the chi-square statistic
    term = np.ones(p.shape[1])
    total = np.ones(p.shape[1])
    for j in range(1, NV):  # survival of chi-square with 2k dof: exp(-x) * sum_{j<k} x^j / j!
        term = term * x / j
        total = total + np.where(j < active, term, 0.0)
    return np.maximum(0.0, (x - np.log(total)) / math.log(10)) + 0.0  # + 0.0: no -0.0 in the output


def score(state: DetectorState, timestamps, values) -> tuple[Scores, DetectorState]:
    """Score the next points of a series and return the state to resume from.

    Args:
        state: the series' state (``new_state(config)`` for a new series); it is not modified.
        timestamps: the points' times (epoch seconds or datetime64), in order. A gap advances the
            seasonal clock; a repeated or backward timestamp counts as the next step.
        values: their values; a NaN or infinite value is skipped (score 0, no expected value).

    Returns:
        ``(scores, state)``. Scoring a series in pieces, each with the state the previous piece returned,
        gives the same floats as scoring it at once; no score depends on a later point.
    """
    cfg = state.config
    t = _seconds(timestamps)
    x_all = np.asarray(values, dtype=float)
    if t.shape != x_all.shape or t.ndim != 1:
        raise ValueError("timestamps and values must be one-dimensional and of the same length")
    keep = np.isfinite(x_all) & np.isfinite(t)
    out = Scores(np.zeros(len(x_all)), np.zeros(len(x_all)), *(np.full(len(x_all), np.nan) for _ in range(3)))
    x, t = x_all[keep], t[keep]
    n = len(x)
    if n == 0:
        return out, state

    # Slots: the seasonal clock. Gaps advance it (capped: past the reach nothing is looked up anyway).
    reach = cfg.reach()
    origin = state.origin if state.count else float(t[0])
    ticks = np.floor((t - origin) / cfg.step + 0.5).astype(np.int64)
    steps = np.clip(np.diff(np.concatenate(([state.last_tick if state.count else ticks[0]], ticks))), 1, reach + 1)
    if not state.count:
        steps[0] = 0
    slots = (state.last_slot if state.count else 0) + np.cumsum(steps)
    xs = np.concatenate((state.values, x))
    ss = np.concatenate((state.slots, slots))
    d, baseline = _statistics(xs, ss, len(state.values), cfg)

    units, counts, pending = state.units.copy(), state.counts.copy(), state.pending
    evidence = state.evidence
    B, m = cfg.block, cfg.burst_window
    fade = math.exp(-B / cfg.memory)
    p = np.ones((NV, n))
    active = np.zeros(n, dtype=np.int64)
    expected, lower, upper = (np.full(n, np.nan) for _ in range(3))
    pos = 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        while pos < n:  # one block (or the part of it in this call) at a time
            in_block = (state.count + pos) % B
            take = min(B - in_block, n - pos)
            sl = slice(pos, pos + take)
            cum = np.cumsum(counts, axis=1)
            ready = cum[:, -1] >= cfg.min_history
            p[:BURST, sl] = _tail_probability(counts[:BURST], cum[:BURST], units[:BURST], d[:BURST, sl], False)
            ev = np.minimum(-np.log10(np.minimum(p[SPIKE, sl], p[SEASONAL, sl])), EVIDENCE_CAP)
            chain = np.concatenate((evidence, ev))
            if len(chain) >= m:
                means = _row_sums(sliding_window_view(chain, m)[-take:]) / m
                d[BURST, pos + take - len(means): pos + take] = means
            evidence = chain[max(0, len(chain) - (m - 1)):] if m > 1 else chain[:0]
            p[BURST:, sl] = _tail_probability(counts[BURST:], cum[BURST:], units[BURST:], d[BURST:, sl], True)
            p[~ready, sl] = 1.0
            active[sl] = (ready[:, None] & ~np.isnan(d[:, sl])).sum(axis=0)
            # Expected value and band: the baseline view (spike or seasonal) with the narrower band.
            lo, hi = _quantiles(cum, units, BAND[0]), _quantiles(cum, units, BAND[1])
            for width, k, v in sorted((hi[v] - lo[v], k, v) for k, v in ((0, SPIKE), (1, SEASONAL)) if ready[v]):
                e = baseline[k, sl]
                fill = np.isnan(expected[sl]) & ~np.isnan(e)
                expected[sl] = np.where(fill, e, expected[sl])
                lower[sl] = np.where(fill, e + lo[v], lower[sl])
                upper[sl] = np.where(fill, e + hi[v], upper[sl])
            pending = np.concatenate((pending, d[:, sl]), axis=1)
            if in_block + take == B:
                _add_block(units, counts, pending, fade)
                pending = np.empty((NV, 0))
            pos += take

    surprise = np.minimum(_fisher(p, active) / cfg.scale, 1.0)
    R = cfg.refractory
    chain = np.concatenate((np.full(R, -np.inf), state.surprise, surprise))
    prior = sliding_window_view(chain, R)[len(state.surprise): len(state.surprise) + n].max(axis=1)
    out.score[keep] = np.where(surprise > prior + cfg.margin, surprise, 0.5 * surprise)
    out.surprise[keep] = surprise
    out.expected[keep] = expected
    out.lower[keep] = np.minimum(lower, expected)
    out.upper[keep] = np.maximum(upper, expected)
    new = DetectorState(cfg, state.count + n, origin, int(ticks[-1]), int(slots[-1]), xs[-reach:].copy(),
                        ss[-reach:].copy(), units, counts, pending,
                        np.concatenate((state.surprise, surprise))[-R:], evidence.copy())
    return out, new


_ARRAYS = {"values": "<f8", "slots": "<i8", "units": "<f8", "counts": "<f8", "pending": "<f8", "surprise": "<f8",
           "evidence": "<f8"}
STATE_VERSION = 1


def state_to_dict(state: DetectorState) -> dict:
    """A JSON-able form of a state (arrays as base64 of little-endian bytes, so floats survive exactly)."""
    out = {"version": STATE_VERSION, "config": state.config.to_dict(), "count": state.count, "origin": state.origin,
           "last_tick": state.last_tick, "last_slot": state.last_slot}
    for name, dtype in _ARRAYS.items():
        arr = np.ascontiguousarray(getattr(state, name), dtype=dtype)
        out[name] = {"shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode("ascii")}
    return out


def state_from_dict(data: dict) -> DetectorState:
    """The state ``state_to_dict`` wrote."""
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"detector state version {data.get('version')!r} is not {STATE_VERSION}")
    arrays = {name: np.frombuffer(base64.b64decode(data[name]["data"]), dtype=dtype).reshape(data[name]["shape"]).copy()
              for name, dtype in _ARRAYS.items()}
    arrays = {k: v.astype(np.int64 if k == "slots" else float) for k, v in arrays.items()}
    return DetectorState(DetectorConfig(**data["config"]), int(data["count"]), float(data["origin"]),
                         int(data["last_tick"]), int(data["last_slot"]), **arrays)


def state_to_bytes(state: DetectorState) -> bytes:
    """A compact form of a state (zlib-compressed JSON; a few kilobytes to a few tens of kilobytes)."""
    return zlib.compress(json.dumps(state_to_dict(state), separators=(",", ":")).encode("ascii"), 6)


def state_from_bytes(blob: bytes) -> DetectorState:
    """The state ``state_to_bytes`` wrote."""
    return state_from_dict(json.loads(zlib.decompress(blob)))
