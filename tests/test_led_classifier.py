"""The LED classifier on traces sampled from the simulated LED: every pattern in every colour, every SOS
code, with and without noise; truncated SOS never gives a code; odd input never raises."""

from __future__ import annotations

import json
import math
import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hw.led_classifier import JITTER_S, NOISE_RATE, LedReading, LedSample, classify, minimum_watch_s
from hw.led_signals import ALL_PATTERNS, PATTERNS, SOS_CODES, sos_cycle_ms, sos_readable_ms
from hw.sim.led_timeline import off, sample, sos, steady
from tests.benchmarks.led_accuracy import Target, all_targets, random_trace, watch_for

PATTERN_TARGETS = [t for t in all_targets() if not t.code]
SOS_TARGETS = [t for t in all_targets() if t.code]


def _rng(*key: object) -> random.Random:
    return random.Random(zlib.crc32(repr(key).encode()))  # a fixed seed per test case


def _explain(target: Target, reading: LedReading) -> str:
    return f"{target} read as {reading.pattern} {reading.colour} code={reading.sos_code}: {reading.describe()}"


@pytest.mark.parametrize("noise", [0.0, NOISE_RATE], ids=["clean", "noisy"])
@pytest.mark.parametrize("target", PATTERN_TARGETS, ids=lambda t: f"{t.pattern}-{t.colour or 'dark'}")
def test_every_pattern_in_every_colour(target, noise):
    rng = _rng(target, noise)
    for rate in (40.0, rng.uniform(40.0, 100.0), 100.0):
        samples = random_trace(rng, target, watch_for(target), noise=noise, rate_hz=rate, jitter_s=JITTER_S)
        reading = classify(samples)
        assert target.expects(reading), _explain(target, reading)
        assert reading.confidence >= 0.9
        assert reading.frequency_hz == ALL_PATTERNS[target.pattern].frequency_hz
        assert reading.watched_s <= watch_for(target) + JITTER_S * 2


@pytest.mark.parametrize("noise", [0.0, NOISE_RATE], ids=["clean", "noisy"])
@pytest.mark.parametrize("code", sorted(SOS_CODES))
def test_every_sos_code(code, noise):
    rng = _rng(code, noise)
    target = Target("sos", "red", code)
    rate = 40.0 if noise == 0 else rng.uniform(40.0, 100.0)
    reading = classify(random_trace(rng, target, minimum_watch_s(code), noise=noise, rate_hz=rate, jitter_s=JITTER_S))
    assert target.expects(reading), _explain(target, reading)
    assert (reading.sos_name, reading.sos_meaning) == (SOS_CODES[code].name, SOS_CODES[code].meaning)
    assert f"code {code} ({SOS_CODES[code].name})" in reading.describe()


def test_dfu_and_safe_mode_selection_blink_alike_and_differ_by_colour():
    dfu = classify(sample(steady("yellow", "bootloader-5hz", 0.0), 0.3, 1.0, 40.0))
    safe = classify(sample(steady("magenta", "bootloader-5hz", 0.0), 0.3, 1.0, 40.0))
    update = classify(sample(steady("magenta", "bootloader-10hz", 0.0), 0.3, 1.0, 40.0))
    assert (dfu.pattern, dfu.frequency_hz, dfu.colour) == ("blink-normal", 5.0, "yellow")
    assert (safe.pattern, safe.frequency_hz, safe.colour) == ("blink-normal", 5.0, "magenta")
    assert (update.pattern, update.frequency_hz) == ("blink-fast", 10.0)
    assert "DFU" in dfu.describe() and "safe-mode selection" in safe.describe()
    assert "firmware update" in update.describe()


@pytest.mark.parametrize("code", [1, 4, 9, 15])
def test_sos_read_at_the_exact_moment_it_is_whole(code):
    program = sos(code, 10.0)
    start = 10.0 - 0.2  # dark before the first S
    readable = 10.0 + sos_readable_ms(code) / 1000
    early = classify(sample(program, start, readable - 0.02 - start, 100.0))
    assert early.sos_code is None and early.pattern == "sos" and early.needs_more_s
    whole = classify(sample(program, start, readable + 0.05 - start, 100.0))
    assert whole.sos_code == code and whole.sure


@pytest.mark.parametrize("code", sorted(SOS_CODES))
def test_truncated_sos_never_gives_a_code(code):
    rng = _rng("cut", code)
    cycle_s, readable_s = sos_cycle_ms(code) / 1000, sos_readable_ms(code) / 1000
    program = sos(code, 0.0)
    windows = [
        (rng.uniform(-1.0, -0.02), None),  # from before the first S, cut before it is whole
        (rng.uniform(0.005, 0.4), None),  # the first S's start missed: needs the second cycle
        (rng.uniform(0.4, cycle_s), None),
        (-0.5, 2.5),  # cut inside the preamble
    ]
    for t0, length in windows:
        t1 = (
            t0 + length
            if length
            else rng.uniform(max(t0 + 2.0, 0.5), (readable_s if t0 < 0 else cycle_s + readable_s) - 0.01)
        )
        samples = sample(
            program, t0, t1 - t0, rng.uniform(40, 100), jitter_s=JITTER_S, spread=0.25, flip_rate=NOISE_RATE, rng=rng
        )
        reading = classify(samples)
        assert reading.sos_code is None, (t0, t1, reading)
        assert reading.pattern == "sos" and reading.colour == "red", (t0, t1, reading)
        assert not reading.sure and reading.needs_more_s and reading.needs_more_s > 0
        assert "not seen whole" in reading.describe()


