"""The simulator's side of USB: a pyusb backend serving simulated devices to the real drivers.

A :class:`SimUsbBus` holds attached *peers* (anything implementing :class:`SimUsbPeer`, normally a
simulated Particle device). :class:`SimUsbBackend` is a ``usb.backend.IBackend``, so
``usb.core.find(backend=SimUsbBackend(bus))`` finds the peers and every ``ctrl_transfer`` reaches
them, exactly as libusb would reach a real device:

- descriptors are real bytes (device, configuration with interfaces, alt settings, class-specific
  descriptors such as the DFU functional descriptor, strings with language id 0x0409); pyusb's
  descriptor objects are parsed from those bytes, and ``GET_DESCRIPTOR`` serves the same bytes;
- a peer that powers off, loses USB or changes its descriptor (a mode change) re-enumerates with a
  new address; a transfer to a device that has gone raises what libusb raises (``USBError`` with
  errno ENODEV);
- a peer's :class:`SimUsbStall`, :class:`SimUsbTimeout`, :class:`SimUsbIoError` and :class:`SimUsbGone`
  become libusb's pipe error, timeout (after the transfer's timeout has passed on the bus's clock),
  I/O error and "No such device".

Times are seconds on the bus's clock (``hw.clock``); pyusb's transfer timeouts are milliseconds.

    >>> import usb.core
    >>> from firmware.platforms import platform_by_name
    >>> class Plug:
    ...     def __init__(self, descriptor): self.descriptor = descriptor
    ...     def usb_attached(self): return True
    ...     def usb_descriptor(self): return self.descriptor
    ...     def usb_control(self, *setup): raise SimUsbStall()
    >>> bus = SimUsbBus()
    >>> bus.attach(Plug(particle_descriptor(platform_by_name("boron"), "dfu", "e00fce68" * 3, "1-1.3")))
    >>> dev = usb.core.find(backend=SimUsbBackend(bus), idVendor=0x2B04)
    >>> hex(dev.idProduct), dev.serial_number, dev.product, dev.port_numbers
    ('0xd00d', 'e00fce68e00fce68e00fce68', 'Boron DFU Mode', (1, 3))
"""

from __future__ import annotations

import array
import errno
import itertools
import re
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import SimpleNamespace
from typing import Protocol

import usb.backend
import usb.core

from firmware.platforms import Platform
from hw.clock import Clock, RealClock

# --- what a peer raises ------------------------------------------------------------------------


class SimUsbStall(Exception):
    """The device stalled the transfer (the host sees libusb's "Pipe error", errno EPIPE)."""


class SimUsbTimeout(Exception):
    """The device never completed the transfer (the host waits its timeout, then errno ETIMEDOUT)."""


class SimUsbIoError(Exception):
    """The transfer was garbled on the cable (the host sees libusb's I/O error, errno EIO)."""


class SimUsbGone(Exception):
    """The device dropped off the bus during the transfer (errno ENODEV); it must re-enumerate."""


# libusb's own error codes and strings, so a simulated failure reads like a real one.
_LIBUSB_ERRORS: dict[type[Exception], tuple[int, str, int]] = {
    SimUsbStall: (-9, "Pipe error", errno.EPIPE),
    SimUsbIoError: (-1, "Input/Output Error", errno.EIO),
    SimUsbGone: (-4, "No such device (it may have been disconnected)", errno.ENODEV),
}
_TIMEOUT = (-7, "Operation timed out", errno.ETIMEDOUT)
_ACCESS = (-3, "Access denied (insufficient permissions)", errno.EACCES)
_NOT_FOUND = (-5, "Entity not found", errno.ENOENT)

#: libusb treats a timeout of 0 as "no limit"; a simulated wait must be finite, so 0 means this.
UNLIMITED_TIMEOUT_S = 60.0


def _usb_error(code: tuple[int, str, int]) -> usb.core.USBError:
    backend_code, text, err = code
    cls = usb.core.USBTimeoutError if err == errno.ETIMEDOUT else usb.core.USBError
    return cls(text, backend_code, err)


# --- descriptors ---------------------------------------------------------------------------------

