"""History: the journal's runs, newest first, filtered by device id (typed, or from a barcode scanner)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual import work
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Static

from kiosk.tui.screens.base import KioskScreen
from kiosk.tui.state import VERDICTS
from kiosk.tui.widgets.touch_button import TouchButton

COLUMNS = ("Run", "Slot", "Device", "Platform", "Status", "Verdict", "Fixed by", "Started (UTC)")


def run_row(run: dict[str, Any]) -> tuple[str, ...]:
    """One journal run as table cells; the verdict with its symbol, so it reads without colour."""
    verdict = run.get("verdict")
    words = VERDICTS.get(verdict) if verdict else None
    shown = f"{words.symbol} {verdict}" if words else (verdict or "–")
    device = run.get("device_id") or "?"
    short = device if len(device) <= 12 else f"{device[:6]}…{device[-4:]}"
    started = (run.get("started_at") or "")[:16].replace("T", " ")
    return (str(run["id"]), str(run["slot"]), short, run.get("platform") or "?", run.get("status") or "",
            shown, run.get("rung_that_fixed") or "–", started)  # fmt: skip


class HistoryScreen(KioskScreen):
    """The runs in a table; tap one (or select it and tap Report) for its support-ticket report."""

    TITLE_TEXT = "HISTORY · every recovery on this kiosk · tap a run for its report"

    def __init__(self, device_id: str | None = None) -> None:
        super().__init__()
        self.device_id = device_id

    def body(self) -> Iterable:
        with Vertical(classes="body"):
            with Horizontal(classes="row"):
                yield Input(value=self.device_id or "", placeholder="device id (type or scan)", id="device-filter")
                yield TouchButton("All", id="all")
            yield Static("", id="history-message", classes="note")
            yield DataTable(id="runs", zebra_stripes=True, cursor_type="row")

    def buttons(self) -> Iterable[Button]:
        yield TouchButton("Filter", id="filter")
        yield TouchButton("Report", id="open-report", variant="primary")

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self._load(self.device_id)

    @work(thread=True, exclusive=True, group="history")
    def _load(self, device_id: str | None) -> None:
        journal = self.app.backend.journal
        if journal is None:
            self.app.call_from_thread(self.say, "history-message", "This kiosk keeps no journal.", "problem")
            return
        runs = journal.runs(device_id=device_id, limit=200)
        self.app.call_from_thread(self._show, device_id, runs)

    def _show(self, device_id: str | None, runs: list[dict[str, Any]]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for run in runs:
            table.add_row(*run_row(run), key=str(run["id"]))
        whose = f" of device {device_id}" if device_id else ""
        if runs:
            self.say("history-message", f"{len(runs)} run(s){whose}, newest first.", "note")
        else:
            self.say("history-message", f"No runs recorded{whose}.", "problem" if device_id else "note")

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.pressed_filter()

    def pressed_filter(self) -> None:
        text = self.query_one("#device-filter", Input).value.strip().lower()
        if text and (len(text) != 24 or any(c not in "0123456789abcdef" for c in text)):
            self.say("history-message", f"'{text}' is not a device id: 24 hex digits, as on the label.", "problem")
            return
        self.device_id = text or None
        self._load(self.device_id)

    def pressed_all(self) -> None:
        self.query_one("#device-filter", Input).value = ""
        self.device_id = None
        self._load(None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self._open(event.row_key.value)

    def pressed_open_report(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            self.say("history-message", "No run to report on.", "problem")
            return
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        self._open(row_key.value)

    def _open(self, run_id: str | None) -> None:
        if run_id is None:
            return
        from kiosk.tui.screens.report import ReportScreen

        self.app.push_screen(ReportScreen(int(run_id)))
