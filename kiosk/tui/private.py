"""A private bench service for one simulated bench: ``kiosk tui --simulate ...`` (and ``make demo``, and
``kiosk serve --simulate``) start one on a temporary socket and stop it on exit, so one command still runs
the whole kiosk. It is a real ``kiosk service`` process: the screen is its client, as on a real bench.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

STOP_TIMEOUT_S = 30.0  # a stopping service waits for each run to end, buttons released
FOLDER_PREFIX = "kiosk-bench-"  # the temporary folder of a private service's socket and log


#: Set in a private service's environment to the pid of the program that started it: the service stops when that
#: program ends (see :func:`stop_with_parent`).
PARENT_ENV = "KIOSK_STOP_WITH_PARENT"


def stop_with_parent() -> int | None:
    """(In ``kiosk service``, first thing.) If started as a private service: SIGTERM, which stops every run cleanly,
    when the program that started it dies without closing it (Linux prctl PR_SET_PDEATHSIG); SystemExit at once
    when that program is already gone. Set here rather than in a ``preexec_fn``: a preexec_fn makes Popen fork
    the whole touchscreen process (6 ms, then copy-on-write faults while it draws) where a plain Popen spawns;
    tui_bench's first frame went from 367 to about 260 ms."""
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent.isdigit():
        return None
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # it died before the line above: no signal will come
        raise SystemExit("kiosk service: the program that started this private service has already ended")
    return int(parent)


def clean_up_after_parent(parent: int | None, socket_path: Path) -> None:
    """(In a private service that has stopped.) If the program that started it died without closing it, nobody
    else will remove the temporary folder it made for the service (socket and log): the service does."""
    if parent is None or os.getppid() == parent:
        return
    folder = socket_path.parent
    if folder.name.startswith(FOLDER_PREFIX) and folder.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(folder, ignore_errors=True)


class PrivateService:
    """``kiosk service ARGS --socket <temporary>`` as a child process."""

    def __init__(self, bench_args: list[str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        self.socket_path = self.folder / "bench.sock"
        self._log = open(self.folder / "service.log", "w+b")  # noqa: SIM115 (open until close())
        command = [sys.executable, "-m", "kiosk.cli", "service", *bench_args, "--socket", str(self.socket_path)]
        # in this process's session (a kill of its process group takes the service too), and told to stop (SIGTERM,
        # every run stopped cleanly) when this process dies without closing it
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                        env={**os.environ, PARENT_ENV: str(os.getpid())})  # fmt: skip
        self._closing = threading.Event()

    def watch(self, failed: Callable[[str], None]) -> None:
        """Tell ``failed`` (from a thread) what the service said if it ends before ``close()``."""

        def wait() -> None:
            status = self.process.wait()
            if not self._closing.is_set():
                failed(self.last_words() or f"the bench service ended (status {status})")

        threading.Thread(target=wait, name="private-service", daemon=True).start()

    def last_words(self) -> str:
        with contextlib.suppress(OSError):
            self._log.flush()
            text = (self.folder / "service.log").read_text(errors="replace").strip()
            lines = [line.removeprefix("kiosk: ") for line in text.splitlines() if line.strip()]
            return lines[-1] if lines else ""
        return ""

    def close(self) -> None:
        """SIGTERM (every run stopped cleanly), then wait; SIGKILL only when it does not end in time."""
        self._closing.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5.0)
        self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)
