"""What a simulated device answers to control requests (the Device OS side of ``hw.control``).

``control_handler(device)`` returns the ``(type_id, payload) -> (result, reply[, completion])``
function that the simulated control-request server calls (``handler.raw`` serves the raw 0x50
requests). Replies use the same protobuf messages as the client. Everything a reply depends on in
the device's Device OS version is data: :data:`MODULE_INFO_FORMATS` for module info (request 90),
one row per MCU family and version range, each with the device-os source of its facts.

Requests 40, 50 and 60 reset the way Device OS does: the reply first, and the reset 1 s after the
request has *ended*, in its completion handler (``system/src/system_control_internal.cpp``
``CTRL_REQUEST_RESET``/``DFU_MODE``/``SAFE_MODE``: ``setResult(req, 0, [](int result, void*) {
HAL_Delay_Milliseconds(1000); System.reset(); })``). A request ends when the host has read its result
(``HAL_USB_VENDOR_REQUEST_STATE_TX_COMPLETED`` after the CHECK that carried it,
``system/src/usb_control_request_channel.cpp``), or when the host cancels it or the bus resets; the
completion ignores its result, so a cancelled reset request resets too. A host that reads the result
late still gets it: the second starts then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from firmware.module import NotAModuleError, parse_module
from firmware.platforms import Function
from hw.control import (
    NCP_HASH_WORDS,
    SOFTDEVICE_UNIQUE_STR_ADDRESS,
    SOFTDEVICE_UNIQUE_STR_SIZE,
    DeviceMode,
    FinishFirmwareUpdateRequest,
    FirmwareModule,
    FirmwareModuleDependency,
    FirmwareUpdateDataRequest,
    GetDeviceIdReply,
    GetDeviceModeReply,
    GetModuleInfoReply,
    GetSystemVersionReply,
    LegacyModule,
    LegacyModuleDependency,
    ModuleStore,
    RequestType,
    Result,
    StartFirmwareUpdateReply,
    StartFirmwareUpdateRequest,
    decode,
)
from hw.sim.device import InstalledModule, Mode, SimDevice

#: Requests a protected device still answers: ``security_mode_check_control_request``
#: (``services/src/security_mode.cpp``, v6.1.1 to v6.2.0) lets DEVICE_ID, GET/SET_PROTECTED_STATE (76/77)
#: and APP_CUSTOM (10) through on USB and refuses every other one with SYSTEM_ERROR_PROTECTED (-1801).
#: (System version and device mode are refused too; the raw 0x50 requests never pass that check.)
PROTECTED_ALLOWED = {RequestType.DEVICE_ID}

Handler = Callable[[int, bytes], tuple]
#: Bytes per 253 request the simulated device asks for. NOT Device OS's value: startFirmwareUpdateRequest
#: (system/src/control/storage.cpp, v1.5.2 to v6.2.0) always asks for 1024. With 1024 a real-size bootloader
#: update takes 4x the requests, each costing the host's 50 ms first CHECK wait, which the ladder's minimum
#: does not count (old-bootloader@boron measured 1.15 x minimum against the 1.10 target): left for a decision.
UPDATE_CHUNK = 4096
MAX_UPDATE = 4 * 1024 * 1024  # larger than any module the control-request path carries (NCP: ~830 KB)

# --- module info (request 90) ----------------------------------------------------------------------

# MODULE_VALIDATION_* bits (dynalib/inc/module_info.h), the checked_flags/passed_flags of the new format.
_INTEGRITY, _DEPENDENCIES, _RANGE, _PLATFORM = 0x02, 0x04, 0x08, 0x10
_ALL_CHECKS = _INTEGRITY | _DEPENDENCIES | _PLATFORM | _RANGE
#: Module functions Device OS reports, and reports as dependencies (``is_module_function_valid``,
#: system/inc/system_info.h): settings (6) and assets (9) never appear in module info.
_REPORTED_FUNCTIONS = frozenset(
    {Function.RESOURCE, Function.BOOTLOADER, Function.MONO_FIRMWARE, Function.SYSTEM_PART, Function.USER_PART,
     Function.NCP_FIRMWARE, Function.RADIO_STACK}
)  # fmt: skip
#: Module function -> legacy FirmwareModuleType (``moduleFunctionToPb`` in system/src/control/storage.cpp
#: up to v5.5.0; control/storage.proto): the legacy reply knows no other functions and skips them.
_FUNCTION_TO_LEGACY = {
    Function.BOOTLOADER: 1,
    Function.SYSTEM_PART: 2,
    Function.USER_PART: 3,
    Function.MONO_FIRMWARE: 4,
    Function.NCP_FIRMWARE: 5,
    Function.RADIO_STACK: 6,
}
_F = Function


@dataclass(frozen=True)
class ModuleInfoFormat:
    """How Device OS answers request 90 on one MCU family, from system version ``since`` on.

    ``current``: the reply is ``modules`` (particle.cloud.FirmwareModule, with store, max_size, hash,
    flags; size = end - start + 4, the CRC included, or 0) rather than ``modules_deprecated``
    (GetModuleInfoReply.Module: size = end - start, only two failure bits, no hash).
    ``omits_invalid_user_part``: a user part that fails its range or integrity check is not reported
    at all (HAL_System_Info zeroes it). ``max_sizes``: ``module_bounds_t.maximum_size`` per
    (function, index), what the new format reports as max_size. ``source``: where each fact is.
    """

    family: str
    since: int
    current: bool
    omits_invalid_user_part: bool
    max_sizes: Mapping[tuple[int, int], int]
    source: str


_NRF52840_BOUNDS_TO_6101 = {
    (_F.BOOTLOADER, 0): 0xC000,
    (_F.SYSTEM_PART, 1): 0xA4000,  # the bound's end is 0xB4000 since 3.1.0; maximum_size stayed 0xA4000
    (_F.USER_PART, 1): 0x20000,  # module_user_compat (128 KB at 0xD4000)
    (_F.USER_PART, 2): 0x40000,  # module_user (256 KB at 0xB4000)
    (_F.MONO_FIRMWARE, 0): 0xC4000,
    (_F.NCP_FIRMWARE, 0): 1500 * 1024,  # module_ncp_mono
    (_F.RADIO_STACK, 0): 0x30000 - 0x1000,
}
_NRF52840_BOUNDS_FROM_6102 = {
    **_NRF52840_BOUNDS_TO_6101,
    (_F.SYSTEM_PART, 1): 0x8C000,  # system-part1 at 0x28000
    (_F.MONO_FIRMWARE, 0): 0xCC000,
    (_F.RADIO_STACK, 0): 0x27000 - 0x1000,
}
_RTL872X_BOUNDS = {
    (_F.BOOTLOADER, 0): 0x10000,
    (_F.BOOTLOADER, 1): 0x2000,  # module_mbr
    (_F.BOOTLOADER, 2): 0x4A000,  # module_km0_part1
    (_F.SYSTEM_PART, 1): 0x180000,
    (_F.USER_PART, 1): 0x180000,
    (_F.MONO_FIRMWARE, 0): 0x400000,
}
_LEGACY = "system/src/control/storage.cpp getModuleInfo up to v5.5.0 (v4.2.0 LTS too)"
_CURRENT = (
    "system/src/control/storage.cpp getModuleInfo from v5.6.0: EncodeFirmwareModules (FORCE_SHA), "
    "system/src/system_info_encoding.cpp"
)

#: One row per (MCU family, first system version); a device uses the last row of its family at or below
#: its system version. Module order is module_bounds order, which is (function, index) order on all three.
MODULE_INFO_FORMATS: tuple[ModuleInfoFormat, ...] = (
    ModuleInfoFormat("stm32f2xx", 0, False, False, {},
                     f"{_LEGACY}; hal/src/stm32f2xx/ota_flash_hal_stm32f2xx.cpp HAL_System_Info@v2.3.0 "
                     "reports every module it finds"),
    ModuleInfoFormat("nrf52840", 0, False, False, {}, f"{_LEGACY}; hal/src/nRF52840/ota_flash_hal.cpp@v3.1.0"),
    ModuleInfoFormat("nrf52840", 3200, False, True, {},
                     f"{_LEGACY}; hal/src/nRF52840/ota_flash_hal.cpp HAL_System_Info zeroes an invalid user part "
                     "from v3.2.0 (commit ed1ad6235)"),
    ModuleInfoFormat("nrf52840", 5600, True, True, _NRF52840_BOUNDS_TO_6101,
                     f"{_CURRENT}; max sizes hal/src/nRF52840/ota_module_bounds.c@v5.6.0..v6.1.1"),
    ModuleInfoFormat("nrf52840", 6102, True, True, _NRF52840_BOUNDS_FROM_6102,
                     f"{_CURRENT}; max sizes hal/src/nRF52840/ota_module_bounds.c from 6.1.2 (commit c292f7f3b, "
                     "f27e6281d 'increase system-part1 size'), v6.2.0"),
    ModuleInfoFormat("rtl872x", 0, False, True, {},
                     f"{_LEGACY}; hal/src/rtl872x/ota_flash_hal.cpp HAL_System_Info zeroes an invalid user part "
                     "(every release, v5.0.0 on)"),
    ModuleInfoFormat("rtl872x", 5600, True, True, _RTL872X_BOUNDS,
                     f"{_CURRENT}; max sizes hal/src/rtl872x/ota_module_bounds.c@v5.6.0..v6.2.0"),
)  # fmt: skip


def module_info_format(family: str, system_version: int) -> ModuleInfoFormat:
    """The row of :data:`MODULE_INFO_FORMATS` a device of this MCU family and system version answers by."""
    rows = [f for f in MODULE_INFO_FORMATS if f.family == family and f.since <= system_version]
    if not rows:
        raise LookupError(f"no module-info format for {family} at system version {system_version}")
    return max(rows, key=lambda f: f.since)


@dataclass(frozen=True)
class _Reported:
    """One module the way Device OS's HAL_System_Info sees it (hal_module_t), before encoding."""

    function: int
    index: int
    version: int
    length: int  # module_end_address - module_start_address (0: no header, radio stack and NCP)
    checked: int
    passed: int
    sha: bytes  # suffix.sha
    dependencies: tuple[tuple[int, int, int], ...]


