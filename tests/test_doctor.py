"""`kiosk doctor`: every check passes on the simulated bench, breakage is found and said in words, a machine
without hardware gets one clear line per problem and no traceback, and the host checks read a made-up system
tree (sysfs, /dev, /proc, udev's database) the way they read the real one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kiosk import doctor
from kiosk.cli import main
from kiosk.doctor import FAIL, OK, SKIP, WARN, CheckResult, Doctor, DoctorOptions, run_checks

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "deploy" / "kiosk.example.toml"
RULES = REPO / "deploy" / "udev" / "60-particle-kiosk.rules"
HOST_ONLY = {"udev-rules", "modemmanager", "service"}  # skipped on the simulated bench, with the reason


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    status = main(["doctor", *argv, "--json"])
    out, _ = capsys.readouterr()
    return status, json.loads(out)


def by_name(document: dict) -> dict[str, dict]:
    return {c["name"]: c for c in document["checks"]}


def test_every_check_passes_on_the_simulated_bench(capsys):
    status, doc = run_json(capsys, "--simulate", "app-crash")
    assert status == 0 and doc["ok"] is True and doc["simulated"] is True
    checks = by_name(doc)
    assert {c["status"] for c in doc["checks"]} <= {OK, SKIP}
    assert {n for n, c in checks.items() if c["status"] == SKIP} == HOST_ONLY
    for name in ("config", "usb-devices", "usb-access", "serial-ports", "slot-1-buttons", "slot-1-power",
                 "slot-1-led", "swd-probe", "library", "journal", "disk"):  # fmt: skip
        assert checks[name]["status"] == OK, checks[name]
    assert "1-1.1 = slot 1" in checks["usb-devices"]["summary"]
    assert "boron" in checks["library"]["summary"]
    assert doc["counts"] == {"ok": len(doc["checks"]) - 3, "warn": 0, "fail": 0, "skip": 3}
    assert "bench service is not asked" in checks["service"]["summary"]


def test_active_test_presses_and_cold_boots_every_slot(capsys):
    status, doc = run_json(capsys, "--simulate", "healthy,app-crash@p2", "--active")
    assert status == 0, doc
    checks = by_name(doc)
    for n in (1, 2):
        assert checks[f"slot-{n}-buttons"]["status"] == OK
        assert "safe mode" in checks[f"slot-{n}-buttons"]["summary"]
        assert checks[f"slot-{n}-power"]["status"] == OK
        assert "power off 5.0 s" in checks[f"slot-{n}-power"]["summary"]


def test_active_test_finds_a_battery_that_keeps_the_device_running(capsys):
    status, doc = run_json(capsys, "--simulate", "battery-fitted", "--active")
    assert status == 1 and doc["ok"] is False
    power = by_name(doc)["slot-1-power"]
    assert power["status"] == FAIL
    assert "LED stayed lit" in power["summary"] and "battery" in power["fix"]


def _rewired(monkeypatch, change) -> None:
    """The simulated bench with one slot's wiring changed by ``change(bench)`` (a broken bench)."""
    import kiosk.bench

    real = kiosk.bench.simulated_bench

    def broken(spec, speed=None):
        bench = real(spec, speed)
        change(bench)
        return bench

    monkeypatch.setattr(kiosk.bench, "simulated_bench", broken)


def test_active_test_finds_a_reset_line_that_is_not_wired(capsys, monkeypatch):
    from hw.gpio import ButtonLine

    def cut_reset(bench):
        slot = bench.slots[0]
        factory = slot.buttons.reset.pin.factory
        slot.buttons.reset = ButtonLine(20, pin_factory=factory, name="RESET")  # GPIO20 goes nowhere

    _rewired(monkeypatch, cut_reset)
    status, doc = run_json(capsys, "--simulate", "healthy", "--active")
    assert status == 1
    buttons = by_name(doc)["slot-1-buttons"]
    assert buttons["status"] == FAIL
    assert "did not restart" in buttons["summary"] and "RESET wiring" in buttons["fix"]


