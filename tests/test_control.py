"""hw.control end to end: ControlChannel -> pyusb -> SimUsbBackend -> fake peer -> ControlServer.

Every wait runs on a VirtualClock, so backoffs and timeouts cost no real time; the clock's
``now()`` tells how much device time a request took.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import pytest
import usb.core

from firmware.platforms import QUIRK_NO_CONTROL_REQUESTS, platform_by_name
from hw.clock import Cancelled, VirtualClock
from hw.control import (
    CHECK_BACKOFF_S,
    MAX_CHUNK,
    ChannelStatus,
    ControlChannel,
    ControlError,
    ControlTimeout,
    DeviceGone,
    DeviceMode,
    FirmwareModule,
    FirmwareModuleAsset,
    FirmwareModuleDependency,
    FirmwareModuleSecurity,
    GetDeviceIdReply,
    GetDeviceModeReply,
    GetModuleInfoReply,
    GetSystemVersionReply,
    LegacyModule,
    LegacyModuleDependency,
    RequestType,
    Result,
    Service,
    Status,
    decode,
    parse_module_info,
    result_name,
)
from hw.sim.control_server import ControlServer, Fault, every_nth
from hw.sim.usb_backend import SimUsbBackend, SimUsbBus, particle_descriptor

DEVICE_ID = "e00fce68ab2c5d1f0e4a7b93"
ECHO = 1000  # a request type the fake device answers with its payload reversed
SILENT = 999  # a request type the fake device never answers (a stuck system thread)
COMPLETING = 1001  # a request type the fake device answers with a completion (as Device OS does for 40/50/60)


@dataclass(frozen=True)
class Transfer:
    time: float
    bm: int
    request: int
    value: int
    index: int
    length: int  # wLength for IN, the data stage's length for OUT


class FakePeer:
    """A Particle device in normal mode reduced to its USB: a descriptor, a ControlServer, a log."""

    def __init__(self, clock: VirtualClock, platform: str = "boron", replies: dict | None = None, **server_kw):
        self.clock = clock
        self.platform = platform_by_name(platform)
        self.attached = True
        self.transfers: list[Transfer] = []
        self.handled: list[int] = []
        self.done: list[tuple[int, int]] = []
        self.completed: list[tuple[float, int]] = []  # (device time, result) of each COMPLETING request's end
        self.replies = {
            RequestType.DEVICE_ID: (0, bytes(GetDeviceIdReply(DEVICE_ID))),
            RequestType.SYSTEM_VERSION: (0, bytes(GetSystemVersionReply("6.1.1"))),
            RequestType.GET_DEVICE_MODE: (0, bytes(GetDeviceModeReply(DeviceMode.LISTENING))),
            **(replies or {}),
        }
        server_kw.setdefault("quirks", self.platform.quirks)
        self.server = ControlServer(self.handle, clock, on_done=lambda t, r: self.done.append((t, r)), **server_kw)

    def handle(self, type_id: int, payload: bytes) -> tuple[int, bytes] | None:
        self.handled.append(type_id)
        if type_id == ECHO:
            return 0, payload[::-1]
        if type_id == SILENT:
            return None
        if type_id == COMPLETING:
            return 0, payload, lambda result: self.completed.append((self.clock.now(), result))
        known = type_id in {t.value for t in RequestType}
        return self.replies.get(type_id, (0, b"") if known else (Result.NOT_SUPPORTED, b""))

    def usb_attached(self) -> bool:
        return self.attached

    def usb_descriptor(self):
        return particle_descriptor(self.platform, "normal", DEVICE_ID, "1-1.2")

    def usb_control(self, bm: int, request: int, value: int, index: int, data_or_length: bytes | int) -> bytes | int:
        length = data_or_length if isinstance(data_or_length, int) else len(data_or_length)
        self.transfers.append(Transfer(self.clock.now(), bm, request, value, index, length))
        return self.server.usb_control(bm, request, value, index, data_or_length)

    def vendor(self, request: int | None = None) -> list[Transfer]:
        return [t for t in self.transfers if t.bm in (0xC0, 0x40) and (request is None or t.request == request)]


@dataclass
class Rig:
    clock: VirtualClock
    bus: SimUsbBus
    peer: FakePeer
    device: usb.core.Device

    def channel(self, quirks: frozenset[str] | None = None, **kw) -> ControlChannel:
        return ControlChannel(self.device, self.clock, self.peer.platform.quirks if quirks is None else quirks, **kw)

    def raw_in(self, request: int, index: int, length: int = 64) -> bytes:
        """One IN transfer straight through pyusb, as another program on the host would send it."""
        return bytes(self.device.ctrl_transfer(0xC0, request, 0, index, length))


def make_rig(platform: str = "boron", **kw) -> Rig:
    clock = VirtualClock()
    bus = SimUsbBus(clock)
    peer = FakePeer(clock, platform, **kw)
    bus.attach(peer)
    device = usb.core.find(backend=SimUsbBackend(bus), idVendor=0x2B04)
    return Rig(clock, bus, peer, device)


@pytest.fixture
def rig() -> Rig:
    return make_rig()


# --- the framed protocol ------------------------------------------------------------------------


def test_happy_path_without_payload(rig):
    channel = rig.channel()
    assert channel.device_id() == DEVICE_ID
    services = [(t.request, t.index) for t in rig.peer.vendor()]
    assert services[0] == (Service.RESET, 0)  # RESET(0) when the channel opens
    assert [s for s, _ in services[1:]] == [Service.INIT, Service.CHECK, Service.RECV]
    init = rig.peer.vendor(Service.INIT)[0]
    assert (init.bm, init.index, init.value, init.length) == (0xC0, RequestType.DEVICE_ID, 0, 64)
    assert rig.peer.vendor(Service.RECV)[0].length == len(bytes(GetDeviceIdReply(DEVICE_ID)))
    assert rig.clock.now() == pytest.approx(CHECK_BACKOFF_S[0])  # one CHECK after the first backoff
    assert rig.peer.done == [(RequestType.DEVICE_ID, Result.OK)]  # over once the reply was read
    assert rig.peer.server.active_ids == ()
    channel.device_id()
    assert len(rig.peer.vendor(Service.RESET)) == 1  # RESET(0) only once per channel


def test_happy_path_with_a_small_payload(rig):
    result, reply = rig.channel().request(ECHO, b"hello")
    assert (result, reply) == (0, b"olleh")
    assert [t.request for t in rig.peer.vendor()][1:] == [Service.INIT, Service.SEND, Service.CHECK, Service.RECV]
    send = rig.peer.vendor(Service.SEND)[0]
    assert (send.bm, send.length) == (0x40, 5)


def test_request_with_no_reply_data(rig):
    rig.channel().reset()
    assert [t.request for t in rig.peer.vendor()][1:] == [Service.INIT, Service.CHECK]  # no RECV
    assert rig.peer.handled == [RequestType.RESET] and rig.peer.done == [(RequestType.RESET, 0)]
    assert rig.peer.server.active_ids == ()


def test_large_payload_goes_in_4096_byte_chunks(rig):
    payload = bytes(range(256)) * 40  # 10240 bytes: INIT answers PENDING while the buffer is allocated
    result, reply = rig.channel().request(ECHO, payload)
    assert result == 0 and reply == payload[::-1]
    sends = [t.length for t in rig.peer.vendor(Service.SEND)]
    recvs = [t.length for t in rig.peer.vendor(Service.RECV)]
    assert sends == recvs == [MAX_CHUNK, MAX_CHUNK, len(payload) - 2 * MAX_CHUNK]
    order = [t.request for t in rig.peer.vendor()][1:]
    assert order[:3] == [Service.INIT, Service.CHECK, Service.SEND]  # CHECK until the buffer is there


def test_the_largest_payload_and_one_byte_more(rig):
    payload = bytes(0xFFFF)
    assert rig.channel().request(ECHO, payload) == (0, payload)
    with pytest.raises(ValueError):
        rig.channel().request(ECHO, bytes(0x10000))
    with pytest.raises(ValueError):
        rig.channel().request(0x10000)


def test_pending_polls_with_the_backoff_schedule():
    rig = make_rig(processing_s=4.0)
    assert rig.channel().device_id() == DEVICE_ID
    init = rig.peer.vendor(Service.INIT)[0].time
    checks = [round(t.time - init, 6) for t in rig.peer.vendor(Service.CHECK)]
    expected, at = [], 0.0
    for attempt in range(len(checks)):
        at += CHECK_BACKOFF_S[min(attempt, len(CHECK_BACKOFF_S) - 1)]
        expected.append(round(at, 6))
    assert checks == expected
    assert expected[:9] == [0.005, 0.015, 0.035, 0.085, 0.135, 0.235, 0.335, 0.585, 0.835]
    assert checks[-1] >= 4.0 and checks[-2] < 4.0  # the first CHECK after the handler finished got it


def test_busy_with_four_active_requests_times_out():
    rig = make_rig()
    channel = rig.channel()
    channel.open()
    ids = [ChannelStatus.parse(rig.raw_in(Service.INIT, SILENT)).id for _ in range(4)]  # another session's
    assert ids == [1, 2, 3, 4] and rig.peer.server.active_ids == (1, 2, 3, 4)
    assert ChannelStatus.parse(rig.raw_in(Service.INIT, SILENT)) == ChannelStatus(Status.BUSY)
    with pytest.raises(ControlTimeout, match="busy"):
        channel.request(RequestType.DEVICE_ID, timeout_s=2.0)
    inits = rig.peer.vendor(Service.INIT)[5:]
    assert len(inits) > 3 and rig.clock.now() == pytest.approx(2.0)
    assert rig.peer.server.active_ids == (1, 2, 3, 4)  # nothing of ours to reset


def test_busy_then_a_slot_frees_up():
    rig = make_rig()
    channel = rig.channel()
    channel.open()
    for _ in range(4):
        rig.raw_in(Service.INIT, SILENT)
    # The other session gives up on its first request 0.3 s from now.
    rig.clock.call_later(0.3, lambda: rig.peer.server.usb_control(0xC0, Service.RESET, 0, 1, 64))
    assert channel.device_id() == DEVICE_ID
    assert rig.peer.server.active_ids == (2, 3, 4)
    assert rig.peer.done[-1] == (RequestType.DEVICE_ID, 0)


def test_timeout_sends_reset_for_the_request(rig):
    channel = rig.channel()
    with pytest.raises(ControlTimeout, match="in time"):
        channel.request(SILENT, timeout_s=3.0)
    assert rig.clock.now() == pytest.approx(3.0)
    last = rig.peer.vendor()[-1]
    assert (last.request, last.index) == (Service.RESET, 1)
    assert rig.peer.server.active_ids == ()
    assert channel.device_id() == DEVICE_ID  # the channel goes on working


def test_unanswered_request_answered_late_reports_its_cancellation(rig):
    with pytest.raises(ControlTimeout):
        rig.channel().request(SILENT, timeout_s=1.0)
    assert rig.peer.server.complete(1, 0, b"late")
    assert rig.peer.done == [(SILENT, Result.CANCELLED)]
    assert not rig.peer.server.complete(1, 0)


def test_not_found_when_the_device_forgot_the_request(rig):
    rig.clock.call_later(0.2, rig.peer.server.usb_reset)  # a USB reset aborts every request
    with pytest.raises(ControlError) as lost:
        rig.channel().request(SILENT, timeout_s=10.0)
    assert lost.value.result == Result.CANCELLED and "no longer knows" in str(lost.value)
    assert ChannelStatus.parse(rig.raw_in(Service.CHECK, 77)) == ChannelStatus(Status.NOT_FOUND)
    assert ChannelStatus.parse(rig.raw_in(Service.RESET, 77)) == ChannelStatus(Status.NOT_FOUND)


def test_unknown_request_type_is_a_result_not_an_exception(rig):
    channel = rig.channel()
    assert channel.request(4242) == (Result.NOT_SUPPORTED, b"")
    with pytest.raises(ControlError) as refused:
        channel.call(4242)
    assert (refused.value.result, refused.value.name) == (-120, "NOT_SUPPORTED")


def test_device_gone_mid_request(rig):
    def unplug():
        rig.peer.attached = False

    rig.clock.call_later(0.3, unplug)
    with pytest.raises(DeviceGone):
        rig.channel().request(SILENT, timeout_s=10.0)
    assert rig.peer.vendor()[-1].request == Service.CHECK  # no RESET sent to a device that left
    with pytest.raises(DeviceGone):
        rig.channel().device_id()


def test_device_dropping_off_during_a_transfer():
    rig = make_rig(fault=lambda bm, request, value, index: Fault.GONE if request == Service.CHECK else None)
    with pytest.raises(DeviceGone):
        rig.channel().device_id()
    assert rig.bus.address_of(rig.peer) != rig.device.address  # it came back under a new address


@pytest.mark.parametrize(
    ("fault", "result"),
    [(Fault.STALL, Result.PROTOCOL_ERROR), (Fault.DROP, Result.IO_ERROR), (Fault.LOST_REPLY, Result.IO_ERROR)],
)
def test_a_failing_transfer_mid_request_resets_it(fault, result):
    rig = make_rig(fault=lambda bm, request, value, index: fault if request == Service.CHECK else None)
    with pytest.raises(ControlError) as failed:
        rig.channel().request(SILENT)
    assert failed.value.result == result
    last = rig.peer.transfers[-1]
    assert (last.request, last.index) == (Service.RESET, 1)


def test_usb_timeout_of_one_transfer():
    rig = make_rig(fault=lambda bm, request, value, index: Fault.TIMEOUT if request == Service.INIT else None)
    with pytest.raises(ControlTimeout, match="timed out"):
        rig.channel(transfer_timeout_s=2.0).device_id()
    assert rig.clock.now() == pytest.approx(2.0)  # the host waited out the transfer


def test_a_hung_device_costs_no_more_than_the_request_allows():
    # Every transfer of a hung device times out; RESET(0) and INIT each would wait 1 s and 5 s on their own.
    rig = make_rig(fault=lambda bm, request, value, index: Fault.TIMEOUT)
    with pytest.raises(ControlTimeout):
        rig.channel().module_info(timeout_s=2.0)
    assert rig.clock.now() == pytest.approx(2.0)  # RESET(0) took half, INIT the rest


def test_flaky_cable_fails_one_transfer_in_n():
    rig = make_rig(fault=every_nth(7))
    channel = rig.channel()
    outcomes = []
    for _ in range(6):
        try:
            outcomes.append(channel.device_id())
        except ControlError as exc:
            outcomes.append(exc.name)
    assert outcomes.count(DEVICE_ID) >= 3 and "IO_ERROR" in outcomes


def test_cancel_resets_the_request(rig):
    stop = rig.clock.event()
    rig.clock.call_later(0.5, stop.set)
    with pytest.raises(Cancelled):
        rig.channel().request(SILENT, timeout_s=30.0, cancel=stop)
    assert rig.clock.now() == pytest.approx(0.5)
    assert rig.peer.vendor()[-1].request == Service.RESET and rig.peer.server.active_ids == ()


def test_reset_zero_on_open_clears_an_earlier_sessions_requests(rig):
    for _ in range(4):
        rig.raw_in(Service.INIT, SILENT)
    assert len(rig.peer.server.active_ids) == 4
    assert rig.channel().device_id() == DEVICE_ID  # would be BUSY without the RESET(0)
    assert rig.peer.server.active_ids == ()


def test_no_memory_for_a_large_payload():
    rig = make_rig(max_alloc=1000)
    with pytest.raises(ControlError) as failed:
        rig.channel().request(ECHO, bytes(2000))
    assert failed.value.result == Result.NO_MEMORY and rig.peer.server.active_ids == ()


def test_server_stalls_what_device_os_stalls(rig):
    stalls = [
        (0xC0, Service.INIT, 0, 20, 63),  # data stage under 64 bytes
        (0xC0, Service.CHECK, 0, 1, 8),
        (0xC0, Service.RESET, 0, 0, 8),
        (0x40, Service.INIT, 0, 20, b"x"),  # wrong direction
        (0xC0, Service.RECV, 0, 1, 4),  # no such request
        (0xC0, 0x0E, 0, 0, 64),  # unknown service
        (0xC0, 0x51, 0, 0, 64),  # not 'P'
        (0xC0, 0x50, 0, 20, 23),  # raw device id needs 24 bytes
        (0xC0, 0x50, 0, 99, 64),  # unknown raw request
    ]
    for bm, request, value, index, data in stalls:
        with pytest.raises(usb.core.USBError) as stall:
            rig.device.ctrl_transfer(bm, request, value, index, data)
        assert stall.value.errno == 32, (request, index)  # EPIPE
    reply = ChannelStatus.parse(rig.raw_in(Service.INIT, ECHO, 64))
    assert reply.status == Status.OK
    # SEND more than was declared (0), RECV before the result: stalled
    for bm, request, data in ((0x40, Service.SEND, b"x"), (0xC0, Service.RECV, 1)):
        with pytest.raises(usb.core.USBError):
            rig.device.ctrl_transfer(bm, request, 0, reply.id, data)


def test_request_ids_wrap_past_zero(rig):
    rig.peer.server._last_id = 0xFFFF
    assert ChannelStatus.parse(rig.raw_in(Service.INIT, SILENT)).id == 1


def test_service_reply_bytes():
    assert ChannelStatus(Status.BUSY).encode() == bytes.fromhex("01000000 0300")
    busy_id = ChannelStatus(Status.OK, id=0x1234).encode()
    assert busy_id == bytes.fromhex("03000000 0000 3412")
    full = ChannelStatus(Status.OK, id=7, size=0x10000, result=-1801)
    assert full.encode() == bytes.fromhex("0f000000 0000 0700 00000100") + struct.pack("<i", -1801)
    assert ChannelStatus.parse(full.encode() + bytes(50)) == full  # trailing bytes are ignored
    with pytest.raises(ControlError, match="PROTOCOL_ERROR"):
        ChannelStatus.parse(bytes.fromhex("0d000000 0000 0400"))  # SIZE flagged but cut short
    with pytest.raises(ControlError, match="without a status"):
        ChannelStatus.parse(bytes.fromhex("02000000 0000 0100"))


def test_secret_keys_are_never_requested(rig):
    for type_id in (210, 211):
        with pytest.raises(ValueError, match="refused"):
            rig.channel().request(type_id)
    assert rig.peer.transfers == []


def test_platform_without_control_requests():
    rig = make_rig()
    with pytest.raises(ControlError) as unsupported:
        rig.channel(quirks=frozenset({QUIRK_NO_CONTROL_REQUESTS})).device_id()
    assert unsupported.value.result == Result.NOT_SUPPORTED and rig.peer.transfers == []


# --- rtl872x: OUT transfers need a data stage ------------------------------------------------------


def test_rtl872x_out_transfer_with_the_one_byte_data_stage():
    rig = make_rig("p2")
    channel = rig.channel()  # the platform's quirks: one byte added
    channel.raw_cloud_disconnect()
    channel.raw_reset()
    outs = [t for t in rig.peer.transfers if t.bm == 0x40]
    assert [(t.index, t.length) for t in outs] == [(302, 1), (40, 1)]
    assert rig.peer.handled == [RequestType.CLOUD_DISCONNECT, RequestType.RESET]


def test_rtl872x_out_transfer_without_the_workaround_times_out():
    rig = make_rig("p2")
    channel = rig.channel(quirks=frozenset(), transfer_timeout_s=5.0)
    with pytest.raises(ControlTimeout):
        channel.raw_reset()
    assert rig.clock.now() == pytest.approx(5.0) and rig.peer.handled == []
    assert make_rig("boron").channel(quirks=frozenset()).raw_reset() is None  # nRF52840: no quirk needed


# --- raw 0x50 requests and the fallbacks --------------------------------------------------------------


def old_firmware_rig() -> Rig:
    """Gen2 firmware before 1.5.0: no framed device id or version, the raw requests work."""

    def raw(type_id: int, data: bytes) -> bytes | int | None:
        answers = {20: DEVICE_ID.upper().encode(), 30: b"1.4.4", 40: 0, 302: 0}
        return answers.get(type_id)

    unsupported = (-120, b"")
    return make_rig(
        "photon",
        replies={RequestType.DEVICE_ID: unsupported, RequestType.SYSTEM_VERSION: unsupported},
        raw_handler=raw,
    )


def test_raw_fallbacks_for_old_firmware():
    rig = old_firmware_rig()
    channel = rig.channel()
    assert channel.device_id() == DEVICE_ID
    assert channel.system_version() == "1.4.4"
    raws = [(t.bm, t.index, t.length) for t in rig.peer.transfers if t.request == 0x50]
    assert raws == [(0xC0, 20, 64), (0xC0, 30, 64)]
    with pytest.raises(ControlError, match="NOT_SUPPORTED"):
        channel.device_id(fallback=False)


def test_raw_requests_answered_through_the_handler(rig):
    channel = rig.channel()
    assert rig.raw_in(0x50, 20) == DEVICE_ID.upper().encode()  # Device OS sends upper-case hex
    assert channel.raw_device_id() == DEVICE_ID
    assert channel.raw_system_version() == "6.1.1"
    channel.raw_reset()
    assert RequestType.RESET in rig.peer.handled
    assert not rig.peer.vendor(Service.INIT)  # raw requests need no INIT/CHECK
    rig.peer.replies[RequestType.SYSTEM_VERSION] = (-120, b"")
    with pytest.raises(ControlError, match="NOT_SUPPORTED"):
        channel.raw_system_version()


@pytest.mark.parametrize(
    ("fault", "raises"), [(Fault.GONE, None), (Fault.LOST_REPLY, None), (Fault.STALL, ControlError)]
)
def test_raw_reset_counts_the_device_leaving_as_done(fault, raises):
    rig = make_rig(fault=lambda bm, request, value, index: fault if request == 0x50 else None)
    if raises is None:
        rig.channel().raw_reset()
    else:
        with pytest.raises(raises, match="NOT_SUPPORTED"):
            rig.channel().raw_reset()


def test_raw_version_stops_at_nul(rig):
    rig.peer.server.raw_handler = lambda type_id, data: b"0.7.0\x00\xff\xff" if type_id == 30 else None
    assert rig.channel().raw_system_version() == "0.7.0"


# --- high-level calls and their protobuf messages -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "type_id"),
    [
        ("reset", 40),
        ("enter_dfu", 50),
        ("enter_safe_mode", 60),
        ("start_listening", 70),
        ("stop_listening", 71),
    ],
)
def test_mode_changes(rig, method, type_id):
    getattr(rig.channel(), method)()
    init = rig.peer.vendor(Service.INIT)[0]
    assert (init.index, init.value) == (type_id, 0)  # no payload: the device acts on INIT at once
    assert rig.peer.done == [(type_id, 0)]


def test_device_mode_and_system_version(rig):
    channel = rig.channel()
    assert channel.device_mode() is DeviceMode.LISTENING
    assert channel.system_version() == "6.1.1"
    rig.peer.replies[RequestType.GET_DEVICE_MODE] = (0, b"")  # proto3: NORMAL_MODE is the absent field
    assert channel.device_mode() is DeviceMode.NORMAL
    rig.peer.replies[RequestType.GET_DEVICE_MODE] = (0, bytes([0x08, 0x07]))
    assert channel.device_mode() == 7


def test_protected_device(rig):
    rig.peer.replies[RequestType.DFU_MODE] = (-1801, b"")
    with pytest.raises(ControlError) as protected:
        rig.channel().enter_dfu()
    assert protected.value.protected and protected.value.name == "DEVICE_PROTECTED"
    assert "DEVICE_PROTECTED (-1801)" in str(protected.value)
    assert result_name(-1801) == "DEVICE_PROTECTED" and result_name(-5) == "UNKNOWN_-5"


def test_garbage_reply_is_bad_data(rig):
    rig.peer.replies[RequestType.DEVICE_ID] = (0, b"\x0a\xff")
    with pytest.raises(ControlError, match="BAD_DATA"):
        rig.channel().device_id()


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def nested(number: int, body: bytes) -> bytes:
    return key(number, 2) + varint(len(body)) + body


def test_messages_decode_what_nanopb_writes():
    """Bytes written by hand as the device's encoder writes them (default fields left out)."""
    dependency = key(1, 0) + varint(2) + key(2, 0) + varint(0) + key(3, 0) + varint(3001)
    module = (
        key(1, 0)
        + varint(4)
        + key(2, 0)
        + varint(1)
        + key(3, 0)
        + varint(6101)
        + key(5, 0)
        + varint(0x9C000)
        + key(6, 5)
        + struct.pack("<I", 0x1E)
        + key(7, 5)
        + struct.pack("<I", 0x1A)
        + nested(8, bytes(range(32)))
        + nested(9, dependency)
        + key(11, 0)
        + varint(600_000)
        + nested(12, key(1, 0) + varint(1))
        + key(99, 0)
        + varint(5)  # a field from a newer proto: skipped
    )
    decoded = decode(GetModuleInfoReply, nested(2, module)).modules[0]
    assert decoded == FirmwareModule(
        type=4,
        index=1,
        version=6101,
        max_size=0x9C000,
        checked_flags=0x1E,
        passed_flags=0x1A,
        hash=bytes(range(32)),
        dependencies=[FirmwareModuleDependency(type=2, index=0, version=3001)],
        size=600_000,
        security=FirmwareModuleSecurity(mode=1),
    )
    legacy = key(1, 0) + varint(2) + key(2, 0) + varint(1) + key(3, 0) + varint(1406) + key(4, 0) + varint(262144)
    legacy += key(5, 0) + varint(0x02) + nested(6, key(1, 0) + varint(1) + key(3, 0) + varint(101))
    assert decode(GetModuleInfoReply, nested(1, legacy)).modules_deprecated == [
        LegacyModule(2, 1, 1406, 262144, 2, [LegacyModuleDependency(1, 0, 101)])
    ]
    assert decode(GetDeviceIdReply, nested(1, DEVICE_ID.encode())).id == DEVICE_ID
    assert decode(GetSystemVersionReply, nested(1, b"5.3.1")).version == "5.3.1"
    assert decode(GetDeviceModeReply, key(1, 0) + varint(1)).mode == DeviceMode.LISTENING


