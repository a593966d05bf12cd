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
    #: Bytes the far end has ready at every read, however fast it reads (it never stops); reading them costs
    #: ``byte_time`` seconds a byte of device time, as on a wire.
    firehose: bytes = b""
    byte_time: float = 1e-5
    firehose_after: int = 0  # writes before the firehose starts
    greeting: Answer = field(default_factory=list)  # what the far end sends before anything is written
    written: list[bytes] = field(default_factory=list)
    _queue: list[tuple[float, bytes]] = field(default_factory=list)
    _chatter_at: float = 0.0
    closed: bool = False

    def __post_init__(self) -> None:
        self._queue += [(self.clock.now() + delay, chunk) for delay, chunk in self.greeting]

    def _hose(self) -> bytes:
        return self.firehose if len(self.written) >= self.firehose_after else b""

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
        return len(self._ready()) + len(self._hose())

    def read(self, size: int = 1) -> bytes:
        ready = self._take(size)
        extra = self._hose()[: size - len(ready)]
        if extra:
            self.clock.sleep(len(extra) * self.byte_time)
        return ready + extra

    def _take(self, size: int) -> bytes:
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
