"""TUI figures: start-up to the first frame and peak memory, each against a bare Textual app on this machine,
and the longest event-loop stall while four simulated slots recover and flash at once.

    python -m tests.benchmarks.tui_bench [--runs 5] [--speed 1] [--compile-each-start]

Start-up is wall time from launching a fresh interpreter to the app's first frame, median of ``--runs``. The
first frame is the first one Textual draws (its first display outside a batch update: what it writes to the
terminal), detected the same way in both apps; for the kiosk it must show the main screen's slot cards.
(Textual's auto-pilot starts when the app is ready, which may be before its screen is composed, so its
start is not the first frame.) Both apps run with bytecode cached in a private folder, warmed up once, as an
installed kiosk is: ``PYTHONDONTWRITEBYTECODE`` in a development shell would otherwise compile the kiosk's
own modules at every start while Textual's come precompiled (``--compile-each-start`` measures that way).
Bare and kiosk runs alternate, so a busy machine slows both alike. Both run with the malloc settings of
deploy/session/environment, as the kiosk runs on a bench. Peak memory is the child's maximum
resident set once the app has been up for two seconds (for the kiosk: with its simulated bench open and its
pollers running); also while its four slots recover (the peak until all four verdicts), and on the example
bench config (deploy/kiosk.example.toml on gpiozero's mock pins: the kiosk as on a Pi, without the
simulator). The stall is the largest lateness of a 5 ms timer on the UI's event loop while the four slots run
their ladders (paced at ``--speed``), of which the part while any slot was writing bytes is given too.
The demo library behind every simulated run is the real-size one (kiosk.demo_library, firmware/release_sizes.py),
made once in the benchmark's own data folder, so a slot writes as many bytes as a real update.
Not a timed test: it prints what it measured. Goals (DESIGN.md): ratios at most 1.3, stall under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

FLASH_BENCH = "corrupt-system@boron,corrupt-system@photon,corrupt-system@p2,app-crash@boron"
HELD_S = 2.0

_CHILD = r"""
import resource, sys, time, json
started = float(sys.argv[2])
kind, hold = sys.argv[1], float(sys.argv[3])
if kind == "bare":
    from textual.app import App
    from textual.widgets import Static
    class Bare(App):
        def compose(self):
            yield Static("hello")
    app = Bare()
else:
    import argparse
    from pathlib import Path
    from kiosk.commands.tui_cmd import build_app
    args = argparse.Namespace(simulate="app-crash@boron,corrupt-system@photon,missing-bootloader@boron,frozen@p2",
                              speed=3.0, config=Path("none"), journal=Path(sys.argv[4]) / "j.sqlite", library=None)
    if kind == "kiosk-config":  # the example bench config on gpiozero's mock pins: no simulator, no devices; its
        args.simulate, args.config, args.socket = None, Path(sys.argv[5]), Path(sys.argv[6])  # service is running
    app, backend = build_app(args)
first = {}
display = app._display
def first_frame(screen, renderable):  # what Textual writes to the terminal: a frame outside a batch update
    if "frame" not in first and renderable is not None and not app._batch_count:
        first["frame"] = time.time() - started
        first["cards"] = len(screen.query(".slot-card"))
        first["screen"] = type(screen).__name__
    return display(screen, renderable)
app._display = first_frame
async def pilot(p):
    while "frame" not in first:
        await p.pause(0.01)
    if kind == "kiosk-config":
        while not app.bench_ready.wait(0):
            await p.pause(0.05)
        if app.bench_error:
            raise SystemExit(f"the example bench did not open: {app.bench_error}")
    if hold:
        await p.pause(hold)
    if kind == "kiosk-recovering":  # press Recover on every slot; the figure is the peak until all have ended
        while not app.bench_ready.wait(0):
            await p.pause(0.05)
        for slot in list(app.states):
            app.recover_slot(slot)
        deadline = time.time() + 300
        await p.pause(0.5)
        while time.time() < deadline and not all(s.verdict and not s.running for s in app.states.values()):
            await p.pause(0.1)
        first["verdicts"] = {n: s.verdict for n, s in app.states.items()}
    p.app.exit()
app.run(headless=True, size=(80, 24), auto_pilot=pilot)
if kind != "bare":
    backend.close()
