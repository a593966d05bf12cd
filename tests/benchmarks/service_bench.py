"""Bench service figures: event latency from the engine to a subscribed client with four slots flashing, the
touchscreen client's start-up to its first frame against a service that already runs, and both processes'
memory at rest and while four slots recover.

    python -m tests.benchmarks.service_bench [--runs 5] [--speed 3]

One `kiosk service --simulate corrupt-system@boron,corrupt-system@photon,corrupt-system@p2,corrupt-system@boron`
runs in its own process on a temporary socket, with its own data folder (the real-size demo library,
kiosk.demo_library, made once there: each slot writes as many bytes as a real update), and the malloc settings
of deploy/session/environment.

- Latency: this process subscribes (kiosk.service.client.BenchClient), presses RECOVER on all four slots and,
  for every slot notification until the four verdicts, takes its own ``time.monotonic()`` on receipt minus the
  notification's ``sent_at`` (the service's ``time.monotonic()`` when it folded the change in the engine's
  publishing thread; CLOCK_MONOTONIC is one clock for every process on a Linux host). p50, p99 and max, of all
  notifications and of those while any slot was writing bytes. Goal: p99 under 20 ms.
- Start-up: wall time from launching a fresh interpreter (``kiosk tui --socket`` as an app in Textual's headless
  mode, as tests/benchmarks/tui_bench.py does it) to its first frame (the first display outside a batch
  update, with the slot cards), and to the moment its link to the service is up; median of ``--runs``, with
  bytecode cached in a private folder (warmed up once), as an installed kiosk is.
- Memory: resident set (VmRSS in /proc) of the service and of one connected touchscreen client, after both
  have been up and idle for 2 s, and the peak of samples every 100 ms while the four slots recover.

A figure that could not be taken says so, and why; the others go on. Not a timed test: it prints what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = "corrupt-system@boron,corrupt-system@photon,corrupt-system@p2,corrupt-system@boron"
REST_S = 2.0
START_TIMEOUT_S = 180.0  # the first start builds the real-size demo library
RECOVER_TIMEOUT_S = 900.0
GOAL_P99_MS = 20.0

_TUI_CHILD = r"""
import argparse, json, sys, time
from pathlib import Path
started, socket_path, spec, hold = float(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
from kiosk.commands.tui_cmd import build_app
args = argparse.Namespace(simulate=spec, speed=3.0, config=Path("none"), journal=None, library=None,
                          socket=Path(socket_path), remote=False)
app, link = build_app(args)
first = {}
display = app._display
def first_frame(screen, renderable):
    if "frame" not in first and renderable is not None and not app._batch_count:
        first["frame"] = time.time() - started
        first["cards"] = len(screen.query(".slot-card"))
        first["screen"] = type(screen).__name__
    return display(screen, renderable)
app._display = first_frame
async def pilot(p):
    deadline = time.time() + 60
    while "frame" not in first and time.time() < deadline:
        await p.pause(0.01)
    while not link.client.connected and time.time() < deadline:
        await p.pause(0.01)
    first["connected"] = time.time() - started if link.client.connected else None
    print(json.dumps({"first_frame_s": first.get("frame"), "connected_s": first["connected"],
                      "cards": first.get("cards"), "screen": first.get("screen")}), flush=True)
    if hold:
        await p.pause(hold)
    p.app.exit()
app.run(headless=True, size=(80, 24), auto_pilot=pilot)
link.close()
"""


class NotTaken(Exception):
    """A figure that could not be taken, and why."""


def _environment(folder: Path) -> dict[str, str]:
    lines = (ROOT / "deploy/session/environment").read_text().splitlines()
    malloc = dict(line.split("=", 1) for line in lines if line.startswith("MALLOC_"))
    env = {**os.environ, "XDG_DATA_HOME": str(folder / "data"), "XDG_CONFIG_HOME": str(folder / "config"),
           "XDG_STATE_HOME": str(folder / "state"), "PYTHONPYCACHEPREFIX": str(folder / "pycache"),
           "PYTHONPATH": str(ROOT), **malloc}  # fmt: skip
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("KIOSK_SOCKET", None)
    return env


def rss_kib(pid: int) -> int | None:
    """The process's resident set now (KiB), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


@contextlib.contextmanager
def running_service(folder: Path, speed: float):
    """`kiosk service` on the four-slot bench in its own process; its Popen once it answers on its socket."""
    from kiosk.service.client import is_running

    sock = folder / "bench.sock"
    log = open(folder / "service.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "service", "--simulate", BENCH, "--speed", str(speed),
                             "--socket", str(sock), "--journal", str(folder / "journal.sqlite")],
                            cwd=ROOT, env=_environment(folder), stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not is_running(sock, timeout=1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (folder / "service.log").read_text().strip().splitlines()[-1:] or ["(no output)"]
                raise NotTaken(f"the service did not answer on {sock} (exit {proc.poll()}): {tail[0][:200]}")
            time.sleep(0.2)
        proc.socket_path = sock  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def start_tui(folder: Path, sock: Path, hold: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _TUI_CHILD, repr(time.time()), str(sock), BENCH, str(hold)],
                            cwd=ROOT, env=_environment(folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def tui_first_frame(folder: Path, sock: Path, hold: float = 0.0,
                    timeout: float = 90.0) -> tuple[dict, subprocess.Popen]:  # fmt: skip
    """Start a touchscreen client; its first line (first frame, connected) and the still running process."""
    proc = start_tui(folder, sock, hold)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not line or not line[0].strip():
        proc.kill()
        _out, err = proc.communicate(timeout=10)
        tail = (err or "").strip().splitlines()[-1:] or ["(no output)"]
        raise NotTaken(f"the touchscreen client drew no frame within {timeout:g} s: {tail[0][:200]}")
    figures = json.loads(line[0])
    if figures.get("screen") != "MainScreen" or not figures.get("cards"):
        proc.kill()
        proc.wait(10)
        raise NotTaken(f"the client's first frame is not the main screen with its slot cards: {figures}")
    if figures.get("connected_s") is None:
        proc.kill()
        proc.wait(10)
        raise NotTaken("the client did not connect to the service within 60 s")
    return figures, proc


def startup(folder: Path, sock: Path, runs: int) -> dict:
    tui_first_frame(folder, sock)[1].wait(60)  # warm-up: fills the bytecode cache
    frames, connects, cards = [], [], 0
    for _ in range(runs):
        figures, proc = tui_first_frame(folder, sock)
        proc.wait(60)
        frames.append(figures["first_frame_s"])
        connects.append(figures["connected_s"])
        cards = figures["cards"]
    return {"first_frame_s": statistics.median(frames), "connected_s": statistics.median(connects), "cards": cards}


def latency_and_memory(folder: Path, service: subprocess.Popen) -> dict:
    """RECOVER on all four slots; every notification's latency, and both processes' memory at rest and peak."""
    from kiosk.service.client import BenchClient

    sock = service.socket_path
    figures: dict = {}
    try:
        _first, tui = tui_first_frame(folder, sock, hold=RECOVER_TIMEOUT_S)
    except NotTaken as exc:
        tui, figures["tui_memory"] = None, str(exc)
    latencies: list[float] = []
    writing_latencies: list[float] = []
    writing: set[int] = set()
    idle: dict[int, str] = {}
    lock = threading.Lock()

    def heard(method: str, params: dict) -> None:
        now = time.monotonic()
        sent = params.get("sent_at")
        if sent is None or "slot" not in params:
            return
        event = (params.get("event") or {}).get("event")
        with lock:
            if event == "StepStarted":
                writing.add(params["slot"])
            elif event in ("StepFinished", "PlanFinished"):
                writing.discard(params["slot"])
            latencies.append(now - sent)
            if writing:
                writing_latencies.append(now - sent)
            if method == "slot.idle":
                idle[params["slot"]] = params.get("verdict")

    client = BenchClient(sock, client="service_bench", role="cli", subscribe=True, on_notification=heard).connect(10)
    try:
        time.sleep(REST_S)
        figures["rest_kib"] = {"service": rss_kib(service.pid), "tui": rss_kib(tui.pid) if tui else None}
        peak = dict(figures["rest_kib"])
        slots = [s["index"] for s in client.call("bench.state", timeout=10)["slots"]]
        with lock:
            latencies.clear()  # the figure is of the recoveries: LED and USB changes at rest are left out
        started = time.monotonic()
        for slot in slots:
            client.call("slot.recover", {"slot": slot}, timeout=30)
        deadline = started + RECOVER_TIMEOUT_S
        while len(idle) < len(slots) and time.monotonic() < deadline:
            for name, pid in (("service", service.pid), ("tui", tui.pid if tui else None)):
                now = rss_kib(pid) if pid else None
                if now is not None and (peak.get(name) or 0) < now:
                    peak[name] = now
            time.sleep(0.1)
        figures["wall_s"] = time.monotonic() - started
        if len(idle) < len(slots):
            raise NotTaken(f"only {len(idle)} of {len(slots)} slots ended within {RECOVER_TIMEOUT_S:g} s")
        figures["peak_kib"] = peak
        figures["verdicts"] = dict(sorted(idle.items()))
        with lock:
            figures["latency_s"] = list(latencies)
            figures["writing_latency_s"] = list(writing_latencies)
        if tui is not None and tui.poll() is not None:
            figures["tui_memory"] = f"the touchscreen client exited early (status {tui.returncode})"
    finally:
        client.close()
        if tui is not None and tui.poll() is None:
            tui.terminate()
            try:
                tui.wait(10)
            except subprocess.TimeoutExpired:
                tui.kill()
                tui.wait(10)
    return figures


def _ms(values: list[float]) -> str:
    if not values:
        return "none"
    return (f"p50 {percentile(values, 0.5) * 1000:.1f} ms, p99 {percentile(values, 0.99) * 1000:.1f} ms, max "
            f"{max(values) * 1000:.1f} ms over {len(values)} notifications")  # fmt: skip


def _mib(kib: int | None) -> str:
    return f"{kib / 1024:.1f} MiB" if kib else "not taken"


def header() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"Bench service figures on {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
            f"{platform.python_implementation()} {platform.python_version()}), "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {load}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="client start-ups (median)")
    parser.add_argument("--speed", type=float, default=3.0, help="simulated device seconds per real second")
    args = parser.parse_args()
    print(header())
    with tempfile.TemporaryDirectory(prefix="kb-", dir="/tmp") as name:  # a socket's path has room for 108 bytes
        folder = Path(name)
        try:
            with running_service(folder, args.speed) as service:
                try:
                    start = startup(folder, service.socket_path, args.runs)
                except (NotTaken, subprocess.SubprocessError, OSError, ValueError) as exc:
                    print(f"Client start-up to first frame: not taken ({exc})")
                else:
                    print(f"Client start-up (kiosk tui against a running service, {start['cards']} slot cards): "
                          f"first frame {start['first_frame_s'] * 1000:.0f} ms, connected to the service "
                          f"{start['connected_s'] * 1000:.0f} ms (median of {args.runs})")  # fmt: skip
                try:
                    found = latency_and_memory(folder, service)
                except (NotTaken, subprocess.SubprocessError, OSError, ValueError, TimeoutError) as exc:
                    print(f"Event latency and memory while four slots recover: not taken ({exc})")
                    return
        except NotTaken as exc:
            print(f"Bench service figures: not taken ({exc})")
            return
    p99 = percentile(found["latency_s"], 0.99) * 1000 if found["latency_s"] else None
    goal = f" (goal p99 < {GOAL_P99_MS:g} ms: {'met' if p99 is not None and p99 < GOAL_P99_MS else 'MISSED'})"
    verdict = goal if p99 is not None else ""
    print(f"Event latency engine -> client, four slots recovering at {args.speed:g}x ({found['wall_s']:.1f} s): "
          f"{_ms(found['latency_s'])}{verdict}")  # fmt: skip
    print(f"  while any slot was writing bytes: {_ms(found['writing_latency_s'])}")
    print(f"  verdicts {found['verdicts']}")
    rest, peak = found["rest_kib"], found["peak_kib"]
    print(f"Memory (resident): service {_mib(rest['service'])} at rest, {_mib(peak['service'])} peak while four "
          f"slots recover; touchscreen client {_mib(rest['tui'])} at rest, {_mib(peak['tui'])} peak"
          + (f" ({found['tui_memory']})" if found.get("tui_memory") else ""))  # fmt: skip


if __name__ == "__main__":
    main()
