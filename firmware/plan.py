"""Flash plans: which modules go to a device, in what order, by which mechanism, or why not.

Given what is known about the device (platform, Device OS, modules present, current mode) and
the modules wanted, with transport ``usb`` (DFU), ``serial`` (YModem in listening mode) or
``auto`` (what Particle's own tools do: DFU where DFU can carry the module, a control-request
update for the bootloader, NCP firmware and assets), :func:`plan_flash` returns the ordered
steps or raises :class:`PlanRefused` listing every reason. There is deliberately no parameter,
flag or environment variable that skips a check.

    >>> from firmware.builder import build_module
    >>> from firmware.module import parse_module
    >>> from firmware.platforms import platform_by_name
    >>> tinker = parse_module(build_module(platform_id=13, function=Function.USER_PART, version=6,
    ...                                    dependencies=[(Function.SYSTEM_PART, 1, 5301)]))
    >>> plan = plan_flash(DeviceFacts(platform_by_name("boron"), system_version=5301),
    ...                   [("tinker.bin", tinker)], Transport.USB)
    >>> [(s.name, s.mechanism.value, hex(s.address)) for s in plan.steps]
    [('invalidate the former 128 KiB user part', 'dfu', '0xd4000'), ('tinker.bin', 'dfu', '0xb4000')]
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from firmware.module import Dependency, Module, ModuleFlag
from firmware.platforms import Function, Platform, Storage, function_name, platform_by_id
from firmware.versions import (
    CONTROL_REQUESTS_SINCE,
    GEN2_RELIABLE_CONTROL_SINCE,
    YMODEM_REMOVED_SYSTEM_VERSION,
    describe_system_version,
)


class Transport(StrEnum):
    """How the technician asked for the modules to travel."""

    USB = "usb"  # DFU only
    SERIAL = "serial"  # YModem in listening mode only
    AUTO = "auto"  # DFU where it can, control-request update (or YModem) for the rest


class Mechanism(StrEnum):
    DFU = "dfu"
    YMODEM = "ymodem"
    CONTROL = "control-request"


#: The device mode each mechanism needs.
DEVICE_MODE = {Mechanism.DFU: "dfu", Mechanism.YMODEM: "listening", Mechanism.CONTROL: "normal"}

#: What DFU can carry: images that run from internal flash at their own start address.
DFU_FUNCTIONS = frozenset({Function.SYSTEM_PART, Function.USER_PART, Function.MONO_FIRMWARE, Function.RADIO_STACK})
#: What the device applies itself in normal mode (Particle's CLI sends these by control request).
NORMAL_MODE_FUNCTIONS = frozenset({Function.BOOTLOADER, Function.NCP_FIRMWARE, Function.ASSET})

ORDERS = ("dependencies", "apps-first")

#: Tie-break order between modules that do not depend on each other.
_RANK = {
    Function.BOOTLOADER: 0,
    Function.RADIO_STACK: 1,
    Function.NCP_FIRMWARE: 2,
    Function.SYSTEM_PART: 3,
    Function.MONO_FIRMWARE: 4,
    Function.USER_PART: 5,
    Function.ASSET: 6,
}

#: Gen3: from Device OS 3.1.0 user parts moved to 0xB4000; Particle's CLI first invalidates the old
#: 128 KiB slot so the bootloader cannot start a stale app from it (usb-serial-protocols.md 1.5).
FORMER_USER_PART = (0xD4000, 4096)
FORMER_USER_PART_SINCE = 3103


@dataclass(frozen=True)
class InstalledModule:
    """A module the device reports (control request 90 or serial ``s``)."""

    function: int
    index: int
    version: int
    dependencies: tuple[Dependency, ...] = ()


@dataclass(frozen=True)
class DeviceFacts:
    """What is known about the device. ``None`` means unknown, never "absent"."""

    platform: Platform
    system_version: int | None = None  # system module version, e.g. 5301 for Device OS 5.3.1
    modules: tuple[InstalledModule, ...] | None = None
    mode: str | None = None  # "normal", "dfu", "listening", "safe"
    protected: bool = False  # Device Protection on: nothing may be written offline


@dataclass(frozen=True)
class FlashStep:
    """One write: what, how, where, and in which mode the device must be."""

    name: str  # the source file, or what a generated step does
    module: Module | None  # None for generated steps (the former user-part invalidation)
    mechanism: Mechanism
    address: int | None  # DFU target address
    alt_setting: int | None  # DFU alt setting
    payload: bytes = field(repr=False)
    dropped_prefix: int  # bytes of prefix left out of the payload (DROP_MODULE_INFO over DFU)
    device_mode: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        m = self.module
        return {
            "name": self.name,
            "function": m.function_name if m else None,
            "index": m.index if m else None,
            "version": m.version if m else None,
            "mechanism": self.mechanism.value,
            "device_mode": self.device_mode,
            "address": None if self.address is None else f"0x{self.address:08x}",
            "alt_setting": self.alt_setting,
            "payload_size": len(self.payload),
            "dropped_prefix": self.dropped_prefix,
            "note": self.note,
        }


@dataclass(frozen=True)
class FlashPlan:
    device: DeviceFacts
    transport: Transport
    steps: tuple[FlashStep, ...]
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.device.platform.name,
            "transport": self.transport.value,
            "steps": [s.to_json() for s in self.steps],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Refusal:
    name: str  # the module's source file, or "device"
    reason: str


class PlanRefused(Exception):
    """The plan cannot be made; every reason is listed."""

    def __init__(self, refusals: Sequence[Refusal]):
        self.refusals = tuple(refusals)
        super().__init__("; ".join(f"{r.name}: {r.reason}" for r in self.refusals))


@dataclass
class _Item:
    name: str
    module: Module
    order: int


def plan_flash(
    device: DeviceFacts,
    wanted: Sequence[tuple[str, Module]],
    transport: Transport = Transport.AUTO,
    order: str = "dependencies",
) -> FlashPlan:
    """The ordered steps that put ``wanted`` on the device, or PlanRefused with every reason.

    ``order`` "apps-first" writes user parts before Device OS parts (Particle's "the other order": Tinker,
    then the update, for devices where an update does not take over the old app). Every check still holds:
    dependencies are judged on the state after the whole plan, whatever the order.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    items = [_Item(name, module, n) for n, (name, module) in enumerate(wanted)]
    refusals = _device_refusals(device, transport, bool(items))
    for item in items:
        refusals += [Refusal(item.name, r) for r in _module_refusals(device, transport, item.module)]
    warnings: list[str] = []
    if not refusals:
        refusals += _dependency_refusals(device, items, warnings)
    if refusals:
        raise PlanRefused(refusals)

    ordered = _order(items, device, transport)
    if order == "apps-first":
        # the apps, then the rest of the DFU session, then what needs Device OS running
        apps = [i for i in ordered if i.module.function == Function.USER_PART]
        rest = [i for i in ordered if i.module.function != Function.USER_PART]
        ordered = apps + [i for i in rest if _wants_dfu(i.module, transport)]
        ordered += [i for i in rest if not _wants_dfu(i.module, transport)]
    steps, more_refusals = _steps(device, transport, ordered, warnings)
    if more_refusals:
        raise PlanRefused(more_refusals)
    return FlashPlan(device, transport, tuple(steps), tuple(warnings))


