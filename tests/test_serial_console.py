"""The listening-mode console: reply parsers (cellular identity, secret redaction, garbled and cut-off replies),
port discovery, and the console and magic baud rates end to end on the simulated device's pseudo-terminal."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import serial

from firmware.platforms import Function
from hw.clock import VirtualClock
from hw.control import ModuleDependency
from hw.serial_console import (
    ConsoleError,
    ListeningConsole,
    SerialModule,
    SystemInfo,
    find_port,
    list_particle_ports,
    parse_claimed,
    parse_identify,
    parse_mac,
    parse_system_info,
    parse_version,
    redact,
    trigger_dfu,
    trigger_listening,
)
from hw.sim.serial_device import SimSerialPort, line_speed, system_info_json
from hw.ymodem import YModemRefused, send_ymodem

DEVICE_ID = "e00fce68ab2c5d1f0e4a7b93"
SECRET = "4FB2AEF1C5D7E93A0B6C8D2E"
CELLULAR = (
    f"Device ID: {DEVICE_ID}\r\n"
    "IMEI: 352753090123456\r\n"
    "ICCID: 89340765432109876543\r\n"
    "Serial Number: P046AB1234567890\r\n"
    f"Device Secret: {SECRET}\r\n"
    "Cell Radio Version: R410M02A\r\n"
)


def _modules() -> tuple[SerialModule, ...]:
    system = SerialModule(Function.SYSTEM_PART, 1, 5900, 786432, "main", 0x1E, 0x1E)
    user = SerialModule(
        Function.USER_PART,
        1,
        6,
        262144,
        "main",
        0x1E,
        0x0E,
        "ab" * 32,
        (ModuleDependency(Function.SYSTEM_PART, 1, 5900),),
    )
    return system, user


@dataclass
class FakeDevice:
    """The provider a simulated device gives its serial port."""

    version: str = "5.9.0"
    values: list[tuple[str, str]] = field(
        default_factory=lambda: [
            ("imei", "352753090123456"),
            ("iccid", "89340765432109876543"),
            ("sn", "P046AB1234567890"),
            ("ms", SECRET),
            ("cellfw", "R410M02A"),
        ]
    )

    def device_id(self) -> str:
        return DEVICE_ID

    def identity_values(self) -> list[tuple[str, str]]:
        return self.values

    def system_version(self) -> str:
        return self.version

    def system_info(self) -> SystemInfo:
        return SystemInfo(13, {"imei": "352753090123456", "ms": SECRET}, _modules())

    def mac_address(self) -> str:
        return "a4:cf:12:0b:3d:7e"

    def claimed(self) -> bool:
        return True


@pytest.fixture
def sim():
    clock = VirtualClock()
    device = FakeDevice()
    seen = SimpleNamespace(bauds=[], exits=0)

    def on_exit() -> None:
        seen.exits += 1

    # The test thread is the kiosk: an actor, so device time moves only while it waits on the clock.
    with clock.actor(), SimSerialPort(clock, device, on_baud=seen.bauds.append, on_exit=on_exit) as port:
        port.listening = True
        yield SimpleNamespace(clock=clock, device=device, port=port, seen=seen)


# --- parsers -------------------------------------------------------------------------------------------


def test_identify_cellular_keeps_the_values_and_drops_the_secret():
    identity = parse_identify(CELLULAR)
    assert identity.device_id == DEVICE_ID
    assert (identity.imei, identity.iccid, identity.serial_number, identity.cell_radio_version) == (
        "352753090123456",
        "89340765432109876543",
        "P046AB1234567890",
        "R410M02A",
    )
    assert "Device Secret" not in identity.values
    assert SECRET not in repr(identity)


def test_identify_old_wifi_form_and_raw_keys():
    assert parse_identify(f"Your device id is {DEVICE_ID.upper()}\r\n").device_id == DEVICE_ID
    assert parse_identify(f"Your core id is {DEVICE_ID}\r\n").values == {}
    garbled_label = parse_identify(CELLULAR.replace("Device Secret", "Device Sxcret"))
    assert SECRET not in repr(garbled_label) and len(garbled_label.values) == 4
    older = parse_identify(f"Device ID: {DEVICE_ID}\r\nIMEI: 352753090123456\r\ncellfw: 1.2\r\nms: {SECRET}\r\n")
    assert older.cell_radio_version == "1.2" and SECRET not in repr(older)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (CELLULAR[:-40], "cut off"),  # no line end: the batch ended mid-line
        (CELLULAR.replace("352753090123456", "3527530"), "IMEI value"),
        (f"Device ID: {DEVICE_ID[:10]}\r\n", "not a 24-hex-digit device id"),
        ("IMEI: 352753090123456\r\n", "no device id"),
        (CELLULAR.replace("ICCID: ", "\x13\x7f ICCID"), "is not 'Key: value'"),
        ("", "empty"),
    ],
)
def test_identify_garbled_or_truncated_is_a_clear_error_without_the_secret(reply, problem):
    with pytest.raises(ConsoleError) as err:
        parse_identify(reply)
    message = str(err.value)
    assert problem in message and "'i' (identify)" in message
    assert SECRET[:8] not in message


def test_error_quotes_a_short_redacted_reply():
    err = ConsoleError("i", "garbled", CELLULAR * 20)
    assert SECRET not in str(err) and "<redacted>" in err.reply and "more characters" in err.reply
    assert len(err.reply) < 220


def test_redact_line_and_json_even_when_cut_off():
    assert redact(f"Device Secret: {SECRET}\r\n") == "Device Secret: <redacted>\r\n"
    for garbled in ("Dev!ce Secret: ", "Device Sxcret: ", "Device \x00ecret ", "Serial Number: P046Device Secret: "):
        assert SECRET not in redact(f"{garbled}{SECRET}\r\nIMEI: 352753090123456\r\n"), garbled
    assert redact("Serial Number: P046AB1234567890\r\n") == "Serial Number: P046AB1234567890\r\n"
    assert SECRET not in redact(f'{{"p":13,"ms":"{SECRET}","m":[]}}')
    assert SECRET[:6] not in redact(f'{{"p":13,"ms":"{SECRET[:6]}')


def test_version_mac_claimed():
    assert str(parse_version("system firmware version: 5.9.0\n\r\n")) == "5.9.0"
    minimal = parse_version("system firmware version: 1.5.4-rc.1 minimal\n\r\n")
    assert (minimal.version, minimal.minimal) == ("1.5.4-rc.1", True)
    assert parse_mac("Your device MAC address is\r\nA4:CF:12:b:3D:7E\r\n") == "a4:cf:12:0b:3d:7e"
    assert parse_claimed("Device claimed: yes\r\n") is True
    assert parse_claimed("Device claimed: no\r\n") is False
    for parse, reply in [
        (parse_version, "system firmware vers"),
        (parse_version, "sys\x00tem firmware version: 5.9.0\r\n"),
        (parse_mac, "Your device MAC address is\r\na4:cf:12\r\n"),
        (parse_claimed, "Device claimed: maybe\r\n"),
    ]:
        with pytest.raises(ConsoleError):
            parse(reply)


def test_system_info_round_trip_and_module_table():
    text = system_info_json(SystemInfo(13, {"imei": "352753090123456", "ms": SECRET}, _modules())) + "\r\n"
    assert text.startswith('{"p":13,"imei":"352753090123456","ms":') and text.endswith("}\r\n")
    info = parse_system_info(text)
    assert info.platform_id == 13 and info.values == {"imei": "352753090123456"}
    assert info.modules == _modules()
    system, user = info.modules
    assert system.valid and user.failed == {"platform"}
    as_control = user.to_module_info()
    assert as_control.function == Function.USER_PART and as_control.failed == {"platform"}
    assert as_control.hash == bytes.fromhex("ab" * 32) and as_control.dependencies == user.dependencies


def test_system_info_function_and_store_letters():
    text = (
        '{"p":6,"m":[{"s":16384,"l":"f","vc":2,"vv":0,"f":"b","n":"0","v":101,"d":[]},'
        '{"s":1,"l":"t","vc":0,"vv":0,"f":"_","n":"0","v":0}]}\r\n'
    )
    boot, other = parse_system_info(text).modules
    assert (boot.function, boot.store, boot.failed) == (Function.BOOTLOADER, "factory", {"integrity"})
    assert (other.function, other.store, other.to_module_info().function) == (None, "temp", -1)


@pytest.mark.parametrize(
    "reply",
    [
        '{"p":13,"m":[{"s":1,"l":"m","vc":30,"vv":30,"f":"s","n":"1","v":59',  # cut off
        '{"p":13,"m":[{"s":1,"l":"m","vc":30,"vv":30,"f":"s","n":"1","v":5900}]}',  # no line end
        '{"p":13,"m":[{"s":"big","l":"m","vc":30,"vv":30,"f":"s","n":"1","v":5900}]}\r\n',
        '{"p":13,"m":[{"s":1,"l":"m","vc":30,"vv":30,"f":"s","n":"one","v":5900}]}\r\n',
        '{"p":13}\r\n',
        "[1,2]\r\n",
        '{"p":13,"m":[]}\r\n{"p":13,"m":[]}\r\n',
    ],
)
def test_system_info_garbled(reply):
    with pytest.raises(ConsoleError, match="'s' \\(system info\\)"):
        parse_system_info(reply)


# --- finding the port ---------------------------------------------------------------------------------


def test_find_port_by_usb_identity_and_device_id():
    ports = [
        SimpleNamespace(device="/dev/ttyUSB0", vid=0x0403, pid=0x6001, serial_number=DEVICE_ID, location="1-1"),
        SimpleNamespace(device="/dev/ttyACM0", vid=0x2B04, pid=0xC00D, serial_number=DEVICE_ID.upper(), location="1-2"),
        SimpleNamespace(device="/dev/ttyACM1", vid=0x2B04, pid=0xD00D, serial_number="aa" * 12, location="1-3"),
        SimpleNamespace(
            device="/dev/ttyACM2",
            vid=0x2B04,
            pid=0xC006,
            serial_number="Photon_53ff6c066667574821362567",
            location=None,
        ),
        SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None, serial_number=None, location=None),
    ]
    found = list_particle_ports(lambda: ports)
    assert [(p.path, p.device_id, p.platform.name) for p in found] == [
        ("/dev/ttyACM0", DEVICE_ID, "boron"),
        ("/dev/ttyACM2", "53ff6c066667574821362567", "photon"),
    ]
    assert find_port(DEVICE_ID.upper(), lambda: ports) == "/dev/ttyACM0"
    assert find_port("53FF6C066667574821362567", lambda: ports) == "/dev/ttyACM2"
    assert find_port("aa" * 12, lambda: ports) is None  # a DFU-mode device has no serial port


# --- on the simulated device's pseudo-terminal ----------------------------------------------------------------


def test_console_commands_on_the_pty(sim):
    with ListeningConsole(sim.port.path, sim.clock) as console:
        identity = console.identify()
        assert identity.device_id == DEVICE_ID and identity.iccid == "89340765432109876543"
        assert console.version().version == "5.9.0"
        assert console.mac() == "a4:cf:12:0b:3d:7e"
        assert console.claimed() is True
        info = console.system_info()
        assert info.modules == _modules() and "ms" not in info.values
        raw = console.command("i")
        assert "Device Secret: <redacted>" in raw and SECRET not in raw
        console.exit()
    assert sim.seen.exits == 1 and not sim.port.listening


def test_reply_batching_takes_device_time_not_wall_time(sim):
    start = sim.clock.now()
    with ListeningConsole(sim.port.path, sim.clock) as console:
        console.version()
    # one tick for the device to see the command, then the CLI's 250 ms of silence
    assert 0.25 <= sim.clock.now() - start < 0.35


def test_not_listening_means_no_reply(sim):
    sim.port.listening = False  # a normal-mode Device OS ignores console input
    start = sim.clock.now()
    with (
        ListeningConsole(sim.port.path, sim.clock) as console,
        pytest.raises(ConsoleError, match="no reply within 5 s"),
    ):
        console.version()
    assert 5.0 <= sim.clock.now() - start < 5.1


def test_a_byte_lost_on_the_cable_is_a_clear_error_not_a_traceback(sim):
    with ListeningConsole(sim.port.path, sim.clock) as console:
        # the device's reply to 'i' starts with "Device ID: e00f...": corrupt a digit of the id
        sim.port.damage("to_host", sim.port.bytes_to_host + len("Device ID: ") + 3, xor=0x40)
        with pytest.raises(ConsoleError) as err:
            console.identify()
        assert "device id" in str(err.value) and SECRET not in str(err.value)
        # ... and drop the line end of the version reply: a cut-off reply
        sim.port.damage("to_host", sim.port.bytes_to_host + len("system firmware version: 5.9.0"), drop=True)
        sim.port.damage("to_host", sim.port.bytes_to_host + len("system firmware version: 5.9.0") + 1, drop=True)
        sim.port.damage("to_host", sim.port.bytes_to_host + len("system firmware version: 5.9.0") + 2, drop=True)
        with pytest.raises(ConsoleError, match="cut off"):
            console.version()
        assert console.claimed() is True  # the console still works afterwards


def test_magic_baud_rates_are_seen_on_the_pty(sim):
    trigger_dfu(sim.port.path, sim.clock)
    # 14400 seen while the port was held open; 9600 the moment the trigger set it again, before it closed (the
    # kiosk's acts on a port wake its simulated device, as SET_LINE_CODING reaches Device OS at once)
    sim.clock.sleep(0.001)  # the woken device thread holds time until it has looked: any wait sees it done
    assert sim.seen.bauds == [14400, 9600]
    sim.clock.sleep(0.1)
    assert sim.seen.bauds == [14400, 9600]
    trigger_listening(sim.port.path, sim.clock)
    sim.clock.sleep(0.1)
    assert sim.seen.bauds == [14400, 9600, 28800, 9600]
    port = serial.Serial(sim.port.path, 115200, timeout=0)
    try:
        sim.clock.sleep(0.1)
        assert sim.seen.bauds[-1] == 115200 and line_speed(port.fileno()) == 115200
    finally:
        port.close()


def test_device_os_6_refuses_ymodem(sim):
    sim.device.version = "6.1.0"
    with pytest.raises(YModemRefused, match="no longer supported"):
        send_ymodem(sim.port.path, b"\x00" * 2000, "binary", sim.clock)
    # the device stays at its console
    with ListeningConsole(sim.port.path, sim.clock) as console:
        assert console.version().version == "6.1.0"


def test_closing_leaks_no_fds_or_threads():
    before_fds = set(os.listdir("/proc/self/fd"))
    before_threads = threading.active_count()
    clock = VirtualClock()
    with clock.actor():
        for _ in range(3):
            with SimSerialPort(clock, FakeDevice()) as port:
                port.listening = True
                with ListeningConsole(port.path, clock) as console:
                    assert console.claimed()
    assert threading.active_count() == before_threads
    assert set(os.listdir("/proc/self/fd")) == before_fds


def test_an_idle_simulated_port_sees_the_kiosk_open_it_at_once(sim):
    """An idle simulated port looks at its line only every IDLE_TICK_S; the kiosk's own acts on the port wake it,
    so a device acts on the 14400 baud trick as a real one does (Device OS handles SET_LINE_CODING at once), not
    up to half a second later."""
    from hw.serial_console import open_port
    from hw.sim import serial_device

    sim.clock.sleep(5 * serial_device.IDLE_TICK_S)  # long idle: the port's thread is in its longest sleep
    port = open_port(sim.port.path, 14400)
    try:
        opened = sim.clock.now()
        assert sim.clock.wait_for(lambda: sim.seen.bauds == [14400], 1.0, poll=0.001)
        assert sim.clock.now() - opened <= 2 * serial_device.ACTIVE_TICK_S
    finally:
        port.close()
