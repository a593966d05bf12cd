"""A browser's screen (``kiosk tui --remote``, what `kiosk serve` runs) on the same bench service as the
touchscreen: view-only by default, the PIN unlocks it where the config says so, and what one screen presses
every client sees."""

from __future__ import annotations

import argparse

from kiosk.commands.tui_cmd import build_app
from kiosk.service.api import RemotePolicy
from kiosk.service.client import BenchClient
from kiosk.tui.screens.pin import PinScreen
from tests.tui.conftest import make_app, ready, wait_until


def _titlebar(app) -> str:
    return str(app.main_screen.query_one("#titlebar").render())


def remote_on(harness, folder, spec: str):
    args = argparse.Namespace(simulate=spec, speed=None, config=folder / "none.toml", journal=None, library=None,
                              socket=harness.service.socket_path, remote=True)  # fmt: skip
    app, link = build_app(args)
    app.settings_file = folder / "tui.json"
    return app, link


async def test_a_remote_screen_is_refused_until_the_pin_unlocks_it_and_its_recover_shows_on_another_client(tmp_path):
    _touch, harness = make_app(tmp_path, "app-crash@boron", speed=1.0, policy=RemotePolicy("pin", "4711"))
    app, link = remote_on(harness, tmp_path, "app-crash@boron")
    heard: list[tuple[str, dict]] = []
    other = BenchClient(harness.service.socket_path, client="touchscreen", role="touchscreen", subscribe=True,
                        on_notification=lambda m, p: heard.append((m, p))).connect()  # fmt: skip
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            assert not app.may_act and "VIEW ONLY" in app.title_text()
            await wait_until(pilot, lambda: "VIEW ONLY" in _titlebar(app), 5, "the title bar to say VIEW ONLY")
            await pilot.click("#act-1")
            await wait_until(pilot, lambda: isinstance(app.screen, PinScreen), 10, "the PIN screen")
            assert not harness.engine.busy(1)  # refused by the service: nothing ran
            await wait_until(pilot, lambda: not app.states[1].running, 5, "the card put back")
            app.screen.query_one("#pin").value = "1234"
            await pilot.click("#unlock")
            await wait_until(pilot, lambda: "wrong PIN" in str(app.screen.query_one("#pin-message").render()), 10,
                             "the wrong PIN refused")  # fmt: skip
            app.screen.query_one("#pin").value = "4711"
            await pilot.click("#unlock")
            await wait_until(pilot, lambda: not isinstance(app.screen, PinScreen), 10, "the screen unlocked")
            assert app.may_act and "VIEW ONLY" not in app.title_text()
            await wait_until(pilot, lambda: "VIEW ONLY" not in _titlebar(app), 5, "the title bar unlocked")
            await pilot.click("#act-1")
            await wait_until(pilot, lambda: any(m == "slot.busy" for m, _ in heard), 10, "the other client to hear it")
            await wait_until(pilot, lambda: app.states[1].running, 10, "the remote card running")
            await wait_until(pilot, lambda: "STOP" in str(app.screen.query_one("#act-1").label), 10, "the STOP button")
            await pilot.pause()
            await pilot.click("#act-1")  # Stop, from the remote screen
            await wait_until(pilot, lambda: any(m == "slot.idle" for m, _ in heard), 30, "the run to stop")
            idle = next(p for m, p in heard if m == "slot.idle")
            assert idle["state"]["verdict"] == "stopped"
    finally:
        other.close()
        link.close()
        harness.link.close()
        harness.close()


async def test_a_view_only_screen_says_why_in_the_services_own_words_brackets_and_all(tmp_path):
    _touch, harness = make_app(tmp_path, "app-crash@boron", speed=1.0)  # the default: remote screens only look
    app, link = remote_on(harness, tmp_path, "app-crash@boron")
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            await pilot.click("#act-1")
            shown = lambda: " ".join(n.message for n in app._notifications)  # noqa: E731
            await wait_until(pilot, lambda: "view-only" in shown(), 10, "the refusal")
            assert "the kiosk's config ([remote] control)" in shown()  # not eaten as a markup tag
            assert not harness.engine.busy(1)
    finally:
        link.close()
        harness.link.close()
        harness.close()