DT_DEVICE, DT_CONFIG, DT_STRING, DT_INTERFACE, DT_ENDPOINT, DT_IAD = 1, 2, 3, 4, 5, 0x0B
DT_DFU_FUNCTIONAL = 0x21
LANGID_EN_US = 0x0409
SPEED_FULL = 2  # libusb_speed: 1 low, 2 full, 3 high, 4 super


@dataclass(frozen=True)
class SimUsbEndpoint:
    """One endpoint: ``address`` (bit 7 = IN), ``attributes`` (2 bulk, 3 interrupt), sizes in bytes."""

    address: int
    attributes: int
    max_packet_size: int = 64
    interval: int = 0


@dataclass(frozen=True)
class SimUsbAltSetting:
    """One alternate setting of an interface. ``name`` becomes its iInterface string; ``extra`` is
    raw class-specific descriptors sent right after this interface descriptor (CDC functional
    descriptors, the DFU functional descriptor)."""

    interface_class: int
    interface_subclass: int = 0
    interface_protocol: int = 0
    name: str | None = None
    endpoints: tuple[SimUsbEndpoint, ...] = ()
    extra: bytes = b""


@dataclass(frozen=True)
class SimUsbInterface:
    """One interface (numbered by its place in the configuration) with its alt settings.
    ``prefix`` is raw descriptors sent before it, e.g. an interface association descriptor."""

    alts: tuple[SimUsbAltSetting, ...]
    prefix: bytes = b""


@dataclass(frozen=True)
class SimUsbDescriptor:
    """What a simulated device tells the host about itself.

    ``port_path`` is where it is plugged in, Linux style: ``"1-1.3"`` is bus 1, root port 1, hub
    port 3. Strings that are None are absent (index 0). ``max_power_ma`` is in milliamperes.
    """

    vid: int
    pid: int
    bcd_device: int
    manufacturer: str | None
    product: str | None
    serial: str | None
    port_path: str
    interfaces: tuple[SimUsbInterface, ...] = ()
    bcd_usb: int = 0x0200
    device_class: int = 0
    device_subclass: int = 0
    device_protocol: int = 0
    max_packet_size0: int = 64
    config_attributes: int = 0xC0
    max_power_ma: int = 100
    speed: int = SPEED_FULL

    @property
    def bus(self) -> int:
        return parse_port_path(self.port_path)[0] if self.port_path else 1

    @property
    def port_numbers(self) -> tuple[int, ...]:
        """The chain of ports; empty when ``port_path`` is "" (a device whose port is not modelled)."""
        return parse_port_path(self.port_path)[1] if self.port_path else ()


_PORT_PATH = re.compile(r"^(\d+)-(\d+(?:\.\d+)*)$")


def parse_port_path(port_path: str) -> tuple[int, tuple[int, ...]]:
    """Split a Linux port path into bus and port numbers: ``"1-1.3"`` -> ``(1, (1, 3))``."""
    m = _PORT_PATH.match(port_path)
    if not m:
        raise ValueError(f"not a USB port path like '1-1.3': {port_path!r}")
    return int(m.group(1)), tuple(int(p) for p in m.group(2).split("."))


def cdc_interfaces() -> tuple[SimUsbInterface, ...]:
    """A CDC ACM serial port (communication + data interface, grouped by an IAD), as Device OS has."""
    iad = struct.pack("<8B", 8, DT_IAD, 0, 2, 0x02, 0x02, 0x01, 0)
    functional = bytes.fromhex(
        "0524001001"  # header, CDC 1.10
        "0524010001"  # call management: data interface 1
        "04240202"  # abstract control management: line coding and serial state
        "0524060001"  # union: control 0, data 1
    )
    comm = SimUsbAltSetting(0x02, 0x02, 0x01, extra=functional, endpoints=(SimUsbEndpoint(0x82, 3, 16, 0x10),))
    data = SimUsbAltSetting(0x0A, endpoints=(SimUsbEndpoint(0x01, 2, 64), SimUsbEndpoint(0x81, 2, 64)))
    return (SimUsbInterface((comm,), prefix=iad), SimUsbInterface((data,)))


