"""The YModem sender: block format, flashing the simulated device over its pseudo-terminal (validated, rejected,
resent after a flaky cable, aborted, refused), and interop with lrzsz's receiver."""

from __future__ import annotations

import os
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from firmware.builder import build_module
from firmware.platforms import Function
from hw.clock import Cancelled, RealClock, VirtualClock
from hw.serial_console import ListeningConsole
from hw.sim.serial_device import MasterPort, SimSerialPort, module_validator
from hw.ymodem import (
    PARTICLE_PROMPT,
    YModemError,
    YModemRefused,
    YModemRejected,
    block,
    crc16_xmodem,
    header_block,
    send_ymodem,
)
from tests.test_serial_console import FakeDevice

BLOCK = 1029  # STX, seq, ~seq, 1024 data, CRC-16
HEADER = 133  # SOH block 0
#: lrzsz's YModem receiver under the names distributions give it (Debian's package lrzsz installs rb).
RECEIVERS = (("rb", []), ("lrb", []), ("rz", ["--ymodem"]), ("lrz", ["--ymodem"]))
RECEIVER = next(((shutil.which(name), args) for name, args in RECEIVERS if shutil.which(name)), None)


def _module(size: int = 60_000, platform_id: int = 13) -> bytes:
    return build_module(platform_id=platform_id, function=Function.USER_PART, version=6, body_size=size)


@pytest.fixture
def device():
    clock = VirtualClock()
    received: list[bytes] = []
    port = SimSerialPort(clock, FakeDevice(), validate=module_validator(13), on_received=received.append)
    with clock.actor(), port:
        port.listening = True
        yield SimpleNamespace(clock=clock, port=port, received=received)


def _first_block_offset(device) -> int:
    """Where block 1 starts in the bytes to the device, for a transfer that starts now ('f', then the header)."""
    return device.port.bytes_to_device + 1 + HEADER


def _first_ack_offset(device) -> int:
    """Where the ACK of block 1 is in the bytes to the kiosk (after the prompt line and the header's ACK + C)."""
    return device.port.bytes_to_host + len(PARTICLE_PROMPT) + 2 + 2


# --- the format ------------------------------------------------------------------------------------------


def test_block_format():
    assert crc16_xmodem(b"123456789") == 0x31C3  # the CRC-16/XMODEM check value
    data = block(1, b"\x01" * 1000, 1024)
    assert data[:3] == b"\x02\x01\xfe" and len(data) == BLOCK
    assert data[3 + 1000 : -2] == b"\x1a" * 24 and data[-2:] == crc16_xmodem(data[3:-2]).to_bytes(2, "big")
    assert block(256, b"", 128)[1:3] == b"\x00\xff"  # seq wraps at 256
    header = header_block("binary", 12345)
    assert header[:3] == b"\x01\x00\xff" and header[3:16] == b"binary\x0012345 " and header[16:-2] == bytes(115)
    assert header_block("", None)[3:6] == b"\x000 "  # the empty header that closes the batch
    assert header_block("x" * 200, 1)[0] == 0x02  # a long name needs a 1024-byte header


def test_bad_arguments():
    with pytest.raises(ValueError, match="handshake"):
        send_ymodem("/dev/null", b"", "binary", VirtualClock(), handshake="zmodem")
    with pytest.raises(ValueError, match="block_size"):
        send_ymodem("/dev/null", b"", "binary", VirtualClock(), block_size=512)
    with pytest.raises(ValueError, match="file name"):
        send_ymodem("/dev/null", b"", "a\x00b", VirtualClock())


# --- the simulated device -----------------------------------------------------------------------------------


