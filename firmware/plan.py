"""Flash plans: which modules go to a device, in what order, by which mechanism, or why not.

Given what is known about the device (platform, Device OS, modules present, current mode) and
the modules wanted, with transport ``auto`` (no flag: what Particle's own tools do, per module), ``usb``
(over USB only) or ``serial`` (YModem in listening mode), :func:`plan_flash` returns the ordered steps or
raises :class:`PlanRefused` listing every reason, and the transport that would plan when one would
(``PlanRefused.suggestion``: advice is only ever a choice that was tried and plans). There is
deliberately no parameter, flag or environment variable that skips a check.

Over USB, DFU carries system parts, user parts, monolithic images and the radio stack (written without its
header). The bootloader, the rtl872x prebootloader-part1 and NCP firmware reach their place only through
Device OS: by control-request update when Device OS runs and answers them (``particle flash --usb`` in
particle-cli), or, when the device is in DFU mode (or its Device OS does not take control requests), over
DFU into the OTA region with the pending-update flag in the DCT, which Device OS applies at its next boot,
safe mode included, as Particle's Device Restore USB does (``firmware.platforms.OTA_REGIONS``). One module
per OTA step: Device OS applies one module from the region per boot.

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
from firmware.platforms import (
    PENDING_UPDATE,
    Function,
    Platform,
    Storage,
    function_name,
    ota_address,
    ota_carries,
    ota_region,
    ota_regions,
    platform_by_id,
)
from firmware.versions import (
    CONTROL_REQUESTS_SINCE,
    GEN2_RELIABLE_CONTROL_SINCE,
    YMODEM_REMOVED_SYSTEM_VERSION,
    describe_system_version,
)


class Transport(StrEnum):
    """How the technician asked for the modules to travel."""

    USB = "usb"  # over USB: DFU, control-request update, or DFU into the OTA region, as the device allows
    SERIAL = "serial"  # YModem in listening mode only (Device OS below 6.0.0)
    AUTO = "auto"  # Particle's choice per module: what USB would do, YModem where USB cannot


#: The command-line flag that asks for each transport (None: no flag, the automatic choice).
TRANSPORT_FLAGS: dict[Transport, str | None] = {Transport.AUTO: None, Transport.USB: "--usb",
                                                Transport.SERIAL: "--serial"}  # fmt: skip


class Mechanism(StrEnum):
    DFU = "dfu"
    YMODEM = "ymodem"
    CONTROL = "control-request"
    DFU_OTA = "dfu-ota"  # over DFU into the OTA region + the pending-update flag; Device OS applies it at boot


#: The device mode each mechanism needs.
DEVICE_MODE = {Mechanism.DFU: "dfu", Mechanism.YMODEM: "listening", Mechanism.CONTROL: "normal",
               Mechanism.DFU_OTA: "dfu"}  # fmt: skip

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
    #: the module's hash as the device reports it (control request 90, Device OS 5.6.0 and later), kept only when
    #: every check of the device's passed: what tells "already on the device" from "same version, other build"
    hash: bytes | None = None


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
    #: DFU_OTA: (alt, address, bytes) of the pending-update flag written after the payload, before the leave
    pending_flag: tuple[int, int, bytes] | None = None

    def to_json(self) -> dict[str, Any]:
        m = self.module
        flag = self.pending_flag
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
            "pending_flag": None if flag is None else {"alt": flag[0], "address": flag[1], "value": flag[2].hex()},
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
    """The plan cannot be made; every reason is listed. ``suggestion``: a transport with which the same
    modules do plan for the same device (tried, not guessed), or None when no transport would help."""

    def __init__(self, refusals: Sequence[Refusal], suggestion: Transport | None = None):
        self.refusals = tuple(refusals)
        self.suggestion = suggestion
        text = "; ".join(f"{r.name}: {r.reason}" for r in self.refusals)
        super().__init__(text + (f" ({self.advice})" if suggestion is not None else ""))

    @property
    def advice(self) -> str | None:
        if self.suggestion is None:
            return None
        flag = TRANSPORT_FLAGS[self.suggestion]
        return f"it plans with {flag}" if flag else "it plans with no transport flag (Particle's own choice)"


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
    try:
        return _plan(device, wanted, transport, order)
    except PlanRefused as refused:
        for other in (Transport.AUTO, Transport.USB, Transport.SERIAL):
            if other is transport:
                continue
            try:
                _plan(device, wanted, other, order)
            except PlanRefused:
                continue
            raise PlanRefused(refused.refusals, other) from None
        raise


def _plan(device: DeviceFacts, wanted: Sequence[tuple[str, Module]], transport: Transport, order: str) -> FlashPlan:
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
    ota, ota_refusals = _ota_items(device, transport, ordered, warnings)
    if ota_refusals:
        raise PlanRefused(ota_refusals)
    ordered = _arrange(ordered, ota, device, transport)
    steps, more_refusals = _steps(device, transport, ordered, warnings, ota)
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
        out.append(Refusal("device", "the Core has no serial (YModem) flashing"))
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
    if transport is Transport.SERIAL and m.function == Function.ASSET:
        return ["assets cannot be sent over YModem (they go with their application by control-request update)"]
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


def _applier(device: DeviceFacts, items: Sequence[_Item]) -> tuple[int | None, int | None]:
    """(system version, system-part1 end address) of the Device OS that runs once the DFU steps are done: the
    plan's own system firmware where it brings one, else the device's (the end is then unknown)."""
    systems = [i.module for i in items if i.module.function in (Function.SYSTEM_PART, Function.MONO_FIRMWARE)]
    if not systems:
        return device.system_version, None
    part1 = [m for m in systems if (m.function, m.index) in ((Function.SYSTEM_PART, 1), (Function.MONO_FIRMWARE, 0))]
    return max(m.version for m in systems), (part1[0].end_address if part1 else None)


def _ota_target(device: DeviceFacts, items: Sequence[_Item], m: Module) -> tuple[tuple[int, int] | None, str]:
    """(alt, address) of the OTA region the module goes to, or (None, why not)."""
    p = device.platform
    if not ota_carries(p, m.function, m.index):
        return None, f"Device OS on a {p.name} does not take a {m.function_name} {m.index} from its OTA region"
    version, part1_end = _applier(device, items)
    if version is None:
        places = {(r.alt, r.address) for r in ota_regions(p)}
        if len(places) != 1 or None in {a for _, a in places}:
            return None, (
                "the Device OS that would apply it from the OTA region is unknown (the device's version cannot be "
                "read in DFU mode), and where that region is depends on it: add the system part it should run"
            )
        version = max(r.since for r in ota_regions(p))
    region = ota_region(p, version)
    if region is None:
        return None, (f"Device OS {describe_system_version(version)} does not apply a pending update from its OTA "
                      f"region (it came with 1.2.1)")  # fmt: skip
    address = ota_address(region, part1_end)
    if address is None:
        return None, (f"Device OS {describe_system_version(version)} keeps its OTA region after system-part1, whose "
                      "end the kiosk knows only when the plan writes it: add that system part")  # fmt: skip
    memory = p.memory_map(region.alt)
    if m.size > region.size or memory is None or not memory.can_write(address, m.size):
        return None, f"{m.size} bytes do not fit the OTA region at 0x{address:x} (DFU alt {region.alt})"
    return (region.alt, address), ""


def _ota_items(
    device: DeviceFacts, transport: Transport, items: Sequence[_Item], warnings: list[str]
) -> tuple[dict[int, tuple[int, int]], list[Refusal]]:
    """The items that go over DFU into the OTA region (id -> (alt, address)) and why others that must cannot.

    The OTA path is chosen where a control-request update cannot be had first: the device is in DFU mode (its
    Device OS may not run until the DFU steps are done: Device Restore USB's way), or its Device OS does not
    take control requests. It needs Device OS to run after the DFU leave: it applies the module at boot."""
    out: dict[int, tuple[int, int]] = {}
    refusals: list[Refusal] = []
    if transport is Transport.SERIAL:
        return out, refusals
    p = device.platform
    prefer = device.mode == "dfu" or not _control_works(p, device.system_version)
    for item in items:
        m = item.module
        if m.function in DFU_FUNCTIONS or m.function == Function.ASSET or not prefer:
            continue
        target, why = _ota_target(device, items, m)
        if target is not None:
            out[id(item)] = target
        elif device.mode == "dfu" and _control_works(p, device.system_version):
            warnings.append(f"{item.name}: not over DFU ({why}); it goes by control-request update once Device OS runs")
        elif transport is Transport.USB:
            refusals.append(Refusal(item.name, f"its Device OS takes no control requests, and {why}"))
    if device.mode == "dfu" and out and not any(
        i.module.function in (Function.SYSTEM_PART, Function.MONO_FIRMWARE) for i in items
    ):
        warnings.append(
            "the device is in DFU mode: Device OS must run after the leave to apply what goes into its OTA region; "
            "if it sits in DFU because its Device OS does not run, add the system part"
        )
    return out, refusals


def _arrange(
    ordered: list[_Item], ota: dict[int, tuple[int, int]], device: DeviceFacts, transport: Transport
) -> list[_Item]:
    """OTA items last in the DFU session, each its own pass (its write, the flag, the leave, the boot that
    applies it), in dependency order: Device OS checks an OTA module's dependencies before it applies it."""
    passes = [i for i in ordered if id(i) in ota]
    rest = [i for i in ordered if id(i) not in ota]
    dfu = [n for n, i in enumerate(rest) if _wants_dfu(i.module, transport)]
    if dfu:
        return rest[: dfu[-1] + 1] + passes + rest[dfu[-1] + 1 :]
    return passes + rest if device.mode == "dfu" else rest + passes


# --- steps -----------------------------------------------------------------------------------


def _control_works(platform: Platform, system_version: int | None) -> bool:
    if system_version is None:
        return True  # the executor asks the device and falls back if it does not answer
    if platform.generation == 2:
        return system_version >= GEN2_RELIABLE_CONTROL_SINCE
    return system_version >= CONTROL_REQUESTS_SINCE.get(platform.generation or 0, 1 << 30)


def _steps(
    device: DeviceFacts,
    transport: Transport,
    ordered: list[_Item],
    warnings: list[str],
    ota: dict[int, tuple[int, int]],
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
        elif id(item) in ota:
            alt, address = ota[id(item)]
            flag = (PENDING_UPDATE.alt, PENDING_UPDATE.offset, bytes([PENDING_UPDATE.value]))
            note = (f"into the OTA region (alt {alt}, 0x{address:x}) with the pending-update flag; Device OS applies "
                    "it at its next boot")  # fmt: skip
            steps.append(FlashStep(item.name, m, Mechanism.DFU_OTA, address, alt, m.data, 0, "dfu", note, flag))
        else:
            if transport is not Transport.SERIAL and _control_works(device.platform, system_version):
                mechanism = Mechanism.CONTROL
            elif transport is Transport.USB:
                running = "this Device OS" if system_version is None else describe_system_version(system_version)
                refusals.append(Refusal(item.name, f"over USB a {m.function_name} needs a control-request update "
                                                   f"or the OTA region, and Device OS {running} takes neither"))
                continue
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
                    refusals.append(Refusal(item.name, f"{when}, and Device OS 6.0.0 and later have no YModem"))
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