# --- refusals ---------------------------------------------------------------------------------


def _device_refusals(device: DeviceFacts, transport: Transport, anything: bool) -> list[Refusal]:
    p = device.platform
    out = []
    if not anything:
        out.append(Refusal("device", "no modules given to flash"))
    if not p.supported:
        out.append(Refusal("device", f"the kiosk does not know how to flash a {p.display_name} ({p.name})"))
    if device.protected:
        out.append(
            Refusal(
                "device",
                "Device Protection is on: nothing can be written offline. Ask the product's owner to put "
                "the device in service mode, then try again",
            )
        )
    if transport is Transport.SERIAL and p.generation == 1:
        out.append(Refusal("device", "serial (YModem) flashing is not supported on the Core; use --usb"))
    return out


def _module_refusals(device: DeviceFacts, transport: Transport, m: Module) -> list[str]:
    p = device.platform
    out = []
    if m.problems:
        out.append("the file fails verification: " + "; ".join(m.problems))
        return out  # its other fields cannot be trusted
    if m.function != Function.ASSET and m.platform_id != p.id:
        made_for = platform_by_id(m.platform_id)
        out.append(
            f"made for {made_for.name if made_for else f'platform {m.platform_id}'}, "
            f"but the device is a {p.name}: choose the {p.name} file"
        )
    if m.flags & ModuleFlag.ENCRYPTED:
        out.append("encrypted module: the kiosk never flashes these (Particle's tools skip them too)")
    if m.function not in DFU_FUNCTIONS | NORMAL_MODE_FUNCTIONS:
        out.append(f"the kiosk does not flash {m.function_name} modules")
        return out
    out += _transport_refusals(p, transport, m)
    if m.function != Function.ASSET and out == []:
        slots = p.slots_for(m.function, m.index)
        fits = any(s.fits(m.start_address, m.end_address) for s in slots)
        if not fits:
            out.append(
                f"{m.function_name} {m.index} at 0x{m.start_address:x}-0x{m.end_address:x} is not where a "
                f"{p.name} keeps it: wrong file for this device"
            )
    return out


