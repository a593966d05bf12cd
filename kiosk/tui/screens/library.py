"""The firmware library: what it holds, what was quarantined and why, and importing a release from a stick.

Laid out for 80x24 and a finger: the table takes the room the quarantine list leaves, its columns are cut to
the table's width (long names lose their middle, the SHA-256 shows its first 8 digits) so every column is on
screen, and a tap on a row shows that file in full. The quarantined files and their reasons are in a list
of their own that scrolls (wheel, or drag its wide scrollbar).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events, work
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.coordinate import Coordinate
from textual.widgets import Button, DataTable, Input, Static

from firmware.library import ImportReport, LibraryEntry, Quarantined
from kiosk.tui.link import ServiceError, ServiceUnavailable
from kiosk.tui.media import removable_media
from kiosk.tui.screens.base import KioskScreen
from kiosk.tui.widgets.touch_button import TouchButton

COLUMNS = ("Platform", "Release", "Part", "Version", "SHA-256")
SHA_SHOWN = 8  # digits of the SHA-256 in the table (a tap on the row shows all 64)
#: How narrow a column may be cut (its header fits): Release and Part give way first, then Platform.
SHRINKABLE = {1: len("Release"), 2: 8, 0: len("Platform")}
CELL_PADDING = 1  # DataTable's, on each side of a cell
SCROLLBAR = 2  # room kept for the table's vertical scrollbar


def ellipsize(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, its middle replaced by ``…`` (both ends say the most).

    >>> ellipsize("prebootloader-part1", 12), ellipsize("boron", 12)
    ('preboo…part1', 'boron')
    """
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + "…" + (text[-tail:] if tail else "")


def files(n: int) -> str:
    return "1 file" if n == 1 else f"{n} files"


def fit_widths(widths: Sequence[int], shrinkable: dict[int, int], budget: int) -> list[int]:
    """Column widths (text cells, without padding) that fit ``budget`` cells with the padding: the widest
    shrinkable column gives a cell at a time, down to its minimum. May still exceed the budget.

    >>> fit_widths([5, 6, 30, 19, 8], {1: 7, 2: 8, 0: 8}, 76)
    [5, 6, 28, 19, 8]
    """
    out = list(widths)
    padding = 2 * CELL_PADDING * len(out)
    while sum(out) + padding > budget:
        room = [(out[i] - low, out[i], i) for i, low in shrinkable.items() if out[i] > low]
        if not room:
            break
        _, _, widest = max(room, key=lambda r: (r[1], r[0]))
        out[widest] -= 1
    return out


def column_budget(table: DataTable, rows: int, fallback: int) -> int:
    """The cells a table's columns may take: its width, less its vertical scrollbar when the rows will not fit
    (``fallback`` is the width before the table is laid out)."""
    width, height = table.size
    if not width:
        return max(fallback, 20) - SCROLLBAR
    return width - (SCROLLBAR if rows > height - 1 else 0)  # the header takes a row


class TouchTable(DataTable):
    """A DataTable where one tap on a row selects it (``RowSelected``), as a finger expects; Textual's own
    selects only a row that was already highlighted, so a first tap would seem to do nothing."""

    def _on_click(self, event: events.Click) -> None:
        # Textual calls every class's handler, this one first: DataTable's own then sees a click on the row
        # under the cursor, and selects it.
        meta = event.style.meta
        row, column = meta.get("row"), meta.get("column")
        if isinstance(row, int) and isinstance(column, int) and 0 <= row < self.row_count:
            self.cursor_coordinate = Coordinate(row, max(column, 0))


def entry_from_json(data: dict[str, Any]) -> LibraryEntry:
    """A library file as the service's library.list sends it (the library itself lives in the service)."""
    values = {k: v for k, v in data.items() if k in _ENTRY_FIELDS}
    values["dependencies"] = tuple(tuple(d) for d in values.get("dependencies", ()))
    return LibraryEntry(**values)


def report_from_json(data: dict[str, Any]) -> ImportReport:
    return ImportReport([entry_from_json(e) for e in data.get("added", [])],
                        [entry_from_json(e) for e in data.get("unchanged", [])],
                        [Quarantined(**q) for q in data.get("quarantined", [])],
                        [(s["source"], s["reason"]) for s in data.get("skipped", [])])  # fmt: skip


_ENTRY_FIELDS = frozenset(f.name for f in fields(LibraryEntry))


def entry_cells(entry: LibraryEntry) -> tuple[str, ...]:
    """One library file as table cells, in full (``fit_widths`` and ``ellipsize`` cut them to the screen)."""
    version = f"{entry.function} {entry.index} v{entry.version}" if entry.kind == "module" else entry.kind
    return (entry.platform, entry.release or "-", entry.name, version, entry.sha256[:SHA_SHOWN])


def entry_words(entry: LibraryEntry) -> str:
    """Everything about one file in a line or two, for the message line when its row is tapped."""
    version = f"{entry.function} {entry.index} v{entry.version}" if entry.kind == "module" else entry.kind
    release = f" {entry.release}" if entry.release else ""
    source = "" if Path(entry.source).stem == entry.name else f", imported as {entry.source}"
    return f"{entry.platform}{release} {entry.name}: {version}, {entry.size:,} bytes{source}; SHA-256 {entry.sha256}"


def import_summary(path: Path, report: ImportReport) -> tuple[str, str]:
    """One line about an import, and whether it is good news."""
    words = (f"{path.name}: {len(report.added)} added, {len(report.unchanged)} already there, "
             f"{len(report.quarantined)} quarantined, {len(report.skipped)} skipped")  # fmt: skip
    if report.quarantined:
        return words + " (see QUARANTINED below for why)", "problem"
    if not report.added and not report.unchanged:
        return words + ": nothing usable in it", "problem"
    return words, "good"


