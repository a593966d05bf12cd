"""Every screen holds up when a technician uses it (issue 13): Back on every screen pops exactly that screen;
a manual flash from the screen over usb and over serial completes, says what was written and verified, and
leaves the screen ready for the next; a fault in a screen's handler or worker is shown and logged and leaves
the app and a recovery on another slot running; Report [p] opens the selected slot's latest run."""

from __future__ import annotations

import logging

import pytest

from kiosk.events import StepFinished
from kiosk.tui.screens.flash import FlashScreen
from kiosk.tui.screens.main import NAV, MainScreen
from kiosk.tui.screens.report import ReportScreen
from tests.tui.conftest import ready, wait_until


def result_text(app) -> str:
    return str(app.screen.query_one("#plan-result").render())


def tick_module(app, words: str) -> None:
    choices = app.screen.query_one("#modules")
    choices.toggle(next(key for key, shown in choices._words.items() if words in shown))


@pytest.mark.parametrize("nav", list(NAV))
async def test_back_on_every_screen_pops_that_screen_alone(kiosk, nav):
    app = kiosk("healthy@boron")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.click(f"#{nav}")
        await pilot.pause()
        opened = app.screen
        assert not isinstance(opened, MainScreen), f"{nav} opened nothing"
        await pilot.click("#back")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen) and len(app.screen_stack) == 1
        await pilot.press("escape")  # Back again where there is nothing to go back to: nothing happens
        await pilot.pause()
        assert isinstance(app.screen, MainScreen) and app.is_running


async def test_back_from_a_report_opened_from_history_returns_to_history(kiosk, tmp_path):
    app = kiosk("healthy@boron")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        journal = app.test_engine.journal
        journal.finish_run(journal.start_run(1, "e00fce68aabbccddeeff0011", "boron"), "healthy", None)
        await pilot.press("h")
        await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 1, 20, "the run listed")
        await pilot.click("#open-report")
        await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen), 10, "the report")
        await pilot.click("#back")
        await pilot.pause()
        assert type(app.screen).__name__ == "HistoryScreen"
        await pilot.click("#back")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def flash_from_the_screen(pilot, transport: str) -> None:
    app = pilot.app
    await pilot.press("m")
    assert isinstance(app.screen, FlashScreen)
    await wait_until(pilot, lambda: bool(app.screen.sources), 20, "the library's modules")
    tick_module(app, "tinker")
    if transport == "serial":
        await pilot.click("#transport-serial")
    await pilot.click("#check")
    await wait_until(pilot, lambda: "OK to flash" in result_text(app), 30, "the checked plan")
    assert not app.screen.query_one("#flash").disabled
    await pilot.click("#flash")


@pytest.mark.parametrize("spec, transport, how", [
    ("app-crash@boron", "usb", "written over DFU and read back"),
    ("healthy@photon", "serial", "sent over YModem and reported by the device once applied"),
])  # fmt: skip
async def test_a_manual_flash_from_the_screen_completes_and_says_what_was_written(kiosk, spec, transport, how):
    app = kiosk(spec)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        steps = []
        app.test_engine.bus.subscribe(lambda e: steps.append(e) if isinstance(e, StepFinished) else None)
        await flash_from_the_screen(pilot, transport)
        await wait_until(pilot, lambda: app.states[1].verdict is not None and not app.states[1].running, 120,
                         "the flash to end")  # fmt: skip
        shown = result_text(app)
        assert app.states[1].verdict == "flashed", shown
        assert "FLASHED" in shown and "tinker" in shown and how in shown and "The device runs" in shown
        assert steps and all(e.outcome == "written" for e in steps) and any("tinker" in e.name for e in steps)
        assert "STOPPED" not in shown and app.states[1].verdict != "stopped"
        # ready again at once: Flash waits for a new Check, which works
        assert app.screen.query_one("#flash").disabled and str(app.screen.query_one("#flash").label) == "Flash"
        await pilot.click("#check")
        await wait_until(pilot, lambda: "OK to flash" in result_text(app), 30, "a second check")
        assert not app.screen.query_one("#flash").disabled
        await pilot.click("#back")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert "FLASHED" in app.main_screen.card(1).query_one("CardBody").text
        # the journal keeps the flash as a run of its own, each step recorded, and Report opens it
        run = app.test_engine.journal.run(app.states[1].last_run_id)
        assert (run["kind"], run["verdict"], run["status"]) == ("manual flash", "flashed", "finished")
        assert [s["outcome"] for s in run["steps"]] == [e.outcome for e in steps]
        await pilot.press("p")
        await wait_until(pilot, lambda: getattr(app.screen, "report", None) is not None, 20, "the report")
        assert app.screen.run_id == run["id"] and app.screen.report["run"]["kind"] == "manual flash"


