"""The bench service: one owner of the bench, many clients. Two clients see the same events; a second service
is refused; a remote view may not press unless the PIN unlocks it; SIGTERM stops runs cleanly; the TUI
never imports the bench; a touchscreen killed mid-flash leaves the service to finish, and a new one shows it."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from firmware.releases import BODY
from kiosk.commands.service_cmd import engine_for
from kiosk.demo_library import demo_library
from kiosk.journal import Journal
from kiosk.service.api import WRONG_PIN_DELAY_S, RemotePolicy
from kiosk.service.client import BenchClient, ServiceError, is_running
from kiosk.service.service import BenchService
from kiosk.service.wire import NOT_ALLOWED

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def short_dir():
    folder = Path(tempfile.mkdtemp(prefix="ks-", dir="/tmp"))  # a socket path has room for 108 bytes
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def service_on(folder: Path, spec: str, *, speed: float = 20.0, policy: RemotePolicy | None = None) -> BenchService:
    args = argparse.Namespace(simulate=spec, speed=speed, config=folder / "none.toml",
                              journal=folder / "journal.sqlite", library=folder / "library")  # fmt: skip
    demo_library({"boron", "p2"}, root=folder / "library", body_size=BODY)
    service = BenchService(engine_for(args), folder / "bench.sock", policy=policy)
    service.start()
    return service


def test_two_clients_see_the_same_events_and_a_recover_pressed_in_one_shows_in_the_other(short_dir):
    service = service_on(short_dir, "app-crash@boron,healthy@p2")
    heard: dict[str, list[tuple[str, dict]]] = {"screen": [], "browser": []}
    try:
        clients = {name: BenchClient(service.socket_path, client=name, role="touchscreen" if name == "screen"
                                     else "remote", subscribe=True,
                                     on_notification=lambda m, p, n=name: heard[n].append((m, p))).connect()
                   for name in heard}  # fmt: skip
        run = clients["screen"].call("slot.recover", {"slot": 1})
        assert isinstance(run["run_id"], int)

        def idle_again(name: str) -> bool:
            return any(m == "slot.idle" and p["slot"] == 1 for m, p in heard[name])

        wait_for(lambda: idle_again("screen") and idle_again("browser"), 60, "the verdict on both clients")
        for name in heard:  # the same changes, in the same order, with the same states
            mine = [(m, p["seq"], p["state"]) for m, p in heard[name] if m.startswith("slot.") and p["slot"] == 1]
            heard[name] = mine
        common = min(len(heard["screen"]), len(heard["browser"]))
        assert heard["screen"][:common] == heard["browser"][:common] and common > 5
        methods = [m for m, _, _ in heard["browser"]]
        assert {"slot.busy", "slot.event"} <= set(methods) and methods[-1] == "slot.idle"
        assert heard["browser"][-1][2]["verdict"] == "recovered"
        for client in clients.values():
            client.close()
    finally:
        service.close()


def test_a_view_only_remote_is_refused_and_a_pin_unlocks_only_its_own_connection(short_dir):
    service = service_on(short_dir, "healthy@boron", policy=RemotePolicy("pin", "4711"))
    try:
        with BenchClient(service.socket_path, client="browser", role="remote").connect() as remote, \
                BenchClient(service.socket_path, client="browser 2", role="remote").connect() as other:  # fmt: skip
            assert remote.hello["may_act"] is False and remote.hello["control"] == "pin"
            with pytest.raises(ServiceError) as refused:
                remote.call("slot.recover", {"slot": 1})
            assert refused.value.code == NOT_ALLOWED and "PIN" in refused.value.message
            assert remote.call("bench.state")["slots"][0]["activity"] == "idle"  # looking is allowed
            asked = time.monotonic()
            with pytest.raises(ServiceError) as wrong:
                remote.unlock("0000")
            assert wrong.value.code == NOT_ALLOWED
            assert time.monotonic() - asked >= WRONG_PIN_DELAY_S  # guessing takes its time
            assert remote.unlock("4711")["may_act"] is True
            assert remote.call("slot.recover", {"slot": 1})["run_id"]
            with pytest.raises(ServiceError) as still:
                other.call("slot.stop", {"slot": 1})
            assert still.value.code == NOT_ALLOWED
            remote.call("slot.stop", {"slot": 1})
    finally:
        service.close()


def test_view_only_by_default(short_dir):
    service = service_on(short_dir, "healthy@boron")
    try:
        with BenchClient(service.socket_path, role="remote").connect() as remote:
            with pytest.raises(ServiceError) as refused:
                remote.call("slot.recover", {"slot": 1})
            assert refused.value.code == NOT_ALLOWED and "view-only" in refused.value.message
            with pytest.raises(ServiceError):
                remote.unlock("4711")  # no PIN configured: nothing to unlock
    finally:
        service.close()


def _service_process(folder: Path, spec: str, sock: Path, journal: Path, speed: str = "20") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kiosk.cli", "service", "--simulate", spec, "--speed", speed,
                             "--socket", str(sock), "--journal", str(journal), "--library", str(folder / "library"),
                             "--config", str(folder / "none.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip


def test_a_second_service_on_the_same_bench_or_socket_is_refused_and_a_stale_socket_is_replaced(short_dir):
    demo_library({"boron"}, root=short_dir / "library", body_size=BODY)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(short_dir / "a.sock"))  # a socket file nobody listens on (a service that died)
    stale.close()
    first = _service_process(short_dir, "healthy@boron", short_dir / "a.sock", short_dir / "j.sqlite")
    try:
        wait_for(lambda: is_running(short_dir / "a.sock") or first.poll() is not None, 60, "the first service")
        assert first.poll() is None, first.stderr.read()
        assert (os.stat(short_dir / "a.sock").st_mode & 0o777) == 0o660
        same_bench = _service_process(short_dir, "healthy@boron", short_dir / "b.sock", short_dir / "j.sqlite")
        _, err = same_bench.communicate(timeout=60)
        assert same_bench.returncode == 2 and "another bench service" in err and "drives this bench" in err
        same_socket = _service_process(short_dir, "healthy@boron", short_dir / "a.sock", short_dir / "j2.sqlite")
        _, err = same_socket.communicate(timeout=60)
        assert same_socket.returncode == 2 and "already listens on" in err
        assert is_running(short_dir / "a.sock")  # the first one is unharmed
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 0 and not (short_dir / "a.sock").exists()


def test_sigterm_stops_a_run_cleanly_and_a_killed_service_leaves_it_interrupted(short_dir):
    demo_library({"boron"}, root=short_dir / "library", body_size=BODY)
    sock, journal = short_dir / "s.sock", short_dir / "j.sqlite"
    service = _service_process(short_dir, "corrupt-system@boron", sock, journal, speed="1")
    try:
        wait_for(lambda: is_running(sock) or service.poll() is not None, 60, "the service")
        with BenchClient(sock, role="cli").connect() as cli:
            run_id = cli.call("slot.recover", {"slot": 1})["run_id"]
    finally:
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    run = Journal(journal).run(run_id)
    assert run["status"] == "stopped" and run["verdict"] == "stopped"  # stopped, not left "running"
    # a service that is killed cannot say so: the next one marks its run interrupted
    killed = _service_process(short_dir, "corrupt-system@boron", sock, journal, speed="1")
    wait_for(lambda: is_running(sock) or killed.poll() is not None, 60, "the second service")
    with BenchClient(sock, role="cli").connect() as cli:
        second = cli.call("slot.recover", {"slot": 1})["run_id"]
    killed.kill()
    killed.communicate(timeout=30)
    again = _service_process(short_dir, "corrupt-system@boron", sock, journal)
    try:
        wait_for(lambda: is_running(sock) or again.poll() is not None, 60, "the third service")
        with BenchClient(sock, role="cli").connect() as cli:
            state = cli.call("bench.state")
            assert second in state["interrupted"]
            card = next(s for s in state["slots"] if s["index"] == 1)  # the card says so, not "ready"
            assert card["verdict"] == "interrupted" and card["last_run_id"] == second
            assert f"run {second} was cut off" in card["verdict_detail"]
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=60)
    assert Journal(journal).run(second)["status"] == "interrupted"


_PRIVATE_PARENT = """
import sys, time
from kiosk.tui.private import PrivateService
private = PrivateService(["--simulate", "app-crash@boron", "--speed", "20", "--journal", sys.argv[1]])
print(private.process.pid, private.socket_path, flush=True)
time.sleep(120)
"""


def test_a_private_service_stops_when_the_touchscreen_that_started_it_is_killed(short_dir):
    parent = subprocess.Popen([sys.executable, "-c", _PRIVATE_PARENT, str(short_dir / "j.sqlite")],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    pid = None
    try:
        pid, sock = parent.stdout.readline().split()
        wait_for(lambda: is_running(Path(sock)), 60, "the private service")
        parent.kill()  # SIGKILL: the touchscreen cannot close its service
        parent.wait(10)
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid), 30, "the service to stop")
        assert not Path(sock).parent.exists()  # nobody else is left to remove its temporary folder
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        parent.stdout.close()


def _proc_state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]  # R, S, ... Z once it has exited
    except OSError:
        return "Z"


def test_a_private_service_whose_parent_is_already_gone_does_not_start(short_dir):
    env = {**os.environ, "KIOSK_STOP_WITH_PARENT": "1"}  # pid 1 is never our parent here
    out = subprocess.run([sys.executable, "-m", "kiosk.cli", "service", "--simulate", "app-crash@boron", "--socket",
                          str(short_dir / "x.sock"), "--journal", str(short_dir / "j.sqlite")], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=60)  # fmt: skip
    assert out.returncode != 0 and "has already ended" in out.stderr
    assert not (short_dir / "x.sock").exists()


def test_the_touchscreen_and_its_client_import_nothing_of_the_bench():
    code = ("import sys, json; import kiosk.tui.app, kiosk.service.client, kiosk.tui.link; "
            "print(json.dumps(sorted(sys.modules)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=ROOT)
    loaded = set(json.loads(out.stdout))
    for name in ("hw.sim", "kiosk.ladder", "kiosk.runner", "kiosk.service.engine", "kiosk.bench", "usb", "serial",
                 "pyocd"):  # fmt: skip
        assert name not in loaded, f"the touchscreen imported {name}"


def _tail(folder: Path) -> str:
    return (folder / "tui.log").read_text(errors="replace")[-2000:]


_TUI = r"""
import argparse, sys
from pathlib import Path
from kiosk.commands.tui_cmd import build_app
sock = Path(sys.argv[1])
args = argparse.Namespace(simulate=None, speed=None, config=Path(sys.argv[2]), journal=None, library=None,
                          socket=sock, remote=False)
