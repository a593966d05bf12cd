"""Start-up: the first frame is the real main screen (a card per slot), drawn before anything slow happens.

The bench, the journal and the library open in a thread once that frame is on the screen; the ladder, the
simulator and the drivers are imported there. These tests pin that down without timing anything (the
figures are in tests/benchmarks/tui_bench.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kiosk.tui.widgets.slot_card import SlotCard
from tests.tui.conftest import make_app, ready, wait_until
from tests.tui.test_pilot import card_text

#: Modules the first frame must not wait for: the backend's (ladder, runner, bench, drivers, journal) and
#: what only other screens or commands use.
NOT_BEFORE_THE_FIRST_FRAME = (
    "kiosk.ladder", "kiosk.runner", "kiosk.executor", "kiosk.facts", "kiosk.modes", "kiosk.bench", "kiosk.journal",
    "kiosk.report", "kiosk.demo_library", "kiosk.commands.flash_cmd", "kiosk.commands.recover_cmd",
    "firmware.library", "firmware.plan", "hw.control", "hw.swd", "hw.gpio", "gpiozero", "serial", "pyocd",
    "pure_protobuf", "sqlite3", "segno", "textual_serve", "hypothesis",
    "kiosk.tui.screens.flash", "kiosk.tui.screens.history", "kiosk.tui.screens.library",
    "kiosk.tui.screens.report", "kiosk.tui.screens.settings",
)  # fmt: skip

_FIRST_FRAME = r"""
import argparse, json, sys, threading
from pathlib import Path
from kiosk.commands.tui_cmd import build_app
folder = Path(sys.argv[1])
args = argparse.Namespace(simulate="app-crash@boron,corrupt-system@photon,frozen@p2", speed=3.0,
                          config=folder / "none.toml", journal=folder / "j.sqlite", library=None)
app, link = build_app(args)
seen = {}
display = app._display
def first_frame(screen, renderable):
    if "modules" not in seen and renderable is not None and not app._batch_count:
        seen.update(modules=sorted(sys.modules), threads=[t.name for t in threading.enumerate()],
                    screen=type(screen).__name__, cards=[c.id for c in screen.query(".slot-card")])
    return display(screen, renderable)
app._display = first_frame
async def pilot(p):
    while not app.bench_ready.is_set():
        await p.pause(0.05)
    seen["error"] = app.bench_error
    p.app.exit()
app.run(headless=True, size=(80, 24), auto_pilot=pilot)
link.close()
print(json.dumps(seen))
"""


def test_the_first_frame_is_the_main_screen_drawn_before_the_backend_is_imported_or_opened(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _FIRST_FRAME, str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=120, check=True)  # fmt: skip
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["screen"] == "MainScreen"
    assert seen["cards"] == ["slot-1", "slot-2", "slot-3"]
    assert seen["threads"] == ["MainThread"]  # the bench opens once the frame is on the screen
    early = [m for m in NOT_BEFORE_THE_FIRST_FRAME if m in seen["modules"]]
    assert early == [], f"imported before the first frame: {early}"
    assert seen["error"] is None  # and then the bench did open


async def test_the_cards_show_before_the_service_answers_and_recover_waits_for_it(tmp_path):
    app, harness = make_app(tmp_path, "app-crash@boron,healthy@p2", start=False)
    told: list[str] = []
    notify = app.notify
    app.notify = lambda message, **kw: (told.append(str(message)), notify(message, **kw))[1]
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert [c.id for c in app.main_screen.query(SlotCard)] == ["slot-1", "slot-2"]
            assert "Slot 2 · p2" in card_text(app, 2)
            assert "looking for a device" in card_text(app, 1)
            await pilot.click("#act-1")  # before the service answers: nothing starts, the technician is told
            await pilot.pause()
            assert not app.states[1].running and harness.engine.runner is None
            assert any("still opening" in words for words in told)
            await wait_until(pilot, lambda: app.offline_words is not None, 10, "the link to say it cannot connect")
            assert "not answering" in app.title_text()
            harness.start()
            await ready(pilot)
            assert [c.id for c in app.main_screen.query(SlotCard)] == ["slot-1", "slot-2"]  # the same cards
            assert app.states[2].platform_hint == "p2" and app.states[1].led_sensor
            assert "not answering" not in app.title_text() and "2 slots" in app.title_text()
    finally:
        harness.link.close()
        harness.close()


def test_the_touchscreens_simulated_bench_fits_the_benchs_limit():
    from kiosk.bench import MAX_SIM_SLOTS
    from kiosk.commands.tui_cmd import MAX_SIM_SLOTS as CHECKED

    assert CHECKED <= MAX_SIM_SLOTS


async def test_a_bench_that_cannot_open_replaces_the_first_frames_cards_with_why(tmp_path):
    import argparse

    from kiosk.commands.tui_cmd import build_app

    # a private service (as `kiosk tui --simulate` starts) that cannot open its journal ends at once, saying why
    args = argparse.Namespace(simulate="app-crash@boron,healthy@p2", speed=None, config=tmp_path / "none.toml",
                              journal=Path("/proc/no-such-folder/journal.sqlite"), library=None, socket=None,
                              remote=False)  # fmt: skip
    app, link = build_app(args)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, app.bench_ready.is_set, 60, "the bench to fail")
            assert app.bench_error and "could not be opened" in app.bench_error
            assert not app.main_screen.query(SlotCard) and not app.states
            assert "could not be opened" in str(app.main_screen.query_one("#opening").render())
            assert "slots" not in app.title_text()
            await pilot.press("r", "m")  # nothing to recover, no other screen
            assert app.screen is app.main_screen
    finally:
        link.close()


async def test_a_client_of_a_named_service_needs_no_bench_config_and_takes_its_slots_from_the_service(tmp_path):
    import argparse

    from kiosk.commands.tui_cmd import build_app

    _touch, harness = make_app(tmp_path, "app-crash@boron,healthy@p2")
    args = argparse.Namespace(simulate=None, speed=None, config=tmp_path / "no-such.toml", journal=None, library=None,
                              socket=harness.service.socket_path, remote=False)  # fmt: skip
    app, link = build_app(args)  # no CommandError: the service has the config
    app.settings_file = tmp_path / "tui.json"
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            await wait_until(pilot, lambda: len(app.main_screen.query(SlotCard)) == 2, 10, "the service's cards")
            assert "Slot 2 · p2" in card_text(app, 2)
            assert "2 slots" in app.title_text() and "simulated bench" in app.title_text()
    finally:
        link.close()
        harness.link.close()
        harness.close()


def test_without_a_service_named_a_missing_bench_config_is_still_refused(tmp_path):
    import argparse

    import pytest

    from kiosk.commands.common import CommandError
    from kiosk.commands.tui_cmd import build_app

    args = argparse.Namespace(simulate=None, speed=None, config=tmp_path / "no-such.toml", journal=None, library=None,
                              socket=None, remote=False)  # fmt: skip
    with pytest.raises(CommandError, match="no bench config"):
        build_app(args)
