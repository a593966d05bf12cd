"""The simulated device's USB serial port, as a real pseudo-terminal the kiosk opens with pyserial.

:class:`SimSerialPort` owns a pty (``os.openpty()``); :attr:`SimSerialPort.path` is the slave the kiosk opens, and
one thread serves the master as Device OS serves USB CDC (../shared/reference/usb-serial-protocols.md 3-4):

- **Line coding.** The baud the kiosk sets on the tty is read from the tty itself with the TCGETS2 ioctl
  (termios2 ``c_ospeed``: exact for any rate, 14400 and 28800 included; on a pty it works on the master and
  answers for the slave), falling back to ``tcgetattr`` speed constants where TCGETS2 is missing. A Linux pty
  tells its master nothing when the slave's settings change (packet mode reports them only with EXTPROC, which
  pyserial clears), so the thread reads them on every wake-up; each change calls ``on_baud(baud)`` (the device
  maps 14400 to DFU, and 28800 to listening mode on Device OS <= 5.9).
- **Listening-mode console**, only while :attr:`SimSerialPort.listening` is True (a normal-mode Device OS prints
  nothing and ignores input): ``i v s m c x f`` with Device OS's exact output, built from a
  :class:`SerialProvider`.
- **YModem receiver** after ``f`` (or a raw SOH/STX, Device OS <= 5.9), with the device's own checks: ``~seq``,
  the expected ``seq`` (NAK otherwise, also for a repeated block), the size from the header against
  ``max_file_size``, 5 s per byte, at most ``MAX_ERRORS`` errors (each answered with ``C``), ``a`` aborts, a CA CA
  ends the transfer, and the closing header's verdict from ``validate(data) -> (ok, flags)``: ACK and
  ``Downloaded file successfully!`` (then ``on_received(data)`` 1 s later) or CA CA and ``Validation failed``.
  Like the device it checks no block CRC. Device OS >= 6.0.0 answers ``f`` with four CA.
- **A flaky cable**: :meth:`SimSerialPort.damage` drops or corrupts one byte in either direction.

Device time: the thread is a clock actor, not a blocking reader. A thread blocked in a real read cannot hold the
virtual clock back, so the kiosk's polling would race device time ahead (its timeouts, and the device's own 5 s
byte timeout, firing in microseconds of real time) before the thread even woke. Instead it reads the master
without blocking (a read also lands bytes the kernel still holds in the pty's work queue), acts under the clock's
lock, and waits on the clock for a tick: 2 ms while bytes flow, backing off to 50 ms when idle (about 20 steps per
idle device second). Whatever a kiosk *actor* thread wrote before it waited on the clock is therefore seen before
device time moves on, so answers come at deterministic device times and a magic baud is noticed within one tick.
Kiosk threads must be clock actors for that (as ``hw.clock`` requires of every thread that drives simulated
hardware). Work that takes device time (flash writes, the 100 ms before Device OS 6's refusal) is scheduled with
``clock.call_later`` and answered from the timer. Writes to the master never block (the rest waits for the next
tick), so the thread never holds device time while it waits for the kiosk.

    >>> system_info_json(SystemInfo(13, {}, ()))
    '{"p":13,"m":[]}'
    >>> module_validator(13)(b"not a module")
    (False, 2)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import select
import struct
import termios
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from firmware.module import NotAModuleError, parse_module
from firmware.versions import DeviceOsVersion, VersionError
from hw.clock import Cancelled, Clock
from hw.device_timing import YMODEM_APPLY_DELAY_S
from hw.serial_console import (
    CONSOLE_BAUD,
    FUNCTION_TO_LETTER,
    IDENTIFY_LABELS_HEAD,
    STORE_TO_LETTER,
    SystemInfo,
    listen_for_host_activity,
)
from hw.ymodem import ACK, CA, CRC_REQUEST, EOT, NAK, PARTICLE_PROMPT, REFUSED_TEXT, SOH, STX, SUCCESS_TEXT

log = logging.getLogger(__name__)

#: ioctl numbers for struct termios2 (asm-generic, as on x86-64 and ARM; 44 bytes: 4 flags, c_line, 19 cc, speeds)
TCGETS2 = 0x802C542A
_TERMIOS2 = struct.Struct("=4IB19s2I")
#: termios speed constants -> baud, for the fallback.
_SPEEDS = {getattr(termios, name): int(name[1:]) for name in dir(termios) if name[:1] == "B" and name[1:].isdigit()}

ACTIVE_TICK_S = 0.002  # device seconds between looks at the line while bytes flow
IDLE_TICK_S = 2.0  # ... and when nothing has happened for ACTIVE_FOR_S (the kiosk's own acts wake it at once)
ACTIVE_FOR_S = 0.5
NAK_TIMEOUT_S = 5.0  # the device waits this long for each byte of a transfer
MAX_ERRORS = 5  # more errors than this and the device cancels (CA CA)
REFUSAL_DELAY_S = 0.1  # Device OS 6: prompt, 100 ms, then four CA
SUCCESS_RESET_DELAY_S = YMODEM_APPLY_DELAY_S  # success lines, 1 s, then the update is applied
WRITE_S_PER_KIB = 0.010  # flash write time per KiB received (nRF52840: ~42 ms per 4 KiB page)
VALIDATE_S = 0.05  # checking the received image
MAX_FILE_SIZE = 1536 * 1024  # larger than any OTA slot a serial transfer fills


class SerialProvider(Protocol):
    """What the device tells its console (the device integrator implements this).

    ``identity_values`` are the raw system-info pairs ``i`` prints after the id, in order, e.g.
    ``[("imei", "352753090123456"), ("iccid", "8934..."), ("sn", "P046..."), ("ms", "<secret>"), ("cellfw", "...")]``;
    empty on Wi-Fi devices (then ``i`` prints ``Your device id is <id>``). ``system_version`` is the release
    string (``5.9.0``; Device OS >= 6.0.0 refuses YModem). ``system_info`` is the ``s`` table (or, to simulate a
    broken device, the exact JSON text to print).
    """

    def device_id(self) -> str: ...
    def identity_values(self) -> list[tuple[str, str]]: ...
    def system_version(self) -> str: ...
    def system_info(self) -> SystemInfo | str: ...
    def mac_address(self) -> str: ...
    def claimed(self) -> bool: ...


def system_info_json(info: SystemInfo) -> str:
    """The one-line ``s`` JSON for ``info``, keys in Device OS's order (system_info.cpp ``module_info_to_json``)."""
    doc: dict = {"p": info.platform_id, **info.values}
    modules = []
    for m in info.modules:
        entry: dict = {"s": m.max_size, "l": STORE_TO_LETTER.get(m.store, "_"), "vc": m.checked_flags}
        entry["vv"] = m.passed_flags
        if m.hash:
            entry["u"] = m.hash
        entry.update(f=FUNCTION_TO_LETTER.get(m.function, "_"), n=str(m.index), v=m.version)
        entry["d"] = [
            {"f": FUNCTION_TO_LETTER.get(d.function, "_"), "n": str(d.index), "v": d.version} for d in m.dependencies
        ]
        modules.append(entry)
    doc["m"] = modules
    return json.dumps(doc, separators=(",", ":"))


