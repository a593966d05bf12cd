"""What a simulated device says and does on its USB serial port (the Device OS side of ``hw.serial_console``).

``attach_serial(device)`` gives the device a pseudo-terminal (``hw.sim.serial_device.SimSerialPort``) that
runs its listening-mode console while it listens, reacts to the magic baud rates (14400: reset into DFU
on every Device OS; 28800: listening mode up to 5.9), and applies a module received over YModem.
``serial_lister(device)`` lists that port the way pyserial would, while the device is on USB in normal mode.
"""

from __future__ import annotations

from types import SimpleNamespace

from hw.serial_console import ModuleDependency, SerialModule, SystemInfo
from hw.sim.device import Mode, SimDevice
from hw.sim.device_control import _checks
from hw.sim.serial_device import SimSerialPort, module_validator

DFU_BAUD, LISTEN_BAUD = 14400, 28800
LISTEN_BAUD_UNTIL = 5999  # Device OS 6.0.0 removed the 28800-baud trigger
#: Modes in which Device OS runs its USB stack, so the line-coding handler (an interrupt) still fires,
#: even with the app frozen.
USB_SERIAL_MODES = (Mode.NORMAL, Mode.SAFE, Mode.LISTENING, Mode.FROZEN)


class DeviceSerialProvider:
    """The console's answers, from the device's state. The device secret is a made-up value the kiosk
    must never store or show (the tests check it does not)."""

    SECRET = "SIMULATEDSECRET123"

    def __init__(self, device: SimDevice):
        self.device = device

    def device_id(self) -> str:
        return self.device.device_id

    def identity_values(self) -> list[tuple[str, str]]:
        if self.device.platform.name in ("boron", "bsom", "b5som", "electron", "tracker", "esomx", "msom"):
            return [("imei", "352753090123456"), ("iccid", "89340000000000000000"), ("ms", self.SECRET)]
        return []

    def system_version(self) -> str:
        return self.device.system_version_string

    def system_info(self) -> SystemInfo:
        device = self.device
        modules = []
        for m in sorted(device.modules.values(), key=lambda m: (m.function, m.index)):
            checked, passed = _checks(device, m)
            deps = tuple(
                ModuleDependency(d.function, d.index, d.version)
                for d in (m.module.real_dependencies if m.module else ())
            )
            slot = next(iter(device.platform.slots_for(m.function, m.index)), None)
            size = (slot.end - slot.start) if slot else len(m.data)
            modules.append(SerialModule(m.function, m.index, m.version, size, "main", checked, passed, None, deps))
        return SystemInfo(device.platform.id, {}, tuple(modules))

    def mac_address(self) -> str:
        return "02:" + ":".join(self.device.device_id[i : i + 2] for i in range(0, 10, 2))

    def claimed(self) -> bool:
        return True


def attach_serial(device: SimDevice) -> SimSerialPort:
    """Give ``device`` its USB serial port; the device keeps ``listening`` up to date."""

    def on_baud(baud: int) -> None:
        if device.mode not in USB_SERIAL_MODES:
            return
        if baud == DFU_BAUD:
            device.serial_dfu()
        elif baud == LISTEN_BAUD and (device.system_version or 0) <= LISTEN_BAUD_UNTIL:
            device.start_listening()

    port = SimSerialPort(
        device.clock,
        DeviceSerialProvider(device),
        on_baud=on_baud,
        on_exit=device.stop_listening,
        validate=module_validator(device.platform.id),
        on_received=device.apply_update,
    )
    device.serial = port
    port.listening = device.mode == Mode.LISTENING
    return port


def serial_lister(device: SimDevice):
    """Lists the device's serial port as pyserial's ``comports()`` would, while it is on USB in normal mode."""

    def ports() -> list[SimpleNamespace]:
        if device.usb_mode != "normal" or device.serial is None:
            return []
        p = device.platform
        return [
            SimpleNamespace(
                device=device.serial.path, vid=p.usb_vid, pid=p.usb_pid_normal, serial_number=device.device_id,
                manufacturer="Particle", product=p.display_name, description=p.display_name, hwid="",
                location=device.usb_port_path,
            )
        ]  # fmt: skip

    return ports