def _dependency_met(device: SimDevice, function: int, index: int, version: int) -> bool:
    """``validate_module_dependencies``: the module there (its header only, no CRC check) is new enough."""
    have = device.modules.get((function, index))
    return have is not None and have.version >= version


def _reported(device: SimDevice, m: InstalledModule) -> _Reported:
    """What ``fetch_module`` gives for one module (hal/src/nRF52840/ota_module.cpp, rtl872x, stm32)."""
    if m.function == Function.RADIO_STACK:
        # platform_radio_stack_fetch_module_info (hal/src/nRF52840/platform_radio_stack.cpp): the
        # SoftDevice's firmware id as version, every check passed ("FIXME: assuming"), and the
        # SoftDevice's 20-byte unique string (nrf_sdm.h SD_UNIQUE_STR) in place of a SHA.
        unique = device.flash.read(0, SOFTDEVICE_UNIQUE_STR_ADDRESS, SOFTDEVICE_UNIQUE_STR_SIZE)
        return _Reported(m.function, 0, m.version, 0, _ALL_CHECKS, _ALL_CHECKS, unique.ljust(32, b"\0"), ())
    if m.function == Function.NCP_FIRMWARE:
        # platform_ncp_fetch_module_info (hal/network/ncp/wifi/platform_ncp_update.cpp): the version the
        # ESP32 reports, no addresses (size 0), no dependencies, every check passed, and the version as
        # every u16 of the SHA ("FIXME: NCP firmware should return some kind of a unique string/hash").
        return _Reported(m.function, 0, m.version, 0, _ALL_CHECKS, _ALL_CHECKS, m.version.to_bytes(2, "little")
                         * NCP_HASH_WORDS, ())  # fmt: skip
    module = m.module
    assert module is not None
    deps = tuple((d.function, d.index, d.version) for d in module.dependencies if d.function in _REPORTED_FUNCTIONS)
    passed = 0
    if device.platform.slot_for_module(module.function, module.index, module.start_address, module.end_address):
        passed |= _RANGE  # out of range: fetch_module stops there, nothing else passes, no suffix read
        if module.platform_id == device.platform.id:
            passed |= _PLATFORM
        if all(_dependency_met(device, *d) for d in deps):
            passed |= _DEPENDENCIES
        if module.crc_ok:  # FLASH_VerifyCRC32: the CRC only (Device OS never checks the SHA)
            passed |= _INTEGRITY
    sha = module.sha256 if passed & _RANGE else bytes(32)
    return _Reported(m.function, m.index, m.version, module.end_address - module.start_address, _ALL_CHECKS,
                     passed, sha, deps)  # fmt: skip


