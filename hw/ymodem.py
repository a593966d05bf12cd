"""The YModem sender: flash a module over a Particle device's serial port (Device OS <= 5.9), or send a file to
any YModem receiver (lrzsz's ``rb``).

Facts: ../shared/reference/usb-serial-protocols.md section 4. One file per batch:

1. Handshake. ``particle``: write ``f``; the device is ready when the first byte back is ``C`` or a whole line
   reads ``Waiting for the binary file to be sent ... (press 'a' to abort)`` (10 s). Device OS >= 6.0.0 prints
   that same line, then four CA and ``Serial/YModem flashing is no longer supported`` 100 ms later, so the
   sender listens 0.25 s more before it starts (:class:`YModemRefused`). ``plain``: wait for the receiver's ``C``.
2. Header block 0: ``name NUL size SPACE``, zero padded (128 bytes). The receiver answers ACK then ``C``.
3. Data blocks 1, 2, ...: STX with 1024 bytes (SOH with 128 for a tail of 128 bytes or less), ``seq``, ``~seq``,
   data, CRC-16/XMODEM (big-endian). The last block is padded with 0x1A (CPMEOF, the YModem convention; see
   :data:`PAD`). NAK, ``C`` or silence -> the block is sent again, at most ``max_retries`` times.
4. EOT until ACKed: a Particle device ACKs the first one, lrzsz NAKs it and ACKs the second.
5. The empty header closes the batch. A Particle device then validates the image: ACK and
   ``Downloaded file successfully!`` or CA CA and ``Validation failed: 0x..`` (:class:`YModemRejected`).

On cancel or error the sender aborts the receiver (``a`` for a Particle device, CA CA for others) and raises.
Every wait goes through the clock; reads never block (see ``hw.serial_console.SerialLink``).

    >>> block(1, b"hi", 128)[:5], len(block(1, b"hi", 128)), block(1, b"hi", 128)[-2:].hex()
    (b'\\x01\\x01\\xfehi', 133, '0b33')
"""

from __future__ import annotations

import binascii
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from hw.clock import Clock, ClockEvent
from hw.serial_console import (
    CONSOLE_BAUD,
    MAX_REPLY,
    SILENCE_S,
    SerialError,
    SerialLike,
    SerialLink,
    SerialPortError,
    shorten,
)

SOH, STX, EOT, ACK, NAK, CA, CRC_REQUEST = 0x01, 0x02, 0x04, 0x06, 0x15, 0x18, 0x43
#: Padding of the last data block. Both receivers that matter cut the file at the header's size: lrzsz writes
#: exactly ``size`` bytes, and a Particle device validates the module by its own length and CRC (the padding it
#: writes past the end lands in unused flash), so the byte is free. 0x1A is what the YModem spec and lrzsz use;
#: the legacy Particle CLI used 0x00, which the device treats the same way.
PAD = 0x1A
PARTICLE_PROMPT = "Waiting for the binary file to be sent ... (press 'a' to abort)"
REFUSED_TEXT = "Serial/YModem flashing is no longer supported"
SUCCESS_TEXT = "Downloaded file successfully!"
HANDSHAKE_TIMEOUT_S = 10.0  # the CLI's initial timeout (a Xenon took about 6 s)
REFUSAL_WINDOW_S = 0.25  # Device OS 6 sends its four CA 100 ms after the prompt
#: Seconds to wait for a block's answer. The CLI's 70 s: NCP firmware chunks take long. It must stay above the
#: device's own 5 s byte timeout, or a late answer is taken for the answer to a resent block.
RESPONSE_TIMEOUT_S = 70.0
#: How long a plain receiver may stay silent after the closing header (see _Sender.close_batch). lrzsz's rb
#: flushes its input right after it writes its 'C', so a header sent at once can be destroyed; rb then asks again
#: 10 s later (its default timeout). The window outlasts that: a receiver that got the header and exited ends
#: the wait at once on a pty (the port hangs up), and on a UART rb's ACK arrives (it drains before it flushes).
CLOSE_TIMEOUT_S = 15.0
MAX_RETRIES = 10  # sends of one block beyond the first, before giving up
MAX_NAME = 255  # bytes; the device keeps at most 256 with the NUL
POLL_S = 0.005
_VALIDATION_FAILED = re.compile(r"Validation failed: 0x([0-9A-Fa-f]+)")


class YModemError(SerialError):
    """The transfer failed; ``answer`` is what the receiver said, if anything (shortened)."""

    def __init__(self, message: str, answer: str | None = None):
        self.answer = shorten(answer) if answer else None
        super().__init__(message + (f"; the receiver said {self.answer!r}" if self.answer else ""))


