"""hw.control on garbage replies: only the module's own errors (ControlError, ControlTimeout, DeviceGone).

The decoders get random bytes and mutated real replies (protobuf messages, service replies); the channel runs whole
requests against a USB device that answers every transfer from a script (random service replies, short or wrong
sized data, stalls, timeouts, cable errors) on a VirtualClock: every request ends by its deadline, and a firmware
update whose device asks for nonsense is cancelled, never half-sent.
"""

from __future__ import annotations

import errno
import random
import re

import pytest
import usb.core
from hypothesis import example, given
from hypothesis import strategies as st

from hw.clock import VirtualClock
from hw.control import (
    MAX_CHUNK,
    MAX_PAYLOAD,
    MAX_UPDATE_CHUNK,
    WIRE_RETRIES,
    WIRE_RETRY_S,
    BaseMessage,
    ChannelStatus,
    ControlChannel,
    ControlError,
    ControlFailure,
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
    StartFirmwareUpdateReply,
    Status,
    _printable,
    decode,
    parse_module_info,
)
from tests.fuzz import fuzz_settings
from tests.fuzz.guard import within

REPLIES = [GetDeviceIdReply, GetSystemVersionReply, GetDeviceModeReply, GetModuleInfoReply, StartFirmwareUpdateReply]
u32 = st.integers(0, 2**32 - 1)

# --- decoders ----------------------------------------------------------------------------------------------


def decode_checked(message: type[BaseMessage], data: bytes) -> BaseMessage | None:
    try:
        return decode(message, data)
    except ControlError as exc:
        assert exc.result == Result.BAD_DATA and message.__name__ in str(exc)
        return None


@fuzz_settings(300)
@given(st.sampled_from(REPLIES), st.binary(max_size=300))
def test_random_bytes_decode_or_raise_bad_data(message, data):
    decode_checked(message, data)


legacy = st.builds(
    LegacyModule,
    type=u32,
    index=u32,
    version=u32,
    size=u32,
    validity=u32,
    dependencies=st.lists(st.builds(LegacyModuleDependency, type=u32, index=u32, version=u32), max_size=2),
)
current = st.builds(
    FirmwareModule,
    type=u32,
    index=u32,
    version=u32,
    store=u32,
    max_size=u32,
    checked_flags=u32,
    passed_flags=u32,
    hash=st.none() | st.binary(max_size=32),
    dependencies=st.lists(st.builds(FirmwareModuleDependency, type=u32, index=u32, version=u32), max_size=2),
    asset_dependencies=st.lists(
        st.builds(FirmwareModuleAsset, hash=st.binary(max_size=32), name=st.text(max_size=8), size=u32), max_size=1
    ),
    size=u32,
    security=st.none() | st.builds(FirmwareModuleSecurity, mode=u32, certificate_fingerprint=st.binary(max_size=8)),
)
module_info = st.builds(
    GetModuleInfoReply, modules_deprecated=st.lists(legacy, max_size=3), modules=st.lists(current, max_size=3)
)


@fuzz_settings(200)
@example(  # found in a full run (see test_a_number_sent_as_an_empty_record_is_bad_data)
    reply=GetModuleInfoReply(
        modules=[
            FirmwareModule(version=128, store=128, max_size=128, size=128,
                           asset_dependencies=[FirmwareModuleAsset(hash=b"\x00")],
                           security=FirmwareModuleSecurity(mode=128, certificate_fingerprint=b"\x00\x00")),
            FirmwareModule(type=16384, index=640, store=128, max_size=16384, passed_flags=50),
        ]
    ),
    flips=[(195991, 0)],
    cut=1,
)  # fmt: skip
@given(module_info, st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=4), st.integers(0, 2**31))
def test_module_info_replies_mutated(reply, flips, cut):
    """A real GetModuleInfoReply: intact it decodes to its modules; damaged it decodes or raises BAD_DATA."""
    data = bytearray(bytes(reply))
    if not flips:
        modules = parse_module_info(bytes(data))
        expected = reply.modules_deprecated or reply.modules
        assert [(m.index, m.version) for m in modules] == [(m.index, m.version) for m in expected]
        return
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    data = data[: cut % (len(data) + 1)] if cut % 3 == 0 else data
    try:
        modules = parse_module_info(bytes(data))
    except ControlError as exc:
        assert exc.result == Result.BAD_DATA
        return
    for m in modules:
        assert isinstance(m.failed, frozenset) and m.valid == (not m.failed)


