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
