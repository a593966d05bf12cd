"""Figures for the LED classifier: how often it reads a trace right when watched for exactly
``minimum_watch_s`` of its pattern, overall, per pattern, per colour and per SOS code.

Run with ``python -m tests.benchmarks.led_accuracy``. Traces come from the simulator's LED timeline,
sampled at a random rate (40-100 Hz, uneven intervals), from a random phase, with timing jitter and
isolated one-channel flips. SOS traces repeat the SOS (the definition of ``minimum_watch_s``); a
second table shows a crash loop as Device OS plays it (two cycles, reboot, the app panics again).
A reading counts as right only when it is sure and names the right colour, pattern and code. The
seed is fixed, so the figures are reproducible. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

from hw.led_classifier import JITTER_S, NOISE_RATE, LedReading, LedSample, classify, minimum_watch_s
from hw.led_signals import ALL_PATTERNS, COLOURS, SOS_CODES, sos_cycle_ms, sos_readable_ms
from hw.sim.led_timeline import LedProgram, sample, sos, steady

SEED = 20240611
TRACES_PER_TARGET = 30  # 65 targets: 1950 traces
CRASH_LOOP_TRACES_PER_CODE = 20
LIT_COLOURS = tuple(c for c in COLOURS if c != "off")
STEADY_PATTERNS = tuple(p for p in ALL_PATTERNS if p != "off")


@dataclass(frozen=True)
class Target:
    """What a trace shows: a pattern in a colour (colour None for "off"), or an SOS code."""

    pattern: str
    colour: str | None = None
    code: int | None = None

    @property
    def label(self) -> str:
        return f"sos {self.code}" if self.code else self.pattern

    def expects(self, reading: LedReading) -> bool:
        """Is ``reading`` sure and right for this target?"""
        if not reading.sure:
            return False
        if self.code:
            return reading.pattern == "sos" and reading.sos_code == self.code and reading.colour == "red"
        return reading.pattern == ALL_PATTERNS[self.pattern].reports and reading.colour == self.colour


def all_targets() -> list[Target]:
    """Every pattern (bootloader ones too) in every colour, "off", and every SOS code."""
    return [
        *(Target(p, c) for p in STEADY_PATTERNS for c in LIT_COLOURS),
        Target("off"),
        *(Target("sos", "red", code) for code in SOS_CODES),
    ]


def watch_for(target: Target) -> float:
    return minimum_watch_s(target.code or target.pattern)


def random_trace(
    rng: random.Random,
    target: Target,
    watch_s: float,
    *,
    noise: float | None = None,
    rate_hz: float | None = None,
    jitter_s: float | None = None,
) -> list[LedSample]:
    """``watch_s`` seconds of ``target`` from a random phase, at a random rate with uneven intervals,
    jitter and noise (each random unless given)."""
    if target.code:
        program: LedProgram = sos(target.code, 0.0, cycles=3)  # enough cycles for any watch from the first
        t0 = rng.uniform(0.0, sos_cycle_ms(target.code) / 1000)
    else:
        program = steady(target.colour or "off", target.pattern, 0.0)
        t0 = rng.uniform(0.0, 8.0)  # two breathing periods: every phase of every pattern
    return sample(
        program,
        t0,
        watch_s,
        rate_hz if rate_hz is not None else rng.uniform(40.0, 100.0),
        jitter_s=jitter_s if jitter_s is not None else rng.uniform(0.0, JITTER_S),
        spread=rng.uniform(0.0, 0.25),
        flip_rate=noise if noise is not None else rng.uniform(0.0, NOISE_RATE),
        rng=rng,
    )


def crash_loop(code: int) -> tuple[list[LedProgram], float]:
    """A user app that panics with ``code`` 2 s after every boot: SOS twice, reboot, white, green, SOS...
    Returns the programs for three rounds and the length of one round."""
    sos_s = 2 * sos_cycle_ms(code) / 1000
    round_s = sos_s + 0.3 + 1.0 + 2.0  # dark while resetting, white while booting, blinking green
    programs = []
    for k in range(3):
        at = k * round_s
        programs += [
            sos(code, at),
            steady("off", "off", at + sos_s),
            steady("white", "solid", at + sos_s + 0.3),
            steady("green", "blink-normal", at + sos_s + 1.3),
        ]
    return programs, round_s


def whole_cycle_in_view(code: int, round_s: float, watch_s: float) -> float:
    """The share of starting moments in a crash loop from which a whole SOS cycle (first S to 800 ms
    after the code) falls inside the watch: the best any classifier could do."""
    cycle_s, readable_s = sos_cycle_ms(code) / 1000, sos_readable_ms(code) / 1000
    starts = [k * round_s + c * cycle_s for k in range(3) for c in range(2)]
    steps = 2000
    hits = sum(
        any(t0 + 0.01 <= s and s + readable_s <= t0 + watch_s for s in starts)
        for t0 in (round_s * i / steps for i in range(steps))
    )
    return hits / steps


def _pct(good: int, total: int) -> str:
    return f"{100 * good / total:6.2f}%" if total else "   n/a"


def main() -> None:
    rng = random.Random(SEED)
    outcome: dict[str, Counter[str]] = defaultdict(Counter)
    by_colour: dict[str, Counter[str]] = defaultdict(Counter)
    wrong_examples: list[str] = []
    host_s = 0.0
    traces = 0
    for target in all_targets():
        for _ in range(TRACES_PER_TARGET):
            samples = random_trace(rng, target, watch_for(target))
            start = time.perf_counter()
            reading = classify(samples)
            host_s += time.perf_counter() - start
            traces += 1
            verdict = "right" if target.expects(reading) else "unsure" if not reading.sure else "wrong"
            outcome[target.label][verdict] += 1
            by_colour[target.colour or "(off)"][verdict] += 1
            if verdict == "wrong" and len(wrong_examples) < 5:
                wrong_examples.append(f"{target} read as {reading.describe()}")

    total = Counter()
    for counts in outcome.values():
        total.update(counts)
    print(f"LED classifier accuracy: {traces} random traces, seed {SEED}, each watched for minimum_watch_s")
    print(f"  rate 40-100 Hz, intervals +-25%, jitter up to {JITTER_S * 1000:.0f} ms, flips up to {NOISE_RATE:.0%}")
    print(
        f"overall: {_pct(total['right'], traces)} right, {_pct(total['unsure'], traces)} not sure, "
        f"{_pct(total['wrong'], traces)} wrong (sure but mistaken)"
    )
    print(f"classifier host time: {1000 * host_s / traces:.1f} ms per trace on average")
    print()
    print(f"{'pattern':<16} {'watch s':>8} {'traces':>7} {'right':>8} {'unsure':>8} {'wrong':>8}")
    for label, counts in outcome.items():
        n = sum(counts.values())
        watch = minimum_watch_s(int(label.split()[1]) if label.startswith("sos ") else label)
        print(
            f"{label:<16} {watch:>8.3f} {n:>7} {_pct(counts['right'], n):>8} "
            f"{_pct(counts['unsure'], n):>8} {_pct(counts['wrong'], n):>8}"
        )
    print()
    print("per colour (all its patterns):")
    for colour, counts in by_colour.items():
        n = sum(counts.values())
        print(f"  {colour:<8} {n:>5} traces {_pct(counts['right'], n)} right")
    if wrong_examples:
        print("\nwrong readings (first few):")
        for line in wrong_examples:
            print(f"  {line}")

    print("\nA crash loop as Device OS plays it (SOS twice, reboot 3.3 s, SOS again), watched for")
    print("minimum_watch_s(code) from a random moment of the loop; 'in view' is the share of moments")
    print("from which a whole cycle falls inside the watch at all:")
    print(f"{'code':<6} {'watch s':>8} {'in view':>8} {'right':>8} {'unsure':>8} {'wrong':>8}")
    for code in SOS_CODES:
        programs, round_s = crash_loop(code)
        counts: Counter[str] = Counter()
        target = Target("sos", "red", code)
        for _ in range(CRASH_LOOP_TRACES_PER_CODE):
            t0 = rng.uniform(0.0, round_s)
            samples = sample(
                programs, t0, minimum_watch_s(code), rng.uniform(40.0, 100.0),
                jitter_s=rng.uniform(0.0, JITTER_S), spread=rng.uniform(0.0, 0.25),
                flip_rate=rng.uniform(0.0, NOISE_RATE), rng=rng,
            )  # fmt: skip
            reading = classify(samples)
            counts["right" if target.expects(reading) else "unsure" if not reading.sure else "wrong"] += 1
        n = sum(counts.values())
        in_view = whole_cycle_in_view(code, round_s, minimum_watch_s(code))
        print(
            f"{code:<6} {minimum_watch_s(code):>8.3f} {100 * in_view:>7.1f}% {_pct(counts['right'], n):>8} "
            f"{_pct(counts['unsure'], n):>8} {_pct(counts['wrong'], n):>8}"
        )


if __name__ == "__main__":
    main()