print(json.dumps({"first_frame_s": first["frame"], "first_screen": first["screen"], "cards": first["cards"],
                  "verdicts": first.get("verdicts"),
                  "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _deployed_malloc() -> dict[str, str]:
    """The malloc settings the kiosk runs with on a bench (deploy/session/environment), for both apps."""
    lines = (Path(__file__).parents[2] / "deploy/session/environment").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.startswith("MALLOC_"))


def _child(kind: str, hold: float, folder: str, compile_each_start: bool = False) -> dict:
    env = {**os.environ, "XDG_DATA_HOME": folder, "XDG_CONFIG_HOME": folder, **_deployed_malloc()}
    if not compile_each_start:  # bytecode cached (in the temporary folder, never in the tree), for both apps
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(folder) / "pycache")
    if kind == "kiosk-config":
        env["GPIOZERO_PIN_FACTORY"] = "mock"
    example = str(Path(__file__).parents[2] / "deploy/kiosk.example.toml")
    if kind == "kiosk-config":
        return _config_child(hold, folder, env, example)
    out = subprocess.run([sys.executable, "-c", _CHILD, kind, repr(time.time()), str(hold), folder, example],
                         capture_output=True, text=True, env=env, timeout=120, check=True)  # fmt: skip
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    if kind != "bare" and (figures["first_screen"] != "MainScreen" or not figures["cards"]):
        raise AssertionError(f"the kiosk's first frame is not the main screen with its slot cards: {figures}")
    return figures


def _config_child(hold: float, folder: str, env: dict[str, str], example: str) -> dict:
    """The touchscreen on the example bench config: its bench service (`kiosk service --config`, gpiozero's mock
    pins) started first, as systemd starts it on a bench, then the touchscreen as its client; the figures are the
    client's, with the service's peak resident memory beside them (``service_rss_kib``)."""
    from kiosk.service.client import is_running

    socket_path = Path(folder) / "config-bench.sock"
    log = Path(folder) / "config-service.log"
    with log.open("w") as err:
        service = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "service", "--config", example, "--library",
                                    str(Path(folder) / "library"), "--journal", str(Path(folder) / "config.sqlite"),
                                    "--socket", str(socket_path)], env=env, stdout=subprocess.DEVNULL,
                                   stderr=err)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not is_running(socket_path, timeout=0.5):
            if service.poll() is not None or time.monotonic() > deadline:
                said = log.read_text()[-200:] if service.poll() is not None else "no answer within 60 s"
                raise subprocess.SubprocessError(f"the example bench's service did not start: {said}")
            time.sleep(0.1)
        out = subprocess.run([sys.executable, "-c", _CHILD, "kiosk-config", repr(time.time()), str(hold), folder,
                              example, str(socket_path)], capture_output=True, text=True, env=env, timeout=120,
                             check=True)  # fmt: skip
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        with open(f"/proc/{service.pid}/status") as status:
            figures["service_rss_kib"] = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        return figures
    finally:
        service.terminate()
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def startup_and_memory(runs: int, compile_each_start: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("bare", "kiosk"):  # warm-up, held as long as a measured run: the kiosk's opens its bench
            _child(kind, HELD_S, folder, compile_each_start)  # (builds the demo library, caches every module)
        starts: dict[str, list[float]] = {"bare": [], "kiosk": []}
        memory: dict[str, list[int]] = {"bare": [], "kiosk": []}
        cards = 0
        for n in range(runs):  # alternating, so a busy machine slows both alike
            for kind in ("bare", "kiosk"):
                run = _child(kind, 0.0, folder, compile_each_start)
                starts[kind].append(run["first_frame_s"])
                cards = run["cards"] if kind == "kiosk" else cards
                if n < max(1, runs // 2):
                    memory[kind].append(_child(kind, HELD_S, folder, compile_each_start)["max_rss_kib"])
        figures: dict = {kind: {"first_frame_s": statistics.median(starts[kind]),
                                "peak_rss_mib": max(memory[kind]) / 1024} for kind in ("bare", "kiosk")}  # fmt: skip
        figures["kiosk"]["cards"] = cards
        recovering = _child("kiosk-recovering", HELD_S, folder, compile_each_start)
        figures["recovering"] = {"peak_rss_mib": recovering["max_rss_kib"] / 1024, "verdicts": recovering["verdicts"]}
        configured = [_child("kiosk-config", HELD_S, folder, compile_each_start) for _ in range(2)]
        figures["config"] = {"peak_rss_mib": max(run["max_rss_kib"] for run in configured) / 1024,
                             "service_rss_mib": max(run["service_rss_kib"] for run in configured) / 1024,
                             "cards": configured[0]["cards"]}  # fmt: skip
    figures["startup_ratio"] = figures["kiosk"]["first_frame_s"] / figures["bare"]["first_frame_s"]
    figures["memory_ratio"] = figures["kiosk"]["peak_rss_mib"] / figures["bare"]["peak_rss_mib"]
    figures["recovering_ratio"] = figures["recovering"]["peak_rss_mib"] / figures["bare"]["peak_rss_mib"]
    figures["config_ratio"] = figures["config"]["peak_rss_mib"] / figures["bare"]["peak_rss_mib"]
    return figures


#: What the kiosk imports, in groups, each measured after the ones before it (shared dependencies count once,
#: in the first group that needs them). The kiosk's own groups come after the libraries they use.
LEDGER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Textual (what the bare app imports)", ("textual.app", "textual.widgets._static")),
    ("the kiosk's screens and cards", ("kiosk.commands.tui_cmd", "kiosk.tui.app")),
    ("gpiozero (with colorzero, importlib_metadata)", ("gpiozero",)),
    ("sqlite3 (the journal)", ("sqlite3",)),
    ("pyusb", ("usb.core", "usb.util")),
    ("pure_protobuf (control requests)", ("pure_protobuf.message", "pure_protobuf.annotations")),
    ("pyserial", ("serial", "serial.tools.list_ports")),
    ("hashlib (OpenSSL)", ("hashlib",)),
    ("the kiosk's core: ladder, executor, drivers, firmware", ("kiosk.runner", "kiosk.ladder", "kiosk.journal",
                                                              "kiosk.bench", "firmware.library", "kiosk.report")),
    ("the simulator", ("hw.sim.scenarios", "hw.sim.device", "hw.sim.usb_backend", "hw.sim.device_serial",
                       "hw.sim.swd_probe", "hw.sim.wiring", "hw.sim.pins")),
)  # fmt: skip

_LEDGER_CHILD = r"""
import importlib, json, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
out, before = [], rss()
for name, modules in json.loads(sys.argv[1]):
    for m in modules:
        importlib.import_module(m)
    now = rss(); out.append((name, now - before)); before = now
print(json.dumps(out))
"""


def import_ledger() -> list[tuple[str, float]]:
    """MiB of resident memory each group of imports adds, in a fresh interpreter with bytecode cached."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(Path(folder) / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        runs = []
        for _ in range(3):  # the first run fills the bytecode cache; the median of the other two
            out = subprocess.run([sys.executable, "-c", _LEDGER_CHILD, json.dumps(LEDGER)], capture_output=True,
                                 text=True, env=env, timeout=120, check=True)  # fmt: skip
            runs.append(json.loads(out.stdout))
    return [(name, statistics.median(run[i][1] for run in runs[1:]) / 2**20) for i, (name, _) in enumerate(LEDGER)]


async def _stall(speed: float) -> dict:
    from kiosk.events import PlanFinished, StepStarted
    from tests.tui.conftest import make_app, ready, wait_until

    with tempfile.TemporaryDirectory() as tmp:
        app, backend = make_app(Path(tmp), FLASH_BENCH, speed=speed)
        writing: set[int] = set()
        backend.bus.subscribe(lambda e: writing.add(e.slot) if isinstance(e, StepStarted) else
                              writing.discard(e.slot) if isinstance(e, PlanFinished) else None)  # fmt: skip
        worst = {"all": 0.0, "flashing": 0.0, "samples": 0, "flashing_samples": 0}
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                await ready(pilot)
                done = asyncio.Event()

                async def probe() -> None:
                    while not done.is_set():
                        t = time.perf_counter()
                        await asyncio.sleep(0.005)
                        late = time.perf_counter() - t - 0.005
                        worst["all"] = max(worst["all"], late)
                        worst["samples"] += 1
                        if writing:
                            worst["flashing"] = max(worst["flashing"], late)
                            worst["flashing_samples"] += 1

                task = asyncio.create_task(probe())
                started = time.perf_counter()
                for slot in app.states:
                    app.recover_slot(slot)
                await wait_until(pilot, lambda: all(s.verdict and not s.running for s in app.states.values()), 600)
                done.set()
                await task
                worst["wall_s"] = time.perf_counter() - started
                worst["verdicts"] = {n: s.verdict for n, s in app.states.items()}
        finally:
            backend.close()
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="start-ups per app (median)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated device seconds per real second")
    parser.add_argument("--compile-each-start", action="store_true",
                        help="no bytecode cache when PYTHONDONTWRITEBYTECODE says so (the kiosk's own modules are "
                             "then compiled at every start, Textual's are not)")  # fmt: skip
    parser.add_argument("--ledger", action="store_true", help="also print what each group of imports costs in memory")
    args = parser.parse_args()
    # A figure that cannot be taken (a child timed out or failed on a loaded machine) says so; the others go on.
    try:
        figures = startup_and_memory(args.runs, args.compile_each_start)
    except NOT_TAKEN as exc:
        print(f"TUI start-up and memory: not taken ({_why(exc)})")
    else:
        _print_startup(figures)
    if args.ledger:
        try:
            ledger = import_ledger()
        except NOT_TAKEN as exc:
            print(f"Where the memory goes: not taken ({_why(exc)})")
        else:
            print("Where the memory goes (MiB resident each group of imports adds, in this order):")
            for name, mib in ledger:
                print(f"  {mib:5.1f}  {name}")
    try:
        stall = asyncio.run(_stall(args.speed))
    except NOT_TAKEN as exc:
        print(f"TUI longest event-loop stall: not taken ({_why(exc)})")
        return
    print(
        f"TUI longest event-loop stall, four slots recovering at {args.speed:g}x: {stall['all'] * 1000:.1f} ms over "
        f"{stall['wall_s']:.1f} s; while bytes were being written: {stall['flashing'] * 1000:.1f} ms "
        f"({stall['flashing_samples']} samples) (goal < 50 ms); verdicts {stall['verdicts']}"
    )


#: What a loaded machine makes of a measurement: a child past its timeout, a child that failed, no JSON, a wait
#: that ran out (the stall run's own waits).
NOT_TAKEN = (subprocess.SubprocessError, json.JSONDecodeError, TimeoutError, AssertionError, pytest.fail.Exception)


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        tail = (exc.stderr or "").strip().splitlines()[-1:] or [""]
        return f"a child exited with status {exc.returncode}: {tail[0][:200]}"
    return f"{type(exc).__name__}: {exc}"[:300]


def _print_startup(figures: dict) -> None:
    print(
        f"TUI start-up to first frame ({figures['kiosk']['cards']} slot cards in the kiosk's): kiosk "
        f"{figures['kiosk']['first_frame_s'] * 1000:.0f} ms, bare Textual app "
        f"{figures['bare']['first_frame_s'] * 1000:.0f} ms: ratio {figures['startup_ratio']:.2f} (goal <= 1.3)"
    )
    print(
        f"TUI peak memory after {HELD_S:g} s: kiosk {figures['kiosk']['peak_rss_mib']:.1f} MiB, bare Textual app "
        f"{figures['bare']['peak_rss_mib']:.1f} MiB: ratio {figures['memory_ratio']:.2f} (goal <= 1.3)"
    )
    print(
        f"TUI peak memory while its four slots recover: kiosk {figures['recovering']['peak_rss_mib']:.1f} MiB: ratio "
        f"{figures['recovering_ratio']:.2f}; verdicts {figures['recovering']['verdicts']}"
    )
    print(
        f"TUI peak memory on the example bench config ({figures['config']['cards']} slots, gpiozero mock pins, no "
        f"simulator, no devices) after {HELD_S:g} s: {figures['config']['peak_rss_mib']:.1f} MiB: ratio "
        f"{figures['config_ratio']:.2f}; its bench service {figures['config']['service_rss_mib']:.1f} MiB"
    )

if __name__ == "__main__":
    main()
