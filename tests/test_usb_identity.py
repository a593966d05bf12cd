"""hw.usb_identity through the real usb.core.find and the simulator's pyusb backend (hw.sim.usb_backend)."""

from __future__ import annotations

import errno
import struct

import pytest
import usb.control
import usb.core
import usb.util

from firmware.platforms import PLATFORMS, Platform, platform_by_name
from hw.clock import VirtualClock
from hw.sim.usb_backend import (
    SimUsbAltSetting,
    SimUsbBackend,
    SimUsbBus,
    SimUsbDescriptor,
    SimUsbInterface,
    SimUsbStall,
    parse_port_path,
    particle_descriptor,
)
from hw.usb_identity import (
    UDEV_RULE,
    UDEV_RULES_PATH,
    UsbAccessError,
    device_id_from_serial,
    find_device,
    find_particle_devices,
    port_path,
)


class FakePeer:
    """A device reduced to its USB identity: a descriptor it may change, a plug, a transfer log."""

    def __init__(self, descriptor: SimUsbDescriptor):
        self.descriptor = descriptor
        self.attached = True
        self.session = 0
        self.transfers: list[tuple[int, int, int, int]] = []

    def usb_attached(self) -> bool:
        return self.attached

    def usb_descriptor(self) -> SimUsbDescriptor:
        return self.descriptor

    def usb_session(self) -> int:
        return self.session

    def usb_control(self, bm: int, request: int, value: int, index: int, data_or_length: bytes | int) -> bytes | int:
        self.transfers.append((bm, request, value, index))
        if bm == 0x01 and request == 11:  # SET_INTERFACE: a DFU device accepts its alt settings
            return 0
        raise SimUsbStall()


def device_id_for(platform: Platform) -> str:
    return f"e00fce68{platform.id:04x}5d1f0e4a7b93".upper()  # upper case on the wire: must come out lower


USB_MODES = [
    pytest.param(p, mode, id=f"{p.name}-{mode}")
    for p in PLATFORMS
    for mode, pid in (("normal", p.usb_pid_normal), ("dfu", p.usb_pid_dfu))
    if p.usb_vid is not None and pid is not None
]


def plug(bus: SimUsbBus, platform: Platform | str, mode: str = "normal", port: str = "1-1.2", **kw) -> FakePeer:
    platform = platform_by_name(platform) if isinstance(platform, str) else platform
    peer = FakePeer(particle_descriptor(platform, mode, device_id_for(platform), port, **kw))
    bus.attach(peer)
    return peer


@pytest.fixture
def bus() -> SimUsbBus:
    return SimUsbBus(VirtualClock())


def test_every_usb_platform_is_covered():
    names = {p.values[0].name for p in USB_MODES}
    assert {"core", "photon", "electron", "argon", "boron", "bsom", "tracker", "p2", "msom", "tachyon"} <= names
    assert len(USB_MODES) == sum((p.usb_pid_normal is not None) + (p.usb_pid_dfu is not None) for p in PLATFORMS)


@pytest.mark.parametrize(("platform", "mode"), USB_MODES)
def test_identity_of_every_platform_in_each_mode(bus, platform, mode):
    peer = plug(bus, platform, mode, port="1-1.3")
    [found] = find_particle_devices(SimUsbBackend(bus))
    assert found.platform is platform
    assert found.mode == mode and found.in_dfu == (mode == "dfu")
    assert found.device_id == device_id_for(platform).lower()
    assert (found.vid, found.pid) == (platform.usb_vid, peer.descriptor.pid)
    assert found.pid == (platform.usb_pid_dfu if mode == "dfu" else platform.usb_pid_normal)
    assert (found.port_path, found.bus, found.address) == ("1-1.3", 1, 2)
    assert found.manufacturer == "Particle"
    assert found.product == peer.descriptor.product
    assert found.product.endswith(" DFU Mode") == (mode == "dfu")
    assert found.error is None
    assert found.label.endswith("at 1-1.3")


