"""The injectable clock: every hardware wait in the kiosk goes through one of these.

All times are in seconds. Every wait has a finite timeout and can be cancelled with a
:class:`ClockEvent` (raising :class:`Cancelled`).

- :class:`RealClock` is wall time (``time.monotonic``), for real hardware.
- :class:`VirtualClock` is the simulator's device time. It is a discrete-event clock: time moves
  only when every registered *actor* thread is waiting on the clock, and then jumps to the next
  deadline or timer. Host CPU time therefore never counts as device time, runs are deterministic,
  and a 60-second recovery takes milliseconds. With ``speed`` set, time may not run ahead of
  ``speed`` x real time (``speed=1`` for the demo, so a person can watch).

Threads that drive or sample simulated hardware must be actors (``with clock.actor():``); a
thread that is not an actor never holds time back. Timer callbacks run under the clock's lock on
whichever thread advances time, so simulator state is guarded by that same lock (``clock.lock``)
and by no other.

    >>> clock = VirtualClock()
    >>> fired = []
    >>> _ = clock.call_later(2.0, lambda: fired.append(clock.now()))
    >>> clock.sleep(5.0); clock.now(), fired
    (5.0, [2.0])
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

_REAL_GUARD = 0.05  # seconds of real time between re-checks while a virtual wait is blocked


class Cancelled(Exception):
    """A wait was cancelled (Stop pressed, slot shut down)."""


class ClockEvent(Protocol):
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What drivers and the simulator use to tell and wait for time."""

    def now(self) -> float: ...
    def sleep(self, seconds: float, cancel: ClockEvent | None = None) -> None: ...
    def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        cancel: ClockEvent | None = None,
        poll: float = 0.05,
    ) -> bool: ...
    def event(self) -> ClockEvent: ...
    def call_later(self, delay: float, fn: Callable[[], None]) -> TimerHandle: ...
    def actor(self) -> contextmanager: ...


def _check_timeout(seconds: float) -> None:
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"a wait needs a finite, non-negative timeout, not {seconds!r}")


# --- real time --------------------------------------------------------------------------------


class RealClock:
    """Wall-clock time for real hardware. ``actor()`` is accepted and means nothing here."""

    def now(self) -> float:
        return time.monotonic()

    def event(self) -> threading.Event:
        return threading.Event()

    def sleep(self, seconds: float, cancel: ClockEvent | None = None) -> None:
        _check_timeout(seconds)
        if cancel is None:
            cancel = threading.Event()
        if cancel.wait(seconds):  # type: ignore[attr-defined]
            raise Cancelled()

    def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        cancel: ClockEvent | None = None,
        poll: float = 0.05,
    ) -> bool:
        _check_timeout(timeout)
        deadline = self.now() + timeout
        while True:
            if predicate():
                return True
            left = deadline - self.now()
            if left <= 0:
                return False
            self.sleep(min(poll, left), cancel)

    def call_later(self, delay: float, fn: Callable[[], None]) -> threading.Timer:
        _check_timeout(delay)
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        timer.start()
        return timer

    @contextmanager
    def actor(self) -> Iterator[None]:
        yield


# --- virtual time -----------------------------------------------------------------------------


class _VirtualEvent:
    """An event whose ``set`` wakes waits on its virtual clock."""

    def __init__(self, clock: VirtualClock):
        self._clock = clock
        self._flag = False

    def set(self) -> None:
        with self._clock._cond:
            self._flag = True
            self._clock._cond.notify_all()

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag


class _Timer:
    def __init__(self, when: float, fn: Callable[[], None]):
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """Device time for the simulator; see the module docstring for the rules.

    ``start`` is the initial time in seconds; ``speed`` None runs as fast as possible, a number
    paces time to at most that many device seconds per real second.
    """

    def __init__(self, start: float = 0.0, speed: float | None = None):
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (device seconds per real second)")
        self._cond = threading.Condition(threading.RLock())
        self._now = float(start)
        self._speed = speed
        self._real_start = time.monotonic()
        self._virtual_start = float(start)
        self._actors: dict[int, int] = {}  # thread ident -> nesting depth
        self._blocked: dict[int, float] = {}  # thread ident -> deadline
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._advancing = False

    @property
    def speed(self) -> float | None:
        return self._speed

    @property
    def lock(self) -> threading.RLock:
        """The simulator's one lock: sim state changes under it, so timer callbacks (which run
        under it) and driver calls can never deadlock each other. Waiting on the clock releases it."""
        return self._cond

    def now(self) -> float:
        return self._now

    def event(self) -> _VirtualEvent:
        return _VirtualEvent(self)

    @contextmanager
    def actor(self) -> Iterator[None]:
        """Register the calling thread: time waits for it whenever it is not waiting on the clock."""
        ident = threading.get_ident()
        with self._cond:
            self._actors[ident] = self._actors.get(ident, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._actors[ident] -= 1
                if not self._actors[ident]:
                    del self._actors[ident]
                self._cond.notify_all()

    def call_later(self, delay: float, fn: Callable[[], None]) -> _Timer:
        """Run ``fn`` when the clock reaches now + ``delay`` (on the thread that advances time)."""
        _check_timeout(delay)
        with self._cond:
            timer = _Timer(self._now + delay, fn)
            heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
            self._cond.notify_all()
            return timer

    def sleep(self, seconds: float, cancel: ClockEvent | None = None) -> None:
        _check_timeout(seconds)
        deadline = self._now + seconds
        self._block_until(lambda: self._now >= deadline, deadline, cancel)

    def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        cancel: ClockEvent | None = None,
        poll: float = 0.05,
    ) -> bool:
        """Wait until ``predicate()`` holds (checked on every clock event and every ``poll`` s)."""
        _check_timeout(timeout)
        deadline = self._now + timeout
        while True:
            if predicate():
                return True
            if self._now >= deadline:
                return False
            step = min(deadline, self._now + poll)
            self._block_until(lambda s=step: self._now >= s or predicate(), step, cancel)

    # -- internals --
    def _block_until(self, done: Callable[[], bool], deadline: float, cancel: ClockEvent | None) -> None:
        ident = threading.get_ident()
        with self._cond:
            self._blocked[ident] = deadline
            try:
                while True:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    if done():
                        return
                    real_wait = self._advance()
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    if done():
                        return
                    self._cond.wait(real_wait)
            finally:
                self._blocked.pop(ident, None)
                self._cond.notify_all()

    def _advance(self) -> float:
        """Move time if every actor waits; run due timers. Returns how long to wait in real time."""
        if self._advancing:
            return _REAL_GUARD
        alive = {t.ident for t in threading.enumerate()}
        for ident in [i for i in self._actors if i not in alive]:
            del self._actors[ident]  # an actor thread that died without leaving
        if any(ident not in self._blocked for ident in self._actors):
            return _REAL_GUARD  # an actor is still running: time stands still
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        candidates = list(self._blocked.values())
        if self._timers:
            candidates.append(self._timers[0][0])
        target = min(candidates, default=self._now)
        if self._speed is not None:
            allowed = self._virtual_start + (time.monotonic() - self._real_start) * self._speed
            if target > allowed:
                self._now = max(self._now, allowed)
                return min(_REAL_GUARD, (target - allowed) / self._speed)
        self._now = max(self._now, target)
        due = []
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                due.append(timer)
        if due:
            self._advancing = True
            try:
                for timer in due:
                    timer.fn()  # under the clock's lock: timer callbacks must be short and never wait
            finally:
                self._advancing = False
        self._cond.notify_all()
        return 0.0 if due else _REAL_GUARD
