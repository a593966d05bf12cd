"""Crash durability: the kiosk killed at many points of a recovery.

1. A real ``kiosk recover`` process, killed with SIGKILL at random moments of its run: the journal always
   opens, passes ``PRAGMA integrity_check``, holds every step it completed (outcome and end time), and the
   next start marks the run interrupted.
2. The ladder cut off abruptly at every kind of wait it makes (an exception no handler in the kiosk
   catches, raised from the clock, as close to a crash as one process allows): the next Recover on the
   same simulated device picks up from what it re-detects, ends with the scenario's verdict, and leaves
   the device no worse than it found it.

``make test`` kills at a few seeded points; ``KIOSK_LONG=1`` at many more.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hw.clock import VirtualClock
from kiosk.bench import simulated_bench
from kiosk.demo_library import demo_library
from kiosk.journal import Journal
from kiosk.ladder import Ladder
from tests.test_ladder import EXPECTED, _valid_modules, assert_no_worse

ROOT = Path(__file__).resolve().parents[1]
LONG = os.environ.get("KIOSK_LONG") == "1"
KILLS = 24 if LONG else 4
CUTS = 40 if LONG else 8
SPEC = "corrupt-system@boron,app-crash@photon"


def _recover_process(journal: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "kiosk.cli", "recover", "--all", "--simulate", SPEC, "--speed", "20",
            "--journal", str(journal)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


@pytest.mark.parametrize("seed", range(KILLS))
def test_sigkill_at_a_random_moment_leaves_a_sound_journal(seed, tmp_path):
    journal = tmp_path / "journal.sqlite"
    child = _recover_process(journal)
    try:
        assert child.stderr.readline()  # the first rung started: the run is under way
        time.sleep(random.Random(seed).uniform(0.0, 1.2))  # a run takes about a second at --speed 20
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    db = sqlite3.connect(journal)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with Journal(journal) as j:
        runs = j.runs()
        assert runs, "the run was in the journal before its first step"
        open_before = {r["id"] for r in runs if r["status"] == "running"}
        for summary in runs:
            for step in j.run(summary["id"])["steps"]:
                if step["ended_at"] is not None:  # completed: whole, with its outcome
                    assert step["outcome"] and isinstance(step["figures"], dict)
        assert set(j.mark_interrupted()) == open_before
        for summary in j.runs():
            assert summary["status"] in ("finished", "interrupted")
            for step in j.run(summary["id"])["steps"]:
                assert step["outcome"] is not None  # every step ended, or marked interrupted


class _Crash(BaseException):
    """Not an Exception: nothing in the kiosk catches it, as nothing survives a crash."""


@pytest.mark.parametrize("cut", range(CUTS))
def test_a_recovery_cut_off_anywhere_is_picked_up_by_the_next(cut, tmp_path, monkeypatch):
    rng = random.Random(cut)
    scenario, platform = rng.choice([("corrupt-system", "boron"), ("app-crash", "photon"),
                                     ("tinker-first", "p2"), ("deps-mismatch", "boron")])  # fmt: skip
    library = demo_library([platform], root=tmp_path / "lib")
    journal = Journal(tmp_path / "journal.sqlite")
    with simulated_bench(f"{scenario}@{platform}") as bench, bench.clock.actor():
        slot = bench.slot(1)
        before = _valid_modules(slot.device)
        crash_at = rng.randint(1, _waits_in_a_whole_run(scenario, platform, library))
        waits = {"n": 0}
        sleep, wait_for = VirtualClock.sleep, VirtualClock.wait_for
        ladder_thread = threading.get_ident()  # the ladder runs here; the simulator's threads go on

        def counted(original):
            def wrapper(self, *args, **kwargs):
                if threading.get_ident() == ladder_thread:
                    waits["n"] += 1
                    if waits["n"] == crash_at:
                        raise _Crash()
                return original(self, *args, **kwargs)

            return wrapper

        monkeypatch.setattr(VirtualClock, "sleep", counted(sleep))
        monkeypatch.setattr(VirtualClock, "wait_for", counted(wait_for))
        run_id = journal.start_run(1, None, None, scenario)
        crashed = False
        try:
            Ladder(slot, library, journal=journal, run_id=run_id).run()
        except _Crash:
            crashed = True
        monkeypatch.setattr(VirtualClock, "sleep", sleep)
        monkeypatch.setattr(VirtualClock, "wait_for", wait_for)
        assert crashed, f"the run ended after {waits['n']} waits, before the cut"
        with Journal(tmp_path / "journal.sqlite") as restarted:  # the next kiosk process to start
            assert restarted.mark_interrupted() == [run_id]
        # The next Recover: the device is wherever the cut left it (mid-write, in DFU, booting...).
        slot.buttons.release_all()  # as the OS releases a dead process's GPIO lines (deploy/WIRING.md)
        if not slot.power.is_on:
            bench.clock.sleep(slot.power.guard.power_off_wait_needed())
            slot.power.on()
        again = Ladder(slot, library, journal=journal, run_id=journal.start_run(1, None, None, scenario)).run()
        assert again.verdict in ("healthy", EXPECTED[scenario][0]), (crash_at, again.steps)
        assert_no_worse(before, _valid_modules(slot.device))
        assert slot.device.hazards == []
    journal.close()


def _waits_in_a_whole_run(scenario: str, platform: str, library) -> int:
    """How many times the ladder waits on the clock in one uncut run (the cut lands among them)."""
    calls = {"n": 0}
    sleep, wait_for = VirtualClock.sleep, VirtualClock.wait_for
    me = threading.get_ident()

    def counted(original):
        def wrapper(self, *args, **kwargs):
            calls["n"] += threading.get_ident() == me
            return original(self, *args, **kwargs)

        return wrapper

    with pytest.MonkeyPatch.context() as patch, simulated_bench(f"{scenario}@{platform}") as bench, \
            bench.clock.actor():  # fmt: skip
        patch.setattr(VirtualClock, "sleep", counted(sleep))
        patch.setattr(VirtualClock, "wait_for", counted(wait_for))
        Ladder(bench.slot(1), library).run()
    return calls["n"]