def _transport_refusals(p: Platform, transport: Transport, m: Module) -> list[str]:
    over_dfu = m.function in DFU_FUNCTIONS and transport is not Transport.SERIAL
    if transport is Transport.USB and not over_dfu:
        hint = (
            "assets go with their application by control-request update: leave the transport automatic"
            if m.function == Function.ASSET
            else "use --serial, or leave the transport automatic (control-request update)"
        )
        return [f"a {m.function_name} cannot be written over DFU (--usb): {hint}"]
    if transport is Transport.SERIAL and m.function == Function.ASSET:
        return ["assets cannot be sent over YModem: leave the transport automatic"]
    if p.generation == 1 and not over_dfu:
        return [f"the Core takes a {m.function_name} neither over serial nor by control request; use SWD/JTAG"]
    if over_dfu:
        if m.flags & ModuleFlag.COMPRESSED:
            return ["compressed module: DFU writes raw flash, so use the uncompressed release file"]
        if m.flags & ModuleFlag.DROP_MODULE_INFO and m.prefix_offset != 0:
            # Particle's tools never do this; which bytes to drop is not documented. UNVERIFIED.
            return ["drop-module-info with the header inside the image: the kiosk will not guess what to write"]
        payload_size = m.size - (m.prefix_size if m.flags & ModuleFlag.DROP_MODULE_INFO else 0)
        memory = p.memory_map(0)
        if memory is None or not memory.can_write(m.start_address, payload_size):
            return [
                f"DFU alt 0 of a {p.name} does not allow writing 0x{m.start_address:x}-"
                f"0x{m.start_address + payload_size:x}"
            ]
    return []


def _provided(device: DeviceFacts, items: Sequence[_Item], function: int, index: int) -> tuple[int | None, str]:
    """(version after the plan, where it comes from) of a module kind; version None = unknown."""
    planned = [i.module.version for i in items if (i.module.function, i.module.index) == (function, index)]
    if planned:
        return max(planned), "the plan brings"
    if device.modules is not None:
        for installed in device.modules:
            if (installed.function, installed.index) == (function, index):
                return installed.version, "the device has"
        return 0, "the device has none"
    if function == Function.SYSTEM_PART and device.system_version is not None and index in device.platform.system_parts:
        return device.system_version, "the device has"
    return None, "unknown"


def _dependency_refusals(device: DeviceFacts, items: Sequence[_Item], warnings: list[str]) -> list[Refusal]:
    """Every dependency must hold once the whole plan is written (the device checks them at boot)."""
    refusals = []
    for item in items:
        for dep in item.module.real_dependencies:
            version, source = _provided(device, items, dep.function, dep.index)
            what = f"{function_name(dep.function)} {dep.index}"
            if version is None:
                warnings.append(f"{item.name} needs {what} >= {dep.version}; the device's is unknown, so unchecked")
            elif version < dep.version:
                refusals.append(
                    Refusal(
                        item.name,
                        f"needs {what} version {dep.version} or newer, and {source} {version}: "
                        f"add the {what} of a newer Device OS to the plan",
                    )
                )
    # What stays on the device must still run afterwards; a break here is the technician's call.
    replaced = {(i.module.function, i.module.index) for i in items}
    for installed in device.modules or ():
        if (installed.function, installed.index) in replaced:
            continue
        for dep in installed.dependencies:
            version, _ = _provided(device, items, dep.function, dep.index)
            if version is not None and version < dep.version:
                warnings.append(
                    f"afterwards the installed {function_name(installed.function)} {installed.index} will not run: "
                    f"it needs {dep} (the device will sit in safe mode until it is replaced)"
                )
    return refusals


# --- ordering --------------------------------------------------------------------------------


def _wants_dfu(module: Module, transport: Transport) -> bool:
    return transport is not Transport.SERIAL and module.function in DFU_FUNCTIONS


