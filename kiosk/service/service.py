"""One bench service: the engine, the board of slot states, the API and the socket, started and stopped
together. ``kiosk service`` runs one until SIGTERM; the tests run one in-process on a temporary socket.

Start order: the socket is checked (another service answering on it is refused), the engine opens (it takes
the journal's runner lock first, so a second service on the same bench is refused before any hardware is
touched, and marks runs a previous service left unfinished as interrupted), the board gets a card per slot,
and only then does the socket listen and the pollers start. Stop order: clients are told, every run and
flash is stopped and waited for (buttons released, each run's verdict journalled as stopped, each client
told), and only then does the socket close.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from kiosk.service.api import Api, RemotePolicy
from kiosk.service.board import Board
from kiosk.service.engine import KioskBackend, SlotBusyError
from kiosk.service.server import BenchServer, claim_socket
from kiosk.service.slots import SlotState


class BenchTaken(RuntimeError):
    """Another process drives this bench (its journal's runner lock is held)."""


class BenchService:
    """The engine served on ``socket_path``; ``pollers`` False leaves the USB and LED pollers off (tests that
    feed the board fixed events)."""

    def __init__(self, engine: KioskBackend, socket_path: Path, *, policy: RemotePolicy | None = None,
                 pollers: bool = True) -> None:  # fmt: skip
        self.engine = engine
        self.board = Board()
        engine.post = self.board.post
        self.api = Api(engine, self.board, policy or RemotePolicy())
        self.server = BenchServer(Path(socket_path), self.api)
        self.pollers = pollers
        self._stop_pollers = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def socket_path(self) -> Path:
        return self.server.path

    def start(self) -> None:
        """Open the bench and listen; SocketInUse or BenchTaken when another service has it."""
        claim_socket(self.socket_path)
        try:
            bench = self.engine.open()
        except SlotBusyError:
            self.engine.close()
            journal = self.engine.journal_path
            raise BenchTaken(
                f"another bench service (or `kiosk recover`) drives this bench now: it holds the journal {journal}. "
                "Only one process may own the bench; stop the other first (sudo systemctl stop "
                "particle-kiosk-bench), or talk to it with --socket"
            ) from None
        except BaseException:
            self.engine.close()
            raise
        states = []
        cut_off = self._interrupted_by_slot()
        for slot in bench.slots:
            hint = slot.device.platform.name if slot.device is not None else None
            state = SlotState(slot.index, slot.name, platform_hint=hint, led_sensor=bool(slot.led.available))
            if slot.index in cut_off:  # the card says so, not "ready" as if nothing had happened
                run_id = cut_off[slot.index]
                state = replace(state, verdict="interrupted", last_run_id=run_id,
                                verdict_detail=f"run {run_id} was cut off: the bench service stopped mid-run "
                                "(its record is kept)")  # fmt: skip
            states.append(state)
        self.board.reset(states)
        try:
            self.server.start()
        except BaseException:
            self.engine.close()
            raise
        if self.pollers:
            for name, poll in (("usb", self.engine.poll_usb), ("led", self.engine.poll_led)):
                thread = threading.Thread(target=self._poll, args=(name, poll), name=f"service-{name}-poller",
                                          daemon=True)  # fmt: skip
                thread.start()
                self._threads.append(thread)

    def _poll(self, name: str, poll) -> None:
        from kiosk.service.posts import Notice

        try:
            poll(self._stop_pollers)
        except Exception as exc:  # a poller's fault is told, the service goes on
            self.board.post(Notice(f"the {name} poller stopped: {type(exc).__name__}: {exc}", "error"))

    def _interrupted_by_slot(self) -> dict[int, int]:
        """The slot of each run the previous service left unfinished (the newest per slot)."""
        out: dict[int, int] = {}
        for run_id in sorted(self.engine.interrupted):
            try:
                slot = self.engine.journal.run(run_id).get("slot")
            except LookupError:
                continue
            if isinstance(slot, int):
                out[slot] = run_id
        return out

    def close(self, reason: str = "the bench service is stopping") -> None:
        """Stop every run cleanly, then the pollers, then the socket."""
        self.board.closing(reason)
        self._stop_pollers.set()
        for thread in self._threads:
            thread.join(5.0)
        self.engine.close()
        self.server.close()

    def __enter__(self) -> BenchService:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
