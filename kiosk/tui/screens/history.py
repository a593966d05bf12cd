"""History: the journal's runs, newest first, filtered by device id (typed, scanned, or part of one as read
off a card).

Laid out for 80x24 and a finger: the filter field and its All button share a row, and the table's columns
are made to fit its width (the card's short device id ``e00fce…0011``, dates without the year when every
run shown is from one year, and the run number left to the report) rather than run off the screen. One tap
on a run opens its report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from textual import work
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Static

from kiosk.service.slots import VERDICTS
from kiosk.tui.screens.base import KioskScreen
from kiosk.tui.screens.library import CELL_PADDING, TouchTable, column_budget
from kiosk.tui.widgets.touch_button import TouchButton

DEVICE_ID_LENGTH = 24
HEX = frozenset("0123456789abcdef")
SHOWN = 200  # runs in the table at most
SCANNED = 5000  # the newest runs a partial id is looked for in
#: What a run's status says when it has no verdict (a run cut off by a restart, or one still going).
STATUS_WORDS = {"running": "▶ running", "interrupted": "? interrupted", "stopped": "■ stopped"}
NOT_AN_ID = ("'{text}' is not a device id nor part of one: a device id is 24 hex digits (0-9, a-f) as on its "
             "label; type it all, or a part as the card shows it (e00fce, or e00fce…0011).")  # fmt: skip


@dataclass(frozen=True)
class DeviceFilter:
    """Which runs to show: ``exact`` a whole device id; else ids that contain ``part``, or (read off a card as
    ``head…tail``) that start with ``head`` and end with ``tail``. All runs when all are empty."""

    exact: str | None = None
    part: str = ""
    head: str = ""
    tail: str = ""

    @property
    def everything(self) -> bool:
        return not (self.exact or self.part or self.head or self.tail)

    @property
    def words(self) -> str:
        return self.exact or self.part or f"{self.head}…{self.tail}"

    def matches(self, device_id: str | None) -> bool:
        if self.everything:
            return True
        if not device_id:
            return False
        device_id = device_id.lower()
        if self.exact:
            return device_id == self.exact
        if self.part:
            return self.part in device_id
        return device_id.startswith(self.head) and device_id.endswith(self.tail)


def parse_filter(text: str) -> DeviceFilter:
    """The filter a technician typed (or a scanner did); ValueError saying what an id looks like.

    >>> parse_filter("ADFF26"), parse_filter("adff26…809e").words, parse_filter("").everything
    (DeviceFilter(exact=None, part='adff26', head='', tail=''), 'adff26…809e', True)
    >>> parse_filter("e00fce68aabbccddeeff0011").exact
    'e00fce68aabbccddeeff0011'
    """
    typed = re.sub(r"\s+", "", text).lower()
    if not typed:
        return DeviceFilter()
    pieces = re.split(r"…|\.{2,}", typed)
    if len(pieces) == 2 and all(set(p) <= HEX for p in pieces) and any(pieces):
        head, tail = pieces
        if len(head) + len(tail) <= DEVICE_ID_LENGTH:
            return DeviceFilter(head=head, tail=tail)
    if len(pieces) == 1 and set(typed) <= HEX:
        if len(typed) == DEVICE_ID_LENGTH:
            return DeviceFilter(exact=typed)
        if len(typed) < DEVICE_ID_LENGTH:
            return DeviceFilter(part=typed)
        raise ValueError(f"'{text.strip()}' is {len(typed)} hex digits, too long for a device id: it has 24.")
    raise ValueError(NOT_AN_ID.format(text=text.strip()))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def short_id(device: str) -> str:
    """A device id as the card shows it: ``e00fce…0011``."""
    return device if len(device) <= 12 else f"{device[:6]}…{device[-4:]}"


def run_row(run: dict[str, Any], *, short_device: bool = True, short_date: bool = False,
            with_run: bool = False) -> tuple[str, ...]:  # fmt: skip
    """One journal run as table cells; the verdict with its symbol, so it reads without colour (a run without
    one says its status)."""
    verdict, status = run.get("verdict"), run.get("status") or ""
    words = VERDICTS.get(verdict) if verdict else None
    result = verdict or STATUS_WORDS.get(status, status or "–")
    if words:
        result = f"{words.symbol} {verdict}"
    device = run.get("device_id") or "?"
    started = (run.get("started_at") or "")[:16].replace("T", " ")
    cells = (started[5:] if short_date else started, str(run["slot"]), short_id(device) if short_device else device,
             run.get("platform") or "?", result, run.get("rung_that_fixed") or "–")  # fmt: skip
    return (*cells, str(run["id"])) if with_run else cells


def headers(*, short_date: bool, with_run: bool) -> tuple[str, ...]:
    out = ("Started" if short_date else "Started (UTC)", "Slot", "Device", "Platform", "Result", "Fixed by")
    return (*out, "Run") if with_run else out


def table_width(head: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """The cells a table of these columns takes, padding included."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    return sum(widths) + 2 * CELL_PADDING * len(widths)


