"""The support-ticket bundle for one run: what Particle's support asks for before a ticket is opened.

Particle wants the device id, the LED status shown, the troubleshooting steps taken and their results in
order, the device's history (power, mounting, peripherals, firmware and how it got there) and the module
inspection (`particle serial inspect`: PASS/FAIL per module). :func:`build_report` gathers all of it from
the journal; :func:`render_markdown` writes it for people and :func:`render_json` for machines. Both pass
every string through ``redact`` again, so a secret that slipped into the journal never reaches a ticket.

    >>> from kiosk.journal import Journal
    >>> j = Journal(":memory:")
    >>> run_id = j.start_run(1, "e00fce68aabbccddeeff0011", "boron")
    >>> j.finish_run(run_id, "healthy", None, "", elapsed_s=6.0, minimum_s=5.8)
    >>> report = build_report(j, run_id)
    >>> report["device"]["device_id"], report["device_history"]["powered_by"]
    ('e00fce68aabbccddeeff0011', 'not given')
"""

from __future__ import annotations

import json
from typing import Any

from firmware.platforms import UnknownPlatformError, platform_by_name
from kiosk.advice import AGAIN_REPORT, cable_words, instruction
from kiosk.journal import HISTORY_FIELDS, Journal, redacted

REPORT_FORMAT = 1
#: What the report says of each backup (kiosk.backup's facts; the journal holds the rest).
BACKUP_FIELDS = ("file", "sha256", "size", "platform", "device_id", "index", "version", "address", "module_sha256",
                 "problems", "created_at")  # fmt: skip
NOT_GIVEN = "not given"
DAMAGED = "damaged-hardware"
CHECK_COLUMNS = (
    ("integrity", "Integrity"),
    ("range", "Address Range"),
    ("platform", "Platform"),
    ("dependencies", "Dependencies"),
)
HISTORY_LABELS = {
    "powered_by": "How it is powered",
    "mounted_on": "What it is mounted on",
    "peripherals": "Peripherals connected",
    "firmware_notes": "Firmware (user app, Device OS) and how it got there",
}

# Particle's damaged-hardware checks, in the order a technician works through them. Phrasing is ours; it is
# kept clear of the words the secret redactor keys on, so the checklist itself is never redacted.
_CHECKLIST_COMMON = (
    "Take the board off any shield, carrier, feather or mount; unplug every cable and the battery.",
    "Tap RESET once (a sleeping board wakes); if it comes up, try safe mode next.",
    "Try another USB cable and a known-good supply; on battery, try USB power instead.",
    "Measure the EN pin: it must read 3.3 V, not be pulled to GND.",
    "Measure the 3V3 pin: it must read 3.3 V.",
)
_CHECKLIST_POWER_PINS = {
    2: "Continuity from 3V3, VIN and VBAT to GND: none may be shorted.",
    3: "Continuity from 3V3, Li+ and VUSB to GND: none may be shorted.",
}
_CHECKLIST_TAIL = (
    "If it fails only in its circuit: no GPIO may be shorted to GND while driven high.",
    "Warm on battery: Feather-type connector, right polarity, a spare battery; a LiPo reads 3.4 to 4.2 V.",
    "Warm on USB or VIN: look for a short from VUSB to GND.",
    "Back-powering: I2C or GPIO pull-ups tied to an outside rail can keep it half alive; tie them to its 3V3.",
    "Do not unclaim it from the Particle console: support needs it there.",
    "If all of the above fail, the board is likely damaged: request a replacement with this report attached.",
)


def checklist(platform: str | None) -> list[str]:
    """The damaged-hardware checks for ``platform`` (a platform name; both pin lists when unknown).

    >>> any("Li+" in line for line in checklist("boron")), any("VBAT" in line for line in checklist("boron"))
    (True, False)
    """
    generation = _generation(platform)
    pins = [_CHECKLIST_POWER_PINS[generation]] if generation in _CHECKLIST_POWER_PINS else []
    if not pins:
        pins = [f"{text} (Gen {gen})" for gen, text in sorted(_CHECKLIST_POWER_PINS.items())]
    return [*_CHECKLIST_COMMON, *pins, *_CHECKLIST_TAIL]


