"""Particle's own USB library, particle-usb 4.1 (npm), drives the simulated device of every platform family through
its public API (issue 14, item 4a).

One node run per platform (``tests/peers/particle_usb_standin/driver.js`` through the stand-in for node's ``usb``
package, served by ``particle_usb_bridge.py`` from ``simulated_bench("healthy@<platform>")``) walks the device
through: list, open, device id, system version, module info, listening mode on and off, reset (and reset with a
late poll), safe mode, DFU mode, the protection state in DFU, a module written and read back over particle-usb's
own DfuSe code, the DFU leave, module info again, a control-request firmware update, module info again, and safe
mode from DFU (DfuSe 0xFA). Each test below checks one step against what a real device answers, with the
device-os (or particle-usb) source that says so; a failure shows particle-usb's call, what it returned or threw,
and every transfer of that step (setup fields, payload, answer).

Where the simulator is known to be wrong (issue 14 lists it; fixes are under way in hw/sim), the test is marked
``xfail(strict=True)`` with the fault and its source, so it turns red once the fix lands and the mark must go.

``make test`` runs Boron, Argon, Photon and P2 (each family; a platform's run takes about 0.7 s); ``KIOSK_LONG=1``
adds Electron, P1, B-SoM, B5-SoM, Tracker, M-SoM and Tracker M.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import pytest

from firmware.builder import build_module
from firmware.module import parse_module
from firmware.platforms import Function, platform_by_name
from firmware.versions import bootloader_releases, system_version_for
from tests.interop.particle_usb_bridge import (
    Session,
    Step,
    node_binary,
    particle_usb_version,
    run_particle_usb,
)

LONG = os.environ.get("KIOSK_LONG") == "1"
SHORT_PLATFORMS = ("boron", "argon", "photon", "p2")
LONG_PLATFORMS = ("electron", "p1", "bsom", "b5som", "tracker", "msom", "trackerm")
PLATFORMS = SHORT_PLATFORMS + (LONG_PLATFORMS if LONG else ())

STEPS = (
    "environment",
    "list",
    "open",
    "device_id",
    "system_version",
    "module_info",
    "listen",
    "stop_listening",
    "reset",
    "reset_late_poll",
    "safe_mode",
    "enter_dfu",
    "dfu_protection",
    "dfu_write_read",
    "dfu_leave",
    "module_info_after_dfu",
    "update_firmware",
    "module_info_after_update",
    "dfu_safe_mode",
)

DFU_APP_VERSION, UPDATE_APP_VERSION = 1001, 1002
NEW_MODULE_INFO_SINCE = 5600  # Device OS 5.6.0: GetModuleInfoReply.modules (FirmwareModule); before: modules_deprecated


def _require_particle_usb() -> None:
    """node and particle-usb 4.1 must be there: ``make test`` installs them (``make tools``), so a missing peer is a
    broken set-up, and the suite fails rather than skips."""
    if node_binary() is None:
        pytest.fail("node is not installed: run `make tools` (Debian packages nodejs and npm)", pytrace=False)
    version = particle_usb_version()
    if version is None or not version.startswith("4.1."):
        pytest.fail(
            f"particle-usb 4.1.x is not installed in tests/peers/node_modules (found {version}): run "
            "`make tools` (npm ci --prefix tests/peers)",
            pytrace=False,
        )


# --- the known simulator faults (issue 14), by test and platform family or platform -------------------------------

FAULT_MODULE_INFO = (
    "known simulator fault (issue 14): module info (request 90) has no hash and no max_size, and no store; Device OS "
    "fills store, max_size, size (end - start + 4) and, for GetModuleInfo (FORCE_SHA), the SHA-256 of every module "
    "(device-os system/src/system_info_encoding.cpp EncodeFirmwareModules, system/src/control/storage.cpp "
    "getModuleInfo); particle-usb's getFirmwareModuleInfo() calls hash.toString('hex') and throws"
)
FAULT_MODULE_INFO_LEGACY = (
    "known simulator fault (issue 14): in the legacy reply (modules_deprecated, Device OS < 5.6.0) every size is 4 "
    "too large: Device OS sends module_end_address - module_start_address (device-os v2.3.1 "
    "system/src/control/storage.cpp getModuleInfo)"
)
FAULT_RESET_TIMING = (
    "known simulator fault (issue 14): requests 40/50/60 reset 1 s after the request is handled; Device OS resets "
    "1 s after the host has read the result: the 1000 ms delay is in the request's completion handler "
    "(device-os system/src/system_control_internal.cpp), which runs once the CHECK reply carrying the result has "
    "gone out (system/src/usb_control_request_channel.cpp, HAL_USB_VENDOR_REQUEST_STATE_TX_COMPLETED -> "
    "finishActiveRequest -> finishRequest)"
)
FAULT_GEN2_DFU = (
    "known simulator fault (issue 14): the Gen2 bootloader (ST's DfuSe code) does not stall CLRSTATUS outside "
    "dfuERROR (it enters dfuERROR/errUNKNOWN) nor ABORT inside dfuERROR (it does nothing): device-os v2.3.1 "
    "platform/MCU/STM32F2xx/STM32_USB_Device_Driver/src/usbd_dfu_core.c DFU_Req_CLRSTATUS, DFU_Req_ABORT; the "
    "simulator stalls both, so particle-usb's readOverDfu after writeOverDfu (CLRSTATUS in dfuDNLOAD_IDLE, then "
    "abortToIdle) fails"
)
FAULT_BOOTLOADER_VERSION = (
    "known simulator fault (issue 14): the simulated bootloader's DfuSe commands and strings do not follow its "
    "version: a 6.1.1 bootloader lists 00 21 41 FA (no 0xFB) and serves no string 0xFA; both first appear in 6.2.0 "
    "(device-os v6.1.1 / v6.2.0 bootloader/src/nRF52840/usbd_dfu.cpp handleDfuUpload, usbd_device.cpp "
    "device_state_as_string)"
)

#: (test, family or platform) -> reason
KNOWN_FAULTS: dict[tuple[str, str], str] = {
    # Every fault this suite found has been fixed in hw/sim (module info per Device OS version, reset in the
    # request's completion, Gen2 DfuSe state machine, bootloader commands and strings by version). A new one
    # goes here, with its source, as a strict xfail until the simulator is fixed.
}


def cases(test: str, *, extra: tuple = ()) -> list:
    """The platforms (or (platform, x) pairs), each with the xfail mark of a known fault where there is one."""
    out = []
    for platform in PLATFORMS:
        family = platform_by_name(platform).mcu.name
        reason = KNOWN_FAULTS.get((test, platform)) or KNOWN_FAULTS.get((test, family))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        for value in extra or (None,):
            args = (platform, value) if extra else (platform,)
            out.append(pytest.param(*args, marks=marks, id=f"{platform}-{value}" if extra else platform))
    return out


# --- one run per platform ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    platform: str
    family: str
    device_id: str
    release: str  # the Device OS the simulated device runs when the run starts
    system_version: int
    bootloader_release: int | None  # system module version of the earliest release with this bootloader
    old_app: bytes
    dfu_app: bytes
    update_app: bytes
    session: Session

    def step(self, name: str) -> Step:
        return self.session.step(name)


def _app(user, version: int, seed: int) -> bytes:
    """A user app like the one the device has (same index, same dependencies), of another version and body."""
    m = user.module
    return build_module(
        platform_id=m.platform_id,
        function=Function.USER_PART,
        version=version,
        index=m.index,
        dependencies=[(d.function, d.index, d.version) for d in m.real_dependencies],
        body_size=6000,
        seed=seed,
    )


def run(platform: str) -> Run:
    _require_particle_usb()
    return _run(platform)


@functools.cache
def _run(platform: str) -> Run:
    facts: dict = {}

    def plan(bench) -> dict:
        device = bench.slots[0].device
        user = next(m for (f, _), m in device.modules.items() if f == Function.USER_PART)
        boot = device.modules.get((Function.BOOTLOADER, 0))
        releases = bootloader_releases(boot.version) if boot is not None else ()
        dfu_app, update_app = _app(user, DFU_APP_VERSION, 101), _app(user, UPDATE_APP_VERSION, 102)
        facts.update(
            device_id=device.device_id,
            release=device.system_version_string,
            system_version=device.system_version,
            bootloader_release=min((system_version_for(r) or 0 for r in releases), default=None),
            old_app=user.data,
            dfu_app=dfu_app,
            update_app=update_app,
        )
        return {
            "device_id": device.device_id,
            "steps": list(STEPS),
            "args": {
                "dfu_write_read": {"bytes": dfu_app, "startAddr": parse_module(dfu_app).start_address},
                "update_firmware": {"bytes": update_app},
            },
        }

    session = run_particle_usb(f"healthy@{platform}", plan)
    return Run(platform, platform_by_name(platform).mcu.name, session=session, **facts)


def check(condition: bool, fact: str, step: Step, detail: str = "") -> None:
    """Assert with the source fact, what particle-usb's call did, and the wire of its step."""
    if not condition:
        raise AssertionError(f"{fact}\n{detail + chr(10) if detail else ''}{step.describe()}")


