"""Which Particle devices are on USB, what they are, and where they are plugged in.

:func:`find_particle_devices` lists every device on Particle's vendor ids (0x2B04, and 0x1D50 for
the Core) with its platform and mode from the product id (``firmware.platforms.platform_by_usb``),
its device id from the serial string, and its physical port path (``"1-1.3"``: bus 1, root port
1, hub port 3), which is what maps a device to a bench slot. The pyusb backend is injectable
(None = libusb; the simulator passes ``hw.sim.usb_backend.SimUsbBackend``). No device is not an
error; missing permissions or a missing libusb are (:class:`UsbAccessError`, saying what to do).

    >>> device_id_from_serial("E00FCE68AB2C5D1F0E4A7B93", generation=3)
    'e00fce68ab2c5d1f0e4a7b93'
    >>> device_id_from_serial("Photon_53ff6c066667574821362567", generation=2)
    '53ff6c066667574821362567'
    >>> port_path(1, (1, 3))
    '1-1.3'
"""

from __future__ import annotations

import errno
import re
import weakref
from dataclasses import dataclass, field, replace

import usb.backend
import usb.core
import usb.util

from firmware.platforms import Platform, platform_by_usb

#: Vendor ids Particle devices enumerate on: Particle's own, and the Core's (OpenMoko's).
PARTICLE_VIDS = (0x2B04, 0x1D50)

#: The udev rule that lets the kiosk's user (a member of plugdev) open Particle devices, and where the
#: kiosk's installer puts it with the others (deploy/udev/60-particle-kiosk.rules): 0660, never 0666.
UDEV_RULE = (
    'SUBSYSTEM=="usb", ATTRS{idVendor}=="2b04", ATTRS{idProduct}=="[cd]0??", '
    'MODE="0660", GROUP="plugdev", ENV{ID_MM_DEVICE_IGNORE}="1"'
)
UDEV_RULES_PATH = "/etc/udev/rules.d/60-particle-kiosk.rules"


def _access_help(what: str) -> str:
    return (
        f"The kiosk may not open {what}. Give it access with a udev rule: put the line\n"
        f"  {UDEV_RULE}\n"
        f"into {UDEV_RULES_PATH}, run 'sudo udevadm control --reload-rules && sudo udevadm trigger' "
        "and plug the device in again; the kiosk's user must be in the plugdev group (deploy/install.sh installs "
        "the rules and the group)."
    )


_NO_BACKEND_HELP = (
    "pyusb found no USB library to talk to devices with. Install libusb "
    "('sudo apt-get install libusb-1.0-0') and start the kiosk again."
)

_HEX24 = re.compile(r"[0-9A-Fa-f]{24}")
_MAX_GEN_WITH_NOISY_SERIAL = 2  # Gen1/Gen2 firmware may wrap the id in other text


class UsbAccessError(PermissionError):
    """USB devices cannot be opened: no permission (the udev rule is missing) or no libusb."""


@dataclass(frozen=True, repr=False)
class ParticleUsbDevice:
    """One Particle device as USB shows it.

    ``mode`` is "normal" (CDC serial + control requests) or "dfu". ``device_id`` is 24 lower-case
    hex digits, or None when the serial string held none or could not be read (``error`` says why).
    ``port_path`` is Linux's name for the physical port (``"1-1.3"``); ``bus`` and ``address``
    change on every re-enumeration, the port path does not. ``usb_device`` is pyusb's object, for
    the DFU and control-request drivers.
    """

    device_id: str | None
    platform: Platform
    mode: str
    port_path: str | None
    bus: int | None
    address: int | None
    vid: int
    pid: int
    product: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    bcd_device: int | None = None
    error: str | None = None
    usb_device: usb.core.Device | None = field(default=None, compare=False, repr=False)

    def __repr__(self) -> str:
        return (
            f"ParticleUsbDevice({self.platform.name}, {self.mode}, id={self.device_id}, port={self.port_path}, "
            f"bus={self.bus}, address={self.address}{', error=' + repr(self.error) if self.error else ''})"
        )

    @property
    def in_dfu(self) -> bool:
        return self.mode == "dfu"

    @property
    def label(self) -> str:
        """How the kiosk names it: ``Boron e00fce68... (DFU) at 1-1.3``."""
        mode = " (DFU)" if self.in_dfu else ""
        return f"{self.platform.display_name} {self.device_id or '<unknown id>'}{mode} at {self.port_path or '?'}"