def test_a_hole_in_the_samples_hides_nothing():
    program = sos(5, 0.0, cycles=1)
    samples = sample(program, -0.3, 9.0, 80.0)
    flash = sos_readable_ms(5) / 1000 - 0.8 - 0.3 - 0.6  # the fourth code flash
    holed = [s for s in samples if not flash - 0.05 <= s.t <= flash + 0.35]
    assert classify(samples).sos_code == 5
    assert classify(holed).sos_code is None  # it may not read 4, and it cannot know it was 5


def test_sos_between_other_colours_is_still_read():
    # An app that crashes while breathing cyan, shows the SOS twice, reboots white, blinks green.
    code = 3
    cycle_s = sos_cycle_ms(code) / 1000
    shows = [
        steady("cyan", "breathing", -5.0),
        sos(code, 0.0),
        off(2 * cycle_s),
        steady("white", "solid", 2 * cycle_s + 0.3),
        steady("green", "blink-normal", 2 * cycle_s + 1.3),
    ]
    rng = _rng("mixed")
    first = sample(shows, -1.5, sos_readable_ms(code) / 1000 + 1.7, 60, jitter_s=JITTER_S, flip_rate=0.01, rng=rng)
    second = sample(shows, cycle_s - 0.5, cycle_s + 3.0, 60, jitter_s=JITTER_S, flip_rate=0.01, rng=rng)
    for samples in (first, second):
        reading = classify(samples)
        assert (reading.pattern, reading.sos_code, reading.sure) == ("sos", code, True), reading


def test_a_colour_change_is_not_a_pattern():
    samples = sample([steady("green", "solid", 0.0), steady("blue", "solid", 1.5)], 0.0, 3.0, 50.0)
    reading = classify(samples)
    assert (reading.pattern, reading.colour, reading.confidence) == ("unknown", None, 0.0)
    assert set(reading.colours_seen) == {"green", "blue"}
    assert "green" in reading.describe() and not reading.sure


@pytest.mark.parametrize(
    ("target", "watch_s"),
    [
        (Target("blink-normal", "yellow"), 0.3),
        (Target("blink-slow", "blue"), 0.9),
        (Target("breathing", "magenta"), 2.0),
        (Target("solid", "green"), 1.0),
        (Target("off"), 1.0),
        (Target("blink-fast", "red"), 0.2),
    ],
)
def test_watching_needs_more_s_longer_makes_it_sure(target, watch_s):
    for seed in range(3):
        short = classify(random_trace(random.Random(seed), target, watch_s))
        assert not short.sure and short.needs_more_s > 0
        longer = classify(random_trace(random.Random(seed), target, watch_s + short.needs_more_s))
        assert target.expects(longer), _explain(target, longer)


def test_watching_an_sos_for_needs_more_s_longer_reads_the_code():
    program = sos(3, 0.0, cycles=4)
    t0 = 0.9  # inside the O: this cycle can never be whole
    short = classify(sample(program, t0, 4.0, 50.0))
    assert short.pattern == "sos" and short.sos_code is None
    longer = classify(sample(program, t0, 4.0 + short.needs_more_s, 50.0))
    assert longer.sos_code == 3


def test_breathing_with_another_comparator_threshold():
    samples = sample(
        steady("cyan", "breathing", 0.0, threshold=0.3), 1.0, minimum_watch_s("breathing", threshold=0.3), 50
    )
    reading = classify(samples, threshold=0.3)
    assert (reading.pattern, reading.colour, reading.sure) == ("breathing", "cyan", True)


def test_sample_order_and_clock_offset_do_not_matter():
    samples = random_trace(random.Random(7), Target("blink-slow", "blue"), 2.0)
    shuffled = list(samples)
    random.Random(1).shuffle(shuffled)
    late = [LedSample(s.t + 1_000_000.0, s.r, s.g, s.b) for s in samples]
    assert classify(samples) == classify(shuffled)
    assert classify(late).pattern == classify(samples).pattern == "blink-slow"


def test_minimum_watch_times():
    assert {p: minimum_watch_s(p) for p in PATTERNS} == {
        "solid": 2.362,
        "blink-slow": 1.856,
        "blink-normal": 0.806,
        "blink-fast": 0.656,
        "breathing": 4.156,
        "off": 2.312,
    }
    assert minimum_watch_s("bootloader-5hz") == minimum_watch_s("blink-normal")
    assert minimum_watch_s("bootloader-10hz") == minimum_watch_s("blink-fast")
    # One cycle to reach a first S, then that cycle whole, then SETTLE_S.
    assert [minimum_watch_s(code) for code in (1, 8, 15)] == [10.2, 18.6, 27.0]
    assert minimum_watch_s("sos") == minimum_watch_s(15)
    for bad in ("strobe", 0, 16, True):
        with pytest.raises(ValueError):
            minimum_watch_s(bad)


