"""The simulated device's flash memories, one per DFU alt setting, with NOR rules and raw flash times.

:class:`SimFlash` holds every memory a platform's DFU bootloader exposes (alt 0 internal flash,
alt 1 DCT, alt 2 external flash where there is one), laid out by the platform's DfuSe strings
(``firmware.platforms.Platform.memory_map``). It is sparse: a sector costs memory only once it
holds something other than 0xFF, so an 8 MB external flash is free until written. Flash rules
are NOR's: erase works on whole sectors and sets every byte to 0xFF; programming can only clear
bits. Programming a byte that is neither erased nor already equal to the new value is an error
(:class:`FlashError` with DFU 1.1's errWRITE, or errVERIFY when the result cannot read back as
written because a bit would have to go from 0 to 1); the bits are cleared anyway, as on real NOR.
The DCT alt is different: the bootloader rewrites it in place (``dct_write_app_data``), so writes
there replace bytes and need no erase.

Raw device times (seconds) come from :data:`hw.flash_timing.FLASH_TIMINGS`, a table by MCU family and
memory kind (timing-model.md sections 0, 1.5, 2 and 8); the kiosk uses the same table for its figures.

    >>> from firmware.platforms import platform_by_name
    >>> flash = SimFlash(platform_by_name("boron"))
    >>> flash.write(0, 0x30000, b"\\x00\\x01")
    >>> flash.read(0, 0x30000, 3).hex(), flash.allocated_bytes()
    ('0001ff', 4096)
    >>> page = flash.sector_at(0, 0x30000)
    >>> round(flash.erase_time_s(page), 3), round(flash.write_time_s(4096), 4)
    (0.085, 0.042)
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from firmware.memory_map import MemoryMap, Sector
from firmware.platforms import Platform
from hw.dfu import DfuStatus
from hw.flash_timing import DEFAULT_TIMING, FLASH_TIMINGS, MANAGED_KINDS, FlashTiming, memory_kind

ERASED = 0xFF


class FlashError(Exception):
    """A flash operation failed; ``status`` is the DFU 1.1 status that says how (errADDRESS, ...)."""

    def __init__(self, status: DfuStatus, message: str):
        self.status = status
        super().__init__(message)


class _Memory:
    """One alt setting's memory: its sectors (for bisect) and the contents of the written ones."""

    def __init__(self, memory: MemoryMap, timing: FlashTiming, kind: str):
        self.map = memory
        self.timing = timing
        self.kind = kind
        self.sectors = memory.segments
        self.starts = [s.start for s in memory.segments]
        self.data: dict[int, bytearray] = {}  # sector start -> contents; absent = all 0xFF

    def sector_at(self, address: int) -> Sector | None:
        i = bisect.bisect_right(self.starts, address) - 1
        if i >= 0 and address < self.sectors[i].end:
            return self.sectors[i]
        return None

    def pieces(self, address: int, length: int) -> Iterator[tuple[Sector, int, int, int]]:
        """(sector, offset in sector, offset in data, length) for every sector the range covers;
        FlashError(errADDRESS) where the range leaves the memory."""
        done = 0
        while done < length:
            sector = self.sector_at(address + done)
            if sector is None:
                raise FlashError(
                    DfuStatus.ERR_ADDRESS, f"{address + done:#x} is outside {self.map.name!r} (a {length}-byte access)"
                )
            offset = address + done - sector.start
            take = min(sector.size - offset, length - done)
            yield sector, offset, done, take
            done += take