def _generation(platform: str | None) -> int | None:
    if not platform:
        return None
    try:
        generation = platform_by_name(platform).generation
    except UnknownPlatformError:
        return None
    # Gen4 (P2, M-SoM) has Gen3's power pins (3V3, Li+, VUSB) where it has a battery at all.
    return 3 if generation is not None and generation >= 3 else generation


# --- building -----------------------------------------------------------------------------------------------


def build_report(journal: Journal, run_id: int) -> dict[str, Any]:
    """The support-ticket bundle of run ``run_id`` as a JSON-ready dict (secrets redacted)."""
    run = journal.run(run_id)
    rung_of = {s["id"]: s["rung"] for s in run["steps"]}
    history = journal.device_history(run["device_id"]) if run["device_id"] else None
    elapsed, minimum = run.get("elapsed_s"), run.get("minimum_s")
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "run": {
            "id": run["id"],
            "slot": run["slot"],
            "status": run["status"],
            "scenario": run.get("scenario"),
            "kind": run.get("kind") or "recovery",
            "started_at": run["started_at"],
            "ended_at": run["ended_at"],
        },
        "device": {"device_id": run["device_id"], "platform": run["platform"]},
        "led": _led_seen(run["observations"], rung_of),
        "steps": [_step(s) for s in run["steps"]],
        "device_history": _history(history),
        "inspections": _inspections(run["observations"], rung_of),
        "verdict": {
            "verdict": run["verdict"],
            "rung_that_fixed": run["rung_that_fixed"],
            "detail": run["detail"],
            "what_to_do": instruction(run["verdict"], run.get("action") or "", bool(run.get("again")),
                                      run.get("usb_errors") or 0, AGAIN_REPORT) if run["verdict"] else None,
            "usb_errors": run.get("usb_errors") or 0,
            "elapsed_s": elapsed,
            "minimum_s": minimum,
            "ratio": round(elapsed / minimum, 3) if elapsed is not None and minimum else None,
        },
        "checklist": checklist(run["platform"]) if run["verdict"] == DAMAGED else [],
        "backups": _backups(journal, run_id, run["observations"], rung_of),
    }
    return redacted(report)


def _backups(journal: Journal, run_id: int, observations: list[dict[str, Any]],
             rung_of: dict[int, str]) -> list[dict[str, Any]]:  # fmt: skip
    """The customer's app kept before the run wrote over it (kiosk.backup), and each time there was none."""
    kept = [{"kept": True, **{k: b.get(k) for k in BACKUP_FIELDS}} for b in reversed(journal.backups(run_id))]
    missing = [
        {"kept": False, "detail": o["data"].get("detail"), "rung": rung_of.get(o["step_id"]), "at": o["at"]}
        for o in observations
        if o["kind"] == "backup" and isinstance(o["data"], dict) and o["data"].get("kept") is False
    ]
    return kept + missing


def _led_seen(observations: list[dict[str, Any]], rung_of: dict[int, str]) -> list[dict[str, Any]]:
    # Each change of what the LED showed, in order; a reading repeated while nothing changed adds nothing.
    seen: list[dict[str, Any]] = []
    for obs in observations:
        data = obs["data"]
        if obs["kind"] != "led" or not isinstance(data, dict):
            continue
        entry = {
            "at": obs["at"],
            "rung": rung_of.get(obs["step_id"]),
            "colour": data.get("colour"),
            "pattern": data.get("pattern"),
            "sos_code": data.get("sos_code"),
            "sos_name": data.get("sos_name"),
            "sos_meaning": data.get("sos_meaning"),
            "meaning": data.get("meaning"),
            "description": data.get("description") or _describe_led(data),
        }
        if seen and seen[-1]["description"] == entry["description"]:
            continue
        seen.append(entry)
    return seen


def _describe_led(data: dict[str, Any]) -> str:
    if data.get("pattern") == "sos" and data.get("sos_code") is not None:
        return f"red SOS, code {data['sos_code']} ({data.get('sos_name')}): {data.get('sos_meaning')}"
    return " ".join(str(part) for part in (data.get("pattern"), data.get("colour")) if part) or "unknown"