def _checks(device: SimDevice, m: InstalledModule) -> tuple[int, int]:
    """(checked, passed) flags of one module as HAL_System_Info fills them (the serial ``s`` table uses them too)."""
    r = _reported(device, m)
    return r.checked, r.passed


def _reported_modules(device: SimDevice, fmt: ModuleInfoFormat) -> list[_Reported]:
    out = []
    for m in sorted(device.modules.values(), key=lambda m: (m.function, m.index)):
        if m.function not in _REPORTED_FUNCTIONS or (m.module is None and m.function != Function.RADIO_STACK):
            continue  # only the radio stack is known without a module header (by the SoftDevice's id)
        r = _reported(device, m)
        if fmt.omits_invalid_user_part and r.function == Function.USER_PART and not (r.passed & _INTEGRITY):
            continue
        out.append(r)
    return out


def _current(r: _Reported, fmt: ModuleInfoFormat) -> FirmwareModule:
    """particle.cloud.FirmwareModule as EncodeFirmwareModules fills it (system/src/system_info_encoding.cpp)."""
    return FirmwareModule(
        type=r.function,
        index=r.index,
        version=r.version,
        store=ModuleStore.MAIN,  # the simulator models main-store modules only (no factory image)
        max_size=fmt.max_sizes.get((r.function, r.index), 0),
        checked_flags=r.checked,
        passed_flags=r.passed,
        hash=r.sha,  # FORCE_SHA: every module's suffix.sha
        dependencies=[FirmwareModuleDependency(*d) for d in r.dependencies],
        size=r.length + 4 if r.length > 0 else 0,  # "if (pbModule.size > 0) pbModule.size += ... /* CRC */"
    )


