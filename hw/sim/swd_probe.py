"""A simulated SWD debug probe: the ``hw.swd.SwdPort`` twin of :class:`hw.swd.PyocdSwd` for the simulator.

It programs a model of the target MCU's flash (:class:`SimTargetMemory`: sectors, erased to 0xFF, NOR
writes that only clear bits) and charges the device's own erase and write times to the clock, so a
restore takes as long in device seconds as the flash allows. Its failures are data (:data:`FAULTS`), it
behaves like the real driver where the real one has no choice (P2 / M-SoM: NoTarget; a locked nRF52 opens
only after a mass erase), and it raises the same errors with the same messages.

The simulated device hooks in with ``on_erased(ranges)``, ``on_programmed(segments)`` (what was really
written, also after a Stop half way) and ``on_reset()``, all called under the clock's lock, and tells
the probe whether it has power with ``is_powered()``.

    >>> from hw.clock import VirtualClock
    >>> probe = SimSwdProbe(VirtualClock())
    >>> info = probe.open("boron")
    >>> probe.program([(0x1000, b"\\x01\\x02\\x03\\x04")]); probe.memory.read(0x1000, 4)
    b'\\x01\\x02\\x03\\x04'
"""

from __future__ import annotations

import bisect
import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from firmware.platforms import Platform
from hw.clock import Cancelled, Clock, ClockEvent
from hw.flash_timing import MASS_ERASE_S, SWD_BYTES_PER_S, SWD_PAGE
from hw.swd import (
    PHASE_ERASE,
    PHASE_MASS_ERASE,
    PHASE_PROGRAM,
    PHASE_VERIFY,
    ImageError,
    NoTargetPower,
    PackMissing,
    ProbeInfo,
    ProgressFn,
    RestoreImage,
    Segments,
    SwdTransferError,
    TargetInfo,
    TargetLocked,
    VerifyError,
    as_platform,
    choose_probe,
    image_segments,
    target_support,
)

#: What can be wrong, by name (scenario data).
FAULTS: dict[str, str] = {
    "no-probe": "no debugger is plugged into the kiosk",
    "no-target-power": "the device has no power (or the ribbon is off): the probe gets no answer at all",
    "locked": "the MCU is locked (nRF52 APPROTECT): it opens only after a mass erase",
    "dead": "the MCU answers nothing but the debug port: every memory transfer fails (damaged chip)",
    "no-pack": "the CMSIS pack for the STM32F205 is not installed on the kiosk",
}

# Device time, seconds: SWD throughput, mass erase times and the page size are shared with the kiosk's
# figures (hw.flash_timing). pyOCD double-buffers (the next page goes over SWD while the flash writes this
# one), so a page costs the longer of the two.
CONNECT_S = 0.3  # UNVERIFIED: probe open, DP/AP discovery and halt
PAGE = SWD_PAGE
_NOT_BLANK = re.compile(rb"[^\xff]+")

Sector = tuple[int, int, float]  # (start, size in bytes, erase seconds)


@dataclass(frozen=True)
class FlashGeometry:
    """An MCU family's flash as the probe sees it: its sectors, word write and mass erase times (seconds)."""

    mcu: str
    sectors: tuple[Sector, ...]
    word_write_s: float  # one 32-bit word
    mass_erase_s: float

    @property
    def regions(self) -> tuple[tuple[int, int], ...]:
        """Contiguous ``[start, end)`` flash ranges."""
        out: list[tuple[int, int]] = []
        for start, size, _e in self.sectors:
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], start + size)
            else:
                out.append((start, start + size))
        return tuple(out)


def _run(start: int, *groups: tuple[int, int, float]) -> tuple[Sector, ...]:
    """Sectors from ``(count, size, erase seconds)`` groups laid end to end from ``start``."""
    out = []
    for count, size, erase_s in groups:
        for _ in range(count):
            out.append((start, size, erase_s))
            start += size
    return tuple(out)