def dfu_functional_descriptor(
    transfer_size: int = 4096, attributes: int = 0x0B, detach_timeout_ms: int = 255, dfu_version: int = 0x011A
) -> bytes:
    """The DFU functional descriptor (type 0x21), 9 bytes; Particle's values by default
    (can download, upload, will detach; 255 ms; 4096-byte transfers; DfuSe 1.1a)."""
    return struct.pack("<BBBHHH", 9, DT_DFU_FUNCTIONAL, attributes, detach_timeout_ms, transfer_size, dfu_version)


def dfu_interface(alt_names: Sequence[str], transfer_size: int = 4096, attributes: int = 0x0B) -> SimUsbInterface:
    """The DFU-mode interface: one alt setting per DfuSe memory string (class 0xFE/0x01/0x02), with
    the functional descriptor after the last one, where the Particle bootloaders put it. Without
    strings (a platform whose layout is unknown) it has one unnamed alt setting."""
    names: Sequence[str | None] = alt_names or [None]
    functional = dfu_functional_descriptor(transfer_size, attributes)
    return SimUsbInterface(
        tuple(
            SimUsbAltSetting(0xFE, 0x01, 0x02, name=name, extra=functional if i == len(names) - 1 else b"")
            for i, name in enumerate(names)
        )
    )


# bcdDevice of the DFU bootloaders by MCU (usb-serial-protocols.md 1.1). Other values: UNVERIFIED.
_BCD_DEVICE_DFU = {"nrf52840": 0x0251, "rtl872x": 0x0252}
_BCD_DEVICE_DEFAULT = 0x0200


def particle_descriptor(
    platform: Platform,
    mode: str,
    device_id: str,
    port_path: str,
    *,
    serial: str | None = None,
    product: str | None = None,
) -> SimUsbDescriptor:
    """The USB identity a Particle device of ``platform`` shows in ``mode`` ("normal" or "dfu").

    The serial string is the device id (override ``serial`` for old Gen2 firmware); the DFU product
    string is "<Product> DFU Mode" and the interfaces are the platform's DfuSe alt settings.
    """
    pid = {"normal": platform.usb_pid_normal, "dfu": platform.usb_pid_dfu}[mode]
    if platform.usb_vid is None or pid is None:
        raise ValueError(f"{platform.name} has no USB {mode} mode")
    name = product or platform.display_name.split(" / ")[0]
    if mode == "dfu":
        return SimUsbDescriptor(
            platform.usb_vid,
            pid,
            _BCD_DEVICE_DFU.get(platform.mcu.name, _BCD_DEVICE_DEFAULT),
            "Particle",
            product or f"{name} DFU Mode",
            device_id if serial is None else serial,
            port_path,
            (dfu_interface(platform.dfu_alts),),
        )
    return SimUsbDescriptor(
        platform.usb_vid,
        pid,
        _BCD_DEVICE_DEFAULT,
        "Particle",
        name,
        device_id if serial is None else serial,
        port_path,
        cdc_interfaces(),
        device_class=0xEF,  # miscellaneous / IAD: a composite device
        device_subclass=0x02,
        device_protocol=0x01,
    )


# --- the peer ------------------------------------------------------------------------------------


class SimUsbPeer(Protocol):
    """A simulated device as the bus sees it.

    ``usb_control`` gets every control transfer the backend does not answer itself: class and vendor
    requests, and the standard SET_INTERFACE (0x01, 11; accept it by returning 0, a DFU device
    tracks its alt setting from it) and CLEAR_FEATURE. For IN transfers ``data_or_length`` is
    wLength and the peer returns bytes (at most wLength are delivered); for OUT it is the data stage
    and the peer returns how many bytes it took. It raises :class:`SimUsbStall`,
    :class:`SimUsbTimeout`, :class:`SimUsbIoError` or :class:`SimUsbGone` to fail a transfer.

    Optional: ``usb_string(index) -> str | None`` answers string descriptors the descriptor does not name
    (a DFU bootloader's protection state at 0xFA, its error string). ``usb_session() -> int``, a number
    that changes whenever the device's USB stack
    restarts, so a device that reset and came back with the same descriptor between two looks
    still re-enumerates (new address; old handles get ENODEV).
    """

    def usb_attached(self) -> bool: ...
    def usb_descriptor(self) -> SimUsbDescriptor: ...
    def usb_control(
        self, bm_request_type: int, b_request: int, w_value: int, w_index: int, data_or_length: bytes | int
    ) -> bytes | int: ...