def test_led_sensor_that_sees_nothing_while_the_device_runs_fails(capsys, monkeypatch):
    from hw.gpio import LedSensor

    def blind(bench):
        slot = bench.slots[0]
        slot.led.close()
        slot.led = LedSensor((21, 22, 23), bench.clock, pin_factory=slot.buttons.reset.pin.factory)
        slot._closers.append(slot.led.close)  # its sampler stops with the bench (left running, it spins for ever)

    _rewired(monkeypatch, blind)
    status, doc = run_json(capsys, "--simulate", "healthy")
    assert status == 1
    led = by_name(doc)["slot-1-led"]
    assert led["status"] == FAIL and "saw no light" in led["summary"] and "led_active" in led["fix"]


def test_bad_scenario_is_a_failed_config_check_not_a_crash(capsys):
    status, doc = run_json(capsys, "--simulate", "no-such-scenario")
    assert status == 1
    checks = by_name(doc)
    assert checks["config"]["status"] == FAIL and "kiosk scenarios" in checks["config"]["fix"]
    assert checks["slots-buttons"]["status"] == FAIL


def test_no_hardware_one_clear_line_per_problem_and_no_traceback(tmp_path):
    """The real command, as a technician runs it on a machine with no bench: exit 1, words, no traceback."""
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    for config in (tmp_path / "missing.toml", EXAMPLE):
        proc = subprocess.run([sys.executable, "-m", "kiosk.cli", "doctor", "--config", str(config)],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=60)  # fmt: skip
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert len(lines) >= len(doctor.CHECKS)
        problems = [line for line in lines if line.startswith("FAIL")]
        assert problems, proc.stdout
        assert all(" Fix: " in line for line in problems), problems
        assert "problem(s)" in proc.stderr
        status = {line.split(":", 1)[0].split()[-1]: line.split()[0] for line in lines}
        assert status["config"] == ("FAIL" if config != EXAMPLE else "ok")


@pytest.mark.skipif(Path("/etc/particle-kiosk").exists(), reason="this machine is set up as a kiosk")
def test_plain_doctor_on_this_machine_exits_non_zero_cleanly(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "kiosk.cli", "doctor"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=60)  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stdout.startswith("FAIL  config: no bench config at /etc/particle-kiosk/kiosk.toml")


def test_a_check_that_raises_becomes_a_failed_line():
    def broken(doc: Doctor) -> CheckResult:
        raise RuntimeError("boom")

    results = run_checks(DoctorOptions(), (doctor.Check("broken", "raises", broken),))
    assert [(r.name, r.status) for r in results] == [("broken", FAIL)]
    assert "RuntimeError: boom" in results[0].summary and "report it" in results[0].fix


def test_result_line_says_what_and_how():
    line = CheckResult("disk", FAIL, "10 MiB free", "free space").line()
    assert line == "FAIL  disk: 10 MiB free. Fix: free space"
    assert CheckResult("disk", OK, "9 GiB free", "ignored").line() == "ok    disk: 9 GiB free"
    with pytest.raises(ValueError):
        CheckResult("disk", "bad", "x")


# --- the host checks against a made-up system tree -------------------------------------------------------------


def _doc(root: Path, **options) -> Doctor:
    return Doctor(DoctorOptions(system_root=root, **options))


def _install_rules(root: Path, text: str) -> None:
    path = root / doctor.UDEV_RULES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_udev_rules_check(tmp_path):
    assert doctor.check_udev_rules(_doc(tmp_path)).status == FAIL  # not installed
    _install_rules(tmp_path, RULES.read_text())
    assert doctor.check_udev_rules(_doc(tmp_path)).status == OK
    _install_rules(tmp_path, RULES.read_text().replace('"d0??", MODE="0660"', '"d0??", MODE="0666"'))
    result = doctor.check_udev_rules(_doc(tmp_path))
    assert result.status == FAIL and 'MODE="0666"' in result.summary and "2b04:d006 (photon dfu)" in result.summary


def test_udev_rules_check_wants_slot_names_that_follow_the_config(tmp_path):
    from kiosk.config import load_config

    _install_rules(tmp_path, RULES.read_text())
    doc = _doc(tmp_path)
    doc.config = load_config(EXAMPLE)
    result = doctor.check_udev_rules(doc)
    assert result.status == WARN and "1-1.1" in result.summary
    slots = tmp_path / doctor.UDEV_SLOT_RULES_FILE
    slots.write_text('KERNELS=="1-1.1"\nKERNELS=="1-1.2"\n')
    assert doctor.check_udev_rules(doc).status == OK


