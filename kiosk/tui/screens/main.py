"""The main screen: a card per slot and a row of big buttons to the other screens."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal
from textual.screen import Screen
from textual.widgets import Button, Static

from kiosk.tui.guard import guard_handlers
from kiosk.tui.widgets.slot_card import SlotCard
from kiosk.tui.widgets.touch_button import TouchButton

#: The buttons along the bottom: id -> (label, the screen it opens). Keys in brackets for a keyboard.
NAV: dict[str, tuple[str, str]] = {
    "nav-flash": ("Flash [m]", "flash"),
    "nav-library": ("Library [l]", "library"),
    "nav-history": ("History [h]", "history"),
    "nav-report": ("Report [p]", "report"),
    "nav-settings": ("Settings [o]", "settings"),
}


@guard_handlers
class MainScreen(Screen):
    """Slot cards in a grid (1 or 2 columns) that fills the screen, from the first frame on (the app knows its
    slots from the arguments or the config); the bench opens once that frame is on the screen."""

    #: Focus starts on the bottom row, not on a slot: no card looks chosen before the technician chooses one.
    AUTO_FOCUS = "#nav TouchButton"

    def compose(self) -> ComposeResult:
        states = self.app.states
        yield Static(self.app.title_text(), id="titlebar")
        with Grid(id="slots") as grid:
            self._size_grid(grid, len(states))
            if states:
                yield from (SlotCard(state) for state in states.values())
            else:
                yield Static("Opening the bench…", id="opening")
        with Horizontal(id="nav"):
            for button_id, (label, _) in NAV.items():
                yield TouchButton(Text(label), id=button_id, classes="nav")

    @staticmethod
    def _size_grid(grid: Grid, slots: int) -> None:
        grid.styles.grid_size_columns = 1 if slots == 1 else 2
        grid.styles.grid_size_rows = max(1, (slots + 1) // 2)

    def show_slots(self) -> None:
        """Put one card per slot in the grid (again, when the bench turned out other than expected)."""
        grid = self.query_one("#slots", Grid)
        grid.remove_children()
        states = self.app.states
        self._size_grid(grid, len(states))
        grid.mount_all(SlotCard(state) for state in states.values())
        self.show_title()

    def show_title(self) -> None:
        title = self.query_one("#titlebar", Static)
        title.set_class(self.app.offline_words is not None and self.app.bench_error is None, "offline")
        title.update(self.app.title_text())

    def show_problem(self, text: str) -> None:
        """The bench could not be opened: the cards give way to what went wrong and what to do."""
        grid = self.query_one("#slots", Grid)
        self._size_grid(grid, 1)
        for opening in grid.query("#opening").results(Static):
            opening.update(text)
            opening.add_class("problem")
            return
        grid.remove_children()
        grid.mount(Static(text, id="opening", classes="problem"))

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