def _legacy(r: _Reported) -> LegacyModule | None:
    """GetModuleInfoReply.Module as storage.cpp filled it up to v5.5.0: size end - start, failure bits."""
    if r.function not in _FUNCTION_TO_LEGACY:
        return None
    validity = (0x01 if not r.passed & _INTEGRITY else 0) | (0x02 if not r.passed & _DEPENDENCIES else 0)
    deps = [LegacyModuleDependency(_FUNCTION_TO_LEGACY[f], i, v) for f, i, v in r.dependencies
            if f in _FUNCTION_TO_LEGACY]  # fmt: skip
    return LegacyModule(_FUNCTION_TO_LEGACY[r.function], r.index, r.version, r.length, validity, deps)


def module_info_reply(device: SimDevice) -> bytes:
    """The GetModuleInfoReply the device sends, in the format of its own Device OS version."""
    fmt = module_info_format(device.platform.mcu.name, device.system_version or 0)
    reported = _reported_modules(device, fmt)
    if fmt.current:
        return bytes(GetModuleInfoReply(modules=[_current(r, fmt) for r in reported]))
    return bytes(GetModuleInfoReply(modules_deprecated=[m for r in reported if (m := _legacy(r)) is not None]))


# --- the handler -----------------------------------------------------------------------------------

#: Requests whose completion handler resets the device (1 s after the request ended), and into what.
RESETS: dict[int, str | None] = {RequestType.RESET: None, RequestType.DFU_MODE: "dfu", RequestType.SAFE_MODE: "safe"}


