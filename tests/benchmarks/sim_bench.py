"""The simulated bench's host cost: N identical slots against one, paced runs against their speed, and the demo
touchscreen's CPU idle and while its four slots recover.

    python -m tests.benchmarks.sim_bench            # every figure (a few minutes on 2 cores)
    python -m tests.benchmarks.sim_bench --quick    # N = 1, 2, 4 only, no demo

Figures are host CPU seconds of the whole process (user + system, from the kernel) and wall seconds; the
device seconds are the recoveries' own ``elapsed_s``. A figure that could not be taken says why.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import pty
import resource
import sqlite3
import struct
import subprocess
import sys
import tempfile
import termios
import time
from datetime import UTC, datetime
from pathlib import Path

SCENARIO = "app-crash@boron"
DEMO = "app-crash@boron,corrupt-system@photon,missing-bootloader@boron,frozen@p2"


def recover(n: int, speed: float | None, folder: Path) -> tuple[float, float, float, float]:
    """(wall s, host CPU s, the slowest slot's device s, wall s from the first run's start to the last verdict in
    the journal) of `kiosk recover --all` on n identical slots."""
    spec = ",".join([SCENARIO] * n)
    journal = folder / f"j{n}-{speed}.sqlite"
    argv = [sys.executable, "-m", "kiosk.cli", "recover", "--all", "--simulate", spec, "--json",
            "--journal", str(journal)]  # fmt: skip
    if speed is not None:
        argv += ["--speed", str(speed)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    docs = json.loads(done.stdout) if done.stdout.strip() else []
    docs = docs if isinstance(docs, list) else [docs]
    if len(docs) != n or any(d.get("verdict") != "recovered" for d in docs):
        raise RuntimeError(f"{n} slots: {[d.get('verdict') for d in docs]} ({done.stderr.strip()[-300:]})")
    with contextlib.closing(sqlite3.connect(journal)) as db:
        first, last = db.execute("SELECT min(started_at), max(ended_at) FROM runs").fetchone()
    runs = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    return wall, cpu, max(d["elapsed_s"] for d in docs), runs


def cpu_of(pid: int) -> float:
    """Host CPU seconds a process has used so far (/proc/PID/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """The processes ``pid`` started (the touchscreen's private bench service), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def tree_cpu(pid: int) -> dict[int, float]:
    """Host CPU seconds so far of ``pid`` and of each process it started, by pid."""
    out = {}
    for p in (pid, *children_of(pid)):
        with contextlib.suppress(OSError):
            out[p] = cpu_of(p)
    return out


def demo_cpu(idle_s: float, recover_s: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """The demo (`make demo`: four slots at 3x) on a pseudo-terminal: the share of one core the touchscreen
    and its private bench service each use, idle and while all four slots recover (Recover pressed on each by
    its key)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the kiosk on the pty, 80x24
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "kiosk.cli", "tui", "--simulate", DEMO, "--speed", "3",
                                  "--journal", os.path.join(tempfile.mkdtemp(), "demo.sqlite")])  # fmt: skip
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.set_blocking(fd, False)

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                while os.read(fd, 65536):
                    pass
            except (BlockingIOError, OSError):
                pass
            time.sleep(0.05)

    def share(start: dict[int, float], seconds: float) -> tuple[float, float]:
        """(the touchscreen's, its service's) share of a core since ``start``."""
        now = tree_cpu(pid)
        screen = (now.get(pid, 0.0) - start.get(pid, 0.0)) / seconds
        service = sum(v - start.get(p, 0.0) for p, v in now.items() if p != pid) / seconds
        return screen, service

    try:
        drain(20.0)  # start-up, the bench opening and the LEDs' first readings: then it is left idle
        start = tree_cpu(pid)
        drain(idle_s)
        idle = share(start, idle_s)
        for slot in "1234":
            os.write(fd, f"{slot}r".encode())
            drain(0.3)
        start = tree_cpu(pid)
        drain(recover_s)
        busy = share(start, recover_s)
        return idle, busy
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def touchscreen_pace(spec: str, speed: float, limit_s: float = 240.0) -> tuple[float, float] | None:
    """Wall seconds from RECOVER pressed on every slot of a `kiosk tui --simulate SPEC --speed X` (on a pty, as
    `kiosk serve` runs one per browser) to the last verdict in its journal, and the slowest run's device seconds;
    None when the verdicts did not come within ``limit_s``."""
    journal = os.path.join(tempfile.mkdtemp(), "pace.sqlite")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "kiosk.cli", "tui", "--simulate", spec, "--speed", str(speed),
                                  "--journal", journal])  # fmt: skip
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.set_blocking(fd, False)
    slots = len(spec.split(","))

    def drain() -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(fd, 65536):
                pass

    def finished() -> list[tuple[float]]:
        if not os.path.exists(journal):
            return []
        with contextlib.closing(sqlite3.connect(journal)) as db:
            try:
                return db.execute("SELECT elapsed_s FROM runs WHERE status = 'finished'").fetchall()
            except sqlite3.OperationalError:
                return []  # not made yet

    try:
        end = time.monotonic() + 8.0  # start-up and the bench opening
        while time.monotonic() < end:
            drain()
            time.sleep(0.05)
        pressed = time.monotonic()
        for slot in range(1, slots + 1):
            os.write(fd, f"{slot}r".encode())
        while time.monotonic() < pressed + limit_s:
            drain()
            runs = finished()
            if len(runs) >= slots:
                return time.monotonic() - pressed, max(r[0] for r in runs)
            time.sleep(0.1)
        return None
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def serve_pace(spec: str, speed: float, limit_s: float = 240.0) -> tuple[float, float] | str:
    """`kiosk serve --simulate SPEC --speed X` with one browser's screen open on it (a websocket, as a browser
    opens it, which makes textual-serve start its `kiosk tui --remote`): wall seconds from RECOVER on every slot
    (sent to the bench service serve started, as any client sends it) to the last verdict in its journal, and the
    slowest run's device seconds; or why the figure could not be taken."""
    import asyncio
    import socket
    import threading

    from kiosk.service.client import BenchClient, ServiceError, ServiceUnavailable, is_running

    folder = tempfile.mkdtemp()
    journal = os.path.join(folder, "serve.sqlite")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "kiosk.cli", "serve", "--simulate", spec, "--speed", str(speed), "--journal",
            journal, "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    browsing = threading.Event()
    stop = threading.Event()

    def browser() -> None:
        from aiohttp import ClientError, ClientSession, WSMsgType

        async def view() -> None:
            url = f"ws://127.0.0.1:{port}/ws?width=142&height=31"
            async with ClientSession() as session, session.ws_connect(url) as ws:
                while not stop.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        message = await ws.receive(timeout=0.5)
                        if message.type == WSMsgType.BINARY and b"RECOVER" in message.data:
                            browsing.set()
                        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                            return

        for _ in range(100):  # until serve listens
            if stop.is_set():
                return
            with contextlib.suppress(ClientError, OSError):
                asyncio.run(view())
                return
            time.sleep(0.1)

    viewer = threading.Thread(target=browser, daemon=True)
    try:
        line = server.stderr.readline()  # "serving the kiosk on ...; every browser's screen uses ... at PATH"
        if "bench service at " not in line:
            return f"kiosk serve did not start: {(line + server.stderr.read(2000)).strip()[-300:]}"
        socket_path = line.rsplit("bench service at ", 1)[1].strip()
        viewer.start()
        if not browsing.wait(60.0):
            return "the browser's screen did not show the kiosk within 60 s"
        # the screen draws its cards before its bench service answers (the service may still be making its demo
        # library): RECOVER is pressed once the service is there, as a technician would see it enabled
        ready_by = time.monotonic() + 60.0
        while not is_running(socket_path, timeout=0.5):
            if time.monotonic() > ready_by or server.poll() is not None:
                return "the bench service kiosk serve started did not answer within 60 s"
            time.sleep(0.1)
        slots = len(spec.split(","))
        with BenchClient(socket_path, client="sim_bench").connect() as client:
            pressed = time.monotonic()
            for slot in range(1, slots + 1):
                client.call("slot.recover", {"slot": slot})
        while time.monotonic() < pressed + limit_s:
            with contextlib.closing(sqlite3.connect(journal)) as db:
                runs = db.execute("SELECT elapsed_s FROM runs WHERE status = 'finished'").fetchall()
            if len(runs) >= slots:
                return time.monotonic() - pressed, max(r[0] for r in runs)
            time.sleep(0.1)
        return f"no verdicts within {limit_s:g} s"
    except (OSError, ServiceError, ServiceUnavailable, TimeoutError, sqlite3.Error) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
        if viewer.ident is not None:
            viewer.join(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 2, 4 only, and no demo")
    args = parser.parse_args()
    print(f"# simulator cost ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    sizes = (1, 2, 4) if args.quick else (1, 2, 4, 8)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"\n`kiosk recover --all --simulate {SCENARIO} x N`, unpaced (the same recovery in every slot)")
        print("| slots | wall s | host CPU s | CPU / (N x CPU of 1) | device s |")
        print("|---|---|---|---|---|")
        one = None
        for n in sizes:
            try:
                wall, cpu, device, _ = recover(n, None, folder)
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                print(f"| {n} | not taken: {exc} | | | |")
                continue
            one = one or cpu
            print(f"| {n} | {wall:.2f} | {cpu:.2f} | {cpu / (n * one):.2f} | {device:.1f} |")
        print("\nPaced at `--speed 3`: from the first run's start to the last verdict (the journal's times) against the"
              " device time / 3 of the slowest slot; the whole process, start-up included, beside it")
        print("| slots | runs: wall s | device s / 3 | runs / (device / 3) | process wall s |")
        print("|---|---|---|---|---|")
        for n in (4,) if args.quick else (4, 8):
            try:
                wall, _, device, runs = recover(n, 3.0, folder)
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError, sqlite3.Error, TypeError) as exc:
                print(f"| {n} | not taken: {exc} | | | |")
                continue
            print(f"| {n} | {runs:.2f} | {device / 3:.2f} | {runs / (device / 3):.2f} | {wall:.2f} |")
    print("\nThe touchscreen at `--speed 3` (`kiosk tui --simulate` on a pty: its private bench service and the client)"
          ", RECOVER on every slot: wall time to the last verdict against the slowest run's device time / 3")
    for spec in ("app-crash@boron", DEMO):
        try:
            paced = touchscreen_pace(spec, 3.0)
        except OSError as exc:
            paced, why = None, str(exc)
        else:
            why = "no verdicts within 240 s"
        if paced is None:
            print(f"- {spec}: not taken ({why})")
            continue
        wall, device = paced
        print(f"- {spec}: {wall:.1f} s wall for {device:.1f} device s: {wall / (device / 3):.2f}x of device time / 3 "
              "(the verdict shows a moment after the journal has it)")
    print("\n`kiosk serve --simulate ... --speed 3` with a browser's screen open on it (a websocket), RECOVER on every"
          " slot through its bench service: wall time to the last verdict against the slowest run's device time / 3")
    for spec in ("app-crash@boron", DEMO):
        served = serve_pace(spec, 3.0)
        if isinstance(served, str):
            print(f"- {spec}: not taken ({served})")
            continue
        wall, device = served
        print(f"- {spec}: {wall:.1f} s wall for {device:.1f} device s: {wall / (device / 3):.2f}x of device time / 3")
    if not args.quick:
        try:
            idle, busy = demo_cpu(20.0, 15.0)
            print(f"\n`make demo` (four slots at 3x, 80x24 pty), touchscreen + its bench service: "
                  f"{sum(idle) * 100:.1f}% of a core idle ({idle[0] * 100:.1f} + {idle[1] * 100:.1f}), "
                  f"{sum(busy) * 100:.1f}% while all four recover ({busy[0] * 100:.1f} + {busy[1] * 100:.1f})")
        except OSError as exc:
            print(f"\n`make demo` CPU: not taken ({exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
