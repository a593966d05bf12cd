"""What every screen but the main one shares: a title line and a bottom row of big buttons with Back first."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Static

from kiosk.tui.widgets.touch_button import TouchButton


class KioskScreen(Screen):
    """A title, the screen's body (``body()``), and a bar of buttons (``buttons()``) after ◀ Back."""

    TITLE_TEXT = ""

    def compose(self) -> ComposeResult:
        yield Static(self.TITLE_TEXT, classes="screen-title")
        yield from self.body()
        with Horizontal(classes="bar"):
            yield TouchButton("◀ Back", id="back")
            yield from self.buttons()

    def body(self) -> Iterable:
        return ()

    def buttons(self) -> Iterable[Button]:
        return ()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            event.stop()
            self.app.pop_screen()
            return
        handler = getattr(self, f"pressed_{(event.button.id or '').replace('-', '_')}", None)
        if handler is not None:
            event.stop()
            handler()

    def say(self, widget_id: str, text: str, kind: str = "note") -> None:
        """Put a message in a Static of this screen, styled as ``note``, ``good`` or ``problem``."""
        target = self.query_one(f"#{widget_id}", Static)
        target.remove_class("note", "good", "problem")
        target.add_class(kind)
        target.update(text)
