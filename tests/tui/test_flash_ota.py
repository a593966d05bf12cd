"""The Flash screen: by default the kiosk chooses the transport per module as Particle's tools do, so a device stuck
in DFU gets its bootloader over DFU into the OTA region, applied by Device OS and verified by its module table; a
refusal names the transport that plans, found by checking again."""

from __future__ import annotations

from hw.sim.device import Mode
from kiosk.tui.screens.flash import FlashScreen
from tests.tui.conftest import ready, wait_until
from tests.tui.test_screens_hold import result_text, tick_module


async def test_a_dfu_only_device_gets_system_part_and_bootloader_from_the_screen(kiosk):
    app = kiosk("dfu-only-old-bootloader@boron")
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("m")
        assert isinstance(app.screen, FlashScreen)
        await wait_until(pilot, lambda: bool(app.screen.sources), 20, "the library's modules")
        tick_module(app, "system-part1")
        tick_module(app, "6.1.1 bootloader")
        await pilot.click("#check")
        await wait_until(pilot, lambda: "OK to flash" in result_text(app), 30, "the checked plan")
        shown = result_text(app)
        assert "DFU into the OTA region" in shown and shown.index("system-part1") < shown.index("bootloader")
        await pilot.click("#flash")
        await wait_until(pilot, lambda: app.states[1].verdict is not None and not app.states[1].running, 120,
                         "the flash to end")  # fmt: skip
        assert app.states[1].verdict == "flashed", result_text(app)
        device = app.test_engine.bench.slot(1).device
        assert device.mode == Mode.NORMAL and not device.hazards
        assert any(what.startswith("applying the pending bootloader 0") for _, what in device.log)


async def test_a_refusal_names_the_transport_that_plans(kiosk):
    app = kiosk("healthy@boron")  # Device OS 6.1.1: no YModem
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("m")
        await wait_until(pilot, lambda: bool(app.screen.sources), 20, "the library's modules")
        tick_module(app, "6.1.1 bootloader")
        await pilot.click("#transport-serial")
        await pilot.click("#check")
        await wait_until(pilot, lambda: "REFUSED" in result_text(app), 30, "the refusal")
        shown = result_text(app)
        assert "no YModem" in shown and "It plans with “automatic” (checked)" in shown
        await pilot.click("#transport-auto")
        await pilot.click("#check")
        await wait_until(pilot, lambda: "OK to flash" in result_text(app), 30, "the advice, checked")
        assert "control request" in result_text(app)
