"""The bench's LED watcher: what each card's LED swatch shows, and now and then what the LED reads as, at a cost
that stays near nothing while nothing changes.

- The swatch is looked at every ``SWATCH_EVERY_S`` real seconds and posted only when it changed. A pattern the last
  classification was sure of (a blink, breathing, a read SOS) shows steadily in its colour: its words on the card
  say how it blinks, and a 5 Hz blink at 3x cannot be drawn truthfully anyway. A dark moment of such a pattern
  does not flicker it; any other colour lit shows at once (the device changed state).
- The last ``LED_WINDOW_S`` device seconds are classified every ``CLASSIFY_EVERY_S`` real seconds, unless a
  steady LED or a steady blink shows the same shape as the window last classified (the same states, the same
  one or two kinds of run between edges, colour and length): it would read the same again, so that reading
  stands. A window that keeps changing shape but reading the same (a crash loop shows the same SOS over and over)
  is read less and less often, down to every ``CLASSIFY_AT_MOST_S``; a different reading, or a colour lit that
  the window read never showed, brings the pace back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kiosk.service.posts import LedSeen

SWATCH_EVERY_S = 0.5  # real seconds between looks at each LED for its swatch
CLASSIFY_EVERY_S = 2.0  # real seconds between classifications of a window that changed shape ...
CLASSIFY_AT_MOST_S = 16.0  # ... doubling up to this while each says what the last said (a crash loop's SOS)
LED_WINDOW_S = 15.0  # device seconds of samples a classification reads: long enough for SOS codes up to 8
DARK_MOMENT_S = 2.0  # device seconds: dark longer than any dark moment of a steady pattern is the LED going off
#: Patterns that show steadily in their colour on the swatch once the classifier is sure of them.
STEADY_ON_SWATCH = frozenset({"solid", "blink-fast", "blink-normal", "blink-slow", "breathing", "sos"})

Shape = frozenset[tuple[tuple[bool, bool, bool], int]]


def window_shape(samples: Sequence[Any], window_s: float) -> Shape | None:
    """What a steady LED or a steady blink looks like over a window that spans ``window_s``: the states seen and
    the runs (state, samples) between edges, wherever the window cuts them. None for a window not yet whole, or
    one with more than two kinds of run (an SOS, a crash loop, a change: such a window is read afresh)."""
    if not samples or samples[-1].t - samples[0].t < window_s * 0.95:
        return None
    runs: list[list] = []
    for s in samples:
        state = (s.r, s.g, s.b)
        if runs and runs[-1][0] == state:
            runs[-1][1] += 1
        else:
            runs.append([state, 1])
    inner = {(state, n) for state, n in runs[1:-1]}
    if len(inner) > 2:
        return None
    return frozenset(inner | {(state, 0) for state, _ in runs})


def swatch_colour(sampled: str | None, reading: dict[str, Any] | None, lit_lately: bool = True) -> str | None:
    """What the swatch shows: the sure pattern's colour through its dark moments (``lit_lately``: something was
    lit within DARK_MOMENT_S), else the colour sampled now."""
    if reading is None or not reading.get("sure") or reading.get("pattern") not in STEADY_ON_SWATCH:
        return sampled
    if sampled == "off" and not lit_lately:
        return sampled  # dark for longer than the pattern ever is: the LED went off
    if reading["pattern"] == "sos" and reading.get("sos_code") is None:
        return sampled
    colour = reading.get("colour")
    return colour if colour and sampled in (colour, "off") else sampled


def watch_leds(slots: Sequence[Any], post: Callable[[Any], Any], stop: threading.Event,
               closed: Callable[[], bool]) -> None:  # fmt: skip
    """Until ``stop`` (or ``closed()``): post LedSeen for each slot with an LED sensor as its swatch or reading
    changes."""
    from hw.led_classifier import classify
    from hw.led_signals import COLOUR_NAMES

    slots = [s for s in slots if s.led.available]
    for slot in slots:
        slot.led.start()
    shown: dict[int, str | None] = {}
    readings: dict[int, dict[str, Any]] = {}
    shapes: dict[int, Shape] = {}
    seen: dict[int, set[str | None]] = {}  # the colours in the window each slot's reading was made of
    every = {slot.index: CLASSIFY_EVERY_S for slot in slots}  # real seconds between this slot's classifications
    due = {slot.index: 0.0 for slot in slots}
    while not stop.is_set() and not closed():
        for slot in slots:
            now = slot.clock.now()
            recent = slot.led.samples_since(now - 0.2)
            sampled = COLOUR_NAMES.get((recent[-1].r, recent[-1].g, recent[-1].b)) if recent else None
            reading = None
            if time.monotonic() >= due[slot.index]:
                samples = slot.led.samples_since(now - LED_WINDOW_S)
                shape = window_shape(samples, LED_WINDOW_S)
                if shape is not None and shapes.get(slot.index) == shape:
                    pass  # the same shape as the window last read: that reading stands
                elif len(samples) >= 20:
                    reading = classify(samples).to_json()
                    same = _summary(reading) == _summary(readings.get(slot.index))
                    every[slot.index] = min(every[slot.index] * 2, CLASSIFY_AT_MOST_S) if same else CLASSIFY_EVERY_S
                    readings[slot.index] = reading
                    seen[slot.index] = {COLOUR_NAMES.get((x.r, x.g, x.b)) for x in samples}
                    if shape is not None:
                        shapes[slot.index] = shape
                    else:
                        shapes.pop(slot.index, None)
                due[slot.index] = time.monotonic() + every[slot.index]
            lately = slot.led.samples_since(now - DARK_MOMENT_S) if sampled == "off" else ()
            lit = swatch_colour(sampled, readings.get(slot.index), any(x.r or x.g or x.b for x in lately))
            if sampled not in seen.get(slot.index, (sampled,)):  # a colour the window read never showed: read soon
                due[slot.index] = min(due[slot.index], time.monotonic() + CLASSIFY_EVERY_S)
                every[slot.index] = CLASSIFY_EVERY_S
            if lit != shown.get(slot.index, "") or reading is not None:
                shown[slot.index] = lit
                post(LedSeen(slot.index, lit, reading))
        stop.wait(SWATCH_EVERY_S)


def _summary(reading: dict[str, Any] | None) -> tuple | None:
    """What a reading says, for telling whether the next one says anything new."""
    if reading is None:
        return None
    return reading.get("colour"), reading.get("pattern"), reading.get("sos_code"), reading.get("sure")

