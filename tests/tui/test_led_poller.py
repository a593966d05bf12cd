"""The bench's LED watcher (kiosk.service.led_watch): a classification is posted while the LED changes shape, and
once for an LED whose window keeps the same shape (a steady LED, a steady blink: reading it again would say the
same, at a cost); the swatch follows the LED, showing a pattern it is sure of steadily in its colour."""

from __future__ import annotations

import itertools
import threading
import time

from hw.led_classifier import LedSample
from kiosk import bench as bench_module
from kiosk.service import led_watch
from kiosk.service.engine import KioskBackend
from kiosk.service.led_watch import swatch_colour, window_shape
from kiosk.service.posts import LedSeen


def _watch(monkeypatch, spec: str, seconds: float, at_most_s: float = 0.4) -> tuple[float, list[tuple[float, LedSeen]]]:
    monkeypatch.setattr(led_watch, "CLASSIFY_EVERY_S", 0.1)  # real seconds: many classifications in the test
    monkeypatch.setattr(led_watch, "CLASSIFY_AT_MOST_S", at_most_s)
    monkeypatch.setattr(led_watch, "SWATCH_EVERY_S", 0.02)
    posted: list[tuple[float, LedSeen]] = []
    with bench_module.simulated_bench(spec, speed=40.0) as bench:
        backend = KioskBackend(lambda: bench, lambda _bench: None, None,
                               lambda message: posted.append((time.monotonic(), message)))  # fmt: skip
        backend.bench = bench
        stop = threading.Event()
        poller = threading.Thread(target=backend.poll_led, args=(stop,), daemon=True)
        started = time.monotonic()
        poller.start()
        try:
            time.sleep(seconds)
        finally:
            stop.set()
            poller.join(5)
    assert not poller.is_alive()
    return started, posted


def test_a_steady_led_and_a_steady_blink_are_classified_until_their_window_is_whole_then_stand(monkeypatch):
    # slot 1 shows no LED at all; slot 2 sits in DFU, blinking yellow; 15 device s fill the window at 40x in
    # under half a second: look for 2 s of real time
    started, posted = _watch(monkeypatch, "missing-bootloader@boron,corrupt-system@boron", 2.0)
    late = started + 1.2  # the window is whole and read by now (0.4 s at 40x, with room for a loaded host)
    for slot, pattern in ((1, "off"), (2, "blink-normal")):
        read = [m for _, m in posted if m.slot == slot and m.reading is not None]
        assert read and read[-1].reading["pattern"] == pattern
        assert [m for t, m in posted if m.slot == slot and m.reading is not None and t > late] == []  # it stands
    swatch = [m.lit for _, m in posted if m.slot == 2]
    assert "yellow" in swatch
    sure = next(i for i, (_, m) in enumerate(p for p in posted if p[1].slot == 2) if m.reading and m.reading["sure"])
    assert set(swatch[sure:]) == {"yellow"}  # once read as a blink, the swatch shows its colour steadily


def test_a_crash_loop_is_read_again_as_it_changes(monkeypatch):
    _, posted = _watch(monkeypatch, "app-crash@boron", 2.0)
    readings = [m.reading for _, m in posted if m.reading is not None]
    assert len(readings) >= 3  # the window's shape changes as the SOS and the reboots go by
    assert any(r["pattern"] == "sos" for r in readings)


def test_a_crash_loop_that_reads_the_same_again_and_again_is_read_less_often(monkeypatch):
    _, posted = _watch(monkeypatch, "app-crash@boron", 4.0, at_most_s=0.8)
    times = [t for t, m in posted if m.reading is not None]
    summaries = [(m.reading["pattern"], m.reading["sos_code"]) for _, m in posted if m.reading is not None]
    assert summaries[-1] == ("sos", 1) and summaries[-2] == ("sos", 1)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[-1] >= 0.75  # backed off from every 0.1 s to the slowest pace while it said the same


def test_window_shape_ignores_where_the_window_cuts_and_needs_a_whole_window():
    def samples(lit: list[bool], t0: float = 0.0) -> list[LedSample]:
        return [LedSample(t0 + i * 0.02, v, v, False) for i, v in enumerate(lit)]

    blink = ([True] * 5 + [False] * 5) * 80
    assert window_shape(samples(blink[:750]), 15.0) == window_shape(samples(blink[3:753], 7.0), 15.0)
    changed = blink[:400] + [False] * 10 + blink[400:740]
    assert window_shape(samples(blink[:750]), 15.0) != window_shape(samples(changed), 15.0)
    assert window_shape(samples(blink[:100]), 15.0) is None
    assert window_shape(samples([False] * 750), 15.0) == frozenset({((False, False, False), 0)})
    sos_like = ([True] * 5 + [False] * 5) * 20 + ([True] * 15 + [False] * 5) * 20
    assert window_shape(samples(sos_like), 15.0) is None  # more than two kinds of run: always read afresh


def test_the_swatch_shows_a_sure_pattern_steadily_and_anything_else_as_sampled():
    blink = {"sure": True, "pattern": "blink-normal", "colour": "yellow", "sos_code": None}
    assert swatch_colour("off", blink) == "yellow"  # a dark moment of the blink does not flicker it
    assert swatch_colour("cyan", blink) == "cyan"  # another colour: the device changed state
    assert swatch_colour("off", {**blink, "sure": False}) == "off"
    assert swatch_colour("off", {"sure": True, "pattern": "sos", "colour": "red", "sos_code": None}) == "off"
    assert swatch_colour("off", {"sure": True, "pattern": "sos", "colour": "red", "sos_code": 1}) == "red"
    assert swatch_colour("off", {"sure": True, "pattern": "off", "colour": None, "sos_code": None}) == "off"
    assert swatch_colour("green", None) == "green"
    assert swatch_colour("off", blink, lit_lately=False) == "off"  # dark longer than the blink ever is: it went off