class YModemRefused(YModemError):
    """Device OS >= 6.0.0 no longer takes YModem (four CA and ``Serial/YModem flashing is no longer supported``):
    flash over DFU or control requests instead."""


class YModemRejected(YModemError):
    """The device received the whole file and found it invalid (CA CA, ``Validation failed: 0x<flags>``)."""

    def __init__(self, message: str, answer: str | None, flags: int | None):
        self.flags = flags
        super().__init__(message, answer)


@dataclass(frozen=True)
class _Style:
    """How one kind of receiver behaves, where YModem receivers differ."""

    send_f: bool  # start with the listening-mode command ``f``
    c_after_eot: bool  # the receiver asks for the closing header with ``C``
    nak_after_resend_means_held: bool  # a NAK to a resent block means "I have it" (the device NAKs duplicates)
    validates: bool  # the receiver answers the closing header with its verdict on the image
    abort: bytes


#: Particle's receiver (system_ymodem.cpp) NAKs only a block whose sequence number is not the one it expects, and
#: a well-formed repeat of the block it just took is exactly that: so when its ACK got lost and the block went
#: again, the NAK says the block arrived. lrzsz ACKs a repeated block instead.
STYLES = {
    "particle": _Style(send_f=True, c_after_eot=False, nak_after_resend_means_held=True, validates=True, abort=b"a"),
    "plain": _Style(
        send_f=False, c_after_eot=True, nak_after_resend_means_held=False, validates=False, abort=bytes([CA] * 5)
    ),
}