def _as_json(info: SystemInfo | str) -> str:
    return info if isinstance(info, str) else system_info_json(info)


def module_validator(platform_id: int | None = None) -> Callable[[bytes], tuple[bool, int]]:
    """A ``validate`` for :class:`SimSerialPort`: the image must parse as a sound module (CRC, layout) and, with
    ``platform_id``, be for that platform. Flags are the failed checks' validity bits (0x02 integrity, 0x10
    platform), as Device OS reports them."""

    def validate(data: bytes) -> tuple[bool, int]:
        try:
            module = parse_module(data)
        except NotAModuleError:
            return False, 0x02
        flags = 0x02 if module.problems or not module.crc_ok else 0
        if platform_id is not None and module.platform_id != platform_id:
            flags |= 0x10
        return not flags, flags

    return validate


def _ymodem_refused(version: str) -> bool:
    try:
        return DeviceOsVersion.parse(version.split()[0]).major >= 6
    except (VersionError, IndexError):
        return False  # an unknown version string: behave like the older firmware


def line_speed(fd: int) -> int | None:
    """The baud rate set on the tty ``fd`` (a pty master answers for its slave), or None if unknown."""
    try:
        raw = fcntl.ioctl(fd, TCGETS2, bytes(_TERMIOS2.size))
        return _TERMIOS2.unpack(raw)[-1]
    except OSError:
        pass
    try:
        return _SPEEDS.get(termios.tcgetattr(fd)[5])
    except termios.error:
        return None


