"""A Particle device's USB serial port: finding it, the magic baud rates, and the listening-mode console.

Facts: ../shared/reference/usb-serial-protocols.md section 3.

- :func:`list_particle_ports` / :func:`find_port`: the tty of a device, from its USB identity (VID 0x2B04 with a
  normal-mode PID 0xC0xx, or the Core's 1D50:607D) and its serial number (= the device id). The port lister is
  injectable (default: pyserial's ``serial.tools.list_ports.comports``).
- :func:`trigger_dfu` (14400 baud: reset into the DFU bootloader, every Device OS) and :func:`trigger_listening`
  (28800 baud: listening mode, Device OS <= 5.9 only; 6.0.0 removed it). Each holds the port open at the magic
  rate for 0.25 s of clock time, then sets 9600 again before it closes.
- :class:`ListeningConsole`: the single-letter commands of a device in listening mode (blinking blue): ``i``
  identity, ``v`` version, ``s`` module table, ``m`` MAC, ``c`` claimed, ``x`` exit. Replies are collected the way
  the CLI does (a reply ends after 250 ms of silence; 5 s to answer, 20 s for ``i`` and ``s`` because an LTE modem
  may take 18 s to power up). A reply that is missing, garbled or truncated raises :class:`ConsoleError`, naming
  the command and what came back (shortened, with the Device Secret redacted).

The Device Secret (``ms``, printed by ``i`` on cellular and Gen3 devices) is dropped as soon as a reply is parsed:
it is never returned, logged or put into an error message.

All waiting goes through the injectable :class:`hw.clock.Clock`; reads never block (whatever the port has is
taken, then the clock sleeps a poll interval), so the same code runs against hardware on ``RealClock`` and against
the simulated device on ``VirtualClock`` without freezing device time.

    >>> parse_identify("Device ID: e00fce68ab2c5d1f0e4a7b93\\r\\nIMEI: 352753090123456\\r\\n").imei
    '352753090123456'
    >>> redact("Serial Number: P046AB\\r\\nDevice Secret: 4FB2AEF1\\r\\n")
    'Serial Number: P046AB\\r\\nDevice Secret: <redacted>\\r\\n'
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import re
import select
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import serial

from firmware.platforms import Function, Platform, platform_by_usb
from hw.clock import Clock, ClockEvent, RealClock
from hw.control import ModuleDependency, ModuleInfo
from hw.usb_identity import UDEV_RULE, UDEV_RULES_PATH, device_id_from_serial

log = logging.getLogger(__name__)

CONSOLE_BAUD = 9600  # what the CLI opens the console at; only the magic values mean anything to CDC
DFU_BAUD = 14400  # START_DFU_FLASHER_SERIAL_SPEED: every Device OS version
LISTENING_BAUD = 28800  # START_YMODEM_FLASHER_SERIAL_SPEED: Device OS <= 5.9 (removed in 6.0.0)
SILENCE_S = 0.25  # the CLI's SerialBatchParser: a reply is complete after this much silence
DEFAULT_TIMEOUT_S = 5.0
#: Seconds to wait for the first byte of a reply, per command (LTE modems take up to 18 s to power up).
REPLY_TIMEOUT_S = {"i": 20.0, "s": 20.0}
POLL_S = 0.01  # device time between reads while waiting
TRIGGER_HOLD_S = 0.25  # how long a magic baud stays set (the device acts on SET_LINE_CODING within ms)
WRITE_TIMEOUT_S = 5.0  # a port whose writes stall this long is treated as gone
MAX_REPLY = 64 * 1024  # bytes: a reply longer than this is not a console reply
SHOWN_CHARS = 160  # how much of a bad reply an error message quotes

#: USB identities of normal-mode (CDC) Particle ports: the Core's, and 2B04 with a 0xC0xx PID.
CORE_VID_PID = (0x1D50, 0x607D)
PARTICLE_VID = 0x2B04
NORMAL_PID_HIGH = 0xC000


class SerialError(Exception):
    """Something on the serial side went wrong (base of this module's and ``hw.ymodem``'s errors)."""


class SerialPortError(SerialError):
    """The port cannot be opened or used (missing, no permission, unplugged)."""


class ConsoleError(SerialError):
    """A listening-mode command got no reply, or one that is garbled or truncated.

    ``command`` is the letter sent, ``reply`` what came back (redacted and shortened: safe to show and log).
    """

    def __init__(self, command: str, problem: str, reply: str | bytes | None = None):
        self.command = command
        self.problem = redact(problem)  # a problem may quote a value a lost line end joined to the secret's line
        self.reply = shorten(redact(_text(reply))) if reply is not None else None
        answered = f"; the device answered {self.reply!r}" if reply is not None else ""
        super().__init__(
            f"listening-mode command {command!r} ({COMMAND_NAMES.get(command, '?')}): {self.problem}{answered}"
        )


COMMAND_NAMES = {
    "i": "identify",
    "v": "version",
    "s": "system info",
    "m": "MAC address",
    "c": "claimed",
    "x": "exit listening mode",
    "f": "YModem flash",
}

# --- redaction ---------------------------------------------------------------------------------------

#: The Device Secret's label, still found with any one byte of it garbled ("Device S", "Secr" or "ecret" survive),
#: and anywhere in a line (a lost line end joins it to the line before); the value is the rest of the line.
#: "Device S" is matched as the device prints it (capitals), so ordinary prose such as "the device sits in
#: safe mode" is left alone; "secr"/"ecret" match in any case.
_SECRET_LABEL = r"(?:Device\s*S|(?i:secr|ecret))"
_SECRET_LINE = re.compile(rf"({_SECRET_LABEL}[A-Za-z]*\s*:?[ \t]*)[^\r\n]*")
_SECRET_JSON = re.compile(r'("ms"\s*:\s*)"[^"\r\n]*"?')
#: The ``s`` JSON key with one byte of its quotes, colon or spacing garbled, lost or added (the letters "ms" survive,
#: with one quote): the value is then the first run of 12 or more letters and digits (a secret's shape) that starts
#: within 6 characters. (A garbled letter leaves nothing that tells the secret from any other key's value.)
_SECRET_JSON_GARBLED = re.compile(r'((?:"[^"\s]?ms\w?(?!\w)"?|(?<![\w"])\w?ms")[^\r\n]{0,6}?)[0-9A-Za-z]{12,}')


def redact(text: str) -> str:
    """``text`` with every Device Secret value replaced by ``<redacted>`` (the ``i`` line and the JSON key)."""
    text = _SECRET_LINE.sub(r"\1<redacted>", text)
    return _SECRET_JSON.sub(r'\1"<redacted>"', _SECRET_JSON_GARBLED.sub(r"\1<redacted>", text))


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """At most ``limit`` characters of ``text``, marking the cut."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def _text(data: str | bytes) -> str:
    return data.decode("ascii", "backslashreplace") if isinstance(data, bytes) else data


