"""A mode change (`kiosk dfu` and the other mode commands, through the bench service) seen on the touchscreen:
its slot shows busy as a flash by hand does, its big button is STOP, and STOP ends the change with the buttons
let go."""

from __future__ import annotations

import threading

from kiosk.service.client import BenchClient, ServiceError
from tests.tui.conftest import ready, wait_until
from tests.tui.test_pilot import card_text


async def test_a_mode_change_shows_its_slot_busy_and_stop_on_the_card_ends_it(kiosk):
    # Device Protection refuses control request 50, so the service holds MODE through RESET: a few seconds
    app = kiosk("protected@boron", speed=1.0)
    answer: dict = {}
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        buttons = app.test_engine.bench.slot(1).buttons
        cli = BenchClient(app.test_service.socket_path, client="kiosk dfu", role="cli").connect()

        def dfu() -> None:  # what `kiosk dfu --slot 1` asks while the touchscreen runs
            try:
                answer["value"] = cli.call("slot.mode", {"slot": 1, "mode": "dfu"}, timeout=60)
            except ServiceError as exc:
                answer["error"] = exc

        worker = threading.Thread(target=dfu, daemon=True)
        try:
            assert "▶ RECOVER" in card_text(app, 1)
            worker.start()
            await wait_until(pilot, lambda: app.states[1].running, 20, "the card busy")
            state = app.states[1]
            assert state.busy_with == "mode change"
            shown = card_text(app, 1)
            assert "■ STOP" in shown and "Put the device in DFU mode" in shown
            assert "look" not in shown  # a mode change by hand is no recovery: no ladder on the card
            await wait_until(pilot, lambda: buttons.mode.pressed, 20, "MODE held")
            await pilot.click("#act-1")  # the big button, STOP now
            await wait_until(pilot, lambda: not app.states[1].running, 10, "the mode change to stop")
            worker.join(10)
            assert not buttons.mode.pressed and not buttons.reset.pressed
            assert answer.get("error") is not None and answer["error"].data == {"reason": "stopped"}, answer
            shown = card_text(app, 1)
            assert "▶ RECOVER" in shown and "dfu stopped; buttons released" in shown
        finally:
            cli.close()