@pytest.mark.parametrize(("platform", "mode"), [m for m in USB_MODES if m.values[1] == "dfu"])
def test_dfu_descriptors_parse_through_pyusb(bus, platform, mode):
    """The alt settings carry the platform's DfuSe strings; the functional descriptor says 4096."""
    plug(bus, platform, mode)
    dev = find_particle_devices(SimUsbBackend(bus))[0].usb_device
    alts = list(dev.get_active_configuration())
    assert [a.bInterfaceNumber for a in alts] == [0] * max(1, len(platform.dfu_alts))
    assert {(a.bInterfaceClass, a.bInterfaceSubClass, a.bInterfaceProtocol) for a in alts} == {(0xFE, 1, 2)}
    if platform.dfu_alts:  # a few pre-release platforms have no known layout: one unnamed alt setting
        assert tuple(usb.util.get_string(dev, a.iInterface) for a in alts) == platform.dfu_alts
    extra = bytes(alts[-1].extra_descriptors)
    length, kind, attributes, detach_ms, transfer_size, version = struct.unpack("<BBBHHH", extra)
    assert (length, kind, attributes, detach_ms, transfer_size, version) == (9, 0x21, 0x0B, 255, 4096, 0x011A)
    # The same bytes by GET_DESCRIPTOR: the functional descriptor ends the configuration.
    raw = bytes(usb.control.get_descriptor(dev, 0xFF, usb.util.DESC_TYPE_CONFIG, 0))
    assert raw.endswith(extra) and struct.unpack_from("<H", raw, 2)[0] == len(raw)
    dev.set_interface_altsetting(0, len(alts) - 1)  # reaches the device as SET_INTERFACE


def test_normal_mode_is_a_cdc_serial_port(bus):
    plug(bus, "boron")
    dev = find_particle_devices(SimUsbBackend(bus))[0].usb_device
    classes = [(i.bInterfaceNumber, i.bInterfaceClass) for i in dev.get_active_configuration()]
    assert classes == [(0, 0x02), (1, 0x0A)]
    data = dev.get_active_configuration()[(1, 0)]
    assert sorted(ep.bEndpointAddress for ep in data) == [0x01, 0x81]


def test_string_descriptors_are_real_bytes(bus):
    plug(bus, "argon")
    dev = find_particle_devices(SimUsbBackend(bus))[0].usb_device
    assert bytes(usb.control.get_descriptor(dev, 255, usb.util.DESC_TYPE_STRING, 0)) == bytes([4, 3, 0x09, 0x04])
    assert dev.langids == (0x0409,)
    serial = bytes(usb.control.get_descriptor(dev, 255, usb.util.DESC_TYPE_STRING, dev.iSerialNumber, 0x0409))
    assert serial[:2] == bytes([2 + 48, 3]) and serial[2:].decode("utf-16-le") == dev.serial_number
    with pytest.raises(usb.core.USBError) as stall:
        usb.control.get_descriptor(dev, 255, usb.util.DESC_TYPE_STRING, 99, 0x0409)
    assert stall.value.errno == errno.EPIPE


# --- device ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serial", "generation", "expected"),
    [
        ("e00fce68ab2c5d1f0e4a7b93", 3, "e00fce68ab2c5d1f0e4a7b93"),
        ("0A10ACED202194944A042F04", 4, "0a10aced202194944a042f04"),
        ("\x00e00fce68ab2c5d1f0e4a7b93\x7f", 3, "e00fce68ab2c5d1f0e4a7b93"),  # non-printables dropped
        ("Photon_53FF6C066667574821362567", 2, "53ff6c066667574821362567"),
        ("53ff6c066667574821362567ffff", 2, "53ff6c066667574821362567"),  # the first 24 digits
        ("PH 53ff6c06 6667574821362567", 2, None),  # split by a space: no run of 24
        ("Spark_Core_6D7034555754", 1, None),
        ("55ff6b065075555321421487", 1, "55ff6b065075555321421487"),
        ("Boron_e00fce68ab2c5d1f0e4a7b93", 3, None),  # Gen3 reports the bare id: anything else is not one
        ("e00fce68ab2c5d1f0e4a7b9", 3, None),
        (None, 3, None),
        ("E00FCE68AB2C5D1F0E4A7B93", None, "e00fce68ab2c5d1f0e4a7b93"),  # platforms without a generation
    ],
)
def test_device_id_from_serial(serial, generation, expected):
    assert device_id_from_serial(serial, generation) == expected


def test_gen2_serial_with_text_around_the_id(bus):
    plug(bus, "photon", serial="Photon-53FF6C066667574821362567-x")
    plug(bus, "boron", port="1-1.4", serial="Boron-E00FCE68AB2C5D1F0E4A7B93")
    photon, boron = find_particle_devices(SimUsbBackend(bus))
    assert photon.device_id == "53ff6c066667574821362567"
    assert photon.serial == "Photon-53FF6C066667574821362567-x"
    assert boron.device_id is None and boron.serial == "Boron-E00FCE68AB2C5D1F0E4A7B93"


# --- ports and enumeration ----------------------------------------------------------------------


