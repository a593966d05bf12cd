"""The device side of Particle USB control requests, as Device OS serves them (a simulator part).

A simulated device in normal mode hands its vendor control transfers to a :class:`ControlServer`,
which runs Device OS's request channel (``system/src/usb_control_request_channel.cpp``, read for
behaviour; usb-serial-protocols.md 2.1): INIT gives an id and OK, or PENDING while a buffer over
64 bytes is allocated, or BUSY when 4 requests are active; SEND fills the payload and queues the
request to the device's ``handler``; CHECK answers PENDING until the handler's result is there,
then OK with the result and reply size; RECV hands the reply out; a request ends once its reply has
been read (or, with no reply, once the CHECK carrying its result has been sent); RESET(id) cancels
one request, RESET(0) all. Transfers the protocol does not allow are stalled, as the device does.
The raw 0x50 requests (device id 20, system version 30, reset 40, cloud disconnect 302) are served
too. Times are seconds on the injected clock.

A handler may give a request a *completion*, as Device OS's ``system_ctrl_set_result(req, result,
handler)`` does: it runs when the request ends, with the result it ended with (0 once the host has
read the reply: ``HAL_USB_VENDOR_REQUEST_STATE_TX_COMPLETED`` after the last RECV, or after the CHECK
that carried the result when there is no reply; CANCELLED after the host's RESET; ABORTED after a USB
reset). That is where Device OS resets after requests 40/50/60 and applies a firmware update
(``system/src/usb_control_request_channel.cpp`` ``finishActiveRequest``/``finishRequest``,
``system/src/system_control_internal.cpp``). A request cancelled before its handler answered gets
its completion run as soon as the handler answers (``setResult`` on a cancelled request).

    >>> from hw.clock import VirtualClock
    >>> server = ControlServer(lambda type_id, payload: (0, b"pong"), VirtualClock())
    >>> server.usb_control(0xC0, 1, 0, 1000, 64).hex(" ", 2)  # INIT, type 1000: flags, OK, id 1
    '0300 0000 0000 0100'
    >>> server.usb_control(0xC0, 2, 0, 1, 64).hex(" ", 2)  # CHECK: flags, OK, 4 bytes to read, result 0
    '0d00 0000 0000 0400 0000 0000 0000'
    >>> server.usb_control(0xC0, 4, 0, 1, 4)  # RECV
    b'pong'
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from firmware.platforms import QUIRK_CONTROL_OUT_DATA_STAGE
from hw.clock import Clock
from hw.control import (
    MAX_ACTIVE_REQUESTS,
    MAX_PAYLOAD,
    MIN_WLENGTH,
    RAW_REQUEST,
    ChannelStatus,
    GetDeviceIdReply,
    GetSystemVersionReply,
    RequestType,
    Result,
    Service,
    Status,
)
from hw.sim.usb_backend import SimUsbGone, SimUsbIoError, SimUsbStall, SimUsbTimeout

#: What runs when a request ends (``completion(result)``), like a Device OS request's completion handler.
Completion = Callable[[int], None]
#: ``handler(type_id, payload)`` -> ``(result, reply)`` or ``(result, reply, completion)``; None leaves
#: the request pending (a stuck system thread) until :meth:`ControlServer.complete` answers it or the
#: host resets it. A handler with a ``raw`` attribute (a :data:`RawHandler`) serves the raw requests.
Handler = Callable[[int, bytes], tuple[int, bytes] | tuple[int, bytes, Completion | None] | None]
#: ``raw_handler(type_id, data)`` -> reply bytes for IN, anything but None to accept an OUT; None stalls.
RawHandler = Callable[[int, bytes], bytes | int | None]
#: ``on_done(type_id, result)``: a request the handler answered is over: 0 when its reply was read,
#: CANCELLED after a RESET, ABORTED after a USB reset (the moments a completion runs; for tests).
DoneHook = Callable[[int, int], None]


class Fault(StrEnum):
    """What a fault hook can do to one transfer (a flaky cable, a hung USB stack)."""

    STALL = "stall"  # the device stalls it, unprocessed
    TIMEOUT = "timeout"  # it never completes, unprocessed
    DROP = "drop"  # garbled on the way in: the device never sees it (host: I/O error)
    LOST_REPLY = "lost-reply"  # the device processes it, the answer is garbled (host: I/O error)
    GONE = "gone"  # the device drops off the bus and re-enumerates


#: ``fault(bm_request_type, b_request, w_value, w_index)`` -> a Fault for this transfer, or None.
FaultHook = Callable[[int, int, int, int], Fault | None]

_RAISE_BEFORE: dict[Fault, type[Exception]] = {
    Fault.STALL: SimUsbStall,
    Fault.TIMEOUT: SimUsbTimeout,
    Fault.DROP: SimUsbIoError,
    Fault.GONE: SimUsbGone,
}


def every_nth(n: int, fault: Fault = Fault.DROP) -> FaultHook:
    """A fault hook failing every ``n``-th transfer with ``fault``: a cable that is bad but not dead."""
    count = 0

    def hook(bm: int, request: int, value: int, index: int) -> Fault | None:
        nonlocal count
        count += 1
        return fault if count % n == 0 else None

    return hook


class _State(Enum):
    ALLOC_PENDING = "buffer being allocated"
    ALLOC_FAILED = "buffer allocation failed"
    RECV_PAYLOAD = "waiting for the payload"
    PENDING = "with the handler"
    DONE = "result ready"


@dataclass(eq=False)
class _Request:
    id: int
    type_id: int
    size: int
    state: _State
    payload: bytearray = field(default_factory=bytearray)
    reply: bytes = b""
    result: int = 0
    offset: int = 0  # bytes of the reply handed out
    active: bool = True
    final_result: int = Result.OK  # what on_done reports once the handler has answered
    completion: Completion | None = None


class ControlServer:
    """Device OS's USB control-request channel for one simulated device.

    ``quirks`` are the platform's (rtl872x: a vendor OUT transfer without a data stage times out).
    ``processing_s`` is how long the system thread takes to run a request (0: at once),
    ``alloc_s`` how long allocating a buffer over 64 bytes takes. ``max_alloc`` is the largest
    payload the device can allocate (larger: NO_MEMORY). ``fault`` may fail single transfers.
    """

    def __init__(
        self,
        handler: Handler,
        clock: Clock,
        *,
        quirks: frozenset[str] = frozenset(),
        raw_handler: RawHandler | None = None,
        on_done: DoneHook | None = None,
        fault: FaultHook | None = None,
        processing_s: float = 0.0,
        alloc_s: float = 0.0,
        max_active: int = MAX_ACTIVE_REQUESTS,
        max_alloc: int = MAX_PAYLOAD,
    ):
        self.handler = handler
        self.clock = clock
        self.quirks = frozenset(quirks)
        self.raw_handler = raw_handler or getattr(handler, "raw", None) or self._raw_from_handler
        self.on_done = on_done
        self.fault = fault
        self.processing_s = processing_s
        self.alloc_s = alloc_s
        self.max_active = max_active
        self.max_alloc = max_alloc
        self.lock: threading.RLock = getattr(clock, "lock", None) or threading.RLock()
        self._active: dict[int, _Request] = {}
        self._unanswered: dict[int, _Request] = {}  # handler returned None: complete() may answer
        self._last_id = 0

    # -- what the simulated device calls --
    def usb_control(
        self, bm_request_type: int, b_request: int, w_value: int, w_index: int, data_or_length: bytes | int
    ) -> bytes | int:
        """Serve one vendor control transfer (the SimUsbPeer.usb_control contract)."""
        with self.lock:
            fault = self.fault(bm_request_type, b_request, w_value, w_index) if self.fault else None
            if fault in _RAISE_BEFORE:
                raise _RAISE_BEFORE[fault]()
            device_to_host = bool(bm_request_type & 0x80)
            data = b"" if device_to_host else bytes(data_or_length)  # type: ignore[arg-type]
            length = int(data_or_length) if device_to_host else len(data)  # type: ignore[arg-type]
            if not device_to_host and not data and QUIRK_CONTROL_OUT_DATA_STAGE in self.quirks:
                raise SimUsbTimeout()  # rtl872x: the status stage of a data-less OUT never completes
            if bm_request_type & 0x60 != 0x40:
                raise SimUsbStall()  # not a vendor request: not ours
            if 0x01 <= b_request <= 0x0F:
                answer = self._service(b_request, device_to_host, w_value, w_index, length, data)
            elif b_request == RAW_REQUEST:
                answer = self._raw(device_to_host, w_index, length, data)
            else:
                raise SimUsbStall()
            if fault is Fault.LOST_REPLY:
                raise SimUsbIoError()
            return answer

    def usb_reset(self) -> None:
        """A USB bus reset (re-enumeration): Device OS aborts every active request."""
        with self.lock:
            for req in list(self._active.values()):
                self._cancel(req, Result.ABORTED)

    def complete(self, request_id: int, result: int, reply: bytes = b"", completion: Completion | None = None) -> bool:
        """Answer a request whose handler returned None; False if there is no such request."""
        with self.lock:
            req = self._unanswered.pop(request_id, None)
            if req is None:
                return False
            self._answer(req, result, reply, completion)
            return True

    @property
    def active_ids(self) -> tuple[int, ...]:
        """Ids of the requests the device holds (at most ``max_active``)."""
        with self.lock:
            return tuple(self._active)

    # -- service requests --
    def _service(
        self, service: int, device_to_host: bool, value: int, index: int, length: int, data: bytes
    ) -> bytes | int:
        serve = {
            (Service.INIT, True): lambda: self._init(index, value, length),
            (Service.CHECK, True): lambda: self._check(index, length),
            (Service.SEND, False): lambda: self._send(index, data),
            (Service.RECV, True): lambda: self._recv(index, length),
            (Service.RESET, True): lambda: self._reset(index, length),
        }.get((service, device_to_host))
        if serve is None:
            raise SimUsbStall()  # an unknown service, or the wrong direction for it
        return serve()

    def _init(self, type_id: int, size: int, length: int) -> bytes:
        if length < MIN_WLENGTH:
            raise SimUsbStall()
        if len(self._active) >= self.max_active:
            return ChannelStatus(Status.BUSY).encode()
        # Device OS lets its u16 counter wrap through 0; 0 means "all" to RESET, so the sim skips it.
        self._last_id = self._last_id % 0xFFFF + 1
        req = _Request(self._last_id, type_id, size, _State.RECV_PAYLOAD)
        self._active[req.id] = req
        status = Status.OK
        if size == 0:
            req.state = _State.PENDING
            self._process(req)
        elif size > MIN_WLENGTH:  # larger than a pooled buffer: allocated later by the system thread
            req.state = _State.ALLOC_PENDING
            status = Status.PENDING
            self.clock.call_later(self.alloc_s, lambda: self._allocated(req))
        return ChannelStatus(status, id=req.id).encode()

    def _allocated(self, req: _Request) -> None:
        with self.lock:
            if req.active and req.state is _State.ALLOC_PENDING:
                req.state = _State.RECV_PAYLOAD if req.size <= self.max_alloc else _State.ALLOC_FAILED

    def _check(self, request_id: int, length: int) -> bytes:
        if length < MIN_WLENGTH:
            raise SimUsbStall()
        req = self._active.get(request_id)
        if req is None:
            return ChannelStatus(Status.NOT_FOUND).encode()
        if req.state is _State.ALLOC_FAILED:
            self._finish(req, None)
            return ChannelStatus(Status.NO_MEMORY).encode()
        if req.state is not _State.DONE:
            status = Status.OK if req.state is _State.RECV_PAYLOAD else Status.PENDING
            return ChannelStatus(status).encode()
        reply = ChannelStatus(Status.OK, size=len(req.reply) or None, result=req.result).encode()
        if not req.reply:
            self._finish(req, Result.OK)  # nothing to read: over once this reply is sent
        return reply

    def _send(self, request_id: int, data: bytes) -> int:
        req = self._active.get(request_id)
        if req is None or req.state is not _State.RECV_PAYLOAD or len(req.payload) + len(data) > req.size:
            raise SimUsbStall()
        req.payload += data
        if len(req.payload) == req.size:
            req.state = _State.PENDING
            self._process(req)
        return len(data)

    def _recv(self, request_id: int, length: int) -> bytes:
        req = self._active.get(request_id)
        if req is None or req.state is not _State.DONE or length == 0 or req.offset + length > len(req.reply):
            raise SimUsbStall()  # Device OS wants exactly what is left, or less
        chunk = req.reply[req.offset : req.offset + length]
        req.offset += length
        if req.offset == len(req.reply):
            self._finish(req, Result.OK)
        return chunk

    def _reset(self, request_id: int, length: int) -> bytes:
        if length < MIN_WLENGTH:
            raise SimUsbStall()
        if request_id == 0:
            for req in list(self._active.values()):
                self._cancel(req, Result.CANCELLED)
        elif request_id in self._active:
            self._cancel(self._active[request_id], Result.CANCELLED)
        else:
            return ChannelStatus(Status.NOT_FOUND).encode()
        return ChannelStatus(Status.OK).encode()

    # -- request life --
    def _process(self, req: _Request) -> None:
        """Hand the request to the system thread (the handler), now or after ``processing_s``."""

        def run() -> None:
            with self.lock:
                answer = self.handler(req.type_id, bytes(req.payload))
                if answer is None:
                    self._unanswered[req.id] = req
                else:
                    self._answer(req, *answer)  # (result, reply) or (result, reply, completion)

        if self.processing_s > 0:
            self.clock.call_later(self.processing_s, run)
        else:
            run()

    def _answer(self, req: _Request, result: int, reply: bytes, completion: Completion | None = None) -> None:
        req.completion = completion
        if req.active and req.state is _State.PENDING:
            req.result, req.reply, req.state = int(result), bytes(reply), _State.DONE
        else:
            self._ended(req, req.final_result)  # cancelled while with the handler

    def _cancel(self, req: _Request, result: int) -> None:
        req.final_result = result
        handled = req.state is _State.DONE
        if req.state in (_State.PENDING, _State.ALLOC_PENDING):
            req.active = False  # the handler still runs; its answer then reports the cancellation
            self._active.pop(req.id, None)
            return
        self._finish(req, result if handled else None)

    def _finish(self, req: _Request, result: int | None) -> None:
        req.active = False
        self._active.pop(req.id, None)
        if result is not None:
            self._ended(req, result)

    def _ended(self, req: _Request, result: int) -> None:
        """A request the handler answered is over: its completion runs, with the result it ended with."""
        completion, req.completion = req.completion, None
        if completion is not None:
            completion(result)
        if self.on_done:
            self.on_done(req.type_id, result)

    # -- raw 0x50 requests --
    def _raw(self, device_to_host: bool, type_id: int, length: int, data: bytes) -> bytes | int:
        if device_to_host and length == 0:
            raise SimUsbStall()
        answer = self.raw_handler(type_id, data if not device_to_host else b"")
        if answer is None:
            raise SimUsbStall()
        if not device_to_host:
            return len(data)
        reply = bytes(answer)  # type: ignore[arg-type]
        if len(reply) > length:
            raise SimUsbStall()  # Device OS refuses a data stage too short for the whole answer
        return reply

    def _raw_from_handler(self, type_id: int, data: bytes) -> bytes | int | None:
        """Raw requests answered through ``handler`` when no ``raw_handler`` was given.

        The device id comes out in upper-case hex, as Device OS's raw request sends it. A handler
        that does not answer (None) or fails makes the raw request stall.
        """
        if type_id not in _RAW_REPLIES:
            return None
        answer = self.handler(type_id, b"")
        if answer is None or answer[0] != Result.OK:
            return None
        return _RAW_REPLIES[type_id](answer[1])


# How the default raw handler turns the framed reply into the raw one; OUT requests send nothing back.
_RAW_REPLIES: dict[int, Callable[[bytes], bytes | int]] = {
    RequestType.DEVICE_ID: lambda reply: GetDeviceIdReply.loads(reply).id.upper().encode(),
    RequestType.SYSTEM_VERSION: lambda reply: GetSystemVersionReply.loads(reply).version.encode(),
    RequestType.RESET: lambda reply: 0,
    RequestType.CLOUD_DISCONNECT: lambda reply: 0,
}
