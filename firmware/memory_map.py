"""DfuSe memory maps: the alt-setting strings a DFU bootloader reports, parsed into segments.

A DfuSe device names each alt setting with a string such as
``@Internal Flash   /0x08000000/03*016Ka,01*016Kg,07*128Kg``: a name, then one or more
``/ADDRESS/`` groups of ``COUNT*SIZE[unit]LETTER`` sector runs. The letter says what the host may
do with those sectors (bit 0 read, bit 1 erase, bit 2 write, coded as ``letter - 'a' + 1``).
Source: ../shared/reference/usb-serial-protocols.md section 1.2.

    >>> m = parse_memory_map("@Internal Flash /0x08000000/02*016Ka,01*064Kg")
    >>> [(hex(s.start), s.size, s.writable) for s in m.segments]
    [('0x8000000', 16384, False), ('0x8004000', 16384, False), ('0x8008000', 65536, True)]
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_UNITS = {" ": 1, "": 1, "B": 1, "K": 1024, "M": 1024 * 1024}
_RUN = re.compile(r"^\s*(\d+)\*(\d+)\s*([ BKM]?)([a-g])\s*$")


class MemoryMapError(ValueError):
    """A DfuSe memory-map string that does not follow the DfuSe format."""


@dataclass(frozen=True)
class Sector:
    """One flash sector: where it starts and how big it is, in bytes, and what the host may do."""

    start: int
    size: int
    readable: bool
    erasable: bool
    writable: bool

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class MemoryMap:
    """The memory of one DFU alt setting: its name and its sectors in address order."""

    name: str
    segments: tuple[Sector, ...]

    def sectors_touching(self, start: int, length: int) -> tuple[Sector, ...]:
        """The sectors that a write of ``length`` bytes at ``start`` overlaps."""
        end = start + length
        return tuple(s for s in self.segments if s.start < end and start < s.end)

    def can_write(self, start: int, length: int) -> bool:
        """True if every byte of ``[start, start+length)`` lies in erasable, writable sectors."""
        if length <= 0:
            return False
        covered = start
        for sector in self.sectors_touching(start, length):
            if sector.start > covered or not (sector.erasable and sector.writable):
                return False
            covered = sector.end
        return covered >= start + length

    @property
    def protected(self) -> bool:
        """True when no sector is writable (Device Protection reports every sector erase-only)."""
        return bool(self.segments) and not any(s.writable for s in self.segments)


@functools.lru_cache(maxsize=256)  # a device names the same few maps at every open; a map is immutable
def parse_memory_map(text: str) -> MemoryMap:
    """Parse a DfuSe alt-setting string; raise MemoryMapError naming what is malformed."""
    if not text.startswith("@"):
        raise MemoryMapError(f"DfuSe memory map must start with '@': {text!r}")
    parts = text[1:].split("/")
    if len(parts) < 3 or len(parts) % 2 == 0:
        raise MemoryMapError(f"DfuSe memory map needs '/ADDRESS/SECTORS' groups: {text!r}")
    name = parts[0].strip()
    sectors: list[Sector] = []
    for address_text, runs_text in zip(parts[1::2], parts[2::2], strict=True):
        try:
            address = int(address_text.strip(), 16)
        except ValueError:
            raise MemoryMapError(f"bad address {address_text!r} in DfuSe memory map {text!r}") from None
        for run in runs_text.split(","):
            match = _RUN.match(run)
            if not match:
                raise MemoryMapError(f"bad sector run {run!r} in DfuSe memory map {text!r}")
            count, size, unit, letter = match.groups()
            sector_size = int(size) * _UNITS[unit]
            attrs = ord(letter) - ord("a") + 1
            for _ in range(int(count)):
                sectors.append(Sector(address, sector_size, bool(attrs & 1), bool(attrs & 2), bool(attrs & 4)))
                address += sector_size
    return MemoryMap(name, tuple(sectors))
