"""The main screen: a card per slot and a row of big buttons to the other screens."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Button, Static

from kiosk.tui.widgets.slot_card import SlotCard

#: The buttons along the bottom: id -> (label, the screen it opens). Keys in brackets for a keyboard.
NAV: dict[str, tuple[str, str]] = {
    "nav-flash": ("Flash [m]", "flash"),
    "nav-library": ("Library [l]", "library"),
    "nav-history": ("History [h]", "history"),
    "nav-report": ("Report [p]", "report"),
    "nav-settings": ("Settings [o]", "settings"),
}
#: At least this many cells, and the cards use their long forms (the ladder as a list, the LED's meaning).
ROOMY_WIDTH, ROOMY_HEIGHT = 100, 34


class MainScreen(Screen):
    """Slot cards in a grid (1 or 2 columns) that fills the screen; they appear once the bench is open."""

    def compose(self) -> ComposeResult:
        yield Static(self.app.title_text(), id="titlebar")
        with Grid(id="slots"):
            yield Static("Opening the bench…", id="opening")
        with Horizontal(id="nav"):
            for button_id, (label, _) in NAV.items():
                yield Button(Text(label), id=button_id, classes="nav")

    def show_slots(self) -> None:
        """Put one card per slot in the grid (called once the bench is open)."""
        grid = self.query_one("#slots", Grid)
        grid.remove_children()
        states = self.app.states
        grid.styles.grid_size_columns = 1 if len(states) == 1 else 2
        grid.styles.grid_size_rows = max(1, (len(states) + 1) // 2)
        grid.mount_all(SlotCard(state) for state in states.values())
        self.query_one("#titlebar", Static).update(self.app.title_text())
        self.call_after_refresh(self._fit, self.size.width, self.size.height)

    def show_problem(self, text: str) -> None:
        self.query_one("#opening", Static).update(text)
        self.query_one("#opening", Static).add_class("problem")

    def on_resize(self, event: Resize) -> None:
        self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int) -> None:
        roomy = width >= ROOMY_WIDTH and height >= ROOMY_HEIGHT
        for card in self.query(SlotCard):
            card.roomy = roomy

    def card(self, slot: int) -> SlotCard | None:
        found = self.query(f"#slot-{slot}")
        return found.first(SlotCard) if found else None

    def on_button_pressed(self, event: Button.Pressed) -> None:
        button_id = event.button.id or ""
        if button_id.startswith("act-"):
            event.stop()
            self.app.toggle_slot(int(button_id.removeprefix("act-")))
        elif button_id in NAV:
            event.stop()
            self.app.action_open(NAV[button_id][1])