def ok(step: Step, fact: str) -> None:
    check(step.ok is True, f"particle-usb's {step.call} must succeed: {fact}", step)


# --- the tests -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", cases("environment"))
def test_particle_usb_runs_on_the_standin(platform):
    step = run(platform).step("environment")
    ok(step, "particle-usb loads")
    env = step.value
    check(env["particleUsb"].startswith("4.1."), "particle-usb 4.1.x is the library under test", step)
    check(
        env["usbIsStandin"] and env["usbResolvesTo"].endswith("particle_usb_standin/index.js"),
        "particle-usb's require('usb') (src/usb-device-node.js) must load the stand-in",
        step,
    )
    check(env["realUsbLoaded"] == [], "the real node-usb (libusb) must never load", step)


@pytest.mark.parametrize("platform", cases("list"))
def test_list_finds_the_device(platform):
    r = run(platform)
    step = r.step("list")
    ok(step, "getDevices() enumerates Particle VID/PIDs (particle-usb src/device-base.js getDevices)")
    p = platform_by_name(platform)
    expected = {
        "type": platform,
        "platformId": p.id,
        "vendorId": p.usb_vid,
        "productId": p.usb_pid_normal,
        "isInDfuMode": False,
    }
    check(step.value == [expected], "one device in normal mode, by @particle/device-constants' VID/PID", step)