def test_module_arrives_byte_identical_and_is_validated(device):
    data = _module()
    progress = []
    result = send_ymodem(device.port.path, data, "binary", device.clock, progress=lambda s, t: progress.append((s, t)))
    assert result.validated is True and result.closed
    assert result.answer == f"Downloaded file successfully!\r\nName: binary\r\nSize: {len(data)} bytes"
    assert (result.bytes, result.blocks, result.retransmissions) == (len(data), -(-len(data) // 1024), 0)
    assert progress[-1] == (len(data), len(data)) and progress == sorted(progress)
    assert 0 < result.seconds < 5 and result.bytes_per_second > 10_000
    assert device.received == []  # the device applies it 1 s after its message
    device.clock.sleep(1.5)
    assert device.received == [data]


def test_128_byte_blocks(device):
    data = _module(5_000)
    result = send_ymodem(device.port.path, data, "binary", device.clock, block_size=128)
    assert result.validated and result.blocks == -(-len(data) // 128)
    device.clock.sleep(1.5)
    assert device.received == [data]


def test_a_bad_crc_module_is_refused_with_the_devices_answer(device):
    data = bytearray(_module())
    data[-1] ^= 0xFF  # the module's CRC-32
    with pytest.raises(YModemRejected) as err:
        send_ymodem(device.port.path, bytes(data), "binary", device.clock)
    assert err.value.flags == 0x2 and err.value.answer == "Validation failed: 0x2"
    wrong_platform = _module(platform_id=12)
    with pytest.raises(YModemRejected, match="Validation failed: 0x10"):
        send_ymodem(device.port.path, wrong_platform, "binary", device.clock)
    device.clock.sleep(1.5)
    assert device.received == []


def test_a_corrupted_sequence_byte_is_resent(device):
    data = _module()
    # ~seq of block 3: the device answers a bad block with 'C' and the sender sends it again
    device.port.damage("to_device", _first_block_offset(device) + 2 * BLOCK + 2, xor=0x01)
    result = send_ymodem(device.port.path, data, "binary", device.clock)
    assert result.retransmissions == 1 and result.validated
    device.clock.sleep(1.5)
    assert device.received == [data]


def test_a_lost_byte_is_resent_after_the_devices_timeout(device):
    data = _module()
    device.port.damage("to_device", _first_block_offset(device) + 500, drop=True)  # inside block 1
    result = send_ymodem(device.port.path, data, "binary", device.clock)
    assert result.retransmissions == 1 and result.validated and result.seconds > 5  # the device waited 5 s
    device.clock.sleep(1.5)
    assert device.received == [data]


def test_a_lost_ack_is_recovered_from_the_devices_nak(device):
    data = _module()
    # The ACK of block 2 never arrives: the device times out ('C'), gets block 2 again and NAKs it, which
    # from a Particle device means "I have that one": the sender goes on with block 3.
    device.port.damage("to_host", _first_ack_offset(device) + 1, drop=True)
    result = send_ymodem(device.port.path, data, "binary", device.clock)
    assert result.retransmissions == 1 and result.validated
    device.clock.sleep(1.5)
    assert device.received == [data]


def test_a_corrupted_data_byte_passes_the_device_but_not_its_validation(device):
    # Device OS checks no block CRC: the image check at the end is what catches it.
    device.port.damage("to_device", _first_block_offset(device) + 3 + 700, xor=0x20)
    with pytest.raises(YModemRejected, match="Validation failed"):
        send_ymodem(device.port.path, _module(), "binary", device.clock)


def test_too_many_errors_and_the_device_gives_up(device):
    start = _first_block_offset(device)
    for k in range(6):  # every send of block 1 arrives with a bad ~seq
        device.port.damage("to_device", start + k * BLOCK + 2, xor=0x01)
    with pytest.raises(YModemError, match="Failed to receive the file!"):
        send_ymodem(device.port.path, _module(), "binary", device.clock)
    assert device.port.transcript[-1] == "Failed to receive the file!"


def test_cancel_aborts_the_device(device):
    cancel = device.clock.event()

    def progress(sent: int, total: int) -> None:
        if sent >= 10_000:
            cancel.set()

    with pytest.raises(Cancelled):
        send_ymodem(device.port.path, _module(), "binary", device.clock, progress=progress, cancel=cancel)
    device.clock.sleep(1.5)
    assert device.port.transcript[-1] == "Aborted by user." and device.received == []
    with ListeningConsole(device.port.path, device.clock) as console:  # back at the console
        assert console.version().version == "5.9.0"


def test_a_file_too_large_for_the_device(device):
    device.port.max_file_size = 10_000
    with pytest.raises(YModemError, match="higher than the allowed space"):
        send_ymodem(device.port.path, _module(), "binary", device.clock)


def test_no_listening_mode_no_transfer(device):
    device.port.listening = False
    start = device.clock.now()
    with pytest.raises(YModemError, match="Timed out waiting for initial response"):
        send_ymodem(device.port.path, _module(), "binary", device.clock)
    assert 10.0 <= device.clock.now() - start < 10.5


def test_refusal_is_not_mistaken_for_a_ready_prompt(device):
    device.port.provider.version = "6.0.0"
    before = device.port.bytes_to_device
    with pytest.raises(YModemRefused, match="no longer supported"):
        send_ymodem(device.port.path, _module(), "binary", device.clock)
    assert device.port.bytes_to_device == before + 1  # only the 'f': no header went to the console
    with ListeningConsole(device.port.path, device.clock) as console:
        assert console.claimed() is True


# --- a plain receiver that behaves like lrzsz's rb --------------------------------------------------------


class RbLikeReceiver:
    """A scripted plain YModem receiver on the virtual clock, with rb's timing: its first 'C' after 1 s, NAK to
    the first EOT, 'C' 1 s after the second, and a re-request 10 s after a closing header it lost (rb flushes
    its input right after its 'C', so a header that arrives at once is gone). It hangs up after its last ACK."""

    def __init__(self, clock: VirtualClock, lose_closing_headers: int):
        self.clock = clock
        self.lose_closing_headers = lose_closing_headers
        self.closing_headers = 0
        self.file = bytearray()
        self.size: int | None = None
        self.eots = 0
        self.hung_up = False
        self._inbox = bytearray()
        self._outbox: list[tuple[float, bytes]] = [(clock.now() + 1.0, b"C")]

    def _say(self, data: bytes, after: float = 0.0) -> None:
        self._outbox.append((self.clock.now() + after, data))

    def _ready(self) -> bytes:
        now = self.clock.now()
        return b"".join(data for at, data in self._outbox if at <= now)

    @property
    def in_waiting(self) -> int:
        waiting = len(self._ready())
        if not waiting and self.hung_up:
            raise OSError(5, "the receiver hung up")
        return waiting

    def read(self, size: int = 1) -> bytes:
        now = self.clock.now()
        out = self._ready()[:size]
        self._outbox = [(at, data) for at, data in self._outbox if at > now]
        return out

    def write(self, data: bytes) -> int:
        self._inbox += data
        while self._inbox:
            kind = self._inbox[0]
            if kind == 0x04:  # EOT
                del self._inbox[:1]
                self.eots += 1
                if self.eots == 1:
                    self._say(b"\x15")
                else:
                    self._say(b"\x06")
                    self._say(b"C", after=1.0)
                continue
            size = {0x01: 128, 0x02: 1024}[kind] + 5
            if len(self._inbox) < size:
                break
            packet, self._inbox = bytes(self._inbox[:size]), self._inbox[size:]
            payload = packet[3:-2]
            if packet[1] == 0 and self.size is None:  # the file's header
                self.size = int(payload.split(b"\x00")[1].split(b" ")[0])
                self._say(b"\x06C")
            elif packet[1] == 0:  # the closing header
                self.closing_headers += 1
                if self.closing_headers <= self.lose_closing_headers:
                    self._say(b"C", after=10.0)
                else:
                    self._say(b"\x06")
                    self.hung_up = True
            else:
                self.file += payload
                self._say(b"\x06")
        return len(data)

    def close(self) -> None:
        pass


def test_a_plain_receiver_that_lost_the_closing_header_gets_it_again():
    clock = VirtualClock()
    data = os.urandom(5_000)
    receiver = RbLikeReceiver(clock, lose_closing_headers=1)
    with clock.actor():
        start = clock.now()
        result = send_ymodem(receiver, data, "module.bin", clock, handshake="plain")
        seconds = clock.now() - start
    assert receiver.closing_headers == 2 and result.closed is True
    assert bytes(receiver.file[: receiver.size]) == data
    assert 12.0 <= seconds < 12.5  # 1 s to the first C, 1 s to the closing C, 10 s to rb's re-request


def test_a_plain_receiver_that_hangs_up_after_the_closing_header_ends_the_transfer_at_once():
    clock = VirtualClock()
    receiver = RbLikeReceiver(clock, lose_closing_headers=0)
    with clock.actor():
        start = clock.now()
        result = send_ymodem(receiver, b"x" * 3000, "module.bin", clock, handshake="plain")
        assert clock.now() - start < 2.5
    assert result.blocks == 3 and receiver.closing_headers == 1


# --- lrzsz ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    RECEIVER is None, reason="lrzsz is not installed (Debian package 'lrzsz': apt-get install lrzsz; binary rb)"
)
def test_interop_with_lrzsz_receiver(tmp_path):
    program, args = RECEIVER
    data = os.urandom(70_037)  # not a multiple of any block size
    master, slave = os.openpty()
    receiver = subprocess.Popen([program, "-q", *args], stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=tmp_path)
    os.close(slave)  # rb holds the slave: when it exits the master sees the hang-up
    port = MasterPort(master)
    try:
        result = send_ymodem(port, data, "module.bin", RealClock(), handshake="plain", response_timeout=10)
        # rb flushes its input after each answer: a block that arrives at once is lost, and on a loaded machine
        # that costs rb's timeouts (6 s for a block, 10 s for the closing header) before it asks again.
        assert receiver.wait(60) == 0, receiver.stderr.read()
    finally:
        port.close()
        os.close(master)
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
        receiver.stderr.close()
    assert (tmp_path / "module.bin").read_bytes() == data
    assert result.blocks == 69 and result.validated is None  # rb judges nothing; on a loaded machine it may NAK