@fuzz_settings(150)
@given(module_info, st.binary(min_size=32, max_size=32))
def test_any_module_info_makes_an_inspect_table(reply, library_hash):
    """Whatever the device reports (unknown types and stores, odd hashes, sizes up to 2**32 - 1), kiosk inspect's
    table, text and JSON come out, and the library comparison gives one of its four verdicts."""
    import json

    from firmware.platforms import platform_by_name
    from kiosk import inspect as inspection

    hashes = inspection.LibraryHashes.__new__(inspection.LibraryHashes)  # a library holding one module, no files
    hashes.by_hash, hashes.problems = {(4, 1, library_hash): _Entry("modules/boron/x/system-part1.bin")}, []
    hashes.parts = {(4, 1, 6101): _Entry("modules/boron/x/system-part1.bin")}
    modules = inspection.from_control(parse_module_info(bytes(reply)), hashes)
    json.dumps([m.to_json() for m in modules])
    inspection.describe(platform_by_name("boron"), modules, "control request 90", "/lib")
    for m in modules:
        assert m.size >= 0 and m.library.verdict in ("PASS", "FAIL", "not in the library", "not reported")


class _Entry:
    def __init__(self, path: str):
        self.path = path


status_replies = st.builds(
    ChannelStatus,
    status=st.integers(0, 0xFFFF),
    id=st.none() | st.integers(0, 0xFFFF),
    size=st.none() | u32,
    result=st.none() | st.integers(-(2**31), 2**31 - 1),
)


@fuzz_settings(300)
@given(st.binary(max_size=80))
def test_service_replies_from_random_bytes(data):
    try:
        reply = ChannelStatus.parse(data)
    except ControlError as exc:
        assert exc.result == Result.PROTOCOL_ERROR and ("status" in str(exc) or "short" in str(exc))
        return
    assert 0 <= reply.status <= 0xFFFF


@fuzz_settings(200)
@given(status_replies)
def test_service_replies_round_trip(reply):
    assert ChannelStatus.parse(reply.encode()) == reply
    assert ChannelStatus.parse(reply.encode().ljust(64, b"\0")) == reply  # the 64-byte data stage


@fuzz_settings(100)
@given(st.binary(max_size=100))
def test_raw_replies_keep_only_printable_ascii(data):
    text = _printable(data)
    assert all(0x20 <= ord(c) < 0x7F for c in text) and len(text) <= len(data)


# --- whole requests against a scripted device ----------------------------------------------------------------


class ScriptedUsb:
    """A pyusb device whose every control transfer is answered by the next script item: bytes (an IN reply, cut
    to the length asked), "fill" (exactly the length asked, of random bytes), "stall", "timeout" or "io"."""

    def __init__(self, script: list, seed: int):
        self.script = list(script)
        self.rng = random.Random(seed)
        self.transfers: list[tuple[int, int, int, int, int]] = []  # bm, request, value, index, length or size

    def ctrl_transfer(self, bm, request, value, index, data_or_length, timeout):
        size = data_or_length if isinstance(data_or_length, int) else len(data_or_length)
        self.transfers.append((bm, request, value, index, size))
        assert len(self.transfers) < 5000, "the client does not stop asking"
        item = self.script.pop(0) if self.script else "timeout"
        if item == "stall":
            raise usb.core.USBError("Pipe error", errno=errno.EPIPE)
        if item == "timeout":
            raise usb.core.USBTimeoutError("Operation timed out", errno=errno.ETIMEDOUT)
        if item == "io":
            raise usb.core.USBError("Input/Output Error", errno=errno.EIO)
        if not bm & 0x80:
            return size
        if item == "fill":
            return self.rng.randbytes(size)
        return bytes(item)[:size]


script_item = st.one_of(
    st.sampled_from(["stall", "timeout", "io", "fill"]),
    st.binary(max_size=20),
    status_replies.map(ChannelStatus.encode),
    st.builds(
        ChannelStatus,
        status=st.sampled_from([Status.OK, Status.PENDING, Status.BUSY]),
        id=st.integers(0, 5),
        size=st.none() | st.sampled_from([0, 1, 100, 4096, 4097, 2**32 - 1]),
        result=st.none() | st.sampled_from([0, -120, -1801]),
    ).map(ChannelStatus.encode),
)
TIMEOUT_S = 5.0


