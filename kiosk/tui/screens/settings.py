"""Settings that are safe at the bench: the theme, the report format and folder, how device ids show.

The bench's own limits (pins, drain time, button holds) are not here: they belong to the config file and
the hazard guard. This screen only shows where the bench, journal and library are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Checkbox, Input, Label, RadioSet, Static

from kiosk.tui.screens.base import KioskScreen
from kiosk.tui.settings import REPORT_FORMATS, THEMES
from kiosk.tui.widgets.choices import TICKED, UNTICKED, mark_radios, marked_radio
from kiosk.tui.widgets.touch_button import TouchButton

FULL_IDS = "Show whole device ids on the cards"


class SettingsScreen(KioskScreen):
    """Choose, then Save (kept for the next start); Back leaves them as they were."""

    TITLE_TEXT = "SETTINGS · safe to change at the bench"

    def body(self) -> Iterable:
        settings = self.app.settings
        with VerticalScroll(classes="body"):
            yield Label("Screen", classes="section")
            with RadioSet(id="theme"):
                for key, words in THEMES.items():
                    yield marked_radio(words, settings.theme == key, f"theme-{key}")
            yield Label("Reports are saved as", classes="section")
            with RadioSet(id="report-format"):
                for key, words in REPORT_FORMATS.items():
                    yield marked_radio(words, settings.report_format == key, f"format-{key}")
            yield Label("Report folder (for To file)", classes="section")
            with Horizontal(classes="row"):
                yield Input(value=str(settings.reports_to), id="report-folder")
            yield Checkbox(self._tick_words(settings.full_device_ids), settings.full_device_ids, id="full-ids")
            yield Static("", id="settings-message", classes="note")
            yield Label("This bench (change it in the config file, not here)", classes="section")
            yield Static(self._facts(), id="facts")

    def buttons(self) -> Iterable[Button]:
        yield TouchButton("Save", id="save", variant="primary")

    def _facts(self) -> str:
        info = self.app.bench_info  # what the bench service said of itself
        lines = [f"bench: {self.app.bench_words}"]
        if info.get("journal"):
            lines.append(f"journal: {info['journal']}")
        if info.get("library"):
            lines.append(f"library: {info['library']}")
        return "\n".join(lines)

    @staticmethod
    def _tick_words(value: bool) -> str:
        return f"{TICKED if value else UNTICKED} {FULL_IDS}"

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        mark_radios(event.radio_set)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.checkbox.label = self._tick_words(event.value)

    def _chosen(self, radio_id: str, prefix: str, default: str) -> str:
        pressed = self.query_one(f"#{radio_id}", RadioSet).pressed_button
        return (pressed.id or "").removeprefix(prefix) if pressed is not None else default

    def pressed_save(self) -> None:
        folder = self.query_one("#report-folder", Input).value.strip()
        settings = replace(
            self.app.settings,
            theme=self._chosen("theme", "theme-", "kiosk-dark"),
            report_format=self._chosen("report-format", "format-", "md"),
            report_folder=folder,
            full_device_ids=self.query_one("#full-ids", Checkbox).value,
        ).checked()
        try:
            where = settings.save(self.app.settings_file)
        except OSError as exc:
            self.say("settings-message", f"Could not save the settings: {exc.strerror or exc}", "problem")
            return
        self.app.apply_settings(settings)
        self.say("settings-message", f"Saved ({where}).", "good")
