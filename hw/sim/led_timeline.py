"""The simulated status LED over device time: what the LED shows at any moment, and when it changes.

A :class:`LedProgram` is one thing the device shows, from ``start`` (seconds on the simulator's
clock) on; it is dark before it. Build one with :func:`steady` (a colour and a pattern, for ever),
:func:`sos` (two SOS cycles, then dark: the caller decides what follows) or :func:`off`. Edge times
are exact: they are computed from integer milliseconds (``hw.led_signals``), so ``state_at`` and
``edges`` always agree, and breathing goes through the comparator threshold on Device OS's 25 ms
update grid. :func:`sample` turns programs into what a GPIO sampler reads (rate, jitter, noise).

    >>> p = steady("yellow", "blink-normal", start=10.0)
    >>> p.state_at(10.05), p.state_at(10.15)
    ((True, True, False), (False, False, False))
    >>> [t for t, rgb in p.edges(10.0, 10.4)]
    [10.0, 10.1, 10.2, 10.3]
    >>> sos(1, start=0.0).duration_s
    10.4
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence

from hw.led_classifier import LedSample
from hw.led_signals import (
    ALL_PATTERNS,
    COLOUR_NAMES,
    COLOURS,
    DEFAULT_THRESHOLD,
    SOS_CODES,
    SOS_COLOUR,
    SOS_CYCLES,
    Rgb,
    lit_intervals_ms,
    sos_cycle_ms,
    sos_flashes_ms,
)

DARK: Rgb = COLOURS["off"]


_Changes = tuple[tuple[int, bool], ...]  # (offset ms, lit from then on)


def _changes(intervals: Sequence[tuple[int, int]], length: int, cyclic: bool) -> tuple[bool, _Changes]:
    """Lit intervals (ms) -> (lit at 0, the offsets in [0, length) or (0, length] where the state changes)."""

    def lit(x: float) -> bool:
        x = x % length if cyclic else x
        return any(a <= x < b for a, b in intervals)

    points = sorted({p for interval in intervals for p in interval} | ({0} if cyclic else {length}))
    changes = []
    for p in points:
        if cyclic and p == length:
            continue  # the same instant as 0 of the next period
        after, before = lit(p), lit(p - 0.5)  # integer boundaries: half a millisecond tells the sides apart
        if not cyclic and p == 0:
            continue  # the program's own start is handled separately (dark before it)
        if after != before:
            changes.append((p, after))
    return lit(0), tuple(changes)


class LedProgram:
    """What the LED shows from ``start`` (seconds) on: ``colour`` switched on and off by a schedule that
    repeats every ``period_ms`` or, for a finite program, plays once and leaves the LED dark after
    ``duration_s``. Use :func:`steady`, :func:`sos` or :func:`off` rather than this constructor.

        >>> steady("cyan", "breathing", start=0.0).edges(0.0, 4.0)
        [(0.0, (False, True, True)), (1.025, (False, False, False)), (3.0, (False, True, True))]
    """

    def __init__(
        self,
        name: str,
        colour: Rgb,
        start: float,
        lit_ms: Sequence[tuple[int, int]],
        *,
        period_ms: int | None = None,
        duration_ms: int | None = None,
        lit_always: bool = False,
    ):
        self.name = name
        self.colour: Rgb = tuple(bool(c) for c in colour)  # type: ignore[assignment]
        self.start = float(start)
        self.period_ms = period_ms
        if period_ms:
            self._lit0, self._cycle = _changes(lit_ms, period_ms, cyclic=True)
        elif duration_ms is not None:
            self._lit0, self._cycle = _changes(lit_ms, duration_ms, cyclic=False)
        else:  # steady: one state for ever
            self._lit0, self._cycle = lit_always, ()
        self.duration_s = duration_ms / 1000 if duration_ms is not None and not period_ms else math.inf
        # A finite program's change times, computed once with the one expression edges() also uses.
        self._times = [self._at(ms) for ms, _ in self._cycle] if not period_ms else []

    def __repr__(self) -> str:
        colour = COLOUR_NAMES.get(self.colour, str(self.colour))
        return f"LedProgram({self.name!r}, {colour}, start={self.start})"

    @property
    def end(self) -> float:
        """When a finite program stops (it is dark from then on); ``inf`` for one that never ends."""
        return self.start + self.duration_s

    def _at(self, ms: int) -> float:
        return self.start + ms / 1000

    def _rgb(self, lit: bool) -> Rgb:
        return self.colour if lit else DARK

    def _lit_before(self, t: float, inclusive: bool) -> bool:
        """Lit after the last change at or before ``t`` (strictly before unless ``inclusive``)?"""
        if t < self.start or (t == self.start and not inclusive):
            return False
        if self.period_ms:
            period = self.period_ms
            k = math.floor((t - self.start) * 1000 / period)
            for cycle in (k + 1, k, k - 1, k - 2):  # the estimate may be one cycle out after rounding
                if cycle < 0:
                    break
                for offset, lit in reversed(self._cycle):
                    ms = cycle * period + offset
                    if ms == 0:
                        continue
                    at = self._at(ms)
                    if at < t or (inclusive and at == t):
                        return lit
            return self._lit0
        i = (bisect_right if inclusive else bisect_left)(self._times, t) - 1
        return self._cycle[i][1] if i >= 0 else self._lit0

    def state_at(self, t: float) -> Rgb:
        """The LED's ``(r, g, b)`` at time ``t`` seconds (at an edge: the new state)."""
        return self._rgb(self._lit_before(t, inclusive=True))

    def _transitions(self, t0: float, t1: float) -> Iterator[tuple[float, bool]]:
        if t0 <= self.start < t1:
            yield self.start, self._lit0
        if self.period_ms:
            period = self.period_ms
            cycle = max(0, math.floor((t0 - self.start) * 1000 / period) - 1)
            while True:
                for offset, lit in self._cycle:
                    ms = cycle * period + offset
                    if ms == 0:
                        continue
                    at = self._at(ms)
                    if at >= t1:
                        return
                    if at >= t0:
                        yield at, lit
                cycle += 1
        for i in range(bisect_left(self._times, t0), bisect_left(self._times, t1)):
            yield self._times[i], self._cycle[i][1]

    def edges(self, t0: float, t1: float) -> list[tuple[float, Rgb]]:
        """Every change of the LED in ``[t0, t1)`` seconds, in order, as ``(time, new (r, g, b))``."""
        out: list[tuple[float, Rgb]] = []
        prev = self._rgb(self._lit_before(t0, inclusive=False))
        for at, lit in self._transitions(t0, t1):
            rgb = self._rgb(lit)
            if rgb != prev:
                out.append((at, rgb))
                prev = rgb
        return out


    def next_edge(self, t0: float, horizon_s: float) -> tuple[float, Rgb] | None:
        """The first change of the LED in ``[t0, t0 + horizon_s)``, as ``edges`` would list it first; None if
        none comes. (A simulated device asks this at every edge: listing 30 s of a 5 Hz blink each time would
        cost 300 edges per edge.)"""
        prev = self._rgb(self._lit_before(t0, inclusive=False))
        for at, lit in self._transitions(t0, t0 + horizon_s):
            rgb = self._rgb(lit)
            if rgb != prev:
                return at, rgb
        return None