#: timing-model.md section 2. nRF52840: 85 ms page erase, 41 us word write (max values; typical not given),
#: ERASEALL 169 ms (UNVERIFIED); UICR as pyOCD maps it (0x400 at 0x10001000). STM32F205 at x32: 16 KB sectors
#: 250 ms, 64 KB 550 ms, 128 KB 1 s, word 16 us, mass erase 8 s (typical values).
GEOMETRY: dict[str, FlashGeometry] = {
    "nrf52840": FlashGeometry(
        "nrf52840", _run(0, (256, 0x1000, 0.085)) + _run(0x10001000, (1, 0x400, 0.085)), 41e-6,
        MASS_ERASE_S["nrf52840"],
    ),
    "stm32f2xx": FlashGeometry(
        "stm32f2xx", _run(0x08000000, (4, 0x4000, 0.25), (1, 0x10000, 0.55), (7, 0x20000, 1.0)), 16e-6,
        MASS_ERASE_S["stm32f2xx"],
    ),
}


class SimTargetMemory:
    """The target MCU's flash: sectors that erase to 0xFF and take NOR writes (bits only go 1 -> 0)."""

    def __init__(self, geometry: FlashGeometry):
        self.geometry = geometry
        self._starts = [start for start, _s, _e in geometry.sectors]
        self._sectors = {start: bytearray(b"\xff" * size) for start, size, _e in geometry.sectors}

    def sector_at(self, address: int) -> Sector | None:
        """The sector holding ``address``, if any."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            start, size, erase_s = self.geometry.sectors[i]
            if address < start + size:
                return start, size, erase_s
        return None

    def _spans(self, address: int, length: int) -> Iterator[tuple[bytearray, int, int]]:
        """(sector buffer, offset in it, bytes) pieces covering ``[address, address + length)``."""
        while length > 0:
            sector = self.sector_at(address)
            if sector is None:
                raise ImageError(f"0x{address:08x} is not flash on the {self.geometry.mcu}")
            start, size, _e = sector
            take = min(length, start + size - address)
            yield self._sectors[start], address - start, take
            address += take
            length -= take

    def read(self, address: int, length: int) -> bytes:
        return b"".join(bytes(buf[off : off + n]) for buf, off, n in self._spans(address, length))

    def write(self, address: int, data: bytes) -> None:
        """Program bytes: a flash write can only clear bits, so unerased bytes come out ANDed."""
        pos = 0
        for buf, off, n in self._spans(address, len(data)):
            old = int.from_bytes(buf[off : off + n], "big")
            buf[off : off + n] = (old & int.from_bytes(data[pos : pos + n], "big")).to_bytes(n, "big")
            pos += n

    def load(self, segments: Iterable[tuple[int, bytes]]) -> None:
        """Set contents outright (the scenario's starting flash), bypassing flash rules."""
        for address, data in segments:
            pos = 0
            for buf, off, n in self._spans(address, len(data)):
                buf[off : off + n] = data[pos : pos + n]
                pos += n

    def erase_sector(self, start: int) -> None:
        self._sectors[start][:] = b"\xff" * len(self._sectors[start])

    def erase_all(self) -> None:
        for start in self._sectors:
            self.erase_sector(start)

    def is_blank(self, start: int) -> bool:
        return self._sectors[start].count(0xFF) == len(self._sectors[start])

    def segments(self) -> Segments:
        """Non-blank sectors as ``(address, bytes)``, adjacent ones merged."""
        used = [(start, bytes(buf)) for start, buf in self._sectors.items() if not self.is_blank(start)]
        return image_segments(used) if used else ()


class SimSwdProbe:
    """A fake probe wired to one simulated device; see the module docstring.

    ``faults`` are names from :data:`FAULTS`; ``device_platform`` the platform of the device on the
    ribbon (opening it as another MCU family fails as on real hardware); ``memory`` its flash model
    (made on first open when not given).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        unique_id: str = "sim-swd-0001",
        faults: Iterable[str] = (),
        device_platform: Platform | str | None = None,
        memory: SimTargetMemory | None = None,
        is_powered: Callable[[], bool] | None = None,
        on_erased: Callable[[tuple[tuple[int, int], ...]], None] | None = None,
        on_programmed: Callable[[Segments], None] | None = None,
        on_reset: Callable[[], None] | None = None,
        swd_bytes_per_s: float = SWD_BYTES_PER_S,
    ):
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown SWD fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self.clock = clock
        self.unique_id = unique_id
        self.faults = frozenset(faults)
        self.device_platform = as_platform(device_platform) if device_platform is not None else None
        self.memory = memory
        self.is_powered = is_powered
        self.on_erased = on_erased
        self.on_programmed = on_programmed
        self.on_reset = on_reset
        self.swd_bytes_per_s = swd_bytes_per_s
        self.locked = "locked" in self.faults
        self._info: TargetInfo | None = None

    # -- the port --
    def list_probes(self) -> list[ProbeInfo]:
        if "no-probe" in self.faults:
            return []
        return [ProbeInfo(self.unique_id, "Simulator", "DAPLink CMSIS-DAP", "Particle Debugger (simulated)")]

    def open(
        self, platform: Platform | str, unique_id: str | None = None, cancel: ClockEvent | None = None
    ) -> TargetInfo:
        plat = as_platform(platform)
        support = target_support(plat)
        self.close()
        if support.pack and "no-pack" in self.faults:
            raise PackMissing(plat.display_name, support)
        chosen = choose_probe(self.list_probes(), unique_id)
        self.clock.sleep(CONNECT_S, cancel)
        if not self._powered():
            raise NoTargetPower()
        if "dead" in self.faults:
            raise _transfer_error("connect", "No cores were discovered")
        geometry = GEOMETRY[plat.mcu.name]
        device_mcu = self.device_platform.mcu.name if self.device_platform else plat.mcu.name
        if device_mcu != plat.mcu.name or (self.memory is not None and self.memory.geometry is not geometry):
            raise _transfer_error("connect", f"the device on the ribbon is not a {support.mcu}")
        if self.memory is None:
            self.memory = SimTargetMemory(geometry)
        self._info = TargetInfo(chosen, plat.name, support.targets[0], self.locked, geometry.regions)
        return self._info

    def mass_erase(self, progress: ProgressFn | None = None, cancel: ClockEvent | None = None) -> None:
        info, memory = self._require(unlocked=False)
        total = info.flash_bytes
        _report(progress, 0, total, PHASE_MASS_ERASE)
        # The chip finishes an erase it has started; Stop takes effect after it, as with the real driver.
        self.clock.sleep(memory.geometry.mass_erase_s)
        self._alive("mass erase")
        with self._sim_lock():
            memory.erase_all()
            self.locked = False
            self._info = TargetInfo(info.probe, info.platform, info.target, False, info.flash)
            if self.on_erased is not None:
                self.on_erased(info.flash)
        _report(progress, total, total, PHASE_MASS_ERASE)
        _check_cancel(cancel)

    def program(
        self, image: RestoreImage, progress: ProgressFn | None = None, cancel: ClockEvent | None = None
    ) -> None:
        _info, memory = self._require()
        segments = image_segments(image)
        total = sum(len(data) for _a, data in segments)
        touched = _touched_sectors(memory, segments)  # ImageError before anything is erased
        erased: list[tuple[int, int]] = []
        written: list[tuple[int, bytes]] = []
        try:
            # Erase phase: bytes_done counts the image bytes whose sectors are ready, as pyOCD weighs it.
            done = 0
            _report(progress, 0, total, PHASE_ERASE)
            for (start, size, erase_s), weight in touched:
                if not memory.is_blank(start):  # pyOCD skips sectors that are already erased
                    self.clock.sleep(erase_s, cancel)
                    self._alive("erase")
                    with self._sim_lock():
                        kept = _kept_bytes(memory, start, size, segments)
                        memory.erase_sector(start)
                        erased.append((start, start + size))
                        # keep_unwritten, as the real driver asks pyOCD: bytes the image does not cover survive
                        for address, data in kept:
                            memory.write(address, data)
                            written.append((address, data))
                done += weight
                _report(progress, done, total, PHASE_ERASE)
            done = 0
            _report(progress, 0, total, PHASE_PROGRAM)
            for address, chunk in _pages(segments):
                words = (len(chunk) + 3) // 4
                self.clock.sleep(max(words * memory.geometry.word_write_s, len(chunk) / self.swd_bytes_per_s), cancel)
                self._alive("programming")
                with self._sim_lock():
                    memory.write(address, chunk)
                written.append((address, chunk))
                done += len(chunk)
                _report(progress, done, total, PHASE_PROGRAM)
        finally:
            # The device's flash is what really happened, finished or not.
            with self._sim_lock():
                if erased and self.on_erased is not None:
                    self.on_erased(tuple(erased))
                if written and self.on_programmed is not None:
                    self.on_programmed(image_segments(written))

    def verify(self, image: RestoreImage, progress: ProgressFn | None = None, cancel: ClockEvent | None = None) -> None:
        _info, memory = self._require()
        segments = image_segments(image)
        total = sum(len(data) for _a, data in segments)
        done = 0
        _report(progress, 0, total, PHASE_VERIFY)
        for address, chunk in _pages(segments):
            self.clock.sleep(len(chunk) / self.swd_bytes_per_s, cancel)
            self._alive("verify")
            with self._sim_lock():
                got = memory.read(address, len(chunk))
            if got != chunk:
                at = next(i for i, (a, b) in enumerate(zip(chunk, got, strict=True)) if a != b)
                raise VerifyError(address + at, chunk[at], got[at])
            done += len(chunk)
            _report(progress, done, total, PHASE_VERIFY)

    def reset_and_run(self, cancel: ClockEvent | None = None) -> None:
        self._require(unlocked=False)
        _check_cancel(cancel)
        self._alive("reset")
        with self._sim_lock():
            if self.on_reset is not None:
                self.on_reset()

    def close(self) -> None:
        self._info = None

    # -- internals --
    def _require(self, unlocked: bool = True) -> tuple[TargetInfo, SimTargetMemory]:
        if self._info is None or self.memory is None:
            raise SwdTransferError("no device is open on the SWD debugger: open it first")
        if unlocked and self.locked:
            raise TargetLocked(self._info.target)
        return self._info, self.memory

    def _powered(self) -> bool:
        if "no-target-power" in self.faults:
            return False
        return self.is_powered() if self.is_powered is not None else True

    def _alive(self, what: str) -> None:
        """Power lost half way looks like a transfer failure to the probe, as it does to pyOCD."""
        if not self._powered():
            raise _transfer_error(what, "SWD/JTAG communication failure (No ACK)")

    def _sim_lock(self) -> contextlib.AbstractContextManager[Any]:
        """The clock's lock, which guards all simulator state (hw.clock); none on a real clock."""
        lock = getattr(self.clock, "lock", None)
        return lock if lock is not None else contextlib.nullcontext()


def _transfer_error(what: str, detail: str) -> SwdTransferError:
    return SwdTransferError(
        f"SWD {what} failed ({detail}): check the SWD ribbon cable and that the device stays powered, then try again."
    )


def _report(progress: ProgressFn | None, done: int, total: int, phase: str) -> None:
    if progress is not None:
        progress(done, total, phase)


def _check_cancel(cancel: ClockEvent | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


def _touched_sectors(memory: SimTargetMemory, segments: Segments) -> list[tuple[Sector, int]]:
    """The sectors the image writes, in address order, each with how many image bytes fall into it."""
    weights: dict[Sector, int] = {}
    for address, data in segments:
        pos = 0
        while pos < len(data):
            sector = memory.sector_at(address + pos)
            if sector is None:
                raise ImageError(
                    f"the restore image writes 0x{address + pos:08x}, which is not flash on the "
                    f"{memory.geometry.mcu}: it is not the restore image for this device"
                )
            take = min(len(data) - pos, sector[0] + sector[1] - (address + pos))
            weights[sector] = weights.get(sector, 0) + take
            pos += take
    return sorted(weights.items())


def _kept_bytes(memory: SimTargetMemory, start: int, size: int, segments: Segments) -> list[tuple[int, bytes]]:
    """The sector's non-blank bytes outside the image: what keep_unwritten writes back after the erase."""
    covered = [
        (max(a, start), min(a + len(d), start + size)) for a, d in segments if a < start + size and start < a + len(d)
    ]
    kept = []
    pos = start
    for lo, hi in [*sorted(covered), (start + size, start + size)]:
        if lo > pos:
            data = memory.read(pos, lo - pos)
            kept += [(pos + m.start(), m.group()) for m in _NOT_BLANK.finditer(data)]
        pos = max(pos, hi)
    return kept


def _pages(segments: Segments) -> Iterator[tuple[int, bytes]]:
    """The image in PAGE-aligned pieces, the unit pyOCD's flash algorithms program."""
    for address, data in segments:
        pos = 0
        while pos < len(data):
            take = min(len(data) - pos, PAGE - (address + pos) % PAGE)
            yield address + pos, data[pos : pos + take]
            pos += take
