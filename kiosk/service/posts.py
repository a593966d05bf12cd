"""What the engine posts as things happen on the bench: plain records, one per kind of news.

The engine calls its ``post`` callback with these from whichever thread saw the news (a run's, a
poller's); the service's :class:`kiosk.service.board.Board` folds them into each slot's state and sends
them on to its clients. Nothing here knows of Textual or of a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiosk.events import Event


@dataclass(frozen=True)
class BenchEvent:
    """A ladder or flash event, with the device time it was published at."""

    event: Event
    at: float


@dataclass(frozen=True)
class LedSeen:
    """The LED poller's latest: the colour lit now and, every so often, a fresh classification."""

    slot: int
    lit: str | None
    reading: dict[str, Any] | None


@dataclass(frozen=True)
class DeviceSeen:
    """The USB poller saw a device appear, change mode, or go (``mode`` None) on a slot's port."""

    slot: int
    device_id: str | None
    platform: str | None
    mode: str | None


@dataclass(frozen=True)
class SlotBusy:
    """A recovery, a manual flash, a restore over SWD or a mode change has begun on a slot (its run id, once the
    journal gave one; ``detail``: what the card says it does, when no event will)."""

    slot: int
    busy_with: str
    run_id: int | None
    detail: str | None = None


@dataclass(frozen=True)
class SlotIdle:
    """A slot's run has ended: the verdict it gave (None when the events carried it, or for a mode change, which
    gives none) and why (for a mode change: what came of it)."""

    slot: int
    verdict: str | None
    detail: str | None
    run_id: int | None


@dataclass(frozen=True)
class Notice:
    """Something the technician should read (a refused start, a fault in a poller)."""

    text: str
    severity: str = "information"
