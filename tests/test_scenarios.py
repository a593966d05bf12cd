"""Every scenario of DESIGN.md's table exists for Boron, Photon and P2 where it can happen at all, starts as it
says on each, and runs a Device OS release the platform really had; the bootloader and Device OS checks at
boot follow the device's own versions (firmware.platforms.BOOTLOADERS, BOOT_VALIDATION)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from firmware.builder import build_module
from firmware.module import parse_module
from firmware.platforms import Function, platform_by_name
from firmware.releases import synthetic_release
from firmware.versions import last_release, platform_releases
from hw.clock import VirtualClock
from hw.sim.device import Mode
from hw.sim.scenarios import (
    SCENARIOS,
    ScenarioRefused,
    build_device,
    parse_simulate,
    refusal,
    release_for,
    simulated_platforms,
)
from tests.fixture_paths import fixture_bytes

PLATFORMS = ("boron", "photon", "p2")
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
    "dfu-only-old-bootloader": ({Mode.DFU}, "dfu"),  # on Gen2 too: its system part 1 is erased, not damaged
    "dead": ({Mode.NO_BOOTLOADER}, None),
}
#: A Gen2 bootloader checks only system-part1's header, and Device OS checks system-part2 at boot, not part 1:
#: a Photon whose part 1 fails its CRC runs (bootloader/src/main.c "ToDo add CRC check", v2.3.1).
GEN2 = {name: ({Mode.NORMAL}, "normal") for name in ("corrupt-system", "drops-dfu", "flaky-cable")}
#: Where a scenario cannot happen: on Boron, Photon and P2, these and only these.
REFUSED = {("gen2-old", "boron"), ("gen2-old", "p2"), ("protected", "photon")}
RUNS = [(n, p) for p in PLATFORMS for n in EXPECTED if (n, p) not in REFUSED]


def test_every_scenario_of_the_table_is_here():
    assert set(SCENARIOS) == set(EXPECTED)


def _power_on_and_watch(device, seconds: float = 30.0) -> set[Mode]:
    seen: set[Mode] = set()
    device.set_vbus(True)
    for _ in range(int(seconds * 10)):
        device.clock.sleep(0.1)
        seen.add(device.mode)
    return seen


@pytest.mark.parametrize(("name", "platform"), RUNS, ids=[f"{n}@{p}" for n, p in RUNS])
def test_scenario_starts_as_described(name, platform):
    device = build_device(name, platform, VirtualClock())
    seen = _power_on_and_watch(device)
    modes, usb = (GEN2 if platform == "photon" else {}).get(name, EXPECTED[name])
    assert modes <= seen, f"{name}@{platform} went through {seen}"
    assert device.usb_mode == usb or (Mode.PANIC in modes and device.mode == Mode.BOOTING)
    assert device.hazards == []
    assert len({(m.function, m.index) for m in device.modules.values()}) == len(device.modules)


def test_exactly_these_combinations_are_refused_and_each_says_why():
    refused = {(n, p) for p in PLATFORMS for n in SCENARIOS if refusal(n, p) is not None}
    assert refused == REFUSED
    assert "Device Protection" in refusal("protected", "photon") and "3.3.1" in refusal("protected", "photon")
    assert "Gen2" in refusal("gen2-old", "boron")
    for name, platform in REFUSED:
        with pytest.raises(ScenarioRefused, match=f"{name}@{platform} cannot happen: "):
            parse_simulate(f"healthy,{name}@{platform}")
        with pytest.raises(ScenarioRefused):
            build_device(name, platform, VirtualClock())


def test_refusals_elsewhere():
    assert "bootloader" in refusal("old-bootloader", "electron")  # Device OS replaces an older one at boot
    assert refusal("old-bootloader", "photon") is None
    assert "1.5.4-rc.2" in refusal("protected", "xenon")
    assert "no Device OS release" in refusal("healthy", "electron2")
    assert "no core" in refusal("healthy", "core")
    assert {p.name for p in simulated_platforms()} >= {"photon", "p1", "electron", "argon", "boron", "xenon",
                                                        "bsom", "b5som", "tracker", "esomx", "p2", "trackerm", "msom"}


def test_cli_refuses_a_scenario_that_cannot_happen_and_lists_where():
    run = subprocess.run([sys.executable, "-m", "kiosk.cli", "list", "--simulate", "protected@photon"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "protected@photon cannot happen: Device Protection needs" in run.stderr
    listing = subprocess.run([sys.executable, "-m", "kiosk.cli", "scenarios", "--json"], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    docs = {d["name"]: d for d in json.loads(listing.stdout)}
    assert "photon" in docs["protected"]["cannot_happen_on"]
    assert "boron" not in docs["protected"]["cannot_happen_on"]
    text = subprocess.run([sys.executable, "-m", "kiosk.cli", "scenarios"], capture_output=True, text=True,
                          timeout=120).stdout  # fmt: skip
    assert "not on photon, p1, electron:" in text


@pytest.mark.parametrize("platform", [p.name for p in simulated_platforms()])
def test_every_platform_runs_a_release_it_had(platform):
    for kind in ("current", "previous"):
        release = release_for(kind, platform)
        assert release in platform_releases(platform), (platform, kind, release)
    device = build_device("healthy", platform, VirtualClock())
    assert device.system_version_string in platform_releases(platform)


def test_xenon_runs_its_last_release():
    device = build_device("healthy", "xenon", VirtualClock())
    assert device.system_version_string == "1.5.2" == last_release("xenon", stable=True)
    assert _power_on_and_watch(device, 5.0) >= {Mode.NORMAL}


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


# --- Gen2: the bootloader checks the header, Device OS checks system-part2 --------------------------------


def test_gen2_with_a_damaged_system_part1_runs_and_its_module_table_says_so():
    device = build_device("corrupt-system", "photon", VirtualClock())
    assert _power_on_and_watch(device, 5.0) >= {Mode.NORMAL}
    part1 = device.modules[(Function.SYSTEM_PART, 1)]
    assert not part1.module.crc_ok and not part1.valid_integrity  # what request 90 / serial `s` report


def test_gen2_with_a_damaged_system_part2_runs_in_safe_mode():
    device = build_device("healthy", "photon", VirtualClock())
    part2 = next(d for n, d in synthetic_release("photon", "2.3.0").items() if "system-part2" in n)
    damaged = bytearray(part2)
    damaged[len(damaged) // 2] ^= 0xFF
    device.install(bytes(damaged))
    device.rescan()
    seen = _power_on_and_watch(device, 5.0)
    assert Mode.SAFE in seen and Mode.DFU not in seen


def test_gen2_with_a_bad_system_part1_header_falls_into_dfu():
    device = build_device("healthy", "photon", VirtualClock())
    with device.clock.lock:
        device.flash.load(0, 0x08020184, b"\x00" * 4)  # module_start_address no longer 0x08020000
        device.rescan()
    assert Mode.DFU in _power_on_and_watch(device, 5.0)


def test_electron_checks_no_system_part_at_boot():
    """PLATFORM_ELECTRON_PRODUCTION: "bootloader_validated = true" (system_part2_loader.c, v2.3.1)."""
    device = build_device("healthy", "electron", VirtualClock())
    part = next(d for n, d in synthetic_release("electron", "2.3.0").items() if "system-part3" in n)  # index 2
    damaged = bytearray(part)
    damaged[len(damaged) // 2] ^= 0xFF
    device.install(bytes(damaged))
    device.rescan()
    assert Mode.SAFE not in _power_on_and_watch(device, 5.0)


def test_a_real_monolithic_image_boots_on_a_photon():
    """RC4_unlocker.bin: a monolithic image at 0x08020000 for platform 6. The Gen2 bootloader checks its header
    (start, end, platform; not its function) and starts it."""
    unlocker = fixture_bytes("RC4_unlocker.bin")
    m = parse_module(unlocker)
    assert (m.function, m.start_address, m.platform_id) == (Function.MONO_FIRMWARE, 0x08020000, 6)
    device = build_device("healthy", "photon", VirtualClock())
    with device.clock.lock:
        device.flash.load(0, 0x08020000, b"\xff" * 0x80000)  # the system parts' sectors, erased as DFU would
        device.install(unlocker)
        device.rescan()
    seen = _power_on_and_watch(device, 5.0)
    assert Mode.DFU not in seen and Mode.NORMAL in seen


# --- Gen3: where the bootloader of each version looks for system-part1 ------------------------------------

REAL_GEN3_SYSTEM_PARTS = [
    ("argon", "cli__binaries__argon-system-part1@4.1.0.bin"),
    ("tracker", "tracker-system-part1@3.1.0-alpha.2.bin"),
    ("bsom", "boron-som-system-part1@1.1.0-rc.1.bin"),
    ("xenon", "080_system-part1-xenon.bin"),
]


@pytest.mark.parametrize(("platform", "fixture"), REAL_GEN3_SYSTEM_PARTS, ids=[p for p, _ in REAL_GEN3_SYSTEM_PARTS])
def test_a_real_system_part_at_0x30000_is_found_after_the_restart(platform, fixture):
    """Real system parts up to 6.1.1 start at 0x30000; every Gen3 bootloader finds them there (6.1.2 and later
    after trying 0x28000). The simulator looked at 0x28000 only: "not reported"."""
    data = fixture_bytes(fixture)
    module = parse_module(data)
    assert module.start_address == 0x30000
    device = build_device("healthy", platform, VirtualClock())
    with device.clock.lock:
        device.install(data)
        device.rescan()
    assert device.modules[(Function.SYSTEM_PART, 1)].data == data
    assert device._boot_image().data == data
    assert device.system_version == module.version


def test_a_6_1_2_system_part_needs_the_6_1_2_bootloader():
    """6.1.2 moved system-part1 to 0x28000; a 6.1.1 bootloader (3001) looks at 0x30000 only, a 6.1.2 one (3002)
    at 0x28000, then 0x30000 (bootloader/src/nRF52840/dfu_usb.c, test/v6.1.2)."""
    files = synthetic_release("boron", "6.1.2")
    system = next(d for n, d in files.items() if "system-part1" in n)
    bootloader = next(d for n, d in files.items() if "bootloader" in n)
    assert parse_module(system).start_address == 0x28000
    device = build_device("healthy", "boron", VirtualClock())  # 6.1.1: bootloader 3001, system part at 0x30000
    with device.clock.lock:
        device.flash.load(0, 0x28000, b"\xff" * 0x8C000)
        device.install(system)
        device.rescan()
    assert device.bootloader_version == 3001 and device._boot_image() is None
    with device.clock.lock:
        device.install(bootloader)
        device.rescan()
    assert device.bootloader_version == 3002 and device._boot_image().data == system


def test_a_6_1_2_bootloader_falls_back_to_0x30000():
    bootloader = next(d for n, d in synthetic_release("boron", "6.1.2").items() if "bootloader" in n)
    device = build_device("healthy", "boron", VirtualClock())
    with device.clock.lock:
        device.install(bootloader)
        device.rescan()
    assert device._boot_image().module.start_address == 0x30000
    assert _power_on_and_watch(device, 5.0) >= {Mode.NORMAL}


def test_gen3_with_a_damaged_system_part_in_either_place_falls_into_dfu():
    for release in ("6.1.1", "6.1.2"):
        files = synthetic_release("boron", release)
        system = bytearray(next(d for n, d in files.items() if "system-part1" in n))
        system[len(system) // 2] ^= 0xFF
        device = build_device("healthy", "boron", VirtualClock())
        with device.clock.lock:
            device.flash.load(0, 0x28000, b"\xff" * 0x8C000)
            device.install(next(d for n, d in files.items() if "bootloader" in n))
            device.install(bytes(system))
            device.rescan()
        assert Mode.DFU in _power_on_and_watch(device, 3.0), release


def test_a_module_built_for_the_layout_of_its_release():
    boron = platform_by_name("boron")
    assert [hex(s.start) for s in boron.slots_for(Function.SYSTEM_PART, 1)] == ["0x28000", "0x30000", "0x30000"]
    assert boron.slots_for(Function.SYSTEM_PART, 1, 6101)[0].start == 0x30000
    assert boron.slots_for(Function.SYSTEM_PART, 1, 6102)[0].start == 0x28000
    built = build_module(platform_id=13, function=Function.SYSTEM_PART, version=6101, index=1, start_address=0x30000)
    assert boron.slot_for_module(4, 1, 0x30000, parse_module(built).end_address) is not None