class SimFlash:
    """Every DFU memory of a simulated device (alt 0, 1, ...); addresses are the DfuSe map's."""

    def __init__(self, platform: Platform):
        self.platform = platform
        self._memories: list[_Memory] = []
        for alt in range(len(platform.dfu_alts)):
            memory = platform.memory_map(alt)
            kind = memory_kind(memory)
            timing = FLASH_TIMINGS.get((platform.mcu.name, kind), DEFAULT_TIMING)
            self._memories.append(_Memory(memory, timing, kind))

    @property
    def alt_count(self) -> int:
        return len(self._memories)

    def memory_map(self, alt: int) -> MemoryMap:
        return self._memory(alt).map

    def kind(self, alt: int) -> str:
        return self._memory(alt).kind

    def timing(self, alt: int = 0) -> FlashTiming:
        return self._memory(alt).timing

    def sector_at(self, alt: int, address: int) -> Sector | None:
        """The sector holding ``address`` in alt ``alt``, or None outside the memory."""
        return self._memory(alt).sector_at(address)

    def sectors(self, alt: int, address: int, length: int) -> list[Sector]:
        """The sectors ``[address, address + length)`` covers; FlashError(errADDRESS) if it leaves the memory."""
        return [piece[0] for piece in self._memory(alt).pieces(address, length)]

    # --- device time ----------------------------------------------------------------------------------
    def erase_time_s(self, sector: Sector, alt: int = 0, *, blank: bool = False) -> float:
        """Seconds the device needs to erase ``sector`` of alt ``alt`` (``blank``: it already is)."""
        return self._memory(alt).timing.erase_time_s(sector.size, blank)

    def write_time_s(self, nbytes: int, alt: int = 0) -> float:
        """Seconds the device needs to program ``nbytes`` bytes into alt ``alt``."""
        return self._memory(alt).timing.write_time_s(nbytes)

    # --- operations -------------------------------------------------------------------------------------
    def erase(self, alt: int, address: int) -> Sector:
        """Erase the sector holding ``address`` (every byte 0xFF); returns it."""
        memory = self._memory(alt)
        sector = memory.sector_at(address)
        if sector is None:
            raise FlashError(DfuStatus.ERR_ADDRESS, f"{address:#x} is outside {memory.map.name!r}")
        memory.data.pop(sector.start, None)  # erased sectors cost nothing
        return sector

    def is_erased(self, alt: int, address: int, length: int) -> bool:
        memory = self._memory(alt)
        for sector, offset, _, take in memory.pieces(address, length):
            held = memory.data.get(sector.start)
            if held is not None and held.count(ERASED, offset, offset + take) != take:
                return False
        return True

    def write(self, alt: int, address: int, data: bytes) -> None:
        """Program ``data`` at ``address`` by NOR rules (in place on a DCT); FlashError says why not."""
        memory = self._memory(alt)
        pieces = list(memory.pieces(address, len(data)))  # the whole range is checked before a byte moves
        managed = memory.kind in MANAGED_KINDS
        failure: FlashError | None = None
        for sector, offset, at, take in pieces:
            new = data[at : at + take]
            held = memory.data.get(sector.start)
            if held is None:
                if new.count(ERASED) == take:
                    continue  # 0xFF over 0xFF changes nothing and costs no memory
                held = memory.data[sector.start] = bytearray(b"\xff" * sector.size)
            old = held[offset : offset + take]
            if managed or old == new or old.count(ERASED) == take or _fits(old, new):
                held[offset : offset + take] = new
                continue
            failure = failure or _nor_failure(old, new, sector.start + offset)
            # What NOR does anyway: a programmed bit stays 0, an erased one takes the new value.
            held[offset : offset + take] = (int.from_bytes(old, "big") & int.from_bytes(new, "big")).to_bytes(
                take, "big"
            )
        if failure is not None:
            raise failure

    def read(self, alt: int, address: int, length: int) -> bytes:
        """``length`` bytes from ``address`` (0xFF where nothing was written)."""
        memory = self._memory(alt)
        out = bytearray()
        for sector, offset, _, take in memory.pieces(address, length):
            held = memory.data.get(sector.start)
            out += held[offset : offset + take] if held is not None else b"\xff" * take
        return bytes(out)

    def load(self, alt: int, address: int, data: bytes) -> None:
        """Put ``data`` in place with no rules at all, as a factory programmer would (scenario set-up)."""
        memory = self._memory(alt)
        for sector, offset, at, take in memory.pieces(address, len(data)):
            held = memory.data.setdefault(sector.start, bytearray(b"\xff" * sector.size))
            held[offset : offset + take] = data[at : at + take]

    def allocated_bytes(self) -> int:
        """Bytes of host memory the written sectors take (what sparseness saves is the rest)."""
        return sum(len(b) for m in self._memories for b in m.data.values())

    def _memory(self, alt: int) -> _Memory:
        if not 0 <= alt < len(self._memories):
            raise FlashError(DfuStatus.ERR_TARGET, f"{self.platform.name} has no DFU alt setting {alt}")
        return self._memories[alt]


def _fits(old: bytes, new: bytes) -> bool:
    """Every byte is erased or already holds its new value (the slow check, for mixed ranges)."""
    return all(o in (ERASED, n) for o, n in zip(old, new, strict=True))


def _nor_failure(old: bytes, new: bytes, address: int) -> FlashError:
    """Programming over bytes that are not erased: errVERIFY when a bit would have to rise from 0
    to 1 (the read-back cannot match), else errWRITE (the bits fit, but the bytes were programmed)."""
    first = next(i for i, (o, n) in enumerate(zip(old, new, strict=True)) if o != n and o != ERASED)
    cannot_rise = any(n & ~o & 0xFF for o, n in zip(old, new, strict=True))
    status = DfuStatus.ERR_VERIFY if cannot_rise else DfuStatus.ERR_WRITE
    return FlashError(status, f"programming over non-erased flash at {address + first:#x}")
