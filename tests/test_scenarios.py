"""Every scenario of DESIGN.md's table exists for Boron, Photon and P2 and starts as it says."""

from __future__ import annotations

import pytest

from hw.clock import VirtualClock
from hw.sim.device import Mode
from hw.sim.scenarios import SCENARIOS, build_device, parse_simulate

# What each scenario's device does by itself, 30 device seconds after power-on (mode ever seen, USB).
EXPECTED = {
    "healthy": ({Mode.NORMAL}, "normal"),
    "cold-boot-fixes": ({Mode.HUNG}, "normal"),
    "app-crash": ({Mode.NORMAL, Mode.PANIC}, "normal"),
    "app-heap": ({Mode.NORMAL, Mode.PANIC}, "normal"),
    "frozen": ({Mode.FROZEN}, "normal"),
    "deps-mismatch": ({Mode.SAFE}, "normal"),
    "old-bootloader": ({Mode.SAFE}, "normal"),
    "corrupt-system": ({Mode.DFU}, "dfu"),
    "drops-dfu": ({Mode.DFU}, "dfu"),
    "tinker-first": ({Mode.SAFE}, "normal"),
    "flaky-cable": ({Mode.DFU}, "dfu"),
    "battery-fitted": ({Mode.HUNG}, "normal"),
    "gen2-old": ({Mode.NORMAL, Mode.PANIC}, "normal"),
    "protected": ({Mode.NORMAL, Mode.PANIC}, "normal"),
    "missing-bootloader": ({Mode.NO_BOOTLOADER}, None),
    "dead": ({Mode.NO_BOOTLOADER}, None),
}


def test_every_scenario_of_the_table_is_here():
    assert set(SCENARIOS) == set(EXPECTED)


@pytest.mark.parametrize("platform", ["boron", "photon", "p2"])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_scenario_starts_as_described(name, platform):
    clock = VirtualClock()
    device = build_device(name, platform, clock)
    seen: set[Mode] = set()
    device.set_vbus(True)
    for _ in range(300):
        clock.sleep(0.1)
        seen.add(device.mode)
    modes, usb = EXPECTED[name]
    assert modes <= seen, f"{name}@{platform} went through {seen}"
    assert device.usb_mode == usb or (Mode.PANIC in modes and device.mode == Mode.BOOTING)
    assert device.hazards == []
    assert len({(m.function, m.index) for m in device.modules.values()}) == len(device.modules)


def test_app_crash_reboots_after_two_sos_cycles():
    clock = VirtualClock()
    device = build_device("app-crash", "boron", clock)
    device.set_vbus(True)
    clock.sleep(40.0)
    starts = [t for t, what in device.log if what == "start (panic)"]
    # boot 1 s + app 2 s, then SOS 1 twice (2 x 5.2 s), then the reset: 13.4 s apart
    assert starts[:2] == pytest.approx([13.4, 26.8], abs=0.15)


def test_parse_simulate():
    assert parse_simulate("app-crash@p2, healthy") == [("app-crash", "p2"), ("healthy", "boron")]
    with pytest.raises(LookupError, match="unknown scenario 'x'"):
        parse_simulate("x")