def port_path(bus: int | None, port_numbers: tuple[int, ...] | None) -> str | None:
    """Linux's port path from the bus and the chain of port numbers, e.g. ``(1, (1, 3))`` -> "1-1.3"."""
    if bus is None or not port_numbers:
        return None
    return f"{bus}-{'.'.join(str(p) for p in port_numbers)}"


def device_id_from_serial(serial: str | None, generation: int | None) -> str | None:
    """The device id in a USB serial string, lower case, or None.

    Gen3 and later report exactly the id (non-printable characters are dropped first). Gen1/Gen2
    firmware may surround it with other text, so there the first run of 24 hex digits counts.
    """
    if serial is None:
        return None
    text = "".join(c for c in serial if c.isprintable()).strip()
    if generation is not None and generation <= _MAX_GEN_WITH_NOISY_SERIAL:
        m = _HEX24.search(text)
        return m.group(0).lower() if m else None
    return text.lower() if _HEX24.fullmatch(text) else None


def _is_access_error(exc: BaseException) -> bool:
    # pyusb swallows the open failure while reading language ids and then complains about them.
    if isinstance(exc, ValueError):
        return "langid" in str(exc)
    return isinstance(exc, usb.core.USBError) and (
        exc.errno == errno.EACCES or getattr(exc, "backend_error_code", None) == -3
    )


def _is_gone(exc: BaseException) -> bool:
    return isinstance(exc, usb.core.USBError) and (
        exc.errno == errno.ENODEV or getattr(exc, "backend_error_code", None) == -4
    )


def _read_strings(dev: usb.core.Device) -> tuple[str | None, str | None, str | None]:
    """Manufacturer, product and serial strings, in the device's first language."""
    langids = usb.util.get_langids(dev)  # raises the real USBError where dev.langids would hide it
    if not langids:
        return None, None, None
    return tuple(  # type: ignore[return-value]
        usb.util.get_string(dev, index, langids[0]) if index else None
        for index in (dev.iManufacturer, dev.iProduct, dev.iSerialNumber)
    )


def identify(dev: usb.core.Device) -> ParticleUsbDevice | None:
    """What a pyusb device is, if it is a Particle device; None if not (or if it left meanwhile).

    Raises UsbAccessError when the device cannot be opened for lack of permission.
    """
    known = platform_by_usb(dev.idVendor, dev.idProduct)
    if known is None:
        return None
    platform, mode = known
    strings: tuple[str | None, str | None, str | None] = (None, None, None)
    error = None
    try:
        strings = _read_strings(dev)
    except (usb.core.USBError, ValueError) as exc:
        if _is_access_error(exc):
            what = f"USB device {dev.idVendor:04x}:{dev.idProduct:04x} ({platform.display_name})"
            raise UsbAccessError(_access_help(what)) from exc
        if _is_gone(exc):
            return None  # it left the bus while we looked: the next scan sees it again
        error = f"could not read its strings: {exc}"  # still worth listing: the port maps it to a slot
    finally:
        usb.util.dispose_resources(dev)
    manufacturer, product, serial = strings
    return ParticleUsbDevice(
        device_id=device_id_from_serial(serial, platform.generation),
        platform=platform,
        mode=mode,
        port_path=port_path(dev.bus, getattr(dev, "port_numbers", None)),
        bus=dev.bus,
        address=dev.address,
        vid=dev.idVendor,
        pid=dev.idProduct,
        product=product,
        manufacturer=manufacturer,
        serial=serial,
        bcd_device=dev.bcdDevice,
        error=error,
        usb_device=dev,
    )