def _order(items: list[_Item], device: DeviceFacts, transport: Transport) -> list[_Item]:
    """Dependencies first (ties by function rank, then the order given), cycles broken by rank.

    A device already in DFU mode gets its DFU steps first, as Particle's CLI does: normal-mode
    steps need Device OS to run, which is what the DFU steps are usually repairing. Dependencies
    are checked by the device at boot, after all steps, so this reordering is safe.
    """
    key = {id(i): (_RANK.get(i.module.function, 9), i.module.index, i.order) for i in items}
    needs: dict[int, set[int]] = {id(i): set() for i in items}
    for i in items:
        for dep in i.module.real_dependencies:
            for j in items:
                if j is not i and (j.module.function, j.module.index) == (dep.function, dep.index):
                    needs[id(i)].add(id(j))
    by_id = {id(i): i for i in items}
    done: list[_Item] = []
    remaining = set(by_id)
    while remaining:
        ready = [n for n in remaining if not (needs[n] & remaining)]
        pool = ready or list(remaining)  # a cycle (system part <-> radio stack): break it by rank
        heap = [(key[n], n) for n in pool]
        heapq.heapify(heap)
        _, chosen = heapq.heappop(heap)
        done.append(by_id[chosen])
        remaining.discard(chosen)
    if device.mode == "dfu":
        done = [i for i in done if _wants_dfu(i.module, transport)] + [
            i for i in done if not _wants_dfu(i.module, transport)
        ]
    return done


# --- steps -----------------------------------------------------------------------------------


def _control_works(platform: Platform, system_version: int | None) -> bool:
    if system_version is None:
        return True  # the executor asks the device and falls back if it does not answer
    if platform.generation == 2:
        return system_version >= GEN2_RELIABLE_CONTROL_SINCE
    return system_version >= CONTROL_REQUESTS_SINCE.get(platform.generation or 0, 1 << 30)


def _steps(
    device: DeviceFacts, transport: Transport, ordered: list[_Item], warnings: list[str]
) -> tuple[list[FlashStep], list[Refusal]]:
    steps: list[FlashStep] = []
    refusals: list[Refusal] = []
    system_version = device.system_version  # as it will be when each step runs
    warned_unknown = False
    for item in ordered:
        m = item.module
        if _wants_dfu(m, transport):
            if _needs_former_user_part_invalidation(device, m):
                address, size = FORMER_USER_PART
                steps.append(
                    FlashStep(
                        "invalidate the former 128 KiB user part",
                        None,
                        Mechanism.DFU,
                        address,
                        0,
                        b"\xff" * size,
                        0,
                        "dfu",
                        "so the bootloader cannot start a stale app from 0xD4000",
                    )
                )
            steps.append(_dfu_step(item))
        else:
            if transport is Transport.AUTO and _control_works(device.platform, system_version):
                mechanism = Mechanism.CONTROL
            else:
                mechanism = Mechanism.YMODEM
            if mechanism is Mechanism.YMODEM:
                if system_version is not None and system_version >= YMODEM_REMOVED_SYSTEM_VERSION:
                    running = describe_system_version(system_version)
                    when = (
                        f"the device runs Device OS {running}"
                        if system_version == device.system_version
                        else f"by this step the device runs Device OS {running}, written earlier in this plan"
                    )
                    refusals.append(
                        Refusal(
                            item.name,
                            f"{when}, and Device OS 6.0.0 and later have no YModem: use --usb or leave the "
                            "transport automatic",
                        )
                    )
                    continue
                if system_version is None and not warned_unknown:
                    warned_unknown = True
                    warnings.append(
                        "Device OS version unknown: YModem works only below 6.0.0, so the kiosk asks the "
                        "device (`v`) before sending"
                    )
            steps.append(FlashStep(item.name, m, mechanism, None, None, m.data, 0, DEVICE_MODE[mechanism]))
        if m.function in (Function.SYSTEM_PART, Function.MONO_FIRMWARE):
            system_version = m.version
    return steps, refusals


def _dfu_step(item: _Item) -> FlashStep:
    m = item.module
    dropped = m.prefix_size if m.flags & ModuleFlag.DROP_MODULE_INFO else 0
    note = "written without its module header (drop-module-info)" if dropped else ""
    return FlashStep(item.name, m, Mechanism.DFU, m.start_address, 0, m.data[dropped:], dropped, "dfu", note)


def _needs_former_user_part_invalidation(device: DeviceFacts, m: Module) -> bool:
    p = device.platform
    if m.function != Function.USER_PART or p.mcu.name != "nrf52840":
        return False
    if not any(s.function == Function.USER_PART and s.index == 1 and s.storage is Storage.INTERNAL for s in p.layout):
        return False
    new_slot = m.start_address != FORMER_USER_PART[0]
    system_dep = max((d.version for d in m.real_dependencies if d.function == Function.SYSTEM_PART), default=0)
    return new_slot and system_dep >= FORMER_USER_PART_SINCE