class LibraryScreen(KioskScreen):
    """Entries in a table, quarantined files with their reasons, and Import from a path or a USB stick."""

    TITLE_TEXT = "FIRMWARE LIBRARY · what the kiosk can write, offline"

    def __init__(self) -> None:
        super().__init__()
        self._entries: list[LibraryEntry] = []
        self._shown_width = 0

    def body(self) -> Iterable:
        with Vertical(classes="body", id="library-body"):
            with Horizontal(classes="row"):
                yield Input(placeholder="a release .zip or folder (e.g. on the USB stick)", id="import-path")
            yield Static("", id="library-message", classes="note")
            yield TouchTable(id="entries", zebra_stripes=True, cursor_type="row", cell_padding=CELL_PADDING)
            yield Static("", id="quarantine-title")
            yield VerticalScroll(id="quarantine")

    def buttons(self) -> Iterable[Button]:
        yield TouchButton("USB stick", id="stick")
        yield TouchButton("Import", id="import", variant="primary")

    def on_mount(self) -> None:
        self._refresh()

    def on_resize(self) -> None:
        self.call_after_refresh(self._fill_table)

    @work(thread=True, exclusive=True, group="library")
    def _refresh(self) -> None:
        try:
            found = self.app.link.call("library.list")
            entries = [entry_from_json(e) for e in found["entries"]]
            quarantined = [Quarantined(**q) for q in found["quarantined"]]
        except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
            self.app.call_from_thread(self.say, "library-message", f"The library cannot be read: {exc}", "problem")
            return
        self.app.call_from_thread(self._show, found["root"], entries, quarantined)

    def _show(self, root: str, entries: list[LibraryEntry], quarantined: list[Quarantined]) -> None:
        self._entries = sorted(entries, key=lambda e: (e.platform, e.release or "", e.function or "", e.index or 0))
        self._fill_table(force=True)
        message = self.query_one("#library-message", Static)
        if str(message.render()).strip():
            pass  # what an import said stays
        elif not entries:
            self.say("library-message", f"The library ({ellipsize(root, 40)}) is empty: type the path of a release "
                     "(.zip or folder) and tap Import, or tap USB stick.", "problem")  # fmt: skip
        else:
            self.say("library-message", f"{files(len(entries))} in {ellipsize(root, 40)}; tap a row for all about it.",
                     "note")  # fmt: skip
        self._show_quarantine(quarantined)

    def _fill_table(self, force: bool = False) -> None:
        """The entries in the table, their cells cut so the five columns fit its width."""
        budget = column_budget(self.query_one("#entries", DataTable), len(self._entries), self.app.size.width - 2)
        if not force and budget == self._shown_width:
            return
        self._shown_width = budget
        table = self.query_one("#entries", DataTable)
        cells = [entry_cells(e) for e in self._entries]
        natural = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(COLUMNS)]
        widths = fit_widths(natural, SHRINKABLE, budget)
        cursor = table.cursor_row
        table.clear(columns=True)
        table.add_columns(*COLUMNS)
        for entry, row in zip(self._entries, cells, strict=True):
            table.add_row(*(ellipsize(text, w) for text, w in zip(row, widths, strict=True)), key=entry.path)
        if self._entries:
            table.move_cursor(row=min(cursor, len(self._entries) - 1))

    def _show_quarantine(self, quarantined: list[Quarantined]) -> None:
        box = self.query_one("#quarantine", VerticalScroll)
        title = self.query_one("#quarantine-title", Static)
        box.remove_children()
        box.set_class(bool(quarantined), "some")
        title.remove_class("note", "problem")
        if not quarantined:
            title.add_class("note")
            title.update("No file is quarantined.")
            return
        title.add_class("problem")
        more = ": scroll for every reason" if len(quarantined) > 1 else ""
        title.update(f"QUARANTINED ✘ {files(len(quarantined))}, never written{more}")
        box.mount_all(
            Static(Text.assemble((f"✘ {Path(q.source).name}", "bold"), f": {q.reason}"), classes="reason")
            for q in quarantined
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        entry = next((e for e in self._entries if e.path == event.row_key.value), None)
        if entry is not None:
            self.say("library-message", entry_words(entry), "note")

    def pressed_stick(self) -> None:
        sticks = removable_media(self.app.media_roots)
        if not sticks:
            self.say("library-message", "No USB stick found: plug one in, wait a moment, then tap USB stick again.",
                     "problem")  # fmt: skip
            return
        self.query_one("#import-path", Input).value = str(sticks[0])
        self.say("library-message", f"USB stick at {sticks[0]}: tap Import to verify and add what is on it.", "note")

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.pressed_import()

    def pressed_import(self) -> None:
        raw = self.query_one("#import-path", Input).value.strip()
        if not raw:
            self.say("library-message", "Type the path of a release (.zip or folder), or tap USB stick.", "problem")
            return
        path = Path(raw).expanduser()
        if not path.exists():
            self.say("library-message", f"{path} does not exist: check the path, or plug the USB stick in.", "problem")
            return
        self.say("library-message", f"Importing {path}: every file is checked (CRC, SHA-256, platform)…", "note")
        self._import(path)

    @work(thread=True, exclusive=True, group="import")
    def _import(self, path: Path) -> None:
        try:
            report = report_from_json(self.app.link.call("library.import", {"path": str(path)}))
        except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
            self.app.call_from_thread(self.say, "library-message", f"Import failed: {exc}", "problem")
            return
        words, kind = import_summary(path, report)
        self.app.call_from_thread(self.say, "library-message", words, kind)
        self._refresh()