def fitted(runs: Sequence[dict[str, Any]], budget: int) -> tuple[tuple[str, ...], list[tuple[str, ...]], bool]:
    """Headers and rows in the roomiest form that fits ``budget`` cells: whole ids and dates and the run
    number first, then the card's short id, then dates without the year (only when every run is from one
    year), then without the run number. The last form when none fits (the table scrolls sideways).
    Also whether the dates lost their year."""
    one_year = len({(r.get("started_at") or "")[:4] for r in runs}) <= 1
    forms = [(False, False, True), (True, False, True)]
    forms += [(True, True, True), (True, True, False)] if one_year else [(True, False, False)]
    for n, (short_device, short_date, with_run) in enumerate(forms):
        head = headers(short_date=short_date, with_run=with_run)
        rows = [run_row(r, short_device=short_device, short_date=short_date, with_run=with_run) for r in runs]
        if table_width(head, rows) <= budget or n == len(forms) - 1:
            return head, rows, short_date
    raise AssertionError("unreachable")


class HistoryScreen(KioskScreen):
    """The runs in a table; tap one (or select it and tap Report) for its support-ticket report."""

    TITLE_TEXT = "HISTORY · every recovery on this kiosk · tap a run for its report"

    def __init__(self, device_id: str | None = None) -> None:
        super().__init__()
        self.device_id = device_id
        self._shown: tuple[DeviceFilter, list[dict[str, Any]], bool] | None = None
        self._shown_width = 0

    def body(self) -> Iterable:
        with Vertical(classes="body"):
            with Horizontal(classes="row"):
                yield Input(value=self.device_id or "", placeholder="device id, or part of one", id="device-filter")
                yield TouchButton("All", id="all")
            yield Static("", id="history-message", classes="note")
            yield TouchTable(id="runs", zebra_stripes=True, cursor_type="row", cell_padding=CELL_PADDING)

    def buttons(self) -> Iterable[Button]:
        yield TouchButton("Filter", id="filter")
        yield TouchButton("Report", id="open-report", variant="primary")

    def on_mount(self) -> None:
        try:
            wanted = parse_filter(self.device_id or "")
        except ValueError as exc:
            self.say("history-message", str(exc), "problem")
            wanted = DeviceFilter()
        self._load(wanted)

    def on_resize(self) -> None:
        self.call_after_refresh(self._fill_table)

    @work(thread=True, exclusive=True, group="history")
    def _load(self, wanted: DeviceFilter) -> None:
        from kiosk.tui.link import ServiceError, ServiceUnavailable

        # the service looks through the newest runs for a part of an id (the journal looks up whole ids only)
        params = {"device_id": wanted.exact, "part": wanted.part or None, "head": wanted.head or None,
                  "tail": wanted.tail or None, "limit": SHOWN}  # fmt: skip
        try:
            found = self.app.link.call("history.runs", {k: v for k, v in params.items() if v is not None})
        except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
            self.app.call_from_thread(self.say, "history-message", f"The history could not be read: {exc}",
                                      "problem")  # fmt: skip
            return
        self.app.call_from_thread(self._show, wanted, found["runs"][:SHOWN], bool(found.get("capped")))

    def _show(self, wanted: DeviceFilter, runs: list[dict[str, Any]], capped: bool = False) -> None:
        self._shown = (wanted, runs, capped)
        self._fill_table(force=True)

    def _fill_table(self, force: bool = False) -> None:
        if self._shown is None:
            return
        table = self.query_one("#runs", DataTable)
        wanted, runs, capped = self._shown
        budget = column_budget(table, len(runs), self.app.size.width - 2)
        if not force and budget == self._shown_width:
            return
        self._shown_width = budget
        head, rows, short_date = fitted(runs, budget)
        table.clear(columns=True)
        table.add_columns(*head)
        for run, row in zip(runs, rows, strict=True):
            table.add_row(*row, key=str(run["id"]))
        self._say_what(wanted, runs, capped, short_date)

    def _say_what(self, wanted: DeviceFilter, runs: list[dict[str, Any]], capped: bool, short_date: bool) -> None:
        if wanted.everything:
            whose = ""
        elif wanted.exact:
            whose = f" of device {wanted.exact}"
        else:
            devices = sorted({r["device_id"] for r in runs if r.get("device_id")})
            whose = (f" of device {devices[0]} (matching {wanted.words})" if len(devices) == 1
                     else f" of {len(devices)} devices matching {wanted.words}")  # fmt: skip
        if not runs:
            if wanted.everything:
                self.say("history-message", "No runs recorded yet.", "note")
                return
            looked = f" among the newest {SCANNED}" if capped else ""
            self.say("history-message", f"No runs of a device matching {wanted.words}{looked}: check the id on "
                     "the card, or tap All.", "problem")  # fmt: skip
            return
        more = f" (the newest {SHOWN})" if len(runs) >= SHOWN else ""
        when = f"; all in {runs[0]['started_at'][:4]} (times UTC)" if short_date and runs[0].get("started_at") else ""
        self.say("history-message", f"{plural(len(runs), 'run')}{whose}{more}, newest first{when}.", "note")

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.pressed_filter()

    def pressed_filter(self) -> None:
        text = self.query_one("#device-filter", Input).value
        try:
            wanted = parse_filter(text)
        except ValueError as exc:
            self.say("history-message", str(exc), "problem")
            return
        self.device_id = wanted.exact
        self._load(wanted)

    def pressed_all(self) -> None:
        self.query_one("#device-filter", Input).value = ""
        self.device_id = None
        self._load(DeviceFilter())

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