@pytest.mark.parametrize(
    "message",
    [
        GetDeviceIdReply(DEVICE_ID),
        GetSystemVersionReply("6.2.0-rc.1"),
        GetDeviceModeReply(1),
        LegacyModuleDependency(1, 0, 1406),
        LegacyModule(3, 1, 6, 4096, 1, [LegacyModuleDependency(2, 1, 1406)]),
        FirmwareModuleDependency(4, 1, 6101),
        FirmwareModuleAsset(b"\x01" * 32, "sound.wav", 1234, 1300),
        FirmwareModuleSecurity(1, b"\x02" * 32),
        FirmwareModule(type=9, index=0, version=1, hash=None, asset_dependencies=[FirmwareModuleAsset(name="a")]),
        GetModuleInfoReply(
            modules_deprecated=[LegacyModule(1, 0, 1200)],
            modules=[FirmwareModule(type=2, version=3001), FirmwareModule(type=8, version=0x00CA)],
        ),
    ],
    ids=lambda m: type(m).__name__,
)
def test_protobuf_round_trips(message):
    assert type(message).loads(bytes(message)) == message


def test_module_info_in_the_current_format(rig):
    modules = [
        FirmwareModule(type=2, index=0, version=3001, size=40_000, checked_flags=0x1E, passed_flags=0x1E),
        FirmwareModule(
            type=4,
            index=1,
            version=6101,
            size=600_000,
            max_size=0x9C000,
            checked_flags=0x1E,
            passed_flags=0x1A,
            hash=b"\xaa" * 32,
            dependencies=[FirmwareModuleDependency(2, 0, 3001)],
        ),
        FirmwareModule(type=5, index=2, version=6, checked_flags=0x16, passed_flags=0x00),
    ]
    rig.peer.replies[RequestType.GET_MODULE_INFO] = (0, bytes(GetModuleInfoReply(modules=modules)))
    bootloader, system, user = rig.channel().module_info()
    assert (bootloader.function, bootloader.index, bootloader.version, bootloader.valid) == (2, 0, 3001, True)
    assert not bootloader.legacy and bootloader.failed == frozenset()
    assert (system.function, system.version, system.size, system.max_size) == (4, 6101, 600_000, 0x9C000)
    assert system.failed == {"dependencies"} and system.failed_flags == 0x04 and not system.valid
    assert system.dependencies[0].function == 2 and system.dependencies[0].version == 3001
    assert system.hash == b"\xaa" * 32
    assert user.failed == {"integrity", "dependencies", "platform"}


