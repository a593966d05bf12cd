"""The kiosk driven as a technician would (Pilot): Recover on faulty devices, Stop mid-flash, a refused
manual flash, a scanned device id; what the cards show during and after."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from firmware.builder import build_module
from firmware.platforms import Function
from kiosk.cli import main
from kiosk.events import PlanStarted, StepStarted
from kiosk.service.slots import SlotState
from kiosk.tui.screens.flash import FlashScreen
from kiosk.tui.widgets.slot_card import CardBody, SlotCard
from kiosk.tui.widgets.touch_button import TouchButton
from tests.tui.conftest import ready, wait_until


@dataclass
class Seen:
    """Every state a slot's card was given, in order (what the technician saw, frame by frame)."""

    states: list[SlotState] = field(default_factory=list)

    def rungs_running(self) -> list[str]:
        out = []
        for s in self.states:
            if s.current_rung and (not out or out[-1] != s.current_rung):
                out.append(s.current_rung)
        return out


def record(app, slot: int) -> Seen:
    seen = Seen()
    original = app.set_state

    def set_state(number: int, state: SlotState) -> None:
        if number == slot:
            seen.states.append(state)
        original(number, state)

    app.set_state = set_state
    return seen


def card_text(app, slot: int) -> str:
    card = app.main_screen.query_one(f"#slot-{slot}", SlotCard)
    parts = [str(card.border_title), str(card.border_subtitle)]
    parts.append(card.query_one(CardBody).text)
    parts.append(str(card.query_one(TouchButton).label))
    return "\n".join(parts)


async def test_app_crash_recovers_by_safe_mode_and_the_card_shows_each_rung(kiosk):
    app = kiosk("app-crash@boron")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        seen = record(app, 1)
        await wait_until(pilot, lambda: app.states[1].device_id is not None, 10, "the device to be picked up")
        assert "Ready: press RECOVER" in card_text(app, 1)
        await pilot.click("#act-1")
        await wait_until(pilot, lambda: app.states[1].current_rung == "identify", 10, "identify to run")
        during = card_text(app, 1)
        # one slot at 80x24: the card has the room for the rungs as a list
        assert "▶ running  Identify" in during and "■ STOP" in during and "watching the device" in during
        await wait_until(pilot, lambda: app.states[1].verdict is not None and not app.states[1].running, 120,
                         "the verdict")  # fmt: skip
        await pilot.pause()
        state = app.states[1]
        assert (state.verdict, state.verdict_rung) == ("recovered", "safe-mode")
        assert state.rungs == {"identify": "done", "cold-boot": "skipped", "safe-mode": "done", "update": "skipped",
                               "second-try": "skipped", "swd-restore": "skipped"}  # fmt: skip
        assert seen.rungs_running()[:2] == ["identify", "safe-mode"]
        assert any(s.sos and s.sos["sos_code"] == 1 for s in seen.states), "the SOS 1 was never shown"
        after = card_text(app, 1)
        assert "✔ RECOVERED by safe-mode" in after and "✔ done     Safe mode" in after and "▶ RECOVER" in after
        assert "was SOS 1 HardFault" in after


async def test_corrupt_system_shows_bytes_while_flashing_then_recovered_by_the_update(kiosk):
    # a Gen3 device: its bootloader checks the CRC and falls into DFU (a Gen2 one starts the damaged part)
    app = kiosk("corrupt-system@boron")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        seen = record(app, 1)
        await wait_until(pilot, lambda: app.states[1].usb_mode == "dfu", 10, "DFU mode to show")
        assert "DFU" in card_text(app, 1)
        await pilot.press("1", "r")
        await wait_until(pilot, lambda: app.states[1].verdict is not None and not app.states[1].running, 120,
                         "the verdict")  # fmt: skip
        await pilot.pause()
        flashing = [s.progress for s in seen.states if s.progress is not None]
        assert flashing, "no progress was shown while flashing"
        assert all(p.total > 0 and 0 <= p.done <= p.total for p in flashing)
        assert any(p.done == p.total for p in flashing)
        assert {p.steps for p in flashing} == {flashing[0].steps} and flashing[0].steps >= 2
        assert "update" in seen.rungs_running()
        state = app.states[1]
        assert (state.verdict, state.verdict_rung) == ("recovered", "update")
        assert "✔ RECOVERED by update" in card_text(app, 1)


async def test_missing_bootloader_says_plug_a_device_in_then_is_restored_over_swd(kiosk):
    app = kiosk("missing-bootloader@boron")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        seen = record(app, 1)
        await wait_until(pilot, lambda: app.states[1].present is False, 10, "the slot to be seen empty")
        assert "plug a device in" in card_text(app, 1) and "not on USB" in card_text(app, 1)
        await pilot.click("#act-1")
        await wait_until(pilot, lambda: app.states[1].verdict is not None and not app.states[1].running, 180,
                         "the verdict")  # fmt: skip
        await pilot.pause()
        assert seen.rungs_running() == ["identify", "cold-boot", "swd-restore"]
        state = app.states[1]
        assert (state.verdict, state.verdict_rung) == ("recovered-by-swd", "swd-restore")
        assert state.rungs["swd-restore"] == "done" and state.rungs["safe-mode"] == "skipped"
        assert "✔ RECOVERED BY SWD" in card_text(app, 1)
        await wait_until(pilot, lambda: app.states[1].device_id is not None, 10, "the restored device on USB")
        assert app.states[1].verdict == "recovered-by-swd"  # a device appearing keeps the verdict about it


