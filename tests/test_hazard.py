"""hw.hazard: the guard refuses before any pin moves."""

from __future__ import annotations

import pytest

from hw.clock import VirtualClock
from hw.hazard import GuardLimits, HazardGuard, HazardRefused


def test_bootloader_hold_must_stop_before_six_seconds():
    guard = HazardGuard(VirtualClock())
    guard.check_mode_hold(5.9, in_bootloader=True)
    for seconds in (6.0, 6.5, 10.0):
        with pytest.raises(HazardRefused, match="factory-restore"):
            guard.check_mode_hold(seconds, in_bootloader=True)


def test_runtime_hold_never_past_five_seconds():
    guard = HazardGuard(VirtualClock())
    guard.check_mode_hold(5.0, in_bootloader=False)
    with pytest.raises(HazardRefused, match="clearing credentials"):
        guard.check_mode_hold(5.01, in_bootloader=False)


def test_no_second_mode_press_within_1_2_seconds():
    clock = VirtualClock()
    guard = HazardGuard(clock)
    guard.check_mode_press()
    guard.mode_released()
    clock.sleep(0.5)
    with pytest.raises(HazardRefused, match=r"double click.*Wait 0\.70 s"):
        guard.check_mode_press()
    assert guard.mode_wait_needed() == pytest.approx(0.7)
    clock.sleep(0.7)
    guard.check_mode_press()


def test_power_stays_off_for_the_drain_time():
    clock = VirtualClock()
    guard = HazardGuard(clock, GuardLimits(drain_s=6.0))
    guard.check_power_on()  # never cut: fine
    guard.powered_off()
    clock.sleep(5.9)
    with pytest.raises(HazardRefused, match="capacitors drain"):
        guard.check_power_on()
    clock.sleep(0.1)
    guard.check_power_on()


@pytest.mark.parametrize(
    "limits",
    [
        {"drain_s": 4.9},
        {"bootloader_hold_s": 6.5},
        {"runtime_hold_s": 10.0},
        {"mode_gap_s": 1.0},
    ],
)
def test_config_can_make_the_guard_stricter_never_looser(limits):
    with pytest.raises(ValueError):
        GuardLimits(**limits)
    stricter = GuardLimits(drain_s=8.0, bootloader_hold_s=5.0, runtime_hold_s=4.0, mode_gap_s=2.0)
    assert stricter.drain_s == 8.0