def _colour(colour: str | Rgb) -> Rgb:
    if isinstance(colour, str):
        if colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}; known: {', '.join(COLOURS)}")
        return COLOURS[colour]
    if len(colour) != 3:
        raise ValueError(f"a colour is a name or an (r, g, b) triple, not {colour!r}")
    return tuple(bool(c) for c in colour)  # type: ignore[return-value]


def steady(colour: str | Rgb, pattern: str, start: float, *, threshold: float = DEFAULT_THRESHOLD) -> LedProgram:
    """``colour`` showing ``pattern`` (a name from ``PATTERNS`` or ``BOOTLOADER_PATTERNS``) from ``start``
    seconds on, for ever. ``threshold`` is the comparator's brightness threshold (it shapes breathing).

        >>> steady("magenta", "bootloader-5hz", 3.0).state_at(3.1)
        (False, False, False)
    """
    if pattern not in ALL_PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; known: {', '.join(ALL_PATTERNS)}")
    p = ALL_PATTERNS[pattern]
    if not p.period_ms:
        return LedProgram(pattern, _colour(colour), start, (), lit_always=p.lit_always)
    return LedProgram(pattern, _colour(colour), start, lit_intervals_ms(p, threshold), period_ms=p.period_ms)


def sos(code: int, start: float, *, cycles: int = SOS_CYCLES) -> LedProgram:
    """The red SOS for panic ``code`` (1-15) from ``start`` seconds: ``cycles`` cycles (Device OS plays
    two, then resets), then dark; ``duration_s`` says how long it lasts.

        >>> p = sos(3, start=1.0); p.duration_s, p.end
        (12.8, 13.8)
    """
    if code not in SOS_CODES:
        raise ValueError(f"no SOS code {code!r}: Device OS codes are {min(SOS_CODES)}-{max(SOS_CODES)}")
    if cycles < 1:
        raise ValueError("an SOS plays at least one cycle")
    cycle = sos_cycle_ms(code)
    flashes = [(c * cycle + a, c * cycle + b) for c in range(cycles) for a, b in sos_flashes_ms(code)]
    return LedProgram(f"sos-{code}", COLOURS[SOS_COLOUR], start, flashes, duration_ms=cycles * cycle)


