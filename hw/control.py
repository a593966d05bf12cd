"""Particle USB control requests: the client side, on top of a pyusb device.

:class:`ControlChannel` speaks the framed protocol Device OS serves on EP0 (usb-serial-protocols.md
2.1): INIT (type, payload size) -> request id; SEND the payload in chunks of at most 4096 bytes;
poll CHECK with a backoff of 50, 50, 100, 100, 250, 250, 500, 500 ms and then 1000 ms; RECV the
reply; RESET(id) when a request times out or fails, and RESET(0) once per channel before its first
request to clear what an earlier session left behind. It also sends the raw 0x50 ("P") requests that
old firmware answers. Every wait goes through the injected :class:`hw.clock.Clock` and can be
cancelled; times are seconds.

The high-level calls (:meth:`ControlChannel.device_id`, ``enter_dfu``, ``module_info`` ...) carry
protobuf payloads (device-os-protobuf ``control/*.proto``), encoded with pure-protobuf; the message
classes here are public so the simulator builds its replies with the same definitions.

    >>> ChannelStatus.parse(bytes.fromhex("0b000000 0000 0700 ffffffff".replace(" ", "")))
    ChannelStatus(status=0, id=7, size=None, result=-1)
    >>> result_name(-1801)
    'DEVICE_PROTECTED'
"""

from __future__ import annotations

import contextlib
import errno
import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Annotated, TypeVar

import usb.core
import usb.util
from pure_protobuf.annotations import Field, fixed32, uint
from pure_protobuf.message import BaseMessage

from firmware.module import Module, ModuleFlag
from firmware.platforms import QUIRK_CONTROL_OUT_DATA_STAGE, QUIRK_NO_CONTROL_REQUESTS, Function
from hw.clock import Cancelled, Clock, ClockEvent
from hw.usb_identity import still_attached

log = logging.getLogger(__name__)

# --- wire constants (usb-serial-protocols.md 2.1) ------------------------------------------------

BM_IN, BM_OUT = 0xC0, 0x40  # vendor request to the device; IN = device to host
RAW_REQUEST = 0x50  # 'P': single-transfer requests, no INIT/CHECK
MIN_WLENGTH = 64  # Device OS stalls INIT/CHECK/RESET with a shorter data stage
MAX_CHUNK = 4096  # bytes per SEND/RECV transfer
MAX_PAYLOAD = 0xFFFF  # wValue of INIT is 16 bits
MAX_REPLY = 1 << 20  # bytes: more than any reply Device OS builds (a garbled CHECK may claim up to 4 GiB)
MAX_ACTIVE_REQUESTS = 4  # what Device OS allows before answering BUSY
# Waits before each CHECK; the last one repeats. particle-usb waits 50 ms before the first (its
# DEFAULT_CHECK_INTERVALS); the kiosk asks sooner, because a CHECK costs the device nothing (Device OS
# answers it in the USB interrupt, usb_control_request_channel.cpp processCheckRequest) and most requests,
# and the buffer allocation of one with a payload, are done in a few ms: a 50 ms first wait made every
# 4 KB chunk of a control-request update cost 100 ms of waiting (two CHECKs per chunk).
CHECK_BACKOFF_S = (0.005, 0.01, 0.02, 0.05, 0.05, 0.1, 0.1, 0.25, 0.25, 0.5, 0.5, 1.0)
DEFAULT_REQUEST_TIMEOUT_S = 60.0
DEFAULT_TRANSFER_TIMEOUT_S = 5.0
RESET_TRANSFER_TIMEOUT_S = 1.0  # clean-up RESETs must not double a timeout that already happened
WIRE_RETRIES = 3  # a transfer garbled by the cable (EIO): start the request again this many times
WIRE_RETRY_S = 0.05
FIRMWARE_UPDATE_TIMEOUT_S = 240.0  # Particle's CLI allows 4 minutes: NCP firmware is slow


class Service(IntEnum):
    """bRequest of the framed protocol's service requests."""

    INIT = 1
    CHECK = 2
    SEND = 3
    RECV = 4
    RESET = 5


class Status(IntEnum):
    """Status of a service reply."""

    OK = 0
    ERROR = 1
    PENDING = 2
    BUSY = 3
    NO_MEMORY = 4
    NOT_FOUND = 5


class RequestType(IntEnum):
    """Control request type ids the kiosk uses (Device OS ``ctrl_request_type``)."""

    DEVICE_ID = 20
    SERIAL_NUMBER = 21
    SYSTEM_VERSION = 30
    RESET = 40
    FACTORY_RESET = 41
    DFU_MODE = 50
    SAFE_MODE = 60
    START_LISTENING = 70
    STOP_LISTENING = 71
    GET_DEVICE_MODE = 72
    GET_MODULE_INFO = 90
    START_FIRMWARE_UPDATE = 250
    FINISH_FIRMWARE_UPDATE = 251
    CANCEL_FIRMWARE_UPDATE = 252
    FIRMWARE_UPDATE_DATA = 253
    CLOUD_DISCONNECT = 302


