"""hw.dfu's status handling on garbage: short, long and out-of-range DFU_GETSTATUS replies.

The parser takes exactly six bytes and names what it got otherwise; names of states and statuses cover any number.
Whole writes run against the simulated bootloader with its GETSTATUS replies swapped for scripted garbage (errors
in idle states, unknown states, busy forever, poll timeouts of hours): each write ends with success or a DfuError
within bounded device time; the client never sends a DfuSe command or data block unless the last status it saw
was OK in an idle state (or it has just cleared or aborted); and nothing outside the sectors the write planned
changes.
"""

from __future__ import annotations

import dataclasses

import pytest
import usb.core
from hypothesis import given
from hypothesis import strategies as st

from firmware.platforms import platform_by_name
from hw.clock import VirtualClock
from hw.dfu import (
    BUSY_LIMIT_S,
    STATUS_LENGTH,
    DfuDevice,
    DfuError,
    DfuGetStatus,
    DfuRequest,
    DfuState,
    DfuStatus,
    plan_write,
    state_name,
    status_name,
)
from hw.sim.dfu_device import SimDfuDevice
from hw.sim.flash import SimFlash
from hw.sim.usb_backend import SimUsbBackend, SimUsbBus, dfu_interface, particle_descriptor
from tests.fuzz import fuzz_settings
from tests.fuzz.guard import within

DFU_OUT, DFU_IN = 0x21, 0xA1
IDLE_STATES = (DfuState.IDLE, DfuState.DNLOAD_IDLE)

# --- parsing ---------------------------------------------------------------------------------------------


@fuzz_settings(200)
@given(st.binary(max_size=12))
def test_status_replies_of_any_length(data):
    try:
        reply = DfuGetStatus.parse(data)
    except ValueError as exc:
        assert len(data) != STATUS_LENGTH and f"not {len(data)}" in str(exc)
        return
    assert reply.encode() == data
    assert state_name(reply.state) and status_name(reply.status)


@fuzz_settings(200)
@given(st.integers(-(2**40), 2**40) | st.none(), st.integers(-(2**40), 2**40) | st.none())
def test_names_and_errors_for_any_number(status, state):
    assert state_name(state) and status_name(status)
    message = str(DfuError(status, state, "write"))
    assert message.startswith("write")


# --- a bootloader whose status replies are scripted --------------------------------------------------------


class GarbledPeer:
    """The simulated bootloader, with the reply of the n-th GETSTATUS replaced by ``script[n]`` where that is bytes
    (None: the real reply). Tracks what the client could know when it sent each DNLOAD."""

    def __init__(self, clock: VirtualClock, script: list[bytes | None]):
        self.platform = platform_by_name("boron")
        self.clock = clock
        self.flash = SimFlash(self.platform)
        self.device = SimDfuDevice(self.platform, clock, self.flash, on_manifest=lambda: None)
        self.script = list(script)
        self.ready = False  # the last status the client saw was OK in an idle state, or it cleared/aborted since
        self.violations: list[str] = []

    def usb_attached(self) -> bool:
        return True

    def usb_descriptor(self):
        descriptor = particle_descriptor(self.platform, "dfu", "e00fce68ab2c5d1f0e4a7b93", "1-1.4")
        return dataclasses.replace(descriptor, interfaces=(dfu_interface(self.device.alt_strings(), 4096),))

    def usb_control(self, bm: int, request: int, value: int, index: int, data_or_length: bytes | int):
        if (bm, request) == (DFU_OUT, DfuRequest.DNLOAD) and data_or_length and not self.ready:
            self.violations.append(f"DNLOAD wValue {value} after a status that was not OK in an idle state")
        reply = self.device.usb_control(bm, request, value, index, data_or_length)
        if (bm, request) == (DFU_IN, DfuRequest.GETSTATUS):
            fake = self.script.pop(0) if self.script else None
            if fake is not None:
                reply = fake
            seen = DfuGetStatus.parse(bytes(reply)) if len(bytes(reply)) == STATUS_LENGTH else None
            self.ready = seen is not None and seen.status == DfuStatus.OK and seen.state in IDLE_STATES
        elif (bm, request) in ((DFU_OUT, DfuRequest.CLRSTATUS), (DFU_OUT, DfuRequest.ABORT)):
            self.ready = True
        elif (bm, request) == (DFU_OUT, DfuRequest.DNLOAD):
            self.ready = False
        return reply