def test_module_info_in_the_legacy_format(rig):
    legacy = [
        LegacyModule(type=1, index=0, version=1406, size=16384),  # bootloader
        LegacyModule(type=2, index=1, version=1406, size=262144, validity=0x02),  # system part
        LegacyModule(type=3, index=1, version=5, validity=0x03, dependencies=[LegacyModuleDependency(2, 1, 1406)]),
        LegacyModule(type=6, index=0, version=202),  # radio stack
    ]
    rig.peer.replies[RequestType.GET_MODULE_INFO] = (0, bytes(GetModuleInfoReply(modules_deprecated=legacy)))
    modules = rig.channel().module_info()
    assert [(m.function, m.index, m.version) for m in modules] == [(2, 0, 1406), (4, 1, 1406), (5, 1, 5), (8, 0, 202)]
    assert all(m.legacy for m in modules)
    assert [m.failed for m in modules] == [set(), {"dependencies"}, {"integrity", "dependencies"}, set()]
    assert modules[2].validity == 0x03 and modules[2].failed_flags == 0x06
    assert modules[2].dependencies[0].function == 4  # legacy SYSTEM_PART -> Function.SYSTEM_PART


def test_legacy_list_wins_when_both_are_there():
    both = GetModuleInfoReply(
        modules_deprecated=[LegacyModule(type=2, index=1, version=5601)],
        modules=[FirmwareModule(type=4, index=1, version=5601)],
    )
    assert [m.legacy for m in parse_module_info(bytes(both))] == [True]
    assert parse_module_info(b"") == []