def test_reading_as_json():
    reading = classify(random_trace(random.Random(2), Target("sos", "red", 7), minimum_watch_s(7)))
    doc = reading.to_json()
    json.dumps(doc)
    assert doc["pattern"] == "sos" and doc["sos_code"] == 7 and doc["sos_name"] == "Exit"
    assert doc["sure"] is True and doc["needs_more_s"] is None
    assert set(doc) >= {
        "colour", "pattern", "frequency_hz", "sos_code", "sos_name", "sos_meaning", "confidence", "watched_s",
        "needs_more_s", "meaning", "description",
    }  # fmt: skip
    unsure = classify(sample(steady("red", "solid", 0.0), 0.0, 0.5, 50.0))
    assert not unsure.sure and unsure.to_json()["needs_more_s"] > 0
    assert unsure.describe().startswith("probably solid red, not sure yet: watch")


@pytest.mark.parametrize(
    "samples",
    [
        [],
        [LedSample(1.0, True, False, False)],
        [LedSample(math.nan, True, True, True)] * 5,
        [LedSample(math.inf, True, False, False), LedSample(-math.inf, False, False, True)],
        [LedSample(5.0, True, False, False)] * 50,  # all at one instant
        [LedSample(t, t % 2 == 0, False, False) for t in (1e308, -1e308, 0.0, 1.0, 1e-300)],
        [LedSample(k * 3600.0, k % 2 == 1, True, False) for k in range(40)],  # an hour between samples
        [LedSample(float(k), 1, 0, 2) for k in range(5)],  # truthy ints rather than bools
    ],
)
def test_odd_input_never_raises(samples):
    reading = classify(samples)
    assert 0.0 <= reading.confidence <= 1.0
    json.dumps(reading.to_json())


_SAMPLES = st.lists(
    st.builds(
        LedSample,
        st.one_of(st.floats(-100.0, 100.0), st.floats(allow_nan=True, allow_infinity=True)),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_SAMPLES)
def test_random_garbage_gives_a_consistent_reading(samples):
    reading = classify(samples)
    assert 0.0 <= reading.confidence <= 1.0 and reading.watched_s >= 0.0
    assert reading.sure == (reading.needs_more_s is None)
    assert reading.needs_more_s is None or reading.needs_more_s > 0
    assert reading.pattern in {*PATTERNS, "sos", "unknown"}
    assert reading.sos_code is None or (reading.pattern == "sos" and reading.sos_code in SOS_CODES and reading.sure)
    assert (reading.sos_name is None) == (reading.sos_code is None)
    json.dumps(reading.to_json())
    reading.describe()


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(all_targets()),
    st.floats(0.05, 1.3),
    st.floats(40.0, 100.0),
    st.floats(0.0, NOISE_RATE),
    st.integers(0, 2**32),
)
def test_random_traces_are_never_read_wrong(target, fraction, rate, noise, seed):
    """Short of the minimum watch a reading may be unsure, never sure and wrong; from it on, it is right."""
    watch = watch_for(target) * fraction
    reading = classify(random_trace(random.Random(seed), target, watch, noise=noise, rate_hz=rate))
    if reading.sure:
        assert target.expects(reading), _explain(target, reading)
    if fraction >= 1.0:
        assert target.expects(reading), _explain(target, reading)
    if target.code and reading.sos_code is not None:
        assert reading.sos_code == target.code



@pytest.mark.parametrize("code", sorted(SOS_CODES))
def test_no_sos_code_is_read_before_the_reading_said_one_could_be(code):
    """``sos_whole_in_s`` lets the ladder skip re-reading an SOS until a cycle can be whole: a window that ends
    just before that moment must read no code, whatever phase the watch began in (noise included)."""
    rng = _rng("whole-in", code)
    cycle_s = sos_cycle_ms(code) / 1000
    program = sos(code, 0.0, cycles=4)
    bounded = 0
    for _ in range(3):
        t0 = rng.uniform(-1.0, cycle_s)
        samples = sample(program, t0, 2 * cycle_s + 2.0, 50.0, jitter_s=JITTER_S, flip_rate=NOISE_RATE, rng=rng)
        first = [s for s in samples if s.t < t0 + 2.0]
        reading = classify(first)
        if reading.sos_code is not None or reading.sos_whole_in_s is None:
            continue
        bounded += 1
        not_before = first[-1].t + reading.sos_whole_in_s
        just_before = classify([s for s in samples if s.t < not_before - 0.03])
        assert just_before.sos_code is None, (t0, not_before, just_before)
    assert bounded, "no watch gave a bound to check"
