"""The TUI on a simulated bench, for Pilot tests and snapshots: app, backend and a way to wait."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.releases import BODY
from kiosk.commands.tui_cmd import build_app
from kiosk.demo_library import demo_library


def make_app(folder: Path, spec: str, *, speed: float | None = None, live: bool = True):
    """The kiosk app on ``spec`` with a demo library and a journal in ``folder``; (app, backend)."""
    from hw.sim.scenarios import parse_simulate

    platforms = {platform for _, platform in parse_simulate(spec)}
    demo_library(platforms, root=folder / "library", body_size=BODY)  # small: the screens, not flash time, are tested
    args = argparse.Namespace(simulate=spec, speed=speed, config=folder / "none.toml",
                              journal=folder / "journal.sqlite", library=folder / "library")  # fmt: skip
    app, backend = build_app(args, live=live)
    app.media_roots = (folder / "media",)
    app.settings_file = folder / "tui.json"
    return app, backend


async def wait_until(pilot, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Let the app run until ``predicate()`` holds (real seconds); fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        await pilot.pause(0.05)
    await pilot.pause()  # let the screen catch up with the state


async def ready(pilot) -> None:
    await wait_until(pilot, pilot.app.bench_ready.is_set, 30.0, "the bench to open")
    assert pilot.app.bench_error is None, pilot.app.bench_error
    await pilot.pause()


@pytest.fixture
def kiosk(tmp_path):
    """A factory of apps on a simulated bench; every backend is closed after the test."""
    made = []

    def factory(spec: str, **kwargs):
        app, backend = make_app(tmp_path, spec, **kwargs)
        made.append(backend)
        return app

    yield factory
    for backend in made:
        backend.close()
