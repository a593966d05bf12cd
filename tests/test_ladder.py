"""The recovery ladder on the simulator: every scenario of DESIGN.md's table on Boron, Photon and P2 ends
with the verdict the table expects, by the rung that should fix it, and reaches no hazard. Combinations that
cannot happen (hw.sim.scenarios.refusal: gen2-old on Boron and P2, protected on a Photon) are not run.

corrupt-system, drops-dfu and flaky-cable on a Photon: a Gen2 bootloader checks system-part1's header only and
Device OS checks system-part2 at boot, not part 1 (device-os bootloader/src/main.c, system_part2_loader.c,
v2.3.1), so the Photon runs with a damaged part 1 instead of sitting in DFU. The verdict is the same: its
module table says part 1 fails, and the update fixes it (after the safe-mode rung, which a module failing its
checks does not skip, writes Tinker)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from firmware.releases import BODY
from hw.sim.scenarios import SCENARIOS, refusal
from kiosk.bench import simulated_bench
from kiosk.demo_library import demo_library
from kiosk.events import EventBus
from kiosk.ladder import Ladder, RungStarted, RunStarted, Verdict

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
    "battery-fitted": ("needs-technician", None),  # cold boot did not fix it: no rung did
    "gen2-old": ("recovered", "update"),
    "protected": ("needs-owner", None),
    "missing-bootloader": ("recovered-by-swd", "swd-restore"),
    "dfu-only-old-bootloader": ("recovered", "update"),
    "dead": ("damaged-hardware", None),
}
#: pyOCD has no target for the RTL872x: over SWD the kiosk can only tell the technician what to do.
P2_SWD = {"missing-bootloader": ("needs-technician", None), "dead": ("needs-technician", None)}
PLATFORMS = ("boron", "photon", "p2")
#: What cannot happen on these platforms: Gen3/Gen4 answer control requests, a Photon has no Device Protection.
CANNOT_HAPPEN = {("gen2-old", "boron"), ("gen2-old", "p2"), ("protected", "photon")}
COMBINATIONS = [(n, p) for p in PLATFORMS for n in EXPECTED if (n, p) not in CANNOT_HAPPEN]


@pytest.fixture
def small_library(tmp_path):
    """The demo library with small modules (BODY bytes of body each): these tests judge verdicts, rungs and hazards,
    and the kiosk's cost over the device's minimum on small writes; recovery_bench measures the ladder on the
    real-size library (firmware/release_sizes.py) that the demo and ``--simulate`` use."""

    def make(*platforms: str):
        return demo_library(platforms, root=tmp_path / "lib", body_size=BODY)

    return make


def test_every_scenario_has_an_expected_verdict():
    assert set(EXPECTED) == set(SCENARIOS)
    assert {(n, p) for p in PLATFORMS for n in SCENARIOS if refusal(n, p)} == CANNOT_HAPPEN


@pytest.mark.parametrize(("name", "platform"), COMBINATIONS, ids=[f"{n}-{p}" for n, p in COMBINATIONS])
def test_ladder_verdicts(name, platform, small_library):
    expected = P2_SWD.get(name, EXPECTED[name]) if platform == "p2" else EXPECTED[name]
    library = small_library(platform)
    events = []
    bus = EventBus()
    bus.subscribe(events.append)
    with simulated_bench(f"{name}@{platform}") as bench, bench.clock.actor():
        slot = bench.slot(1)
        before = _valid_modules(slot.device)
        ladder = Ladder(slot, library, bus)
        ladder.platform_hint = slot.device.platform  # what the slot's label says, for a device silent on USB
        result = ladder.run()
        assert (result.verdict, result.rung) == expected, result.detail
        assert slot.device.hazards == []
        assert_no_worse(before, _valid_modules(slot.device))
        assert not slot.buttons.mode.pressed and not slot.buttons.reset.pressed
        assert slot.power.is_on
    assert isinstance(events[-1], Verdict) and events[-1].verdict == expected[0]
    assert isinstance(events[0], RunStarted) and events[0].platform == platform
    assert isinstance(next(e for e in events if isinstance(e, RungStarted)), RungStarted)
    assert result.minimum_s > 0 and result.elapsed_s >= result.minimum_s * 0.99
    # The kiosk costs at most a tenth on top of what the device's own timings demand on the path taken.
    steps = [(s["rung"], s["elapsed_s"], s["minimum_s"]) for s in result.steps]
    assert result.elapsed_s <= 1.10 * result.minimum_s, steps


def _valid_modules(device) -> dict:
    """The simulated device's valid modules by (function, index), their versions; any valid app as "app"."""
    with device.clock.lock:
        device.rescan()
        valid = {key: m.version for key, m in device.modules.items() if m.valid_integrity}
    apps = [key for key in valid if key[0] == 5]
    for key in apps:
        del valid[key]
    if apps:
        valid["app"] = 1
    return valid


