"""The recovery ladder on the simulator: every scenario of DESIGN.md's table on Boron, Photon and P2 ends
with the verdict the table expects, by the rung that should fix it, and reaches no hazard."""

from __future__ import annotations

import pytest

from hw.sim.scenarios import SCENARIOS
from kiosk.bench import simulated_bench
from kiosk.demo_library import demo_library
from kiosk.events import EventBus
from kiosk.ladder import Ladder, RungStarted, Verdict

EXPECTED = {
    "healthy": ("healthy", None),
    "cold-boot-fixes": ("recovered", "cold-boot"),
    "app-crash": ("recovered", "safe-mode"),
    "app-heap": ("recovered", "safe-mode"),
    "frozen": ("recovered", "safe-mode"),
    "deps-mismatch": ("recovered", "update"),
    "old-bootloader": ("recovered", "update"),
    "corrupt-system": ("recovered", "update"),
    "drops-dfu": ("recovered", "update"),
    "tinker-first": ("recovered", "second-try"),
    "flaky-cable": ("recovered", "update"),
    "battery-fitted": ("needs-technician", "cold-boot"),
    "gen2-old": ("recovered", "update"),
    "protected": ("needs-owner", None),
    "missing-bootloader": ("recovered-by-swd", "swd-restore"),
    "dead": ("damaged-hardware", None),
}
#: pyOCD has no target for the RTL872x: over SWD the kiosk can only tell the technician what to do.
P2_SWD = {"missing-bootloader": ("needs-technician", None), "dead": ("needs-technician", None)}


def test_every_scenario_has_an_expected_verdict():
    assert set(EXPECTED) == set(SCENARIOS)


@pytest.mark.parametrize("platform", ["boron", "photon", "p2"])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_ladder_verdicts(name, platform, tmp_path):
    expected = P2_SWD.get(name, EXPECTED[name]) if platform == "p2" else EXPECTED[name]
    library = demo_library([platform], root=tmp_path / "lib")
    events = []
    bus = EventBus()
    bus.subscribe(events.append)
    with simulated_bench(f"{name}@{platform}") as bench, bench.clock.actor():
        slot = bench.slot(1)
        ladder = Ladder(slot, library, bus)
        ladder.platform_hint = slot.device.platform  # what the slot's label says, for a device silent on USB
        result = ladder.run()
        assert (result.verdict, result.rung) == expected, result.detail
        assert slot.device.hazards == []
        assert not slot.buttons.mode.pressed and not slot.buttons.reset.pressed
        assert slot.power.is_on
    assert isinstance(events[-1], Verdict) and events[-1].verdict == expected[0]
    assert isinstance(next(e for e in events if isinstance(e, RungStarted)), RungStarted)
    assert result.minimum_s > 0 and result.elapsed_s >= result.minimum_s * 0.99