# --- descriptor bytes and the objects pyusb reads --------------------------------------------------


@dataclass(frozen=True)
class _Image:
    """A descriptor rendered to bytes once per enumeration: what the device answers GET_DESCRIPTOR with."""

    device: bytes
    config: bytes
    strings: dict[int, bytes]

    @cached_property
    def parsed_config(self) -> SimpleNamespace:
        return _parse_config(self.config)


def _string_descriptor(text: str) -> bytes:
    body = text.encode("utf-16-le")[:252]
    return bytes([2 + len(body), DT_STRING]) + body


# Standard descriptor layouts (USB 2.0 chapter 9): struct format after bLength/bDescriptorType,
# and the field names pyusb reads.
_LAYOUTS: dict[int, tuple[str, tuple[str, ...]]] = {
    DT_DEVICE: (
        "HBBBBHHHBBBB",
        (
            "bcdUSB",
            "bDeviceClass",
            "bDeviceSubClass",
            "bDeviceProtocol",
            "bMaxPacketSize0",
            "idVendor",
            "idProduct",
            "bcdDevice",
            "iManufacturer",
            "iProduct",
            "iSerialNumber",
            "bNumConfigurations",
        ),
    ),
    DT_CONFIG: (
        "HBBBBB",
        ("wTotalLength", "bNumInterfaces", "bConfigurationValue", "iConfiguration", "bmAttributes", "bMaxPower"),
    ),
    DT_INTERFACE: (
        "7B",
        (
            "bInterfaceNumber",
            "bAlternateSetting",
            "bNumEndpoints",
            "bInterfaceClass",
            "bInterfaceSubClass",
            "bInterfaceProtocol",
            "iInterface",
        ),
    ),
    DT_ENDPOINT: ("BBHB", ("bEndpointAddress", "bmAttributes", "wMaxPacketSize", "bInterval")),
}


def _pack(kind: int, *values: int) -> bytes:
    fmt = "<BB" + _LAYOUTS[kind][0]
    return struct.pack(fmt, struct.calcsize(fmt), kind, *values)


def _unpack(kind: int, raw: bytes) -> SimpleNamespace:
    fmt, names = _LAYOUTS[kind]
    values = struct.unpack_from("<BB" + fmt, raw)
    return SimpleNamespace(**dict(zip(("bLength", "bDescriptorType", *names), values, strict=True)))


def _render(d: SimUsbDescriptor) -> _Image:
    strings: dict[int, bytes] = {0: struct.pack("<BBH", 4, DT_STRING, LANGID_EN_US)}

    def index_of(text: str | None) -> int:
        if text is None:
            return 0
        strings[len(strings)] = _string_descriptor(text)
        return len(strings) - 1

    i_manufacturer, i_product, i_serial = index_of(d.manufacturer), index_of(d.product), index_of(d.serial)
    body = bytearray()
    for number, interface in enumerate(d.interfaces):
        body += interface.prefix
        for alt_number, alt in enumerate(interface.alts):
            classes = (alt.interface_class, alt.interface_subclass, alt.interface_protocol)
            body += _pack(DT_INTERFACE, number, alt_number, len(alt.endpoints), *classes, index_of(alt.name))
            body += alt.extra
            for ep in alt.endpoints:
                body += _pack(DT_ENDPOINT, ep.address, ep.attributes, ep.max_packet_size, ep.interval)
    power = (d.max_power_ma + 1) // 2  # bMaxPower counts 2 mA units
    config = _pack(DT_CONFIG, 9 + len(body), len(d.interfaces), 1, 0, d.config_attributes, power) + body
    classes = (d.device_class, d.device_subclass, d.device_protocol)
    ids = (d.vid, d.pid, d.bcd_device, i_manufacturer, i_product, i_serial)
    device = _pack(DT_DEVICE, d.bcd_usb, *classes, d.max_packet_size0, *ids, 1)
    return _Image(device, config, strings)


