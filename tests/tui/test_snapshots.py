"""Every screen at 80x24 (the 7" display) and 120x40, rendered from fixed state: no pollers run (live=False),
the cards are fed fixed events, the journal has fixed runs with fixed times, and every path is fixed.

Update after a deliberate change with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at
the SVGs under ``__snapshots__`` before committing them.
"""

from __future__ import annotations

import fcntl
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from firmware.builder import build_module
from firmware.platforms import Function
from hw.led_classifier import LedReading
from hw.led_signals import SOS_CODES
from kiosk.events import PlanStarted, Progress, StepStarted
from kiosk.journal import Journal
from kiosk.ladder import Observation, RungFinished, RungStarted, Verdict
from kiosk.service.posts import BenchEvent, DeviceSeen, LedSeen, SlotBusy
from kiosk.tui.settings import TuiSettings
from tests.tui.conftest import make_app, ready, synced, wait_until

FOLDER = Path("/tmp/kiosk-tui-snapshots")  # fixed: the settings screen shows where things are
BENCH = "app-crash@boron,corrupt-system@photon,missing-bootloader@boron,frozen@p2"
SIZES = [(80, 24), (120, 40)]
IDS = {1: "e00fce68aabbccddeeff0011", 2: "3a0027000c47353136383631", 4: "0a10aced202194944a00e0f4"}


def led(colour: str | None, pattern: str, sos: int | None = None, hz: float | None = None) -> dict:
    code = SOS_CODES[sos] if sos else None
    return LedReading(colour, pattern, hz, sos, code.name if code else None, code.meaning if code else None,
                      1.0, 12.0, None).to_json()  # fmt: skip