def test_udev_rule_problems_name_what_is_missing():
    without_dfu = "\n".join(line for line in RULES.read_text().splitlines() if '"d0??"' not in line)
    problems = doctor.udev_rule_problems(without_dfu)
    assert any("2b04:d00d (boron dfu)" in p for p in problems)
    assert not any("c00d" in p for p in problems)
    no_mm = RULES.read_text().replace('ENV{ID_MM_DEVICE_IGNORE}="1"', 'ENV{OTHER}="1"')
    assert any("ModemManager" in p for p in doctor.udev_rule_problems(no_mm))
    assert doctor.udev_rule_problems('SUBSYSTEM=="usb", MODE=0660')[0].startswith("syntax: line 1")


def _usb_device(root: Path, port: str, vid: int, pid: int, bus: int, num: int, mode: int) -> Path:
    sysdev = root / "sys/bus/usb/devices" / port
    sysdev.mkdir(parents=True)
    for name, value in (("idVendor", f"{vid:04x}"), ("idProduct", f"{pid:04x}"), ("busnum", str(bus)),
                        ("devnum", str(num))):  # fmt: skip
        (sysdev / name).write_text(value + "\n")
    node = root / f"dev/bus/usb/{bus:03d}/{num:03d}"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.write_bytes(b"")
    node.chmod(mode)
    return node


def test_usb_access_check_reads_the_device_nodes(tmp_path):
    assert doctor.check_usb_access(_doc(tmp_path)).status == WARN  # nothing plugged in
    _usb_device(tmp_path, "1-1.2", 0x2B04, 0xC00D, 1, 5, 0o660)
    _usb_device(tmp_path, "1-1.4", 0x0D28, 0x0204, 1, 7, 0o660)
    _usb_device(tmp_path, "1-1.3", 0x046D, 0xC52B, 1, 6, 0o666)  # a mouse: not the kiosk's business
    result = doctor.check_usb_access(_doc(tmp_path))
    assert result.status == OK and "2b04:c00d at 1-1.2" in result.summary and "0d28:0204" in result.summary
    (tmp_path / "dev/bus/usb/001/005").chmod(0o666)
    result = doctor.check_usb_access(_doc(tmp_path))
    assert result.status == FAIL and "world-writable" in result.summary and "udev" in result.fix


def _modem_manager(root: Path, ignored: bool) -> None:
    proc = root / "proc/812"
    proc.mkdir(parents=True)
    (proc / "comm").write_text("ModemManager\n")
    usb = root / "sys/bus/usb/devices/1-1.2"
    (usb / "1-1.2:1.0").mkdir(parents=True)
    (usb / "idVendor").write_text("2b04\n")
    tty = root / "sys/class/tty/ttyACM0"
    tty.mkdir(parents=True)
    (tty / "dev").write_text("166:0\n")
    (tty / "device").symlink_to(usb / "1-1.2:1.0")
    data = root / "run/udev/data/c166:0"
    data.parent.mkdir(parents=True)
    data.write_text("E:ID_VENDOR_ID=2b04\n" + ("E:ID_MM_DEVICE_IGNORE=1\n" if ignored else ""))


@pytest.mark.parametrize("ignored", [True, False])
def test_modem_manager_check(tmp_path, ignored):
    assert doctor.check_modem_manager(_doc(tmp_path)).status == OK  # not running
    _modem_manager(tmp_path, ignored)
    result = doctor.check_modem_manager(_doc(tmp_path))
    if ignored:
        assert result.status == OK and "ignores" in result.summary
    else:
        assert result.status == FAIL and "/dev/ttyACM0" in result.summary and "udevadm trigger" in result.fix


def test_pin_factory_check_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "rpigpio")
    result = doctor.check_pin_factory(_doc(tmp_path))
    assert result.status == FAIL and "lgpio" in result.fix
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY")
    result = doctor.check_pin_factory(_doc(tmp_path))
    assert result.status == FAIL
    assert "lgpio" in result.summary or "no GPIO chip" in result.summary