# --- finding the port ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParticlePort:
    """One Particle device's serial port: ``path`` (``/dev/ttyACM0``), its device id (lower-case, or None when
    the serial number holds none), platform, USB ids, and ``location`` (pyserial's port path, e.g. ``1-1.3``)."""

    path: str
    device_id: str | None
    platform: Platform | None
    vid: int
    pid: int
    serial_number: str | None = None
    location: str | None = None


PortLister = Callable[[], Iterable[Any]]


def _default_lister() -> Iterable[Any]:
    from serial.tools import list_ports  # imported late: it scans sysfs at import on some platforms

    return list_ports.comports()


def is_particle_serial(vid: int | None, pid: int | None) -> bool:
    """Whether a USB VID:PID is a Particle device's normal-mode (CDC) port, e.g. 2b04:c00d (a Boron)."""
    if vid is None or pid is None:
        return False
    return (vid, pid) == CORE_VID_PID or (vid == PARTICLE_VID and pid & 0xFF00 == NORMAL_PID_HIGH)


def list_particle_ports(lister: PortLister | None = None) -> list[ParticlePort]:
    """Every Particle serial port the system lists (``lister`` returns pyserial ``ListPortInfo``-like objects)."""
    found = []
    for info in (lister or _default_lister)():
        vid, pid = getattr(info, "vid", None), getattr(info, "pid", None)
        if not is_particle_serial(vid, pid):
            continue
        known = platform_by_usb(vid, pid)
        platform = known[0] if known else None
        serial_number = getattr(info, "serial_number", None)
        device_id = device_id_from_serial(serial_number, platform.generation if platform else None)
        found.append(
            ParticlePort(info.device, device_id, platform, vid, pid, serial_number, getattr(info, "location", None))
        )
    return found


