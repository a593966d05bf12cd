"""The board: what every slot does now, reduced from what the engine posts, and who hears of each change.

The engine posts from many threads (a run's, a flash's, the pollers'); the board takes them one at a time
under its lock, folds each into the slot's :class:`~kiosk.service.slots.SlotState`, numbers it (``seq``,
one counter for the whole bench) and hands the encoded notification to every listener while still holding
the lock, so every client hears the changes in the order they were folded. Listeners must not block: the
server's only queue a frame (a full queue drops that client, never stalls the bench).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from kiosk.service import slots as slot_states
from kiosk.service.posts import BenchEvent, DeviceSeen, LedSeen, Notice, SlotBusy, SlotIdle
from kiosk.service.slots import SlotState
from kiosk.service.wire import notification

#: A listener gets the notification's method, its params and the frame (bytes, newline-terminated) to send.
Listener = Callable[[str, dict[str, Any], bytes], None]


def event_json(event: Any) -> dict[str, Any]:
    """A kiosk.events event as JSON: ``{"event": "RungStarted", "slot": 1, ...}``."""
    return event.to_json()


class Board:
    """Every slot's state and the listeners that hear each change (``post`` is the engine's callback)."""

    def __init__(self, states: Iterable[SlotState] = ()) -> None:
        self._lock = threading.RLock()  # a listener dropping its client removes itself while being told
        self._states: dict[int, SlotState] = {s.index: s for s in states}
        self._listeners: list[Listener] = []
        self.seq = 0

    def reset(self, states: Iterable[SlotState]) -> None:
        with self._lock:
            self._states = {s.index: s for s in states}

    def listen(self, listener: Listener) -> tuple[int, list[dict[str, Any]], Callable[[], None]]:
        """Add a listener; (the seq now, every slot's state now, how to remove it) taken at one instant, so the
        listener hears exactly the changes after the states it was given."""
        with self._lock:
            self._listeners.append(listener)
            seq, states = self.seq, [slot_states.to_json(s) for s in self._states.values()]

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return seq, states, remove

    def snapshot(self) -> tuple[int, list[dict[str, Any]]]:
        with self._lock:
            return self.seq, [slot_states.to_json(s) for s in self._states.values()]

    def state(self, slot: int) -> SlotState | None:
        with self._lock:
            return self._states.get(slot)

    # -- what the engine posts ------------------------------------------------------------------------
    def post(self, item: Any) -> None:
        """Fold one engine post into its slot and tell every listener (any thread)."""
        if isinstance(item, Notice):
            self._send("notice", {"text": item.text, "severity": item.severity})
            return
        with self._lock:
            found = self._fold(item)
            if found is None:
                return
            method, params, state = found
            self._states[state.index] = state
            self._tell(method, params, state)

    def stopping(self, slot: int) -> None:
        """Stop was pressed: every card says STOPPING at once, whoever pressed it."""
        with self._lock:
            state = self._states.get(slot)
            if state is None or not state.running:
                return
            state = replace(state, activity="stopping")
            self._states[slot] = state
            self._tell("slot.stopping", {"slot": slot}, state)

    def closing(self, reason: str) -> None:
        self._send("service.closing", {"reason": reason})

    def _fold(self, item: Any) -> tuple[str, dict[str, Any], SlotState] | None:
        if isinstance(item, BenchEvent):
            slot = item.event.slot
            state = self._states.get(slot)
            if state is None:
                return None
            new = slot_states.apply(state, item.event, item.at)
            return "slot.event", {"slot": slot, "event": event_json(item.event), "at": item.at}, new
        state = self._states.get(getattr(item, "slot", None))
        if state is None:
            return None
        if isinstance(item, LedSeen):
            new = slot_states.apply_led(state, item.lit, item.reading)
            return "slot.led", {"slot": item.slot, "lit": item.lit, "reading": item.reading}, new
        if isinstance(item, DeviceSeen):
            change = "unplugged" if item.mode is None else ("plugged" if not state.present else "changed")
            new = slot_states.apply_device(state, item.device_id, item.platform, item.mode)
            return "slot.device", {"slot": item.slot, "device_id": item.device_id, "platform": item.platform,
                                   "mode": item.mode, "change": change}, new  # fmt: skip
        if isinstance(item, SlotBusy):
            new = slot_states.started(state, item.busy_with, item.run_id, item.detail)
            return "slot.busy", {"slot": item.slot, "busy_with": item.busy_with, "run_id": item.run_id}, new
        if isinstance(item, SlotIdle):
            new = slot_states.finish(state, item.verdict, item.detail, item.run_id)
            return "slot.idle", {"slot": item.slot, "verdict": item.verdict, "detail": item.detail,
                                 "run_id": item.run_id}, new  # fmt: skip
        return None

    def _tell(self, method: str, params: dict[str, Any], state: SlotState) -> None:
        """(Under the lock.) Number the change and hand it to every listener, with the slot's new state."""
        self.seq += 1
        # sent_at: when the service folded it (in the publishing thread): a client on this host compares it with
        # its own time.monotonic() (CLOCK_MONOTONIC is system-wide on Linux) for the engine-to-client latency
        params = {**params, "seq": self.seq, "state": slot_states.to_json(state), "sent_at": time.monotonic()}
        frame = notification(method, params)
        for listener in list(self._listeners):
            listener(method, params, frame)

    def _send(self, method: str, params: dict[str, Any]) -> None:
        frame = notification(method, params)
        with self._lock:
            for listener in list(self._listeners):
                listener(method, params, frame)
