"""Requests 40/50/60 on the simulated device: the reset comes 1 s after the host has read the result.

Device OS sets a completion handler on these requests (system/src/system_control_internal.cpp:
``HAL_Delay_Milliseconds(1000)`` then the reset); the request channel runs it when the request ends: after the
CHECK that carried the result has been sent (``HAL_USB_VENDOR_REQUEST_STATE_TX_COMPLETED``), after the host's
RESET(id) (CANCELLED), or after a USB reset (system/src/usb_control_request_channel.cpp). So a host that polls
late still gets the result, and the device leaves the bus one second after that read, not after the request
arrived. The raw 0x50 reset is done at once, in the USB interrupt.
"""

from __future__ import annotations

import pytest

from hw.control import RAW_REQUEST, ChannelStatus, ControlChannel, ControlError, RequestType, Result, Service, Status
from hw.device_timing import CONTROL_RESET_DELAY_S
from hw.sim.device import Mode
from kiosk.bench import simulated_bench
from kiosk.modes import wait_for_device

LATE_S = 3.0  # longer than the second the old simulator waited before resetting


def left_bus_at(device, after: float) -> float | None:
    """When the device's USB went away (its log says so) after ``after``."""
    return next((t for t, what in device.log if t > after and what == "usb: gone"), None)


def usb_of(bench, slot):
    found = wait_for_device(slot, 5.0, "normal")
    assert found is not None
    return found.usb_device


def init(usb, type_id: int) -> int:
    reply = ChannelStatus.parse(bytes(usb.ctrl_transfer(0xC0, Service.INIT, 0, type_id, 64)))
    assert reply.status == Status.OK and reply.id is not None
    return reply.id


@pytest.mark.parametrize(
    ("type_id", "after"), [(RequestType.RESET, Mode.NORMAL), (RequestType.DFU_MODE, Mode.DFU),
                           (RequestType.SAFE_MODE, Mode.SAFE)]
)  # fmt: skip
def test_a_host_that_reads_the_result_late_still_gets_it(type_id, after):
    with simulated_bench("healthy@boron") as bench, bench.clock.actor():
        slot = bench.slot(1)
        usb = usb_of(bench, slot)
        request_id = init(usb, type_id)  # no payload: the handler has it at once
        sent = bench.clock.now()
        bench.clock.sleep(LATE_S)  # the host is slow to ask
        assert slot.device.usb_mode == "normal" and left_bus_at(slot.device, sent) is None
        done = ChannelStatus.parse(bytes(usb.ctrl_transfer(0xC0, Service.CHECK, 0, request_id, 64)))
        read = bench.clock.now()
        assert done == ChannelStatus(Status.OK, result=Result.OK)
        bench.clock.sleep(CONTROL_RESET_DELAY_S - 0.05)
        assert slot.device.usb_mode == "normal"  # still there just before the second is up
        bench.clock.sleep(0.1)
        assert left_bus_at(slot.device, sent) == pytest.approx(read + CONTROL_RESET_DELAY_S)
        bench.clock.sleep(5.0)
        assert slot.device.mode == after


@pytest.mark.parametrize("platform", ["boron", "photon", "p2"])
def test_the_kiosk_reset_returns_and_the_device_leaves_a_second_later(platform):
    with simulated_bench(f"healthy@{platform}") as bench, bench.clock.actor():
        slot = bench.slot(1)
        channel = ControlChannel(usb_of(bench, slot), bench.clock, slot.device.platform.quirks)
        asked = bench.clock.now()
        channel.enter_dfu()
        read = bench.clock.now()  # the call returns once the CHECK carrying the result was read
        assert read > asked
        bench.clock.sleep(CONTROL_RESET_DELAY_S + 0.5)
        assert left_bus_at(slot.device, asked) == pytest.approx(read + CONTROL_RESET_DELAY_S)
        assert wait_for_device(slot, 5.0, "dfu") is not None


def test_a_reset_request_the_host_cancels_resets_all_the_same():
    """The completion handler ignores its result: RESET(id) after the device answered still resets, 1 s later."""
    with simulated_bench("healthy@boron") as bench, bench.clock.actor():
        slot = bench.slot(1)
        usb = usb_of(bench, slot)
        request_id = init(usb, RequestType.RESET)
        bench.clock.sleep(0.5)
        sent = bench.clock.now()
        assert ChannelStatus.parse(bytes(usb.ctrl_transfer(0xC0, Service.RESET, 0, request_id, 64))).status == 0
        bench.clock.sleep(CONTROL_RESET_DELAY_S + 0.1)
        assert left_bus_at(slot.device, sent) == pytest.approx(sent + CONTROL_RESET_DELAY_S)


def test_a_host_that_never_reads_the_result_leaves_the_device_running():
    with simulated_bench("healthy@boron") as bench, bench.clock.actor():
        slot = bench.slot(1)
        init(usb_of(bench, slot), RequestType.DFU_MODE)
        bench.clock.sleep(10.0)
        assert slot.device.mode == Mode.NORMAL and left_bus_at(slot.device, 0.0) is None


def test_a_protected_device_refuses_the_reset_and_stays():
    """security_mode_check_control_request: request 40 is refused with -1801 and no completion is set."""
    with simulated_bench("healthy@boron") as bench, bench.clock.actor():
        slot = bench.slot(1)
        channel = ControlChannel(usb_of(bench, slot), bench.clock, slot.device.platform.quirks)
        slot.device.faults.protected = True  # the protected scenario's app crashes; this one stays up
        started = bench.clock.now()
        with pytest.raises(ControlError) as exc:
            channel.reset()
        assert exc.value.protected
        bench.clock.sleep(3.0)
        assert left_bus_at(slot.device, started) is None


def test_the_raw_reset_is_at_once():
    """processVendorRequest: CTRL_REQUEST_RESET calls HAL_Core_System_Reset_Ex in the interrupt, no reply first;
    it passes no protection check either."""
    with simulated_bench("healthy@boron") as bench, bench.clock.actor():
        slot = bench.slot(1)
        usb = usb_of(bench, slot)
        slot.device.faults.protected = True
        at = bench.clock.now()
        usb.ctrl_transfer(0x40, RAW_REQUEST, 0, RequestType.RESET, b"")
        bench.clock.sleep(0.01)
        assert left_bus_at(slot.device, at - 1e-9) == pytest.approx(at)


def test_the_raw_requests_answer_a_protected_device_too():
    with simulated_bench("healthy@boron") as bench, bench.clock.actor():
        slot = bench.slot(1)
        channel = ControlChannel(usb_of(bench, slot), bench.clock, slot.device.platform.quirks)
        slot.device.faults.protected = True
        assert channel.raw_system_version() == slot.device.system_version_string
        assert channel.raw_device_id() == slot.device.device_id
        with pytest.raises(ControlError) as exc:  # the framed request is refused
            channel.system_version(fallback=False)
        assert exc.value.result == Result.DEVICE_PROTECTED
        assert channel.system_version() == slot.device.system_version_string  # the client falls back to the raw one
        assert channel.device_id() == slot.device.device_id  # DEVICE_ID passes security_mode_check_control_request
        with pytest.raises(ControlError) as exc:
            channel.device_mode()
        assert exc.value.protected
