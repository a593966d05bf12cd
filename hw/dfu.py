"""The DfuSe client: write, verify, read and leave on a Particle device in DFU mode, over pyusb.

Protocol facts are in ../shared/reference/usb-serial-protocols.md 1.2-1.5 and timing-model.md 1:
interface 0 with one alt setting per memory (its iInterface string is a DfuSe memory map), the
functional descriptor's wTransferSize (4096 on every Particle bootloader), DfuSe commands sent as
DNLOAD with wValue 0 (0x21 set address pointer, 0x41 erase one sector, 0xFA enter safe mode),
data blocks as DNLOAD with wValue >= 2, read-back as UPLOAD with wValue >= 2. The bootloaders report
bwPollTimeout 0 and do the flash work inside the request that follows a DNBUSY status, so a DNLOAD
costs exactly two GETSTATUS: the one that answers dfuDNBUSY and the one the device holds until the
work is done. The client sends nothing more than that on the normal path (one SET_ADDRESS per
contiguous run, see :meth:`DfuDevice._block_for`) and recovers from stalls, cable glitches and
dfuERROR as particle-usb does. Every wait goes through the injected :class:`hw.clock.Clock`; times
are seconds (bwPollTimeout is milliseconds on the wire).

    >>> DfuGetStatus.parse(bytes([0, 0, 0, 0, 4, 0]))
    DfuGetStatus(status=0, poll_timeout_ms=0, state=4, i_string=0)
    >>> DfuGetStatus(0, 500, 5, 0).encode().hex()
    '00f401000500'
    >>> status_name(DfuStatus.ERR_VENDOR), state_name(DfuState.DNLOAD_IDLE)
    ('errVENDOR', 'dfuDNLOAD_IDLE')

Typical use, on a device found by ``hw.usb_identity.find_particle_devices``::

    with DfuDevice(found.usb_device, RealClock()) as dfu:
        dfu.write(0x30000, system_part, progress=lambda done, total, phase: ...)
        dfu.leave()
"""

from __future__ import annotations

import errno
import re
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

import usb.core
import usb.util

from firmware.memory_map import MemoryMap, MemoryMapError, Sector, parse_memory_map
from hw.clock import Cancelled, Clock, ClockEvent
from hw.usb_identity import still_attached

# --- wire constants (usb-serial-protocols.md 1.3-1.4) -----------------------------------------------

DFU_OUT, DFU_IN = 0x21, 0xA1  # class request to interface 0
DFU_INTERFACE = 0
DFU_CLASS = (0xFE, 0x01, 0x02)  # application specific, DFU, DFU mode
DT_DFU_FUNCTIONAL = 0x21
STATUS_LENGTH = 6
#: The bootloaders' own block size in the address formula (wBlockNum - 2) x 4096 + pointer.
DEVICE_BLOCK_SIZE = 4096
#: particle-usb's transfer size when a device has no DFU functional descriptor.
DEFAULT_TRANSFER_SIZE = 1024
#: String descriptor with the Device Protection state, ``sm=o|p|s``: bootloaders of Device OS >= 6.2.0
#: (device-os bootloader/src/nRF52840/usbd_device.cpp STRING_IDX_DEVICE_STATE, tag v6.2.0; not in 6.1.2,
#: which particle-usb's fallback comment names).
PROTECTION_STRING_INDEX = 0xFA
LANGID_EN_US = 0x0409
MAX_BLOCK_NUMBER = 0xFFFF  # wValue is 16 bits

# particle-usb: a stalled DfuSe command is retried 4 more times, 1 s apart.
STALL_RETRIES = 4
STALL_RETRY_DELAY_S = 1.0
#: I/O errors and timeouts (a flaky cable) are retried at once, this many times per step.
GLITCH_RETRIES = 4
#: How long a device may keep answering dfuDNBUSY / dfuMANIFEST_SYNC before the client gives up.
BUSY_LIMIT_S = 60.0
_RESYNC_ATTEMPTS = 6


class DfuRequest(IntEnum):
    """bRequest of the DFU class requests."""

    DETACH = 0
    DNLOAD = 1
    UPLOAD = 2
    GETSTATUS = 3
    CLRSTATUS = 4
    GETSTATE = 5
    ABORT = 6


class DfuState(IntEnum):
    """bState (DFU 1.1 section 6.1.2)."""

    APP_IDLE = 0
    APP_DETACH = 1
    IDLE = 2
    DNLOAD_SYNC = 3
    DNBUSY = 4
    DNLOAD_IDLE = 5
    MANIFEST_SYNC = 6
    MANIFEST = 7
    MANIFEST_WAIT_RESET = 8
    UPLOAD_IDLE = 9
    ERROR = 10


class DfuStatus(IntEnum):
    """bStatus (DFU 1.1 section 6.1.2)."""

    OK = 0x00
    ERR_TARGET = 0x01
    ERR_FILE = 0x02
    ERR_WRITE = 0x03
    ERR_ERASE = 0x04
    ERR_CHECK_ERASED = 0x05
    ERR_PROG = 0x06
    ERR_VERIFY = 0x07
    ERR_ADDRESS = 0x08
    ERR_NOTDONE = 0x09
    ERR_FIRMWARE = 0x0A
    ERR_VENDOR = 0x0B
    ERR_USBR = 0x0C
    ERR_POR = 0x0D
    ERR_UNKNOWN = 0x0E
    ERR_STALLEDPKT = 0x0F


