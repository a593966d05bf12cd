"""Recoveries in the background: one worker thread per slot, each running the ladder, journaled.

Both front ends use this: ``kiosk recover`` starts every slot it was asked for and waits; the
touchscreen starts and stops slots as the technician taps. A worker joins the bench clock as an actor
before ``start`` returns, so simulated device time never runs ahead of a ladder that has not begun.
Results and crashes are kept per slot; one slot's crash never takes the others down.

    >>> from kiosk.bench import simulated_bench               # doctest: +SKIP
    >>> runner = RecoveryRunner(bench, library, journal, bus)  # doctest: +SKIP
    >>> run_id = runner.start(1); runner.wait(1)               # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

from kiosk.bench import Bench, Slot
from kiosk.events import EventBus
from kiosk.ladder import Ladder, LadderResult

#: Device seconds one ladder may take at most: a run takes minutes at worst.
RUN_TIMEOUT_S = 3600.0
_REGISTER_TIMEOUT_S = 10.0  # real seconds for a new worker to join the clock


class AlreadyRunning(RuntimeError):
    """The slot is recovering already: stop it first."""


@dataclass
class SlotRun:
    """One slot's current or last run."""

    slot: int
    run_id: int | None
    thread: threading.Thread
    cancel: object  # a ClockEvent
    result: LadderResult | None = None
    error: str | None = None
    finished: bool = False  # set by the worker as it ends, still on the clock (a waiter sees it at once)

    @property
    def running(self) -> bool:
        return not self.finished and self.thread.is_alive()


class RecoveryRunner:
    """Starts, stops and collects ladder runs on a bench's slots."""

    def __init__(self, bench: Bench, library, journal=None, bus: EventBus | None = None):
        self.bench = bench
        self.library = library
        self.journal = journal
        self.bus = bus or EventBus()
        self._runs: dict[int, SlotRun] = {}
        self._lock = threading.Lock()

    def start(self, slot_number: int) -> int | None:
        """Start recovering ``slot_number``; returns the journal's run id (None without a journal)."""
        slot = self.bench.slot(slot_number)
        with self._lock:
            current = self._runs.get(slot_number)
            if current is not None and current.running:
                raise AlreadyRunning(f"slot {slot_number} is recovering already: press Stop first")
            run_id = self.journal.start_run(slot.index, None, None, slot.scenario) if self.journal else None
            registered = threading.Event()
            cancel = self.bench.clock.event()
            thread = threading.Thread(target=self._work, args=(slot, run_id, cancel, registered),
                                      name=f"ladder-slot-{slot.index}", daemon=True)  # fmt: skip
            self._runs[slot_number] = SlotRun(slot_number, run_id, thread, cancel)
            thread.start()
        registered.wait(_REGISTER_TIMEOUT_S)
        return run_id

    def stop(self, slot_number: int) -> bool:
        """Ask the slot's ladder to stop; it releases the buttons and restores power. False if idle."""
        run = self._runs.get(slot_number)
        if run is None or not run.running:
            return False
        run.cancel.set()
        return True

    def stop_all(self) -> None:
        for number in list(self._runs):
            self.stop(number)

    def running(self, slot_number: int) -> bool:
        run = self._runs.get(slot_number)
        return run is not None and run.running

    def run(self, slot_number: int) -> SlotRun | None:
        return self._runs.get(slot_number)

    def wait(self, *slot_numbers: int, timeout_s: float = RUN_TIMEOUT_S) -> bool:
        """Wait (in device time) until the given slots, or all, are idle; False on timeout."""
        numbers = slot_numbers or tuple(self._runs)
        return self.bench.clock.wait_for(lambda: not any(self.running(n) for n in numbers), timeout_s, poll=1.0)

    def _work(self, slot: Slot, run_id: int | None, cancel, registered: threading.Event) -> None:
        from kiosk.journal import JournalError

        with self.bench.clock.actor():
            registered.set()
            run = self._runs[slot.index]
            try:
                ladder = Ladder(slot, self.library, self.bus, cancel=cancel, journal=self.journal, run_id=run_id)
                if slot.device is not None:  # a simulated slot's label names its platform
                    ladder.platform_hint = slot.device.platform
                result = ladder.run()
                run.result = result
                if self.journal is not None and run_id is not None:
                    status = "stopped" if result.verdict == "stopped" else "finished"
                    self.journal.finish_run(run_id, result.verdict, result.rung, result.detail, result.elapsed_s,
                                            result.minimum_s, status, action=result.action, again=result.again,
                                            usb_errors=result.usb_errors)  # fmt: skip
            except Exception as exc:  # one slot's failure must not take the others down
                run.error = f"{type(exc).__name__}: {exc}"
                if self.journal is not None and run_id is not None:
                    with contextlib.suppress(JournalError):  # the failure may have been finish_run itself
                        self.journal.finish_run(run_id, "error", None, run.error)
            finally:
                run.finished = True