@dataclass(frozen=True)
class YModemResult:
    """A finished transfer: ``bytes`` of file, ``seconds`` by the clock, data ``blocks`` (not counting repeats),
    ``retransmissions`` (blocks sent again), ``answer`` (the device's closing text, e.g. ``Downloaded file
    successfully!...``) and ``validated`` (True when the device accepted the image; None for a receiver that
    does not judge it). ``closed`` is False when the receiver did not acknowledge the closing header (the file
    had arrived whole by then: see ``_Sender.close_batch``)."""

    name: str
    bytes: int
    seconds: float
    blocks: int
    retransmissions: int
    answer: str | None = None
    validated: bool | None = None
    closed: bool = True

    @property
    def bytes_per_second(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else float("inf")


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, initial 0): ``crc16_xmodem(b"123456789") == 0x31C3``."""
    return binascii.crc_hqx(data, 0)


def block(seq: int, payload: bytes, size: int, pad: int = PAD) -> bytes:
    """One YModem block: SOH (128) or STX (1024), seq, ~seq, ``payload`` padded to ``size`` with ``pad``, then
    the CRC-16 big-endian."""
    if len(payload) > size:
        raise ValueError(f"{len(payload)} bytes do not fit a {size}-byte block")
    body = payload + bytes([pad]) * (size - len(payload))
    mark = STX if size == 1024 else SOH
    return bytes([mark, seq & 0xFF, 0xFF - (seq & 0xFF)]) + body + crc16_xmodem(body).to_bytes(2, "big")


def header_block(name: str, size: int | None) -> bytes:
    """Block 0: ``name NUL size SPACE`` zero padded; ``size`` None gives the empty header that ends the batch
    (the CLI's ``NUL "0" SPACE``)."""
    if size is None:
        return block(0, b"\x000 ", 128, pad=0)
    encoded = name.encode()
    payload = encoded + b"\x00" + str(size).encode() + b" "
    return block(0, payload, 128 if len(payload) <= 128 else 1024, pad=0)


class _Sender:
    def __init__(
        self, link: SerialLink, data: bytes, name: str, style: _Style, block_size: int, opts: dict, progress
    ) -> None:
        self.link = link
        self.clock = link.clock
        self.data = data
        self.name = name
        self.style = style
        self.block_size = block_size
        self.response_timeout: float = opts["response_timeout"]
        self.handshake_timeout: float = opts["handshake_timeout"]
        self.max_retries: int = opts["max_retries"]
        self.progress: Callable[[int, int], None] | None = progress
        self.retransmissions = 0

    # -- reading answers --
    def _text_after(self, window: float = SILENCE_S) -> str:
        """What the receiver prints now (until it is quiet), as text."""
        more = self.link.collect(window, window, limit=4096)
        text = (bytes(self.link.pending) + more).decode("ascii", "backslashreplace")
        self.link.pending.clear()
        return text.replace("\x18", "").strip()

    def _answer(self, timeout: float) -> int | None:
        """The next control byte (ACK, NAK, ``C`` or CA for a CA CA cancel), skipping anything else; None when
        ``timeout`` passes first."""
        deadline = self.clock.now() + timeout
        while True:
            byte = self.link.read_byte(max(0.0, deadline - self.clock.now()))
            if byte is None:
                return None
            if byte in (ACK, NAK, CRC_REQUEST):
                return byte
            if byte == CA:
                second = self.link.read_byte(1.0)
                if second == CA:
                    return CA
                if second is not None:
                    self.link.pending.insert(0, second)
            if self.clock.now() >= deadline:
                return None  # a receiver that never stops sending other bytes has not answered either

    def _cancelled(self, what: str) -> YModemError:
        text = self._text_after()
        if REFUSED_TEXT in text:
            return YModemRefused("the device refuses YModem (Device OS 6.0.0 or later): flash it over USB", text)
        failed = _VALIDATION_FAILED.search(text)
        if failed:
            return YModemRejected("the device rejected the image", text, int(failed.group(1), 16))
        return YModemError(f"the receiver cancelled the transfer {what}", text)

    # -- the steps --
    def handshake(self) -> None:
        if not self.style.send_f:
            # A 'C' already waiting is the receiver's request (lrzsz sends it at once): keep it.
            def asked() -> bool:
                if CRC_REQUEST in self.link.pending:
                    return True
                self.link.pending.clear()  # anything else is noise: never let it pile up (each check reads it all)
                return False

            if not self.link.wait(asked, self.handshake_timeout):
                raise YModemError(f"no 'C' from the receiver within {self.handshake_timeout:g} s")
            self.link.discard()  # a receiver repeats its 'C' while it waits: none of them answers a block
            return
        self.link.discard()  # stale console output must not be taken for the device's answer
        self.link.write(b"f")
        prompt = PARTICLE_PROMPT.encode()

        def answered() -> bool:
            pending = self.link.pending
            lines = pending.split(b"\n")[:-1]  # complete lines only
            return (pending[:1] == b"C") or CA in pending or any(line.rstrip(b"\r") == prompt for line in lines)

        def ready() -> bool:
            # Each check reads everything pending: a device that prints without end must not make that unbounded.
            return answered() or len(self.link.pending) > MAX_REPLY

        if not self.link.wait(ready, self.handshake_timeout) or not answered():
            flooded = len(self.link.pending) > MAX_REPLY
            seen = self._text_after(0.0)
            if flooded:
                raise YModemError(
                    f"the device printed more than {MAX_REPLY} bytes but no YModem prompt: it is not waiting for a "
                    "file (a device printing a log?)",
                    seen,
                )
            raise YModemError(
                f"Timed out waiting for initial response from device ({self.handshake_timeout:g} s): is it in "
                "listening mode (blinking blue) on Device OS <= 5.9?",
                seen,
            )
        pending = self.link.pending
        if pending[:1] == b"C":
            del pending[:1]
            return
        if CA not in pending:
            del pending[: pending.index(prompt) + len(prompt)]
            # Device OS 6 prints the same prompt and refuses 100 ms later: listen before sending anything.
            self.link.wait(lambda: CA in self.link.pending, REFUSAL_WINDOW_S)
        if CA in pending:
            raise self._cancelled("before it started")
        self.link.discard()

    def send_block(self, seq: int, packet: bytes, what: str) -> None:
        """Send ``packet`` until the receiver ACKs it (or, from a Particle device, NAKs a repeat of it)."""
        sends = 0
        while True:
            self.link.write(packet)
            sends += 1
            answer = self._answer(self.response_timeout)
            if answer == ACK:
                return
            if answer == CA:
                raise self._cancelled(f"at {what}")
            if answer == NAK and sends > 1 and self.style.nak_after_resend_means_held:
                return
            if sends > self.max_retries:
                reason = "no answer" if answer is None else f"answer 0x{answer:02x}"
                raise YModemError(f"{what} was not acknowledged after {sends} sends ({reason})")
            self.retransmissions += 1
            self.link.discard()  # a stale NAK or 'C' must not answer the repeat

    def header(self) -> None:
        self.send_block(0, header_block(self.name, len(self.data)), "the header block")
        # The receiver asks for the data with 'C' right after its ACK (a Particle device sends both at once).
        if self._answer(self.response_timeout) == CA:
            raise self._cancelled("after the header")

    def blocks(self) -> int:
        offset, seq = 0, 1
        while offset < len(self.data):
            left = len(self.data) - offset
            size = 1024 if self.block_size == 1024 and left > 128 else 128
            chunk = self.data[offset : offset + size]
            self.send_block(seq, block(seq, chunk, size), f"block {seq}")
            offset += len(chunk)
            seq += 1
            if self.progress is not None:
                self.progress(offset, len(self.data))
        return seq - 1

    def eot(self) -> None:
        for _ in range(self.max_retries + 1):
            self.link.write(bytes([EOT]))
            answer = self._answer(self.response_timeout)
            if answer == ACK:
                return
            if answer == CA:
                raise self._cancelled("at the end of the file")
            self.link.discard()  # lrzsz NAKs the first EOT on purpose; a Particle device may send 'C' on an error
        raise YModemError("the end of the file (EOT) was not acknowledged")

    def close_batch(self) -> tuple[str | None, bool | None, bool]:
        """Send the empty header: (the device's answer, its verdict, whether the header was acknowledged)."""
        if self.style.validates:
            # The device validates the image before it answers the closing header: that takes response time too.
            self.send_block(0, header_block("", None), "the closing header")
            answer = self._text_after()
            return answer, SUCCESS_TEXT in answer, True
        if self._answer(self.response_timeout) != CRC_REQUEST:
            raise YModemError("the receiver did not ask for the closing header")
        # The receiver has the whole file once it acknowledged the EOT. lrzsz's rb flushes its tty right after
        # its last ACK, and on a pty that can destroy the ACK before it is read (lrzsz's own sb then hangs): so a
        # receiver that hangs up or stays silent here ends the transfer, reported as not closed, rather than
        # failing it. One that asks again ('C' or NAK: it lost the header) gets it again.
        packet = header_block("", None)
        for _ in range(self.max_retries + 1):
            try:
                self.link.write(packet)
                answer = self._answer(CLOSE_TIMEOUT_S)  # the receiver's re-request interval, not the block timeout
            except SerialPortError:
                return None, None, False  # the receiver has gone: nothing left to close
            if answer in (ACK, None):
                return None, None, answer == ACK
            if answer == CA:
                raise self._cancelled("at the closing header")
            self.link.discard()
        raise YModemError("the closing header was not acknowledged")

    def abort(self) -> None:
        with contextlib.suppress(SerialError):  # a port that is gone has nothing left to abort
            self.link.write(self.style.abort)


def send_ymodem(
    port: str | SerialLike,
    data: bytes,
    name: str,
    clock: Clock,
    *,
    handshake: str = "particle",
    block_size: int = 1024,
    progress: Callable[[int, int], None] | None = None,
    cancel: ClockEvent | None = None,
    response_timeout: float = RESPONSE_TIMEOUT_S,
    handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
    max_retries: int = MAX_RETRIES,
    poll: float = POLL_S,
    baud: int = CONSOLE_BAUD,
) -> YModemResult:
    """Send ``data`` as file ``name`` over ``port`` (a path, opened at ``baud``, or an open pyserial-like port).

    ``handshake`` "particle" starts with the listening-mode ``f`` (the device must be listening: see
    ``hw.serial_console.trigger_listening``), "plain" waits for the receiver's ``C``. ``block_size`` 1024 or 128.
    ``progress(sent, total)`` is called after each acknowledged block. Setting ``cancel`` aborts the receiver and
    raises ``hw.clock.Cancelled``. Raises :class:`YModemRefused` (Device OS >= 6), :class:`YModemRejected` (the
    device found the image invalid) or :class:`YModemError`.
    """
    style = STYLES.get(handshake)
    if style is None:
        raise ValueError(f"handshake must be one of {sorted(STYLES)}, not {handshake!r}")
    if block_size not in (128, 1024):
        raise ValueError(f"block_size must be 128 or 1024, not {block_size}")
    encoded = name.encode()
    if not encoded or len(encoded) > MAX_NAME or b"\x00" in encoded:
        raise ValueError(f"the file name must be 1 to {MAX_NAME} bytes without NUL, not {name!r}")
    opts = {"response_timeout": response_timeout, "handshake_timeout": handshake_timeout, "max_retries": max_retries}
    link = SerialLink(port, clock, baud=baud, poll=poll, cancel=cancel)
    sender = _Sender(link, bytes(data), name, style, block_size, opts, progress)
    start = clock.now()
    try:
        sender.handshake()
        sender.header()
        blocks = sender.blocks()
        sender.eot()
        answer, validated, closed = sender.close_batch()
    except (YModemRefused, YModemRejected):
        raise  # the device ended the transfer itself and is back at its console: nothing to abort
    except BaseException:  # cancelled (hw.clock.Cancelled), an error, a failing progress callback
        sender.abort()
        raise
    finally:
        link.close()
    seconds = clock.now() - start
    return YModemResult(name, len(data), seconds, blocks, sender.retransmissions, answer, validated, closed)