def control_handler(device: SimDevice) -> Handler:
    """The request handler of ``device``'s control-request server."""

    def reset_into(into: str | None) -> tuple:
        # old firmware (gen2-old) acknowledges and then does nothing: request_reset decides
        return Result.OK, b"", lambda result: device.request_reset(into)

    def mode() -> tuple[int, bytes]:
        current = DeviceMode.LISTENING if device.mode == Mode.LISTENING else DeviceMode.NORMAL
        return Result.OK, bytes(GetDeviceModeReply(mode=current))

    def listen(start: bool) -> tuple[int, bytes]:
        (device.start_listening if start else device.stop_listening)()
        return Result.OK, b""

    update: dict[str, object] = {}

    def start_update(payload: bytes) -> tuple[int, bytes]:
        request = decode(StartFirmwareUpdateRequest, payload)
        if not 0 < request.size <= MAX_UPDATE:
            return Result.TOO_LARGE if request.size else Result.INVALID_ARGUMENT, b""
        update.clear()
        update.update(size=request.size, data=bytearray())
        return Result.OK, bytes(StartFirmwareUpdateReply(chunk_size=UPDATE_CHUNK))

    def update_data(payload: bytes) -> tuple[int, bytes]:
        if "data" not in update:
            return Result.INVALID_STATE, b""
        chunk = decode(FirmwareUpdateDataRequest, payload).data
        data = update["data"]
        if len(data) + len(chunk) > update["size"]:
            update.clear()
            return Result.OUT_OF_RANGE, b""
        data.extend(chunk)
        return Result.OK, b""

    def finish_update(payload: bytes) -> tuple:
        if "data" not in update or len(update["data"]) != update["size"]:
            update.clear()
            return Result.INVALID_STATE, b""
        validate_only = decode(FinishFirmwareUpdateRequest, payload).validate_only
        data = bytes(update.pop("data"))
        update.clear()
        if not _update_valid(device, data):
            return Result.INVALID_ARGUMENT, b""  # what the device answers when validation fails
        if validate_only:
            return Result.OK, b""
        update["apply"] = data

        def apply(result: int) -> None:
            # firmwareUpdateCompletionHandler (system/src/control/storage.cpp) applies whatever the result,
            # unless the update was cancelled (252) or restarted (250) before the request ended
            if update.get("apply") is data:
                update.clear()
                device.apply_update(data)

        return Result.OK, b"", apply

    def module_info() -> tuple[int, bytes]:
        try:
            return Result.OK, module_info_reply(device)
        except LookupError:  # a family MODULE_INFO_FORMATS lacks (the Core): no request 90 there
            return Result.NOT_SUPPORTED, b""

    def cancel_update() -> tuple[int, bytes]:
        update.clear()
        return Result.OK, b""

    table: dict[int, Callable[[], tuple]] = {
        RequestType.DEVICE_ID: lambda: (Result.OK, bytes(GetDeviceIdReply(id=device.device_id))),
        RequestType.SYSTEM_VERSION: lambda: (
            Result.OK,
            bytes(GetSystemVersionReply(version=device.system_version_string)),
        ),
        **{type_id: (lambda into=into: reset_into(into)) for type_id, into in RESETS.items()},
        RequestType.START_LISTENING: lambda: listen(True),
        RequestType.STOP_LISTENING: lambda: listen(False),
        RequestType.GET_DEVICE_MODE: mode,
        RequestType.GET_MODULE_INFO: module_info,
        RequestType.CANCEL_FIRMWARE_UPDATE: cancel_update,
    }
    with_payload: dict[int, Callable[[bytes], tuple]] = {
        RequestType.START_FIRMWARE_UPDATE: start_update,
        RequestType.FIRMWARE_UPDATE_DATA: update_data,
        RequestType.FINISH_FIRMWARE_UPDATE: finish_update,
    }

    def handle(type_id: int, payload: bytes) -> tuple:
        with device.clock.lock:
            if device.faults.protected and type_id not in PROTECTED_ALLOWED:
                return Result.DEVICE_PROTECTED, b""
            if type_id in with_payload:
                return with_payload[type_id](payload)
            action = table.get(type_id)
            if action is None:
                return Result.NOT_SUPPORTED, b""
            return action()

    def raw(type_id: int, data: bytes) -> bytes | int | None:
        """The raw 0x50 requests (``processVendorRequest``, system/src/usb_control_request_channel.cpp): served
        in the USB interrupt, without the protection check; None stalls (an unknown type)."""
        with device.clock.lock:
            if type_id == RequestType.DEVICE_ID:
                return device.device_id.upper().encode()  # bytes2hexbuf: upper-case hex
            if type_id == RequestType.SYSTEM_VERSION:
                return device.system_version_string.encode()
            if type_id == RequestType.RESET:
                device.request_reset(None, delay_s=0.0)  # HAL_Core_System_Reset_Ex at once, no reply first
                return 0
            if type_id == RequestType.CLOUD_DISCONNECT:
                return 0  # the bench has no network to disconnect from
            return None

    handle.raw = raw  # type: ignore[attr-defined]
    handle.on_done = None  # type: ignore[attr-defined]  # completions travel with each request now
    return handle


def _update_valid(device: SimDevice, data: bytes) -> bool:
    """What Device OS checks before applying a module it received: integrity, platform, place."""
    try:
        module = parse_module(data)
    except NotAModuleError:
        return False
    if module.problems or (module.platform_id != device.platform.id and module.function != 9):
        return False
    slot = device.platform.slot_for_module(module.function, module.index, module.start_address, module.end_address)
    return slot is not None