async def test_stop_mid_flash_ends_at_once_with_buttons_released_and_power_on(kiosk):
    app = kiosk("corrupt-system@boron", speed=1.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        flashing = []
        engine = app.test_engine
        engine.bus.subscribe(lambda e: flashing.append(e) if isinstance(e, StepStarted | PlanStarted) else None)
        await pilot.click("#act-1")
        await wait_until(pilot, lambda: any(isinstance(e, StepStarted) for e in flashing), 60, "a flash step")
        seen = record(app, 1)
        await pilot.click("#act-1")  # the same big button, now STOP
        assert any(s.activity == "stopping" for s in seen.states), "the card did not say STOPPING at once"
        await wait_until(pilot, lambda: not app.states[1].running, 15, "the ladder to stop")
        state = app.states[1]
        assert state.verdict == "stopped" and "stopped" in state.rungs.values()
        assert "■ STOPPED" in card_text(app, 1)
        slot = app.test_engine.bench.slot(1)
        assert slot.power.is_on
        run = app.test_engine.journal.run(state.last_run_id)
        assert run["status"] == "stopped" and run["verdict"] == "stopped"


async def test_a_manual_flash_refused_by_the_planner_shows_why_and_writes_nothing(kiosk, tmp_path):
    app = kiosk("healthy@boron")
    stick = tmp_path / "media" / "STICK"
    stick.mkdir(parents=True)
    photon_part = build_module(platform_id=6, function=Function.SYSTEM_PART, index=1, version=2300)  # a Photon's
    (stick / "photon-system-part1.bin").write_bytes(photon_part)
    (stick / "garbage.bin").write_bytes(b"\x00not a module at all" * 10)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        device = app.test_engine.bench.slot(1).device
        before = {k: m.data for k, m in device.modules.items()}
        events = []
        app.test_engine.bus.subscribe(events.append)
        await pilot.press("m")
        assert isinstance(app.screen, FlashScreen)
        await pilot.click("#stick")
        await pilot.pause()
        choices = app.screen.query_one("#modules")
        keys = {words: key for key, words in choices._words.items()}
        photon = next(k for w, k in keys.items() if "photon-system-part1" in w)
        choices.toggle(photon)
        await pilot.click("#check")
        await wait_until(pilot, lambda: "REFUSED" in str(app.screen.query_one("#plan-result").render()), 20,
                         "the refusal")  # fmt: skip
        shown = str(app.screen.query_one("#plan-result").render())
        assert "nothing was written" in shown and "photon-system-part1.bin" in shown
        assert "choose the boron file" in shown
        assert app.screen.query_one("#flash").disabled
        garbage = next(k for w, k in keys.items() if "garbage" in w)
        choices.toggle(photon)
        choices.toggle(garbage)
        await pilot.pause()  # the longer refusal moved the buttons: click where Check is now, not where it was
        await pilot.click("#check")
        await wait_until(pilot, lambda: "not a Particle module" in str(app.screen.query_one("#plan-result").render()),
                         20, "the bad-file message")  # fmt: skip
        await pilot.click("#flash")  # disabled: nothing happens
        await pilot.pause(0.3)
    assert not [e for e in events if isinstance(e, PlanStarted | StepStarted)]
    assert {k: m.data for k, m in device.modules.items()} == before


async def test_no_usb_stick_is_said_plainly(kiosk):
    app = kiosk("healthy@boron")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("m")
        await pilot.click("#stick")
        assert "No USB stick found" in str(app.screen.query_one("#plan-result").render())


async def test_a_scanned_device_id_selects_its_slot(kiosk, monkeypatch):
    import kiosk.tui.app as tui_app

    # A scanner types 24 characters in well under a second; a test machine under load may take seconds.
    monkeypatch.setattr(tui_app, "SCAN_WINDOW_S", 120.0)
    app = kiosk("healthy@boron,healthy@photon")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: app.states[2].device_id is not None, 10, "slot 2's device")
        await pilot.press(*app.states[2].device_id, "enter")
        await pilot.pause()
        assert app.selected == 2 and app.focused.id == "act-2"
        assert not app.states[2].running  # the scanner's Enter did not press Recover


@pytest.mark.parametrize("argv, status, words", [
    (["tui", "--simulate", "nope"], 2, "unknown scenario"),
    (["tui", "--simulate", "healthy", "--speed", "0"], 2, "--speed must be positive"),
    ([], 3, "try it without hardware"),
])  # fmt: skip
def test_the_command_refuses_bad_arguments_before_any_screen(argv, status, words, capsys, tmp_path):
    argv = [*argv, "--config", str(tmp_path / "missing.toml")] if argv else argv
    assert main(argv) == status
    assert words in capsys.readouterr().err


async def test_a_flaky_cable_is_named_on_the_card_with_its_count(kiosk):
    app = kiosk("flaky-cable@boron")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.click("#act-1")
        await wait_until(pilot, lambda: app.states[1].verdict is not None and not app.states[1].running, 120,
                         "the verdict")  # fmt: skip
        await pilot.pause()
        state = app.states[1]
        assert state.verdict == "recovered" and state.usb_errors > 0
        assert f"check the USB cable: {state.usb_errors} USB transfers failed" in " ".join(card_text(app, 1).split())
        assert app.test_engine.journal.run(state.last_run_id)["usb_errors"] == state.usb_errors
