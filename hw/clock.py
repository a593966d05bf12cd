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

_REAL_GUARD = 0.05  # real seconds the pacer waits when there is nothing to move time for
_PACER_HOLD_S = 0.005  # real seconds the pacer keeps the lock while it catches up, before it lets others in
_RECHECK_S = 0.5  # real seconds after which a blocked wait looks again on its own (an actor that died unseen)


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
    def sleep(self, seconds: float, cancel: ClockEvent | None = None, *, background: bool = False) -> None: ...
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

    def sleep(self, seconds: float, cancel: ClockEvent | None = None, *, background: bool = False) -> None:
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
#
# The scheduling rule, in one place (VirtualClock._run_events):
#   time moves only when every actor thread waits on the clock; it then jumps to the earliest thing that can
#   happen: a timer, a waiter's deadline, or a waiter's next re-check of its predicate (``poll``). At that
#   instant the due timers run (on the advancing thread, under the clock's lock), then each waiter's condition
#   is tested there too, and only the waiters whose deadline came, whose predicate holds or whose cancel was
#   set are woken, each on its own condition. One event costs one pass over the waiters, and no thread wakes
#   for nothing. With ``speed`` set, a pacer thread does the advancing and sleeps the host between events.


class _VirtualEvent:
    """An event whose ``set`` wakes the waits it cancels (or whose predicates it satisfies)."""

    def __init__(self, clock: VirtualClock):
        self._clock = clock
        self._flag = False

    def set(self) -> None:
        with self._clock._lock:
            self._flag = True
            self._clock._cancelled()

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


class _Waiter:
    """One blocked thread: what ends its wait, when it is next tested, and the condition only it waits on."""

    __slots__ = ("actor", "background", "cancel", "cond", "deadline", "done", "ended", "next_check", "poll",
                 "runnable", "satisfied")

    def __init__(self, lock: threading.RLock, done: Callable[[], bool] | None, deadline: float, poll: float | None,
                 cancel: ClockEvent | None, now: float, actor: bool):  # fmt: skip
        self.cond = threading.Condition(lock)
        self.done = done  # None: only the deadline (a sleep)
        self.deadline = deadline
        self.poll = poll if done is not None else None
        self.next_check = min(deadline, now + poll) if self.poll else deadline
        self.cancel = cancel
        self.actor = actor
        self.runnable = False  # woken: no longer holds time back as a waiter
        self.satisfied = False  # woken because its predicate held (its own thread tests it again)
        self.ended = False
        self.background = False  # a simulated part's own periodic look: it does not pull time forward alone

    def over(self, now: float) -> bool:
        return now >= self.deadline or (self.cancel is not None and self.cancel.is_set())

    def test(self) -> bool:
        """The predicate, tested on the advancing thread; one that raises wakes its own thread to raise there."""
        try:
            return bool(self.done())
        except Exception:
            return True