def find_port(device_id: str, lister: PortLister | None = None) -> str | None:
    """The serial port path of the device with this id (any case), or None when it has none right now."""
    wanted = device_id.strip().lower()
    for port in list_particle_ports(lister):
        if port.device_id == wanted:
            return port.path
    return None


# --- opening it ------------------------------------------------------------------------------------


class SerialLike(Protocol):
    """What this module needs of a port: pyserial's ``serial.Serial`` has it."""

    @property
    def in_waiting(self) -> int: ...
    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...
    def close(self) -> None: ...


#: Who wants to hear that the kiosk just did something to a port (by path): a simulated device, so that it
#: looks at its line at once rather than polling it. Real ports have none; nothing here knows the simulator.
_activity_listeners: dict[str, list[Callable[[], None]]] = {}
_listeners_lock = threading.Lock()


def listen_for_host_activity(path: str, listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener`` (from the kiosk's thread, right after the act) whenever the kiosk opens ``path``,
    writes to it, changes its rate or closes it; returns the function that stops it."""
    with _listeners_lock:
        _activity_listeners.setdefault(path, []).append(listener)

    def stop() -> None:
        with _listeners_lock:
            listeners = _activity_listeners.get(path, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                _activity_listeners.pop(path, None)

    return stop


def host_activity(path: str | None) -> None:
    """Tell the listeners of ``path`` (if any) that the kiosk acted on it."""
    with _listeners_lock:
        listeners = list(_activity_listeners.get(path, ())) if path else []
    for listener in listeners:
        listener()


def open_port(path: str, baud: int = CONSOLE_BAUD) -> serial.Serial:
    """``path`` opened with pyserial at ``baud``: reads never block, writes give up after 5 s.

    Raises :class:`SerialPortError` saying what to do (e.g. the udev rule when permission is denied).
    """
    try:
        port = serial.Serial(path, baud, timeout=0, write_timeout=WRITE_TIMEOUT_S)
        host_activity(path)
        return port
    except (serial.SerialException, OSError) as exc:
        code = getattr(exc, "errno", None)
        if code == errno.EACCES:
            raise SerialPortError(
                f"permission denied opening {path}. Put the line\n  {UDEV_RULE}\ninto {UDEV_RULES_PATH}, "
                "run 'sudo udevadm control --reload-rules && sudo udevadm trigger' and plug the device in again."
            ) from exc
        raise SerialPortError(f"cannot open {path} at {baud} baud: {exc}") from exc


def _trigger(path: str, baud: int, clock: Clock | None, hold: float, cancel: ClockEvent | None) -> None:
    clock = clock or RealClock()
    port = open_port(path, baud)
    try:
        clock.sleep(hold, cancel)
        # Back to 9600 before closing: Linux's cdc-acm sends the tty's last line coding again on the next
        # open, so a magic rate left on the tty would fire again whenever anyone opens the port. By now the
        # device has acted on the magic rate (Device OS handles SET_LINE_CODING at once), so this undoes nothing.
        port.baudrate = CONSOLE_BAUD
        host_activity(path)
    except (serial.SerialException, OSError):
        pass  # the device may already have left the bus (DFU re-enumerates): that is the point
    finally:
        with contextlib.suppress(serial.SerialException, OSError):
            port.close()
        host_activity(path)


def trigger_dfu(
    path: str, clock: Clock | None = None, *, hold: float = TRIGGER_HOLD_S, cancel: ClockEvent | None = None
) -> None:
    """Ask the device on ``path`` to reset into DFU mode: open at 14400 baud for ``hold`` s, then close.

    Works on every Device OS version. Pass the simulator's clock when the port is simulated.
    """
    _trigger(path, DFU_BAUD, clock, hold, cancel)


def trigger_listening(
    path: str, clock: Clock | None = None, *, hold: float = TRIGGER_HOLD_S, cancel: ClockEvent | None = None
) -> None:
    """Ask the device on ``path`` to enter listening mode: open at 28800 baud for ``hold`` s, then close.

    Device OS <= 5.9 only; 6.0.0 removed it (use control request 70 there).
    """
    _trigger(path, LISTENING_BAUD, clock, hold, cancel)


class SerialLink:
    """A port read without blocking and waited on with the clock (shared by the console and ``hw.ymodem``).

    ``poll`` is the longest device time between two reads while waiting; waits start shorter (0.1 ms) and back
    off, so a quick answer is seen quickly on real hardware. Owns (and closes) the port only when it opened it.
    """

    FIRST_POLL_S = 0.0001

    def __init__(
        self,
        port: str | SerialLike,
        clock: Clock,
        *,
        baud: int = CONSOLE_BAUD,
        poll: float = POLL_S,
        cancel: ClockEvent | None = None,
    ):
        self._owned = isinstance(port, str)
        self.name = port if isinstance(port, str) else str(getattr(port, "port", None) or "serial port")
        self.port: SerialLike = open_port(port, baud) if isinstance(port, str) else port
        self.clock = clock
        self.poll = poll
        self.cancel = cancel
        self.pending = bytearray()  # bytes read but not yet consumed
        try:
            self._fd: int | None = self.port.fileno()  # type: ignore[attr-defined]
        except (AttributeError, OSError, ValueError):
            self._fd = None

    def close(self) -> None:
        if self._owned:
            with contextlib.suppress(serial.SerialException, OSError):
                self.port.close()
            host_activity(self.name)

    def read_available(self) -> bytes:
        """Whatever the port has now (possibly nothing); never blocks."""
        try:
            if self._fd is not None:
                # A tty hands received bytes to its reader through a kernel work queue; in_waiting (TIOCINQ) does
                # not count bytes still queued there, but poll() first lets the queue deliver them. Under load that
                # gap lasts milliseconds: on the virtual clock, long enough for a whole timeout to pass.
                select.select([self._fd], [], [], 0)
            waiting = self.port.in_waiting
            return bytes(self.port.read(waiting)) if waiting else b""
        except (serial.SerialException, OSError) as exc:
            raise SerialPortError(f"{self.name} stopped answering (unplugged?): {exc}") from exc

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise SerialPortError(f"writing to {self.name} failed (unplugged?): {exc}") from exc
        host_activity(self.name)

    def fill(self) -> bool:
        """Move what the port has into ``pending``; True if anything came."""
        data = self.read_available()
        self.pending += data
        return bool(data)

    def discard(self) -> bytes:
        """Drop (and return) everything pending and whatever the port has now: stale output before a command."""
        self.fill()
        stale, self.pending = bytes(self.pending), bytearray()
        return stale

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Read into ``pending`` until ``done()`` holds or ``timeout`` device seconds pass; True if it held."""
        deadline = self.clock.now() + timeout
        step = self.FIRST_POLL_S
        while True:
            if self.fill():
                step = self.FIRST_POLL_S
            if done():
                return True
            left = deadline - self.clock.now()
            if left <= 0:
                return False
            self.clock.sleep(min(step, left), self.cancel)
            step = min(step * 2, self.poll)

    def read_byte(self, timeout: float) -> int | None:
        """The next byte, or None after ``timeout`` device seconds without one."""
        if not self.wait(lambda: bool(self.pending), timeout):
            return None
        byte = self.pending[0]
        del self.pending[0]
        return byte

    def collect(self, timeout: float, silence: float = SILENCE_S, limit: int = MAX_REPLY) -> bytes:
        """A reply: bytes until ``silence`` s pass without one (after the first), at most ``timeout`` s for the
        first byte and at most ``timeout`` s of output in all. Empty when nothing came."""
        start = self.clock.now()
        if not self.wait(lambda: bool(self.pending), timeout):
            return b""
        last_size, last_at = len(self.pending), self.clock.now()

        def quiet() -> bool:
            nonlocal last_size, last_at
            now = self.clock.now()
            if len(self.pending) != last_size:
                last_size, last_at = len(self.pending), now
            return now - last_at >= silence or len(self.pending) >= limit or now - start >= 2 * timeout

        self.wait(quiet, 2 * timeout + silence)
        reply, self.pending = bytes(self.pending), bytearray()
        return reply


# --- what the commands answer -------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """What ``i`` tells: the device id (24 lower-case hex digits) and the system-info values it printed.

    ``values`` holds every printed key except the Device Secret, by the device's own labels (``IMEI``, ``ICCID``,
    ``Serial Number``, ``Cell Radio Version``, or a raw key older firmware prints as is). Wi-Fi devices on old
    Device OS print only the id (``Your device id is ...``), so everything else is None there.
    """

    device_id: str
    values: dict[str, str] = field(default_factory=dict)

    @property
    def imei(self) -> str | None:
        return self.values.get("IMEI")

    @property
    def iccid(self) -> str | None:
        return self.values.get("ICCID")

    @property
    def serial_number(self) -> str | None:
        return self.values.get("Serial Number")

    @property
    def cell_radio_version(self) -> str | None:
        return self.values.get("Cell Radio Version") or self.values.get("cellfw")


#: Labels ``i`` prints for system-info keys (system_setup.cpp renames imei, iccid, sn, ms, and at HEAD cellfw).
IDENTIFY_LABELS = {"imei": "IMEI", "iccid": "ICCID", "sn": "Serial Number", "ms": "Device Secret"}
IDENTIFY_LABELS_HEAD = {**IDENTIFY_LABELS, "cellfw": "Cell Radio Version"}
SECRET_KEYS = frozenset({"Device Secret", "ms"})
#: What a well-formed value looks like, per label (a cut-off reply fails these).
VALUE_FORMATS = {
    "IMEI": re.compile(r"\d{14,16}"),
    "ICCID": re.compile(r"\d{18,22}[Ff]?"),
    "Serial Number": re.compile(r"[0-9A-Za-z]{6,32}"),
}
_HEX_ID = re.compile(r"[0-9A-Fa-f]{24}")
_OLD_IDENTIFY = re.compile(r"Your (?:core|device) id is\s+(\S+)\s*$")
#: ``Key: value``. The key ends on a word character, so it and the spaces before the colon cannot share a run of
#: spaces (a lazy key did, and a long line of spaces without a colon took quadratic time).
_KEY_VALUE = re.compile(r"([A-Za-z](?:[\w ]*\w)?)\s*:\s*(\S(?:.*\S)?)?\s*")


def _complete_lines(command: str, reply: str) -> list[str]:
    """The reply's lines, requiring it to end with a newline (else it was cut off)."""
    if not reply.strip():
        raise ConsoleError(command, "the reply is empty", reply)
    if not reply.endswith("\n"):
        raise ConsoleError(command, "the reply is cut off (no line end)", reply)
    return [line for line in reply.replace("\r", "").split("\n") if line.strip()]


def _device_id(command: str, text: str, reply: str) -> str:
    if not _HEX_ID.fullmatch(text):
        raise ConsoleError(command, f"{shorten(text, 40)!r} is not a 24-hex-digit device id", reply)
    return text.lower()


def parse_identify(reply: str) -> Identity:
    """The ``i`` reply: ``Your device id is <id>`` or ``Device ID: <id>`` then ``<Key>: <value>`` lines."""
    lines = _complete_lines("i", reply)
    old = _OLD_IDENTIFY.fullmatch(lines[0].strip())
    if old:
        if len(lines) > 1:
            raise ConsoleError("i", "unexpected lines after the device id", reply)
        return Identity(_device_id("i", old.group(1), reply))
    values: dict[str, str] = {}
    device_id = None
    for line in lines:
        match = _KEY_VALUE.fullmatch(line.strip())
        if not match:
            raise ConsoleError("i", f"line {shorten(redact(line), 40)!r} is not 'Key: value'", reply)
        key, value = match.group(1), match.group(2) or ""
        if key in SECRET_KEYS or redact(line) != line:
            continue  # never kept, never shown (also under a garbled label, or after one a lost line end joined)
        if key == "Device ID":
            device_id = _device_id("i", value, reply)
            continue
        fmt = VALUE_FORMATS.get(key)
        if fmt is not None and not fmt.fullmatch(value):
            raise ConsoleError("i", f"the {key} value {shorten(value, 40)!r} is malformed (cut off?)", reply)
        values[key] = value
    if device_id is None:
        raise ConsoleError("i", "no device id in the reply", reply)
    return Identity(device_id, values)


@dataclass(frozen=True)
class SystemVersion:
    """What ``v`` tells: the Device OS version string (``5.9.0``) and whether it is a minimal build."""

    version: str
    minimal: bool = False

    def __str__(self) -> str:
        return self.version + (" minimal" if self.minimal else "")


_VERSION = re.compile(r"system firmware version:\s+([0-9A-Za-z][0-9A-Za-z.+-]*)( minimal)?")


def parse_version(reply: str) -> SystemVersion:
    """The ``v`` reply: ``system firmware version: 5.9.0`` (plus `` minimal``)."""
    lines = _complete_lines("v", reply)
    match = _VERSION.fullmatch(lines[0].strip()) if len(lines) == 1 else None
    if not match:
        raise ConsoleError("v", "expected 'system firmware version: <version>'", reply)
    return SystemVersion(match.group(1), bool(match.group(2)))


_MAC = re.compile(r"[0-9A-Fa-f]{1,2}(?::[0-9A-Fa-f]{1,2}){5}")


def parse_mac(reply: str) -> str:
    """The ``m`` reply: the MAC address, lower case with two digits per octet (``a4:cf:12:0b:3d:7e``)."""
    lines = _complete_lines("m", reply)
    if len(lines) != 2 or lines[0].strip() != "Your device MAC address is" or not _MAC.fullmatch(lines[1].strip()):
        raise ConsoleError("m", "expected 'Your device MAC address is' and six octets", reply)
    return ":".join(octet.zfill(2) for octet in lines[1].strip().lower().split(":"))


_CLAIMED = {"Device claimed: yes": True, "Device claimed: no": False}


def parse_claimed(reply: str) -> bool:
    """The ``c`` reply: ``Device claimed: yes`` or ``no``."""
    lines = _complete_lines("c", reply)
    if len(lines) != 1 or lines[0].strip() not in _CLAIMED:
        raise ConsoleError("c", "expected 'Device claimed: yes' or 'Device claimed: no'", reply)
    return _CLAIMED[lines[0].strip()]


#: ``s`` JSON function letters -> module function (firmware.platforms.Function); ``_`` (other) maps to None.
FUNCTION_LETTERS: dict[str, int | None] = {
    "n": Function.NONE,
    "r": Function.RESOURCE,
    "b": Function.BOOTLOADER,
    "m": Function.MONO_FIRMWARE,
    "s": Function.SYSTEM_PART,
    "u": Function.USER_PART,
    "c": Function.NCP_FIRMWARE,
    "a": Function.RADIO_STACK,
    "_": None,
}
FUNCTION_TO_LETTER = {f: letter for letter, f in FUNCTION_LETTERS.items() if f is not None}
#: ``s`` JSON store letters -> where the module is kept.
STORES = {"m": "main", "f": "factory", "b": "backup", "t": "temp", "_": "unknown"}
STORE_TO_LETTER = {name: letter for letter, name in STORES.items()}
#: The validity bits of ``vc``/``vv`` (system_info.h); a check failed when checked XOR passed has its bit.
VALIDITY_FLAGS = {
    0x02: "integrity",
    0x04: "dependencies",
    0x08: "range",
    0x10: "platform",
    0x20: "product",
    0x40: "dependencies-full",
}


@dataclass(frozen=True)
class SerialModule:
    """One module of the ``s`` table.

    ``function`` is a firmware.platforms.Function number (None: the device's "other"), ``max_size`` the slot's
    maximum size in bytes (``s`` reports no actual size), ``store`` ``main``/``factory``/``backup``/``temp``,
    ``checked_flags``/``passed_flags`` the raw ``vc``/``vv`` bits, ``hash`` the user part's SHA-256 (hex).
    """

    function: int | None
    index: int
    version: int
    max_size: int
    store: str
    checked_flags: int
    passed_flags: int
    hash: str | None = None
    dependencies: tuple[ModuleDependency, ...] = ()

    @property
    def failed(self) -> frozenset[str]:
        """The checks that failed, by name (``integrity``, ``dependencies``, ``range``, ``platform``, ...)."""
        bits = self.checked_flags ^ self.passed_flags
        return frozenset(name for bit, name in VALIDITY_FLAGS.items() if bits & bit)

    @property
    def valid(self) -> bool:
        return not self.failed

    def to_module_info(self) -> ModuleInfo:
        """As ``hw.control.ModuleInfo`` (what request 90 gives), so one report (``kiosk.inspect``) serves both.

        ``size`` there is the slot's maximum size: the only size ``s`` reports.
        """
        return ModuleInfo(
            function=-1 if self.function is None else self.function,
            index=self.index,
            version=self.version,
            size=self.max_size,
            dependencies=self.dependencies,
            failed=self.failed,
            legacy=False,
            checked_flags=self.checked_flags,
            passed_flags=self.passed_flags,
            max_size=self.max_size,
            hash=bytes.fromhex(self.hash) if self.hash and len(self.hash) % 2 == 0 else None,
        )


@dataclass(frozen=True)
class SystemInfo:
    """What ``s`` tells: the platform id, the other system-info values (Device Secret dropped), the modules."""

    platform_id: int
    values: dict[str, str]
    modules: tuple[SerialModule, ...]


_MODULE_KEYS = {"s": int, "l": str, "vc": int, "vv": int, "f": str, "n": str, "v": int}
_HEX_DIGITS = re.compile(r"[0-9A-Fa-f]*")


def _field(obj: dict, key: str, kind: type, where: str, reply: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConsoleError("s", f"{where} has no {kind.__name__} {key!r}", reply)
    return value


def _index(text: str, where: str, reply: str) -> int:
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses (JSON can carry it as "\u00b2")
    if not (text.isascii() and text.isdigit()):
        raise ConsoleError("s", f"{where} has module index {text!r}, not a number", reply)
    return int(text)


def _holds_secret(key: str, value: Any) -> bool:
    """The Device Secret's entry, also under a key one byte garbled (what :func:`redact` would hide)."""
    probe = json.dumps({key: str(value)}, ensure_ascii=False)
    return key in SECRET_KEYS or redact(probe) != probe


def parse_system_info(reply: str) -> SystemInfo:
    """The ``s`` reply: one JSON object ``{"p":13,...,"m":[{"s":...,"l":"m","vc":30,...}]}``."""
    lines = _complete_lines("s", reply)
    if len(lines) != 1:
        raise ConsoleError("s", "expected one line of JSON", reply)
    try:
        doc = json.loads(lines[0])
    except (ValueError, RecursionError):  # RecursionError: brackets nested deeper than the parser goes
        raise ConsoleError("s", "the JSON is garbled or cut off", reply) from None
    if not isinstance(doc, dict):
        raise ConsoleError("s", "the JSON is not an object", reply)
    platform_id = _field(doc, "p", int, "the reply", reply)
    raw_modules = doc.get("m")
    if not isinstance(raw_modules, list):
        raise ConsoleError("s", "the reply has no module list 'm'", reply)
    modules = []
    for i, raw in enumerate(raw_modules):
        where = f"module {i}"
        if not isinstance(raw, dict):
            raise ConsoleError("s", f"{where} is not an object", reply)
        got = {key: _field(raw, key, kind, where, reply) for key, kind in _MODULE_KEYS.items()}
        raw_deps = raw.get("d", [])
        if not isinstance(raw_deps, list):
            raise ConsoleError("s", f"{where} has a malformed dependency list", reply)
        deps = []
        for dep in raw_deps:
            if not isinstance(dep, dict):
                raise ConsoleError("s", f"{where} has a malformed dependency", reply)
            dep_function = FUNCTION_LETTERS.get(_field(dep, "f", str, f"{where}'s dependency", reply))
            deps.append(
                ModuleDependency(
                    -1 if dep_function is None else dep_function,
                    _index(_field(dep, "n", str, f"{where}'s dependency", reply), where, reply),
                    _field(dep, "v", int, f"{where}'s dependency", reply),
                )
            )
        hash_hex = raw.get("u")
        if isinstance(hash_hex, str) and not _HEX_DIGITS.fullmatch(hash_hex):
            raise ConsoleError("s", f"{where} has a hash {shorten(hash_hex, 40)!r} that is not hexadecimal", reply)
        modules.append(
            SerialModule(
                function=FUNCTION_LETTERS.get(got["f"]),
                index=_index(got["n"], where, reply),
                version=got["v"],
                max_size=got["s"],
                store=STORES.get(got["l"], "unknown"),
                checked_flags=got["vc"],
                passed_flags=got["vv"],
                hash=hash_hex.lower() if isinstance(hash_hex, str) and hash_hex else None,
                dependencies=tuple(deps),
            )
        )
    values = {k: str(v) for k, v in doc.items() if k not in ("p", "m") and not _holds_secret(k, v)}
    return SystemInfo(platform_id, values, tuple(modules))


# --- the console -----------------------------------------------------------------------------------------


class ListeningConsole:
    """The listening-mode console of one device.

    ``port`` is a path (opened at 9600 baud and closed by :meth:`close`) or an open pyserial-like port (left
    open). Each command discards stale output first, writes its letter and collects the reply; see the module
    docstring for what each one returns.
    """

    def __init__(
        self,
        port: str | SerialLike,
        clock: Clock,
        *,
        cancel: ClockEvent | None = None,
        poll: float = POLL_S,
        silence: float = SILENCE_S,
        timeouts: dict[str, float] | None = None,
    ):
        self.link = SerialLink(port, clock, baud=CONSOLE_BAUD, poll=poll, cancel=cancel)
        self.silence = silence
        self.timeouts = {**REPLY_TIMEOUT_S, **(timeouts or {})}

    def __enter__(self) -> ListeningConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.link.close()

    def command(self, letter: str) -> str:
        """Send one command letter; its whole reply as text (Device Secret redacted). ConsoleError if none."""
        return redact(self._exchange(letter))

    def _exchange(self, letter: str) -> str:
        """The raw reply (may hold the secret: parse it, never keep or log it)."""
        stale = self.link.discard()
        if stale:
            log.debug("%s: discarded %d stale bytes before %r", self.link.name, len(stale), letter)
        self.link.write(letter.encode("ascii"))
        timeout = self.timeouts.get(letter, DEFAULT_TIMEOUT_S)
        reply = self.link.collect(timeout, self.silence).decode("ascii", "backslashreplace")
        log.debug("%s: %r -> %r", self.link.name, letter, shorten(redact(reply)))
        if not reply:
            raise ConsoleError(
                letter, f"no reply within {timeout:g} s (is the device in listening mode, blinking blue?)"
            )
        return reply

    def identify(self) -> Identity:
        """``i``: the device id, and IMEI, ICCID, serial number, radio version where the device prints them."""
        return parse_identify(self._exchange("i"))

    def version(self) -> SystemVersion:
        """``v``: the Device OS version."""
        return parse_version(self._exchange("v"))

    def system_info(self) -> SystemInfo:
        """``s``: the platform and the module table with each module's checks."""
        return parse_system_info(self._exchange("s"))

    def mac(self) -> str:
        """``m``: the MAC address (Wi-Fi STA on Wi-Fi platforms, else the first interface)."""
        return parse_mac(self._exchange("m"))

    def claimed(self) -> bool:
        """``c``: whether the device is claimed."""
        return parse_claimed(self._exchange("c"))

    def exit(self) -> None:
        """``x``: leave listening mode (the device prints nothing; any output that follows is discarded)."""
        self.link.discard()
        self.link.write(b"x")
        self.link.collect(self.silence, self.silence)
