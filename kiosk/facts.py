"""What the kiosk can learn about the device in a slot before planning a flash: its platform, mode,
Device OS version, modules and protection, asked gently (control requests in normal mode, the DFU
protection string in DFU mode). Anything it cannot learn stays None, which the planner treats as unknown.
``protected`` is True only when the device said so: one that did not answer (a crash loop between two looks)
may be protected all the same. What stops harm then is the device itself (a protected device refuses writes
over USB, and a protected nRF52's debug port is locked, which no restore here mass-erases open).
"""

from __future__ import annotations

import contextlib

from firmware.module import Dependency
from firmware.plan import DeviceFacts, InstalledModule
from firmware.versions import system_version_for
from hw.control import ControlChannel, ControlError, ControlFailure, ModuleInfo
from hw.dfu import DfuDevice, DfuError
from hw.usb_identity import ParticleUsbDevice
from kiosk.bench import Slot

ASK_TIMEOUT_S = 3.0


def gather_facts(slot: Slot, device: ParticleUsbDevice) -> DeviceFacts:
    system_version: int | None = None
    modules: tuple[InstalledModule, ...] | None = None
    protected = False
    if device.mode == "normal":
        channel = ControlChannel(device.usb_device, slot.clock, device.platform.quirks)
        with contextlib.suppress(ControlFailure):
            system_version = system_version_for(channel.system_version(timeout_s=ASK_TIMEOUT_S))
        try:
            infos = channel.module_info(timeout_s=ASK_TIMEOUT_S)
            modules = tuple(installed(i) for i in infos if "integrity" not in i.failed)
            if system_version is None:
                parts = [i.version for i in infos if i.function == 4 and i.index == 1]
                system_version = parts[0] if parts else None
        except ControlError as exc:
            protected = exc.protected
        except ControlFailure:
            pass
    elif device.mode == "dfu":
        with contextlib.suppress(DfuError), DfuDevice(device.usb_device, slot.clock) as dfu:
            protected = dfu.protection_state() == "protected"
    return DeviceFacts(device.platform, system_version, modules, mode=device.mode, protected=protected)


def installed(info: ModuleInfo) -> InstalledModule:
    """A module of the device's table as the planner takes it; its hash only when every check passed."""
    return InstalledModule(info.function, info.index, info.version, tuple(Dependency(*d) for d in _deps(info)),
                           info.hash or None if not info.failed else None)  # fmt: skip


def _deps(info) -> list[tuple[int, int, int]]:
    return [(d.function, d.index, d.version) for d in info.dependencies]