@fuzz_settings(300)
@given(
    st.sampled_from([RequestType.DEVICE_ID, RequestType.GET_MODULE_INFO, RequestType.RESET]),
    st.binary(max_size=200),
    st.lists(script_item, max_size=16),
    st.integers(0, 2**16),
)
def test_requests_against_garbage_replies_end_by_their_deadline(type_id, payload, script, seed):
    clock = VirtualClock()
    device = ScriptedUsb(script, seed)
    channel = ControlChannel(device, clock)
    try:
        result, reply = channel.request(type_id, payload, TIMEOUT_S)
    except ControlFailure:
        pass
    else:
        assert isinstance(result, int) and isinstance(reply, bytes)
    assert clock.now() <= TIMEOUT_S + WIRE_RETRIES * WIRE_RETRY_S + 1e-9
    recv = [t for t in device.transfers if t[1] == Service.RECV]
    assert sum(t[4] for t in recv) <= 2**20, "read a reply larger than any a device sends"


def test_a_reply_size_no_device_sends_is_a_protocol_error():
    """Found by fuzzing: a CHECK reply claiming 4 GiB made the client RECV until it had read all of it."""
    clock = VirtualClock()
    init = ChannelStatus(Status.OK, id=1).encode()
    done = ChannelStatus(Status.OK, id=1, size=2**32 - 1, result=0).encode()
    device = ScriptedUsb(["fill", init, done] + ["fill"] * 10, seed=1)
    channel = ControlChannel(device, clock)
    with pytest.raises(ControlError, match="reply of 4294967295 bytes"):
        within(20, lambda: channel.request(RequestType.DEVICE_ID, b"", TIMEOUT_S))
    assert not [t for t in device.transfers if t[1] == Service.RECV]


@pytest.mark.parametrize("chunk_size", [MAX_UPDATE_CHUNK + 1, 2**32 - 1])
def test_a_firmware_update_whose_device_asks_for_chunks_no_request_carries_is_cancelled(chunk_size):
    """Found by fuzzing: a StartFirmwareUpdateReply chunk size above what a request carries made the first data
    request raise ValueError, which skipped the CANCEL: the device was left holding a started update."""
    clock = VirtualClock()
    start = bytes(StartFirmwareUpdateReply(chunk_size=chunk_size))
    ok_empty = [ChannelStatus(Status.OK, id=1).encode(), ChannelStatus(Status.OK, id=1, size=0, result=0).encode()]
    ok_start = [ChannelStatus(Status.OK, id=1).encode(), ChannelStatus(Status.OK, id=1, size=len(start), result=0)]
    script = ["fill", ok_start[0], "fill", ok_start[1].encode(), start] + ok_empty * 4
    device = ScriptedUsb(script, seed=1)
    channel = ControlChannel(device, clock)
    with pytest.raises(ControlError, match=f"asked for {chunk_size}-byte chunks"):
        channel.update_firmware(bytes(70_000))
    inits = [t[3] for t in device.transfers if t[1] == Service.INIT]  # wIndex: the request type
    assert RequestType.FIRMWARE_UPDATE_DATA not in inits
    assert inits[-1] == RequestType.CANCEL_FIRMWARE_UPDATE
    assert MAX_CHUNK <= MAX_PAYLOAD


@pytest.mark.parametrize(
    ("message", "data", "field"),
    [
        # GetModuleInfoReply whose second module's index lost a byte: its checked_flags comes as an empty record
        (
            GetModuleInfoReply,
            "122e0800100018800120800128800135000000003d0000000052090a0100120018002000588001620708800112020000121c"
            "0880800110000518002080012880800135000000003d320000005800",
            "modules[1].checked_flags",
        ),
        (FirmwareModule, "0a00", "type"),
        (GetModuleInfoReply, "0a022a00", "modules_deprecated[0].validity"),
    ],
)
def test_a_number_sent_as_an_empty_record_is_bad_data(message, data, field):
    """Found by fuzzing: pure-protobuf leaves such a field None, and ModuleInfo.from_current raised TypeError on
    ``None ^ int`` out of parse_module_info."""
    with pytest.raises(ControlError, match=re.escape(f"{field} came without a value")) as err:
        decode(message, bytes.fromhex(data))
    assert err.value.result == Result.BAD_DATA