def test_a_request_ends_only_once_its_reply_was_read(rig):
    server = rig.peer.server
    request_id = ChannelStatus.parse(rig.raw_in(Service.INIT, ECHO)).id
    with pytest.raises(usb.core.USBError):  # INIT declared no payload: nothing to SEND
        rig.device.ctrl_transfer(0x40, Service.SEND, 0, request_id, b"x")
    done = ChannelStatus.parse(rig.raw_in(Service.CHECK, request_id))
    assert done == ChannelStatus(Status.OK, size=None, result=0)  # no reply data: over with this CHECK
    assert server.active_ids == ()
    init = ChannelStatus.parse(bytes(rig.device.ctrl_transfer(0xC0, Service.INIT, 6, ECHO, 64)))
    rig.device.ctrl_transfer(0x40, Service.SEND, 0, init.id, b"abcdef")
    assert ChannelStatus.parse(rig.raw_in(Service.CHECK, init.id)) == ChannelStatus(Status.OK, size=6, result=0)
    assert rig.raw_in(Service.RECV, init.id, 4) == b"fedc" and server.active_ids == (init.id,)
    with pytest.raises(usb.core.USBError):
        rig.raw_in(Service.RECV, init.id, 4)  # more than is left
    assert rig.raw_in(Service.RECV, init.id, 2) == b"ba" and server.active_ids == ()
    assert rig.peer.done == [(ECHO, 0), (ECHO, 0)]


