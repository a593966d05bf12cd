"""The firmware library: what it holds, what was quarantined and why, and importing a release from a stick."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual import work
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Static

from firmware.library import ImportReport, LibraryError
from kiosk.tui.backend import removable_media
from kiosk.tui.screens.base import KioskScreen
from kiosk.tui.widgets.touch_button import TouchButton

COLUMNS = ("Platform", "Release", "Part", "Version", "SHA-256")


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

    def body(self) -> Iterable:
        with Vertical(classes="body"):
            with Horizontal(classes="row"):
                yield Input(placeholder="a release .zip or folder (e.g. on the USB stick)", id="import-path")
            yield Static("", id="library-message", classes="note")
            yield DataTable(id="entries", zebra_stripes=True, cursor_type="row")
            yield Static("", id="quarantine", classes="problem")

    def buttons(self) -> Iterable[Button]:
        yield TouchButton("USB stick", id="stick")
        yield TouchButton("Import", id="import", variant="primary")

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self._refresh()

    @work(thread=True, exclusive=True, group="library")
    def _refresh(self) -> None:
        library = self.app.backend.library
        try:
            entries, quarantined = library.entries(), library.quarantined()
        except LibraryError as exc:
            self.app.call_from_thread(self.say, "library-message", f"The library cannot be read: {exc}", "problem")
            return
        self.app.call_from_thread(self._show, str(library.root), entries, quarantined)

    def _show(self, root: str, entries: list, quarantined: list) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for e in sorted(entries, key=lambda e: (e.platform, e.release or "", e.function or "", e.index or 0)):
            version = f"{e.function} {e.index} v{e.version}" if e.kind == "module" else e.kind
            table.add_row(e.platform, e.release or "-", e.name, version, e.sha256[:12])
        message = self.query_one("#library-message", Static)
        if not str(message.render()).strip():
            self.say("library-message", f"{len(entries)} file(s) in {root}", "note")
        if quarantined:
            lines = [f"QUARANTINED ✘ {Path(q.source).name}: {q.reason}" for q in quarantined]
            self.query_one("#quarantine", Static).update("\n".join(lines))
        else:
            self.query_one("#quarantine", Static).update("No file is quarantined.")

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
            report = self.app.backend.library.import_path(path)
        except (LibraryError, OSError) as exc:
            self.app.call_from_thread(self.say, "library-message", f"Import failed: {exc}", "problem")
            return
        words, kind = import_summary(path, report)
        self.app.call_from_thread(self.say, "library-message", words, kind)
        self._refresh()
