"""TUI figures: start-up to the first frame and peak memory, each against a bare Textual app on this machine,
and the longest event-loop stall while four simulated slots recover and flash at once.

    python -m tests.benchmarks.tui_bench [--runs 5] [--speed 1]

Start-up is wall time from launching a fresh interpreter to the app's first frame (Textual's auto-pilot runs
once the first screen has been drawn), median of ``--runs``. Peak memory is the child's maximum resident set
once the app has been up for two seconds (for the kiosk: with its simulated bench open and its pollers
running). The stall is the largest lateness of a 5 ms timer on the UI's event loop while the four slots run
their ladders (paced at ``--speed``), of which the part while any slot was writing bytes is given too.
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
    app, backend = build_app(args)
first = {}
async def pilot(p):
    first["frame"] = time.time() - started
    if hold:
        await p.pause(hold)
    p.app.exit()
app.run(headless=True, size=(80, 24), auto_pilot=pilot)
if kind != "bare":
    backend.close()
print(json.dumps({"first_frame_s": first["frame"], "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _child(kind: str, hold: float, folder: str) -> dict:
    env = {**os.environ, "XDG_DATA_HOME": folder, "XDG_CONFIG_HOME": folder}
    out = subprocess.run([sys.executable, "-c", _CHILD, kind, repr(time.time()), str(hold), folder],
                         capture_output=True, text=True, env=env, timeout=120, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def startup_and_memory(runs: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        _child("kiosk", 0.0, folder)  # builds the demo library once, as a kiosk's first start does
        figures = {}
        for kind in ("bare", "kiosk"):
            starts = [_child(kind, 0.0, folder)["first_frame_s"] for _ in range(runs)]
            memory = [_child(kind, HELD_S, folder)["max_rss_kib"] for _ in range(max(1, runs // 2))]
            figures[kind] = {"first_frame_s": statistics.median(starts), "peak_rss_mib": max(memory) / 1024}
    figures["startup_ratio"] = figures["kiosk"]["first_frame_s"] / figures["bare"]["first_frame_s"]
    figures["memory_ratio"] = figures["kiosk"]["peak_rss_mib"] / figures["bare"]["peak_rss_mib"]
    return figures


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
    args = parser.parse_args()
    figures = startup_and_memory(args.runs)
    print(f"TUI start-up to first frame: kiosk {figures['kiosk']['first_frame_s'] * 1000:.0f} ms, bare Textual app "
          f"{figures['bare']['first_frame_s'] * 1000:.0f} ms: ratio {figures['startup_ratio']:.2f} (goal <= 1.3)")
    print(f"TUI peak memory after {HELD_S:g} s: kiosk {figures['kiosk']['peak_rss_mib']:.1f} MiB, bare Textual app "
          f"{figures['bare']['peak_rss_mib']:.1f} MiB: ratio {figures['memory_ratio']:.2f} (goal <= 1.3)")
    stall = asyncio.run(_stall(args.speed))
    print(f"TUI longest event-loop stall, four slots recovering at {args.speed:g}x: {stall['all'] * 1000:.1f} ms over "
          f"{stall['wall_s']:.1f} s; while bytes were being written: {stall['flashing'] * 1000:.1f} ms "
          f"({stall['flashing_samples']} samples) (goal < 50 ms); verdicts {stall['verdicts']}")


if __name__ == "__main__":
    main()