@dataclass
class _Damage:
    drop: bool
    xor: int


class _Receiver:
    """Device OS's YModem receive loop (system_ymodem.cpp), fed one byte at a time."""

    def __init__(self, port: SimSerialPort):
        self.port = port
        self.packets = 0  # packets_received of the current file
        self.errors = 0
        self.packet = bytearray()
        self.packet_size = 0
        self.after_ca = False
        self.name = ""
        self.size = 0
        self.data = bytearray()
        self.last_byte_at = port.clock.now()

    def feed(self, byte: int) -> None:
        self.last_byte_at = self.port.clock.now()
        if self.packet:
            self.packet.append(byte)
            if len(self.packet) == self.packet_size:
                self._packet()
            return
        if self.after_ca:
            self.after_ca = False
            if byte == CA:  # the sender cancelled
                self.port.send(bytes([ACK]))
                self.port.end_transfer("Failed to receive the file!")
            else:
                self.error()
            return
        if byte in (SOH, STX):
            self.packet = bytearray([byte])
            self.packet_size = (128 if byte == SOH else 1024) + 5
        elif byte == EOT:
            self.errors = 0
            self.packets = 0  # the next block 0 is a new file's header, or the empty header closing the batch
            self.port.send(bytes([ACK]))
        elif byte == CA:
            self.after_ca = True
        elif byte in b"aA":
            self.port.send(bytes([CA, CA]))
            self.port.end_transfer("Aborted by user.")
        elif byte == 0x20:
            self.port.send(bytes([ACK]))  # a space is acknowledged and ignored
        else:
            self.error()

    def timed_out(self) -> None:
        self.packet = bytearray()  # a partial block is lost
        self.after_ca = False
        self.last_byte_at = self.port.clock.now()
        self.error()

    def error(self) -> None:
        self.errors += 1
        if self.errors > MAX_ERRORS:
            self.port.send(bytes([CA, CA]))
            self.port.end_transfer("Failed to receive the file!")
        else:
            self.port.send(bytes([CRC_REQUEST]))

    def _packet(self) -> None:
        packet, self.packet = bytes(self.packet), bytearray()
        seq, complement, payload = packet[1], packet[2], packet[3:-2]
        if seq != complement ^ 0xFF:
            self.error()
            return
        self.errors = 0
        if seq != self.packets & 0xFF:
            self.port.send(bytes([NAK]))  # also a repeat of the block just taken: the device expects the next
            return
        if self.packets == 0 and payload[0]:
            self._header(payload)
        elif self.packets == 0:
            self.port.busy_for(VALIDATE_S, self._close_batch)
        else:
            if len(self.data) >= self.port.max_file_size:  # this block would start past the end of the slot
                self.port.send(bytes([CA, CA]))
                self.port.end_transfer("Failed to save chunk!")
                return
            self.data += payload  # the whole block goes to flash, padding too; the size cuts it later
            self.packets += 1
            self.port.busy_for(len(payload) / 1024 * self.port.write_s_per_kib, lambda: self.port.send(bytes([ACK])))

    def _header(self, payload: bytes) -> None:
        name, _, rest = payload.partition(b"\x00")
        size_text = rest.split(b" ", 1)[0][:16]
        digits = size_text[: len(size_text) - len(size_text.lstrip(b"0123456789"))] or b"0"
        self.name = name[:256].decode("ascii", "replace")
        self.size = int(digits)
        if self.size > self.port.max_file_size:
            self.port.send(bytes([CA, CA]))
            self.port.end_transfer("The file size is higher than the allowed space memory!")
            return
        self.data = bytearray()
        self.packets += 1
        self.port.send(bytes([ACK, CRC_REQUEST]))

    def _close_batch(self) -> None:
        image = bytes(self.data[: self.size])
        ok, flags = self.port.validate(image)
        if not ok:
            self.port.send(bytes([CA, CA]))
            self.port.end_transfer(f"Validation failed: 0x{flags:x}")
            return
        self.port.send(bytes([ACK]))
        self.port.end_transfer(f"\r\n{SUCCESS_TEXT}\r\nName: {self.name}\r\nSize: {self.size} bytes")
        self.port.later(SUCCESS_RESET_DELAY_S, lambda: self.port.received(image))


