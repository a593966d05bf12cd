"""The DFU side of a simulated Particle bootloader: DFU 1.1 + DfuSe over a :class:`SimFlash`.

:class:`SimDfuDevice` is a ``SimUsbPeer``-style ``usb_control`` for interface 0 in DFU mode, with
the behaviour of the Particle bootloaders (usb-serial-protocols.md 1.2-1.4, timing-model.md 1;
device-os sources read for behaviour: the nRF52840 and rtl872x ``usbd_dfu.cpp`` for Gen3/Gen4, ST's
DfuSe code ``platform/MCU/STM32F2xx/STM32_USB_Device_Driver/src/usbd_dfu_core.c`` for Gen2, tag v2.3.1):

- DNLOAD stores a block (wValue >= 2) or a DfuSe command (wValue 0) and answers nothing yet; the
  GETSTATUS that follows answers dfuDNBUSY with bwPollTimeout 0 and then does the work, erasing or
  programming the flash "inside the USB handler". On Gen3/Gen4 the work runs when that reply's data
  stage is done (``inDone``) and the device holds its *next* request; on Gen2 it runs before that
  GETSTATUS's status stage (``EP0_TxSent``), so that GETSTATUS itself takes the flash time. Either
  way a host that polls at once waits exactly the raw flash time of :mod:`hw.sim.flash`.
- A block goes to (wBlockNum - 2) x 4096 + the address pointer (the constant 4096, as the
  bootloaders compute it). GET_COMMANDS (UPLOAD wValue 0) lists what the bootloader *version*
  offers (``firmware.platforms.BOOTLOADERS``): 00 21 41 up to 6.1.0, 00 21 41 FA from 6.1.1,
  00 21 41 FA FB from 6.2.0 on Gen3/Gen4; 00 21 41 on Gen2.
- Requests with no transition in the current state: the Particle bootloaders stall them and
  enter dfuERROR/errUNKNOWN (DFU 1.1 6.1.2). ST's code does not: a DNLOAD or UPLOAD in the wrong
  state stalls and changes nothing, CLRSTATUS outside dfuERROR enters dfuERROR/errUNKNOWN without a
  stall, ABORT in a state it does not leave is ignored, GETSTATE and GETSTATUS always answer.
- Flash failures: on Gen3/Gen4 they show in the next GETSTATUS as dfuERROR/errUNKNOWN (every MAL
  failure). On Gen2 the GETSTATUS that started the work stalls (``USBD_CtlError`` in
  ``EP0_TxSent``) and the device goes back to dfuDNLOAD_SYNC with status OK, so the GETSTATUS after
  it says dfuDNLOAD_IDLE: only the read-back tells. A 1-byte ERASE (mass erase) gives errTARGET on
  Gen3/Gen4.
- Device Protection (``protected``, bootloaders from 6.0.0): the alt strings turn erase-only
  (``b``), string 0xFA says ``sm=p`` (bootloaders from 6.2.0; older ones serve no such string), and
  every DfuSe command but 0xFA/0xFB, every block and every UPLOAD fails with errVENDOR and iString
  pointing at "Device is in protected mode", as the bootloader source does (it refuses ERASE too,
  whatever the letters say). Service mode (``sm=s``) lifts that.
- Leave: the zero-length DNLOAD, then GETSTATUS reports dfuMANIFEST (Gen2: dfuDNLOAD_IDLE) and
  500 ms later ``on_manifest()`` runs (the device resets). 0xFA does the same and runs
  ``on_safe_mode()`` instead.

``fault(request_name) -> None | "stall" | "timeout" | "io" | "gone" | "lost"`` is asked for every
transfer, before the device sees it ("lost": the device handles it but the reply is garbled).
State is guarded by ``clock.lock``. Times are seconds.

    >>> from firmware.platforms import platform_by_name
    >>> from hw.clock import VirtualClock
    >>> from hw.sim.flash import SimFlash
    >>> boron = platform_by_name("boron")
    >>> dev = SimDfuDevice(boron, VirtualClock(), SimFlash(boron))
    >>> dev.usb_control(0xA1, 2, 0, 0, 16).hex(" ")  # GET_COMMANDS of the newest bootloader
    '00 21 41 fa fb'
    >>> old = SimDfuDevice(boron, VirtualClock(), SimFlash(boron), bootloader_version=3001)  # Device OS 6.1.1
    >>> old.usb_control(0xA1, 2, 0, 0, 16).hex(" ")
    '00 21 41 fa'
    >>> dev.usb_control(0x21, 1, 0, 0, bytes([0x41, 0, 0, 3, 0]))  # ERASE 0x30000
    5
    >>> dev.usb_control(0xA1, 3, 0, 0, 6).hex(" "), dev.usb_control(0xA1, 3, 0, 0, 6).hex(" ")
    ('00 00 00 00 04 00', '00 00 00 00 05 00')
    >>> round(dev.clock.now(), 3), round(dev.stats.busy_s, 3)  # the second GETSTATUS waited for the erase
    (0.085, 0.085)
"""

