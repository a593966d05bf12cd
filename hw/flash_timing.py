"""Raw flash times of Particle devices, by MCU family and memory: what the device's own timings demand.

Used by the kiosk to report ``device_busy_s`` (the time a write needs by the device's own flash speed,
the floor any host can reach) and by the simulator to charge device time. Sources:
../shared/reference/timing-model.md sections 0, 1.5, 2 and 8; rows it does not cover are UNVERIFIED.

    >>> from firmware.platforms import platform_by_name
    >>> round(device_busy_s(platform_by_name("boron"), "dfu", 4096, 0x30000), 3)
    0.127
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware.memory_map import MemoryMap
from firmware.platforms import Platform

if TYPE_CHECKING:
    from hw.dfu import FlashOp


@dataclass(frozen=True)
class FlashTiming:
    """Raw flash times of one memory.

    ``erase_s`` maps a sector size in bytes to the seconds its erase takes; ``program_unit`` bytes
    (a word, or a QSPI page) are programmed in ``program_s`` seconds each. ``skip_blank_erase``: the
    driver reads a sector first and skips the erase when it is already blank (rtl872x exflash_hal).
    """

    erase_s: dict[int, float]
    program_unit: int
    program_s: float
    skip_blank_erase: bool = False
    source: str = ""

    def erase_time_s(self, size: int, blank: bool = False) -> float:
        if blank and self.skip_blank_erase:
            return 0.0  # a 4 KB XIP read-check, well under a millisecond
        if size in self.erase_s:
            return self.erase_s[size]
        # A size the table lacks: scale the nearest listed one (erase time grows with the sector).
        nearest = min(self.erase_s, key=lambda s: abs(s - size))
        return self.erase_s[nearest] * size / nearest

    def write_time_s(self, nbytes: int) -> float:
        return math.ceil(nbytes / self.program_unit) * self.program_s if nbytes > 0 else 0.0


KB = 1024
_NRF_QSPI = FlashTiming(
    {4 * KB: 0.050, 16 * KB: 0.200},
    256,
    0.015 / 16,  # 15 ms per 4 KB
    source="timing-model.md 1.5: nRF52840 external QSPI, 50 ms erase / 15 ms write per 4 KB (UNVERIFIED)",
)
_RTL_QSPI = FlashTiming(
    {4 * KB: 0.045, 16 * KB: 0.180},
    256,
    0.0005,
    skip_blank_erase=True,
    source="timing-model.md 1.3, 1.5, 2, 8: GD25-class 4 KB erase 45 ms typ, 256 B page 0.5 ms typ, "
    "blank sectors skipped (exflash_hal erase_common)",
)
_STM32F2 = FlashTiming(
    {16 * KB: 0.25, 64 * KB: 0.55, 128 * KB: 1.0},
    4,
    16e-6,
    source="timing-model.md 0 #9, 2, 8: STM32F2 x32 erase 16/64/128 KB 250/550/1000 ms typ, word 16 us typ",
)

#: (MCU family, memory kind) -> raw flash times. Memory kinds are "internal", "dct", "external".
FLASH_TIMINGS: dict[tuple[str, str], FlashTiming] = {
    ("nrf52840", "internal"): FlashTiming(
        {4 * KB: 0.085},
        4,
        41e-6,
        source="timing-model.md 0 #8, 1.5, 2, 8: nRF52840 page erase 85 ms, word write 41 us (42 ms per 4 KB)",
    ),
    ("nrf52840", "external"): _NRF_QSPI,
    # The Gen3 DCT is kept by Device OS in external flash: priced as the QSPI part. UNVERIFIED.
    ("nrf52840", "dct"): _NRF_QSPI,
    ("rtl872x", "internal"): _RTL_QSPI,
    ("rtl872x", "dct"): _RTL_QSPI,  # same QSPI part
    ("stm32f2xx", "internal"): _STM32F2,
    ("stm32f2xx", "dct"): _STM32F2,  # DCT sectors 1-2 of the internal flash
    # P1's serial flash: not in the reference; priced as Gen3's QSPI NOR. UNVERIFIED.
    ("stm32f2xx", "external"): _NRF_QSPI,
    # The Core: not in the reference. STM32F103 datasheet typ 2 KB page erase 20 ms, half-word 52.5 us;
    # SST25 4 KB sector erase 18 ms, 10 us per 2 bytes. UNVERIFIED.
    ("stm32f1xx", "internal"): FlashTiming({2 * KB: 0.020}, 2, 52.5e-6, source="STM32F103 datasheet (UNVERIFIED)"),
    ("stm32f1xx", "external"): FlashTiming({4 * KB: 0.018}, 2, 10e-6, source="SST25VF016B datasheet (UNVERIFIED)"),
}
#: For a family or memory the table lacks (pre-release and third-party platforms).
DEFAULT_TIMING = _NRF_QSPI

# Which kind of memory an alt setting is, from the name in its DfuSe string.
_KINDS = (("DCT", "dct"), ("Internal", "internal"), ("External", "external"), ("Serial", "external"),
          ("SPI", "external"))  # fmt: skip
#: Memories the bootloader rewrites in place (read-modify-write): no NOR rules, no erase needed.
MANAGED_KINDS = frozenset({"dct"})


def memory_kind(memory: MemoryMap) -> str:
    """The kind of memory ("internal", "dct", "external") from its DfuSe name: ``@Internal Flash`` -> internal."""
    return next((kind for word, kind in _KINDS if word.lower() in memory.name.lower()), "external")


#: Applying a module received in normal mode (control request or YModem): the device copies it into
#: place at its internal flash speed, then resets. NCP firmware goes to the ESP32 over a UART: 20 KiB/s is
#: an estimate (UNVERIFIED; Particle's CLI allows 4 minutes for an NCP update).
NCP_UPDATE_BYTES_PER_S = 20 * 1024


def timing_for(platform: Platform, kind: str = "internal") -> FlashTiming:
    return FLASH_TIMINGS.get((platform.mcu.name, kind), DEFAULT_TIMING)


def write_busy_s(platform: Platform, address: int | None, nbytes: int, alt: int = 0) -> float:
    """Erase the sectors ``nbytes`` at ``address`` touch, then program them (seconds)."""
    memory = platform.memory_map(alt)
    timing = timing_for(platform, memory_kind(memory) if memory else "internal")
    if memory is not None and address is not None:
        sectors = memory.sectors_touching(address, nbytes)
        erase = sum(timing.erase_time_s(s.size) for s in sectors if s.erasable)
    else:
        size = min(timing.erase_s)
        erase = math.ceil(nbytes / size) * timing.erase_s[size]
    return erase + timing.write_time_s(nbytes)


def device_busy_s(platform: Platform, mechanism: str, nbytes: int, address: int | None = None,
                  function: str | None = None) -> float:  # fmt: skip
    """Seconds the device itself needs to take ``nbytes`` by ``mechanism`` ("dfu", "control-request",
    "ymodem"): flash erase and program time; for NCP firmware, the UART to the NCP."""
    if function == "ncp":
        return nbytes / NCP_UPDATE_BYTES_PER_S
    return write_busy_s(platform, address, nbytes)


#: SWD throughput (UNVERIFIED): 1 MHz SWD moves at most 125 KB/s of raw bits; with CMSIS-DAP packet overhead
#: about half of that. Shared by the simulated probe and the kiosk's figures.
SWD_BYTES_PER_S = 64 * 1024
#: Erasing the whole chip through its debug port (seconds): nRF52840 ERASEALL 169 ms (UNVERIFIED), STM32F2
#: mass erase 8 s typical (timing-model.md 2).
MASS_ERASE_S = {"nrf52840": 0.169, "stm32f2xx": 8.0}
SWD_PAGE = 4096  # bytes per program step (pyOCD's flash page for both families)


def swd_restore_floor_s(platform: Platform, segments: tuple[tuple[int, bytes], ...], mass_erased: bool) -> float:
    """The least device time an SWD restore of ``segments`` takes: the mass erase (when the restore does
    one), each page programmed at the slower of flash and wire, and read back once over the wire. Sector
    erases are left out: pyOCD skips blank ones, so they are not certain to be needed."""
    timing = timing_for(platform, "internal")
    total = MASS_ERASE_S.get(platform.mcu.name, 0.0) if mass_erased else 0.0
    for _address, data in segments:
        for offset in range(0, len(data), SWD_PAGE):
            page = len(data[offset : offset + SWD_PAGE])
            total += max(timing.write_time_s(page), page / SWD_BYTES_PER_S) + page / SWD_BYTES_PER_S
    return total


def dfu_work_s(platform: Platform, ops: Iterable[FlashOp], blank: dict[tuple[int, int], int] | None = None) -> float:
    """Device seconds of the DFU work a client gave the device (``hw.dfu.DfuStats.flash_ops``, in order,
    retries included).

    ``blank`` maps (alt, sector start) to the sector's end for every sector this host erased and has not
    written since; it is updated as the ops are priced, so a caller that keeps it across attempts prices
    a retry's erase of a sector it left blank as the device does (on RTL872x: a read-check, not an erase).
    """
    timings: dict[int, FlashTiming] = {}  # per alt: memory_map() parses the layout string
    blank = {} if blank is None else blank
    total = 0.0
    for op in ops:
        if op.alt not in timings:
            memory = platform.memory_map(op.alt)
            timings[op.alt] = timing_for(platform, memory_kind(memory) if memory else "internal")
        if op.kind == "erase":
            total += timings[op.alt].erase_time_s(op.size, blank=(op.alt, op.address) in blank)
            blank[(op.alt, op.address)] = op.address + op.size
        else:
            total += timings[op.alt].write_time_s(op.size)
            for key in [k for k, end in blank.items() if k[0] == op.alt and k[1] < op.address + op.size
                        and op.address < end]:  # fmt: skip
                del blank[key]
    return total
