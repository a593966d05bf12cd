"""The simulated Device OS applies a pending update from its OTA region at boot, as device-os does
(system/src/main.cpp app_setup_and_loop, hal/src/*/ota_flash_hal.cpp HAL_FLASH_ApplyPendingUpdate, v6.2.0):
the DCT flag (0xA5 at offset 1753 of alt 1) is cleared, the module in the region checked, applied, and 100 ms
later the device resets; safe mode applies it too, which is what lets a system part with an unmet bootloader
dependency repair itself."""

from __future__ import annotations

import pytest

from firmware.builder import build_module
from firmware.module import parse_module
from firmware.platforms import PENDING_UPDATE, Function, ota_address, ota_region, platform_by_name
from firmware.releases import synthetic_release
from hw.clock import VirtualClock
from hw.sim.device import Mode
from hw.sim.scenarios import build_device

CURRENT = {"boron": "6.1.1", "photon": "2.3.0", "p2": "6.2.0"}


def _stage(device, data: bytes) -> None:
    """What a DFU session of Device Restore leaves behind: the module in the OTA region and the flag set."""
    region = ota_region(device.platform, device.system_version)
    part1 = device.modules[(Function.SYSTEM_PART, 1)].module
    address = ota_address(region, part1.end_address)
    device.flash.load(region.alt, address, data)
    device.flash.load(PENDING_UPDATE.alt, PENDING_UPDATE.offset, bytes([PENDING_UPDATE.value]))


def _run(device, seconds: float = 20.0) -> set[Mode]:
    seen = set()
    device.set_vbus(True)
    for _ in range(int(seconds * 10)):
        device.clock.sleep(0.1)
        seen.add(device.mode)
    return seen


@pytest.mark.parametrize("platform", ["boron", "photon", "p2"])
def test_safe_mode_applies_the_pending_bootloader_and_the_device_then_runs(platform):
    """old-bootloader: the system part needs a newer bootloader, so safe mode; with the newer one in the OTA
    region and the flag set, Device OS applies it at boot and the next boot runs normally."""
    device = build_device("old-bootloader", platform, VirtualClock())
    boot = synthetic_release(platform, CURRENT[platform])[f"{platform}-bootloader@{CURRENT[platform]}.bin"]
    assert device.bootloader_version < parse_module(boot).version
    _stage(device, boot)
    seen = _run(device)
    assert device.mode == Mode.NORMAL and Mode.SAFE not in seen
    assert device.bootloader_version == parse_module(boot).version
    assert device.flash.read(1, PENDING_UPDATE.offset, 1) == bytes([PENDING_UPDATE.clear])
    applying = [t for t, what in device.log if what.startswith("applying the pending bootloader 0")]
    restarted = [t for t, what in device.log if what == "start (pending update applied)"]
    assert len(applying) == 1 and len(restarted) == 1
    # the apply takes the module's flash time, then Device OS waits 100 ms before it resets
    assert restarted[0] - applying[0] == pytest.approx(device.apply_time_s(parse_module(boot)) + 0.1)
    assert device.hazards == []


def test_without_the_flag_nothing_is_applied():
    device = build_device("old-bootloader", "boron", VirtualClock())
    boot = synthetic_release("boron", "6.1.1")["boron-bootloader@6.1.1.bin"]
    _stage(device, boot)
    device.flash.load(1, PENDING_UPDATE.offset, b"\xff")
    _run(device)
    assert device.mode == Mode.SAFE and device.bootloader_version < parse_module(boot).version


def test_a_damaged_module_in_the_region_is_not_applied_and_the_flag_is_cleared_anyway():
    device = build_device("old-bootloader", "boron", VirtualClock())
    boot = bytearray(synthetic_release("boron", "6.1.1")["boron-bootloader@6.1.1.bin"])
    boot[len(boot) // 2] ^= 0xFF
    _stage(device, bytes(boot))
    _run(device)
    assert device.mode == Mode.SAFE  # Device OS boots on (main.cpp resets only on an applied update)
    assert device.flash.read(1, PENDING_UPDATE.offset, 1) == b"\xff"
    assert any("no module Device OS accepts" in what for _, what in device.log)


def test_a_p2_bootloader_whose_prebootloader_is_too_old_is_not_applied():
    """HAL_FLASH_End checks the module's own dependencies: the RTL bootloader needs prebootloader-part1."""
    device = build_device("healthy", "p2", VirtualClock())
    files = synthetic_release("p2", "6.2.0")
    boot = parse_module(files["p2-bootloader@6.2.0.bin"])
    (dep,) = [d for d in boot.real_dependencies if (d.function, d.index) == (Function.BOOTLOADER, 2)]
    part1 = build_module(platform_id=32, function=Function.BOOTLOADER, index=2, version=dep.version - 1,
                         start_address=0x08014000, body_size=4096)  # fmt: skip
    device.install(part1)
    device.rescan()
    assert device.modules[(Function.BOOTLOADER, 2)].version == dep.version - 1
    _stage(device, files["p2-bootloader@6.2.0.bin"])
    _run(device)
    assert not any(what.startswith("applying the pending") for _, what in device.log)
    assert any("no module Device OS accepts" in what for _, what in device.log)


def test_a_reset_while_the_bootloader_is_applied_is_a_hazard():
    device = build_device("old-bootloader", "boron", VirtualClock())
    boot = synthetic_release("boron", "6.1.1")["boron-bootloader@6.1.1.bin"]
    _stage(device, boot)
    device.set_vbus(True)
    while device.applying is None:
        device.clock.sleep(0.05)
    device.set_reset_low(True)
    device.clock.sleep(0.1)
    device.set_reset_low(False)
    assert any("RESET while Device OS applied bootloader 0" in h.what for h in device.hazards)


def test_the_ota_region_is_that_of_the_running_device_os():
    """flash_mal.h: a 4 MB Gen3 device keeps it at 0x289000 up to 5.4.x and at 0x24C000 from 5.5.0; the 8 MB
    Tracker at 0x689000; the P2 from 5.5.0 at 0x08300000, before after system-part1."""
    boron, tracker, p2 = (platform_by_name(n) for n in ("boron", "tracker", "p2"))
    assert ota_region(boron, 5301).address == 0x80289000 and ota_region(boron, 5901).address == 0x8024C000
    assert ota_region(tracker, 6101).address == 0x80689000
    assert ota_region(p2, 6200).address == 0x08300000
    assert ota_address(ota_region(p2, 5301), 0x0818C98C) == 0x0818D000
    assert ota_region(boron, 1102) is None  # no pending update before 1.2.1 (device-os PR #1788)