@pytest.fixture
def folder():
    # The path is fixed (the screens show it), so two test runs on one machine take turns with it.
    with open(f"{FOLDER}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(FOLDER, ignore_errors=True)
        FOLDER.mkdir(parents=True)
        yield FOLDER
        shutil.rmtree(FOLDER, ignore_errors=True)


async def settle(pilot) -> None:
    """A still frame: no blinking cursor (its phase depends on how long the machine took), the workers done
    and the tables laid out with their rows."""
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.app.workers.wait_for_complete()
    # A table sizes its columns to its rows when it is next idle; on a loaded machine that can come after two
    # pauses, and the frame would show the columns still cut to their headers.
    await wait_until(pilot, lambda: not any(t._require_update_dimensions for t in pilot.app.screen.query(DataTable)),
                     20, "the tables sized to their rows")  # fmt: skip
    await pilot.pause()
    await pilot.pause()


def app_on(folder: Path, spec: str = BENCH):
    app, backend = make_app(folder, spec, speed=1.0, live=False)  # the title says "1x", as in the demo
    app.settings = TuiSettings(report_folder=str(folder / "reports"))
    return app, backend


def feed(app, slot: int, *events, at: float = 0.0) -> None:
    for n, event in enumerate(events):
        app.test_service.board.post(BenchEvent(event, at + n * 0.5))


def plugged_in(app) -> None:
    modes = {1: "normal", 2: "dfu", 3: None, 4: "normal"}
    for slot, mode in modes.items():
        platform = {1: "boron", 2: "photon", 4: "p2"}.get(slot)
        app.test_service.board.post(DeviceSeen(slot, IDS.get(slot), platform if mode else None, mode))
    app.test_service.board.post(LedSeen(1, "red", led("red", "sos", sos=1)))
    app.test_service.board.post(LedSeen(2, "yellow", led("yellow", "blink-normal", hz=5.0)))
    app.test_service.board.post(LedSeen(3, "off", led(None, "off")))
    app.test_service.board.post(LedSeen(4, "cyan", led("cyan", "solid")))


def mid_recovery(app) -> None:
    for slot in (1, 2, 4):
        app.test_service.board.post(SlotBusy(slot, "recovery", None))
    feed(app, 1, RungStarted(1, "identify"), Observation(1, "led", led("red", "sos", sos=1)),
         RungFinished(1, "identify", "observed"), RungStarted(1, "safe-mode"))  # fmt: skip
    feed(app, 2, RungStarted(2, "identify"), RungFinished(2, "identify", "observed"), RungStarted(2, "update"),
         PlanStarted(2, 4, "auto"), StepStarted(2, 1, 4, "photon-system-part1@2.3.0.bin", "dfu", 262144),
         at=10.0)  # fmt: skip
    feed(app, 2, Progress(2, 1, 98304, 262144, "write"), at=16.0)
    feed(app, 4, RungStarted(4, "identify"))


def verdicts(app) -> None:
    mid_recovery(app)
    words = "Device OS runs without the app, so the app was at fault: Tinker written in its place"
    feed(app, 1, RungFinished(1, "safe-mode", "done"), Verdict(1, "recovered", "safe-mode", words, 31.8, 29.9))
    feed(app, 2, RungFinished(2, "update", "healthy"), Verdict(2, "recovered", "update",
         "Device OS update and Tinker (dependencies order)", 12.4, 11.9))  # fmt: skip
    feed(app, 3, RungStarted(3, "identify"), RungFinished(3, "identify", "observed"), RungStarted(3, "cold-boot"),
         RungFinished(3, "cold-boot", "done"), RungStarted(3, "swd-restore"), RungFinished(3, "swd-restore", "damaged"),
         Verdict(3, "damaged-hardware", None, "nothing answers over USB or SWD (no target power); check: EN pin, "
                 "3V3 rail", 20.5, 19.0))  # fmt: skip
    feed(app, 4, Verdict(4, "stopped", None, "stopped by the technician; buttons released, power on", 4.2, 3.0))
    for slot in (1, 2, 3, 4):
        app.test_service.board.post(_idle(slot))


def _idle(slot: int):
    from kiosk.service.posts import SlotIdle

    return SlotIdle(slot, None, None, slot)


def journal_with_runs(path: Path) -> int:
    """Three runs on two devices, at fixed times; returns the id of the richest one."""
    times = iter(datetime(2025, 3, 14, 9, 26, tzinfo=UTC) + timedelta(seconds=7 * n) for n in range(1000))
    journal = Journal(path, now=lambda: next(times))
    first = journal.start_run(1, IDS[1], "boron", "app-crash")
    step = journal.begin_step(first, "identify", "look at USB, module table and LED")
    journal.observe(first, "led", led("red", "sos", sos=1))
    journal.end_step(step, "observed", "USB normal; red SOS, code 1 (HardFault)")
    step = journal.begin_step(first, "safe-mode", "restart in safe mode")
    journal.end_step(step, "done", "safe mode request (60) obeyed")
    step = journal.begin_step(first, "safe-mode", "write Tinker over DFU")
    journal.end_step(step, "done", "2 step(s) written")
    journal.finish_run(first, "recovered", "safe-mode", "Device OS runs without the app, so the app was at fault: "
                       "Tinker written in its place", 31.8, 29.9)  # fmt: skip
    journal.set_device_history(IDS[1], powered_by="LiPo and USB", mounted_on="Particle M.2 carrier")
    second = journal.start_run(2, IDS[2], "photon", "corrupt-system")
    journal.finish_run(second, "recovered", "update", "Device OS update and Tinker (dependencies order)", 12.4, 11.9)
    third = journal.start_run(3, None, None, "dead")
    journal.finish_run(third, "damaged-hardware", None, "nothing answers over USB or SWD", 20.5, 19.0)
    journal.close()
    return first


async def _main(pilot, prepare=None) -> None:
    await ready(pilot)
    plugged_in(pilot.app)
    if prepare is not None:
        prepare(pilot.app)
    await synced(pilot)  # what was fed to the service's board, drawn from its notifications
    await pilot.pause()


def _close(harness) -> None:
    harness.link.close()
    harness.close()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_idle(snap_compare, folder, size):
    app, backend = app_on(folder)
    try:
        assert snap_compare(app, terminal_size=size, run_before=_main)
    finally:
        _close(backend)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_mid_recovery(snap_compare, folder, size):
    app, backend = app_on(folder)

    async def before(pilot):
        await _main(pilot, mid_recovery)

    try:
        assert snap_compare(app, terminal_size=size, run_before=before)
    finally:
        _close(backend)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_verdicts(snap_compare, folder, size):
    app, backend = app_on(folder)

    async def before(pilot):
        await _main(pilot, verdicts)

    try:
        assert snap_compare(app, terminal_size=size, run_before=before)
    finally:
        _close(backend)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_manual_flash_refused(snap_compare, folder, size):
    stick = folder / "media" / "STICK"
    stick.mkdir(parents=True)
    module = build_module(platform_id=6, function=Function.SYSTEM_PART, index=1, version=2300)
    (stick / "photon-system-part1.bin").write_bytes(module)
    app, backend = app_on(folder, "healthy@boron")

    async def before(pilot):
        await ready(pilot)
        app.test_service.board.post(DeviceSeen(1, IDS[1], "boron", "normal"))
        await synced(pilot)
        await pilot.press("m")
        await pilot.click("#stick")
        await pilot.pause()
        choices = app.screen.query_one("#modules")
        choices.toggle(next(k for k, w in choices._words.items() if "photon-system-part1" in w))
        await pilot.click("#check")
        await wait_until(pilot, lambda: "REFUSED" in str(app.screen.query_one("#plan-result").render()), 30)

    try:
        assert snap_compare(app, terminal_size=size, run_before=before)
    finally:
        _close(backend)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_library(snap_compare, folder, size):
    app, backend = app_on(folder, "healthy@boron")

    async def before(pilot):
        await ready(pilot)
        stick = folder / "media" / "STICK"
        stick.mkdir(parents=True)
        for n in range(8):  # damaged downloads: their CRCs fail, so the library quarantines them, saying why
            data = bytearray(build_module(platform_id=13, function=Function.SYSTEM_PART, index=1, version=6101 + n))
            data[100] ^= 0xFF
            (stick / f"boron-system-part1@6.1.{n + 1}.bin").write_bytes(bytes(data))
        app_name = "acme-cold-chain-tracker-firmware-production-build.bin"  # a long name: cut in the middle
        (stick / app_name).write_bytes(build_module(platform_id=13, function=Function.USER_PART, index=2, version=6))
        app.test_engine.library.import_path(stick)
        await pilot.press("l")
        await wait_until(pilot, lambda: len(app.screen.query(".reason")) == 8, 20)
        await settle(pilot)

    try:
        assert snap_compare(app, terminal_size=size, run_before=before)
    finally:
        _close(backend)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history(snap_compare, folder, size):
    journal_with_runs(folder / "journal.sqlite")
    app, backend = app_on(folder, "healthy@boron")

    async def before(pilot):
        await ready(pilot)
        await pilot.press("h")
        await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 3, 20)
        await settle(pilot)

    try:
        assert snap_compare(app, terminal_size=size, run_before=before)
    finally:
        _close(backend)


