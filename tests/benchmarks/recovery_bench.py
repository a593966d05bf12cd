"""Figures for the recovery ladder: every scenario of DESIGN.md's table on Boron, Photon and P2.

Run with ``python -m tests.benchmarks.recovery_bench [PLATFORM,...]``. Each scenario runs on a fresh
simulated bench (virtual clock, so seconds are device seconds) twice: as the kiosk does it, and in the
guide's fixed order without the kiosk's shortcuts (``Ladder(shortcuts=False)``: every rung in turn, the
LED watched for the longest SOS code, safe mode by the buttons). It prints figures; it asserts nothing.

- elapsed_s: device seconds from Recover to the verdict;
- minimum_s: what the device's own timings demand on the path taken (boot, mode switches, flash time of
  what it was given, the observation windows);
- ratio: elapsed_s / minimum_s, what the kiosk itself cost on top (goal: at most 1.10);
- guide_s: device seconds the guide's fixed order takes to the same device, for comparison.
Then four slots recovering at once against the slowest of them alone (device seconds; the simulator's
clock is shared, so this is what a technician waits), and the host's wall time for the same. The library is the
demo library at real sizes and the simulated devices hold real-size modules (firmware/release_sizes.py), so every
flash step writes as many bytes as Particle's release.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

from hw.sim.scenarios import SCENARIOS, refusal
from kiosk.bench import simulated_bench
from kiosk.demo_library import demo_library
from kiosk.ladder import Ladder, LadderResult

PLATFORMS = ("boron", "photon", "p2")
PARALLEL = "app-crash@boron,corrupt-system@photon,frozen@p2,tinker-first@boron"


def run(scenario: str, platform: str, library, *, shortcuts: bool = True) -> LadderResult:
    with simulated_bench(f"{scenario}@{platform}") as bench, bench.clock.actor():
        ladder = Ladder(bench.slot(1), library, shortcuts=shortcuts)
        ladder.platform_hint = bench.slot(1).device.platform
        return ladder.run()


def together(spec: str, library) -> tuple[float, float]:
    """Device seconds and wall seconds for every slot of ``spec`` recovering at once, a thread each."""
    with simulated_bench(spec) as bench:
        ready = [threading.Event() for _ in bench.slots]

        def work(slot, registered: threading.Event) -> None:
            with bench.clock.actor():
                registered.set()
                ladder = Ladder(slot, library)
                ladder.platform_hint = slot.device.platform
                ladder.run()

        threads = [threading.Thread(target=work, args=(s, r)) for s, r in zip(bench.slots, ready, strict=True)]
        started, device_start = time.perf_counter(), bench.clock.now()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return bench.clock.now() - device_start, time.perf_counter() - started


def main(argv: list[str]) -> None:
    platforms = argv[0].split(",") if argv else PLATFORMS
    root = Path(tempfile.mkdtemp(prefix="recovery-bench-"))
    library = demo_library(list({*platforms, "boron", "photon", "p2"}), root=root)
    print("Recovery ladder, device seconds (python -m tests.benchmarks.recovery_bench)")
    print(f"{'scenario':23} {'platform':8} {'verdict':17} {'rung':12} {'elapsed_s':>9} {'minimum_s':>9} "
          f"{'ratio':>5} {'guide_s':>8}")  # fmt: skip
    worst = (0.0, "")
    for platform in platforms:
        for name in SCENARIOS:
            if refusal(name, platform) is not None:  # what cannot happen on this platform is not run
                print(f"{name:23} {platform:8} not run: cannot happen on a {platform} (hw.sim.scenarios.refusal)")
                continue
            kiosk = run(name, platform, library)
            guide = run(name, platform, library, shortcuts=False)
            ratio = kiosk.elapsed_s / kiosk.minimum_s if kiosk.minimum_s else float("nan")
            worst = max(worst, (ratio, f"{name}@{platform}"))
            print(f"{name:23} {platform:8} {kiosk.verdict:17} {kiosk.rung or '-':12} {kiosk.elapsed_s:9.1f} "
                  f"{kiosk.minimum_s:9.1f} {ratio:5.2f} {guide.elapsed_s:8.1f}")  # fmt: skip
    print(f"highest elapsed/minimum: {worst[0]:.3f} ({worst[1]})")
    alone = [together(spec, library) for spec in PARALLEL.split(",")]
    four = together(PARALLEL, library)
    slowest = max(device for device, _wall in alone)
    print(f"four slots at once ({PARALLEL}): {four[0]:.1f} device s against {slowest:.1f} for the slowest alone "
          f"({four[0] / slowest:.2f}x; goal at most 1.2x); host wall time unpaced {four[1]:.2f} s against "
          f"{sum(wall for _d, wall in alone):.2f} s for the four one after another")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
