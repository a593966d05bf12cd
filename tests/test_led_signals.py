"""The LED facts table against the reference (led-buttons-restore.md sections 1-2, timing-model.md section 5)."""

from __future__ import annotations

import pytest

from hw.led_signals import (
    ALL_PATTERNS,
    BOOTLOADER_PATTERNS,
    COLOUR_NAMES,
    COLOURS,
    LED_UPDATE_MS,
    MEANINGS,
    PATTERNS,
    SOS_CODES,
    SOS_PREAMBLE_MS,
    breathing_lit_ms,
    lit_intervals_ms,
    meaning,
    sos_cycle_ms,
    sos_flashes_ms,
    sos_readable_ms,
)


def test_colours_are_the_eight_channel_combinations():
    assert len(COLOURS) == 8
    assert set(COLOURS.values()) == {(r, g, b) for r in (False, True) for g in (False, True) for b in (False, True)}
    assert COLOURS["yellow"] == (True, True, False)
    assert COLOURS["cyan"] == (False, True, True)
    assert COLOURS["magenta"] == (True, False, True)
    assert COLOURS["white"] == (True, True, True)
    assert all(COLOUR_NAMES[rgb] == name for name, rgb in COLOURS.items())


@pytest.mark.parametrize(
    ("name", "period_s", "on_s", "hz"),
    [("blink-slow", 0.5, 0.25, 2.0), ("blink-normal", 0.2, 0.1, 5.0), ("blink-fast", 0.1, 0.05, 10.0)],
)
def test_blink_timings(name, period_s, on_s, hz):
    p = PATTERNS[name]
    assert (p.period_s, p.on_s, p.frequency_hz) == (period_s, on_s, hz)
    assert lit_intervals_ms(p) == ((0, p.on_ms),)  # lit for the first half of the period


def test_steady_patterns():
    assert PATTERNS["solid"].lit_always and PATTERNS["solid"].frequency_hz is None
    assert not PATTERNS["off"].lit_always and PATTERNS["off"].frequency_hz is None
    with pytest.raises(ValueError):
        lit_intervals_ms(PATTERNS["solid"])


def test_breathing_is_a_4_s_triangle_through_the_comparator():
    p = PATTERNS["breathing"]
    assert p.period_s == 4.0 and p.frequency_hz == 0.25 and p.fades
    # At 50% brightness: lit from full down to half (1 s) and from half back up (1 s), on the 25 ms grid.
    assert breathing_lit_ms(0.5) == (1025, 3000)
    assert p.on_ms == 2025
    assert lit_intervals_ms(p) == ((0, 1025), (3000, 4000))


@pytest.mark.parametrize("threshold", [0.01, 0.1, 0.25, 0.3, 0.5, 0.62, 0.75, 0.9, 0.99])
def test_breathing_threshold_shapes_the_lit_part(threshold):
    dark_from, lit_again = breathing_lit_ms(threshold)
    assert dark_from % LED_UPDATE_MS == 0 and lit_again % LED_UPDATE_MS == 0
    assert 0 < dark_from <= 2000 < lit_again <= 4000
    lit_ms = dark_from + 4000 - lit_again
    # A linear fade is at or above the threshold for (1 - threshold) of the cycle, give or take a tick.
    assert abs(lit_ms - 4000 * (1 - threshold)) <= 2 * LED_UPDATE_MS


def test_breathing_lit_part_shrinks_as_the_threshold_rises():
    lit = [sum(b - a for a, b in lit_intervals_ms(PATTERNS["breathing"], t / 20)) for t in range(1, 20)]
    assert lit == sorted(lit, reverse=True)


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_breathing_threshold_must_be_inside_0_1(threshold):
    with pytest.raises(ValueError):
        breathing_lit_ms(threshold)


def test_bootloader_blinking_looks_like_system_blinking():
    five, ten = BOOTLOADER_PATTERNS["bootloader-5hz"], BOOTLOADER_PATTERNS["bootloader-10hz"]
    assert (five.period_ms, five.on_ms, five.reports) == (200, 100, "blink-normal")  # toggles every 100 ms
    assert (ten.period_ms, ten.on_ms, ten.reports) == (100, 50, "blink-fast")  # toggles every 50 ms
    assert set(ALL_PATTERNS) == set(PATTERNS) | set(BOOTLOADER_PATTERNS)


def test_sos_preamble_timing():
    flashes = sos_flashes_ms(1)
    assert SOS_PREAMBLE_MS == 3800
    lit = [b - a for a, b in flashes[:9]]
    assert lit == [150] * 3 + [300] * 3 + [150] * 3
    gaps = [flashes[i + 1][0] - flashes[i][1] for i in range(9)]
    # 100 ms after each flash, 100 ms extra after S and after O, 900 ms extra before the code.
    assert gaps == [100, 100, 200, 100, 100, 200, 100, 100, 1000]


@pytest.mark.parametrize("code", range(1, 16))
def test_sos_cycle_for_every_code(code):
    flashes = sos_flashes_ms(code)
    assert len(flashes) == 9 + code
    assert all(b - a == 300 for a, b in flashes[9:])
    assert all(flashes[i + 1][0] - flashes[i][1] == 300 for i in range(9, len(flashes) - 1))
    assert sos_cycle_ms(code) == 4600 + 600 * code
    assert sos_cycle_ms(code) - flashes[-1][1] == 1100  # 300 ms after the last flash plus 800 ms of pause
    assert sos_readable_ms(code) == flashes[-1][1] + 800


def test_sos_durations_before_reset_match_the_timing_model():
    # timing-model.md section 5: two cycles = 9200 + 1200 N ms.
    for code, seconds in {1: 10.4, 5: 15.2, 8: 18.8, 10: 21.2, 13: 24.8}.items():
        assert 2 * sos_cycle_ms(code) / 1000 == seconds


def test_sos_code_table():
    names = [SOS_CODES[n].name for n in range(1, 16)]
    assert names == [
        "HardFault", "NMIFault", "MemManage", "BusFault", "UsageFault", "InvalidLenth", "Exit", "OutOfHeap",
        "SPIOverRun", "AssertionFailure", "InvalidCase", "PureVirtualCall", "StackOverflow", "HeapError",
        "SecureFault",
    ]  # fmt: skip
    assert all(SOS_CODES[n].code == n and SOS_CODES[n].meaning for n in SOS_CODES)
    assert "Wire.begin()" in SOS_CODES[1].meaning
    assert "abort()" in SOS_CODES[7].meaning
    assert "semaphore" in SOS_CODES[14].meaning


@pytest.mark.parametrize(
    ("colour", "pattern", "words"),
    [
        ("cyan", "breathing", "connected to the Particle cloud"),
        ("yellow", "blink-normal", "DFU"),
        ("magenta", "breathing", "safe mode"),
        ("blue", "blink-slow", "listening mode"),
        ("green", "blink-normal", "connecting"),
        ("magenta", "blink-normal", "safe-mode selection"),
        ("magenta", "blink-fast", "firmware update"),
        ("white", "blink-fast", "wiped"),
        ("green", "solid", "frozen"),
        (None, "off", "bootloader"),
    ],
)
def test_meanings(colour, pattern, words):
    assert words in meaning(colour, pattern)


def test_meaning_table_uses_known_names():
    classifier_patterns = {"solid", "blink-slow", "blink-normal", "blink-fast", "breathing", "off", "sos"}
    for colour, pattern in MEANINGS:
        assert colour is None or colour in COLOURS
        assert pattern in classifier_patterns
    assert meaning("green", "blink-slow") is None
