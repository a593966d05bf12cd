"""Messages: the only way anything crosses from a worker thread into the UI.

Workers (the ladder, the flash executor, the USB and LED pollers) post these with ``post_message``,
which is thread-safe; handlers run on the UI thread and are the only code that changes widgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from kiosk.events import Event


class BenchEvent(Message):
    """A ladder or flash event from a worker, with the device time it was published at."""

    def __init__(self, event: Event, at: float) -> None:
        super().__init__()
        self.event = event
        self.at = at


class LedSeen(Message):
    """The LED poller's latest: the colour lit now and, every so often, a fresh classification."""

    def __init__(self, slot: int, lit: str | None, reading: dict[str, Any] | None) -> None:
        super().__init__()
        self.slot = slot
        self.lit = lit
        self.reading = reading


class DeviceSeen(Message):
    """The USB poller saw a device appear, change mode, or go (``mode`` None) on a slot's port."""

    def __init__(self, slot: int, device_id: str | None, platform: str | None, mode: str | None) -> None:
        super().__init__()
        self.slot = slot
        self.device_id = device_id
        self.platform = platform
        self.mode = mode


class SlotBusy(Message):
    """A recovery or a manual flash has begun on a slot (its run id, once the journal gave one)."""

    def __init__(self, slot: int, busy_with: str, run_id: int | None) -> None:
        super().__init__()
        self.slot = slot
        self.busy_with = busy_with
        self.run_id = run_id


class SlotIdle(Message):
    """A slot's worker has ended: the verdict it gave (None when the events carried it) and why."""

    def __init__(self, slot: int, verdict: str | None, detail: str | None, run_id: int | None) -> None:
        super().__init__()
        self.slot = slot
        self.verdict = verdict
        self.detail = detail
        self.run_id = run_id


class BenchReady(Message):
    """The bench has been opened in a worker (or could not be: ``error`` says why and what to do)."""

    def __init__(self, error: str | None = None) -> None:
        super().__init__()
        self.error = error


class Notice(Message):
    """Something a worker wants the technician to read (a refused start, a fault in a poller)."""

    def __init__(self, text: str, severity: str = "information") -> None:
        super().__init__()
        self.text = text
        self.severity = severity