def assert_no_worse(before: dict, after: dict) -> None:
    """No valid Device OS part lost or downgraded, and a valid app still there if there was one (Tinker
    replacing a crashing app, perhaps in the newer user-part slot, is the fix)."""
    for key, version in before.items():
        assert (key in after) if key == "app" else (key in after and after[key] >= version), (key, version, after)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_device_stuck_in_dfu_gets_a_complete_update_over_dfu_alone(platform, small_library):
    """dfu-only-old-bootloader: the whole release over DFU, the bootloader (and on the P2 prebootloader-part1, in
    a pass of its own) into the OTA region; no control-request update and no YModem are needed to deliver it."""
    from hw.sim.device import Mode
    from kiosk.events import StepStarted

    library = small_library(platform)
    events: list = []
    bus = EventBus()
    bus.subscribe(events.append)
    with simulated_bench(f"dfu-only-old-bootloader@{platform}") as bench, bench.clock.actor():
        slot = bench.slot(1)
        old_bootloader = slot.device.bootloader_version
        result = Ladder(slot, library, bus).run()
        assert (result.verdict, result.rung) == ("recovered", "update"), result.detail
        steps = [e for e in events if isinstance(e, StepStarted)]
        mechanisms = {e.mechanism for e in steps}
        assert mechanisms <= {"dfu", "dfu-ota"} and "dfu-ota" in mechanisms
        ota = [e.name for e in steps if e.mechanism == "dfu-ota"]
        assert len(ota) == (2 if platform == "p2" else 1) and any("-bootloader@" in n for n in ota)
        device = slot.device
        assert device.mode == Mode.NORMAL and device.bootloader_version > old_bootloader
        assert device.flash.read(1, 1753, 1) == b"\xff" and not device.hazards
        # the new Device OS, started under the old bootloader after the DFU leave, applied the bootloader itself
        log = [what for _, what in device.log]
        applied = next(n for n, what in enumerate(log) if what.startswith("applying the pending bootloader 0"))
        assert log[applied - 3 : applied] == ["start (DFU leave)", "usb: gone", "mode: booting"]


def test_four_slots_at_once_take_about_as_long_as_the_slowest_one(tmp_path, small_library):
    scenarios = ["app-crash@boron", "corrupt-system@photon", "frozen@p2", "cold-boot-fixes@argon"]
    small_library("boron", "photon", "p2", "argon")  # made once here, not by each of the five processes

    def run(spec: str) -> list[dict]:
        argv = ["recover", "--all", "--simulate", spec, "--journal", str(tmp_path / "j.sqlite"), "--json",
                "--library", str(tmp_path / "lib")]  # fmt: skip
        out = subprocess.run([sys.executable, "-m", "kiosk.cli", *argv], capture_output=True, text=True, timeout=300)
        return json.loads(out.stdout)

    alone = [run(spec)[0]["elapsed_s"] for spec in scenarios]
    together = run(",".join(scenarios))
    assert [d["verdict"] for d in together] == ["recovered"] * 4
    assert max(d["elapsed_s"] for d in together) <= 1.2 * max(alone)


def test_old_gen2_goes_to_dfu_by_the_14400_baud_trick_not_the_request(small_library):
    """Gen2 on Device OS < 2.0 may ignore request 50 (usb-serial-protocols.md): the trick goes first."""
    from kiosk.events import ModeSwitch

    library = small_library("photon")
    bus, switches = EventBus(), []
    bus.subscribe(lambda e: switches.append(e) if isinstance(e, ModeSwitch) and e.wanted == "dfu" else None)
    with simulated_bench("gen2-old@photon") as bench, bench.clock.actor():
        result = Ladder(bench.slot(1), library, bus).run()
    assert result.verdict == "recovered"
    assert switches and switches[0].via == "14400-baud"


def test_a_dfu_request_ignored_once_is_not_asked_again(small_library):
    """A Boron whose firmware acknowledges request 50 and ignores it (injected: no Boron Device OS does, so no
    scenario models it; gen2-old cannot happen on a Boron): after one ignored request, the buttons go straight."""
    import dataclasses

    from kiosk.events import ModeSwitch

    library = small_library("boron")
    bus, switches = EventBus(), []
    bus.subscribe(lambda e: switches.append(e) if isinstance(e, ModeSwitch) and e.wanted == "dfu" else None)
    with simulated_bench("app-crash@boron") as bench, bench.clock.actor():
        device = bench.slot(1).device
        with bench.clock.lock:
            device.faults = dataclasses.replace(device.faults, control_unreliable=True)
        result = Ladder(bench.slot(1), library, bus).run()
    assert result.verdict == "recovered"
    assert [s.via for s in switches] == ["buttons"]  # one entry into DFU, by the buttons, after the ignored ask


@pytest.mark.parametrize("offset", [0.0, 3.5, 8.0, 11.0, 13.5])
@pytest.mark.parametrize("spec", ["app-crash@boron", "app-heap@photon", "protected@boron", "protected@p2",
                                  "gen2-old@photon"])  # fmt: skip
def test_recover_pressed_at_any_moment_of_a_crash_loop(spec, offset, small_library):
    """The technician presses Recover whenever: mid-SOS (USB and requests dead), rebooting, or running."""
    name, platform = spec.split("@")
    library = small_library(platform)
    with simulated_bench(spec) as bench, bench.clock.actor():
        bench.clock.sleep(offset) if offset else None
        slot = bench.slot(1)
        before = _module_bytes(slot.device) if name == "protected" else None
        ladder = Ladder(slot, library)
        ladder.platform_hint = slot.device.platform
        result = ladder.run()
        assert (result.verdict, result.rung) == EXPECTED[name], result.steps
        assert result.elapsed_s <= 1.10 * result.minimum_s, result.steps
        assert slot.device.hazards == []
        if before is not None:  # Device Protection: nothing written, by any rung
            assert _module_bytes(slot.device) == before


def _module_bytes(device) -> dict:
    device.rescan()
    return {key: repr(m) for key, m in device.modules.items()}
