"""A serial port whose far end is a script: what it answers to each write, and when, on a VirtualClock.

Used by the console and YModem fuzzing: garbage, silence, cut-off and never-ending replies, timed in device time,
so no test waits in real time and every run is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hw.clock import VirtualClock

#: One answer: (seconds after the write, bytes) chunks.
Answer = list[tuple[float, bytes]]


@dataclass
class ScriptedPort:
    """``answers[n]`` is the reply to the n-th write (none once they run out); ``chatter`` is (period, bytes) the
    far end prints every ``period`` seconds forever, whatever is written (a device stuck printing a log)."""

    clock: VirtualClock
    answers: list[Answer] = field(default_factory=list)
    chatter: tuple[float, bytes] | None = None
    written: list[bytes] = field(default_factory=list)
    _queue: list[tuple[float, bytes]] = field(default_factory=list)
    _chatter_at: float = 0.0
    closed: bool = False

    def _due(self) -> None:
        if self.chatter is not None:
            period, chunk = self.chatter
            while self._chatter_at <= self.clock.now():
                self._queue.append((self._chatter_at, chunk))
                self._chatter_at += period
        self._queue.sort(key=lambda item: item[0])

    def _ready(self) -> bytes:
        self._due()
        now = self.clock.now()
        return b"".join(chunk for at, chunk in self._queue if at <= now)

    @property
    def in_waiting(self) -> int:
        return len(self._ready())

    def read(self, size: int = 1) -> bytes:
        ready = self._ready()[:size]
        taken, now = len(ready), self.clock.now()
        keep = []
        for at, chunk in self._queue:
            if at <= now and taken:
                used = min(taken, len(chunk))
                taken -= used
                chunk = chunk[used:]
                if not chunk:
                    continue
            keep.append((at, chunk))
        self._queue = keep
        return ready

    def write(self, data: bytes) -> int:
        self.written.append(bytes(data))
        if len(self.written) <= len(self.answers):
            now = self.clock.now()
            self._queue += [(now + delay, chunk) for delay, chunk in self.answers[len(self.written) - 1]]
        return len(data)

    def close(self) -> None:
        self.closed = True
