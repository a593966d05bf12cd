"""Reads the Particle status LED from samples of three on/off light sensors: the colour, the pattern and
its frequency, the panic code of a red SOS, how sure that is, and how much longer to watch if it is not.

Samples may come at any rate from 40 Hz up, at uneven intervals, each time off by up to ``JITTER_S``,
with isolated one-channel flips (``NOISE_RATE``). How it reads them (all times in device seconds):

1. The colour is the most common lit state. Samples that are neither it nor dark are noise, unless
   there are too many: then the LED changed colour while watched and only a red SOS can still be read.
2. Every sample becomes lit or dark (by which of the two it is closer to) and each candidate pattern
   (off, solid, the three blinks, breathing, and for red the SOS of every code) is fitted at its best
   phase, counting the samples it cannot explain even with their time moved by ``JITTER_S``.
3. The reading is sure when the best candidate explains all but ``_allowance(n)`` samples, every rival
   needs at least ``MARGIN`` more unexplained samples, and the window shows enough of the pattern
   (``EVIDENCE_RUNS`` edge-to-edge runs). Otherwise it says what it probably is and ``needs_more_s``.
4. An SOS code is reported only when one cycle was watched whole: the dark before the first S, the
   S-O-S, the code flashes and 800 ms of dark after the last one, with no hole in the samples longer
   than ``MAX_GAP_S``, and the code fits clearly better than one flash fewer or more.

The bootloader's 5 Hz and 10 Hz toggling is the same waveform as blink-normal and blink-fast, and is
reported so: the colour tells DFU (yellow) from safe-mode selection (magenta).

    >>> yellow_5hz = [LedSample(i / 50, i % 10 < 5, i % 10 < 5, False) for i in range(100)]
    >>> reading = classify(yellow_5hz)
    >>> reading.colour, reading.pattern, reading.frequency_hz, reading.sure
    ('yellow', 'blink-normal', 5.0, True)
    >>> reading.describe()
    'blinking yellow (5 Hz): DFU mode (the bootloader is waiting for firmware over USB)'
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, NamedTuple

from hw.led_signals import (
    ALL_PATTERNS,
    COLOUR_NAMES,
    DEFAULT_THRESHOLD,
    PATTERNS,
    SOS_CODES,
    SOS_COLOUR,
    breathing_lit_ms,
    lit_intervals_ms,
    meaning,
    sos_cycle_ms,
    sos_flashes_ms,
    sos_readable_ms,
)

JITTER_S = 0.005  # how far a sample's time may be from when it was really taken, either way
NOISE_RATE = 0.01  # isolated one-channel flips per sample that the classifier shrugs off
MAX_GAP_S = 0.1  # a longer hole between samples could hide an SOS flash: the cycle was not watched whole
MARGIN = 5  # a rival that leaves this many more samples unexplained is ruled out
BREATHING_SLACK_S = 0.05  # breathing edges may sit this far from the threshold model (comparator drift)
SETTLE_S = 0.1  # past the last edge a pattern needs, enough samples to be sure of it at 40 Hz
MIN_MORE_S = 0.25  # the least "watch longer" worth asking for

_MAX_TIME_S = 1e12  # no clock reads more (30,000 years); beyond it a time is garbage
_TOLERANCE_S = JITTER_S + 0.001  # a millisecond more than the jitter, for rounding
_SOS_SEARCH_S = 0.06  # how far an SOS anchor's phase may be off (edge estimates at 40 Hz, one noisy edge)
_SOS_PRE_DARK_S = 0.1  # the dark a whole cycle's template expects before its first S
_SOS_SEEN_BEFORE_S = 0.01  # a sample at least this long before the first S: its rising edge was watched
_SOS_EDGE_S = 1.05  # an SOS is dark at most 1.1 s between flashes: the fit looks this far past red
_SOS_LONGEST_DARK_S = 1.25  # more dark than that between red flashes: a new SOS (the device rebooted)
_PERIODIC = ("blink-fast", "blink-normal", "blink-slow", "breathing")
_ORDER = ("off", "solid", *_PERIODIC, "sos")  # ties go to the simpler reading
#: Edge-to-edge runs (lit or dark) a periodic pattern must show before the reading is sure of it.
EVIDENCE_RUNS: dict[str, int] = {"blink-fast": 10, "blink-normal": 6, "blink-slow": 6, "breathing": 1}


class LedSample(NamedTuple):
    """One reading of the three sensors: ``t`` in seconds (the clock's time) and each channel lit or not.

    >>> LedSample(12.5, True, True, False)  # yellow, 12.5 s into the clock
    LedSample(t=12.5, r=True, g=True, b=False)
    """

    t: float
    r: bool
    g: bool
    b: bool


# --- how long to watch -------------------------------------------------------------------------------


def _structural_watch_s(pattern: str, threshold: float) -> float:
    """Worst-case seconds (any phase) until the evidence a pattern needs has been shown."""
    dark_from, lit_again = breathing_lit_ms(threshold)
    breath_lit, breath_dark = (dark_from + 4000 - lit_again) / 1000, (lit_again - dark_from) / 1000
    if pattern == "off":  # darker for longer than breathing's dark part could be, by MARGIN samples at 40 Hz
        return breath_dark + 2 * (_TOLERANCE_S + BREATHING_SLACK_S) + MARGIN / 40
    if pattern == "solid":
        return breath_lit + 2 * (_TOLERANCE_S + BREATHING_SLACK_S) + MARGIN / 40
    p = PATTERNS[pattern]
    longest_run = max(breath_lit, breath_dark) if p.fades else max(p.on_s, p.period_s - p.on_s)
    # Starting just after an edge: a cut run, then EVIDENCE_RUNS whole runs, then the edge that ends the last.
    return longest_run * (EVIDENCE_RUNS[pattern] + 1) + _TOLERANCE_S


def minimum_watch_s(target: str | int, *, threshold: float = DEFAULT_THRESHOLD) -> float:
    """How many device seconds the classifier needs, starting at any phase, to be sure of ``target``: a
    pattern name (bootloader names too), an SOS code, or ``"sos"`` (the longest, code 15).

    For a code it is one SOS cycle (to reach the next first S) plus the time to see that cycle whole,
    assuming the SOS goes on. Device OS plays only two cycles and resets, so a watch that starts late
    in the second may need the next panic of a crash loop; from the first S of a cycle it takes only
    ``hw.led_signals.sos_readable_ms(code)`` plus ``SETTLE_S``.

        >>> minimum_watch_s("blink-normal"), minimum_watch_s(1)
        (0.806, 10.2)
    """
    if isinstance(target, int) and not isinstance(target, bool):
        if target not in SOS_CODES:
            raise ValueError(f"no SOS code {target}")
        return round((sos_cycle_ms(target) + sos_readable_ms(target)) / 1000 + SETTLE_S, 3)
    if target == "sos":
        return max(minimum_watch_s(code) for code in SOS_CODES)
    if target not in ALL_PATTERNS:
        raise ValueError(f"unknown pattern {target!r}")
    return round(_structural_watch_s(ALL_PATTERNS[target].reports, threshold) + SETTLE_S, 3)


# --- the reading --------------------------------------------------------------------------------------

_PHRASES: dict[str, str] = {
    "solid": "solid {c}",
    "blink-slow": "blinking {c} slowly (2 Hz)",
    "blink-normal": "blinking {c} (5 Hz)",
    "blink-fast": "blinking {c} fast (10 Hz)",
    "breathing": "breathing {c} (4 s cycle)",
    "off": "LED off",
    "unknown": "an LED pattern not recognised",
}


@dataclass(frozen=True)
class LedReading:
    """What the LED showed over ``watched_s`` seconds: ``colour`` (a name from ``COLOURS``, None when dark
    or changing), ``pattern`` (solid, blink-slow, blink-normal, blink-fast, breathing, off, sos, unknown),
    the pattern's ``frequency_hz``, for a whole SOS the panic code with its enum name and meaning,
    ``confidence`` (0..1) and ``needs_more_s``: None when sure, else seconds more to watch.

        >>> LedReading("cyan", "breathing", 0.25, None, None, None, 1.0, 4.3, None).describe()
        'breathing cyan (4 s cycle): connected to the Particle cloud: the healthy normal state'
    """

    colour: str | None
    pattern: str
    frequency_hz: float | None
    sos_code: int | None
    sos_name: str | None
    sos_meaning: str | None
    confidence: float
    watched_s: float
    needs_more_s: float | None
    colours_seen: tuple[str, ...] = ()
    #: A red SOS whose code is not read yet: seconds past the last sample before which no cycle of any code that
    #: fits can have been watched whole, so reading again sooner cannot read the code (None otherwise).
    sos_whole_in_s: float | None = None

    @property
    def sure(self) -> bool:
        return self.needs_more_s is None

    @property
    def meaning(self) -> str | None:
        """What it tells a technician (``hw.led_signals.MEANINGS``), or None."""
        return None if self.pattern == "unknown" else meaning(self.colour, self.pattern)

    def describe(self) -> str:
        """One sentence for the technician."""
        if self.pattern == "sos" and self.sos_code is not None:
            return (
                f"red SOS, code {self.sos_code} ({self.sos_name}): {self.sos_meaning}; "
                "the device resets after showing it twice"
            )
        if self.pattern == "sos":
            return f"red SOS, code not seen whole yet: watch {self.needs_more_s:.1f} s more to read it"
        if self.pattern == "unknown":
            seen = f" (colours seen: {', '.join(self.colours_seen)})" if len(self.colours_seen) > 1 else ""
            more = f"; watch {self.needs_more_s:.1f} s more" if self.needs_more_s else ""
            return f"{_PHRASES['unknown']} after {self.watched_s:.1f} s{seen}{more}"
        what = _PHRASES[self.pattern].format(c=self.colour)
        if not self.sure:
            return f"probably {what}, not sure yet: watch {self.needs_more_s:.1f} s more"
        if self.pattern == "off":
            what = f"LED off for {self.watched_s:.1f} s"
        return f"{what}: {self.meaning}" if self.meaning else what

    def to_json(self) -> dict[str, Any]:
        return {
            "colour": self.colour,
            "pattern": self.pattern,
            "frequency_hz": self.frequency_hz,
            "sos_code": self.sos_code,
            "sos_name": self.sos_name,
            "sos_meaning": self.sos_meaning,
            "confidence": round(self.confidence, 3),
            "watched_s": round(self.watched_s, 3),
            "needs_more_s": None if self.needs_more_s is None else round(self.needs_more_s, 3),
            "sure": self.sure,
            "meaning": self.meaning,
            "description": self.describe(),
        }


# --- fitting a schedule to samples ----------------------------------------------------------------------


class _Template:
    """A lit/dark schedule in seconds from its origin: repeating every ``cycle`` seconds, or finite, with
    no opinion outside ``span``. Segments are kept per value (0 dark, 1 lit), sorted."""

    def __init__(
        self,
        flashes: Sequence[tuple[float, float]],
        cycle: float | None = None,
        span: tuple[float, float] | None = None,
    ):
        self.cycle = cycle
        lo, hi = (0.0, cycle) if cycle else span  # type: ignore[misc]
        dark, at = [], lo
        for a, b in flashes:
            if a > at:
                dark.append((at, a))
            at = max(at, b)
        if hi > at:
            dark.append((at, hi))
        segments = {0: dark, 1: list(flashes)}
        if not cycle:  # outside the span either value is fine
            for v in (0, 1):
                segments[v] = sorted([(-math.inf, lo), *segments[v], (hi, math.inf)])
        self.starts = {v: [a for a, _ in s] for v, s in segments.items()}
        self.ends = {v: [b for _, b in s] for v, s in segments.items()}


def _fit(
    xs: Sequence[float],
    vs: Sequence[int],
    tmpl: _Template,
    search: float,
    tol: float,
    limit: float = math.inf,
) -> tuple[int, float] | None:
    """Shift ``tmpl`` by delta in ``[-search, search]`` to explain the most samples (at ``xs`` seconds from
    the template's origin, each allowed ``tol`` of timing error): ``(unexplained, best delta)``, or None
    once more than ``limit`` samples are unexplainable at any shift (the caller's rival is better)."""
    # The classifier's hot loop (every SOS code and phase is fitted to every window): written for speed, with
    # the arithmetic of each bound kept in one order, so a sample on an edge counts the same every time.
    starts_out: list[float] = []
    ends_out: list[float] = []
    always = hopeless = 0
    cycle = tmpl.cycle
    floor = math.floor
    neg_search = -search
    for x, v in zip(xs, vs, strict=True):
        seg_starts, seg_ends = tmpl.starts[v], tmpl.ends[v]
        if cycle:
            xm = x % cycle
            shifts = range(floor((xm - search - tol) / cycle), floor((xm + search + tol) / cycle) + 1)
        else:
            xm, shifts = x, range(1)
        below, above = xm - search - tol, xm + search + tol
        good: list[tuple[float, float]] = []
        for k in shifts:
            off = k * cycle if cycle else 0.0
            for i in range(bisect_right(seg_ends, below - off), bisect_left(seg_starts, above - off)):
                # The sample fits with the template shifted by delta while its time window meets the segment.
                d0 = xm - seg_ends[i] - off - tol
                d1 = xm - seg_starts[i] - off + tol
                if d0 < neg_search:
                    d0 = neg_search
                if d1 > search:
                    d1 = search
                if d0 < d1:
                    good.append((d0, d1))
        if not good:
            hopeless += 1
            if hopeless > limit:
                return None
            continue
        if len(good) == 1:
            d0, d1 = good[0]
            if d0 <= neg_search and d1 >= search:
                always += 1
            else:
                starts_out.append(d0)
                ends_out.append(d1)
            continue
        good.sort()
        m0, m1 = good[0]
        merged: list[tuple[float, float]] = []
        for d0, d1 in good[1:]:
            if d0 <= m1:
                if d1 > m1:
                    m1 = d1
            else:
                merged.append((m0, m1))
                m0, m1 = d0, d1
        if not merged and m0 <= neg_search and m1 >= search:
            always += 1
            continue
        merged.append((m0, m1))
        for d0, d1 in merged:
            starts_out.append(d0)
            ends_out.append(d1)
    starts_out.sort()
    ends_out.sort()
    best = cur = k = 0
    best_delta = 0.0
    for s in starts_out:
        while ends_out[k] < s:
            cur -= 1
            k += 1
        cur += 1
        if cur > best:  # the most samples fit on [s, the next end]: take its middle
            best, best_delta = cur, (s + ends_out[k]) / 2
    return len(xs) - always - best, best_delta


# --- the samples, cleaned --------------------------------------------------------------------------------


def _popcount(x: int) -> int:
    return bin(x).count("1")


_RED = 4  # (r << 2) | (g << 1) | b
#: For each colour code, what each sensor state means: 1 lit, 0 dark, None (as close to either).
_BINARIZE: dict[int, tuple[int | None, ...]] = {
    c: tuple(1 if _popcount(s ^ c) < _popcount(s) else 0 if _popcount(s) < _popcount(s ^ c) else None for s in range(8))
    for c in range(1, 8)
}
# Looking for SOS red among other colours: red give or take one flip is lit; anything else is "not red".
_RED_VIEW: tuple[int, ...] = tuple(1 if s in (4, 5, 6) else 0 for s in range(8))
_CODE_NAMES = {(r << 2) | (g << 1) | b: name for (r, g, b), name in COLOUR_NAMES.items()}


def _allowance(n: int) -> float:
    """Unexplained samples that noise alone may leave among ``n``: three times the worst noise rate, plus 3."""
    return 3 + 3 * NOISE_RATE * n


class _Run(NamedTuple):
    value: int
    first: int  # sample indices
    last: int
    start: float | None  # estimated edge times (midway between samples); None where the window cut it
    end: float | None

    @property
    def centre(self) -> float:
        return (self.start + self.end) / 2  # type: ignore[operator]

    @property
    def length(self) -> float:
        return self.end - self.start  # type: ignore[operator]


def _runs(ts: Sequence[float], vs: Sequence[int]) -> list[_Run]:
    """Lit and dark runs, with a single flipped sample between two longer runs taken as noise."""
    raw: list[list[int]] = []
    for i, v in enumerate(vs):
        if raw and raw[-1][0] == v:
            raw[-1][2] = i
        else:
            raw.append([v, i, i])
    merged: list[list[int]] = []
    for j, (v, first, last) in enumerate(raw):
        spike = (
            0 < j < len(raw) - 1 and first == last and raw[j - 1][2] > raw[j - 1][1] and raw[j + 1][2] > raw[j + 1][1]
        )
        if spike or (merged and merged[-1][0] == v):
            merged[-1][2] = last
        else:
            merged.append([v, first, last])
    out = []
    for j, (v, first, last) in enumerate(merged):
        start = (ts[first] + ts[first - 1]) / 2 if j > 0 else None
        end = (ts[last] + ts[last + 1]) / 2 if j < len(merged) - 1 else None
        out.append(_Run(v, first, last, start, end))
    return out


# --- SOS ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SosFit:
    code: int
    origin: float  # a cycle's first S starts here (seconds from the first sample)
    unexplained: int


@dataclass(frozen=True)
class _Sos:
    fits: list[_SosFit]  # of the last episode: every (code, phase) within MARGIN of the best
    unexplained: float  # of the best fits, over the samples near red (math.inf: not an SOS)
    samples: int  # how many samples that was
    whole: tuple[int, float] | None  # (code, confidence) of a cycle seen whole


def _cycle_template(code: int) -> _Template:
    flashes = [(a / 1000, b / 1000) for a, b in sos_flashes_ms(code)]
    return _Template(flashes, cycle=sos_cycle_ms(code) / 1000)


def _cycle_span_template(code: int) -> _Template:
    flashes = [(a / 1000, b / 1000) for a, b in sos_flashes_ms(code)]
    return _Template(flashes, span=(-_SOS_PRE_DARK_S, sos_readable_ms(code) / 1000))


_CYCLES = {code: _cycle_template(code) for code in SOS_CODES}
_SPANS = {code: _cycle_span_template(code) for code in range(1, max(SOS_CODES) + 2)}  # one more: a rival


def _episodes(runs: list[_Run]) -> list[list[_Run]]:
    """The lit runs grouped into SOS episodes: a longer dark than any SOS has (a reboot) starts a new one,
    and each episode has its own phase."""
    episodes: list[list[_Run]] = []
    for run in runs:
        if run.value != 1:
            continue
        last = episodes[-1][-1] if episodes else None
        if last is not None and last.end is not None and run.start - last.end <= _SOS_LONGEST_DARK_S:  # type: ignore[operator]
            episodes[-1].append(run)
        else:
            episodes.append([run])
    return episodes


def _sos(ts: list[float], vs: list[int], runs: list[_Run], beaten_by: float) -> _Sos:
    """Fit the SOS of every code to each episode of red flashes; ``beaten_by`` is the best rival's count
    of unexplained samples. A whole cycle in any episode gives the code; the last episode's fits say
    what comes next."""
    fits: list[_SosFit] = []
    unexplained, samples, whole = 0.0, 0, None
    for episode in _episodes(runs):
        lo = bisect_left(ts, ts[episode[0].first] - _SOS_EDGE_S)
        hi = bisect_right(ts, ts[episode[-1].last] + _SOS_EDGE_S)
        flashes = [r for r in episode if r.start is not None and r.end is not None]
        if any(r.length > 0.5 for r in flashes):
            return _Sos([], math.inf, 0, None)  # lit longer than any SOS flash
        if not flashes:
            continue  # a flash cut by the window's edge: nothing to fit, nothing against an SOS
        fits = _sos_episode(ts[lo:hi], vs[lo:hi], flashes, beaten_by - unexplained)
        if not fits:
            return _Sos([], math.inf, 0, None)
        unexplained += fits[0].unexplained
        samples += hi - lo
        whole = _whole(ts, vs, runs, fits) or whole
    return _Sos(fits, unexplained if fits else math.inf, samples, whole)


_STRIDE = 32  # see _sos_episode


def _sos_episode(xs: list[float], ys: list[int], flashes: list[_Run], beaten_by: float) -> list[_SosFit]:
    """Every (code, phase) that explains one episode within MARGIN of the best, best first."""
    fits: list[_SosFit] = []
    # A fit worse than this can neither win nor stay a live rival of what wins: stop counting there.
    best = min(beaten_by, _allowance(len(xs)))
    # A fit counts the same samples in any order, but a wrong code is given up sooner when its misses come
    # early: in time order they often come only at the episode's far end, so the samples go in strided.
    order = [i for start in range(_STRIDE) for i in range(start, len(xs), _STRIDE)]
    xs, ys = [xs[i] for i in order], [ys[i] for i in order]
    tried: dict[int, list[float]] = {code: [] for code in SOS_CODES}
    for anchor in flashes[:2]:
        short = anchor.length < 0.225
        for code in SOS_CODES:
            tmpl = _CYCLES[code]
            cycle = tmpl.cycle or 0.0
            for a, b in sos_flashes_ms(code):
                if ((b - a) < 225) != short:
                    continue
                origin = anchor.centre - (a + b) / 2000
                if any(abs((origin - o + cycle / 2) % cycle - cycle / 2) < 0.02 for o in tried[code]):
                    continue  # the same phase as one fitted from the other anchor
                tried[code].append(origin)
                limit = best + MARGIN
                got = _fit([x - origin for x in xs], ys, tmpl, _SOS_SEARCH_S, _TOLERANCE_S, limit)
                if got is None or got[0] >= limit:
                    continue
                fits.append(_SosFit(code, origin + got[1], got[0]))
                best = min(best, got[0])
    fits.sort(key=lambda f: f.unexplained)
    return [f for f in fits if f.unexplained < fits[0].unexplained + MARGIN] if fits else []


def _whole(ts: list[float], vs: list[int], runs: list[_Run], fits: list[_SosFit]) -> tuple[int, float] | None:
    """The code of an SOS cycle watched whole, checked against one flash fewer and one more, or None."""
    found: list[tuple[float, int, float]] = []
    seen: set[tuple[int, int]] = set()
    for fit in fits:
        cycle = sos_cycle_ms(fit.code) / 1000
        for run in runs:  # only cycles that start near a lit run can have been watched
            if run.value != 1 or run.start is None:
                continue
            k = round((run.start - fit.origin) / cycle)
            if (fit.code, k) in seen:
                continue
            seen.add((fit.code, k))
            origin = fit.origin + k * cycle
            end = origin + sos_readable_ms(fit.code) / 1000
            if ts[0] > origin - _SOS_SEEN_BEFORE_S or ts[-1] < end:
                continue  # the first S's rising edge, or the dark after the code, was not watched
            lo, hi = bisect_left(ts, origin - _SOS_PRE_DARK_S), bisect_right(ts, end)
            window = ts[max(0, lo - 1) : min(len(ts), hi + 1)]
            if any(b - a > MAX_GAP_S for a, b in pairwise(window)):
                continue  # a hole in the samples could hide a flash
            scores = {}
            for code in (fit.code - 1, fit.code, fit.code + 1):
                if code < 1:
                    continue
                span_end = origin + sos_readable_ms(code) / 1000
                a, b = bisect_left(ts, origin - _SOS_PRE_DARK_S - 0.05), bisect_right(ts, span_end + 0.05)
                got = _fit([t - origin for t in ts[a:b]], vs[a:b], _SPANS[code], 0.02, _TOLERANCE_S)
                scores[code] = (got[0], b - a) if got else (math.inf, b - a)
            m, n = scores[fit.code]
            rivals = [scores[c][0] - m for c in scores if c != fit.code]
            if m <= _allowance(n) and all(r >= MARGIN for r in rivals):
                found.append((m / max(1, n), fit.code, _confidence(m, n, min(rivals))))
    if not found:
        return None
    _, code, confidence = min(found)
    if len({c for _, c, _ in found}) > 1:
        confidence *= 0.5  # two cycles disagree: a device that changed its code (or a misreading)
    return code, confidence


def _sos_ready_at(fits: Iterable[_SosFit], t_first_ok: float, pick: Callable[..., float] = max) -> float:
    """When (seconds from the first sample) the next cycle of every candidate would have been seen whole
    (``pick=min``: of the first candidate to be)."""
    return pick((_sos_cycle_end(fit, t_first_ok) for fit in fits), default=0.0)


def _sos_cycle_end(fit: _SosFit, t_first_ok: float) -> float:
    cycle = sos_cycle_ms(fit.code) / 1000
    k = math.ceil((t_first_ok - fit.origin) / cycle)
    return max(0.0, fit.origin + k * cycle + sos_readable_ms(fit.code) / 1000)


def _sos_whole_in(fits: Sequence[_SosFit], watched: float) -> float | None:
    """LedReading.sos_whole_in_s: how long past the last sample the first fitting cycle ends (None: no fit)."""
    return max(0.0, _sos_ready_at(fits, _SOS_SEEN_BEFORE_S, min) - watched) if fits else None


# --- deciding ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    name: str
    unexplained: float
    ready_at: float = 0.0  # when (seconds from the first sample) the pattern's evidence would be complete


def _confidence(unexplained: float, n: int, lead: float) -> float:
    """A sure reading: 0.9 to 1, lower for more unexplained samples and a narrower lead over the rival."""
    fit = 1 - min(1.0, unexplained / (_allowance(n) + 1))
    clear = min(1.0, max(0.0, lead - MARGIN + 1) / (MARGIN + 1))
    return round(0.9 + 0.05 * fit + 0.05 * clear, 3)


def _edges_of(pattern: str, threshold: float) -> tuple[float, list[float]]:
    p = PATTERNS[pattern]
    intervals = lit_intervals_ms(p, threshold)
    points = {a for a, _ in intervals} | {b % p.period_ms for _, b in intervals}
    joins = {b % p.period_ms for _, b in intervals} & {a for a, _ in intervals}  # lit straight on: no edge
    return p.period_s, sorted(x / 1000 for x in points - joins)


def _periodic(
    ts: list[float], vs: list[int], pattern: str, threshold: float, watched: float
) -> tuple[_Candidate, bool]:
    """Fit a periodic pattern at its best phase: the candidate and whether the window shows enough of it."""
    p = PATTERNS[pattern]
    period = p.period_s
    flashes = [(a / 1000, b / 1000) for a, b in lit_intervals_ms(p, threshold)]
    tol = _TOLERANCE_S + (BREATHING_SLACK_S if p.fades else 0.0)
    got = _fit(ts, vs, _Template(flashes, cycle=period), period / 2, tol)
    unexplained, phase = got if got else (len(ts), 0.0)
    # Count the pattern's edges inside the window: n edges make n - 1 runs seen edge to edge.
    cycle, edges = _edges_of(pattern, threshold)
    lo, hi = tol, watched - tol
    inside = 0
    needed = EVIDENCE_RUNS[pattern] + 1
    per_cycle = []
    for e in edges:
        first = math.floor((lo - phase - e) / cycle) + 1  # the first k with phase + e + k*cycle > lo
        last = math.ceil((hi - phase - e) / cycle) - 1
        inside += max(0, last - first + 1)
        per_cycle.append(phase + e + first * cycle)
    # The needed-th edge after the window's start, to say when the evidence would be complete.
    starts = sorted(per_cycle)
    k, idx = divmod(needed - 1, len(starts))
    ready_at = starts[idx] + k * cycle + tol + SETTLE_S
    return _Candidate(pattern, unexplained, ready_at), inside >= needed


def classify(samples: Sequence[LedSample], *, threshold: float = DEFAULT_THRESHOLD) -> LedReading:
    """Read the LED from ``samples`` (any order; each with ``t`` seconds and ``r``, ``g``, ``b``).
    ``threshold`` is the comparator's brightness threshold, as in ``hw.led_signals.breathing_lit_ms``.
    Never raises on odd samples: non-finite or absurd times are dropped, too few samples read as unknown."""
    points = []
    for s in samples:
        t = float(s.t)
        if abs(t) <= _MAX_TIME_S:  # also drops NaN
            points.append((t, (bool(s.r) << 2) | (bool(s.g) << 1) | bool(s.b)))
    points.sort(key=lambda p: p[0])
    if len(points) < 2:
        return _unknown(0.0, ())
    t0 = points[0][0]
    ts_all = [t - t0 for t, _ in points]
    codes = [c for _, c in points]
    watched = ts_all[-1]
    counts = [0] * 8
    for c in codes:
        counts[c] += 1
    colour = max(range(1, 8), key=lambda c: (counts[c], -c))
    # Noise makes other states one sample at a time; a real change of colour makes many more.
    if len(codes) - counts[0] - counts[colour] > 2 * _allowance(len(codes)):
        return _mixed(ts_all, codes, counts, watched)

    table = _RED_VIEW if colour == _RED else _BINARIZE[colour]
    ts, vs = [], []
    for t, c in zip(ts_all, codes, strict=True):
        v = table[c]
        if v is not None:
            ts.append(t)
            vs.append(v)
    n = len(ts)
    if n < 2:
        return _unknown(watched, ())
    lit = sum(vs)
    candidates = {
        "off": _Candidate("off", lit, _structural_watch_s("off", threshold) + SETTLE_S),
        "solid": _Candidate("solid", n - lit, _structural_watch_s("solid", threshold) + SETTLE_S),
    }
    evidence = {"off": True, "solid": True}
    for pattern in _PERIODIC:
        candidates[pattern], evidence[pattern] = _periodic(ts, vs, pattern, threshold, watched)
    best_other = min(c.unexplained for c in candidates.values())
    sos = None
    if colour == _RED:
        sos = _sos(ts, vs, _runs(ts, vs), best_other)
        if sos.whole is not None:
            return _sos_reading(sos.whole, watched)
        if sos.fits:
            ready = _sos_ready_at(sos.fits, _SOS_SEEN_BEFORE_S) + SETTLE_S
            candidates["sos"] = _Candidate("sos", sos.unexplained, ready)
            evidence["sos"] = False  # never sure of an SOS whose code was not read

    best = min(candidates.values(), key=lambda c: (c.unexplained, _ORDER.index(c.name)))
    allowed = _allowance(sos.samples if best.name == "sos" and sos else n)
    colour_name = None if best.name == "off" else _CODE_NAMES[colour]
    if best.unexplained > allowed:
        return _unknown(watched, (colour_name,) if colour_name else ())
    live = [c for c in candidates.values() if c.unexplained < best.unexplained + MARGIN]
    pattern = best.name
    frequency = PATTERNS[pattern].frequency_hz if pattern in PATTERNS else None
    if len(live) == 1 and evidence[pattern]:
        rivals = [c.unexplained - best.unexplained for c in candidates.values() if c is not best]
        confidence = _confidence(best.unexplained, n, min(rivals, default=math.inf))
        return LedReading(colour_name, pattern, frequency, None, None, None, confidence, watched, None)
    more = max(max(c.ready_at for c in live) - watched, MIN_MORE_S)
    fit = 1 - min(1.0, best.unexplained / (allowed + 1))
    confidence = round(0.6 * fit / len(live), 3)
    whole_in = None
    if pattern == "sos":
        colour_name = SOS_COLOUR
        whole_in = _sos_whole_in(sos.fits, watched)
    return LedReading(colour_name, pattern, frequency, None, None, None, confidence, watched, more, (), whole_in)


def _sos_reading(whole: tuple[int, float], watched: float) -> LedReading:
    code, confidence = whole
    info = SOS_CODES[code]
    return LedReading(SOS_COLOUR, "sos", None, code, info.name, info.meaning, confidence, watched, None)


def _unknown(watched: float, colours: tuple[str, ...]) -> LedReading:
    more = minimum_watch_s("breathing")  # the slowest steady pattern: watch at least that long afresh
    return LedReading(None, "unknown", None, None, None, None, 0.0, watched, more, colours)


def _mixed(ts: list[float], codes: list[int], counts: list[int], watched: float) -> LedReading:
    """The LED changed colour while watched: only a red SOS (around other colours) can still be read."""
    total = len(codes)
    seen = tuple(
        _CODE_NAMES[c] for c in sorted(range(1, 8), key=lambda c: -counts[c]) if counts[c] > _allowance(total) / 2
    )
    vs = [_RED_VIEW[c] for c in codes]
    if sum(vs) >= 3:
        runs = _runs(ts, vs)
        sos = _sos(ts, vs, runs, math.inf)
        if sos.whole is not None:
            return _sos_reading(sos.whole, watched)
        flashes = sum(1 for r in runs if r.value == 1 and r.start is not None and r.end is not None)
        if sos.fits and flashes >= 3 and sos.unexplained <= _allowance(sos.samples):
            more = max(_sos_ready_at(sos.fits, _SOS_SEEN_BEFORE_S) + SETTLE_S - watched, MIN_MORE_S)
            return LedReading(SOS_COLOUR, "sos", None, None, None, None, 0.3, watched, more, seen,
                              _sos_whole_in(sos.fits, watched))
    return _unknown(watched, seen)


__all__ = ["LedReading", "LedSample", "classify", "minimum_watch_s"]