class DfuseCommand(IntEnum):
    """The first byte of a DNLOAD with wValue 0 (0xFA and 0xFB are Particle's)."""

    GET_COMMANDS = 0x00
    SET_ADDRESS_POINTER = 0x21
    ERASE = 0x41
    READ_UNPROTECT = 0x92
    ENTER_SAFE_MODE = 0xFA
    CLEAR_SECURITY_MODE_OVERRIDE = 0xFB


def state_name(state: int | None) -> str:
    """``state_name(10) == 'dfuERROR'``; numbers outside DFU 1.1 stay numbers."""
    if state is None:
        return "unknown"
    try:
        return "dfu" + DfuState(state).name if state >= DfuState.IDLE else DfuState(state).name.lower()
    except ValueError:
        return f"state {state}"


def status_name(status: int | None) -> str:
    """``status_name(8) == 'errADDRESS'``."""
    if status is None:
        return "unknown"
    try:
        name = DfuStatus(status).name
    except ValueError:
        return f"status {status}"
    return "OK" if name == "OK" else "err" + name[4:]


@dataclass(frozen=True)
class DfuGetStatus:
    """A DFU_GETSTATUS reply: status, poll timeout (milliseconds, u24), state, iString."""

    status: int
    poll_timeout_ms: int
    state: int
    i_string: int

    @classmethod
    def parse(cls, data: bytes) -> DfuGetStatus:
        if len(data) != STATUS_LENGTH:
            raise ValueError(f"a DFU status is {STATUS_LENGTH} bytes, not {len(data)}")
        return cls(data[0], data[1] | data[2] << 8 | data[3] << 16, data[4], data[5])

    def encode(self) -> bytes:
        poll = self.poll_timeout_ms
        return bytes([self.status, poll & 0xFF, poll >> 8 & 0xFF, poll >> 16 & 0xFF, self.state, self.i_string])


# --- errors --------------------------------------------------------------------------------------------


class DfuError(Exception):
    """A DFU operation failed; ``status`` and ``state`` are the device's, when it said so."""

    def __init__(self, status: int | None = None, state: int | None = None, message: str = ""):
        self.status = status
        self.state = state
        detail = f"{status_name(status)} in {state_name(state)}" if status is not None else ""
        super().__init__(": ".join(p for p in (message, detail) if p) or "DFU failure")


class DfuProtected(DfuError):
    """Device Protection: the memory may not be written or read (errVENDOR, or an erase-only map)."""


class DfuAddressError(DfuError):
    """The address range is outside the memory map, or lies on sectors that may not be written."""


class DfuDisconnected(DfuError):
    """The device left the bus (unplugged, reset, dropped out of DFU): find it again."""


class DfuVerifyError(DfuError):
    """The read-back differs from what was written."""


class DfuUnsupported(DfuError):
    """The bootloader does not offer the DfuSe command (GET_COMMANDS does not list it)."""


# Device statuses that have their own error type; the rest are plain DfuError.
_STATUS_ERRORS: dict[int, type[DfuError]] = {
    DfuStatus.ERR_VENDOR: DfuProtected,  # Particle's bootloaders: "Device is in protected mode"
    DfuStatus.ERR_ADDRESS: DfuAddressError,
    DfuStatus.ERR_VERIFY: DfuVerifyError,
}


class _Stall(Exception):
    """The device stalled a transfer (busy, or no transition for that request in its state)."""


class _Glitch(Exception):
    """An I/O error or a timeout: the transfer may or may not have reached the device."""


class _DeviceSaid(Exception):
    """The device reported a failure status; carries the GETSTATUS reply."""

    def __init__(self, reply: DfuGetStatus, what: str):
        self.reply = reply
        self.what = what
        super().__init__(what)


def _gone(exc: usb.core.USBError) -> bool:
    return exc.errno == errno.ENODEV or getattr(exc, "backend_error_code", None) == -4


# States an ABORT brings back to dfuIDLE (DFU 1.1 and the Particle bootloaders alike).
_ABORTABLE = frozenset({DfuState.IDLE, DfuState.DNLOAD_SYNC, DfuState.DNLOAD_IDLE, DfuState.MANIFEST_SYNC,
                        DfuState.UPLOAD_IDLE})  # fmt: skip
# States in which GETSTATUS must be asked again (after bwPollTimeout) before the command is over.
_BUSY = frozenset({DfuState.DNBUSY, DfuState.MANIFEST_SYNC})
_DOWNLOAD_READY = (DfuState.IDLE, DfuState.DNLOAD_IDLE)
_UPLOAD_READY = (DfuState.IDLE, DfuState.UPLOAD_IDLE)
# What GETSTATUS says after the zero-length DNLOAD: Gen3/rtl872x dfuMANIFEST, Gen2 dfuDNLOAD_IDLE.
_LEFT = frozenset({DfuState.MANIFEST, DfuState.DNLOAD_IDLE, DfuState.MANIFEST_WAIT_RESET})
_PROTECTION_STATES = {"o": "open", "p": "protected", "s": "service"}
_PROTECTION_RE = re.compile(r"sm=([ops])")

