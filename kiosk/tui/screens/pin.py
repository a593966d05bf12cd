"""The PIN a remote screen enters to press buttons, where the kiosk's config allows it ([remote] control =
"pin"). The service checks it (this screen never knows the PIN) and unlocks this connection only."""

from __future__ import annotations

from collections.abc import Iterable

from textual import work
from textual.containers import Vertical
from textual.widgets import Button, Input, Static

from kiosk.tui.link import ServiceError, ServiceUnavailable
from kiosk.tui.screens.base import KioskScreen
from kiosk.tui.widgets.touch_button import TouchButton


class PinScreen(KioskScreen):
    """Type the PIN, tap Unlock; Back leaves this screen view-only."""

    TITLE_TEXT = "VIEW ONLY · enter the kiosk's PIN to press buttons from this screen"

    def body(self) -> Iterable:
        with Vertical(classes="body"):
            yield Input(placeholder="PIN", password=True, id="pin")
            yield Static("This screen shows the bench; pressing needs the PIN.", id="pin-message", classes="note")

    def buttons(self) -> Iterable[Button]:
        yield TouchButton("Unlock", id="unlock", variant="primary")

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.pressed_unlock()

    def pressed_unlock(self) -> None:
        pin = self.query_one("#pin", Input).value.strip()
        if not pin:
            self.say("pin-message", "Type the PIN first.", "problem")
            return
        self.say("pin-message", "Checking…", "note")
        self._unlock(pin)

    @work(thread=True, exclusive=True, group="pin")
    def _unlock(self, pin: str) -> None:
        try:
            rights = self.app.link.unlock(pin)
        except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
            self.app.call_from_thread(self.say, "pin-message", f"✘ {exc}", "problem")
            return
        self.app.call_from_thread(self._unlocked, rights)

    def _unlocked(self, rights: dict) -> None:
        self.app.unlocked(rights)
        self.app.notify("Unlocked: this screen may press buttons now.")
        self.dismiss()