@pytest.mark.parametrize("tab", ["tab-form", "tab-qr"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_report(snap_compare, folder, size, tab):
    run_id = journal_with_runs(folder / "journal.sqlite")
    app, backend = app_on(folder, "healthy@boron")

    async def before(pilot):
        from kiosk.tui.screens.report import ReportScreen

        await ready(pilot)
        await app.push_screen(ReportScreen(run_id))
        await wait_until(pilot, lambda: app.screen.report is not None, 20)
        app.screen.query_one("#report-tabs").active = tab
        await pilot.pause()
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=size, run_before=before)
    finally:
        _close(backend)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_settings(snap_compare, folder, size):
    app, backend = app_on(folder, "healthy@boron")

    async def before(pilot):
        await ready(pilot)
        await pilot.press("o")
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=size, run_before=before)
    finally:
        _close(backend)



def needs_you_verdicts(app) -> None:
    """The verdicts whose instruction is longest, with the ladder's own words (kiosk.ladder)."""
    from kiosk.ladder import CHECKLIST, CHECKLIST_ACTION, PROTECTED_ACTION, PROTECTED_FOUND

    for slot in (1, 2, 3, 4):
        app.test_service.board.post(SlotBusy(slot, "recovery", None))
    feed(app, 1, RungStarted(1, "identify"), RungFinished(1, "identify", "observed"), RungStarted(1, "cold-boot"),
         RungFinished(1, "cold-boot", "failed"), Verdict(1, "needs-technician", None, "power did not go: a battery "
         "keeps the device running", 11.8, 11.8, "Unplug its battery", True))  # fmt: skip
    feed(app, 2, RungStarted(2, "identify"), RungFinished(2, "identify", "needs-owner", PROTECTED_FOUND),
         Verdict(2, "needs-owner", None, PROTECTED_FOUND, 3.0, 3.0, PROTECTED_ACTION, True))  # fmt: skip
    feed(app, 3, RungStarted(3, "identify"), RungFinished(3, "identify", "observed"), RungStarted(3, "cold-boot"),
         RungFinished(3, "cold-boot", "failed"), RungStarted(3, "swd-restore"),
         RungFinished(3, "swd-restore", "damaged"),
         Verdict(3, "damaged-hardware", None, "nothing answers over USB or SWD: the SWD debugger sees no target "
                 "voltage, though the slot powers the device; check: " + "; ".join(CHECKLIST), 11.3, 11.0,
                 CHECKLIST_ACTION))  # fmt: skip
    feed(app, 4, RungStarted(4, "identify"), RungFinished(4, "identify", "observed"), RungStarted(4, "update"),
         RungFinished(4, "update", "healthy"), Verdict(4, "recovered", "update", "Device OS update and Tinker "
         "(dependencies order)", 9.0, 8.3, "", False, 24))  # fmt: skip
    for slot in (1, 2, 3, 4):
        app.test_service.board.post(_idle(slot))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_needs_you_verdicts(snap_compare, folder, size):
    """battery-fitted, protected, dead and a flaky cable: every instruction whole, at 80x24 and 120x40."""
    app, backend = app_on(folder)

    async def before(pilot):
        await _main(pilot, needs_you_verdicts)

    try:
        assert snap_compare(app, terminal_size=size, run_before=before)
    finally:
        _close(backend)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_one_slot_bench_uses_its_room(snap_compare, folder, size):
    """One slot: the card takes the screen, with the rungs as a list, the LED's meaning and the whole verdict."""
    app, backend = app_on(folder, "dead@boron")

    def dead(app) -> None:
        from kiosk.ladder import CHECKLIST, CHECKLIST_ACTION

        app.test_service.board.post(DeviceSeen(1, None, None, None))
        app.test_service.board.post(LedSeen(1, "off", led(None, "off")))
        app.test_service.board.post(SlotBusy(1, "recovery", None))
        feed(app, 1, RungStarted(1, "identify"), RungFinished(1, "identify", "observed"), RungStarted(1, "cold-boot"),
             RungFinished(1, "cold-boot", "failed"), RungStarted(1, "swd-restore"),
             RungFinished(1, "swd-restore", "damaged"),
             Verdict(1, "damaged-hardware", None, "nothing answers over USB or SWD: the SWD debugger sees no target "
                     "voltage, though the slot powers the device; check: " + "; ".join(CHECKLIST), 11.3, 11.0,
                     CHECKLIST_ACTION))  # fmt: skip
        app.test_service.board.post(_idle(1))

    async def before(pilot):
        await ready(pilot)
        dead(pilot.app)
        await synced(pilot)
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=size, run_before=before)
    finally:
        _close(backend)