def test_a_completion_runs_once_the_host_has_read_the_result(rig):
    """system_ctrl_set_result(req, result, handler): the handler runs when the request ends, with its result."""
    request_id = ChannelStatus.parse(rig.raw_in(Service.INIT, COMPLETING)).id
    rig.clock.sleep(3.0)
    assert rig.peer.completed == []  # answered, but the host has not read it: nothing yet
    assert ChannelStatus.parse(rig.raw_in(Service.CHECK, request_id)) == ChannelStatus(Status.OK, result=0)
    assert rig.peer.completed == [(3.0, Result.OK)]  # no reply data: over once the CHECK carrying it was sent
    init = ChannelStatus.parse(bytes(rig.device.ctrl_transfer(0xC0, Service.INIT, 2, COMPLETING, 64)))
    rig.device.ctrl_transfer(0x40, Service.SEND, 0, init.id, b"ab")
    rig.raw_in(Service.CHECK, init.id)
    rig.raw_in(Service.RECV, init.id, 1)
    assert len(rig.peer.completed) == 1  # half the reply read
    rig.raw_in(Service.RECV, init.id, 1)
    assert rig.peer.completed[1] == (3.0, Result.OK)


def test_a_completion_runs_on_a_cancel_and_a_bus_reset_too(rig):
    first = ChannelStatus.parse(rig.raw_in(Service.INIT, COMPLETING)).id
    rig.raw_in(Service.RESET, first)
    ChannelStatus.parse(rig.raw_in(Service.INIT, COMPLETING))
    rig.peer.server.usb_reset()
    assert [r for _, r in rig.peer.completed] == [Result.CANCELLED, Result.ABORTED]


def test_a_request_cancelled_before_its_handler_answered_completes_when_it_answers():
    rig = make_rig(processing_s=1.0)
    request_id = ChannelStatus.parse(rig.raw_in(Service.INIT, COMPLETING)).id
    rig.raw_in(Service.RESET, request_id)
    assert rig.peer.completed == []
    rig.clock.sleep(1.5)
    assert rig.peer.completed == [(1.0, Result.CANCELLED)]  # setResult on a cancelled request: finishRequest


def test_threads_share_a_channel_and_queue_on_busy():
    rig = make_rig(processing_s=1.0)
    channel = rig.channel()
    results: list[bytes] = []

    start = threading.Barrier(6)

    def worker(n: int) -> None:
        with rig.clock.actor():  # time waits for every worker, so all six are in flight together
            start.wait()
            results.append(channel.request(ECHO, bytes([n]) * 3)[1])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(results) == [bytes([n]) * 3 for n in range(6)]
    assert rig.peer.server.active_ids == ()
    assert len(rig.peer.vendor(Service.INIT)) > 6  # some INITs met BUSY and were retried


@pytest.mark.parametrize("module", ["hw.control", "hw.sim.control_server"])
def test_docstring_examples(module):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module)).failed == 0