def test_port_paths_and_slots(bus):
    for port, name in (("1-1.10", "boron"), ("1-1.2", "argon"), ("3-2", "p2"), ("1-1.4.1", "photon")):
        plug(bus, name, port=port)
    found = find_particle_devices(SimUsbBackend(bus))
    assert [(p.port_path, p.platform.name) for p in found] == [
        ("1-1.2", "argon"),
        ("1-1.4.1", "photon"),
        ("1-1.10", "boron"),
        ("3-2", "p2"),
    ]
    assert found[3].bus == 3 and found[3].usb_device.port_numbers == (2,)
    assert found[1].usb_device.port_numbers == (1, 4, 1) and found[1].usb_device.port_number == 1
    assert find_device(port="1-1.10", backend=SimUsbBackend(bus)).platform.name == "boron"
    p2_id = device_id_for(platform_by_name("p2"))
    assert find_device(device_id=p2_id, backend=SimUsbBackend(bus)).port_path == "3-2"
    assert find_device(device_id=p2_id, port="1-1.2", backend=SimUsbBackend(bus)) is None


def test_a_device_without_a_modelled_port(bus):
    plug(bus, "boron", port="")
    [found] = find_particle_devices(SimUsbBackend(bus))
    assert (found.port_path, found.bus, found.usb_device.port_numbers) == (None, 1, None)


def test_port_path_helpers():
    assert port_path(1, (1, 3)) == "1-1.3"
    assert port_path(2, ()) is None and port_path(None, (1,)) is None
    assert parse_port_path("1-1.3") == (1, (1, 3))
    with pytest.raises(ValueError):
        parse_port_path("usb1/1-1")


def test_no_device_is_an_empty_list(bus):
    assert find_particle_devices(SimUsbBackend(bus)) == []
    assert find_device(backend=SimUsbBackend(bus)) is None


def test_other_vendors_and_unknown_products_are_ignored(bus):
    bus.attach(FakePeer(SimUsbDescriptor(0x0D28, 0x0204, 0x0100, "ARM", "DAPLink", "0240000032", "1-1.5")))
    bus.attach(FakePeer(SimUsbDescriptor(0x2B04, 0xC0FE, 0x0100, "Particle", "?", "e00fce68ab2c5d1f0e4a7b93", "1-1.6")))
    plug(bus, "boron", port="1-1.7")
    assert [p.port_path for p in find_particle_devices(SimUsbBackend(bus))] == ["1-1.7"]
    assert len(list(usb.core.find(find_all=True, backend=SimUsbBackend(bus)))) == 3


def test_mode_change_re_enumerates_with_a_new_address(bus):
    peer = plug(bus, "boron")
    backend = SimUsbBackend(bus)
    [normal] = find_particle_devices(backend)
    peer.descriptor = particle_descriptor(platform_by_name("boron"), "dfu", device_id_for(normal.platform), "1-1.2")
    [dfu] = find_particle_devices(backend)
    assert (normal.mode, dfu.mode) == ("normal", "dfu")
    assert dfu.address != normal.address and dfu.port_path == normal.port_path
    assert dfu.device_id == normal.device_id
    with pytest.raises(usb.core.USBError) as gone:  # the old handle points at a device that left
        normal.usb_device.ctrl_transfer(0xC0, 1, 0, 20, 64)
    assert gone.value.errno == errno.ENODEV and "No such device" in str(gone.value)


def test_unplug_power_off_and_usb_restart(bus):
    peer = plug(bus, "argon")
    backend = SimUsbBackend(bus)
    first = find_particle_devices(backend)[0]
    peer.attached = False  # powered off: gone from the bus
    assert find_particle_devices(backend) == []
    peer.attached = True
    second = find_particle_devices(backend)[0]
    assert second.address != first.address
    peer.session += 1  # reset and back with the same descriptor before anyone looked
    third = find_particle_devices(backend)[0]
    assert third.address != second.address
    with pytest.raises(usb.core.USBError):
        second.usb_device.set_interface_altsetting(0, 0)
    bus.detach(peer)
    assert find_particle_devices(backend) == []


def test_addresses_stay_within_usb_limits(bus):
    peer = plug(bus, "boron")
    backend = SimUsbBackend(bus)
    seen = set()
    for _ in range(300):
        peer.session += 1
        seen.add(find_particle_devices(backend)[0].address)
    assert min(seen) == 2 and max(seen) == 127


def test_descriptor_from_scratch_keeps_class_specific_bytes(bus):
    extra = bytes([5, 0x24, 0, 0x10, 1])
    alt = SimUsbAltSetting(0x02, 0x02, 0x01, name="Particle Serial", extra=extra)
    bus.attach(FakePeer(SimUsbDescriptor(0x2B04, 0xC00D, 0x0250, None, None, None, "2-1", (SimUsbInterface((alt,)),))))
    [found] = find_particle_devices(SimUsbBackend(bus))
    assert found.device_id is None and found.product is None and found.serial is None
    intf = found.usb_device.get_active_configuration()[(0, 0)]
    assert bytes(intf.extra_descriptors) == extra
    assert usb.util.get_string(found.usb_device, intf.iInterface) == "Particle Serial"