@pytest.mark.parametrize("platform", cases("open"))
def test_open_reads_the_id_and_version(platform):
    r = run(platform)
    step = r.step("open")
    ok(step, "openDeviceById(id) opens it (particle-usb src/device-base.js open)")
    check(
        step.value["id"] == r.device_id,
        "the id is the USB serial string, lower-cased (particle-usb src/device-base.js open)",
        step,
    )
    check(step.value["type"] == platform and not step.value["isInDfuMode"], "its platform, in normal mode", step)
    check(
        step.value["firmwareVersion"] == r.release,
        "firmwareVersion is vendor request 30's reply (usb_control_request_channel.cpp: SYSTEM_VERSION_STRING)",
        step,
    )


@pytest.mark.parametrize("platform", cases("device_id"))
def test_device_id(platform):
    r = run(platform)
    step = r.step("device_id")
    ok(step, "GetDeviceIdRequest (20)")
    check(
        step.value == r.device_id,
        "Device OS answers the id in lower-case hex (device-os system/src/control/config.cpp getDeviceId)",
        step,
    )


@pytest.mark.parametrize("platform", cases("system_version"))
def test_system_version(platform):
    r = run(platform)
    step = r.step("system_version")
    ok(step, "the raw request 30 at open")
    check(
        step.value == r.release,
        f"the release string ({r.release}): device-os system/src/usb_control_request_channel.cpp answers "
        "CTRL_REQUEST_SYSTEM_VERSION with SYSTEM_VERSION_STRING",
        step,
    )


