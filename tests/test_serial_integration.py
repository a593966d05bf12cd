"""Serial paths end to end: YModem flash into the simulated device, inspect over `s`, the 14400-baud
fallback of the executor, and `kiosk serial send-ymodem` into lrzsz's receiver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from firmware.module import parse_module
from firmware.plan import DeviceFacts, Transport, plan_flash
from firmware.releases import synthetic_release
from hw.control import ControlChannel
from hw.gpio import StageResult
from hw.sim.device import Mode
from hw.sim.device_serial import DeviceSerialProvider
from kiosk import modes
from kiosk.bench import simulated_bench
from kiosk.cli import main
from kiosk.commands.device_cmd import _modules_by_serial
from kiosk.events import ModeSwitch
from kiosk.executor import FlashExecutor


def test_flash_over_serial_replaces_a_crashing_app(capsys, tmp_path):
    (tmp_path / "tinker.bin").write_bytes(synthetic_release("photon", "2.3.0")["photon-tinker@2.3.0.bin"])
    status = main(["flash", "--serial", str(tmp_path / "tinker.bin"), "--simulate", "app-crash@photon", "--json"])
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert status == 0 and doc["ok"]
    (step,) = doc["steps"]
    assert (step["mechanism"], step["outcome"], step["function"]) == ("ymodem", "written", "user-part")
    assert DeviceSerialProvider.SECRET not in out  # the device secret is never shown


def test_inspect_reads_the_s_table_in_listening_mode():
    with simulated_bench("deps-mismatch@boron") as bench, bench.clock.actor():
        slot = bench.slot(1)
        assert modes.enter_listening(slot).ok
        device = modes.wait_for_device(slot, 5.0, "normal")
        by_serial = {(m.function, m.index): m for m in _modules_by_serial(bench, slot, device)}
        assert slot.device.mode == Mode.LISTENING
        by_control = {(m.function, m.index): m for m in ControlChannel(device.usb_device, bench.clock).module_info()}
        assert by_serial.keys() == by_control.keys()
        for key, m in by_control.items():
            assert by_serial[key].version == m.version
            assert by_serial[key].failed == m.failed  # the same checks fail either way
        assert "dependencies" in by_serial[(5, 2)].failed


def test_executor_falls_back_to_the_14400_baud_trick():
    """Old firmware ignores the DFU request and the buttons do not help (here: not wired):
    opening the serial port at 14400 baud still resets the device into DFU."""
    with simulated_bench("gen2-old@photon") as bench, bench.clock.actor():
        slot = bench.slot(1)
        bench.clock.sleep(1.5)
        slot.buttons.enter_bootloader_stage = lambda stage, cancel=None: StageResult(stage, 0.0, "clock")
        tinker = parse_module(synthetic_release("photon", "1.5.2")["photon-tinker@1.5.2.bin"])
        plan = plan_flash(DeviceFacts(slot.device.platform, system_version=1512, mode="normal"),
                          [("tinker.bin", tinker)], Transport.USB)  # fmt: skip
        executor = FlashExecutor(slot, plan)
        switches = []
        executor.bus.subscribe(lambda e: switches.append(e) if isinstance(e, ModeSwitch) else None)
        report = executor.run()
        assert report.ok, report.detail
        assert switches[0].via == "14400-baud" and switches[0].reached == "dfu"
        assert any(what == "start (14400 baud)" for _, what in slot.device.log)


@pytest.mark.skipif(shutil.which("rb") is None, reason="lrzsz is missing: `make test` installs Debian's lrzsz")
def test_send_ymodem_command_into_lrzsz(tmp_path):
    payload = os.urandom(5000)
    (tmp_path / "file.bin").write_bytes(payload)
    (tmp_path / "out").mkdir()
    master, slave = os.openpty()
    receiver = subprocess.Popen(["rb", "-q"], stdin=master, stdout=master, stderr=subprocess.DEVNULL,
                                cwd=tmp_path / "out")  # fmt: skip
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kiosk.cli", "serial", "send-ymodem", "--port", os.ttyname(slave),
             str(tmp_path / "file.bin"), "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["bytes"] == 5000
        assert receiver.wait(timeout=30) == 0
    finally:
        receiver.kill()
        os.close(master)
        os.close(slave)
    assert (tmp_path / "out" / "file.bin").read_bytes() == payload
