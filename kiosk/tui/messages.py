"""Messages: the only way anything crosses from another thread into the UI.

The bench service's client (:mod:`kiosk.tui.link`) posts these from its reader thread with ``post_message``,
which is thread-safe; handlers run on the UI thread and are the only code that changes widgets.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message


class Connected(Message):
    """The service answered (first time or again): who we are to it, and every slot's state now."""

    def __init__(self, hello: dict[str, Any], snapshot: dict[str, Any]) -> None:
        super().__init__()
        self.hello = hello
        self.snapshot = snapshot


class Disconnected(Message):
    """The service does not answer (any more): why, in words; the link keeps trying."""

    def __init__(self, why: str) -> None:
        super().__init__()
        self.why = why


class ServiceNote(Message):
    """One notification from the service (``slot.event``, ``slot.led``, ``notice``...)."""

    def __init__(self, method: str, params: dict[str, Any]) -> None:
        super().__init__()
        self.method = method
        self.params = params


class BenchFailed(Message):
    """The private service (a simulated bench) could not open the bench: why, and what to do."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class Notice(Message):
    """Something the technician should read (a refused press, a fault in a screen)."""

    def __init__(self, text: str, severity: str = "information") -> None:
        super().__init__()
        self.text = text
        self.severity = severity