def _parse_config(raw: bytes) -> SimpleNamespace:
    """Parse configuration bytes the way libusb does: class-specific descriptors go to the
    ``extra_descriptors`` of the configuration, interface or endpoint they follow."""
    config = _unpack(DT_CONFIG, raw)
    config.extra_descriptors, config.interfaces = [], []
    current: SimpleNamespace = config
    offset = raw[0]
    while offset + 2 <= len(raw):
        length, kind = raw[offset], raw[offset + 1]
        if length < 2:
            break  # a malformed descriptor: libusb stops parsing too
        chunk = raw[offset : offset + length]
        if kind == DT_INTERFACE:
            current = _unpack(DT_INTERFACE, chunk)
            current.extra_descriptors, current.endpoints = [], []
            while len(config.interfaces) <= current.bInterfaceNumber:
                config.interfaces.append([])
            config.interfaces[current.bInterfaceNumber].append(current)
        elif kind == DT_ENDPOINT:
            current = _unpack(DT_ENDPOINT, chunk)
            current.bRefresh = current.bSynchAddress = 0
            current.extra_descriptors = []
            config.interfaces[-1][-1].endpoints.append(current)
        else:
            current.extra_descriptors.extend(chunk)
        offset += length
    return config


# --- the bus ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Enumeration:
    """One appearance of a peer on the bus: an address and a snapshot of its descriptor."""

    peer: SimUsbPeer
    descriptor: SimUsbDescriptor
    session: object
    address: int
    image: _Image
    alive: bool = True


@dataclass(eq=False)
class _Handle:
    """An open device (libusb_device_handle): its configuration and claimed interfaces."""

    enumeration: _Enumeration
    configuration: int = 1
    claimed: set[int] = field(default_factory=set)
    alts: dict[int, int] = field(default_factory=dict)


class SimUsbBus:
    """The simulated USB bus: peers plugged in, their enumerations, addresses per bus number.

    ``clock`` paces transfer timeouts (a timed-out transfer costs its timeout in clock time);
    ``access_denied`` makes opening any device fail as it does without the udev rule.
    """

    def __init__(self, clock: Clock | None = None, *, access_denied: bool = False):
        self.clock: Clock = clock if clock is not None else RealClock()
        self.access_denied = access_denied
        # Sim state is guarded by the clock's lock where it has one (hw/clock.py's rule).
        self.lock: threading.RLock = getattr(self.clock, "lock", None) or threading.RLock()
        self._peers: list[SimUsbPeer] = []
        self._current: dict[int, _Enumeration] = {}  # id(peer) -> its live enumeration
        self._next_address: dict[int, itertools.count] = {}

    def attach(self, peer: SimUsbPeer) -> None:
        """Plug a peer's cable in (it enumerates whenever it says it is attached)."""
        with self.lock:
            if all(p is not peer for p in self._peers):
                self._peers.append(peer)

    def detach(self, peer: SimUsbPeer) -> None:
        """Pull a peer's cable out: open handles on it fail with ENODEV."""
        with self.lock:
            self._peers = [p for p in self._peers if p is not peer]
            self._drop(peer)

    @property
    def peers(self) -> tuple[SimUsbPeer, ...]:
        return tuple(self._peers)

    def address_of(self, peer: SimUsbPeer) -> int | None:
        """The peer's current USB address, or None while it is not enumerated."""
        with self.lock:
            self.refresh()
            e = self._current.get(id(peer))
            return e.address if e else None

    def refresh(self) -> list[_Enumeration]:
        """Bring enumerations up to date with what the peers say now; return the live ones."""
        with self.lock:
            for peer in self._peers:
                self._refresh_peer(peer)
            return [self._current[id(p)] for p in self._peers if id(p) in self._current]

    def _refresh_peer(self, peer: SimUsbPeer) -> None:
        """One peer's enumeration brought up to date (a transfer to it needs no look at the others)."""
        e = self._current.get(id(peer))
        if not peer.usb_attached():
            self._drop(peer)
            return
        descriptor = peer.usb_descriptor()
        session = _session_of(peer)
        if e is not None and e.session == session and (e.descriptor is descriptor or e.descriptor == descriptor):
            return
        self._drop(peer)  # a changed descriptor or a restarted USB stack: the host sees a new device
        counter = self._next_address.setdefault(descriptor.bus, itertools.count())
        address = 2 + next(counter) % 126  # 1 is the root hub; 127 is the last address
        self._current[id(peer)] = _Enumeration(peer, descriptor, session, address, _render(descriptor))

    def _drop(self, peer: SimUsbPeer) -> None:
        e = self._current.pop(id(peer), None)
        if e is not None:
            e.alive = False

    def _check_alive(self, e: _Enumeration) -> None:
        with self.lock:
            if any(p is e.peer for p in self._peers):
                self._refresh_peer(e.peer)
            else:
                self._drop(e.peer)
        if not e.alive:
            raise _usb_error(_LIBUSB_ERRORS[SimUsbGone])

    def _fail(self, e: _Enumeration, exc: Exception, timeout_ms: int) -> usb.core.USBError:
        """The USBError libusb gives for a peer's failure; a timeout first waits out the transfer."""
        if isinstance(exc, SimUsbTimeout):
            self.clock.sleep(timeout_ms / 1000 if timeout_ms > 0 else UNLIMITED_TIMEOUT_S)
            return _usb_error(_TIMEOUT)
        if isinstance(exc, SimUsbGone):
            with self.lock:
                if self._current.get(id(e.peer)) is e:
                    self._drop(e.peer)
        return _usb_error(_LIBUSB_ERRORS[type(exc)])