def _expected_modules(r: Run, state: dict) -> list[dict]:
    """What getFirmwareModuleInfo() returns for the modules the simulated device has, by Device OS's encoder."""
    new = r.system_version >= NEW_MODULE_INFO_SINCE
    out = []
    for m in state["modules"]:
        name = m["name"]  # particle-usb's names (src/device.js FirmwareModule) are firmware.platforms.Function's
        entry: dict = {"type": name, "index": m["index"], "version": m["version"]}
        if "start" in m:
            size = m["end"] - m["start"]
            entry["size"] = size + 4 if new else size
        else:  # the radio stack: no module header in flash (hal/src/nRF52840/platform_radio_stack.cpp): no bounds
            entry["size"] = 0
        if name == "NCP_FIRMWARE":  # the ESP32's firmware (hal/network/ncp/wifi/platform_ncp_update.cpp)
            entry["size"] = 0
        if new:
            entry["store"] = "MAIN"  # MAIN_MODULE_STORE
            if "sha256" in m and name != "NCP_FIRMWARE":
                entry["hash"] = m["sha256"]
            elif name == "NCP_FIRMWARE":
                entry["hash"] = m["version"].to_bytes(2, "little").hex() * 16  # "we simply fill the SHA with version"
        out.append(entry)
    return out


def _compare_module_info(r: Run, step: Step, reported: list[dict]) -> list[str]:
    """Every difference between particle-usb's module list and the simulated device's modules."""
    problems = []
    state = step.before
    expected = _expected_modules(r, state)
    by_key = {(m["type"], m["index"]): m for m in reported}
    want_keys = [(e["type"], e["index"]) for e in expected]
    if sorted(by_key) != sorted(want_keys):
        problems.append(f"modules reported {sorted(by_key)}, the device has {sorted(want_keys)}")
    deps = {(m["name"], m["index"]): m for m in state["modules"]}
    for e in expected:
        got = by_key.get((e["type"], e["index"]))
        if got is None:
            continue
        for key, want in e.items():
            if got.get(key) != want:
                problems.append(f"{e['type']} {e['index']}: {key} is {got.get(key)!r}, a real device says {want!r}")
        if r.system_version >= NEW_MODULE_INFO_SINCE:
            if not (isinstance(got.get("maxSize"), int) and got["maxSize"] >= max(got.get("size") or 0, 1)):
                problems.append(
                    f"{e['type']} {e['index']}: maxSize {got.get('maxSize')!r} with size {got.get('size')!r}; Device "
                    "OS sends its bounds' maximum_size (hal/src/*/ota_module_bounds.c), which no module it accepts "
                    "exceeds"
                )
            if got.get("validityErrors"):
                problems.append(f"{e['type']} {e['index']}: validityErrors {got['validityErrors']} on a healthy device")
        elif got.get("validity"):
            problems.append(f"{e['type']} {e['index']}: validity {got['validity']} on a healthy device")
        module = deps.get((e["type"], e["index"]))
        if module is not None and module["name"] in ("RADIO_STACK", "NCP_FIRMWARE") and got.get("dependencies"):
            problems.append(f"{e['type']}: dependencies {got['dependencies']}; Device OS reports none")
    return problems


@pytest.mark.parametrize("platform", cases("module_info"))
def test_module_info_matches_the_device(platform):
    r = run(platform)
    step = r.step("module_info")
    ok(step, FAULT_MODULE_INFO.split(": ", 1)[1])
    problems = _compare_module_info(r, step, step.value)
    check(
        not problems,
        "module info as Device OS encodes it (system_info_encoding.cpp; legacy: v2.3.1 system/src/control/storage.cpp)",
        step,
        "\n".join(problems),
    )