class VirtualClock:
    """Device time for the simulator; see the module docstring for the rules.

    ``start`` is the initial time in seconds; ``speed`` None runs as fast as possible, a number
    paces time to at most that many device seconds per real second.
    """

    def __init__(self, start: float = 0.0, speed: float | None = None):
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (device seconds per real second)")
        self._lock = threading.RLock()
        self._now = float(start)
        self._speed = speed
        self._real_start = time.monotonic()
        self._virtual_start = float(start)
        self._actors: dict[int, list] = {}  # ident -> [thread, nesting depth]
        self._running = 0  # actors neither waiting nor woken-and-not-yet-back: while any, time stands still
        self._waiters: dict[int, _Waiter] = {}  # ident -> what it waits for
        self._checks: list[tuple[float, int, _Waiter]] = []  # (when, seq, waiter): the next test of each wait
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._advancing = False
        self._pacer: threading.Thread | None = None
        self._pacer_cond = threading.Condition(self._lock)
        self._closed = False
        self.events = 0  # instants time moved to (a figure for benchmarks)

    @property
    def speed(self) -> float | None:
        return self._speed

    @property
    def lock(self) -> threading.RLock:
        """The simulator's one lock: sim state changes under it, so timer callbacks (which run
        under it) and driver calls can never deadlock each other. Waiting on the clock releases it."""
        return self._lock

    def now(self) -> float:
        return self._now

    def close(self) -> None:
        """The simulation is over: a paced clock's pacer stops (its timers would otherwise run for ever)."""
        with self._lock:
            self._closed = True
            self._pacer_cond.notify()

    def event(self) -> _VirtualEvent:
        return _VirtualEvent(self)

    @contextmanager
    def actor(self) -> Iterator[None]:
        """Register the calling thread: time waits for it whenever it is not waiting on the clock."""
        ident = threading.get_ident()
        with self._lock:
            entry = self._actors.get(ident)
            if entry is None:
                self._actors[ident] = [threading.current_thread(), 1]
                if ident not in self._waiters:
                    self._running += 1
            else:
                entry[1] += 1
        try:
            yield
        finally:
            with self._lock:
                entry = self._actors[ident]
                entry[1] -= 1
                if not entry[1]:
                    del self._actors[ident]
                    self._running -= 1
                    self._kick()  # it held time back: perhaps every actor waits now

    def call_later(self, delay: float, fn: Callable[[], None]) -> _Timer:
        """Run ``fn`` when the clock reaches now + ``delay`` (on the thread that advances time)."""
        _check_timeout(delay)
        with self._lock:
            timer = _Timer(self._now + delay, fn)
            heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
            if self._speed is not None:
                self._pacer_cond.notify()  # it may come before what the pacer sleeps for
            return timer

    def sleep(self, seconds: float, cancel: ClockEvent | None = None, *, background: bool = False) -> None:
        """Wait ``seconds`` of device time. ``background``: a simulated part's periodic look (a serial line's
        poll), which holds time back while it runs but never moves it on its own: unpaced, time moves only for
        someone who waits for something; paced, it follows real time anyway."""
        _check_timeout(seconds)
        with self._lock:
            self._block(None, self._now + seconds, None, cancel, background)

    def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        cancel: ClockEvent | None = None,
        poll: float = 0.05,
    ) -> bool:
        """Wait until ``predicate()`` holds, tested every ``poll`` s of device time on the thread that moves
        time: the waiting thread wakes only when it holds (a poll costs one test, not a thread switch)."""
        _check_timeout(timeout)
        with self._lock:
            if predicate():
                return True
            if timeout == 0:
                return False
            self._block(predicate, self._now + timeout, poll if poll > 0 else timeout, cancel)
            return bool(predicate())

    # -- internals (all under self._lock) --
    def _block(self, done: Callable[[], bool] | None, deadline: float, poll: float | None,
               cancel: ClockEvent | None, background: bool = False) -> None:  # fmt: skip
        ident = threading.get_ident()
        actor = ident in self._actors
        waiter = _Waiter(self._lock, done, deadline, poll, cancel, self._now, actor)
        waiter.background = background
        self._waiters[ident] = waiter
        heapq.heappush(self._checks, (waiter.next_check, next(self._seq), waiter))
        self._running -= actor
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                if waiter.over(self._now) or (waiter.satisfied and waiter.test()):
                    return
                waiter.satisfied = False
                if waiter.runnable:  # woken, and not over after all: back to waiting, tested again a poll later
                    waiter.runnable = False
                    self._running -= actor
                    waiter.next_check = min(deadline, self._now + poll) if waiter.poll else deadline
                    heapq.heappush(self._checks, (waiter.next_check, next(self._seq), waiter))
                self._kick()
                if not waiter.runnable:
                    # woken by the thread that moves time; or after _RECHECK_S, to look again (an actor that
                    # died without leaving the clock)
                    waiter.cond.wait(_RECHECK_S)
        finally:
            del self._waiters[ident]
            waiter.ended = True
            if not waiter.runnable:
                self._running += actor  # it runs again (a woken one was counted as running when woken)

    def _wake(self, waiter: _Waiter) -> None:
        if not waiter.runnable:
            waiter.runnable = True
            self._running += waiter.actor
            waiter.cond.notify()

    def _kick(self) -> None:
        """An actor waits or left: move time if nothing holds it back (paced: the pacer's work)."""
        if self._advancing or self._holding_back():
            return
        if self._speed is None:
            self._run_events()
        else:
            self._ensure_pacer()
            self._pacer_cond.notify()

    def _holding_back(self) -> bool:
        if self._running <= 0:
            return False
        for ident, (thread, _) in list(self._actors.items()):  # an actor thread that died without leaving
            if not thread.is_alive():
                del self._actors[ident]
                waiter = self._waiters.get(ident)
                self._running -= waiter is None or waiter.runnable
        return self._running > 0

    def _cancelled(self) -> None:
        """An event was set: wake the waits it cancels."""
        for waiter in self._waiters.values():
            if waiter.cancel is not None and waiter.cancel.is_set():
                self._wake(waiter)

    def _next_event(self) -> float | None:
        checks = self._checks
        while checks and (checks[0][2].runnable or checks[0][2].ended or checks[0][0] != checks[0][2].next_check):
            heapq.heappop(checks)  # a wait that ended, was woken, or moved its next test
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if self._speed is None and not any(not w.runnable and not w.background for w in self._waiters.values()):
            return None  # unpaced, time moves only for someone who waits for it: timers alone do not move it
        times = [checks[0][0]] if checks else []
        if self._timers:
            times.append(self._timers[0][0])
        return min(times, default=None)  # (paced, timers follow real time even with nobody waiting)

    def _step_to(self, when: float) -> None:
        """Move to ``when``: run the timers due, then test the waits whose time came, waking those that are over."""
        self._now = max(self._now, when)
        self.events += 1
        self._advancing = True
        try:
            while self._timers and self._timers[0][0] <= self._now:
                _, _, timer = heapq.heappop(self._timers)
                if not timer.cancelled:
                    timer.fn()  # under the clock's lock: timer callbacks must be short and never wait
        finally:
            self._advancing = False
        checks = self._checks
        while checks and checks[0][0] <= self._now:
            at, _, waiter = heapq.heappop(checks)
            if waiter.runnable or waiter.ended or at != waiter.next_check:
                continue  # stale entry
            if waiter.over(self._now):
                self._wake(waiter)
            elif waiter.done is not None and waiter.test():
                waiter.satisfied = True
                self._wake(waiter)
            else:
                waiter.next_check = min(waiter.deadline, self._now + waiter.poll) if waiter.poll else waiter.deadline
                heapq.heappush(checks, (waiter.next_check, next(self._seq), waiter))

    def _run_events(self) -> None:
        """Unpaced: step from event to event until an actor is woken (or nobody waits for time)."""
        while not self._holding_back():
            when = self._next_event()
            if when is None:
                return
            self._step_to(when)

    def _anchor(self) -> None:
        """Pace from here: device time ``speed`` x the real time from now on."""
        self._real_start, self._virtual_start = time.monotonic(), self._now

    def _ensure_pacer(self) -> None:
        if self._pacer is None or not self._pacer.is_alive():
            self._anchor()
            self._pacer = threading.Thread(target=self._pace, name="clock-pacer", daemon=True)
            self._pacer.start()

    def _pace(self) -> None:
        """Paced: the same steps, each no sooner than ``speed`` allows; the host sleeps in between. The
        pacer ends when there is nobody left to move time for."""
        with self._lock:
            idle_since = held_since = time.monotonic()
            while True:
                if self._closed:
                    self._pacer = None
                    return
                held = self._holding_back()  # an actor at work: its host time counts against the pace
                when = None if held else self._next_event()
                if when is None:
                    if not self._waiters and time.monotonic() - idle_since > 1.0:
                        self._pacer = None
                        return
                    self._pacer_cond.wait(_REAL_GUARD)
                    if not held:
                        self._anchor()  # nothing to happen: idle time banks no credit to run ahead with later
                    continue
                idle_since = time.monotonic()
                allowed = self._virtual_start + (time.monotonic() - self._real_start) * self._speed
                if when > allowed:
                    self._now = max(self._now, allowed)
                    self._pacer_cond.wait(min(1.0, (when - allowed) / self._speed))
                    held_since = time.monotonic()
                    continue
                self._step_to(when)
                # Behind its pace (a loaded host), the pacer steps event after event without waiting; it lets
                # go of the lock (and the interpreter) every few ms, or a thread waiting for the lock, one
                # closing the bench, say, would wait until it caught up, which on a busy machine may be never.
                if time.monotonic() - held_since > _PACER_HOLD_S:
                    self._lock.release()
                    time.sleep(0)
                    self._lock.acquire()
                    held_since = time.monotonic()

