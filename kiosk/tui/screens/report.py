"""The report of one run: the device-history form, a preview of the bundle, saving it to a USB stick or a
file, and a QR code of its summary for a phone where the screen has room. Secrets are redacted by
``kiosk.report`` before anything is shown or saved."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Markdown, Static, TabbedContent, TabPane

from kiosk.journal import HISTORY_FIELDS  # the questions (constants; the journal itself is the service's)
from kiosk.report import HISTORY_LABELS
from kiosk.tui.link import ServiceError, ServiceUnavailable
from kiosk.tui.media import removable_media
from kiosk.tui.screens.base import KioskScreen
from kiosk.tui.widgets.qr import QrCode
from kiosk.tui.widgets.touch_button import TouchButton

#: Placeholders that show the technician what kind of answer the support team wants.
HISTORY_HINTS = {
    "powered_by": "USB from a PC, LiPo, VIN 5 V supply…",
    "mounted_on": "breadboard, Particle carrier, product PCB…",
    "peripherals": "sensors, displays, relays…",
    "firmware_notes": "app name/version, Device OS, flashed over USB/OTA…",
}


def qr_texts(report: dict[str, Any]) -> list[str]:
    """What the QR code can carry, longest first: a summary, a line, and the id and verdict alone."""
    run, device, verdict = report["run"], report["device"], report["verdict"]
    device_id = device.get("device_id") or "unknown"
    what = verdict.get("verdict") or run.get("status") or "no verdict"
    fixed = f" by {verdict['rung_that_fixed']}" if verdict.get("rung_that_fixed") else ""
    led = "; ".join(e.get("description") or "" for e in report.get("led", [])[:2])
    steps = "; ".join(f"{s.get('rung')} {s.get('outcome')}" for s in report.get("steps", []))
    summary = "\n".join(x for x in (
        f"Particle kiosk report, run {run['id']} (slot {run['slot']})",
        f"Device {device_id} ({device.get('platform') or 'platform unknown'})",
        f"Verdict: {what}{fixed}. {verdict.get('detail') or ''}".strip(),
        f"LED: {led}" if led else "",
        f"Steps: {steps}" if steps else "",
    ) if x)  # fmt: skip
    return [summary, f"run {run['id']} {device_id} {what}{fixed}", f"{device_id} {what}".upper()]


def report_name(report: dict[str, Any], extension: str) -> str:
    device = report["device"].get("device_id") or "unknown-device"
    return f"particle-report-run{report['run']['id']}-{device}.{extension}"


class ReportScreen(KioskScreen):
    """Form, Preview and QR tabs; Save answers, To USB stick, To file along the bottom."""

    TITLE_TEXT = "REPORT · the support-ticket bundle of one run"

    def __init__(self, run_id: int | None, *, slot: int | None = None, device_id: str | None = None) -> None:
        """``run_id``; or None: the latest run of ``slot`` (of ``device_id`` when given: the device now in it)."""
        super().__init__()
        self.run_id = run_id
        self.slot = slot
        self.device_id = device_id
        self.report: dict[str, Any] | None = None
        self.rendered: dict[str, str] = {}  # the service renders the report: "markdown" and "json"

    def body(self) -> Iterable:
        with Vertical(classes="body"):
            yield Static("", id="report-message", classes="note")
            with TabbedContent(id="report-tabs"):
                with TabPane("Device history", id="tab-form"), VerticalScroll():
                    for name in HISTORY_FIELDS:
                        yield Label(HISTORY_LABELS[name], classes="section")
                        yield Input(placeholder=HISTORY_HINTS[name], id=f"history-{name}")
                with TabPane("Preview", id="tab-preview"), VerticalScroll():
                    yield Markdown("", id="preview")
                with TabPane("QR code", id="tab-qr"):
                    yield QrCode([], id="qr")

    def buttons(self) -> Iterable[Button]:
        yield TouchButton("Save answers", id="save-answers", variant="primary")
        yield TouchButton("To USB stick", id="to-stick")
        yield TouchButton("To file", id="to-file")

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="report")
    def _load(self) -> None:
        link = self.app.link
        run_id = self.run_id
        try:
            if run_id is None:
                # the device now in the slot first; else whatever this slot last recovered (the header names it)
                if self.device_id:
                    run_id = link.call("history.latest", {"slot": self.slot, "device_id": self.device_id})["run_id"]
                if run_id is None:
                    run_id = link.call("history.latest", {"slot": self.slot} if self.slot else {})["run_id"]
                if run_id is None:
                    whose = f"slot {self.slot}" if self.slot is not None else "this kiosk"
                    words = f"No run recorded for {whose} yet: press RECOVER on it, then come back."
                    self.app.call_from_thread(self.say, "report-message", words, "problem")
                    return
            answer = link.call("report", {"run_id": run_id})
        except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
            self.app.call_from_thread(self.say, "report-message", f"No report for run {run_id}: {exc}", "problem")
            return
        self.app.call_from_thread(self._show, run_id, answer)

    def _show(self, run_id: int, answer: dict[str, Any]) -> None:
        report, history = answer["report"], answer.get("history") or {}
        self.rendered = {"markdown": answer["markdown"], "json": answer["json"]}
        self.run_id, self.report = run_id, report
        device = report["device"].get("device_id") or "device id not found"
        verdict = report["verdict"].get("verdict") or report["run"].get("status")
        earlier = self.device_id and report["device"].get("device_id") not in (None, self.device_id)
        other = " (a device that was in this slot before)" if earlier else ""
        self.say("report-message", f"Run {run_id} · slot {report['run']['slot']} · {device}{other} · {verdict}",
                 "note")  # fmt: skip
        for name in HISTORY_FIELDS:
            self.query_one(f"#history-{name}", Input).value = history.get(name) or ""
        self.query_one("#preview", Markdown).update(self.rendered["markdown"])
        self.query_one(QrCode).texts = qr_texts(report)
        self.call_after_refresh(self._fit_qr)

    def on_tabbed_content_tab_activated(self, _event: TabbedContent.TabActivated) -> None:
        self.call_after_refresh(self._fit_qr)

    def on_resize(self, _event) -> None:
        self.call_after_refresh(self._fit_qr)

    def _fit_qr(self) -> None:
        qr = self.query_one(QrCode)
        if not qr.texts:
            return
        pane = self.query_one("#report-tabs", TabbedContent)
        width, height = pane.size.width - 2, pane.size.height - 3  # less the tabs row and its underline
        qr.show_in(width, height)

    # -- the buttons ----------------------------------------------------------------------------------
    def pressed_save_answers(self) -> None:
        if self.report is None:
            self.say("report-message", "No report is loaded yet.", "problem")
            return
        device_id = self.report["device"].get("device_id")
        if not device_id:
            self.say("report-message", "The device id was never read, so the answers cannot be kept with it.",
                     "problem")  # fmt: skip
            return
        answers = {name: self.query_one(f"#history-{name}", Input).value.strip() or None for name in HISTORY_FIELDS}
        self._save_answers(device_id, answers)

    @work(thread=True, exclusive=True, group="report-save")
    def _save_answers(self, device_id: str, answers: dict[str, str | None]) -> None:
        try:
            self.app.link.call("device.history.set", {"device_id": device_id, "answers": answers})
        except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
            self.app.call_from_thread(self.say, "report-message", f"Not saved: {exc}", "problem")
            return
        self.app.call_from_thread(self.say, "report-message", "Answers saved with the device's history.", "good")
        self._load()

    def _text(self) -> tuple[str, str]:
        fmt = self.app.settings.report_format
        return (self.rendered["json"], "json") if fmt == "json" else (self.rendered["markdown"], "md")

    def pressed_to_stick(self) -> None:
        if self.report is None:
            self.say("report-message", "No report is loaded yet.", "problem")
            return
        sticks = removable_media(self.app.media_roots)
        if not sticks:
            self.say("report-message", "No USB stick found: plug one in, wait a moment, then tap again.", "problem")
            return
        self._write(sticks[0])

    def pressed_to_file(self) -> None:
        if self.report is None:
            self.say("report-message", "No report is loaded yet.", "problem")
            return
        self._write(self.app.settings.reports_to)

    def _write(self, folder: Path) -> None:
        text, extension = self._text()
        target = folder / report_name(self.report, extension)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        except OSError as exc:
            self.say("report-message", f"Could not write {target}: {exc.strerror or exc}. Check the stick or the "
                     "report folder in Settings.", "problem")  # fmt: skip
            return
        self.say("report-message", f"Saved: {target}", "good")
