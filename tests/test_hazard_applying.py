"""The hazard guard while a device applies an update (device-os PR #2151: a bootloader update cut off mid-way can
brick a Gen3 device): power cuts, RESET and DFU leave are refused until the update is seen applied or its time is
over, and the ladder waits for it rather than being refused."""

from __future__ import annotations

import pytest

from firmware.releases import BODY
from hw.clock import VirtualClock
from hw.hazard import HazardGuard, HazardRefused
from kiosk import executor as executor_module
from kiosk.bench import simulated_bench
from kiosk.demo_library import demo_library
from kiosk.ladder import Ladder


def test_the_window_refuses_power_cut_reset_and_dfu_leave_then_closes_on_its_own():
    clock = VirtualClock()
    guard = HazardGuard(clock)
    guard.device_applying("bootloader 0 v3100", 4.0)
    for action in ("power cut", "RESET", "leaving DFU"):
        with pytest.raises(HazardRefused, match=rf"{action} now: the device is applying bootloader 0 v3100.*Wait 4\.0"):
            guard.check_not_applying(action)
    with pytest.raises(HazardRefused):
        guard.check_power_off()
    clock.sleep(3.0)
    assert guard.applying_wait_needed() == pytest.approx(1.0)
    guard.device_applying("ncp 0 v7", 0.5)  # a shorter second window never shortens the first
    assert guard.applying_wait_needed() == pytest.approx(1.0)
    clock.sleep(1.0)
    assert guard.applying_wait_needed() == 0.0
    guard.check_not_applying("RESET")  # over: allowed


def test_seen_applied_closes_the_window_early():
    guard = HazardGuard(VirtualClock())
    guard.device_applying("bootloader 0 v3100", 60.0)
    guard.device_applied()
    assert guard.applying_wait_needed() == 0.0
    guard.check_power_off()


def test_while_the_device_applies_its_bootloader_no_pin_moves_and_the_device_comes_back(tmp_path, monkeypatch):
    """dfu-only-old-bootloader on a Boron: the bootloader goes into the OTA region; while Device OS applies it,
    the kiosk's own cold boot and RESET are refused before any pin moves, and the device records no hazard."""
    library = demo_library(["boron"], root=tmp_path / "lib", body_size=BODY)
    tried: list[str] = []
    original = executor_module.FlashExecutor._device_applying

    def applying_then_try(self, applying, **kwargs):
        original(self, applying, **kwargs)
        if applying is None:
            return
        vbus_before = self.slot.power.is_on
        for name, act in (("cold boot", self.slot.power.cold_boot), ("reset", self.slot.buttons.tap_reset)):
            try:
                act()
            except HazardRefused as exc:
                tried.append(f"{name} refused: {exc}")
            else:
                tried.append(f"{name} done")
        assert self.slot.power.is_on == vbus_before and not self.slot.buttons.reset.pressed

    monkeypatch.setattr(executor_module.FlashExecutor, "_device_applying", applying_then_try)
    with simulated_bench("dfu-only-old-bootloader@boron") as bench, bench.clock.actor():
        slot = bench.slot(1)
        old = slot.device.bootloader_version
        result = Ladder(slot, library).run()
        assert (result.verdict, result.rung) == ("recovered", "update"), result.detail
        assert tried and all(" refused: " in t for t in tried), tried
        assert any("applying bootloader" in t for t in tried)
        assert slot.device.hazards == [] and slot.device.bootloader_version > old
        assert slot.buttons.guard.applying_wait_needed() == 0.0  # seen applied: the window closed at once
        slot.buttons.tap_reset()  # and RESET is allowed again


def test_the_ladder_waits_for_an_apply_before_its_next_step(tmp_path):
    library = demo_library(["boron"], root=tmp_path / "lib", body_size=BODY)
    with simulated_bench("healthy@boron") as bench, bench.clock.actor():
        slot = bench.slot(1)
        slot.buttons.guard.device_applying("bootloader 0 v3100", 12.0)  # left by an earlier flash, say
        started = bench.clock.now()
        result = Ladder(slot, library).run()
        assert result.verdict == "healthy"
        first = result.steps[0]
        assert bench.clock.now() - started >= 12.0 + first["elapsed_s"] - 1e-6


def test_a_bootloader_sent_by_control_request_is_guarded_until_the_device_reports_it(tmp_path, monkeypatch, capsys):
    from firmware.releases import synthetic_release
    from kiosk.cli import main

    boot = tmp_path / "boron-bootloader@6.1.1.bin"
    boot.write_bytes(synthetic_release("boron", "6.1.1")[boot.name])
    windows: list[float] = []
    original = executor_module.FlashExecutor._device_applying

    def applying_then_try(self, applying, **kwargs):
        original(self, applying, **kwargs)
        if applying is None:
            return
        windows.append(self.slot.buttons.guard.applying_wait_needed())
        with pytest.raises(HazardRefused, match="applying bootloader"):
            self.slot.power.cold_boot()

    monkeypatch.setattr(executor_module.FlashExecutor, "_device_applying", applying_then_try)
    status = main(["flash", "--simulate", "old-bootloader@boron", "--journal", str(tmp_path / "j.sqlite"),
                   "--json", str(boot)])  # fmt: skip
    capsys.readouterr()
    assert status == 0
    # one window, as long as the apply may take (its flash time and a boot, with margin), not the wait's 240 s
    assert len(windows) == 1 and 0 < windows[0] < 60