from __future__ import annotations

import re
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware.platforms import BootloaderFacts, Platform, bootloader_facts
from hw.clock import Clock
from hw.device_timing import DFU_LEAVE_S
from hw.dfu import (
    DEVICE_BLOCK_SIZE,
    DFU_IN,
    DFU_INTERFACE,
    DFU_OUT,
    PROTECTION_STRING_INDEX,
    DfuGetStatus,
    DfuRequest,
    DfuseCommand,
    DfuState,
    DfuStatus,
)
from hw.sim.flash import MANAGED_KINDS, FlashError, SimFlash
from hw.sim.usb_backend import SimUsbGone, SimUsbIoError, SimUsbStall, SimUsbTimeout

#: The bootloader's vendor error string: STRING_IDX_INTERFACE + 1 + 3 alt settings + 1 (nRF52840
#: usbd_dfu.cpp). 8 when the alt strings start at 4, as they do in hw.sim.usb_backend. UNVERIFIED value.
VENDOR_ERROR_STRING_INDEX = 8
PROTECTED_MODE_ERROR = "Device is in protected mode"
#: The reset counter after manifestation: 500 x 1 ms (timing-model.md 0 #5).
RESET_AFTER_MANIFEST_S = DFU_LEAVE_S  # shared with the kiosk's figures (hw.device_timing)

Fault = Callable[[str], str | None]
_FAULTS: dict[str, type[Exception]] = {
    "stall": SimUsbStall,
    "timeout": SimUsbTimeout,
    "io": SimUsbIoError,
    "gone": SimUsbGone,
    "lost": SimUsbIoError,  # raised after the device handled the transfer
}


#: What a request does where the DFU state machine defines no transition for it: "stall-error" (stall,
#: dfuERROR with errUNKNOWN: DFU 1.1 6.1.2), "stall" (stall, nothing changes), "error" (dfuERROR with
#: errUNKNOWN, no stall), "ignore" (nothing happens) or "answer" (the request is served anyway).
NO_TRANSITION = ("stall-error", "stall", "error", "ignore", "answer")
_STRICT = {r: "stall-error" for r in ("DNLOAD", "UPLOAD", "CLRSTATUS", "ABORT", "GETSTATE", "GETSTATUS", "DETACH")}


@dataclass(frozen=True)
class BootloaderQuirks:
    """How one family's DFU state machine behaves (what its bootloader *version* offers is in
    ``firmware.platforms.BOOTLOADERS``).

    ``leave_reports``: bState GETSTATUS answers after the zero-length DNLOAD. ``mal_error``: the
    status every flash failure is reported as (None: the specific DFU 1.1 status).
    ``dct_poll_ms``: bwPollTimeout on the DCT alt after an ERASE and after anything else.
    ``after_work``: the state once a command or block is done (Gen2 goes back to dfuDNLOAD_SYNC, so
    only the next GETSTATUS brings it to dfuDNLOAD_IDLE and a DNLOAD before that stalls).
    ``no_transition``: per request name, what it does where no transition is defined (NO_TRANSITION).
    ``mal_failure``: "error" (the next GETSTATUS says dfuERROR) or "stall" (the GETSTATUS that started
    the work stalls; the device goes back to ``after_work`` with status OK). ``work_in_getstatus``: the
    flash work holds the GETSTATUS that announced dfuDNBUSY, not the request after it.
    ``get_commands_idle_above``: GET_COMMANDS leaves dfuIDLE when wLength is above this, else
    dfuUPLOAD_IDLE (None: always dfuIDLE).
    """

    leave_reports: DfuState
    mal_error: DfuStatus | None
    dct_poll_ms: tuple[int, int] = (0, 0)
    after_work: DfuState = DfuState.DNLOAD_IDLE
    no_transition: dict[str, str] = field(default_factory=lambda: dict(_STRICT))
    mal_failure: str = "error"
    work_in_getstatus: bool = False
    get_commands_idle_above: int | None = None
    note: str = ""


