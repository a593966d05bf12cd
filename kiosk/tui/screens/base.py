"""What every screen but the main one shares: a title line and a bottom row of big buttons with Back first.

A button acts through one handler: ``pressed_<id>()`` (dashes as underscores), or ``pressed_<prefix>(n)``
for ids that end in a number (``pick-2`` -> ``pressed_pick(2)``). Screens define those, never their own
``on_button_pressed``: Textual calls the handler of every class in the hierarchy, so a second one would
make each tap act twice. Every handler is guarded (:mod:`kiosk.tui.guard`), and so are the screens'
workers: what they raise is shown and logged, and the app and the recoveries go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Static
from textual.worker import Worker, WorkerState

from kiosk.tui.guard import guard_handlers, report_fault
from kiosk.tui.widgets.touch_button import TouchButton


def button_handler(screen: object, button_id: str) -> Callable[[], object] | None:
    """The ``pressed_*`` handler of a button id, with its number bound when the id ends in one."""
    name = button_id.replace("-", "_")
    handler = getattr(screen, f"pressed_{name}", None)
    if handler is not None:
        return handler
    prefix, _, number = button_id.rpartition("-")
    numbered = getattr(screen, f"pressed_{prefix.replace('-', '_')}", None) if number.isdigit() else None
    return (lambda: numbered(int(number))) if numbered is not None else None


class KioskScreen(Screen):
    """A title, the screen's body (``body()``), and a bar of buttons (``buttons()``) after ◀ Back."""

    TITLE_TEXT = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        guard_handlers(cls)

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
        handler = button_handler(self, event.button.id or "")
        if handler is not None:
            event.stop()
            handler()

    def pressed_back(self) -> None:
        # only this screen is popped, and only while it is the one on top (a second tap finds it gone)
        if self.is_current:
            self.dismiss()

    def run_worker(self, work, *args, **kwargs) -> Worker:
        # a worker that fails is reported (on_worker_state_changed), never allowed to end the app
        kwargs["exit_on_error"] = False
        return super().run_worker(work, *args, **kwargs)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            report_fault(self, f"{type(self).__name__} {event.worker.name or 'worker'}", event.worker.error)

    def say(self, widget_id: str, text: str, kind: str = "note") -> None:
        """Put a message in a Static of this screen, styled as ``note``, ``good`` or ``problem``."""
        target = self.query_one(f"#{widget_id}", Static)
        target.remove_class("note", "good", "problem")
        target.add_class(kind)
        target.update(text)


guard_handlers(KioskScreen)