def find_particle_devices(backend: usb.backend.IBackend | None = None, port: str | None = None
                          ) -> list[ParticleUsbDevice]:  # fmt: skip
    """Every Particle device on USB (only the one at port path ``port``, if given), sorted by port path; an
    empty list when there is none.

    ``backend`` is a pyusb backend (None: libusb). Raises UsbAccessError without permissions or libusb.
    With ``port`` the other ports' devices are never opened: their strings are not read, so a look at one
    slot sends nothing to a device another slot is flashing.
    """

    def wanted(d: usb.core.Device) -> bool:
        return d.idVendor in PARTICLE_VIDS and (
            port is None or port_path(d.bus, getattr(d, "port_numbers", None)) == port
        )

    try:
        candidates = list(usb.core.find(find_all=True, backend=backend, custom_match=wanted))
    except usb.core.NoBackendError as exc:
        raise UsbAccessError(_NO_BACKEND_HELP) from exc
    except usb.core.USBError as exc:
        if _is_access_error(exc):
            raise UsbAccessError(_access_help("USB devices")) from exc
        raise
    found = [p for p in (_identify_known(backend, dev) for dev in candidates) if p is not None]
    return sorted(found, key=_port_order)


#: What each enumeration was found to be, per backend (None: libusb): a device keeps its bus and address, and its
#: strings, until it enumerates again, so a look every second need not open it and ask again.
_known: weakref.WeakKeyDictionary[object, dict[tuple, ParticleUsbDevice]] = weakref.WeakKeyDictionary()
_LIBUSB = type("_Libusb", (), {})()  # stands for backend None (libusb) in _known
_KNOWN_MAX = 256  # enumerations remembered per backend (a bench has a few slots; old ones are forgotten first)


def _identify_known(backend: usb.backend.IBackend | None, dev: usb.core.Device) -> ParticleUsbDevice | None:
    key = (dev.bus, dev.address, dev.idVendor, dev.idProduct, dev.bcdDevice,
           tuple(getattr(dev, "port_numbers", None) or ()))  # fmt: skip
    known = _known.setdefault(backend if backend is not None else _LIBUSB, {})
    hit = known.get(key)
    if hit is not None:
        return replace(hit, usb_device=dev)  # the same enumeration: pyusb's new object, the strings read before
    found = identify(dev)
    if found is not None and found.error is None:
        if len(known) >= _KNOWN_MAX:
            del known[next(iter(known))]
        known[key] = replace(found, usb_device=None)
    return found


def _port_order(p: ParticleUsbDevice) -> tuple[int, tuple[int, ...], int]:
    """Bus, then ports as numbers (so "1-1.10" comes after "1-1.2"), then address."""
    ports = p.port_path.split("-", 1)[1] if p.port_path else ""
    return p.bus or 0, tuple(int(x) for x in ports.split(".") if x), p.address or 0


def find_device(
    device_id: str | None = None, port: str | None = None, backend: usb.backend.IBackend | None = None
) -> ParticleUsbDevice | None:
    """The Particle device with this id and/or at this port path, or None."""
    for p in find_particle_devices(backend):
        if (device_id is None or p.device_id == device_id.lower()) and (port is None or p.port_path == port):
            return p
    return None


def still_attached(device: usb.core.Device) -> bool:
    """Whether ``device`` is still on its bus at its address (a pipe, I/O error or timeout may mean it left).

    True when it cannot tell (no backend to ask, or asking failed): the caller then reports the transfer's
    own error rather than a disconnect.
    """
    backend = getattr(getattr(device, "_ctx", None), "backend", None)
    if backend is None:
        return True
    try:
        found = usb.core.find(
            backend=backend,
            bus=device.bus,
            address=device.address,
            idVendor=device.idVendor,
            idProduct=device.idProduct,
        )
    except usb.core.USBError:
        return True
    return found is not None