_GEN3 = BootloaderQuirks(
    DfuState.MANIFEST,
    DfuStatus.ERR_UNKNOWN,
    note="nRF52840/rtl872x usbd_dfu.cpp: every MAL failure -> errUNKNOWN; reports dfuMANIFEST on leave; "
    "setError(errUNKNOWN) and a stall for every request with no transition",
)
#: ST's DfuSe state machine (usbd_dfu_core.c, v2.3.1): DFU_Req_DNLOAD/UPLOAD call USBD_CtlError (a stall)
#: and leave DeviceState alone; DFU_Req_CLRSTATUS outside dfuERROR sets dfuERROR/errUNKNOWN and returns;
#: DFU_Req_ABORT does nothing outside its five states; DFU_Req_GETSTATE and DFU_Req_GETSTATUS answer in
#: every state. EP0_TxSent does the work and on a MAL failure calls USBD_CtlError, then goes to
#: dfuDNLOAD_SYNC whatever happened.
_ST = BootloaderQuirks(
    DfuState.DNLOAD_IDLE,
    None,
    dct_poll_ms=(500, 1),
    after_work=DfuState.DNLOAD_SYNC,
    no_transition={"DNLOAD": "stall", "UPLOAD": "stall", "CLRSTATUS": "error", "ABORT": "ignore",
                   "GETSTATE": "answer", "GETSTATUS": "answer", "DETACH": "ignore"},
    mal_failure="stall",
    work_in_getstatus=True,
    get_commands_idle_above=3,
    note="Gen2 reports dfuDNLOAD_IDLE on leave 'to please dfu-util'; DCT alt polls 500 ms after ERASE, else 1",
)  # fmt: skip
#: By MCU family (firmware.platforms.Mcu.name).
BOOTLOADER_QUIRKS: dict[str, BootloaderQuirks] = {
    "nrf52840": _GEN3,
    "rtl872x": _GEN3,
    "stm32f2xx": _ST,
    "stm32f1xx": BootloaderQuirks(DfuState.MANIFEST, None, note="Core: UNVERIFIED"),
}
DEFAULT_QUIRKS = _GEN3
#: A family whose bootloader versions are not described: ST's three DfuSe commands, no protection.
_UNDESCRIBED = BootloaderFacts(0, bytes([0x00, 0x21, 0x41]), (), 0, False, source="UNVERIFIED")

_REQUEST_NAMES = {(DFU_OUT, r): r.name for r in DfuRequest} | {(DFU_IN, r): r.name for r in DfuRequest}
_REQUEST_NAMES |= {(0x01, 11): "SET_INTERFACE", (0x02, 1): "CLEAR_FEATURE"}
_ABORTABLE = frozenset({DfuState.IDLE, DfuState.DNLOAD_SYNC, DfuState.DNLOAD_IDLE, DfuState.MANIFEST_SYNC,
                        DfuState.UPLOAD_IDLE})  # fmt: skip
_NO_GETSTATE = frozenset({DfuState.DNBUSY, DfuState.MANIFEST, DfuState.MANIFEST_WAIT_RESET})
_ALLOWED_WHEN_PROTECTED = frozenset({DfuseCommand.ENTER_SAFE_MODE, DfuseCommand.CLEAR_SECURITY_MODE_OVERRIDE})
_LETTER = re.compile(r"(\*\s*\d+\s*[ BKM]?)[a-g]")