#: Requests the kiosk refuses to send: it never reads (or replaces) a device's secret keys.
REFUSED_TYPES: dict[int, str] = {
    210: "SET_SECURITY_KEY replaces the device's keys",
    211: "GET_SECURITY_KEY reads the device's secret key",
}


class Result(IntEnum):
    """Request results (``system_error_t``) as PUSB names them; 0 is success."""

    OK = 0
    ERROR = -100
    BUSY = -110
    NOT_SUPPORTED = -120
    NOT_ALLOWED = -130
    CANCELLED = -140
    ABORTED = -150
    TIMEOUT = -160
    NOT_FOUND = -170
    ALREADY_EXISTS = -180
    TOO_LARGE = -190
    LIMIT_EXCEEDED = -200
    INVALID_STATE = -210
    IO_ERROR = -220
    NETWORK_ERROR = -230
    PROTOCOL_ERROR = -240
    INTERNAL_ERROR = -250
    NO_MEMORY = -260
    INVALID_ARGUMENT = -270
    BAD_DATA = -280
    OUT_OF_RANGE = -290
    DEVICE_PROTECTED = -1801
    KEY_MISMATCH = -1802
    INVALID_SIGNATURE = -1803


def result_name(code: int) -> str:
    """The name of a result code, e.g. ``result_name(-120) == 'NOT_SUPPORTED'``."""
    try:
        return Result(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


# --- errors ----------------------------------------------------------------------------------------


class ControlFailure(Exception):
    """A control request did not produce a result."""


class ControlTimeout(ControlFailure):
    """The request (or one USB transfer of it) did not finish in time."""


class DeviceGone(ControlFailure):
    """The device left the bus during the request (unplugged, reset, crashed): find it again."""


class ControlError(ControlFailure):
    """The device answered with a failure: ``result`` is the code, ``name`` its name."""

    def __init__(self, result: int, message: str = ""):
        self.result = int(result)
        self.name = result_name(result)
        super().__init__(f"{self.name} ({self.result})" + (f": {message}" if message else ""))

    @property
    def protected(self) -> bool:
        """Device Protection refused it (nothing can be changed offline)."""
        return self.result == Result.DEVICE_PROTECTED


# Service statuses that end a request, as the result code the caller sees.
_STATUS_RESULT = {
    Status.ERROR: (Result.ERROR, "the device reported an error"),
    Status.NO_MEMORY: (Result.NO_MEMORY, "the device could not allocate the request"),
    Status.NOT_FOUND: (Result.CANCELLED, "the device no longer knows the request (cancelled or lost)"),
}
# A stalled transfer: on INIT or a raw request the firmware does not serve it; later in a request
# the device has dropped the request (a USB reset) or disagrees about its state.
_STALL_RESULT = {Service.INIT: Result.NOT_SUPPORTED, RAW_REQUEST: Result.NOT_SUPPORTED}

# --- service replies ---------------------------------------------------------------------------------

_FLAG_STATUS, _FLAG_ID, _FLAG_SIZE, _FLAG_RESULT = 0x01, 0x02, 0x04, 0x08


@dataclass(frozen=True)
class ChannelStatus:
    """A service reply (INIT, CHECK, RESET): status, and the optional id, reply size and result.

    Wire format, little-endian: u32 field flags, u16 status, then u16 id, u32 size, i32 result
    for the flags 0x02, 0x04, 0x08 that are set (0x01, status, always is).
    """

    status: int
    id: int | None = None
    size: int | None = None
    result: int | None = None

    # optional fields in wire order: flag, struct format, attribute
    _FIELDS = ((_FLAG_ID, "<H", "id"), (_FLAG_SIZE, "<I", "size"), (_FLAG_RESULT, "<i", "result"))

    @classmethod
    def parse(cls, data: bytes) -> ChannelStatus:
        try:
            flags, status = struct.unpack_from("<IH", data)
            if not flags & _FLAG_STATUS:
                raise ControlError(Result.PROTOCOL_ERROR, "service reply without a status")
            values: dict[str, int] = {}
            offset = 6
            for flag, fmt, name in cls._FIELDS:
                if flags & flag:
                    (values[name],) = struct.unpack_from(fmt, data, offset)
                    offset += struct.calcsize(fmt)
        except struct.error as exc:
            raise ControlError(Result.PROTOCOL_ERROR, f"short service reply {bytes(data).hex()}") from exc
        return cls(status, **values)

    def encode(self) -> bytes:
        """The reply bytes, as Device OS sends them (only the fields that are set)."""
        flags, tail = _FLAG_STATUS, b""
        for flag, fmt, name in self._FIELDS:
            value = getattr(self, name)
            if value is not None:
                flags |= flag
                tail += struct.pack(fmt, value)
        return struct.pack("<IH", flags, self.status) + tail


# --- protobuf messages (device-os-protobuf control/config.proto, storage.proto, cloud/describe.proto) ---
# Enum fields are plain uint32 so a value newer than this table still decodes.


@dataclass
class GetDeviceIdReply(BaseMessage):
    id: Annotated[str, Field(1)] = ""


@dataclass
class GetSystemVersionReply(BaseMessage):
    version: Annotated[str, Field(1)] = ""


class DeviceMode(IntEnum):
    NORMAL = 0
    LISTENING = 1


@dataclass
class GetDeviceModeReply(BaseMessage):
    mode: Annotated[uint, Field(1)] = 0


@dataclass
class LegacyModuleDependency(BaseMessage):
    """GetModuleInfoReply.Dependency (deprecated format); ``type`` is a :data:`LEGACY_MODULE_TYPES` key."""

    type: Annotated[uint, Field(1)] = 0
    index: Annotated[uint, Field(2)] = 0
    version: Annotated[uint, Field(3)] = 0


@dataclass
class LegacyModule(BaseMessage):
    """GetModuleInfoReply.Module (``modules_deprecated``); ``validity`` bits are failures."""

    type: Annotated[uint, Field(1)] = 0
    index: Annotated[uint, Field(2)] = 0
    version: Annotated[uint, Field(3)] = 0
    size: Annotated[uint, Field(4)] = 0
    validity: Annotated[uint, Field(5)] = 0
    dependencies: Annotated[list[LegacyModuleDependency], Field(6)] = field(default_factory=list)


@dataclass
class FirmwareModuleDependency(BaseMessage):
    """particle.cloud.FirmwareModuleDependency; ``type`` uses the module function numbering."""

    type: Annotated[uint, Field(1)] = 0
    index: Annotated[uint, Field(2)] = 0
    version: Annotated[uint, Field(3)] = 0


@dataclass
class FirmwareModuleAsset(BaseMessage):
    hash: Annotated[bytes, Field(1)] = b""
    name: Annotated[str, Field(2)] = ""
    size: Annotated[uint, Field(3)] = 0
    storage_size: Annotated[uint, Field(4)] = 0


@dataclass
class FirmwareModuleSecurity(BaseMessage):
    mode: Annotated[uint, Field(1)] = 0  # NONE 0, PROTECTED 1
    certificate_fingerprint: Annotated[bytes, Field(2)] = b""


@dataclass
class FirmwareModule(BaseMessage):
    """particle.cloud.FirmwareModule, the module-info format of Device OS >= 5.6.0."""

    type: Annotated[uint, Field(1)] = 0
    index: Annotated[uint, Field(2)] = 0
    version: Annotated[uint, Field(3)] = 0
    store: Annotated[uint, Field(4)] = 0
    max_size: Annotated[uint, Field(5)] = 0
    checked_flags: Annotated[fixed32, Field(6)] = 0
    passed_flags: Annotated[fixed32, Field(7)] = 0
    hash: Annotated[bytes | None, Field(8)] = None
    dependencies: Annotated[list[FirmwareModuleDependency], Field(9)] = field(default_factory=list)
    asset_dependencies: Annotated[list[FirmwareModuleAsset], Field(10)] = field(default_factory=list)
    size: Annotated[uint, Field(11)] = 0
    security: Annotated[FirmwareModuleSecurity | None, Field(12)] = None


@dataclass
class GetModuleInfoReply(BaseMessage):
    modules_deprecated: Annotated[list[LegacyModule], Field(1)] = field(default_factory=list)
    modules: Annotated[list[FirmwareModule], Field(2)] = field(default_factory=list)


@dataclass
class StartFirmwareUpdateRequest(BaseMessage):
    """Request 250: ``size`` in bytes; ``format`` BIN 0 (MINIZ 1 is not used by the kiosk)."""

    size: Annotated[uint, Field(1)] = 0
    format: Annotated[uint, Field(2)] = 0


@dataclass
class StartFirmwareUpdateReply(BaseMessage):
    chunk_size: Annotated[uint, Field(1)] = 0


@dataclass
class FirmwareUpdateDataRequest(BaseMessage):
    """Request 253: one chunk of the module, at most the chunk size the device asked for."""

    data: Annotated[bytes, Field(1)] = b""


#: The most module bytes one FirmwareUpdateDataRequest carries: the payload limit less the field's tag and length.
MAX_UPDATE_CHUNK = MAX_PAYLOAD - 4


@dataclass
class FinishFirmwareUpdateRequest(BaseMessage):
    """Request 251: ``validate_only`` checks without applying; the kiosk always applies."""

    validate_only: Annotated[bool, Field(1)] = False


M = TypeVar("M", bound=BaseMessage)


def decode(message: type[M], data: bytes) -> M:
    """Decode a reply payload; garbage becomes ``ControlError(BAD_DATA)`` rather than a crash."""
    try:
        decoded = message.loads(bytes(data))
    except Exception as exc:  # pure-protobuf raises EOFError, ValueError, UnicodeError, ... on bad input
        raise ControlError(Result.BAD_DATA, f"undecodable {message.__name__}: {exc}") from exc
    if (missing := _none_where_a_value_belongs(decoded)) is not None:
        raise ControlError(Result.BAD_DATA, f"undecodable {message.__name__}: {missing} came without a value")
    return decoded


def _none_where_a_value_belongs(message: BaseMessage, where: str = "") -> str | None:
    """The first field (dotted path) that decoded to None although its default is a value: pure-protobuf leaves a
    number None when the wire carries it as an empty length-delimited (packed) record."""
    for f in fields(message):
        value = getattr(message, f.name)
        path = f"{where}{f.name}"
        if value is None and f.default is not None:  # a list's default is MISSING: None is wrong there too
            return path
        for n, item in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(item, BaseMessage) and (found := _none_where_a_value_belongs(item, f"{path}[{n}].")):
                return found
    return None


# --- module info -------------------------------------------------------------------------------------


class ModuleStore(IntEnum):
    """particle.cloud.FirmwareModuleStore (cloud/describe.proto): where a module is kept."""

    MAIN = 0
    FACTORY = 1
    BACKUP = 2
    SCRATCHPAD = 3


#: The radio stack's "hash" (Device OS >= 5.6.0) is the SoftDevice's 20-byte unique string, zero-padded to 32:
#: ``platform_radio_stack_fetch_module_info`` (hal/src/nRF52840/platform_radio_stack.cpp) copies
#: ``SD_UNIQUE_STR_ADDR_GET(MBR_SIZE)``: MBR_SIZE 0x1000 + SOFTDEVICE_INFO_STRUCT_OFFSET 0x2000 +
#: SD_UNIQUE_STR_OFFSET 0x18, SD_UNIQUE_STR_SIZE 20 (nrf_sdm.h of the nRF5 SDK).
SOFTDEVICE_UNIQUE_STR_ADDRESS = 0x3018
SOFTDEVICE_UNIQUE_STR_SIZE = 20
#: The NCP's "hash" is its version, a little-endian u16, in each of the SHA's 16 u16 words
#: (``platform_ncp_fetch_module_info``, hal/network/ncp/wifi/platform_ncp_update.cpp).
NCP_HASH_WORDS = 16


def module_info_hash(module: Module) -> bytes:
    """The hash Device OS (>= 5.6.0) reports in request 90 for this module file once it is installed.

    Every module with a header: the SHA-256 stored in its suffix (``suffix.sha``, the field `particle binary
    inspect` calls the UUID; system/src/system_info_encoding.cpp with FORCE_SHA), *not* the SHA-256 of the file.
    The radio stack and the NCP have no header in flash: see :data:`SOFTDEVICE_UNIQUE_STR_ADDRESS` and
    :data:`NCP_HASH_WORDS`. DFU writes a DROP_MODULE_INFO module (the SoftDevice) without its prefix.
    """
    if module.function == Function.NCP_FIRMWARE:
        return module.version.to_bytes(2, "little") * NCP_HASH_WORDS
    if module.function == Function.RADIO_STACK:
        image = module.data[module.prefix_size :] if module.flags & ModuleFlag.DROP_MODULE_INFO else module.data
        at = SOFTDEVICE_UNIQUE_STR_ADDRESS - module.start_address
        return image[at : at + SOFTDEVICE_UNIQUE_STR_SIZE].ljust(32, b"\0") if at >= 0 else bytes(32)
    return module.sha256


#: Legacy (``modules_deprecated``) module types -> module function numbers (firmware.platforms.Function).
LEGACY_MODULE_TYPES = {0: 0, 1: 2, 2: 4, 3: 5, 4: 3, 5: 7, 6: 8}
#: Validity check bits of the new format (checked_flags / passed_flags).
CHECK_FLAGS = {0x02: "integrity", 0x04: "dependencies", 0x08: "range", 0x10: "platform"}
#: Failure bits of the legacy ``validity`` field.
LEGACY_FAILURE_FLAGS = {0x01: "integrity", 0x02: "dependencies"}


def _flag_names(bits: int, table: dict[int, str]) -> frozenset[str]:
    return frozenset(name for bit, name in table.items() if bits & bit)


@dataclass(frozen=True)
class ModuleDependency:
    """A module another module needs: function (firmware.platforms.Function), index, version."""

    function: int
    index: int
    version: int


@dataclass(frozen=True)
class ModuleInfo:
    """One firmware module as the device reports it (request 90).

    ``function`` uses firmware.platforms.Function numbers in both formats. ``failed`` names the
    checks that failed ("integrity", "dependencies", "range", "platform"). The raw flags stay as
    the device gave them: ``validity`` (legacy: failure bits) or ``checked_flags``/``passed_flags``
    (new: failed = checked XOR passed). ``size`` is what the device sent, which the two formats count
    differently (see :attr:`image_size`); ``max_size`` is the slot's maximum and ``store`` a
    :class:`ModuleStore` (new format only); ``hash`` is what :func:`module_info_hash` describes.
    """

    function: int
    index: int
    version: int
    size: int
    dependencies: tuple[ModuleDependency, ...]
    failed: frozenset[str]
    legacy: bool
    validity: int | None = None
    checked_flags: int | None = None
    passed_flags: int | None = None
    store: int | None = None
    max_size: int | None = None
    hash: bytes | None = None

    @property
    def valid(self) -> bool:
        return not self.failed

    @property
    def image_size(self) -> int:
        """Bytes of the module as a file, its CRC-32 included (0 for modules without a header: radio stack, NCP).

        The new format sends end - start + 4 already (system/src/system_info_encoding.cpp: "size += sizeof(uint32_t)
        /* CRC */" when non-zero); the legacy one sent end - start (system/src/control/storage.cpp up to v5.5.0).
        """
        if self.legacy and self.size > 0:
            return self.size + 4
        return self.size

    @property
    def failed_flags(self) -> int:
        """Failed checks as new-format bits (PUSB's ``checked XOR passed``)."""
        if self.checked_flags is not None and self.passed_flags is not None:
            return self.checked_flags ^ self.passed_flags
        return sum(bit for bit, name in CHECK_FLAGS.items() if name in self.failed)

    @classmethod
    def from_legacy(cls, m: LegacyModule) -> ModuleInfo:
        deps = tuple(
            ModuleDependency(LEGACY_MODULE_TYPES.get(d.type, -d.type), d.index, d.version) for d in m.dependencies
        )
        failed = _flag_names(m.validity, LEGACY_FAILURE_FLAGS)
        function = LEGACY_MODULE_TYPES.get(m.type, -m.type)  # negative: a legacy type this table lacks
        return cls(function, m.index, m.version, m.size, deps, failed, True, validity=m.validity)

    @classmethod
    def from_current(cls, m: FirmwareModule) -> ModuleInfo:
        deps = tuple(ModuleDependency(d.type, d.index, d.version) for d in m.dependencies)
        failed = _flag_names(m.checked_flags ^ m.passed_flags, CHECK_FLAGS)
        return cls(
            m.type,
            m.index,
            m.version,
            m.size,
            deps,
            failed,
            False,
            checked_flags=m.checked_flags,
            passed_flags=m.passed_flags,
            store=m.store,
            max_size=m.max_size,
            hash=m.hash,
        )


def parse_module_info(reply: bytes) -> list[ModuleInfo]:
    """Modules from a GetModuleInfoReply: the legacy list when it is not empty (as PUSB does), else the new one."""
    message = decode(GetModuleInfoReply, reply)
    if message.modules_deprecated:
        return [ModuleInfo.from_legacy(m) for m in message.modules_deprecated]
    return [ModuleInfo.from_current(m) for m in message.modules]


# --- the channel -------------------------------------------------------------------------------------


@dataclass
class _Pending:
    """Where a request stands on the device: its id once INIT gave one, and the phase it is in."""

    type_id: int
    id: int | None = None
    stage: str = "init"  # "init", "send", "check", "recv"


def _wire_error(exc: BaseException) -> bool:
    """A transfer the cable garbled (libusb EIO), as opposed to the device's answer or its absence."""
    return isinstance(exc, ControlError) and exc.result == Result.IO_ERROR


def _libusb_gone(exc: usb.core.USBError) -> bool:
    return exc.errno == errno.ENODEV or getattr(exc, "backend_error_code", None) == -4


class ControlChannel:
    """Control requests to one device in normal mode, over a pyusb ``usb.core.Device``.

    ``quirks`` are the platform's (``Platform.quirks``): rtl872x devices get a one-byte data stage
    on OUT transfers that have none; a platform without control requests fails fast with
    NOT_SUPPORTED. ``transfer_timeout_s`` bounds each USB transfer. Safe to share between threads
    (the device itself allows 4 requests at a time and answers BUSY beyond that).

        channel = ControlChannel(found.usb_device, RealClock(), found.platform.quirks)
        channel.enter_dfu()
    """

    def __init__(
        self,
        usb_device: usb.core.Device,
        clock: Clock,
        quirks: frozenset[str] = frozenset(),
        *,
        transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S,
    ):
        self.device = usb_device
        self.clock = clock
        self.quirks = frozenset(quirks)
        self.transfer_timeout_s = transfer_timeout_s
        self._lock = threading.Lock()
        self._opened = False
        #: transfers that failed on the wire with an I/O error (not a stall, timeout or unplug): the cable's
        #: fault, most often
        self.io_errors = 0

    # -- the framed protocol --
    def open(self, timeout_s: float = RESET_TRANSFER_TIMEOUT_S) -> None:
        """Send RESET(0) to cancel requests an earlier session left active (once; ``request`` calls it)."""
        with self._lock:  # held throughout: no other thread's INIT may slip in before the RESET(0)
            if self._opened:
                return
            self._opened = True
            try:
                self._service(Service.RESET, 0, min(RESET_TRANSFER_TIMEOUT_S, timeout_s))
            except (ControlError, ControlTimeout) as exc:
                log.debug("RESET(0) on open failed: %s", exc)  # as PUSB: the requests that follow will tell

    def request(
        self,
        type_id: int,
        payload: bytes = b"",
        timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        cancel: ClockEvent | None = None,
    ) -> tuple[int, bytes]:
        """Run one control request; return the device's result code and its reply payload.

        A failure *result* is returned, not raised (the high-level calls raise it). Raises
        ControlTimeout after ``timeout_s`` seconds (having sent RESET(id)), DeviceGone, ControlError
        for protocol failures, and hw.clock.Cancelled when ``cancel`` is set.
        """
        if type_id in REFUSED_TYPES:
            raise ValueError(f"refused: request {type_id} ({REFUSED_TYPES[type_id]})")
        if not 0 <= type_id <= 0xFFFF or len(payload) > MAX_PAYLOAD:
            raise ValueError(f"type {type_id} must fit 16 bits and the payload {MAX_PAYLOAD} bytes")
        if QUIRK_NO_CONTROL_REQUESTS in self.quirks:
            raise ControlError(Result.NOT_SUPPORTED, "this platform takes no control requests")
        deadline = self.clock.now() + timeout_s
        self.open(timeout_s / 2)  # the clean-up RESET(0) may take at most half of what the caller allows
        for attempt in range(WIRE_RETRIES + 1):
            pending = _Pending(type_id)
            try:
                return self._run(pending, bytes(payload), deadline, cancel)
            except (ControlFailure, Cancelled) as exc:
                if pending.id is not None and not isinstance(exc, DeviceGone):
                    self._reset_quietly(pending.id)
                # A transfer garbled on the wire before the device had the whole request cannot have run
                # it: start again. (If the last SEND's acknowledgement alone was lost, a module update is
                # still safe: the device validates size and CRC before it applies anything.)
                if not (_wire_error(exc) and pending.stage in ("init", "send") and attempt < WIRE_RETRIES):
                    raise
                log.debug("request %d: %s during %s; starting it again", type_id, exc, pending.stage)
                self.clock.sleep(WIRE_RETRY_S, cancel)
        raise AssertionError("unreachable")

    def _run(self, pending: _Pending, payload: bytes, deadline: float, cancel: ClockEvent | None) -> tuple[int, bytes]:
        pending.stage = "init"
        attempt = 0
        while True:  # INIT; BUSY means the device's 4 slots are taken: back off and ask again
            busy = "the device stayed busy (4 requests active)" if attempt else "the device did not answer in time"
            reply = self._service(Service.INIT, pending.type_id, self._left(deadline, busy), value=len(payload))
            if reply.status != Status.BUSY:
                break
            self._backoff(attempt, deadline, cancel, "the device stayed busy (4 requests active)")
            attempt += 1
        pending.id = reply.id  # from here on a failure RESETs the request on the device
        if reply.status not in (Status.OK, Status.PENDING):
            raise self._status_error(reply, "INIT")
        if reply.id is None or (reply.status == Status.PENDING and not payload):
            raise ControlError(Result.PROTOCOL_ERROR, f"unexpected INIT reply {reply}")
        if payload:
            if reply.status == Status.PENDING:  # the device allocates a buffer for > 64 bytes
                self._poll(pending.id, deadline, cancel)
            pending.stage = "send"
            for offset in range(0, len(payload), MAX_CHUNK):
                chunk = payload[offset : offset + MAX_CHUNK]
                self._transfer(BM_OUT, Service.SEND, 0, pending.id, chunk, self._left(deadline))
        pending.stage = "check"
        done = self._poll(pending.id, deadline, cancel)
        pending.stage = "recv"
        if done.result is None:
            raise ControlError(Result.PROTOCOL_ERROR, f"CHECK finished without a result: {done}")
        data = bytearray()
        size = done.size or 0
        if size > MAX_REPLY:
            raise ControlError(Result.PROTOCOL_ERROR, f"CHECK claims a reply of {size} bytes: no device sends that")
        while len(data) < size:
            want = min(MAX_CHUNK, size - len(data))
            chunk = self._transfer(BM_IN, Service.RECV, 0, pending.id, want)  # the reply is ready: no deadline
            if len(chunk) != want:
                raise ControlError(Result.PROTOCOL_ERROR, f"RECV gave {len(chunk)} bytes, not {want}")
            data += chunk
        pending.id = None  # the device finished the request when it sent the last byte
        return done.result, bytes(data)

    def _poll(self, request_id: int, deadline: float, cancel: ClockEvent | None) -> ChannelStatus:
        """CHECK with backoff until the device says OK; other statuses end the request."""
        attempt = 0
        while True:
            self._backoff(attempt, deadline, cancel, "the device did not finish the request in time")
            attempt += 1
            try:
                reply = self._service(Service.CHECK, request_id, self._left(deadline))
            except ControlError as exc:
                if not _wire_error(exc) or attempt > WIRE_RETRIES + 2:
                    raise
                continue  # CHECK only asks: asking again is always safe
            if reply.status == Status.OK:
                return reply
            if reply.status != Status.PENDING:
                raise self._status_error(reply, "CHECK")

    def _left(self, deadline: float, why: str = "the device did not answer in time") -> float:
        """One transfer's timeout: the usual one, but never past the request's deadline."""
        left = deadline - self.clock.now()
        if left <= 0:
            raise ControlTimeout(why)
        return min(self.transfer_timeout_s, left)

    def _backoff(self, attempt: int, deadline: float, cancel: ClockEvent | None, why: str) -> None:
        left = deadline - self.clock.now()
        if left <= 0:
            raise ControlTimeout(why)
        self.clock.sleep(min(CHECK_BACKOFF_S[min(attempt, len(CHECK_BACKOFF_S) - 1)], left), cancel)

    @staticmethod
    def _status_error(reply: ChannelStatus, service: str) -> ControlError:
        result, why = _STATUS_RESULT.get(reply.status, (Result.PROTOCOL_ERROR, f"unknown status {reply.status}"))
        return ControlError(result, f"{service}: {why}")

    def _service(self, service: Service, index: int, timeout_s: float | None = None, value: int = 0) -> ChannelStatus:
        return ChannelStatus.parse(self._transfer(BM_IN, service, value, index, MIN_WLENGTH, timeout_s))

    def _reset_quietly(self, request_id: int) -> None:
        try:
            self._service(Service.RESET, request_id, RESET_TRANSFER_TIMEOUT_S)
        except ControlFailure as exc:
            log.debug("RESET(%d) failed: %s", request_id, exc)

    # -- one USB transfer, with errors made typed --
    def _transfer(
        self,
        bm: int,
        b_request: int,
        value: int,
        index: int,
        data_or_length: bytes | int,
        timeout_s: float | None = None,
    ) -> bytes:
        if QUIRK_NO_CONTROL_REQUESTS in self.quirks:
            raise ControlError(Result.NOT_SUPPORTED, "this platform takes no control requests")
        if bm == BM_OUT and not data_or_length and QUIRK_CONTROL_OUT_DATA_STAGE in self.quirks:
            data_or_length = b"\x00"  # rtl872x: an OUT transfer without a data stage never completes
        timeout_ms = max(1, round((timeout_s or self.transfer_timeout_s) * 1000))
        try:
            answer = self.device.ctrl_transfer(bm, b_request, value, index, data_or_length, timeout_ms)
        except usb.core.USBTimeoutError as exc:
            raise ControlTimeout(f"USB transfer {b_request:#x} timed out after {timeout_ms} ms") from exc
        except usb.core.USBError as exc:
            if _libusb_gone(exc) or not self._still_attached():
                raise DeviceGone(f"the device left the bus ({exc})") from exc
            if exc.errno == errno.EPIPE:
                result = _STALL_RESULT.get(b_request, Result.PROTOCOL_ERROR)
                raise ControlError(result, f"the device stalled request {b_request:#x}") from exc
            self.io_errors += 1
            raise ControlError(Result.IO_ERROR, f"USB transfer {b_request:#x} failed: {exc}") from exc
        return bytes(answer) if bm & 0x80 else b""

    def _still_attached(self) -> bool:
        return still_attached(self.device)

    def close(self) -> None:
        """Release pyusb's handle on the device (the channel can be used again afterwards)."""
        usb.util.dispose_resources(self.device)

    # -- raw 0x50 requests: one transfer each, served by old firmware too --
    def raw_device_id(self, timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S) -> str:
        """The device id by the raw request (Device OS sends upper-case hex; this lower-cases it)."""
        data = self._transfer(BM_IN, RAW_REQUEST, 0, RequestType.DEVICE_ID, MIN_WLENGTH, timeout_s)
        return _printable(data).lower()

    def raw_system_version(self, timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S) -> str:
        """The Device OS version string by the raw request (up to the first NUL)."""
        data = self._transfer(BM_IN, RAW_REQUEST, 0, RequestType.SYSTEM_VERSION, MIN_WLENGTH, timeout_s)
        return _printable(data.split(b"\0", 1)[0])

    def raw_reset(self, timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S) -> None:
        """Reset at once, without a reply first. The device may drop off before the transfer ends,
        so its leaving or a garbled status stage counts as done; a stall (unsupported) or a timeout
        does not."""
        try:
            self._transfer(BM_OUT, RAW_REQUEST, 0, RequestType.RESET, b"", timeout_s)
        except DeviceGone:
            pass
        except ControlError as exc:
            if exc.result != Result.IO_ERROR:
                raise

    def raw_cloud_disconnect(self, timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S) -> None:
        """Cancel the network/cloud connection so the system thread is free for requests."""
        self._transfer(BM_OUT, RAW_REQUEST, 0, RequestType.CLOUD_DISCONNECT, b"", timeout_s)

    # -- high-level requests --
    def call(
        self, type_id: int, payload: bytes = b"", timeout_s: float = 10.0, cancel: ClockEvent | None = None
    ) -> bytes:
        """``request``, raising ControlError for a failure result; returns the reply payload."""
        result, reply = self.request(type_id, payload, timeout_s, cancel)
        if result != Result.OK:
            raise ControlError(result, f"request {type_id}")
        return reply

    def device_id(self, timeout_s: float = 10.0, fallback: bool = True, cancel: ClockEvent | None = None) -> str:
        """The 24-hex-digit device id, lower case (request 20; the raw request where that is not supported)."""
        return self._with_fallback(
            lambda: decode(GetDeviceIdReply, self.call(RequestType.DEVICE_ID, b"", timeout_s, cancel)).id.lower(),
            self.raw_device_id if fallback else None,
        )

    def system_version(self, timeout_s: float = 10.0, fallback: bool = True, cancel: ClockEvent | None = None) -> str:
        """The Device OS version, e.g. "6.1.1" (request 30; the raw request where that is not supported or, on a
        protected device, not allowed)."""
        return self._with_fallback(
            lambda: (
                decode(GetSystemVersionReply, self.call(RequestType.SYSTEM_VERSION, b"", timeout_s, cancel)).version
            ),
            self.raw_system_version if fallback else None,
        )

    @staticmethod
    def _with_fallback(primary: Callable[[], str], raw: Callable[[], str] | None) -> str:
        try:
            return primary()
        except ControlError as exc:
            # old firmware lacks the framed request; a protected device refuses it (security_mode_check_control_request
            # lets only DEVICE_ID, 76/77 and APP_CUSTOM through) but serves the raw one, which that check never sees
            if raw is None or exc.result not in (Result.NOT_SUPPORTED, Result.DEVICE_PROTECTED):
                raise
            log.debug("framed request refused (%s): using the raw request", exc)
            return raw()

    def reset(self, timeout_s: float = 10.0, cancel: ClockEvent | None = None) -> None:
        """Request 40: the device replies, waits 1 s, then resets."""
        self.call(RequestType.RESET, b"", timeout_s, cancel)

    def enter_dfu(self, timeout_s: float = 10.0, cancel: ClockEvent | None = None) -> None:
        """Request 50: the device replies, waits 1 s, then restarts in DFU mode (re-enumerates)."""
        self.call(RequestType.DFU_MODE, b"", timeout_s, cancel)

    def enter_safe_mode(self, timeout_s: float = 10.0, cancel: ClockEvent | None = None) -> None:
        """Request 60: the device replies, waits 1 s, then restarts in safe mode."""
        self.call(RequestType.SAFE_MODE, b"", timeout_s, cancel)

    def start_listening(self, timeout_s: float = 10.0, cancel: ClockEvent | None = None) -> None:
        """Request 70: enter listening mode (already listening counts as success)."""
        self.call(RequestType.START_LISTENING, b"", timeout_s, cancel)

    def stop_listening(self, timeout_s: float = 10.0, cancel: ClockEvent | None = None) -> None:
        """Request 71: leave listening mode."""
        self.call(RequestType.STOP_LISTENING, b"", timeout_s, cancel)

    def device_mode(self, timeout_s: float = 10.0, cancel: ClockEvent | None = None) -> DeviceMode | int:
        """Request 72: NORMAL or LISTENING (a number for a mode newer than this table)."""
        mode = decode(GetDeviceModeReply, self.call(RequestType.GET_DEVICE_MODE, b"", timeout_s, cancel)).mode
        try:
            return DeviceMode(mode)
        except ValueError:
            return mode

    def module_info(self, timeout_s: float = 10.0, cancel: ClockEvent | None = None) -> list[ModuleInfo]:
        """Request 90: the firmware modules on the device, in either reply format."""
        return parse_module_info(self.call(RequestType.GET_MODULE_INFO, b"", timeout_s, cancel))

    def update_firmware(
        self,
        module: bytes,
        *,
        timeout_s: float = FIRMWARE_UPDATE_TIMEOUT_S,
        progress: Callable[[int, int], None] | None = None,
        cancel: ClockEvent | None = None,
    ) -> int:
        """Requests 250, 253..., 251: send a whole module; the device validates it, applies it and resets.

        Returns the number of control requests made. On any failure after the start the update is
        cancelled (252) so the device does not keep a half-received module.
        """
        deadline = self.clock.now() + timeout_s

        def left() -> float:
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                raise ControlTimeout(f"firmware update did not finish within {timeout_s:.0f} s")
            return remaining

        start = StartFirmwareUpdateRequest(size=len(module), format=0)
        reply = decode(
            StartFirmwareUpdateReply, self.call(RequestType.START_FIRMWARE_UPDATE, bytes(start), left(), cancel)
        )
        chunk = reply.chunk_size or 4096
        requests = 1
        try:
            if chunk > MAX_UPDATE_CHUNK:  # checked here, so the update started on the device is cancelled
                raise ControlError(
                    Result.PROTOCOL_ERROR,
                    f"the device asked for {chunk}-byte chunks, more than a request carries ({MAX_UPDATE_CHUNK})",
                )
            for offset in range(0, len(module), chunk):
                data = FirmwareUpdateDataRequest(data=module[offset : offset + chunk])
                self.call(RequestType.FIRMWARE_UPDATE_DATA, bytes(data), left(), cancel)
                requests += 1
                if progress is not None:
                    progress(min(offset + chunk, len(module)), len(module))
            self.call(RequestType.FINISH_FIRMWARE_UPDATE, bytes(FinishFirmwareUpdateRequest()), left(), cancel)
            return requests + 1
        except (ControlFailure, Cancelled):
            with contextlib.suppress(ControlFailure, Cancelled):
                self.call(RequestType.CANCEL_FIRMWARE_UPDATE, b"", 5.0)
            raise


def _printable(data: bytes) -> str:
    """ASCII text with non-printable bytes dropped (as PUSB treats ids and versions)."""
    return "".join(chr(b) for b in data if 0x20 <= b < 0x7F)
