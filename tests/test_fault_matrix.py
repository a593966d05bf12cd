"""The fault matrix: scenarios x faults the simulator injects x Boron, Photon and P2, through the whole
product (runner, ladder, executor, drivers, journal).

Faults: a STALL or the cable pulled out (and plugged back 2 s later) in each DFU phase; control requests
that never answer; an LED sensor that is dark or stuck on red; a second device on the same slot's port;
Recover pressed at any moment (tests/test_ladder.py covers crash-loop phases); serial garbage, silence and
YModem NAKs and timeouts are in tests/test_ymodem.py and tests/test_serial_console.py.
For every case: the verdict is the scenario's own (a fault that
happens once must not change it) or, for a fault that persists, a verdict that tells the technician what
to do; the device is no worse than before; the journal holds the run finished with every step ended;
no hazard was reached (hw.sim records any MODE hold, click or power cycle the guard should have stopped);
no worker or sampler thread is left behind.

``make test`` runs a short deterministic profile; ``KIOSK_LONG=1`` (``make test-long``) runs every
scenario with every fault on every platform.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import pytest

from firmware.releases import BODY
from hw.sim.device import DFU_PHASES
from hw.sim.scenarios import SCENARIOS, refusal
from hw.sim.wiring import plug_in_beside
from kiosk.bench import simulated_bench
from kiosk.demo_library import demo_library
from kiosk.journal import Journal
from kiosk.runner import RecoveryRunner
from tests.test_ladder import EXPECTED, P2_SWD, _valid_modules, assert_no_worse

LONG = os.environ.get("KIOSK_LONG") == "1"
PLATFORMS = ("boron", "photon", "p2")

#: Faults that happen once: the scenario's verdict must not change.
ONCE = {f"dfu-{what}-{phase}": {"dfu_fault": (phase, what)} for phase in DFU_PHASES for what in ("stall", "unplug")}
#: Faults that persist: the verdict may change, but must tell the technician what to do.
PERSISTENT = {
    "control-silent": {"control_silent": True},
    "led-dark": {"led_sensor": "dark"},
    "led-stuck": {"led_sensor": "stuck"},
    "second-device": {},  # a healthy Boron plugged in beside it on the same port (hw.sim.wiring.plug_in_beside)
}
ACTIONABLE = ("needs-technician", "needs-owner", "damaged-hardware")
#: The short profile: the scenarios that go through DFU, the app's crash and a healthy device.
SHORT_SCENARIOS = {"once": ("corrupt-system", "app-crash"), "persistent": ("healthy", "app-crash", "corrupt-system")}


def _cases() -> list:
    cases = []
    for platform in PLATFORMS:
        for fault in ONCE:
            for scenario in SCENARIOS if LONG else SHORT_SCENARIOS["once"]:
                cases.append(pytest.param(scenario, platform, fault, id=f"{scenario}@{platform}-{fault}"))
        for fault in PERSISTENT:
            for scenario in SCENARIOS if LONG else SHORT_SCENARIOS["persistent"]:
                cases.append(pytest.param(scenario, platform, fault, id=f"{scenario}@{platform}-{fault}"))
    if not LONG:  # the short profile: every fault, each scenario on one platform in turn
        cases = [c for i, c in enumerate(cases) if i % len(PLATFORMS) == PLATFORMS.index(c.values[1])]
        # and a second device that answers first: the slot's P2 enumerates seconds after the Boron beside it
        # (the look saw only the Boron and called the slot healthy)
        cases.append(pytest.param("deps-mismatch", "p2", "second-device", id="deps-mismatch@p2-second-device"))
    # what cannot happen on a platform (gen2-old on Boron and P2, protected on a Photon) is not run
    return [c for c in cases if refusal(c.values[0], c.values[1]) is None]


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    """Demo libraries with small modules (BODY bytes of body): the matrix judges verdicts, the device and the journal
    after each fault, not flash time; the demo and the benchmarks use the real-size library."""
    root = tmp_path_factory.mktemp("fault-matrix-lib")
    return {p: demo_library([p], root=root / p, body_size=BODY) for p in PLATFORMS}


@pytest.mark.parametrize(("scenario", "platform", "fault"), _cases())
def test_fault_matrix(scenario, platform, fault, libraries, tmp_path):
    expected = P2_SWD.get(scenario, EXPECTED[scenario]) if platform == "p2" else EXPECTED[scenario]
    threads_before = {t.ident for t in threading.enumerate()}
    journal = Journal(tmp_path / "journal.sqlite")
    with simulated_bench(f"{scenario}@{platform}") as bench:
        device = bench.slot(1).device
        with bench.clock.lock:
            device.faults = dataclasses.replace(device.faults, **{**ONCE, **PERSISTENT}[fault])
        beside = plug_in_beside(bench.slot(1).usb_backend.bus, bench.clock, bench.slot(1).usb_port) \
            if fault == "second-device" else None  # fmt: skip
        before = _valid_modules(device)
        beside_before = _valid_modules(beside) if beside is not None else None
        runner = RecoveryRunner(bench, libraries[platform], journal)
        run_id = runner.start(1)
        assert runner.wait(1, timeout_s=900.0), "the ladder did not finish"
        run = runner.run(1)
        assert run.error is None, run.error
        result = run.result
        if fault in ONCE:  # the verdict stands; the rung may differ (tinker-first: a DFU write repeated after
            # the cable came back can put Tinker before the system part, so the first update already takes)
            assert result.verdict == expected[0], result.steps
        else:
            assert result.verdict in (expected[0], *ACTIONABLE), result.steps
            assert result.detail
            if fault.startswith("led") and result.verdict not in ACTIONABLE:  # the LED cannot say "no SOS"
                assert result.verdict not in ("healthy", "recovered"), result.detail
        assert device.hazards == []
        assert_no_worse(before, _valid_modules(device))
        assert bench.slot(1).power.is_on
        if beside is not None:  # the other device is not touched either
            assert _valid_modules(beside) == beside_before and beside.hazards == []
    stored = journal.run(run_id)
    journal.close()
    assert stored["status"] == "finished" and stored["verdict"] == result.verdict
    assert stored["steps"] and all(s["ended_at"] and s["outcome"] for s in stored["steps"])
    left = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    for thread in left:
        thread.join(timeout=2.0)
    assert not [t.name for t in left if t.is_alive()]

