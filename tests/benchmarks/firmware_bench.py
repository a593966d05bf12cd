"""Figures for the firmware toolkit: parse throughput over the real corpus, library import time, and the time to make
the demo library of real-size synthetic releases (what a first ``kiosk --simulate`` or ``make demo`` waits for).

Run with ``make bench`` (or ``python -m tests.benchmarks.firmware_bench``). It prints measured
numbers; it asserts nothing about speed.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from firmware.library import FirmwareLibrary
from firmware.module import NotAModuleError, parse_module
from kiosk.demo_library import demo_library
from tests.fixture_paths import CORPUS, FIXTURES

ROUNDS = 7


def real_files() -> list[tuple[str, bytes]]:
    paths = sorted([*FIXTURES.glob("*.bin"), *CORPUS.glob("*.bin")])
    return [(p.name, p.read_bytes()) for p in paths]


def parse_throughput(files: list[tuple[str, bytes]]) -> tuple[float, float, int]:
    total = sum(len(d) for _, d in files)
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _, data in files:
            with contextlib.suppress(NotAModuleError):
                parse_module(data)
        times.append(time.perf_counter() - start)
    best, median = min(times), statistics.median(times)
    return total / best / 1e6, total / median / 1e6, total


def import_time() -> tuple[float, float, int, int]:
    times, added, quarantined = [], 0, 0
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory() as tmp:
            lib = FirmwareLibrary(Path(tmp) / "lib")
            start = time.perf_counter()
            first = lib.import_path(FIXTURES)  # the 13 files and the corpus below them
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            lib.import_path(FIXTURES)
            again = time.perf_counter() - start
            added, quarantined = len(first.added), len(first.quarantined)
    return statistics.median(times), again, added, quarantined


def demo_library_time(platforms: tuple[str, ...] = ("boron", "photon", "p2")) -> tuple[float, float, int]:
    """Seconds to make the demo library of ``platforms`` in a new folder, seconds to open it again, and its bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        lib = demo_library(platforms, root=Path(tmp) / "demo")
        made = time.perf_counter() - start
        start = time.perf_counter()
        demo_library(platforms, root=Path(tmp) / "demo")
        again = time.perf_counter() - start
        return made, again, sum(e.size for e in lib.entries())


def main() -> None:
    files = real_files()
    best, median, total = parse_throughput(files)
    print(f"parse: {len(files)} real module files, {total / 1e6:.2f} MB")
    print(f"parse throughput: {median:.0f} MB/s median, {best:.0f} MB/s best of {ROUNDS} (CRC-32 + SHA-256 included)")
    seconds, again, added, quarantined = import_time()
    print(
        f"library import of fixtures + corpus: {seconds * 1000:.0f} ms median of {ROUNDS} "
        f"({added} added, {quarantined} quarantined); importing it again: {again * 1000:.0f} ms"
    )
    made, reopened, size = demo_library_time()
    print(
        f"demo library (boron, photon, p2 at real sizes, {size / 1e6:.1f} MB with the restore images): made and "
        f"imported in {made:.2f} s, opened again in {reopened:.2f} s"
    )


if __name__ == "__main__":
    main()
