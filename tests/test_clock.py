"""hw.clock: the virtual clock's rules (time moves only when every actor waits), cancel, pacing."""

from __future__ import annotations

import threading
import time

import pytest

from hw.clock import Cancelled, RealClock, VirtualClock


def test_sleep_jumps_time_and_runs_timers_in_order():
    clock = VirtualClock()
    fired: list[tuple[str, float]] = []
    clock.call_later(2.0, lambda: fired.append(("b", clock.now())))
    clock.call_later(1.0, lambda: fired.append(("a", clock.now())))
    cancelled = clock.call_later(1.5, lambda: fired.append(("x", clock.now())))
    cancelled.cancel()
    started = time.perf_counter()
    clock.sleep(100.0)
    assert time.perf_counter() - started < 1.0  # device time costs no real time
    assert clock.now() == pytest.approx(100.0)
    assert fired == [("a", 1.0), ("b", 2.0)]


def test_time_waits_for_a_running_actor():
    clock = VirtualClock()
    release = threading.Event()
    seen = []

    def busy_actor():
        with clock.actor():
            release.wait(5)  # real work, not a clock wait: time must stand still meanwhile
            seen.append(clock.now())
            clock.sleep(1.0)

    worker = threading.Thread(target=busy_actor)
    with clock.actor():
        worker.start()
        time.sleep(0.05)  # let the worker register (real time; the clock is not involved)
        waiter = threading.Thread(target=lambda: clock.sleep(0.5))
        waiter.start()
        time.sleep(0.2)
        assert clock.now() == 0.0  # the main actor and the busy worker are running: no time passes
        release.set()
        assert clock.wait_for(lambda: not worker.is_alive(), 10.0)
    waiter.join(5)
    assert seen == [0.0]
    assert clock.now() >= 1.0


def test_many_actors_interleave_deterministically():
    def run() -> list[tuple[str, float]]:
        clock = VirtualClock()
        log: list[tuple[str, float]] = []
        lock = threading.Lock()

        def ticker(name: str, period: float):
            with clock.actor():
                for _ in range(5):
                    clock.sleep(period)
                    with lock:
                        log.append((name, round(clock.now(), 6)))

        threads = [threading.Thread(target=ticker, args=(n, p)) for n, p in (("a", 0.3), ("b", 0.7))]
        with clock.actor():
            for t in threads:
                t.start()
            assert clock.wait_for(lambda: not any(t.is_alive() for t in threads), 10.0)
        return sorted(log, key=lambda e: (e[1], e[0]))

    first = run()
    assert first == run()
    assert [t for name, t in first if name == "a"] == pytest.approx([0.3, 0.6, 0.9, 1.2, 1.5])


def test_cancel_interrupts_a_wait_at_the_moment_it_is_set():
    clock = VirtualClock()
    stop = clock.event()
    clock.call_later(1.25, stop.set)
    with pytest.raises(Cancelled):
        clock.sleep(60.0, stop)
    assert clock.now() == pytest.approx(1.25)


def test_wait_for_times_out_and_returns_false():
    clock = VirtualClock()
    assert clock.wait_for(lambda: False, 3.0) is False
    assert clock.now() == pytest.approx(3.0)
    flag = []
    clock.call_later(1.0, lambda: flag.append(1))
    assert clock.wait_for(lambda: bool(flag), 5.0) is True
    assert clock.now() == pytest.approx(4.0, abs=0.06)


@pytest.mark.parametrize("bad", [float("inf"), -1.0, float("nan")])
def test_every_wait_needs_a_finite_timeout(bad):
    for clock in (VirtualClock(), RealClock()):
        with pytest.raises(ValueError, match="finite"):
            clock.sleep(bad)
        with pytest.raises(ValueError, match="finite"):
            clock.wait_for(lambda: False, bad)


def test_paced_clock_keeps_to_its_speed():
    clock = VirtualClock(speed=20.0)
    started = time.perf_counter()
    clock.sleep(2.0)
    real = time.perf_counter() - started
    assert 0.08 <= real < 0.5  # 2 device seconds at 20x = 0.1 s


def test_real_clock_sleeps_and_cancels():
    clock = RealClock()
    stop = clock.event()
    started = time.monotonic()
    clock.call_later(0.05, stop.set)
    with pytest.raises(Cancelled):
        clock.sleep(5.0, stop)
    assert time.monotonic() - started < 1.0


