"""The simulated LED over time: exact edges for every pattern and the SOS, and state_at agreeing with them."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.led_signals import ALL_PATTERNS, COLOURS, sos_cycle_ms, sos_flashes_ms
from hw.sim.led_timeline import LedProgram, off, sample, sos, steady

DARK = COLOURS["off"]
RED = COLOURS["red"]


def _walk(program: LedProgram, t0: float, t1: float) -> list[tuple[float, tuple[bool, bool, bool]]]:
    """Every change, found by asking state_at around each candidate instant (the brute-force reference)."""
    return [(t, program.state_at(t)) for t, _ in program.edges(t0, t1)]


@pytest.mark.parametrize(
    ("pattern", "half_s"), [("blink-slow", 0.25), ("blink-normal", 0.1), ("blink-fast", 0.05), ("bootloader-5hz", 0.1)]
)
def test_blink_edges_are_exact(pattern, half_s):
    p = steady("green", pattern, start=3.0)
    edges = p.edges(3.0, 3.0 + 20 * half_s)
    assert [t for t, _ in edges] == [3.0 + k * (2 * half_s) / 2 for k in range(20)]
    assert [rgb for _, rgb in edges] == [COLOURS["green"], DARK] * 10
    assert p.state_at(3.0) == COLOURS["green"]  # starts lit
    assert p.state_at(3.0 + half_s) == DARK  # at an edge: the new state
    assert p.state_at(3.0 + half_s - 1e-9) == COLOURS["green"]


def test_edges_are_half_open():
    p = steady("red", "blink-normal", start=0.0)
    assert [t for t, _ in p.edges(0.1, 0.3)] == [0.1, 0.2]
    assert p.edges(0.1 + 1e-9, 0.2) == []


def test_dark_before_the_start():
    p = steady("white", "solid", start=5.0)
    assert p.state_at(4.999) == DARK
    assert p.edges(0.0, 10.0) == [(5.0, COLOURS["white"])]
    assert p.edges(5.0 + 1e-9, 100.0) == []  # solid: nothing after the start
    assert steady("blue", "blink-slow", 1.0).edges(0.0, 1.0) == []


def test_off_never_changes():
    assert off().edges(-10.0, 10.0) == []
    assert off(3.0).state_at(4.0) == DARK
    assert steady("green", "off", 0.0).edges(0.0, 10.0) == []
    assert steady("off", "blink-fast", 0.0).edges(0.0, 10.0) == []  # no colour: nothing to blink


@pytest.mark.parametrize(("threshold", "dark_from", "lit_again"), [(0.5, 1.025, 3.0), (0.25, 1.525, 2.5)])
def test_breathing_goes_through_the_threshold(threshold, dark_from, lit_again):
    p = steady("cyan", "breathing", start=10.0, threshold=threshold)
    edges = p.edges(10.0, 18.0)
    expected = [10.0, 10.0 + dark_from, 10.0 + lit_again, 14.0 + dark_from, 14.0 + lit_again]
    assert [t for t, _ in edges] == pytest.approx(expected, abs=1e-12)
    assert [rgb for _, rgb in edges] == [COLOURS["cyan"], DARK, COLOURS["cyan"], DARK, COLOURS["cyan"]]
    assert p.state_at(14.0) == COLOURS["cyan"]  # lit straight through the cycle boundary: no edge at 14 s


def test_breathing_with_a_high_threshold_is_one_short_flash_per_cycle():
    p = steady("magenta", "breathing", start=0.0, threshold=0.995)
    edges = p.edges(0.0, 8.0)
    assert [t for t, _ in edges] == pytest.approx([0.0, 0.025, 4.0, 4.025])


def test_sos_edges_follow_the_panic_sequence():
    code = 2
    p = sos(code, start=100.0)
    cycle = sos_cycle_ms(code) / 1000
    assert p.duration_s == 2 * cycle and p.end == 100.0 + 2 * cycle
    edges = p.edges(0.0, 200.0)
    expected = []
    for c in range(2):
        for a, b in sos_flashes_ms(code):
            expected += [(100.0 + (c * cycle * 1000 + a) / 1000, RED), (100.0 + (c * cycle * 1000 + b) / 1000, DARK)]
    assert edges == expected
    assert len(edges) == 2 * 2 * (9 + code)
    assert p.state_at(p.end) == DARK and p.state_at(p.end + 50) == DARK
    assert p.state_at(100.0) == RED and p.state_at(100.15) == DARK


@pytest.mark.parametrize("code", range(1, 16))
def test_sos_lit_time_and_flash_count(code):
    p = sos(code, start=0.5, cycles=1)
    edges = p.edges(0.0, 1000.0)
    rises = [t for t, rgb in edges if rgb == RED]
    falls = [t for t, rgb in edges if rgb == DARK]
    assert len(rises) == len(falls) == 9 + code
    lit = sum(b - a for a, b in zip(rises, falls, strict=True))
    assert lit == pytest.approx((3 * 150 + 3 * 300 + 3 * 150 + 300 * code) / 1000)
    assert p.duration_s == sos_cycle_ms(code) / 1000


def test_bad_arguments():
    with pytest.raises(ValueError):
        steady("orange", "solid", 0.0)
    with pytest.raises(ValueError):
        steady("red", "strobe", 0.0)
    with pytest.raises(ValueError):
        steady((True, False), "solid", 0.0)
    for code in (0, 16, -1):
        with pytest.raises(ValueError):
            sos(code, 0.0)
    with pytest.raises(ValueError):
        sos(1, 0.0, cycles=0)


def test_a_colour_may_be_a_triple():
    assert steady((1, 0, 1), "solid", 0.0).state_at(1.0) == COLOURS["magenta"]


_PROGRAMS = st.one_of(
    st.builds(
        steady,
        st.sampled_from([c for c in COLOURS if c != "off"]),
        st.sampled_from(list(ALL_PATTERNS)),
        st.floats(-1e4, 1e6, allow_nan=False),
        threshold=st.floats(0.02, 0.98),
    ),
    st.builds(sos, st.integers(1, 15), st.floats(-1e4, 1e6, allow_nan=False), cycles=st.integers(1, 3)),
)


@settings(max_examples=150, deadline=None)
@given(_PROGRAMS, st.floats(-20.0, 60.0), st.floats(0.0, 30.0), st.randoms(use_true_random=False))
def test_edges_and_state_at_agree(program, offset, length, rnd):
    t0 = program.start + offset
    t1 = t0 + length
    edges = program.edges(t0, t1)
    times = [t for t, _ in edges]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(t0 <= t < t1 for t in times)
    before = program.state_at(math.nextafter(t0, -math.inf))
    states = [before, *(rgb for _, rgb in edges)]
    assert all(a != b for a, b in pairwise(states))  # every edge is a real change
    for t, rgb in edges:
        assert program.state_at(t) == rgb
        assert program.state_at(math.nextafter(t, -math.inf)) != rgb
    # Anywhere between edges the state is that of the last edge before it.
    for _ in range(20 if t1 > t0 else 0):
        t = min(rnd.uniform(t0, t1), math.nextafter(t1, -math.inf))
        last = [rgb for s, rgb in edges if s <= t]
        assert program.state_at(t) == (last[-1] if last else before)
    # Splitting the interval changes nothing.
    mid = (t0 + t1) / 2
    assert program.edges(t0, mid) + program.edges(mid, t1) == edges


def test_edges_far_from_zero_stay_exact():
    p = steady("yellow", "blink-fast", start=123456.789)
    edges = p.edges(123456.789 + 3600.0, 123456.789 + 3601.0)
    assert len(edges) == 20
    assert all(p.state_at(t) == rgb for t, rgb in edges)


def test_sample_rate_jitter_and_noise():
    p = steady("white", "solid", 0.0)
    clean = sample(p, 1.0, 2.0, 50.0)
    assert len(clean) == 100 and clean[0].t == 1.0 and clean[-1].t == pytest.approx(2.98)
    assert all((s.r, s.g, s.b) == COLOURS["white"] for s in clean)
    rng = random.Random(4)
    noisy = sample(p, 0.0, 200.0, 100.0, jitter_s=0.005, spread=0.25, flip_rate=0.2, rng=rng)
    flipped = [i for i, s in enumerate(noisy) if (s.r, s.g, s.b) != COLOURS["white"]]
    assert 0.1 * len(noisy) < len(flipped) < 0.25 * len(noisy)
    assert all(sum((s.r, s.g, s.b)) == 2 for s in (noisy[i] for i in flipped))  # one channel at a time
    assert all(b - a > 1 for a, b in pairwise(flipped))  # never two in a row
    # Intervals vary by up to 25% and times by up to 5 ms.
    gaps = [b.t - a.t for a, b in pairwise(noisy)]
    assert min(gaps) >= 0.0075 - 0.01 and max(gaps) <= 0.0125 + 0.01
    assert sample(p, 0.0, 5.0, 77.0, jitter_s=0.005, spread=0.2, flip_rate=0.01, rng=random.Random(1)) == sample(
        p, 0.0, 5.0, 77.0, jitter_s=0.005, spread=0.2, flip_rate=0.01, rng=random.Random(1)
    )


def test_sample_follows_a_sequence_of_programs():
    shows = [steady("green", "solid", 0.0), steady("blue", "solid", 1.0), off(2.0)]
    got = sample(shows, 0.5, 2.0, 10.0)
    colours = [(s.r, s.g, s.b) for s in got]
    assert colours == [COLOURS["green"]] * 5 + [COLOURS["blue"]] * 10 + [DARK] * 5


def test_device_simulator_usage():
    # hw/sim/device.py: schedule the next LED change from now, and reboot when the SOS is over.
    p = sos(8, start=40.0)
    at, rgb = p.edges(40.0 + 1e-9, 40.0 + 30.0)[0]
    assert (at, rgb) == (40.15, DARK)
    assert p.duration_s == pytest.approx(18.8)


def test_next_edge_is_the_first_of_the_edges_for_every_program_and_moment():
    """The simulated device asks next_edge at every edge; it must agree with edges() everywhere."""
    rng = random.Random(7)
    programs = [steady("yellow", "blink-normal", 1.0), steady("cyan", "breathing", 0.3), steady("green", "solid", 2.0),
                sos(1, 0.5), sos(8, 0.0, cycles=3), off(0.0)]  # fmt: skip
    for program in programs:
        for _ in range(200):
            t0 = rng.uniform(-1.0, 40.0)
            listed = program.edges(t0, t0 + 30.0)
            assert program.next_edge(t0, 30.0) == (listed[0] if listed else None), (program, t0)
