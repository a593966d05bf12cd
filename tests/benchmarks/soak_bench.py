"""Soak: the kiosk's resident memory over minutes on the simulated demo bench, idle, as a demo kiosk sits.

    python -m tests.benchmarks.soak_bench [--minutes 6] [--speed 3] [--every 30]

The TUI runs headless on the four-slot demo bench (LEDs blinking, pollers running, nothing pressed) and prints
its resident set every ``--every`` seconds, then the growth over the second half of the run: a kiosk that
keeps growing there leaks (bounded buffers fill in the first minute of device time). Not a timed test: it
prints what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

DEMO_BENCH = "app-crash@boron,corrupt-system@photon,missing-bootloader@boron,frozen@p2"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


async def _soak(minutes: float, speed: float, every: float) -> list[tuple[float, float]]:
    from tests.tui.conftest import make_app, ready

    readings: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        app, backend = make_app(Path(tmp), DEMO_BENCH, speed=speed)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                await ready(pilot)
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) <= minutes * 60:
                    readings.append((elapsed, _rss_mib()))
                    print(f"  {elapsed:6.0f} s  {readings[-1][1]:6.1f} MiB", flush=True)
                    await pilot.pause(every)
        finally:
            backend.close()
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="how long the kiosk sits (real minutes)")
    parser.add_argument("--speed", type=float, default=3.0, help="simulated device seconds per real second")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between readings")
    args = parser.parse_args()
    print(f"Soak: the demo bench idle for {args.minutes:g} min at {args.speed:g}x, resident memory:")
    readings = asyncio.run(_soak(args.minutes, args.speed, args.every))
    half = readings[len(readings) // 2]
    last = readings[-1]
    print(f"Soak: {readings[0][1]:.1f} MiB at start, {last[1]:.1f} MiB after {last[0]:.0f} s; "
          f"{last[1] - half[1]:+.1f} MiB over the second half ({half[0]:.0f}-{last[0]:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
