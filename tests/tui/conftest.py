"""The TUI on a simulated bench, for Pilot tests and snapshots: a bench service in this process on a temporary
socket, and the app connected to it over that socket (the wire is exercised as on a real bench)."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.releases import BODY
from kiosk.commands.service_cmd import engine_for
from kiosk.commands.tui_cmd import build_app
from kiosk.demo_library import demo_library
from kiosk.service.service import BenchService


class Harness:
    """The in-process service and its socket's folder; ``close()`` stops both."""

    def __init__(self, args: argparse.Namespace, *, pollers: bool, policy=None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="kt-", dir="/tmp"))  # short: a socket path has 108 bytes
        self.service = BenchService(engine_for(args), self.folder / "bench.sock", pollers=pollers, policy=policy)
        self.engine = self.service.engine

        self.link = None  # the app's link to it, set by make_app

    @property
    def bus(self):
        """The engine's event bus (what a test or a benchmark listens to behind the screen)."""
        return self.engine.bus

    def start(self) -> None:
        self.service.start()

    def close(self) -> None:
        """Close the app's link, then the service (every run stopped), then the socket's folder."""
        try:
            if self.link is not None:
                self.link.close()
            self.service.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


#: Device seconds per real second of the tests' simulated benches unless a test asks for another: the screens are
#: tested, not a person's patience (a test that must act mid-flash asks for 1.0).
TEST_SPEED = 4.0


def bench_args(folder: Path, spec: str, speed: float | None) -> argparse.Namespace:
    speed = TEST_SPEED if speed is None else speed
    return argparse.Namespace(simulate=spec, speed=speed, config=folder / "none.toml",
                              journal=folder / "journal.sqlite", library=folder / "library")  # fmt: skip


def make_app(folder: Path, spec: str, *, speed: float | None = None, live: bool = True, start: bool = True,
             policy=None, remote: bool = False):  # fmt: skip
    """The kiosk app on ``spec`` with a demo library and a journal in ``folder``; (app, harness). The app's
    ``test_service`` and ``test_engine`` are the service's, for tests that look behind the screen."""
    from hw.sim.scenarios import parse_simulate

    platforms = {platform for _, platform in parse_simulate(spec)}
    demo_library(platforms, root=folder / "library", body_size=BODY)  # small: the screens, not flash time, are tested
    args = bench_args(folder, spec, speed)
    harness = Harness(args, pollers=live, policy=policy)
    if start:
        harness.start()
    app, link = build_app(argparse.Namespace(**vars(args), socket=harness.service.socket_path, remote=remote),
                          live=live)  # fmt: skip
    harness.link = link
    app.media_roots = (folder / "media",)
    app.settings_file = folder / "tui.json"
    app.test_service, app.test_engine = harness.service, harness.engine
    return app, harness


async def wait_until(pilot, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Let the app run until ``predicate()`` holds (real seconds); fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        await pilot.pause(0.05)
    await pilot.pause()  # let the screen catch up with the state


async def ready(pilot) -> None:
    await wait_until(pilot, pilot.app.bench_ready.is_set, 30.0, "the bench service to answer")
    assert pilot.app.bench_error is None, pilot.app.bench_error
    await pilot.pause()


async def synced(pilot, timeout: float = 20.0) -> None:
    """Wait until the screen has drawn every change the service's board has made."""
    board = pilot.app.test_service.board
    await wait_until(pilot, lambda: pilot.app.seq >= board.seq, timeout, "the screen to catch up with the service")


@pytest.fixture
def kiosk(tmp_path):
    """A factory of apps on a simulated bench; every service is closed after the test."""
    made = []

    def factory(spec: str, **kwargs):
        app, harness = make_app(tmp_path, spec, **kwargs)
        made.append(harness)
        return app

    yield factory
    for harness in made:
        harness.link.close()
        harness.close()