from kiosk.config import DEFAULT_CONFIG
import kiosk.commands.tui_cmd as tui_cmd
tui_cmd.bench_for = lambda a: ("test bench", [], None)
app, link = build_app(args)
async def pilot(p):
    while not app.connected:
        await p.pause(0.05)
    print("CONNECTED", flush=True)
    await p.press("1", "r")
    while not any(s.running for s in app.states.values()):
        await p.pause(0.05)
    print("RUNNING", flush=True)
    while True:
        await p.pause(1.0)
app.run(headless=True, size=(80, 24), auto_pilot=pilot)
"""


async def test_a_touchscreen_killed_mid_flash_leaves_the_run_to_the_service_and_a_new_one_shows_the_verdict(
        short_dir):  # fmt: skip
    from tests.tui.conftest import ready, wait_until

    service = service_on(short_dir, "corrupt-system@boron", speed=3.0)
    flashing = threading.Event()
    from kiosk.events import StepStarted

    service.engine.bus.subscribe(lambda e: flashing.set() if isinstance(e, StepStarted) else None)
    env = {**os.environ, "XDG_CONFIG_HOME": str(short_dir), "XDG_STATE_HOME": str(short_dir)}
    try:
        command = [sys.executable, "-c", _TUI, str(service.socket_path), str(short_dir / "none.toml")]
        log = open(short_dir / "tui.log", "w")  # noqa: SIM115 (closed below)
        tui = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT, env=env)
        try:
            pressed = flashing.wait(90)
            assert pressed, f"the recovery pressed on the touchscreen never reached a flash step: {_tail(short_dir)}"
            state = service.board.state(1)
            assert (state.running and state.progress is not None) or state.current_rung == "update"
            tui.kill()  # SIGKILL: no goodbye
            tui.wait(10)
        finally:
            if tui.poll() is None:
                tui.kill()
            log.close()
        run_id = service.board.state(1).run_id
        wait_for(lambda: not service.board.state(1).running, 120, "the service to finish the run")
        run = service.engine.journal.run(run_id)
        assert run["verdict"] == "recovered" and run["status"] == "finished"
        # a new touchscreen (a pilot, connected over the socket) shows what the slot did
        import argparse as _argparse

        from kiosk.commands.tui_cmd import build_app

        args = _argparse.Namespace(simulate="corrupt-system@boron", speed=3.0, config=short_dir / "none.toml",
                                   journal=None, library=None, socket=service.socket_path, remote=False)  # fmt: skip
        app, link = build_app(args)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                await ready(pilot)
                await wait_until(pilot, lambda: app.states[1].verdict == "recovered", 10, "the verdict on screen")
                assert app.states[1].last_run_id == run_id and not app.states[1].running
        finally:
            link.close()
    finally:
        service.close()


def test_a_mode_change_keeps_its_slot_busy_for_every_client_and_slot_stop_interrupts_it(short_dir):
    """slot.mode on a device that refuses the control request (Device Protection), so the buttons do it: every
    client hears the slot busy, a recovery there is refused, and slot.stop from another client ends the change
    mid-hold, MODE let go at once (long before the hold would have ended)."""
    from kiosk.service.wire import BUSY, REFUSED

    service = service_on(short_dir, "protected@boron,healthy@boron", speed=1.0)
    buttons = service.engine.bench.slot(1).buttons
    heard: list[tuple[str, dict]] = []
    answer: dict = {}
    try:
        with BenchClient(service.socket_path, client="kiosk dfu", role="cli").connect() as cli, \
                BenchClient(service.socket_path, client="screen", role="touchscreen", subscribe=True,
                            on_notification=lambda m, p: heard.append((m, p))).connect() as screen:  # fmt: skip

            def change() -> None:
                try:
                    answer["value"] = cli.call("slot.mode", {"slot": 1, "mode": "dfu"}, timeout=60)
                except ServiceError as exc:
                    answer["error"] = exc

            worker = threading.Thread(target=change)
            worker.start()
            wait_for(lambda: buttons.mode.pressed, 30, "MODE held (the control request was refused)")
            busy = next(p for m, p in heard if m == "slot.busy")
            assert (busy["slot"], busy["busy_with"], busy["state"]["activity"]) == (1, "mode change", "running")
            assert busy["state"]["rung_detail"].startswith("Put the device in DFU mode")
            with pytest.raises(ServiceError) as refused:
                screen.call("slot.recover", {"slot": 1})
            assert refused.value.code == BUSY and "busy with a mode change" in refused.value.message
            pressed_at = time.monotonic()
            assert screen.call("slot.stop", {"slot": 1}) == {"stopping": True}
            worker.join(30)
            assert not worker.is_alive() and time.monotonic() - pressed_at < 2.0
            assert not buttons.mode.pressed and not buttons.reset.pressed  # let go, inside the hazard guard
            exc = answer.get("error")
            assert exc is not None and exc.code == REFUSED and exc.data == {"reason": "stopped"}, answer
            wait_for(lambda: any(m == "slot.idle" for m, _ in heard), 10, "the slot idle again")
            idle = next(p for m, p in heard if m == "slot.idle")
            assert idle["verdict"] is None and idle["state"]["activity"] == "idle"
            assert idle["state"]["rung_detail"] == "dfu stopped; buttons released"
            assert screen.call("slot.stop", {"slot": 1}) == {"stopping": False}  # nothing runs now
            done = cli.call("slot.mode", {"slot": 2, "mode": "reset"}, timeout=60)  # another slot, undisturbed
            assert done["ok"] and service.board.state(2).rung_detail.startswith("reset: normal reached via ")
    finally:
        service.close()