#: ``progress(bytes_done, bytes_total, phase)``, phase "erase", "write" or "verify" (or "read").
Progress = Callable[[int, int, str], None]


class FlashOp(NamedTuple):
    """One piece of flash work the device took: an "erase" of the sector at ``address`` (``size`` bytes)
    or a "write" of ``size`` bytes at ``address``, in alt setting ``alt``'s map."""

    kind: str
    alt: int
    address: int
    size: int


@dataclass
class DfuStats:
    """What the client did: control transfers by request, DfuSe commands, retries, host CPU seconds."""

    transfers: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    #: transfers that failed on the wire (an I/O error: not a stall, a timeout or the device leaving), each
    #: retried; on a sound cable and hub there are none, so any says "check the USB cable"
    io_errors: int = 0
    cpu_s: float = 0.0
    bytes_written: int = 0
    bytes_read: int = 0
    #: what the device was given to do, in order, as it took it (retries included): each sector erased and
    #: each block written; the device time they cost is priced by hw.flash_timing.dfu_work_s
    flash_ops: list[FlashOp] = field(default_factory=list)

    @property
    def total_transfers(self) -> int:
        return sum(self.transfers.values())


def plan_write(memory: MemoryMap, address: int, length: int) -> tuple[Sector, ...]:
    """The sectors a write of ``length`` bytes at ``address`` touches; raises before anything is sent.

    DfuProtected when the map is erase-only (Device Protection), DfuAddressError when the range
    leaves the map or lies on sectors that cannot be written (a bootloader or the MBR).
    """
    if length <= 0:
        raise ValueError("nothing to write")
    sectors = memory.sectors_touching(address, length)
    covered = address
    for sector in sectors:
        if sector.start > covered:
            break
        covered = sector.end
    if not sectors or covered < address + length:
        raise DfuAddressError(message=f"{address:#x}+{length} is outside {memory.name!r}")
    if memory.protected or any(s.erasable and not (s.readable or s.writable) for s in sectors):
        raise DfuProtected(message=f"{memory.name!r} is erase-only: the device is protected")
    blocked = [s for s in sectors if not s.writable]
    if blocked:
        raise DfuAddressError(message=f"{blocked[0].start:#x} in {memory.name!r} may not be written")
    return sectors


