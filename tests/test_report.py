"""The support-ticket report, from a journal filled by hand the way the ladder fills it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from firmware.platforms import Function
from hw.led_classifier import LedReading
from hw.led_signals import SOS_CODES
from hw.serial_console import redact
from kiosk.inspect import InspectedModule
from kiosk.journal import Journal
from kiosk.report import build_report, checklist, render_json, render_markdown

DEVICE = "e00fce68aabbccddeeff0011"
SECRET = "Q7XK2M9PLW4RT8Z"
ALL_PASS = {"integrity": True, "range": True, "platform": True, "dependencies": True}


def _journal(tmp_path) -> Journal:
    return Journal(tmp_path / "j.sqlite", now=lambda: datetime(2024, 5, 1, 12, 0, tzinfo=UTC))


def _sos(code: int) -> LedReading:
    c = SOS_CODES[code]
    return LedReading("red", "sos", None, code, c.name, c.meaning, 1.0, 12.0, None)


def _modules(bootloader_ok: bool) -> list[dict]:
    checks = {**ALL_PASS, "dependencies": bootloader_ok}
    return [
        InspectedModule(Function.BOOTLOADER, 0, 1003, 41_000, dict(ALL_PASS), ()).to_json(),
        InspectedModule(Function.SYSTEM_PART, 1, 6003, 680_000, checks, ((Function.BOOTLOADER, 0, 3000),)).to_json(),
    ]


def _recovered_run(j: Journal) -> int:
    run_id = j.start_run(1, DEVICE.upper(), "boron", scenario="app-crash")
    j.observe(run_id, "led", _sos(1))
    j.observe(run_id, "led", _sos(1))  # the same SOS seen again adds nothing to the report
    step = j.begin_step(run_id, "identify", "USB and LED", device_s=0.0)
    j.observe(run_id, "modules", _modules(bootloader_ok=False), step)
    j.end_step(step, "ok", f"serial i: Device Secret: {SECRET}", device_s=2.0)
    step = j.begin_step(run_id, "cold-boot", "VBUS off 5 s | on", device_s=2.0)
    j.end_step(step, "failed", "SOS again\nafter boot", device_s=17.5)
    step = j.begin_step(run_id, "safe-mode", "hold MODE through reset", device_s=17.5)
    j.observe(run_id, "led", LedReading("magenta", "breathing", 0.25, None, None, None, 1.0, 4.0, None), step)
    j.observe(run_id, "modules", {"source": "control request 90", "modules": _modules(bootloader_ok=True)}, step)
    j.end_step(step, "ok", "breathing magenta", {"held_s": 1.4}, device_s=24.0)
    j.finish_run(run_id, "recovered", "safe-mode", "Tinker written", elapsed_s=48.0, minimum_s=45.0)
    return run_id


def test_the_report_holds_what_particle_support_asks_for(tmp_path):
    with _journal(tmp_path) as j:
        run_id = _recovered_run(j)
        j.set_device_history(DEVICE, powered_by="USB from a wall adapter", peripherals="")
        report = build_report(j, run_id)

    assert report["device"] == {"device_id": DEVICE, "platform": "boron"}
    assert [(e["pattern"], e["sos_code"], e["rung"]) for e in report["led"]] == [
        ("sos", 1, None),
        ("breathing", None, "safe-mode"),
    ]
    assert report["led"][0]["sos_name"] == "HardFault" and report["led"][0]["sos_meaning"] == SOS_CODES[1].meaning
    assert [(s["seq"], s["rung"], s["outcome"], s["duration_s"]) for s in report["steps"]] == [
        (1, "identify", "ok", 2.0),
        (2, "cold-boot", "failed", 15.5),
        (3, "safe-mode", "ok", 6.5),
    ]
    history = report["device_history"]
    assert history["powered_by"] == "USB from a wall adapter"
    assert history["mounted_on"] == history["peripherals"] == history["firmware_notes"] == "not given"
    assert history["not_given"] == ["mounted_on", "peripherals", "firmware_notes"]
    first, second = report["inspections"]
    assert (first["rung"], first["failed"], second["source"], second["failed"]) == (
        "identify",
        1,
        "control request 90",
        0,
    )
    assert first["modules"][1]["checks"]["dependencies"] == "FAIL"
    assert report["verdict"] == {
        "verdict": "recovered",
        "rung_that_fixed": "safe-mode",
        "detail": "Tinker written",
        "what_to_do": "Hand it back.",
        "usb_errors": 0,
        "elapsed_s": 48.0,
        "minimum_s": 45.0,
        "ratio": 1.067,
    }
    assert report["checklist"] == []


def test_markdown_has_the_sections_tables_and_no_secret(tmp_path):
    with _journal(tmp_path) as j:
        text = render_markdown(build_report(j, _recovered_run(j)))

    assert text.startswith(f"# Particle device report: {DEVICE}\n")
    for heading in ("## Verdict", "## LED status seen", "## Troubleshooting steps, in order", "## Device history"):
        assert f"\n{heading}\n" in text
    assert "1. red SOS, code 1 (HardFault)" in text
    assert "2. breathing magenta" in text and "(during safe-mode)" in text
    assert "| 2 | cold-boot | VBUS off 5 s \\| on | failed | 15.5 | SOS again after boot |" in text
    assert "| 3 | safe-mode | hold MODE through reset | ok | 6.5 | breathing magenta |" in text
    assert "| system-part | 1 | 6003 | 680000 | PASS | PASS | PASS | FAIL | bootloader #0 v3000 |" in text
    assert "1 module(s) FAIL" in text and "All modules PASS" in text
    assert "- What it is mounted on: not given" in text
    assert "ratio 1.07" in text and "Fixed by: safe-mode" in text
    assert "checklist" not in text.lower()
    assert SECRET not in text and "Device Secret: <redacted>" in text


def test_json_round_trips_and_holds_no_secret(tmp_path):
    with _journal(tmp_path) as j:
        report = build_report(j, _recovered_run(j))
    report["steps"][0]["detail"] += f' {{"ms": "{SECRET}"}}'  # a secret added after the journal: redacted again
    text = render_json(report)
    assert SECRET not in text
    back = json.loads(text)
    assert back["device"]["device_id"] == DEVICE and back["verdict"]["rung_that_fixed"] == "safe-mode"
    assert [s["rung"] for s in back["steps"]] == ["identify", "cold-boot", "safe-mode"]


def test_damaged_hardware_gets_the_checklist(tmp_path):
    with _journal(tmp_path) as j:
        run_id = j.start_run(2, None, "photon", scenario="dead")
        j.observe(run_id, "led", {"colour": None, "pattern": "off"})
        step = j.begin_step(run_id, "swd-restore", "probe the target")
        j.end_step(step, "failed", "no target answers", {"elapsed_s": 4.0})  # the ladder's own device time
        j.finish_run(run_id, "damaged-hardware", None, "nothing answers on USB or SWD", elapsed_s=30.0)
        report = build_report(j, run_id)
    text = render_markdown(report)

    assert report["checklist"] == checklist("photon")
    assert "## Damaged-hardware checklist" in text
    assert "- [ ] Measure the EN pin: it must read 3.3 V, not be pulled to GND." in text
    assert "3V3, VIN and VBAT" in text and "Li+" not in text  # Gen2 pins for a Photon
    assert "Device ID: not found" in text and "No module inspection was possible." in text
    assert "1. off" in text and "ratio" not in text
    assert "| 1 | swd-restore | probe the target | failed | 4.0 | no target answers |" in text


def test_our_own_wording_survives_redaction(tmp_path):
    # The redactor is eager ("device s..." starts a secret); the report's fixed text must not trip it.
    for platform in ("boron", "photon", None):
        for item in checklist(platform):
            assert redact(item) == item
    with _journal(tmp_path) as j:
        run_id = j.start_run(1, DEVICE, "boron")
        j.finish_run(run_id, "damaged-hardware", None, elapsed_s=1.0, minimum_s=1.0)
        text = render_markdown(build_report(j, run_id))
    assert "<redacted>" not in text


def test_the_report_lists_the_apps_kept_and_says_when_there_was_none(tmp_path):
    from kiosk.journal import BACKUP_MEDIA_TYPE

    with _journal(tmp_path) as j:
        run_id = j.start_run(1, DEVICE, "boron")
        step = j.begin_step(run_id, "safe-mode", "write Tinker over DFU")
        facts = {"kept": True, "file": "backups/1-boron-user-part2.bin", "sha256": "ab" * 32, "size": 6068,
                 "version": 6, "index": 2, "platform": "boron", "device_id": DEVICE}
        j.add_artifact(run_id, "1-boron-user-part2.bin", json.dumps(facts), BACKUP_MEDIA_TYPE)
        j.observe(run_id, "backup", {"kept": False, "detail": "no readable app to back up (the region is blank)"})
        j.end_step(step, "done", "1 step(s) written")
        j.finish_run(run_id, "recovered", "safe-mode")
        report = build_report(j, run_id)
    kept, missing = report["backups"]
    assert kept["kept"] is True and kept["sha256"] == "ab" * 32 and kept["file"] == facts["file"]
    assert missing == {"kept": False, "detail": "no readable app to back up (the region is blank)",
                       "rung": "safe-mode", "at": missing["at"]}
    text = render_markdown(report)
    assert "## Backup of the app" in text and "ab" * 32 in text and "kiosk backup restore" in text
    assert "no readable app to back up (the region is blank) (during safe-mode)" in text
    assert json.loads(render_json(report))["backups"] == report["backups"]


def test_a_run_that_wrote_over_nothing_has_no_backup_section(tmp_path):
    with _journal(tmp_path) as j:
        run_id = _recovered_run(j)
        report = build_report(j, run_id)
    assert report["backups"] == [] and "Backup of the app" not in render_markdown(report)