@pytest.mark.parametrize("platform", cases("listen"))
def test_listening_mode_on_and_off(platform):
    r = run(platform)
    on, off = r.step("listen"), r.step("stop_listening")
    ok(on, "START_LISTENING (70) enters listening mode synchronously (system_control_internal.cpp network_listen_sync)")
    check(
        on.value == "LISTENING" and on.after["mode"] == "listening",
        "GetDeviceModeRequest then says LISTENING_MODE (device-os system/src/control/config.cpp getDeviceMode)",
        on,
    )
    ok(off, "STOP_LISTENING (71)")
    check(
        off.value["mode"] == "NORMAL" and off.after["mode"] == "normal",
        "the device leaves listening mode (network_listen(NETWORK_LISTEN_EXIT)) and says NORMAL_MODE",
        off,
    )


@pytest.mark.parametrize("platform", cases("reset"))
def test_reset_restarts_the_device(platform):
    r = run(platform)
    step = r.step("reset")
    ok(step, "RESET (40): the result, then a reset (system_control_internal.cpp)")
    starts = [e for e in step.events if "start (control request (reset))" in e["what"]]
    check(len(starts) == 1, "the device restarts once", step)
    check(step.after["mode"] == "normal" and step.value["dfu"] is False, "and comes back running", step)


def _reset_delay(step: Step, marker: str) -> tuple[float | None, float | None]:
    """(ms from the CHECK that carried the result to the device's reset, ms of the CHECK)."""
    checks = [t for t in step.controls(bm=0xC0, request=0x02) if t.reply and len(t.reply) >= 8 and t.reply[2:4] ==
              b"\x00\x00" and t.reply[0] & 0x08]  # fmt: skip  # CHECK answered OK with a result
    resets = [e for e in step.events if marker in e["what"]]
    if not checks or not resets:
        return None, None
    return resets[0]["t_ms"] - checks[0].t_ms, checks[0].t_ms


@pytest.mark.parametrize(("platform", "request_step"), cases("reset_timing", extra=("reset", "safe_mode", "enter_dfu")))
def test_reset_requests_wait_for_the_result_to_be_read(platform, request_step):
    marker = {
        "reset": "control request (reset)",
        "safe_mode": "control request (safe)",
        "enter_dfu": "control request (dfu)",
    }[request_step]
    step = run(platform).step(request_step)
    delay, _ = _reset_delay(step, marker)
    check(
        delay is not None and 999.0 <= delay <= 1001.0,
        FAULT_RESET_TIMING.split(": ", 1)[1],
        step,
        f"the device reset {delay} ms after the CHECK that gave the host the result; Device OS: 1000 ms",
    )


@pytest.mark.parametrize("platform", cases("reset_late_poll"))
def test_reset_with_a_late_poll(platform):
    step = run(platform).step("reset_late_poll")
    check(
        step.ok is True and step.value["result"] == 0,
        "a host that polls 1500 ms after INIT still gets the result: the device resets only 1 s after the result "
        "was read " + FAULT_RESET_TIMING.split("resets 1 s after the host has read the result", 1)[1],
        step,
    )


@pytest.mark.parametrize("platform", cases("safe_mode"))
def test_safe_mode(platform):
    step = run(platform).step("safe_mode")
    ok(step, "SAFE_MODE (60): System.enterSafeMode() 1 s later (system_control_internal.cpp)")
    check(step.after["mode"] == "safe", "the device restarts into safe mode", step)


@pytest.mark.parametrize("platform", cases("enter_dfu"))
def test_enter_dfu_mode(platform):
    r = run(platform)
    step = r.step("enter_dfu")
    ok(step, "DFU_MODE (50), then particle-usb reopens until isInDfuMode (src/device.js enterDfuMode)")
    check(
        step.value["isInDfuMode"] and step.value["type"] == platform and step.after["usb"] == "dfu",
        "the device re-enumerates with its DFU PID (@particle/device-constants dfu.productId)",
        step,
    )