# --- permissions ----------------------------------------------------------------------------------


def test_missing_udev_rule_says_what_to_do(bus):
    plug(bus, "boron")
    bus.access_denied = True
    with pytest.raises(UsbAccessError) as denied:
        find_particle_devices(SimUsbBackend(bus))
    message = str(denied.value)
    assert UDEV_RULE in message and UDEV_RULES_PATH in message and "udevadm" in message
    assert "2b04:c00d" in message
    assert isinstance(denied.value, PermissionError)


def test_access_error_straight_from_pyusb(bus, monkeypatch):
    plug(bus, "boron")

    def refuse(*args, **kwargs):
        raise usb.core.USBError("Access denied (insufficient permissions)", -3, errno.EACCES)

    monkeypatch.setattr(usb.util, "get_langids", refuse)
    with pytest.raises(UsbAccessError, match="udev rule"):
        find_particle_devices(SimUsbBackend(bus))


def test_missing_libusb_says_what_to_do(monkeypatch):
    def no_backend(*args, **kwargs):
        raise usb.core.NoBackendError("No backend available")

    monkeypatch.setattr(usb.core, "find", no_backend)
    with pytest.raises(UsbAccessError, match="libusb"):
        find_particle_devices()


def test_a_device_leaving_while_read_is_skipped_and_other_errors_are_reported(bus, monkeypatch):
    plug(bus, "boron")
    plug(bus, "argon", port="1-1.3")
    failures = iter(
        [
            usb.core.USBError("No such device (it may have been disconnected)", -4, errno.ENODEV),
            usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT),
        ]
    )

    def flaky(dev):
        raise next(failures)

    monkeypatch.setattr(usb.util, "get_langids", flaky)
    [argon] = find_particle_devices(SimUsbBackend(bus))
    assert argon.platform.name == "argon" and argon.device_id is None
    assert "timed out" in argon.error and argon.port_path == "1-1.3"


@pytest.mark.parametrize("module", ["hw.usb_identity", "hw.sim.usb_backend"])
def test_docstring_examples(module):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module)).failed == 0


def test_a_look_at_one_port_sends_nothing_to_the_devices_on_the_others(bus):
    """The ladder looks at its own slot's port many times a second; a device another slot is flashing must not
    be opened and asked for its strings in between its own transfers."""

    class Recording(SimUsbBackend):
        def __init__(self, bus):
            super().__init__(bus)
            self.asked: list[str] = []

        def open_device(self, dev):
            self.asked.append(dev.descriptor.port_path)
            return super().open_device(dev)

    plug(bus, "boron", port="1-1.2")
    plug(bus, "p2", "dfu", port="1-1.3")
    backend = Recording(bus)
    [found] = find_particle_devices(backend, port="1-1.2")
    assert found.port_path == "1-1.2" and found.platform.name == "boron"
    assert set(backend.asked) == {"1-1.2"}
    assert find_particle_devices(backend, port="1-1.9") == []
    assert set(backend.asked) == {"1-1.2"}
    assert [p.port_path for p in find_particle_devices(backend)] == ["1-1.2", "1-1.3"]
    assert set(backend.asked) == {"1-1.2", "1-1.3"}  # without a port every device is asked, as before


def test_a_device_is_opened_once_per_enumeration(bus):
    """The pollers look at every idle slot each second: a device already identified at its bus and address is not
    opened and asked for its strings again; once it enumerates anew (a mode change, a replug) it is."""

    class Recording(SimUsbBackend):
        opened = 0

        def open_device(self, dev):
            Recording.opened += 1
            return super().open_device(dev)

    peer = plug(bus, "boron", port="1-1.2")
    backend = Recording(bus)
    first = find_particle_devices(backend, port="1-1.2")
    opened = Recording.opened
    again = find_particle_devices(backend, port="1-1.2")
    assert again == first and Recording.opened == opened
    assert again[0].usb_device is not None and again[0].usb_device is not first[0].usb_device  # pyusb's new object
    peer.descriptor = particle_descriptor(platform_by_name("boron"), "dfu", device_id_for(platform_by_name("boron")),
                                          "1-1.2")  # fmt: skip
    [dfu] = find_particle_devices(backend, port="1-1.2")
    assert dfu.mode == "dfu" and Recording.opened > opened
    assert find_particle_devices(Recording(bus), port="1-1.2")[0].mode == "dfu"  # another backend asks afresh
