"""Typed events and the bus they travel on: what the flash executor (and later the recovery ladder)
tells the CLI, the journal and the touchscreen UI.

Publishers call ``bus.publish(event)``; subscribers are plain callables. A subscriber that raises is
logged and dropped from that one delivery, never allowed to break the operation that published.

    >>> bus = EventBus(); seen = []
    >>> unsubscribe = bus.subscribe(seen.append)
    >>> bus.publish(StepStarted(slot=1, index=0, total=2, name="tinker.bin", mechanism="dfu", size=4096))
    >>> seen[0].name
    'tinker.bin'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    slot: int

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, **asdict(self)}


@dataclass(frozen=True)
class PlanStarted(Event):
    steps: int
    transport: str


@dataclass(frozen=True)
class StepStarted(Event):
    index: int
    total: int
    name: str
    mechanism: str
    size: int


@dataclass(frozen=True)
class ModeSwitch(Event):
    """The device was brought into the mode a step needs (or it failed to get there)."""

    index: int
    wanted: str
    reached: str | None
    via: str | None


@dataclass(frozen=True)
class Progress(Event):
    index: int
    done: int  # bytes
    total: int
    phase: str  # "erase", "write", "verify", "send", ...


@dataclass(frozen=True)
class Retry(Event):
    index: int
    attempt: int
    reason: str


@dataclass(frozen=True)
class StepFinished(Event):
    index: int
    name: str
    outcome: str  # "written", "failed", "refused", "skipped"
    detail: str = ""
    figures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanFinished(Event):
    outcome: str  # "done", "failed", "stopped"
    detail: str = ""


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers events to subscribers in the publisher's thread, in order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", subscriber, event.kind)