async def test_a_fault_in_a_screen_handler_is_shown_and_a_recovery_on_another_slot_carries_on(
    kiosk, monkeypatch, caplog
):
    import kiosk.tui.screens.library as library_screen

    def broken(_roots):
        raise RuntimeError("the stick's driver fell over")

    monkeypatch.setattr(library_screen, "removable_media", broken)
    app = kiosk("app-crash@boron,healthy@boron")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.click("#act-1")
        await wait_until(pilot, lambda: app.states[1].running, 10, "the recovery to start")
        await pilot.click("#nav-library")
        await pilot.pause()
        with caplog.at_level(logging.ERROR, logger="kiosk.tui"):
            await pilot.click("#stick")
            await pilot.pause()
        assert app.is_running and type(app.screen).__name__ == "LibraryScreen"
        shown = [n.message for n in app._notifications]
        assert any("the stick's driver fell over" in m and "recoveries carry on" in m for m in shown), shown
        assert any("pressed_stick failed" in r.getMessage() and r.exc_info for r in caplog.records)
        await pilot.click("#back")  # the screen still answers
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        await wait_until(pilot, lambda: app.states[1].verdict is not None and not app.states[1].running, 120,
                         "slot 1's verdict")  # fmt: skip
        assert app.states[1].verdict == "recovered"
        run = app.test_engine.journal.run(app.states[1].last_run_id)
        assert run["status"] == "finished" and run["verdict"] == "recovered"


async def test_a_fault_in_a_screen_worker_is_shown_and_the_app_goes_on(kiosk, monkeypatch):
    app = kiosk("healthy@boron")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)

        call = app.link.call

        def broken(method, *args, **kwargs):  # the screen's own code fails (not the service: it answers errors)
            if method == "flash.plan":
                raise RuntimeError("planner crashed")
            return call(method, *args, **kwargs)

        monkeypatch.setattr(app.link, "call", broken)
        await pilot.press("m")
        await wait_until(pilot, lambda: bool(app.screen.sources), 20, "the library's modules")
        tick_module(app, "tinker")
        await pilot.click("#check")
        await wait_until(pilot, lambda: any("planner crashed" in n.message for n in app._notifications),
                         10, "the worker's fault shown")  # fmt: skip
        assert app.is_running and isinstance(app.screen, FlashScreen)
        await pilot.click("#back")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_report_opens_the_selected_slots_latest_run(kiosk):
    app = kiosk("healthy@boron,healthy@photon")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: app.states[1].device_id and app.states[2].device_id, 10, "both devices")
        journal = app.test_engine.journal
        ids = {n: app.states[n].device_id for n in (1, 2)}
        mine = journal.start_run(1, ids[1], "boron")
        journal.finish_run(mine, "healthy", None)
        journal.finish_run(journal.start_run(1, "0123456789abcdef01234567", "boron"), "healthy", None)  # another
        journal.finish_run(journal.start_run(2, ids[2], "photon"), "healthy", None)  # the newest of all
        await pilot.click("#slot-1")  # a tap on the card selects its slot
        assert app.selected == 1 and app.main_screen.card(1).has_class("selected")
        await pilot.press("p")
        await wait_until(pilot, lambda: app.screen.report is not None, 20, "the report")
        assert app.screen.run_id == mine  # the device in slot 1 now, not the newest run, nor slot 1's last device
        assert f"Run {mine} · slot 1 · {ids[1]} · healthy" in str(app.screen.query_one("#report-message").render())
        await pilot.click("#back")
        await pilot.pause()
        await pilot.click("#slot-2")
        await pilot.press("p")
        await wait_until(pilot, lambda: app.screen.report is not None, 20, "slot 2's report")
        assert app.screen.run_id == journal.latest_run_id(slot=2) != mine


async def test_report_for_a_slot_without_runs_says_there_is_none(kiosk):
    app = kiosk("healthy@boron,healthy@photon")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        journal = app.test_engine.journal
        journal.finish_run(journal.start_run(1, "e00fce68aabbccddeeff0011", "boron"), "healthy", None)
        await pilot.click("#slot-2")
        await pilot.press("p")
        await wait_until(pilot, lambda: "No run recorded for slot 2" in str(app.screen.query_one("#report-message")
                                                                             .render()), 20, "the words")  # fmt: skip
        assert app.screen.report is None