def off(start: float = 0.0) -> LedProgram:
    """A dark LED (no power, in reset, no bootloader)."""
    return LedProgram("off", DARK, start, ())


def sample(
    programs: LedProgram | Sequence[LedProgram],
    t0: float,
    duration_s: float,
    rate_hz: float,
    *,
    jitter_s: float = 0.0,
    spread: float = 0.0,
    flip_rate: float = 0.0,
    rng: random.Random | None = None,
) -> list[LedSample]:
    """What a sampler reads from ``t0`` for ``duration_s`` seconds at ``rate_hz``: each interval is
    ``1 / rate_hz`` times a factor in ``[1 - spread, 1 + spread]``, each reported time is off by up to
    ``jitter_s``, and with probability ``flip_rate`` a sample (never two in a row) has one channel
    flipped. With several ``programs``, each shows from its start until the next one's start.

        >>> s = sample(steady("red", "solid", 0.0), 0.0, 1.0, 50.0); len(s), s[0]
        (50, LedSample(t=0.0, r=True, g=False, b=False))
    """
    if rate_hz <= 0 or duration_s < 0:
        raise ValueError("a sampler needs a positive rate and a non-negative duration")
    shows = sorted([programs] if isinstance(programs, LedProgram) else programs, key=lambda p: p.start)
    starts = [p.start for p in shows]
    rng = rng or random.Random(0)
    out: list[LedSample] = []
    flipped = False
    step = 1.0 / rate_hz
    steps = 0.0  # counted in whole steps when there is no spread, so the times do not drift
    t, end = float(t0), t0 + duration_s
    while t < end:
        i = max(0, bisect_right(starts, t) - 1)
        rgb = list(shows[i].state_at(t)) if shows else [False, False, False]
        flipped = not flipped and flip_rate > 0 and rng.random() < flip_rate
        if flipped:
            channel = rng.randrange(3)
            rgb[channel] = not rgb[channel]
        reported = t + (rng.uniform(-jitter_s, jitter_s) if jitter_s else 0.0)
        out.append(LedSample(reported, *rgb))
        steps += rng.uniform(1 - spread, 1 + spread) if spread else 1.0
        t = t0 + steps * step
    return out