def _session_of(peer: SimUsbPeer) -> object:
    session = getattr(peer, "usb_session", None)
    return session() if callable(session) else None


# --- the backend -------------------------------------------------------------------------------------

# Standard requests (bmRequestType & 0x60 == 0) the backend answers from the descriptor itself.
_GET_STATUS, _CLEAR_FEATURE, _GET_DESCRIPTOR, _GET_CONFIGURATION, _SET_CONFIGURATION = 0, 1, 6, 8, 9
_GET_INTERFACE, _SET_INTERFACE = 10, 11


class SimUsbBackend(usb.backend.IBackend):
    """A pyusb backend over a :class:`SimUsbBus`; pass it to ``usb.core.find(backend=...)``."""

    def __init__(self, bus: SimUsbBus):
        super().__init__()
        self.bus = bus

    # -- enumeration and descriptors (no I/O on a real system either: the OS caches these) --
    def enumerate_devices(self) -> list[_Enumeration]:
        return self.bus.refresh()

    def get_parent(self, dev: _Enumeration) -> None:
        return None  # hubs are not modelled; the port path carries the topology

    def get_device_descriptor(self, dev: _Enumeration) -> SimpleNamespace:
        d = _unpack(DT_DEVICE, dev.image.device)
        d.bus, d.address, d.speed = dev.descriptor.bus, dev.address, dev.descriptor.speed
        ports = dev.descriptor.port_numbers
        d.port_numbers, d.port_number = (ports, ports[-1]) if ports else (None, None)
        return d

    def get_configuration_descriptor(self, dev: _Enumeration, config: int) -> SimpleNamespace:
        if config != 0:
            raise IndexError(f"Invalid configuration index {config}")
        return dev.image.parsed_config

    def get_interface_descriptor(self, dev: _Enumeration, intf: int, alt: int, config: int) -> SimpleNamespace:
        interfaces = self.get_configuration_descriptor(dev, config).interfaces
        if intf >= len(interfaces):
            raise IndexError(f"Invalid interface index {intf}")
        if alt >= len(interfaces[intf]):
            raise IndexError(f"Invalid alternate setting index {alt}")
        return interfaces[intf][alt]

    def get_endpoint_descriptor(self, dev: _Enumeration, ep: int, intf: int, alt: int, config: int) -> SimpleNamespace:
        endpoints = self.get_interface_descriptor(dev, intf, alt, config).endpoints
        if ep >= len(endpoints):
            raise IndexError(f"Invalid endpoint index {ep}")
        return endpoints[ep]

    # -- handles --
    def open_device(self, dev: _Enumeration) -> _Handle:
        if self.bus.access_denied:
            raise _usb_error(_ACCESS)
        self.bus._check_alive(dev)
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        dev_handle.claimed.clear()  # libusb_close never fails, even on a device that has gone

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self.bus._check_alive(dev_handle.enumeration)
        if config_value not in (0, 1):
            raise _usb_error(_NOT_FOUND)
        dev_handle.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        self.bus._check_alive(dev_handle.enumeration)
        return dev_handle.configuration

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        self.bus._check_alive(dev_handle.enumeration)
        if intf >= len(dev_handle.enumeration.descriptor.interfaces):
            raise _usb_error(_NOT_FOUND)
        dev_handle.claimed.add(intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        dev_handle.claimed.discard(intf)

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._transfer(dev_handle, 0x01, _SET_INTERFACE, altsetting, intf, array.array("B"), 1000)

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._transfer(dev_handle, 0x02, _CLEAR_FEATURE, 0, ep, array.array("B"), 1000)

    def reset_device(self, dev_handle: _Handle) -> None:
        self.bus._check_alive(dev_handle.enumeration)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False  # no kernel here: nothing to detach

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        pass

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        pass

    # -- transfers --
    def ctrl_transfer(
        self,
        dev_handle: _Handle,
        bmRequestType: int,  # pyusb's parameter names
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array,
        timeout: int,
    ) -> int:
        return self._transfer(dev_handle, bmRequestType, bRequest, wValue, wIndex, data, timeout)

    def _transfer(
        self, handle: _Handle, bm: int, request: int, value: int, index: int, data: array.array, timeout_ms: int
    ) -> int:
        """One control transfer; IN data lands in ``data``. Returns bytes transferred, like libusb."""
        e = handle.enumeration
        self.bus._check_alive(e)
        device_to_host = bool(bm & 0x80)
        length = len(data) * data.itemsize
        try:
            if bm & 0x60 == 0 and request != _SET_INTERFACE and request != _CLEAR_FEATURE:
                answer = self._standard(handle, bm, request, value, index, length)
            else:
                if bm & 0x60 == 0 and request == _SET_INTERFACE:
                    self._check_alt(e, index, value)
                answer = e.peer.usb_control(bm, request, value, index, length if device_to_host else data.tobytes())
                if not device_to_host and request == _SET_INTERFACE:
                    handle.alts[index] = value
        except (SimUsbStall, SimUsbTimeout, SimUsbIoError, SimUsbGone) as exc:
            raise self.bus._fail(e, exc, timeout_ms) from None
        if not device_to_host:
            return int(answer) if isinstance(answer, int) else length
        reply = bytes(answer)[:length]  # a device never sends more than wLength
        data[: len(reply)] = array.array("B", reply)
        return len(reply)

    def _check_alt(self, e: _Enumeration, intf: int, alt: int) -> None:
        interfaces = e.descriptor.interfaces
        if intf >= len(interfaces) or alt >= len(interfaces[intf].alts):
            raise SimUsbStall()

    def _standard(self, handle: _Handle, bm: int, request: int, value: int, index: int, length: int) -> bytes | int:
        """Standard requests a USB device stack answers on its own, from the descriptor."""
        image = handle.enumeration.image
        if request == _GET_DESCRIPTOR and bm == 0x80:
            kind, number = value >> 8, value & 0xFF
            found = {DT_DEVICE: {0: image.device}, DT_CONFIG: {0: image.config}, DT_STRING: image.strings}
            blob = found.get(kind, {}).get(number)
            extra = getattr(handle.enumeration.peer, "usb_string", None)
            if blob is None and kind == DT_STRING and callable(extra):
                # strings the descriptor does not name, e.g. a DFU bootloader's protection state (0xFA)
                text = extra(number)
                blob = _string_descriptor(text) if text is not None else None
            if blob is None:
                raise SimUsbStall()  # device qualifier, BOS, unknown strings: full-speed devices stall
            return blob
        if request == _GET_STATUS and bm & 0x80:
            return b"\x00\x00"
        if request == _GET_CONFIGURATION and bm == 0x80:
            return bytes([handle.configuration])
        if request == _SET_CONFIGURATION and bm == 0x00:
            handle.configuration = value
            return 0
        if request == _GET_INTERFACE and bm == 0x81:
            return bytes([handle.alts.get(index, 0)])
        raise SimUsbStall()

    def __repr__(self) -> str:
        return f"<SimUsbBackend {len(self.bus.peers)} peer(s)>"
