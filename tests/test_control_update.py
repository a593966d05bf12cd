"""Control-request firmware update (250/253/251) from the client into the simulated device."""

from __future__ import annotations

import pytest

from firmware.builder import build_module
from firmware.platforms import Function
from firmware.releases import synthetic_release
from hw.control import ControlChannel, ControlError, Result
from hw.sim.device import Mode
from kiosk.bench import simulated_bench
from kiosk.modes import wait_for_device


def channel(bench, slot):
    device = wait_for_device(slot, 5.0, "normal")
    assert device is not None
    return ControlChannel(device.usb_device, bench.clock, device.platform.quirks)


@pytest.mark.parametrize("platform", ["boron", "photon", "p2"])
def test_a_new_bootloader_by_control_request_fixes_old_bootloader(platform):
    with simulated_bench(f"old-bootloader@{platform}") as bench, bench.clock.actor():
        slot = bench.slot(1)
        bench.clock.sleep(3.0)
        assert slot.device.mode == Mode.SAFE
        release = "2.3.0" if platform == "photon" else ("6.2.0" if platform == "p2" else "6.1.1")
        bootloader = synthetic_release(platform, release)[f"{platform}-bootloader@{release}.bin"]
        done = []
        requests = channel(bench, slot).update_firmware(bootloader, progress=lambda d, t: done.append((d, t)))
        assert requests == 2 + -(-len(bootloader) // 4096)
        assert done[-1] == (len(bootloader), len(bootloader))
        bench.clock.sleep(5.0)
        assert slot.device.mode == Mode.NORMAL
        assert slot.device.modules[(Function.BOOTLOADER, 0)].data == bootloader
        assert any("applying bootloader" in what for _, what in slot.device.log)


def test_a_corrupt_module_is_refused_and_nothing_changes():
    with simulated_bench("old-bootloader") as bench, bench.clock.actor():
        slot = bench.slot(1)
        bench.clock.sleep(3.0)
        bad = bytearray(build_module(platform_id=13, function=Function.BOOTLOADER, version=3001))
        bad[300] ^= 1
        before = slot.device.modules[(Function.BOOTLOADER, 0)].data
        with pytest.raises(ControlError) as exc:
            channel(bench, slot).update_firmware(bytes(bad))
        assert exc.value.result == Result.INVALID_ARGUMENT
        bench.clock.sleep(5.0)
        assert slot.device.modules[(Function.BOOTLOADER, 0)].data == before
        assert slot.device.mode == Mode.SAFE


def test_a_protected_device_refuses_the_update():
    with simulated_bench("protected") as bench, bench.clock.actor():
        slot = bench.slot(1)
        bench.clock.sleep(1.5)
        with pytest.raises(ControlError) as exc:
            channel(bench, slot).update_firmware(build_module(platform_id=13, function=Function.BOOTLOADER, version=1))
        assert exc.value.protected
