"""YModem throughput: the kiosk's sender against lrzsz's ``sb``, each sending a real-size system part into lrzsz's
``rb`` over a pseudo-terminal (the receiver on the slave, the sender on the master). The size is the Boron 5.9.0
system-part1's, 539,468 bytes (firmware/release_sizes.py): a Gen3 system part as a device below Device OS 6.0 takes
it in listening mode.

Run with ``python -m tests.benchmarks.ymodem_bench`` (needs Debian's ``lrzsz``: ``rb`` and ``sb``). It prints
bytes/s per round and the median; it asserts nothing. A round is timed from the sender's start until ``rb`` has
exited (the file is complete then), which includes about 3 s that ``rb`` itself waits at the end of every file
(1 s to see whether the EOT repeats, then before it asks for the closing header). ``sb`` can hang after ``rb``
exits (``rb`` flushes its tty right after its last ACK, which on a pty may destroy it), so it is ended then.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from firmware.release_sizes import real_size
from hw.clock import RealClock
from hw.serial_console import SerialError
from hw.sim.serial_device import MasterPort
from hw.ymodem import YModemError, send_ymodem

SIZE = real_size("boron", "5.9.0", "system-part1").size
ROUNDS = 3
RECEIVERS = (("rb", []), ("lrb", []), ("rz", ["--ymodem"]), ("lrz", ["--ymodem"]))
SENDERS = (("sb", ["-k"]), ("lsb", ["-k"]), ("sz", ["--ymodem", "-k"]), ("lsz", ["--ymodem", "-k"]))
RECEIVER_LIMIT_S = 60.0  # a round slower than this is not a figure: the machine is too loaded to take one


class RoundFailed(Exception):
    """A round that gave no figure, and why (said in the output instead of a traceback)."""


def _program(table: tuple[tuple[str, list[str]], ...]) -> list[str] | None:
    for name, args in table:
        path = shutil.which(name)
        if path:
            return [path, *args]
    return None


def _round(receiver: list[str], send: Callable[[int, Path], dict], data: bytes) -> dict:
    """One transfer of ``data``: ``send(master_fd, folder)`` sends it (or starts a ``process`` that does); returns
    the figures, after checking the file arrived intact."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "in").mkdir()
        (folder / "out").mkdir()
        (folder / "in" / "file.bin").write_bytes(data)
        master, slave = os.openpty()
        start = time.perf_counter()
        rb = subprocess.Popen(
            [*receiver, "-q"], stdin=slave, stdout=slave, stderr=subprocess.DEVNULL, cwd=folder / "out"
        )
        os.close(slave)
        figures: dict = {}
        try:
            try:
                figures = send(master, folder)
                rb.wait(RECEIVER_LIMIT_S)
            except subprocess.TimeoutExpired:
                raise RoundFailed(f"{Path(receiver[0]).name} had not finished after {RECEIVER_LIMIT_S:g} s") from None
            except (YModemError, SerialError) as exc:
                raise RoundFailed(f"the kiosk's sender failed: {exc}") from None
            figures["seconds"] = time.perf_counter() - start
        finally:
            for process in (rb, figures.get("process")):
                if process is None:
                    continue
                try:
                    process.wait(1.0)  # sb may hang on rb's lost last ACK (see the module docstring)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            os.close(master)
        if rb.returncode != 0:
            raise RoundFailed(f"{Path(receiver[0]).name} exited with status {rb.returncode}")
        received = folder / "out" / "file.bin"
        if not received.exists() or received.read_bytes() != data:
            raise RoundFailed("the file did not arrive intact")
        return figures


def _ours(master: int, folder: Path) -> dict:
    port = MasterPort(master)
    marks: list[float] = []
    try:
        data = (folder / "in" / "file.bin").read_bytes()
        result = send_ymodem(
            port,
            data,
            "file.bin",
            RealClock(),
            handshake="plain",
            progress=lambda s, t: marks.append(time.perf_counter()),
        )
    finally:
        port.close()
    data_phase = marks[-1] - marks[0]  # first block acknowledged .. last block acknowledged
    return {"data_rate": (result.blocks - 1) * 1024 / data_phase if data_phase > 0 else float("nan")}


def _lrzsz(sender: list[str]) -> Callable[[int, Path], dict]:
    def send(master: int, folder: Path) -> dict:
        process = subprocess.Popen(
            [*sender, "-q", "file.bin"], stdin=master, stdout=master, stderr=subprocess.DEVNULL, cwd=folder / "in"
        )
        return {"process": process}

    return send


def main() -> None:
    receiver, sender = _program(RECEIVERS), _program(SENDERS)
    if receiver is None or sender is None:
        print("lrzsz is not installed (Debian: apt-get install lrzsz, which provides rb and sb): nothing measured")
        return
    data = os.urandom(SIZE)
    print(f"YModem, {SIZE:,} bytes (a real Boron 5.9.0 system-part1) into {Path(receiver[0]).name} over a pty, "
          f"{ROUNDS} rounds, 1024-byte blocks")  # fmt: skip
    for label, run in (
        ("kiosk send_ymodem", lambda: _round(receiver, _ours, data)),
        (f"lrzsz {Path(sender[0]).name}", lambda: _round(receiver, _lrzsz(sender), data)),
    ):
        rounds, failures = [], []
        for _ in range(ROUNDS):
            try:
                rounds.append(run())
            except RoundFailed as exc:
                failures.append(str(exc))
        if not rounds:
            print(f"{label:>18}: not measured: every round failed ({'; '.join(failures)})")
            continue
        rates = [SIZE / r["seconds"] for r in rounds]
        line = f"{label:>18}: {statistics.median(rates):>9.0f} B/s median ({', '.join(f'{r:.0f}' for r in rates)})"
        if "data_rate" in rounds[0]:
            line += f"; data phase alone {statistics.median(r['data_rate'] for r in rounds):.0f} B/s"
        if failures:
            line += f"; {len(failures)} of {ROUNDS} rounds gave no figure ({'; '.join(failures)})"
        print(line)


if __name__ == "__main__":
    main()
