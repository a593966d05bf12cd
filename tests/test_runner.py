"""The background runner both front ends use: a worker per slot, Stop at once, results and the journal."""

from __future__ import annotations

import pytest

from kiosk.bench import simulated_bench
from kiosk.demo_library import demo_library
from kiosk.events import EventBus
from kiosk.journal import Journal
from kiosk.ladder import RungStarted
from kiosk.runner import AlreadyRunning, RecoveryRunner


def test_two_slots_recover_and_are_journaled(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    with simulated_bench("app-crash@boron,healthy@photon") as bench:
        runner = RecoveryRunner(bench, demo_library(["boron", "photon"], root=tmp_path / "lib"), journal)
        ids = [runner.start(1), runner.start(2)]
        assert runner.wait()
        assert [runner.run(n).result.verdict for n in (1, 2)] == ["recovered", "healthy"]
        assert [journal.run(i)["status"] for i in ids] == ["finished", "finished"]
        assert journal.run(ids[0])["verdict"] == "recovered"
    journal.close()


def test_stop_ends_the_run_and_a_second_start_is_refused_while_it_runs(tmp_path):
    bus = EventBus()
    with simulated_bench("corrupt-system@boron") as bench:
        runner = RecoveryRunner(bench, demo_library(["boron"], root=tmp_path / "lib"), None, bus)
        started = bench.clock.event()
        bus.subscribe(lambda e: started.set() if isinstance(e, RungStarted) and e.rung == "update" else None)
        with bench.clock.actor():
            runner.start(1)
            assert bench.clock.wait_for(started.is_set, 120.0)
            with pytest.raises(AlreadyRunning, match="press Stop"):
                runner.start(1)
            assert runner.stop(1)
            assert runner.wait(1, timeout_s=30.0)
        run = runner.run(1)
        assert run.result.verdict == "stopped"
        assert bench.slot(1).power.is_on
        assert not runner.stop(1)  # nothing left to stop