def protected_alt_string(alt: str) -> str:
    """The alt string a protected device reports: every sector erase-only (letter ``b``).

    >>> protected_alt_string("@Internal Flash   /0x08000000/2048*004Kg")
    '@Internal Flash   /0x08000000/2048*004Kb'
    """
    return _LETTER.sub(r"\1b", alt)


def quirks_for(platform: Platform) -> BootloaderQuirks:
    return BOOTLOADER_QUIRKS.get(platform.mcu.name, DEFAULT_QUIRKS)


def facts_for(platform: Platform, bootloader_version: int | None = None) -> BootloaderFacts:
    """What the platform's bootloader of that module version offers (None: the newest described)."""
    return bootloader_facts(platform, bootloader_version) or _UNDESCRIBED


@dataclass
class SimDfuStats:
    """What the device saw: transfers by request, DfuSe commands, faults, and device-busy seconds."""

    transfers: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    busy_s: float = 0.0
    erase_s: float = 0.0
    write_s: float = 0.0
    erases: int = 0
    bytes_written: int = 0
    cpu_s: float = 0.0

    @property
    def total_transfers(self) -> int:
        return sum(self.transfers.values())


class SimDfuDevice:
    """A Particle DFU bootloader's interface 0 (see the module docstring)."""

    def __init__(
        self,
        platform: Platform,
        clock: Clock,
        flash: SimFlash,
        *,
        protected: bool = False,
        service_mode: bool = False,
        bootloader_version: int | None = None,
        on_manifest: Callable[[], None] | None = None,
        on_safe_mode: Callable[[], None] | None = None,
        fault: Fault | None = None,
        quirks: BootloaderQuirks | None = None,
    ):
        self.platform = platform
        self.clock = clock
        self.flash = flash
        self.quirks = quirks or quirks_for(platform)
        self.set_bootloader_version(bootloader_version)
        if protected and not self.facts.protection:
            raise ValueError(
                f"{platform.name}'s bootloader {bootloader_version or ''} has no Device Protection "
                "(bootloaders of Device OS 6.0.0 and later only)".replace("  ", " ")
            )
        self.protected = protected
        self.service_mode = service_mode
        self.on_manifest = on_manifest or (lambda: None)
        self.on_safe_mode = on_safe_mode or (lambda: None)
        self.fault = fault
        self.lock: threading.RLock = getattr(clock, "lock", None) or threading.RLock()
        self.stats = SimDfuStats()
        self._busy_until = clock.now()
        self._handlers: dict[tuple[int, int], Callable[[int, bytes | int], bytes | int]] = {
            (DFU_OUT, DfuRequest.DNLOAD): self._dnload,
            (DFU_OUT, DfuRequest.CLRSTATUS): self._clrstatus,
            (DFU_OUT, DfuRequest.ABORT): self._abort,
            (DFU_OUT, DfuRequest.DETACH): self._detach,
            (DFU_IN, DfuRequest.UPLOAD): self._upload,
            (DFU_IN, DfuRequest.GETSTATUS): self._getstatus,
            (DFU_IN, DfuRequest.GETSTATE): self._getstate,
            (0x01, 11): self._set_interface,  # standard SET_INTERFACE, which the bus passes on
            (0x02, 1): lambda value, data: 0,  # CLEAR_FEATURE(ENDPOINT_HALT) on EP0: nothing to clear
        }
        self._reset_timer = None
        self._buffer = b""  # ST's MAL_Buffer: what the last DNLOAD or GET_COMMANDS left in it
        self.usb_reset()

    def set_bootloader_version(self, version: int | None) -> None:
        """The bootloader now installed (module version; None: the newest described): what it offers
        follows it (GET_COMMANDS, string 0xFA, Device Protection). The device calls this as it enters DFU."""
        self.bootloader_version = version
        self.facts = facts_for(self.platform, version)
        ops: dict[int, Callable[[bytes], None]] = {
            DfuseCommand.GET_COMMANDS: lambda args: self._ok(),
            DfuseCommand.SET_ADDRESS_POINTER: self._op_set_address,
            DfuseCommand.ERASE: self._op_erase,
            DfuseCommand.ENTER_SAFE_MODE: self._op_safe_mode,
            DfuseCommand.CLEAR_SECURITY_MODE_OVERRIDE: self._op_clear_override,
        }
        self._ops = {c: fn for c, fn in ops.items() if c in self.facts.dfuse_commands}
        if self.quirks.mal_failure != "stall":  # Particle's bootloaders know READ_UNPROTECT, and refuse it
            self._ops[DfuseCommand.READ_UNPROTECT] = lambda args: self._error(DfuStatus.ERR_UNKNOWN)

    @property
    def serves_protection_string(self) -> bool:
        """Bootloaders before Device OS 6.2.0 serve no string 0xFA (the client then reads the map)."""
        return self.facts.protection_string

    # --- what the USB descriptors carry -------------------------------------------------------------
    @property
    def enforcing(self) -> bool:
        """Protection is on (with a bootloader that knows it) and not overridden by service mode."""
        return self.protected and self.facts.protection and not self.service_mode

    def alt_strings(self) -> tuple[str, ...]:
        """The DfuSe strings for the alt settings' iInterface (erase-only while protected)."""
        alts = self.platform.dfu_alts
        return tuple(protected_alt_string(a) for a in alts) if self.enforcing else alts

    def protection_string(self) -> str | None:
        """String descriptor 0xFA: ``sm=o``, ``sm=p`` or ``sm=s``; None where the bootloader has none."""
        if not self.serves_protection_string:
            return None
        protected = self.protected and self.facts.protection
        return "sm=" + ("s" if protected and self.service_mode else "p" if protected else "o")

    def string_descriptor(self, index: int) -> str | None:
        """Strings the bootloader serves beyond the device descriptor's: 0xFA and the error text."""
        with self.lock:
            if index == PROTECTION_STRING_INDEX:
                return self.protection_string()
            if index == VENDOR_ERROR_STRING_INDEX and self._error_text:
                return self._error_text
            return None

    # --- state ---------------------------------------------------------------------------------------
    @property
    def state(self) -> DfuState:
        return self._state

    @property
    def status(self) -> DfuStatus:
        return self._status

    @property
    def address_pointer(self) -> int:
        return self._pointer

    @property
    def alt(self) -> int:
        return self._alt

    def usb_reset(self) -> None:
        """What a USB reset or a new DFU session does: dfuIDLE, status OK, pointer 0, alt 0."""
        with self.lock:
            self._state = DfuState.IDLE
            self._status = DfuStatus.OK
            self._i_string = 0
            self._error_text = ""
            self._poll_ms = 0
            self._pointer = 0
            self._alt = 0
            self._pending: tuple[int, bytes] | None = None
            self._mal_failed = False
            self._safe_mode_requested = False
            if self._reset_timer is not None:
                self._reset_timer.cancel()
                self._reset_timer = None

    def inject_error(self, status: DfuStatus = DfuStatus.ERR_UNKNOWN) -> None:
        """Leave the device in dfuERROR, as an earlier session that failed would."""
        with self.lock:
            self._error(status)

    # --- the peer entry point ---------------------------------------------------------------------------
    def usb_control(
        self, bm_request_type: int, b_request: int, w_value: int, w_index: int, data_or_length: bytes | int
    ) -> bytes | int:
        """One control transfer (the SimUsbPeer contract): bytes for IN, the count taken for OUT."""
        with self.lock:
            self._wait_while_busy()
            started = time.thread_time()  # this thread's CPU: slots flashing beside it do not count
            try:
                name = _REQUEST_NAMES.get((bm_request_type, b_request), f"{bm_request_type:#04x}/{b_request}")
                self.stats.transfers[name] += 1
                fault = self.fault(name) if self.fault is not None else None
                if fault is not None:
                    if fault not in _FAULTS:
                        raise ValueError(f"unknown fault {fault!r}; one of {sorted(_FAULTS)}")
                    self.stats.faults[fault] += 1
                    if fault == "gone":
                        self.usb_reset()  # it comes back (if at all) as a new USB session
                    if fault != "lost":
                        raise _FAULTS[fault]()
                handler = self._handlers.get((bm_request_type, b_request))
                if handler is None or (bm_request_type & 0x60 == 0x20 and w_index != DFU_INTERFACE):
                    raise SimUsbStall()
                answer = handler(w_value, data_or_length)
                if fault == "lost":
                    raise SimUsbIoError()
                return answer
            finally:
                self.stats.cpu_s += time.thread_time() - started

    def _wait_while_busy(self) -> None:
        # The bootloader does flash work inside its USB interrupt: the hardware NAKs the next
        # request until it is done, so that request simply takes longer.
        left = self._busy_until - self.clock.now()
        if left > 0:
            self.clock.sleep(left)

    # --- class requests ----------------------------------------------------------------------------------
    def _dnload(self, block: int, data: bytes | int) -> int:
        data = b"" if isinstance(data, int) else bytes(data)
        if self._state not in (DfuState.IDLE, DfuState.DNLOAD_IDLE) or len(data) > DEVICE_BLOCK_SIZE:
            self._no_transition("DNLOAD")
            return 0
        if not data:
            self._set_state(DfuState.MANIFEST_SYNC)  # the leave request
            self.stats.commands["leave"] += 1
            return 0
        self._pending = (block, data)
        self._buffer = data
        self._set_state(DfuState.DNLOAD_SYNC)
        return len(data)

    def _getstatus(self, value: int, length: bytes | int) -> bytes:
        state = self._state
        if state == DfuState.DNLOAD_SYNC and self._pending is not None:
            block, payload = self._pending
            self._pending = None
            self._set_state(DfuState.DNBUSY)
            if self.enforcing and not (block == 0 and payload[0] in _ALLOWED_WHEN_PROTECTED):
                self._error(DfuStatus.ERR_VENDOR, PROTECTED_MODE_ERROR)
                return self._status_bytes()
            self._poll_ms = self._poll_timeout_ms(block, payload)
            reply = self._status_bytes()  # dfuDNBUSY: the work starts once this reply is out
            self._mal_failed = False
            self._execute(block, payload)
            if self.quirks.work_in_getstatus:
                self._wait_while_busy()  # ST: the status stage of this GETSTATUS waits for EP0_TxSent
            if self._mal_failed and self.quirks.mal_failure == "stall":
                raise SimUsbStall()  # USBD_CtlError in EP0_TxSent: this GETSTATUS fails on the wire
            return reply
        if state == DfuState.DNLOAD_SYNC:
            self._set_state(DfuState.DNLOAD_IDLE)
        elif state == DfuState.MANIFEST_SYNC:
            self._status = DfuStatus.OK
            safe_mode = self._safe_mode_requested
            self._set_state(DfuState.MANIFEST)
            reported = DfuState.MANIFEST if safe_mode else self.quirks.leave_reports
            reply = DfuGetStatus(self._status, self._poll_ms, reported, self._i_string).encode()
            self._set_state(DfuState.MANIFEST_WAIT_RESET)
            self._reset_timer = self.clock.call_later(RESET_AFTER_MANIFEST_S, self._reset)
            return reply
        elif state == DfuState.MANIFEST and self.quirks.no_transition["GETSTATUS"] == "answer":
            self._set_state(DfuState.IDLE)  # ST: case STATE_dfuMANIFEST -> dfuIDLE
        elif state in (DfuState.DNBUSY, DfuState.MANIFEST, DfuState.MANIFEST_WAIT_RESET):
            self._no_transition("GETSTATUS")
        return self._status_bytes()

    def _upload(self, block: int, length: bytes | int) -> bytes:
        length = length if isinstance(length, int) else 0
        if self._state not in (DfuState.IDLE, DfuState.UPLOAD_IDLE):
            self._no_transition("UPLOAD")
            return b""
        if block == 0:
            above = self.quirks.get_commands_idle_above
            self._set_state(DfuState.IDLE if above is None or length > above else DfuState.UPLOAD_IDLE)
            self.stats.commands["GET_COMMANDS"] += 1
            self._buffer = self.facts.dfuse_commands
            return self.facts.dfuse_commands[:length]
        if block == 1:
            if self.quirks.no_transition["UPLOAD"] == "stall":
                # ST's DFU_Req_UPLOAD stores STATUS_ERRSTALLEDPKT (0x0F) in bState, a value no DFU state has
                self._state = DfuStatus.ERR_STALLEDPKT
                raise SimUsbStall()
            self._fail()
        self._set_state(DfuState.UPLOAD_IDLE)
        if self.enforcing:
            self._error(DfuStatus.ERR_VENDOR, PROTECTED_MODE_ERROR)
            return b""  # no stall: an empty reply, and GETSTATUS tells why
        address = (block - 2) * DEVICE_BLOCK_SIZE + self._pointer
        try:
            if not all(s.readable for s in self.flash.sectors(self._alt, address, length)):
                raise FlashError(DfuStatus.ERR_ADDRESS, f"{address:#x} may not be read")
            data = self.flash.read(self._alt, address, length)
        except FlashError as exc:
            if self.quirks.mal_failure == "stall":
                # ST's MAL_Read has no failure: out of its memories it hands back its buffer as it is
                return (self._buffer * (length // max(1, len(self._buffer)) + 1))[:length] if self._buffer else b""
            self._fail(self.quirks.mal_error or exc.status)
        self.stats.commands["upload"] += 1
        return data

    def _clrstatus(self, value: int, data: bytes | int) -> int:
        if self._state != DfuState.ERROR:
            self._no_transition("CLRSTATUS")
            return 0
        self._set_state(DfuState.IDLE)
        self._status = DfuStatus.OK
        return 0

    def _getstate(self, value: int, length: bytes | int) -> bytes:
        if self._state in _NO_GETSTATE:
            self._no_transition("GETSTATE")
        return bytes([self._state])

    def _abort(self, value: int, data: bytes | int, name: str = "ABORT") -> int:
        if self._state not in _ABORTABLE:
            self._no_transition(name)
            return 0
        self._set_state(DfuState.IDLE)
        self._status = DfuStatus.OK
        self._pending = None
        return 0

    def _detach(self, value: int, data: bytes | int) -> int:
        return self._abort(value, data, "DETACH")  # the same states; the detach-attach is not modelled

    def _set_interface(self, alt: int, data: bytes | int) -> int:
        if not 0 <= alt < self.flash.alt_count:
            raise SimUsbStall()
        self._alt = alt
        return 0

    # --- the work after a dfuDNBUSY reply --------------------------------------------------------------
    def _execute(self, block: int, payload: bytes) -> None:
        if block == 0:
            command = payload[0]
            self.stats.commands[_command_name(command)] += 1
            op = self._ops.get(command)
            if op is None:
                self._refused(DfuStatus.ERR_STALLEDPKT)  # an unsupported command
            else:
                op(payload[1:])
        elif block >= 2:
            self._op_write((block - 2) * DEVICE_BLOCK_SIZE + self._pointer, payload)
        else:
            self._refused(DfuStatus.ERR_TARGET)
            self._pending = None

    def _refused(self, status: DfuStatus) -> None:
        """A command the bootloader does not take: Particle's say so in the status (setError); ST's
        EP0_TxSent stalls (USBD_CtlError) as for a failed erase or write."""
        if self.quirks.mal_failure == "stall":
            self._mal_error(status)
        else:
            self._error(status)

    def _op_set_address(self, args: bytes) -> None:
        if len(args) != 4:
            self._refused(DfuStatus.ERR_UNKNOWN)
            return
        (self._pointer,) = struct.unpack("<I", args)
        self._ok()

    def _op_erase(self, args: bytes) -> None:
        if not args:
            self._refused(DfuStatus.ERR_TARGET)  # mass erase: not supported
            return
        if len(args) != 4:
            self._refused(DfuStatus.ERR_UNKNOWN)
            return
        (address,) = struct.unpack("<I", args)
        alt, flash = self._alt, self.flash
        sector = flash.sector_at(alt, address)
        if sector is None:
            self._mal_error(DfuStatus.ERR_ADDRESS)
            return
        if not sector.erasable:
            if flash.kind(alt) in MANAGED_KINDS:
                self._ok()  # the DCT MAL's erase does nothing: it rewrites in place
            else:
                self._mal_error(DfuStatus.ERR_ERASE)  # a bootloader or MBR sector: never erased over DFU
            return
        blank = flash.is_erased(alt, sector.start, sector.size)
        self._charge(flash.erase_time_s(sector, alt, blank=blank), "erase")
        flash.erase(alt, sector.start)
        self.stats.erases += 1
        self._ok()

    def _op_write(self, address: int, data: bytes) -> None:
        alt, flash = self._alt, self.flash
        try:
            if not all(s.writable for s in flash.sectors(alt, address, len(data))):
                raise FlashError(DfuStatus.ERR_WRITE, f"{address:#x} may not be written")
        except FlashError as exc:
            self._mal_error(exc.status)
            return
        self._charge(flash.write_time_s(len(data), alt), "write")
        try:
            flash.write(alt, address, data)
        except FlashError as exc:
            self._mal_error(exc.status)
            return
        self.stats.bytes_written += len(data)
        self._ok()

    def _op_safe_mode(self, args: bytes) -> None:
        self._safe_mode_requested = True  # the backup register the next boot reads
        self._status = DfuStatus.OK
        self._set_state(DfuState.MANIFEST_SYNC)

    def _op_clear_override(self, args: bytes) -> None:
        self.service_mode = False
        self._ok()

    def _reset(self) -> None:
        """500 ms after manifestation: the bootloader resets (and the device leaves the bus)."""
        self._reset_timer = None
        callback = self.on_safe_mode if self._safe_mode_requested else self.on_manifest
        self.usb_reset()
        callback()

    # --- helpers -----------------------------------------------------------------------------------------
    def _poll_timeout_ms(self, block: int, payload: bytes) -> int:
        if self.flash.kind(self._alt) != "dct":
            return 0
        after_erase, otherwise = self.quirks.dct_poll_ms
        return after_erase if block == 0 and payload[0] == DfuseCommand.ERASE else otherwise

    def _charge(self, seconds: float, kind: str) -> None:
        """The device is busy for ``seconds`` from now: its next request waits that long."""
        self._busy_until = max(self._busy_until, self.clock.now()) + seconds
        self.stats.busy_s += seconds
        if kind == "erase":
            self.stats.erase_s += seconds
        else:
            self.stats.write_s += seconds

    def _status_bytes(self) -> bytes:
        return DfuGetStatus(self._status, self._poll_ms, self._state, self._i_string).encode()

    def _set_state(self, state: DfuState) -> None:
        self._state = state
        if state != DfuState.ERROR:
            self._i_string = 0

    def _ok(self) -> None:
        self._status = DfuStatus.OK
        self._set_state(self.quirks.after_work)

    def _error(self, status: DfuStatus, text: str = "") -> None:
        self._status = status
        self._set_state(DfuState.ERROR)
        self._i_string = VENDOR_ERROR_STRING_INDEX if text else 0
        self._error_text = text

    def _mal_error(self, status: DfuStatus) -> None:
        if self.quirks.mal_failure == "stall":
            # ST: USBD_CtlError, then "Update the state machine" to dfuDNLOAD_SYNC as after any work
            self._mal_failed = True
            self._status = DfuStatus.OK
            self._set_state(self.quirks.after_work)
            return
        self._error(self.quirks.mal_error if self.quirks.mal_error is not None else status)

    def _fail(self, status: DfuStatus = DfuStatus.ERR_UNKNOWN) -> None:
        """No transition for this request here: dfuERROR, and the request stalls (DFU 1.1 6.1)."""
        self._error(status)
        raise SimUsbStall()

    def _no_transition(self, request: str) -> None:
        """What this family's state machine does with a request it has no transition for (returns
        only where the request is then served or ignored)."""
        what = self.quirks.no_transition.get(request, "stall-error")
        if what == "stall-error":
            self._fail()
        elif what == "stall":
            raise SimUsbStall()
        elif what == "error":
            self._error(DfuStatus.ERR_UNKNOWN)


def _command_name(command: int) -> str:
    try:
        return DfuseCommand(command).name
    except ValueError:
        return f"command {command:#04x}"
