"""The simulated slot's LED sensor reads the pins' edges instead of sampling in a thread (issue 15): it gives the
samples a sampler thread would take, costs no clock event per sample, and classifies alike."""

from __future__ import annotations

from hw.clock import VirtualClock
from hw.gpio import EdgeLedSensor, LedSensor
from hw.led_classifier import classify
from hw.sim.pins import SimPinFactory

PINS = (5, 6, 13)


def blink(clock: VirtualClock, factory: SimPinFactory, pattern: list[tuple[float, tuple[int, int, int]]]) -> None:
    for at, rgb in pattern:
        def show(rgb=rgb) -> None:
            for pin, lit in zip(PINS, rgb, strict=True):
                (factory.pin(pin).drive_high if lit else factory.pin(pin).drive_low)()

        clock.call_later(at, show)


def sos_like() -> list[tuple[float, tuple[int, int, int]]]:
    out, t = [], 0.005  # (an edge at the very instant of a sample is a tie either reading may take)
    for _ in range(12):  # red flashes of different lengths, then green: edges that fall between samples too
        for on, off in ((0.1, 0.1), (0.3, 0.13), (0.07, 0.3)):
            out += [(t, (1, 0, 0)), (t + on, (0, 0, 0))]
            t += on + off
    return [*out, (t, (0, 1, 0))]


def test_edge_samples_are_the_samples_a_sampler_would_take():
    readings = {}
    for kind in (LedSensor, EdgeLedSensor):
        clock = VirtualClock()
        factory = SimPinFactory(clock)
        for pin in PINS:
            factory.pin(pin).function = "input"
        with clock.actor():
            led = kind(PINS, clock, pin_factory=factory)
            led.start()
            blink(clock, factory, sos_like())
            clock.sleep(15.0)
            readings[kind] = led.samples_since(0.0)
            led.close()
        readings[kind, "events"] = clock.events
    sampled, edged = readings[LedSensor], readings[EdgeLedSensor]
    assert len(edged) == len(sampled) >= 700
    assert [(round(s.t, 6), s.r, s.g, s.b) for s in edged] == [(round(s.t, 6), s.r, s.g, s.b) for s in sampled]
    same = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in classify(r).to_json().items()}
            for r in (edged, sampled)]  # (the sampler's times add up 0.02 s steps: 14.999999999999769)
    assert same[0] == same[1]
    assert readings[EdgeLedSensor, "events"] < readings[LedSensor, "events"] / 5  # no event per sample


def test_a_steady_led_costs_no_events_and_forgets_what_is_older_than_its_history():
    clock = VirtualClock()
    factory = SimPinFactory(clock)
    for pin in PINS:
        factory.pin(pin).function = "input"
    factory.pin(PINS[1]).drive_high()  # steady green
    led = EdgeLedSensor(PINS, clock, pin_factory=factory, history_s=60.0)
    led.start()
    clock.sleep(120.0)
    assert clock.events == 1  # the sleep's own end: nothing else happened
    samples = led.samples_since(0.0)
    assert samples[0].t >= 60.0 - 1e-9 and all(s.g and not s.r for s in samples)
    assert len(samples) == 60 * 50 + 1