garbage_status = st.one_of(
    st.none(),  # the real reply
    st.binary(max_size=9),
    st.builds(
        lambda status, poll, state, i_string: DfuGetStatus(status, poll, state, i_string).encode(),
        st.integers(0, 255),
        st.sampled_from([0, 1, 500, 0xFFFFFF]),
        st.integers(0, 255),
        st.just(0),
    ),
    st.builds(
        lambda status, state: DfuGetStatus(status, 0, state, 0).encode(),
        st.sampled_from([DfuStatus.ERR_WRITE, DfuStatus.ERR_VENDOR, DfuStatus.ERR_ADDRESS, DfuStatus.ERR_UNKNOWN]),
        st.sampled_from([*IDLE_STATES, DfuState.ERROR, DfuState.DNBUSY]),
    ),
)
ADDRESS = 0x30000  # boron system part 1, alt 0


def make(script: list[bytes | None]) -> tuple[VirtualClock, GarbledPeer, DfuDevice]:
    clock = VirtualClock()
    bus = SimUsbBus(clock)
    peer = GarbledPeer(clock, script)
    bus.attach(peer)
    found = usb.core.find(backend=SimUsbBackend(bus), idVendor=0x2B04)
    dfu = DfuDevice(found, clock)
    dfu.open()
    return clock, peer, dfu


@fuzz_settings(150)
@given(st.lists(garbage_status, max_size=24), st.integers(1, 9000))
def test_writes_against_garbled_status_replies(script, size):
    clock, peer, dfu = make(script)
    data = bytes((i * 7 + 3) & 0xFF for i in range(size))
    sectors = plan_write(dfu.memory_map(0), ADDRESS, size)
    around = [(sectors[0].start - 4096, 4096), (sectors[-1].end, 4096)]
    before = [peer.flash.read(0, start, length) for start, length in around]
    start = clock.now()
    try:
        within(60, lambda: dfu.write(ADDRESS, data))
    except DfuError as exc:
        assert str(exc)
    else:
        assert peer.flash.read(0, ADDRESS, size) == data  # it verified: the data is there
    assert peer.violations == []
    assert [peer.flash.read(0, s, n) for s, n in around] == before, "a write changed flash it did not plan"
    assert clock.now() - start <= 6 * BUSY_LIMIT_S, f"{clock.now() - start:.0f} s of device time"


def test_an_error_status_in_an_idle_state_is_cleared_before_anything_is_sent():
    """Found by fuzzing: a status of errWRITE with the state dfuIDLE was taken as ready, and the client sent its
    ERASE to a device that had just reported an error."""
    _clock, peer, dfu = make([DfuGetStatus(DfuStatus.ERR_WRITE, 0, DfuState.IDLE, 0).encode()])
    dfu.write(ADDRESS, b"after an error")
    assert peer.violations == []
    assert peer.flash.read(0, ADDRESS, 14) == b"after an error"


@pytest.mark.parametrize("poll_ms", [0xFFFFFF, 600_000])
def test_a_poll_timeout_of_hours_waits_no_longer_than_the_busy_limit(poll_ms):
    """Found by fuzzing: bwPollTimeout (up to 4.6 hours in 24 bits) was slept in full before the busy limit was
    looked at; a garbled status held the kiosk for hours."""
    busy = DfuGetStatus(DfuStatus.OK, poll_ms, DfuState.DNBUSY, 0).encode()
    clock, _peer, dfu = make([busy] * 1000)
    start = clock.now()
    with pytest.raises(DfuError, match="stayed busy"):
        dfu.write(ADDRESS, b"x" * 100)
    assert clock.now() - start <= BUSY_LIMIT_S + 1
