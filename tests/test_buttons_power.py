"""Buttons and power drivers against the simulated device, through gpiozero's own (mock) pins.

Timings are checked on the pins' recorded states (device seconds on the virtual clock), and the
simulated device records any hazard it actually reached, so a test can assert none ever was.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hw.hazard import HazardRefused
from hw.sim.device import Mode
from kiosk.bench import simulated_bench


def lows(pin, active_high: bool = True) -> list[tuple[float, float]]:
    """(pressed at, released at) spans of a transistor-wired button pin from its recorded history."""
    spans, start = [], None
    for t, state in pin.history:
        pressed = bool(state) == active_high
        if pressed and start is None:
            start = t
        elif not pressed and start is not None:
            spans.append((start, t))
            start = None
    return spans


@pytest.fixture
def bench():
    with simulated_bench("healthy@boron") as b, b.clock.actor():
        b.clock.sleep(3.0)  # let the device boot
        yield b


def test_tap_reset_is_a_clean_150_ms_press(bench):
    slot = bench.slot(1)
    slot.buttons.tap_reset()
    ((pressed, released),) = lows(slot.buttons.reset.pin)
    assert released - pressed == pytest.approx(0.15)
    # gpiozero's own record says the same: the last state change is the release, 0.15 s after the press
    assert slot.buttons.reset.pin.states[-1].timestamp == pytest.approx(0.15)
    bench.clock.sleep(2.0)
    assert slot.device.mode == Mode.NORMAL


@pytest.mark.parametrize(
    ("stage", "window", "mode"), [("dfu", (3.0, 6.0), Mode.DFU), ("safe-mode", (1.0, 3.0), Mode.SAFE)]
)
def test_bootloader_stage_hold_lands_inside_its_window(bench, stage, window, mode):
    slot = bench.slot(1)
    result = slot.buttons.enter_bootloader_stage(stage)
    assert result.by == "led"
    ((reset_down, reset_up),) = lows(slot.buttons.reset.pin)
    ((mode_down, mode_up),) = lows(slot.buttons.mode.pin)
    assert mode_down <= reset_down and mode_up > reset_up  # MODE held through the RESET tap
    held = mode_up - reset_up  # the bootloader times MODE from RESET release
    assert window[0] <= held < window[1]
    assert held < window[0] + 0.6  # released soon after the stage showed: no time wasted
    bench.clock.sleep(3.0)
    assert slot.device.mode == mode
    assert slot.device.hazards == []


def test_without_led_sensor_the_hold_is_timed(bench):
    slot = bench.slot(1)
    slot.buttons.led = None
    result = slot.buttons.enter_bootloader_stage("dfu")
    assert result.by == "clock" and result.held_s == pytest.approx(3.3)
    bench.clock.sleep(1.0)
    assert slot.device.mode == Mode.DFU


def test_listening_by_a_3_second_hold(bench):
    slot = bench.slot(1)
    slot.buttons.enter_listening()
    ((down, up),) = lows(slot.buttons.mode.pin)
    assert 3.0 < up - down <= 5.0
    assert slot.device.mode == Mode.LISTENING


def test_two_listening_holds_are_not_one_10_s_hold(bench):
    # found by the hazard property below: the simulated device took the second hold's MODE for the first's,
    # 10 s after the first press, and recorded credentials cleared that a real device never clears
    slot = bench.slot(1)
    slot.buttons.led = None
    slot.buttons.enter_listening()
    bench.clock.sleep(4.0)
    slot.buttons.enter_listening()
    bench.clock.sleep(1.0)
    assert slot.device.mode == Mode.LISTENING and slot.device.hazards == []


def test_the_simulated_device_still_sees_a_real_10_s_hold_in_listening_mode(bench):
    device = bench.slot(1).device  # the device itself: the kiosk's guard would never hold MODE this long
    device.set_mode_low(True)
    bench.clock.sleep(10.5)
    device.set_mode_low(False)
    assert [h.what for h in device.hazards] == ["MODE held 10 s in listening mode (credentials cleared)"]


def test_runtime_hold_over_5_s_is_refused_before_any_pin_moves(bench):
    slot = bench.slot(1)
    before = list(slot.buttons.mode.pin.history)
    with pytest.raises(HazardRefused):
        slot.buttons.hold_mode(6.0)
    assert list(slot.buttons.mode.pin.history) == before


def test_second_mode_press_too_soon_is_refused(bench):
    slot = bench.slot(1)
    slot.buttons.hold_mode(0.2)
    bench.clock.sleep(0.5)
    before = list(slot.buttons.mode.pin.history)
    with pytest.raises(HazardRefused, match="double click"):
        slot.buttons.hold_mode(0.2)
    assert list(slot.buttons.mode.pin.history) == before
    assert slot.device.hazards == []


def test_cold_boot_drains_and_reboots(bench):
    slot = bench.slot(1)
    off_for = slot.power.cold_boot()
    assert off_for == pytest.approx(5.0)
    assert slot.device.mode in (Mode.BOOTING, Mode.NORMAL)
    bench.clock.sleep(3.0)
    assert slot.device.mode == Mode.NORMAL
    assert slot.device.hazards == []


def test_power_on_too_soon_is_refused(bench):
    slot = bench.slot(1)
    slot.power.off()
    bench.clock.sleep(2.0)
    with pytest.raises(HazardRefused, match="capacitors drain"):
        slot.power.on()
    assert slot.device.mode == Mode.OFF
    bench.clock.sleep(3.0)
    slot.power.on()
    bench.clock.sleep(3.0)
    assert slot.device.mode == Mode.NORMAL


# --- the guard holds whatever the kiosk does ----------------------------------------------------

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("tap_reset"), st.just(0.0)),
        st.tuples(st.just("hold_mode"), st.floats(0.0, 8.0)),
        st.tuples(st.just("listen"), st.just(0.0)),
        st.tuples(st.just("dfu"), st.just(0.0)),
        st.tuples(st.just("safe"), st.just(0.0)),
        st.tuples(st.just("cold_boot"), st.just(0.0)),
        st.tuples(st.just("power_off"), st.just(0.0)),
        st.tuples(st.just("power_on"), st.just(0.0)),
        st.tuples(st.just("wait"), st.floats(0.0, 4.0)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS, platform=st.sampled_from(["boron", "photon", "p2"]), sensor=st.booleans())
def test_hazard_guard_holds_for_any_sequence_of_actions(actions, platform, sensor):
    with simulated_bench(f"healthy@{platform}") as bench, bench.clock.actor():
        slot = bench.slot(1)
        if not sensor:
            slot.buttons.led = None
        do = {
            "tap_reset": lambda _: slot.buttons.tap_reset(),
            "hold_mode": lambda s: slot.buttons.hold_mode(s),
            "listen": lambda _: slot.buttons.enter_listening(),
            "dfu": lambda _: slot.buttons.enter_bootloader_stage("dfu"),
            "safe": lambda _: slot.buttons.enter_bootloader_stage("safe-mode"),
            "cold_boot": lambda _: slot.power.cold_boot(),
            "power_off": lambda _: slot.power.off(),
            "power_on": lambda _: slot.power.on(),
            "wait": lambda s: bench.clock.sleep(s),
        }
        for name, arg in actions:
            with contextlib.suppress(HazardRefused):
                do[name](arg)
        bench.clock.sleep(1.0)
        device = slot.device
        assert device.hazards == [], device.hazards
        # and from the pins themselves: no MODE hold reached 6.5 s, no power cut shorter than 5 s
        assert all(up - down < 6.5 for down, up in lows(slot.buttons.mode.pin))
        vbus = slot.power.vbus.pin.history
        offs = [t for t, s in vbus if not s]
        ons = [t for t, s in vbus if s]
        for off_at in offs:
            later = [t for t in ons if t > off_at]
            if later:
                assert later[0] - off_at >= 5.0 - 1e-6  # float subtraction of clock times