def test_time_moves_once_per_instant_that_something_happens():
    clock = VirtualClock()
    for t in (1.0, 2.0, 2.0, 3.5):
        clock.call_later(t, lambda: None)
    clock.sleep(10.0)
    assert clock.now() == 10.0
    assert clock.events == 4  # 1, 2 (both timers), 3.5 and the sleep's own deadline


def test_a_poll_tests_the_predicate_without_waking_the_waiter_and_n_sleepers_cost_their_own_events():
    clock = VirtualClock()
    tested_on: list[int] = []
    flag: list[int] = []
    clock.call_later(3.0, lambda: flag.append(1))

    def ticker() -> None:  # an actor that keeps time moving with its own sleeps
        with clock.actor():
            for _ in range(40):
                clock.sleep(0.1)

    worker = threading.Thread(target=ticker)
    with clock.actor():
        worker.start()
        time.sleep(0.05)

        def predicate() -> bool:
            tested_on.append(threading.get_ident())
            return bool(flag)

        assert clock.wait_for(predicate, 10.0, poll=0.01)
        assert clock.now() == pytest.approx(3.0, abs=0.011)
    worker.join(5)
    me = threading.get_ident()
    assert len(tested_on) >= 250  # every 0.01 s of device time until 3.0 ...
    # ... on the thread that moved time (the ticker's): the waiter did not wake for each test (it moves time itself
    # only when it looks again on its own, after half a second of real time on a loaded machine)
    assert tested_on.count(me) <= len(tested_on) // 4


def test_paced_waits_sleep_the_host_rather_than_spin():
    clock = VirtualClock(speed=10.0)
    cpu, wall = time.process_time(), time.perf_counter()
    clock.sleep(3.0)  # 0.3 s of real time
    assert time.perf_counter() - wall >= 0.28
    assert time.process_time() - cpu < 0.1  # the host slept


def test_an_actor_that_leaves_lets_time_move_for_the_others():
    clock = VirtualClock()
    done = []

    def short_actor() -> None:
        with clock.actor():
            time.sleep(0.1)  # real work: time stands still meanwhile
            done.append(clock.now())

    worker = threading.Thread(target=short_actor)
    with clock.actor():
        worker.start()
        time.sleep(0.02)
    clock.sleep(5.0)  # (not an actor any more: only the worker held time)
    worker.join(5)
    assert done == [0.0] and clock.now() == 5.0


def test_a_pacer_behind_its_pace_still_lets_others_take_the_lock():
    # Timers every device millisecond that each take 0.2 ms of real time, at 1000x: the pacer can never catch up.
    # A thread that wants the clock's lock (closing the bench does) must still get it, and at once.
    clock = VirtualClock(speed=1000.0)
    stop = threading.Event()

    def storm() -> None:
        end = time.perf_counter() + 0.0002
        while time.perf_counter() < end:
            pass
        if not stop.is_set():
            clock.call_later(0.001, storm)

    clock.call_later(0.001, storm)
    sleeper = threading.Thread(target=lambda: clock.sleep(1e6, cancel=None), daemon=True)
    sleeper.start()  # someone waits: the pacer runs
    try:
        time.sleep(0.3)  # far behind by now
        waits = []
        for _ in range(5):
            asked = time.perf_counter()
            assert clock.lock.acquire(timeout=2.0), "the pacer kept the clock's lock for 2 s"
            waits.append(time.perf_counter() - asked)
            clock.lock.release()
            time.sleep(0.01)
        assert max(waits) < 0.5, waits
    finally:
        stop.set()
        clock.close()


def test_a_paced_clock_left_idle_does_not_run_ahead_afterwards():
    """Time that stood still because nothing was to happen (a bench open, nobody recovering) is no credit: the
    next wait still takes its device time / speed of real time (kiosk serve keeps its asked speed)."""
    clock = VirtualClock(speed=10.0)
    clock.sleep(0.1)  # the pacer runs; then nothing is to happen for a while
    time.sleep(0.6)  # 6 device seconds' worth of real time with nobody waiting
    started = time.monotonic()
    with clock.actor():
        clock.sleep(2.0)
    assert time.monotonic() - started >= 0.15, "the clock ran ahead on credit from its idle time"
    clock.close()