def test_library_check(tmp_path):
    from kiosk.demo_library import demo_library

    empty = doctor.check_library(_doc(tmp_path, library=tmp_path / "empty"))
    assert empty.status == FAIL and "kiosk firmware import" in empty.fix
    demo_library(["boron"], root=tmp_path / "lib")
    assert doctor.check_library(_doc(tmp_path, library=tmp_path / "lib", platforms=("boron",))).status == OK
    missing = doctor.check_library(_doc(tmp_path, library=tmp_path / "lib", platforms=("boron", "p2")))
    assert missing.status == FAIL and "p2" in missing.summary
    unknown = doctor.check_library(_doc(tmp_path, library=tmp_path / "lib", platforms=("toaster",)))
    assert unknown.status == FAIL and "toaster" in unknown.summary


def test_journal_check(tmp_path):
    fresh = doctor.check_journal(_doc(tmp_path, journal=tmp_path / "new" / "journal.sqlite"))
    assert fresh.status == OK and "will be made" in fresh.summary
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    result = doctor.check_journal(_doc(tmp_path, journal=junk))
    assert result.status == FAIL and "cannot be written" in result.summary


def test_disk_check_reports_the_real_free_space(tmp_path):
    result = doctor.check_disk(_doc(tmp_path, journal=tmp_path / "journal.sqlite"))
    free_gib = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize / 1024**3
    assert f"{free_gib:.1f} GiB free" in result.summary


def test_no_bench_service_is_said_with_how_to_start_it_and_the_doctor_checks_the_bench_itself(capsys, tmp_path):
    import socket

    stale = Path(tempfile.mkdtemp(prefix="kd-", dir="/tmp")) / "bench.sock"
    try:
        for path, why in ((tmp_path / "none.sock", "does not exist"), (stale, "nobody listens")):
            if path == stale:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(str(stale))
                sock.close()  # a socket file a dead service left
            _status, doc = run_json(capsys, "--config", str(EXAMPLE), "--socket", str(path))
            service = by_name(doc)["service"]
            assert service["status"] == WARN and "not running" in service["summary"] and why in service["summary"]
            assert "sudo systemctl start particle-kiosk-bench" in service["fix"]
            assert "owns the bench" not in by_name(doc)["gpio-lines"]["summary"]  # it looked itself
    finally:
        shutil.rmtree(stale.parent, ignore_errors=True)


def test_with_the_bench_service_running_the_doctor_asks_it_and_never_opens_the_bench(capsys, monkeypatch):
    from tests.test_service import service_on, wait_for

    opened: list[str] = []
    import hw.serial_console
    import kiosk.bench

    monkeypatch.setattr(kiosk.bench, "hardware_bench", lambda *a, **k: opened.append("bench"))
    monkeypatch.setattr(doctor, "_line_users", lambda *a, **k: opened.append("gpio lines") or {})
    monkeypatch.setattr(hw.serial_console, "open_port", lambda *a, **k: opened.append("serial"))
    folder = Path(tempfile.mkdtemp(prefix="kd-", dir="/tmp"))
    service = service_on(folder, "healthy@boron,healthy@p2")
    try:
        wait_for(lambda: all(s.device_id for s in (service.board.state(1), service.board.state(2))), 30,
                 "the service's USB poller to see both devices")  # fmt: skip
        for active in ((), ("--active",)):
            _status, doc = run_json(capsys, "--config", str(EXAMPLE), "--socket", str(service.socket_path), *active)
            checks = by_name(doc)
            assert checks["service"]["status"] == OK and f"pid {os.getpid()}" in checks["service"]["summary"]
            for name in ("gpio-lines", "serial-ports", "slots-buttons", "slots-power", "slots-led", "swd-probe"):
                found = checks[name]
                assert found["status"] == SKIP and "bench service owns the bench" in found["summary"], name
            devices = checks["usb-devices"]
            assert devices["status"] == OK
            assert "slot 1: boron" in devices["summary"] and "slot 2: p2" in devices["summary"]
            journal = checks["journal"]
            assert journal["status"] == OK and str(service.engine.journal_path) in journal["summary"]
            assert "the bench service's" in checks["library"]["summary"]
        assert opened == []  # nothing of the bench was opened behind the service's back
        assert not any(service.board.state(i).running for i in (1, 2))  # --active pressed nothing
    finally:
        service.close()
        shutil.rmtree(folder, ignore_errors=True)