def _step(step: dict[str, Any]) -> dict[str, Any]:
    start, end = step.get("started_device_s"), step.get("ended_device_s")
    return {
        "seq": step["seq"],
        "rung": step["rung"],
        "action": step["action"],
        "outcome": step["outcome"] or "running",
        "detail": step["detail"],
        "started_at": step["started_at"],
        "ended_at": step["ended_at"],
        "duration_s": _duration(start, end, step["figures"]),
        "figures": step["figures"],
    }


def _duration(start: float | None, end: float | None, figures: Any) -> float | None:
    # Device seconds from the step's own clock readings, else the figure the ladder measured itself.
    if start is not None and end is not None:
        return round(end - start, 3)
    elapsed = figures.get("elapsed_s") if isinstance(figures, dict) else None
    return round(elapsed, 3) if isinstance(elapsed, int | float) and not isinstance(elapsed, bool) else None


def _history(history: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    missing = []
    for name in HISTORY_FIELDS:
        value = (history or {}).get(name)
        if value is None or not str(value).strip():
            missing.append(name)
            value = NOT_GIVEN
        out[name] = value
    out["not_given"] = missing
    out["updated_at"] = history["updated_at"] if history else None
    return out


def _inspections(observations: list[dict[str, Any]], rung_of: dict[int, str]) -> list[dict[str, Any]]:
    out = []
    for obs in observations:
        if obs["kind"] != "modules":
            continue
        data = obs["data"]
        # The ladder stores a list of InspectedModule.to_json(); a dict with "modules" (and "source") also reads.
        modules = data.get("modules") if isinstance(data, dict) else data
        if not isinstance(modules, list):
            continue
        modules = [m for m in modules if isinstance(m, dict)]
        out.append(
            {
                "at": obs["at"],
                "rung": rung_of.get(obs["step_id"]),
                "source": data.get("source") if isinstance(data, dict) else None,
                "modules": modules,
                "failed": sum(1 for m in modules if m.get("ok") is False),
            }
        )
    return out


# --- rendering ----------------------------------------------------------------------------------------------


def render_json(report: dict[str, Any]) -> str:
    """The report as one JSON document (redacted again; always valid JSON)."""
    return json.dumps(redacted(report), indent=2, allow_nan=False) + "\n"


def render_markdown(report: dict[str, Any]) -> str:
    """The report for people: headings, a steps table, the module tables and, for damaged hardware, the
    checklist."""
    r = redacted(report)
    run, device, verdict = r.get("run", {}), r.get("device", {}), r.get("verdict", {})
    lines = [
        f"# Particle device report: {_cell(device.get('device_id') or 'device id not found')}",
        "",
        f"- Device ID: {_inline(device.get('device_id') or 'not found')}",
        f"- Platform: {_inline(device.get('platform') or 'not known')}",
        f"- Run {run.get('id')} on slot {run.get('slot')} ({run.get('kind') or 'recovery'}): {run.get('status')}, "
        f"started {run.get('started_at')}, ended {run.get('ended_at') or '(not ended)'}",
    ]
    if run.get("scenario"):
        lines.append(f"- Simulated scenario: {_inline(run['scenario'])}")

    lines += ["", "## Verdict", "", f"**{_inline(verdict.get('verdict') or 'none')}**"]
    if verdict.get("rung_that_fixed"):
        lines.append(f"- Fixed by: {_inline(verdict['rung_that_fixed'])}")
    if verdict.get("detail"):
        lines.append(f"- Detail: {_inline(verdict['detail'])}")
    if verdict.get("what_to_do"):
        lines.append(f"- What to do: {_inline(verdict['what_to_do'])}")
    if verdict.get("usb_errors"):
        lines.append(f"- USB cable: {_inline(cable_words(verdict['usb_errors']))} on the wire and were retried "
                     "(I/O errors, not stalls or timeouts: a sound cable and hub give none)")  # fmt: skip
    if verdict.get("elapsed_s") is not None:
        timing = f"- Time on the device clock: {verdict['elapsed_s']:.1f} s"
        if verdict.get("minimum_s"):
            timing += f" (the device's own minimum for this path: {verdict['minimum_s']:.1f} s"
            timing += f", ratio {verdict['ratio']:.2f})" if verdict.get("ratio") is not None else ")"
        lines.append(timing)

    lines += ["", "## LED status seen", ""]
    led = r.get("led") or []
    lines += [f"{i}. {_inline(e.get('description'))}" + _rung_note(e) for i, e in enumerate(led, 1)] or [
        "No LED reading was taken."
    ]

    lines += ["", "## Troubleshooting steps, in order", ""]
    steps = r.get("steps") or []
    if steps:
        lines += ["| # | Rung | Action | Result | Time (s) | Detail |", "|---|---|---|---|---|---|"]
        for s in steps:
            duration = "" if s.get("duration_s") is None else f"{s['duration_s']:.1f}"
            cells = [s.get("seq"), s.get("rung"), s.get("action"), s.get("outcome"), duration, s.get("detail")]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    else:
        lines.append("No steps were taken.")

    lines += ["", "## Device history", ""]
    history = r.get("device_history", {})
    for name in HISTORY_FIELDS:
        lines.append(f"- {HISTORY_LABELS[name]}: {_inline(history.get(name, NOT_GIVEN))}")
    if history.get("not_given"):
        lines.append(f"- Not given yet: {', '.join(history['not_given'])} (ask the owner before filing)")

    lines += ["", "## Module inspection", ""]
    inspections = r.get("inspections") or []
    if not inspections:
        lines.append("No module inspection was possible.")
    for number, inspection in enumerate(inspections, 1):
        if len(inspections) > 1:
            lines += [f"### Inspection {number}" + _rung_note(inspection), ""]
        lines += _module_table(inspection.get("modules") or [])
        failed = inspection.get("failed") or 0
        lines += ["", "All modules PASS" if not failed else f"{failed} module(s) FAIL", ""]

    backups = r.get("backups") or []
    if backups:
        lines += ["", "## Backup of the app", ""]
    for b in backups:
        if b.get("kept"):
            lines.append(f"- Kept before it was written over: user part {_inline(b.get('index'))} "
                         f"v{_inline(b.get('version'))}, {_inline(b.get('size'))} bytes, in {_inline(b.get('file'))}, "
                         f"SHA-256 {_inline(b.get('sha256'))} (`kiosk backup restore {run.get('id')}` puts it back)")
        else:
            lines.append(f"- {_inline(b.get('detail'))}" + _rung_note(b))

    if r.get("checklist"):
        lines += ["", "## Damaged-hardware checklist", ""]
        lines += [f"- [ ] {_inline(item)}" for item in r["checklist"]]

    return "\n".join(lines).rstrip() + "\n"


def _module_table(modules: list[dict[str, Any]]) -> list[str]:
    header = "| Module | # | Version | Size | " + " | ".join(label for _, label in CHECK_COLUMNS) + " | Needs |"
    lines = [header, "|" + "---|" * (len(CHECK_COLUMNS) + 5)]
    for m in modules:
        checks = m.get("checks") or {}
        needs = ", ".join(
            f"{d.get('function')} #{d.get('index')} v{d.get('version')}"
            for d in m.get("dependencies") or []
            if isinstance(d, dict)
        )
        cells = [
            m.get("function"),
            m.get("index"),
            m.get("version"),
            m.get("size"),
            *(checks.get(key) or "not reported" for key, _ in CHECK_COLUMNS),
            needs or "-",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _rung_note(entry: dict[str, Any]) -> str:
    return f" (during {_inline(entry['rung'])})" if entry.get("rung") else ""


def _inline(value: Any) -> str:
    # One line per item: a newline inside a value would start a new Markdown block.
    return " ".join(str(value).split()) if value is not None else ""


def _cell(value: Any) -> str:
    # A pipe inside a cell would split it into two columns.
    return _inline(value).replace("|", "\\|")