def _bootloader_facts(r: Run) -> tuple[bytes, bool] | None:
    """(GET_COMMANDS reply, serves string 0xFA) of the device's bootloader, by its release; None where unverified."""
    if r.family == "stm32f2xx":  # ST's DfuSe code: device-os v2.3.1 usbd_dfu_core.c DFU_Req_UPLOAD
        return bytes([0x00, 0x21, 0x41]), False
    v = r.bootloader_release
    if v is None:
        return None
    if v >= 6200:  # v6.2.0 bootloader/src/{nRF52840,rtl872x}/usbd_dfu.cpp; 0xFA: usbd_device.cpp device_state_as_string
        return bytes([0x00, 0x21, 0x41, 0xFA, 0xFB]), True
    if v == 6101:  # v6.1.1 usbd_dfu.cpp handleDfuUpload: 4 commands; no "sm=" string anywhere in v6.1.1
        return bytes([0x00, 0x21, 0x41, 0xFA]), False
    if v <= 6100:  # v5.9.0, v6.0.0, v6.1.0: 3 commands
        return bytes([0x00, 0x21, 0x41]), False
    return None  # 6.1.2 - 6.1.x: not in the device-os tags read


@pytest.mark.parametrize("platform", cases("dfu_protection"))
def test_protection_state_in_dfu(platform):
    r = run(platform)
    step = r.step("dfu_protection")
    facts = _bootloader_facts(r)
    if facts is None:
        pytest.skip(f"what a bootloader of release {r.bootloader_release} serves is not verified")
    ok(step, "getProtectionState() reads string 0xFA, else the memory map (particle-usb src/dfu.js)")
    expected = {"protected": False, "overridden": False} if facts[1] else {"protected": False, "overridden": None}
    check(
        step.value == expected,
        "an open device: 'sm=o' where the bootloader serves string 0xFA (Device OS >= 6.2.0), otherwise the "
        "fallback on the alt 0 memory map, whose segments are not all erase-only (overridden: null)",
        step,
    )


@pytest.mark.parametrize("platform", cases("dfu_write_read"))
def test_dfu_write_and_read_back(platform):
    r = run(platform)
    step = r.step("dfu_write_read")
    ok(
        step,
        "writeOverDfu erases, writes 4096-byte blocks at SET_ADDRESS_POINTER; readOverDfu uploads them "
        "(particle-usb src/dfu.js doDownload, doUpload)",
    )
    v = step.value
    check(v["written"] == len(r.dfu_app) and r.dfu_app != r.old_app, "the new app was written", step)
    if r.family == "stm32f2xx":
        check(
            v["first"]["ok"] and bytes.fromhex(v["first"]["value"]) == r.dfu_app,
            "on Gen2 the read right after the write returns the bytes written: ST's DfuSe code answers "
            "CLRSTATUS in dfuDNLOAD_IDLE by entering dfuERROR without a stall and ignores ABORT in dfuERROR "
            "(device-os v2.3.1 usbd_dfu_core.c), so doUpload's CLRSTATUS + abortToIdle + CLRSTATUS reach dfuIDLE",
            step,
        )
        return
    # nRF52840 / rtl872x: CLRSTATUS outside dfuERROR stalls and enters dfuERROR (usbd_dfu.cpp handleDfuClrStatus)
    clr = [t for t in step.controls(bm=0x21, request=0x04) if t.error]
    check(
        not v["first"]["ok"] and clr and clr[0].error == "LIBUSB_TRANSFER_STALL",
        "on Gen3/Gen4 the read right after the write fails: doUpload sends CLRSTATUS in dfuDNLOAD_IDLE, which the "
        "bootloader stalls (device-os bootloader/src/nRF52840/usbd_dfu.cpp, bootloader/src/rtl872x/usbd_dfu.cpp "
        "handleDfuClrStatus: no transition -> setError(errUNKNOWN), stall)",
        step,
    )
    second = v["second"] or {}
    check(
        second.get("ok") and bytes.fromhex(second["value"]) == r.dfu_app,
        "and the next readOverDfu (CLRSTATUS from dfuERROR, ABORT, SET_ADDRESS_POINTER, UPLOAD blocks from "
        "wValue 2) returns the bytes written",
        step,
    )


