"""`kiosk dfu|safe-mode|listen|reset|cold-boot|led|list|scenarios` end to end on the simulator."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hw.sim.scenarios import SCENARIOS
from kiosk.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    status, out, _ = run(capsys, *argv, "--json")
    return status, json.loads(out)


@pytest.mark.parametrize("platform", ["boron", "photon", "p2"])
def test_dfu_on_a_crashing_app_by_control_request(capsys, platform):
    status, doc = run_json(capsys, "dfu", "--simulate", f"app-crash@{platform}")
    assert status == 0
    assert (doc["requested"], doc["reached"], doc["ok"], doc["via"]) == ("dfu", "dfu", True, "control-request")
    assert doc["platform"] == platform and len(doc["device_id"]) == 24
    assert 0 < doc["elapsed_s"] < 10


def test_dfu_falls_back_to_the_buttons_when_old_firmware_ignores_the_request(capsys):
    status, doc = run_json(capsys, "dfu", "--simulate", "gen2-old@photon")
    assert status == 0 and doc["via"] == "buttons"
    assert [a["method"] for a in doc["attempts"]] == ["control-request", "buttons"]
    assert "did not enter DFU" in doc["attempts"][0]["outcome"]
    assert "released when the LED showed the stage" in doc["attempts"][1]["outcome"]


def test_dfu_on_a_frozen_device_goes_to_the_buttons(capsys):
    status, doc = run_json(capsys, "dfu", "--simulate", "frozen")
    assert status == 0 and doc["via"] == "buttons"
    assert "failed" in doc["attempts"][0]["outcome"]


def test_dfu_when_already_in_dfu(capsys):
    status, doc = run_json(capsys, "dfu", "--simulate", "corrupt-system@p2")
    assert status == 0 and doc["via"] == "already" and doc["attempts"] == []


def test_safe_mode_from_dfu_uses_the_buttons(capsys):
    # A device in DFU cannot take control requests; safe mode by MODE+RESET boots Device OS without the app.
    status, doc = run_json(capsys, "safe-mode", "--simulate", "corrupt-system")
    assert doc["attempts"][0]["outcome"] == "skipped: the device is in DFU mode"
    # the system part is corrupt, so the bootloader goes back to DFU: safe mode is not reached, and says so
    assert status == 1 and doc["ok"] is False


@pytest.mark.parametrize(
    ("command", "scenario", "reached", "via"),
    [
        ("safe-mode", "app-crash@p2", "safe-mode", "control-request"),
        ("listen", "healthy@photon", "listening", "control-request"),
        ("reset", "healthy", "normal", "control-request"),
        ("cold-boot", "cold-boot-fixes", "normal", "power"),
    ],
)
def test_mode_commands_report_the_mode_reached(capsys, command, scenario, reached, via):
    status, doc = run_json(capsys, command, "--simulate", scenario)
    assert status == 0, doc
    assert (doc["command"], doc["reached"], doc["via"]) == (command, reached, via)


def test_cold_boot_notices_a_battery(capsys):
    status, doc = run_json(capsys, "cold-boot", "--simulate", "battery-fitted")
    assert status == 1 and doc["ok"] is False
    assert "battery keeps the device running" in doc["attempts"][0]["outcome"]


def test_a_device_with_no_bootloader_is_not_found(capsys):
    status, _, err = run(capsys, "dfu", "--simulate", "missing-bootloader")
    assert status == 3
    assert "no Particle device on USB port 1-1.1" in err and "SWD restore" in err


def test_led_reads_the_sos_code(capsys):
    status, doc = run_json(capsys, "led", "--simulate", "app-heap@photon")
    assert status == 0
    assert (doc["colour"], doc["sos_code"], doc["sos_name"]) == ("red", 8, "OutOfHeap")


def test_led_of_a_device_in_dfu(capsys):
    status, doc = run_json(capsys, "led", "--simulate", "corrupt-system", "--watch", "2")
    assert status == 0
    assert (doc["colour"], doc["pattern"]) == ("yellow", "blink-normal")
    assert doc["watched_s"] == pytest.approx(2.0, abs=0.1)


def test_list_shows_every_slot(capsys):
    status, rows = run_json(capsys, "list", "--simulate", "healthy,corrupt-system@p2,dead")
    assert status == 0
    assert [(r["slot"], r["platform"], r["mode"]) for r in rows] == [
        (1, "boron", "normal"), (2, "p2", "dfu"), (3, None, None),
    ]  # fmt: skip
    assert rows[0]["device_os"] == "6.1.1" and rows[1]["device_os"] is None


def test_slot_option(capsys):
    status, doc = run_json(capsys, "dfu", "--simulate", "healthy,app-crash@p2", "--slot", "2")
    assert status == 0 and doc["platform"] == "p2" and doc["slot"] == 2
    status, _, err = run(capsys, "dfu", "--simulate", "healthy", "--slot", "3")
    assert status == 2 and "slot 3 does not exist; this bench has slots 1-1" in err


def test_bad_simulate_specs_are_refused(capsys):
    status, _, err = run(capsys, "dfu", "--simulate", "nope")
    assert status == 2 and "unknown scenario 'nope'" in err and "healthy" in err
    status, _, err = run(capsys, "dfu", "--simulate", "healthy@potato")
    assert status == 2 and "unknown platform 'potato'" in err


def test_scenarios_lists_the_table(capsys):
    status, docs = run_json(capsys, "scenarios")
    assert status == 0 and [d["name"] for d in docs] == list(SCENARIOS)
    assert len(docs) == 17 and "dfu-only-old-bootloader" in [d["name"] for d in docs]


@pytest.mark.parametrize("command", ["dfu", "safe-mode", "listen", "reset", "cold-boot", "led", "list"])
def test_no_hardware_and_no_simulate_is_exit_3_not_a_traceback(command, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", command, "--config", str(tmp_path / "missing.toml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3
    assert "not set up as a kiosk" in proc.stderr and "--simulate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_config_on_a_machine_without_gpio_is_exit_3(tmp_path):
    config = tmp_path / "kiosk.toml"
    config.write_text("[[slots]]\nreset_pin = 17\nmode_pin = 27\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "dfu", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3
    assert "no usable GPIO on this machine" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_config_is_exit_2(capsys, tmp_path):
    config = tmp_path / "kiosk.toml"
    config.write_text("[[slots]]\nreset_pin = 17\nmod_pin = 27\n")
    status, _, err = run(capsys, "dfu", "--config", str(config))
    assert status == 2 and "mod_pin: unknown key (did you mean 'mode_pin'?)" in err


def test_inspect_names_the_failing_check(capsys):
    status, doc = run_json(capsys, "inspect", "--simulate", "deps-mismatch@p2")
    assert status == 1 and doc["ok"] is False and doc["source"] == "control request 90"
    app = next(m for m in doc["modules"] if m["function"] == "user-part")
    assert app["checks"] == {"integrity": "PASS", "range": "PASS", "platform": "PASS", "dependencies": "FAIL"}
    assert app["dependencies"] == [{"function": "system-part", "index": 1, "version": 6200}]  # P2 runs 5.9.0


def test_inspect_of_an_old_device_uses_the_legacy_format(capsys):
    status, doc = run_json(capsys, "inspect", "--simulate", "healthy@photon")
    assert status == 0 and doc["ok"] is True
    assert {m["checks"]["range"] for m in doc["modules"]} == {None}  # the legacy reply has no range check
    status, out, _ = run(capsys, "inspect", "--simulate", "healthy@photon")
    assert "Integrity: PASS" in out and "All modules PASS" in out


def test_inspect_of_a_device_in_dfu_says_what_to_do(capsys):
    status, _, err = run(capsys, "inspect", "--simulate", "corrupt-system")
    assert status == 1 and "needs Device OS running" in err
