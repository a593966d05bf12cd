"""What a simulated device answers to control requests (the Device OS side of ``hw.control``).

``control_handler(device)`` returns the ``(type_id, payload) -> (result, reply)`` function that the
simulated control-request server calls. Replies use the same protobuf messages as the client.
Module info (request 90) reports each installed module with the checks Device OS runs at boot
(integrity, dependencies, platform, range), in the new format from Device OS 5.6.0 and the legacy
one before it.
"""

from __future__ import annotations

from collections.abc import Callable

from firmware.module import NotAModuleError, parse_module
from hw.control import (
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
    RequestType,
    Result,
    StartFirmwareUpdateReply,
    StartFirmwareUpdateRequest,
    decode,
)
from hw.sim.device import InstalledModule, Mode, SimDevice

NEW_MODULE_INFO_SINCE = 5600  # Device OS 5.6.0 switched to particle.cloud.FirmwareModule
#: Requests a protected device still answers (identity and state); everything else is refused.
PROTECTED_ALLOWED = {RequestType.DEVICE_ID, RequestType.SYSTEM_VERSION, RequestType.GET_DEVICE_MODE}
_FUNCTION_TO_LEGACY = {2: 1, 4: 2, 5: 3, 3: 4, 7: 5, 8: 6}
_INTEGRITY, _DEPENDENCIES, _RANGE, _PLATFORM = 0x02, 0x04, 0x08, 0x10

Handler = Callable[[int, bytes], tuple[int, bytes]]
UPDATE_CHUNK = 4096  # bytes per 253 request the simulated device asks for
MAX_UPDATE = 4 * 1024 * 1024  # larger than any module the control-request path carries (NCP: ~830 KB)


def _checks(device: SimDevice, m: InstalledModule) -> tuple[int, int]:
    """(checked, passed) flags the way Device OS fills them for one module."""
    checked = _INTEGRITY | _DEPENDENCIES | _PLATFORM | _RANGE
    module = m.module
    if module is None:  # the radio stack has no header in flash: the SoftDevice's id is all there is
        return checked, checked if m.valid_integrity else 0
    passed = 0
    if m.valid_integrity:
        passed |= _INTEGRITY
    if module is not None and device.dependencies_met(module):
        passed |= _DEPENDENCIES
    if module is not None and module.platform_id == device.platform.id:
        passed |= _PLATFORM
    if module is not None and device.platform.slot_for_module(
        module.function, module.index, module.start_address, module.end_address
    ):
        passed |= _RANGE
    return checked, passed


def module_info_reply(device: SimDevice) -> bytes:
    version = device.system_version or 0
    entries = sorted(device.modules.values(), key=lambda m: (m.function, m.index))
    if version >= NEW_MODULE_INFO_SINCE:
        modules = []
        for m in entries:
            checked, passed = _checks(device, m)
            deps = [FirmwareModuleDependency(d.function, d.index, d.version) for d in _deps(m)]
            modules.append(
                FirmwareModule(
                    type=m.function,
                    index=m.index,
                    version=_version(m),
                    checked_flags=checked,
                    passed_flags=passed,
                    dependencies=deps,
                    size=len(m.data),
                )
            )
        return bytes(GetModuleInfoReply(modules=modules))
    legacy = []
    for m in entries:
        if m.function not in _FUNCTION_TO_LEGACY:
            continue
        checked, passed = _checks(device, m)
        failed = checked ^ passed
        validity = (0x01 if failed & _INTEGRITY else 0) | (0x02 if failed & _DEPENDENCIES else 0)
        deps = [LegacyModuleDependency(_FUNCTION_TO_LEGACY.get(d.function, 0), d.index, d.version) for d in _deps(m)]
        legacy.append(
            LegacyModule(
                type=_FUNCTION_TO_LEGACY[m.function],
                index=m.index,
                version=_version(m),
                size=len(m.data),
                validity=validity,
                dependencies=deps,
            )
        )
    return bytes(GetModuleInfoReply(modules_deprecated=legacy))


def _deps(m: InstalledModule) -> tuple:
    return m.module.real_dependencies if m.module is not None else ()


def _version(m: InstalledModule) -> int:
    return m.version


def control_handler(device: SimDevice) -> Handler:
    """The request handler of ``device``'s control-request server."""

    def reset_into(into: str | None) -> tuple[int, bytes]:
        device.request_reset(into)  # old firmware (gen2-old) acknowledges and then does nothing
        return Result.OK, b""

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

    def finish_update(payload: bytes) -> tuple[int, bytes]:
        if "data" not in update or len(update["data"]) != update["size"]:
            update.clear()
            return Result.INVALID_STATE, b""
        validate_only = decode(FinishFirmwareUpdateRequest, payload).validate_only
        data = bytes(update.pop("data"))
        update.clear()
        if not _update_valid(device, data):
            return Result.INVALID_ARGUMENT, b""  # what the device answers when validation fails
        if not validate_only:
            update["apply"] = data  # applied once the reply has been read (the completion handler)
        return Result.OK, b""

    def cancel_update() -> tuple[int, bytes]:
        update.clear()
        return Result.OK, b""

    table: dict[int, Callable[[], tuple[int, bytes]]] = {
        RequestType.DEVICE_ID: lambda: (Result.OK, bytes(GetDeviceIdReply(id=device.device_id))),
        RequestType.SYSTEM_VERSION: lambda: (
            Result.OK,
            bytes(GetSystemVersionReply(version=device.system_version_string)),
        ),
        RequestType.RESET: lambda: reset_into(None),
        RequestType.DFU_MODE: lambda: reset_into("dfu"),
        RequestType.SAFE_MODE: lambda: reset_into("safe"),
        RequestType.START_LISTENING: lambda: listen(True),
        RequestType.STOP_LISTENING: lambda: listen(False),
        RequestType.GET_DEVICE_MODE: mode,
        RequestType.GET_MODULE_INFO: lambda: (Result.OK, module_info_reply(device)),
        RequestType.CANCEL_FIRMWARE_UPDATE: cancel_update,
    }
    with_payload: dict[int, Callable[[bytes], tuple[int, bytes]]] = {
        RequestType.START_FIRMWARE_UPDATE: start_update,
        RequestType.FIRMWARE_UPDATE_DATA: update_data,
        RequestType.FINISH_FIRMWARE_UPDATE: finish_update,
    }

    def on_done(type_id: int, result: int) -> None:
        """Device OS acts in the request's completion handler, after the host has read the reply."""
        if type_id == RequestType.FINISH_FIRMWARE_UPDATE and result == Result.OK and "apply" in update:
            device.apply_update(update.pop("apply"))

    def handle(type_id: int, payload: bytes) -> tuple[int, bytes]:
        with device.clock.lock:
            if device.faults.protected and type_id not in PROTECTED_ALLOWED:
                return Result.DEVICE_PROTECTED, b""
            if type_id in with_payload:
                return with_payload[type_id](payload)
            action = table.get(type_id)
            if action is None:
                return Result.NOT_SUPPORTED, b""
            return action()

    handle.on_done = on_done  # type: ignore[attr-defined]
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