class SimSerialPort:
    """One simulated device's USB serial port (see the module docstring).

    ``on_baud(baud)`` runs when the kiosk changes the line's baud rate, ``on_exit()`` on the console's ``x``,
    ``validate(data) -> (ok, flags)`` judges a received image (default: :func:`module_validator`), and
    ``on_received(data)`` gets an accepted image 1 s after the success message. All callbacks run with
    ``clock.lock`` held, on the port's thread or a timer: keep them short. Set :attr:`listening` (under the
    lock) while the device is in listening mode. ``close()`` (or ``with``) stops the thread and closes the pty.
    """

    def __init__(
        self,
        clock: Clock,
        provider: SerialProvider,
        *,
        on_baud: Callable[[int], None] | None = None,
        on_exit: Callable[[], None] | None = None,
        validate: Callable[[bytes], tuple[bool, int]] | None = None,
        on_received: Callable[[bytes], None] | None = None,
        max_file_size: int = MAX_FILE_SIZE,
        write_s_per_kib: float = WRITE_S_PER_KIB,
    ):
        self.clock = clock
        # The simulator's one lock (VirtualClock.lock); a RealClock has none, so the port brings its own.
        self.lock = getattr(clock, "lock", None) or threading.RLock()
        self.provider = provider
        self.on_baud = on_baud
        self.on_exit = on_exit
        self.validate = validate or module_validator()
        self.on_received = on_received
        self.max_file_size = max_file_size
        self.write_s_per_kib = write_s_per_kib
        self.listening = False
        self.bytes_to_device = 0  # bytes the kiosk sent, counted before damage (offsets for damage())
        self.bytes_to_host = 0
        self.baud: int | None = CONSOLE_BAUD
        self.transcript: list[str] = []  # what ended each transfer ("Aborted by user.", ...)
        self.failure: BaseException | None = None  # an exception that escaped a step (a provider bug)
        self._damage: dict[str, dict[int, _Damage]] = {"to_device": {}, "to_host": {}}
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._rx: _Receiver | None = None
        self._busy = False
        self._timers: list = []
        self._last_activity = clock.now()
        self._closed = False
        self._master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        # Raw and at 9600 from the start: a cooked slave would echo what the device writes before anyone opens it.
        tty.setraw(self._slave)
        attrs = termios.tcgetattr(self._slave)
        attrs[4] = attrs[5] = termios.B9600
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        os.set_blocking(self._master, False)
        self._stop = clock.event()  # set by close() and by the kiosk's acts on the port: the thread looks now
        self._unlisten = listen_for_host_activity(self.path, self._stop.set)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-serial {self.path}", daemon=True)
        self._thread.start()
        if not self._started.wait(5.0):  # thread start-up, not device time
            self.close()
            raise RuntimeError("the simulated serial port's thread did not start")

    def __enter__(self) -> SimSerialPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread, cancel pending device work and close both ends of the pty (idempotent)."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            for timer in self._timers:
                timer.cancel()
            self._stop.set()
        self._unlisten()
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the flaky cable --
    def damage(self, direction: str, offset: int, *, drop: bool = False, xor: int = 0) -> None:
        """Drop (``drop``) or corrupt (XOR with ``xor``) byte number ``offset`` (0-based, counted since the port was
        made) travelling ``direction`` "to_device" or "to_host"; see :attr:`bytes_to_device`/:attr:`bytes_to_host`.
        """
        if not drop and not xor:
            raise ValueError("damage needs drop=True or a non-zero xor")
        with self.lock:
            self._damage[direction][offset] = _Damage(drop, xor)

    def _pass(self, direction: str, data: bytes, start: int) -> bytes:
        faults = self._damage[direction]
        if not faults:
            return data
        out = bytearray()
        for i, byte in enumerate(data):
            fault = faults.pop(start + i, None)
            if fault is None:
                out.append(byte)
            elif not fault.drop:
                out.append(byte ^ fault.xor)
        return bytes(out)

    # -- called by the receiver and timers (under the lock) --
    def send(self, data: bytes) -> None:
        """Queue bytes for the kiosk (sent now if the pty takes them, else on the next tick)."""
        passed = self._pass("to_host", data, self.bytes_to_host)
        self.bytes_to_host += len(data)
        self._outbox += passed
        self._flush()

    def println(self, text: str) -> None:
        self.send(text.encode() + b"\r\n")

    def busy_for(self, seconds: float, then: Callable[[], None]) -> None:
        """The device is busy (reads nothing) for ``seconds`` of device time, then runs ``then``, unless the
        transfer it was busy for has gone meanwhile (the device left listening mode)."""
        self._busy = True
        transfer = self._rx

        def done() -> None:
            self._busy = False
            if self._rx is not transfer:
                return
            if transfer is not None:
                transfer.last_byte_at = self.clock.now()  # its byte timeout restarts when it reads again
            then()

        self.later(seconds, done)

    def later(self, seconds: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``seconds`` of device time, under the lock, unless the port has been closed."""

        def fire() -> None:
            with self.lock:
                if not self._closed:
                    fn()

        self._timers.append(self.clock.call_later(seconds, fire))

    def end_transfer(self, message: str) -> None:
        """The receive loop returns: print ``message`` and go back to the console."""
        self.println(message)
        self.transcript.append(message.strip())
        self._rx = None

    def received(self, image: bytes) -> None:
        if self.on_received is not None:
            self.on_received(image)

    # -- the thread --
    def _run(self) -> None:
        with self.clock.actor():
            self._started.set()
            tick = ACTIVE_TICK_S
            while True:
                with self.lock:
                    if self._closed:
                        break
                    try:
                        self._step()
                    except Exception as exc:  # a provider or callback bug: keep the port alive, keep the error
                        log.exception("simulated serial port %s", self.path)
                        self.failure = exc
                    active = (self.clock.now() - self._last_activity < ACTIVE_FOR_S or self._busy or self._rx
                              or self._outbox)  # fmt: skip
                tick = ACTIVE_TICK_S if active else min(tick * 2, IDLE_TICK_S)
                try:
                    self.clock.sleep(tick, self._stop, background=True)  # a look at the line: no reason for time
                except Cancelled:  # closed, or the kiosk opened, wrote to, re-rated or closed the port
                    with self.lock:
                        if self._closed:
                            break
                        self._stop.clear()
                        self._last_activity = self.clock.now()
                    tick = ACTIVE_TICK_S

    def _step(self) -> None:
        baud = line_speed(self._master)
        if baud is not None and baud != self.baud:
            self.baud = baud
            self._last_activity = self.clock.now()
            if self.on_baud is not None:
                self.on_baud(baud)
        self._read()
        if self._rx is not None and not self.listening:
            self._rx = None  # the device left listening mode (reset, DFU): the transfer is gone with it
        while self._inbox and not self._busy:
            byte = self._inbox.pop(0)
            if self._rx is not None:
                self._rx.feed(byte)
            elif self.listening:
                self._console(byte)
        if self._rx is not None and not self._busy and self.clock.now() - self._rx.last_byte_at >= NAK_TIMEOUT_S:
            self._rx.timed_out()
        self._flush()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EIO: nobody else has the slave open (cannot happen while we hold it, but harmless)
            if not data:
                return
            self._last_activity = self.clock.now()
            self._inbox += self._pass("to_device", data, self.bytes_to_device)
            self.bytes_to_device += len(data)

    def _flush(self) -> None:
        while self._outbox and not self._closed:
            try:
                written = os.write(self._master, self._outbox)
            except (BlockingIOError, InterruptedError):
                return  # the kiosk is not reading: the rest goes on a later tick
            except OSError:
                self._outbox.clear()
                return
            del self._outbox[:written]

    # -- the console --
    def _console(self, byte: int) -> None:
        p = self.provider
        letter = chr(byte)
        if letter == "f" or (byte in (SOH, STX) and not _ymodem_refused(p.system_version())):
            self._start_transfer(byte)
            return
        answers: dict[str, Callable[[], str]] = {
            "i": self._identify,
            "v": lambda: f"system firmware version: {p.system_version()}\n\r\n",
            "m": lambda: f"Your device MAC address is\r\n{p.mac_address()}\r\n",
            "c": lambda: f"Device claimed: {'yes' if p.claimed() else 'no'}\r\n",
            "s": lambda: _as_json(p.system_info()) + "\r\n",
        }
        if letter in answers:
            self.send(answers[letter]().encode())
        elif letter == "x":
            self.listening = False
            if self.on_exit is not None:
                self.on_exit()
        # anything else: Device OS ignores it

    def _identify(self) -> str:
        p = self.provider
        values = p.identity_values()
        if not values:
            return f"Your device id is {p.device_id()}\r\n"
        lines = [f"Device ID: {p.device_id()}"] + [f"{IDENTIFY_LABELS_HEAD.get(k, k)}: {v}" for k, v in values]
        return "".join(line + "\r\n" for line in lines)

    def _start_transfer(self, byte: int) -> None:
        if byte in (SOH, STX):  # handle_peek: a raw block starts the receive without the prompt
            self._rx = _Receiver(self)
            self._rx.feed(byte)
            return
        self.println(PARTICLE_PROMPT)
        if _ymodem_refused(self.provider.system_version()):

            def refuse() -> None:
                self.send(bytes([CA] * 4))
                self.println(REFUSED_TEXT)
                self.transcript.append(REFUSED_TEXT)

            self.busy_for(REFUSAL_DELAY_S, refuse)  # the f handler's delay: the console reads nothing meanwhile
            return
        self._rx = _Receiver(self)


class MasterPort:
    """The master end of a pseudo-terminal as a pyserial-like port (for lrzsz interop tests and benchmarks).

    A reader thread drains the master as bytes arrive (real time: use it with ``RealClock`` only), because a
    receiver that exits right after its last ACK flushes its tty (lrzsz does ``tcflush(TCIOFLUSH)``), and on a
    pty that throws away whatever the master has not read yet.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self.port = f"pty master {fd}"
        self._buf = bytearray()
        self._hung_up = False
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._pump, name=self.port, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            ready, _, _ = select.select([self.fd, self._stop_r], [], [], 1.0)
            if self._stop_r in ready:
                return
            if self.fd in ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    self._hung_up = True  # the slave's last user closed it (the receiver exited)
                    return
                with self._lock:
                    self._buf += data

    @property
    def in_waiting(self) -> int:
        """Bytes ready; raises EIO like an unplugged port once the other end has closed and all is read."""
        with self._lock:
            if not self._buf and self._hung_up:
                raise OSError(errno.EIO, "the other end of the pseudo-terminal closed")
            return len(self._buf)

    def read(self, size: int = 1) -> bytes:
        with self._lock:
            out = bytes(self._buf[:size])
            del self._buf[:size]
            return out

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)

    def close(self) -> None:
        """Stop the reader thread (the fd stays open: it belongs to whoever made the pty)."""
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")
            self._thread.join(5.0)
            for fd in (self._stop_r, self._stop_w):
                os.close(fd)
            self._stop_w = -1