@pytest.mark.parametrize("platform", cases("dfu_leave"))
def test_reset_out_of_dfu(platform):
    r = run(platform)
    step = r.step("dfu_leave")
    ok(
        step,
        "reset() in DFU is the DfuSe leave: a zero-length DNLOAD, then GETSTATUS until dfuMANIFEST "
        "(Gen2: dfuDNLOAD_IDLE) (particle-usb src/dfu.js leave)",
    )
    user = [m for m in step.after["modules"] if m["name"] == "USER_PART"]
    check(step.value["dfu"] is False and step.after["mode"] == "normal", "the device boots Device OS", step)
    check(
        [m["version"] for m in user] == [DFU_APP_VERSION] and user[0]["sha256"] == parse_module(r.dfu_app).sha256.hex(),
        "running the app written over DFU",
        step,
    )


def _reported_user_part(r: Run, step: Step, version: int, app: bytes) -> None:
    ok(step, FAULT_MODULE_INFO.split(": ", 1)[1])
    new = r.system_version >= NEW_MODULE_INFO_SINCE
    users = [m for m in step.value if m["type"] == "USER_PART"]
    check(len(users) == 1 and users[0]["version"] == version, f"module info reports the user part v{version}", step)
    if new:
        check(
            users[0]["hash"] == parse_module(app).sha256.hex(),
            "with the app's SHA-256 (system_info_encoding.cpp: module.suffix.sha)",
            step,
        )


@pytest.mark.parametrize("platform", cases("module_info_after_dfu"))
def test_module_info_reports_the_module_written_over_dfu(platform):
    r = run(platform)
    _reported_user_part(r, r.step("module_info_after_dfu"), DFU_APP_VERSION, r.dfu_app)


@pytest.mark.parametrize("platform", cases("update_firmware"))
def test_control_request_firmware_update(platform):
    r = run(platform)
    step = r.step("update_firmware")
    ok(
        step,
        "updateFirmware: START_FIRMWARE_UPDATE (250), FIRMWARE_UPDATE_DATA (252) per chunkSize, "
        "FINISH_FIRMWARE_UPDATE (251) (particle-usb src/device.js)",
    )
    user = [m for m in step.after["modules"] if m["name"] == "USER_PART"]
    check(
        step.after["mode"] == "normal" and [m["version"] for m in user] == [UPDATE_APP_VERSION],
        "the device applies the module and restarts running it",
        step,
    )


@pytest.mark.parametrize("platform", cases("module_info_after_update"))
def test_module_info_reports_the_update(platform):
    r = run(platform)
    _reported_user_part(r, r.step("module_info_after_update"), UPDATE_APP_VERSION, r.update_app)


@pytest.mark.parametrize("platform", cases("dfuse_commands"))
def test_dfuse_commands_follow_the_bootloader_version(platform):
    r = run(platform)
    step = r.step("dfu_safe_mode")
    facts = _bootloader_facts(r)
    if facts is None:
        pytest.skip(f"the DfuSe commands of a bootloader of release {r.bootloader_release} are not verified")
    listed = [t for t in step.controls(bm=0xA1, request=0x02, value=0) if t.reply is not None]
    check(
        bool(listed) and listed[0].reply == facts[0],
        f"GET_COMMANDS (UPLOAD wValue 0) lists {facts[0].hex(' ')} on this bootloader (see _bootloader_facts)",
        step,
    )


@pytest.mark.parametrize("platform", cases("dfu_safe_mode"))
def test_safe_mode_from_dfu(platform):
    r = run(platform)
    step = r.step("dfu_safe_mode")
    facts = _bootloader_facts(r)
    if facts is None:
        pytest.skip(f"the DfuSe commands of a bootloader of release {r.bootloader_release} are not verified")
    if 0xFA in facts[0]:
        ok(
            step,
            "DfuSe ENTER_SAFE_MODE (0xFA), then GETSTATUS until dfuMANIFEST (particle-usb src/dfu.js "
            "enterSafeMode; bootloader usbd_dfu.cpp)",
        )
        check(step.after["mode"] == "safe", "the bootloader resets into safe mode", step)
    else:
        check(
            step.ok is False and step.error["name"] == "UnsupportedDfuseCommandError",
            "particle-usb refuses: its GET_COMMANDS list has no 0xFA (src/dfu.js _checkDfuseCommandSupported)",
            step,
        )