class DfuDevice:
    """One Particle device in DFU mode, over a pyusb ``usb.core.Device``.

    ``transfer_timeout_s`` bounds each control transfer (seconds). Not thread-safe: one caller per
    device. Counters for benchmarks are in :attr:`stats`.
    """

    def __init__(self, usb_device: usb.core.Device, clock: Clock, *, transfer_timeout_s: float = 5.0):
        self.device = usb_device
        self.clock = clock
        self.transfer_timeout_s = transfer_timeout_s
        self.transfer_size = DEFAULT_TRANSFER_SIZE
        self.attributes = 0
        self.alt_names: tuple[str | None, ...] = ()
        self.stats = DfuStats()
        self._maps: list[MemoryMap | None] = []
        self._alt: int | None = None
        self._state: DfuState | None = None  # what the device is in, as far as the client knows
        self._pointer: int | None = None  # the address pointer the device holds, when known
        self._commands: bytes | None = None
        self._opened = False
        self._cpu_depth = 0

    # --- opening ------------------------------------------------------------------------------------
    def __enter__(self) -> DfuDevice:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Claim interface 0, read wTransferSize and every alt setting's memory map, select alt 0."""
        with self._cpu():
            try:
                usb.util.claim_interface(self.device, DFU_INTERFACE)
                alts = sorted(
                    (i for i in self.device.get_active_configuration() if i.bInterfaceNumber == DFU_INTERFACE),
                    key=lambda i: i.bAlternateSetting,
                )
                if not alts or any(
                    (i.bInterfaceClass, i.bInterfaceSubClass, i.bInterfaceProtocol) != DFU_CLASS for i in alts
                ):
                    raise DfuError(message="interface 0 is not a DFU-mode interface")
                self.transfer_size, self.attributes = _functional_descriptor(alts)
                self.alt_names = tuple(self._string(a.iInterface) if a.iInterface else None for a in alts)
            except usb.core.USBError as exc:
                raise self._usb_failure(exc, "open") from exc
            self._maps = [_parse_map(name) for name in self.alt_names]
            self._opened = True
            self._alt = None
            self._select(0)

    def close(self) -> None:
        """Release the interface and pyusb's handle (works on a device that has gone)."""
        with suppress(usb.core.USBError, ValueError):  # a device that has left: nothing to release
            usb.util.release_interface(self.device, DFU_INTERFACE)
        usb.util.dispose_resources(self.device)
        self._opened = False

    @property
    def alt_count(self) -> int:
        return len(self.alt_names)

    @property
    def transfers(self) -> int:
        """Control transfers made so far (all requests; ``stats.transfers`` has them by request)."""
        return self.stats.total_transfers

    def memory_map(self, alt: int = 0) -> MemoryMap:
        """The memory of alt setting ``alt`` as the device describes it (after :meth:`open`)."""
        self._require_open()
        if not 0 <= alt < len(self._maps):
            raise DfuAddressError(message=f"the device has no alt setting {alt} (it has {len(self._maps)})")
        memory = self._maps[alt]
        if memory is None:
            raise DfuError(message=f"alt setting {alt} has no DfuSe memory map: {self.alt_names[alt]!r}")
        return memory

    # --- protection -----------------------------------------------------------------------------------
    def protection_state(self) -> str | None:
        """The Device Protection state: "open", "protected" or "service" from string 0xFA; without
        it (bootloaders before Device OS 6.2.0) "protected" if alt 0 is erase-only, else None."""
        with self._cpu():
            self._require_open()
            text = None
            try:
                text = self._string(PROTECTION_STRING_INDEX)
            except usb.core.USBError as exc:
                if _gone(exc):
                    raise DfuDisconnected(message="reading the protection state") from exc
            except ValueError:
                pass  # not a string descriptor: as good as none
            found = _PROTECTION_RE.search(text or "")
            if found:
                return _PROTECTION_STATES[found.group(1)]
            memory = self._maps[0] if self._maps else None
            if (
                memory is not None
                and memory.segments
                and all(s.erasable and not s.readable and not s.writable for s in memory.segments)
            ):
                return "protected"
            return None

    # --- write / read -------------------------------------------------------------------------------
    def write(
        self,
        address: int,
        data: bytes,
        *,
        alt: int = 0,
        verify: bool = True,
        progress: Progress | None = None,
        cancel: ClockEvent | None = None,
    ) -> None:
        """Erase exactly the sectors ``data`` touches, write it in wTransferSize blocks, read it back.

        ``address`` is a byte address in alt ``alt``'s map. Refuses before sending anything when
        the range is not writable (DfuProtected, DfuAddressError). Raises DfuError with the
        device's status and state, DfuVerifyError, DfuDisconnected, or hw.clock.Cancelled.
        """
        with self._cpu():
            self._require_open()
            data = bytes(data)
            sectors = plan_write(self.memory_map(alt), address, len(data))
            self._select(alt, cancel)
            erasable = [s for s in sectors if s.erasable]  # DCT-like memories are written in place
            erase_total, erased = sum(s.size for s in erasable), 0
            for sector in erasable:
                self._retrying("erase", lambda s=sector: self._command(DfuseCommand.ERASE, s.start, cancel, s.size),
                               cancel)  # fmt: skip
                erased += sector.size
                _report(progress, erased, erase_total, "erase")
            self._download(address, data, progress, cancel)
            self.stats.bytes_written += len(data)
            if verify and all(s.readable for s in sectors):
                back = self._upload(address, len(data), progress, "verify", cancel)
                if back != data:
                    at = next(i for i, (a, b) in enumerate(zip(back, data, strict=True)) if a != b)
                    raise DfuVerifyError(message=f"read-back differs at {address + at:#x}")

    def read(
        self,
        address: int,
        length: int,
        alt: int = 0,
        *,
        progress: Progress | None = None,
        cancel: ClockEvent | None = None,
    ) -> bytes:
        """``length`` bytes from ``address`` of alt ``alt`` (UPLOAD in wTransferSize blocks)."""
        with self._cpu():
            self._require_open()
            memory = self.memory_map(alt)
            sectors = memory.sectors_touching(address, length) if length > 0 else ()
            if length <= 0 or sum(min(s.end, address + length) - max(s.start, address) for s in sectors) < length:
                raise DfuAddressError(message=f"{address:#x}+{length} is outside {memory.name!r}")
            if not all(s.readable for s in sectors):
                kind = DfuProtected if memory.protected else DfuAddressError
                raise kind(message=f"{memory.name!r} may not be read there")
            self._select(alt, cancel)
            return self._upload(address, length, progress, "read", cancel)

    # --- leaving ------------------------------------------------------------------------------------
    def leave(self, cancel: ClockEvent | None = None) -> bool:
        """Zero-length DNLOAD: the device manifests and resets 500 ms later (usb-serial-protocols 1.4).

        True when the device confirmed (dfuMANIFEST; dfuDNLOAD_IDLE on Gen2), False when it dropped
        off the bus first, which is the expected end of a leave and counts as success: the caller
        verified the data already. Raises DfuDisconnected only if it was gone before the request.
        """
        with self._cpu():
            self._require_open()
            self._ensure(_DOWNLOAD_READY, cancel)
            stalls = 0
            for attempt in range(GLITCH_RETRIES + 1):
                garbled = False
                try:
                    self._dnload(2, b"")  # particle-usb: wValue 2, no address pointer first
                except _Stall:
                    stalls += 1
                    if stalls > STALL_RETRIES:
                        if attempt:
                            return False  # an earlier request was taken: the device is resetting
                        raise DfuError(*self._last_status(), message="the device refused to leave") from None
                    self.clock.sleep(STALL_RETRY_DELAY_S, cancel)
                    continue
                except (_Glitch, DfuDisconnected):
                    garbled = True  # it may have got there: its status tells
                try:
                    reply = self._leave_status(cancel)
                except (_Glitch, _Stall, DfuDisconnected):
                    return False  # dropping off the bus is how a leave ends
                if garbled and reply.state == DfuState.DNLOAD_IDLE and not self._manifesting():
                    # A Gen2 bootloader says dfuDNLOAD_IDLE while it manifests too (ST's DFU_Req_GETSTATUS,
                    # "to please dfu-util"), so after a garbled leave that reply cannot tell whether the
                    # request arrived; GETSTATE, which ST answers with the real state, can. It did not: again.
                    self.stats.retries += 1
                    continue
                if reply.state in _LEFT and reply.status == DfuStatus.OK:
                    self._state = None  # it is waiting for its reset, whatever it reported
                    return True
                if reply.state == DfuState.ERROR and attempt:
                    return False  # our repeat hit a device already waiting for its reset
                if reply.state == DfuState.ERROR:
                    raise self._device_error(_DeviceSaid(reply, "leave"))
                self.stats.retries += 1
                try:
                    self._ensure(_DOWNLOAD_READY, cancel)
                except DfuDisconnected:
                    return False
            return False

    def _leave_status(self, cancel: ClockEvent | None) -> DfuGetStatus:
        """The GETSTATUS after the leave request, which is what starts the manifestation (the device stays in
        dfuMANIFEST_SYNC until it comes): one garbled by the cable is asked again while the device is there."""
        for attempt in range(GLITCH_RETRIES + 1):
            try:
                return self._poll(cancel)
            except _Glitch:
                if attempt == GLITCH_RETRIES or not self._still_attached():
                    raise
                self.stats.retries += 1
        raise AssertionError("unreachable")

    def _manifesting(self) -> bool:
        """After a leave whose request was garbled and a status of dfuDNLOAD_IDLE: is the device manifesting
        (GETSTATE: dfuMANIFEST or later) rather than still idle? True when it cannot tell."""
        try:
            state = self._xfer("GETSTATE", DFU_IN, DfuRequest.GETSTATE, 0, 1)
        except (_Glitch, _Stall, DfuDisconnected):
            return True  # a Gen3 bootloader stalls GETSTATE while manifesting; gone is how a leave ends
        return not state or state[0] != DfuState.DNLOAD_IDLE

    def get_commands(self, cancel: ClockEvent | None = None) -> bytes:
        """The DfuSe commands the bootloader offers (UPLOAD with wValue 0): ``00 21 41`` (Gen2; Gen3/Gen4
        up to 6.1.0), ``00 21 41 FA`` (6.1.1, 6.1.2), ``00 21 41 FA FB`` (6.2.0)."""
        with self._cpu():
            self._require_open()
            if self._commands is None:

                def step() -> bytes:
                    self._ensure(_UPLOAD_READY, cancel)
                    reply = self._xfer("UPLOAD", DFU_IN, DfuRequest.UPLOAD, 0, 16)
                    self._state = None  # Particle's go back to dfuIDLE, DfuSe's to dfuUPLOAD_IDLE
                    return bytes(reply)

                self._commands = self._retrying("GET_COMMANDS", step, cancel)
            return self._commands

    def enter_safe_mode(self, cancel: ClockEvent | None = None) -> bool:
        """DfuSe 0xFA: the device resets into safe mode (Gen3 and rtl872x bootloaders from Device OS 6.1.1).

        Raises DfuUnsupported when GET_COMMANDS does not list 0xFA. True when the device confirmed
        with dfuMANIFEST, False when it dropped off the bus first (as a leave).
        """
        with self._cpu():
            if DfuseCommand.ENTER_SAFE_MODE not in self.get_commands(cancel):
                raise DfuUnsupported(message="the bootloader does not offer ENTER_SAFE_MODE (0xFA)")

            def send() -> None:
                self._ensure(_DOWNLOAD_READY, cancel)
                self._dnload(0, bytes([DfuseCommand.ENTER_SAFE_MODE]))

            self.stats.commands["ENTER_SAFE_MODE"] += 1
            try:
                self._retrying("enter safe mode", send, cancel)
            except DfuError as exc:
                if exc.state not in (DfuState.MANIFEST, DfuState.MANIFEST_WAIT_RESET):
                    raise
                self._state = None  # a lost reply: the recovery found it already manifesting
                return True
            try:
                reply = self._poll(cancel)
            except (_Glitch, _Stall, DfuDisconnected):
                return False
            if reply.status != DfuStatus.OK or reply.state not in _LEFT:
                raise self._device_error(_DeviceSaid(reply, "enter safe mode"))
            self._state = None
            return True

    # --- the download and upload loops ----------------------------------------------------------------
    def _download(self, address: int, data: bytes, progress: Progress | None, cancel: ClockEvent | None) -> None:
        size, done = self.transfer_size, 0

        def step() -> None:
            nonlocal done
            at = address + done
            block = self._block_for(at)
            if block is None:
                self._command(DfuseCommand.SET_ADDRESS_POINTER, at, cancel)
                self._pointer, block = at, 2
            chunk = data[done : done + size]
            self._ensure(_DOWNLOAD_READY, cancel)
            self._dnload(block, chunk)
            self.stats.flash_ops.append(FlashOp("write", self._alt or 0, at, len(chunk)))
            self._check(self._poll(cancel), f"write at {at:#x}", DfuState.DNLOAD_IDLE)
            done += len(chunk)

        while done < len(data):
            self._retrying("write", step, cancel)
            _report(progress, done, len(data), "write")

    def _upload(
        self, address: int, length: int, progress: Progress | None, phase: str, cancel: ClockEvent | None
    ) -> bytes:
        out = bytearray()

        def step() -> None:
            at = address + len(out)
            block = self._block_for(at)
            if block is None:
                self._command(DfuseCommand.SET_ADDRESS_POINTER, at, cancel)
                self._pointer, block = at, 2
            self._ensure(_UPLOAD_READY, cancel)  # after SET_ADDRESS: ABORT, UPLOAD is not allowed in DNLOAD_IDLE
            want = min(self.transfer_size, length - len(out))
            chunk = self._xfer("UPLOAD", DFU_IN, DfuRequest.UPLOAD, block, want)
            self._state = DfuState.UPLOAD_IDLE
            if len(chunk) != want:  # Particle's answer wLength bytes or nothing (protected): ask why
                reply = self._get_status()
                if reply.status != DfuStatus.OK or reply.state == DfuState.ERROR:
                    raise _DeviceSaid(reply, f"read at {at:#x}")
                raise _Glitch(f"UPLOAD gave {len(chunk)} bytes, not {want}")
            out.extend(chunk)

        while len(out) < length:
            self._retrying(phase, step, cancel, ready=_UPLOAD_READY)
            _report(progress, len(out), length, phase)
        self.stats.bytes_read += length
        return bytes(out)

    def _block_for(self, address: int) -> int | None:
        """The wBlockNum that puts a block at ``address`` given the device's pointer, or None when
        the pointer must be set first.

        The bootloaders place block n at (n - 2) x 4096 + pointer, with the constant 4096 (nRF52840
        and rtl872x bootloader source; Gen2's ST-derived DfuSe uses its XFERSIZE, also 4096). So
        with wTransferSize 4096 and every block but the last a full 4096 bytes, one SET_ADDRESS per
        contiguous run is enough and wBlockNum counts up from 2; with any other transfer size the
        two readings of the formula disagree and the pointer is set for every block (wBlockNum 2).
        The pointer counts as known only after a SET_ADDRESS the device confirmed; it is forgotten
        as soon as a SET_ADDRESS or an ERASE is sent (ST's DfuSe loads the erase address into it; a
        lost reply leaves the client unsure whether either ran), on an alt change and when the
        device leaves the bus. Data blocks, ABORT and CLRSTATUS leave it alone (the Particle
        bootloaders' ABORT keeps it), so a retried block does not need it set again. A wrong guess
        cannot pass unnoticed: :meth:`write` reads the data back, with the same pointer, unless told not to.
        """
        if self._pointer is None or address < self._pointer:
            return None
        offset = address - self._pointer
        if offset == 0:
            return 2
        if self.transfer_size != DEVICE_BLOCK_SIZE or offset % DEVICE_BLOCK_SIZE:
            return None
        block = 2 + offset // DEVICE_BLOCK_SIZE
        return block if block <= MAX_BLOCK_NUMBER else None

    # --- commands, polling, recovery ------------------------------------------------------------------
    def _command(self, command: DfuseCommand, argument: int | None, cancel: ClockEvent | None,
                 sector_size: int | None = None) -> DfuGetStatus:  # fmt: skip
        """One DfuSe command: DNLOAD wValue 0, then GETSTATUS until it is done; must end in DNLOAD_IDLE."""
        self._ensure(_DOWNLOAD_READY, cancel)
        payload = bytes([command]) + (struct.pack("<I", argument) if argument is not None else b"")
        self.stats.commands[command.name] += 1
        if command in (DfuseCommand.SET_ADDRESS_POINTER, DfuseCommand.ERASE):
            self._pointer = None  # unknown until confirmed; an ERASE may move it (see _block_for)
        self._dnload(0, payload)
        if command is DfuseCommand.ERASE and sector_size and argument is not None:
            self.stats.flash_ops.append(FlashOp("erase", self._alt or 0, argument, sector_size))  # it erases
        reply = self._poll(cancel)
        where = f" {argument:#x}" if argument is not None else ""
        return self._check(reply, f"{command.name}{where}", DfuState.DNLOAD_IDLE)

    def _check(self, reply: DfuGetStatus, what: str, expected: DfuState) -> DfuGetStatus:
        if reply.status != DfuStatus.OK or reply.state == DfuState.ERROR:
            raise _DeviceSaid(reply, what)
        if reply.state != expected:
            raise _Glitch(f"{what}: the device is in {state_name(reply.state)}, not {state_name(expected)}")
        return reply

    def _poll(self, cancel: ClockEvent | None) -> DfuGetStatus:
        """GETSTATUS until the device is past dfuDNBUSY, sleeping bwPollTimeout in between (0 on
        Particle's, where the device itself holds the next request while it works)."""
        deadline = self.clock.now() + BUSY_LIMIT_S
        reply = self._get_status()
        while reply.state in _BUSY:
            if self.clock.now() >= deadline:
                raise DfuError(reply.status, reply.state, f"the device stayed busy for {BUSY_LIMIT_S:.0f} s")
            if reply.poll_timeout_ms:
                # bwPollTimeout is the device's word (24 bits: up to 4.6 hours): never past the busy limit
                self.clock.sleep(min(reply.poll_timeout_ms / 1000, max(0.0, deadline - self.clock.now())), cancel)
            elif cancel is not None and cancel.is_set():
                raise Cancelled()
            reply = self._get_status()
        return reply

    def _retrying(
        self,
        what: str,
        step: Callable[[], object],
        cancel: ClockEvent | None,
        *,
        ready: tuple[DfuState, ...] = _DOWNLOAD_READY,
    ):
        """Run one protocol step; a stall is retried 4 times 1 s apart, a glitch 4 times at once, each
        after bringing the device back to ``ready``. A failure the device reports is raised typed."""
        stalls = glitches = 0
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            try:
                return step()
            except _DeviceSaid as said:
                raise self._device_error(said) from None
            except _Stall as exc:
                stalls += 1
                if stalls > STALL_RETRIES:
                    raise DfuError(*self._last_status(), message=f"{what}: stalled {stalls} times") from exc
                self.clock.sleep(STALL_RETRY_DELAY_S, cancel)
            except _Glitch as exc:
                glitches += 1
                if not self._still_attached():
                    raise DfuDisconnected(message=f"{what}: the device left the bus ({exc})") from exc
                if glitches > GLITCH_RETRIES:
                    raise DfuError(message=f"{what}: {exc} ({glitches} times)") from exc
            self.stats.retries += 1
            self._state = None  # the pointer stays: only a SET_ADDRESS or ERASE in flight moves it
            self._resync(ready, cancel)

    def _ensure(self, ready: tuple[DfuState, ...], cancel: ClockEvent | None) -> None:
        """Bring the device to one of ``ready``: nothing if the client knows it is there, one ABORT
        from a state that allows it, else :meth:`_resync` (GETSTATUS first)."""
        if self._state in ready:
            return
        if self._state in _ABORTABLE and DfuState.IDLE in ready:
            try:
                self._abort()
                return
            except (_Stall, _Glitch):
                pass
        self._resync(ready, cancel)

    def _resync(self, ready: tuple[DfuState, ...], cancel: ClockEvent | None) -> None:
        """particle-usb's "go into idle": GETSTATUS; CLRSTATUS out of dfuERROR, ABORT out of the
        other idle states; a failed GETSTATUS is answered with CLRSTATUS. Raises if it cannot."""
        for _ in range(_RESYNC_ATTEMPTS):
            try:
                reply = self._poll(cancel)
                # an error status is never ready, whatever state comes with it: CLRSTATUS first
                if reply.state in ready and reply.status == DfuStatus.OK:
                    return
                if reply.state in (DfuState.MANIFEST, DfuState.MANIFEST_WAIT_RESET):
                    raise DfuError(reply.status, reply.state, "the device is leaving DFU mode")
                if reply.state in _ABORTABLE and DfuState.IDLE in ready and reply.status == DfuStatus.OK:
                    self._abort()
                else:
                    self._clrstatus()
            except _Stall:
                with suppress(_Stall, _Glitch):
                    self._clrstatus()
            except _Glitch:
                if not self._still_attached():
                    raise DfuDisconnected(message="the device left the bus") from None
        status, state = self._last_status()  # one more look: the last failure may have been the cable's
        if state in ready and status == DfuStatus.OK:
            return
        raise DfuError(status, state, "cannot bring the device to dfuIDLE")

    def _device_error(self, said: _DeviceSaid) -> DfuError:
        """The typed error for a failure the device reported; it is cleared first (CLRSTATUS), so
        the device is idle for whatever the caller does next."""
        reply = said.reply
        message = said.what
        if reply.i_string:
            with suppress(usb.core.USBError, ValueError):  # the text is a nicety
                message += f" ({self._string(reply.i_string)})"
        try:
            self._resync(_DOWNLOAD_READY, None)
        except DfuDisconnected:
            raise
        except DfuError:
            pass  # the caller gets the original failure
        kind = _STATUS_ERRORS.get(reply.status, DfuError)
        return kind(reply.status, reply.state, message)

    def _last_status(self) -> tuple[int | None, int | None]:
        """Status and state for an error message (one GETSTATUS; None, None if that fails too)."""
        try:
            reply = self._get_status()
        except (_Stall, _Glitch, DfuDisconnected):
            return None, None
        return reply.status, reply.state

    # --- single transfers ---------------------------------------------------------------------------
    def _get_status(self) -> DfuGetStatus:
        data = self._xfer("GETSTATUS", DFU_IN, DfuRequest.GETSTATUS, 0, STATUS_LENGTH)
        try:
            reply = DfuGetStatus.parse(data)
        except ValueError as exc:
            raise _Glitch(str(exc)) from exc
        # After an error status the state it came with is not trusted (garbled, or not dfuERROR): unknown.
        self._state = _as_state(reply.state) if reply.status == DfuStatus.OK else None
        return reply

    def _dnload(self, block: int, payload: bytes) -> None:
        self._state = None  # until it is known to have arrived
        self._xfer("DNLOAD", DFU_OUT, DfuRequest.DNLOAD, block, payload)
        self._state = DfuState.DNLOAD_SYNC if payload else DfuState.MANIFEST_SYNC

    def _abort(self) -> None:
        self._state = None
        self._xfer("ABORT", DFU_OUT, DfuRequest.ABORT, 0, b"")
        self._state = DfuState.IDLE

    def _clrstatus(self) -> None:
        self._state = None
        self._xfer("CLRSTATUS", DFU_OUT, DfuRequest.CLRSTATUS, 0, b"")
        self._state = DfuState.IDLE

    def _select(self, alt: int, cancel: ClockEvent | None = None) -> None:
        if alt == self._alt:
            return
        self.memory_map(alt)  # an alt the device does not have fails here, not on the wire

        def step() -> None:
            self.stats.transfers["SET_INTERFACE"] += 1
            try:
                self.device.set_interface_altsetting(DFU_INTERFACE, alt)
            except usb.core.USBError as exc:
                raise self._classify(exc, "SET_INTERFACE") from exc

        self._retrying("SET_INTERFACE", step, cancel)
        self._alt, self._pointer = alt, None

    def _xfer(self, name: str, bm: int, request: int, value: int, data_or_length: bytes | int) -> bytes:
        self.stats.transfers[name] += 1
        timeout_ms = max(1, round(self.transfer_timeout_s * 1000))
        try:
            answer = self.device.ctrl_transfer(bm, request, value, DFU_INTERFACE, data_or_length, timeout_ms)
        except usb.core.USBError as exc:
            raise self._classify(exc, name) from exc
        return answer.tobytes() if bm & 0x80 else b""

    def _classify(self, exc: usb.core.USBError, name: str) -> Exception:
        if isinstance(exc, usb.core.USBTimeoutError):
            return _Glitch(f"{name} timed out")
        if _gone(exc):
            self._state = self._pointer = None
            return DfuDisconnected(message=f"{name}: the device left the bus")
        if exc.errno == errno.EPIPE:
            return _Stall(name)
        self.stats.io_errors += 1
        return _Glitch(f"{name} failed: {exc}")

    def _usb_failure(self, exc: usb.core.USBError, what: str) -> DfuError:
        if _gone(exc):
            return DfuDisconnected(message=f"{what}: the device left the bus")
        return DfuError(message=f"{what}: {exc}")

    def _string(self, index: int) -> str:
        self.stats.transfers["GET_DESCRIPTOR"] += 1
        return usb.util.get_string(self.device, index, LANGID_EN_US)

    def _still_attached(self) -> bool:
        return still_attached(self.device)

    def _require_open(self) -> None:
        if not self._opened:
            raise DfuError(message="open() the DFU device first")

    @contextmanager
    def _cpu(self) -> Iterator[None]:
        """Adds the host CPU seconds of the outermost public call to ``stats.cpu_s`` (the calling thread's: other
        slots flashing at the same time do not count)."""
        self._cpu_depth += 1
        start = time.thread_time() if self._cpu_depth == 1 else 0.0
        try:
            yield
        finally:
            self._cpu_depth -= 1
            if self._cpu_depth == 0:
                self.stats.cpu_s += time.thread_time() - start


def _as_state(value: int) -> DfuState | None:
    try:
        return DfuState(value)
    except ValueError:
        return None


def _report(progress: Progress | None, done: int, total: int, phase: str) -> None:
    if progress is not None:
        progress(done, total, phase)


def _parse_map(name: str | None) -> MemoryMap | None:
    if not name:
        return None
    try:
        return parse_memory_map(name)
    except MemoryMapError:
        return None  # memory_map() says so when the alt is used


def _functional_descriptor(alts: list) -> tuple[int, int]:
    """wTransferSize and bmAttributes from the DFU functional descriptor (type 0x21) after any alt
    setting (Particle's follows the last one); particle-usb's 1024 when there is none."""
    for alt in alts:
        extra = bytes(alt.extra_descriptors or b"")
        offset = 0
        while offset + 2 <= len(extra):
            length, kind = extra[offset], extra[offset + 1]
            if length < 2:
                break
            if kind == DT_DFU_FUNCTIONAL and length >= 7:
                attributes, _detach_ms, transfer_size = struct.unpack_from("<BHH", extra, offset + 2)
                return transfer_size or DEFAULT_TRANSFER_SIZE, attributes
            offset += length
    return DEFAULT_TRANSFER_SIZE, 0
