"""Every real Particle module of a simulated platform that the planner allows is flashed, then reported by the
simulated device (issue 14, 4c); every one it refuses is refused for a reason a source gives.

The real binaries are ``../shared/fixtures/particle-binaries`` and its ``corpus/``. Each module of a platform the
simulator models (the Gen2 STM32F2xx, Gen3 nRF52840 and rtl872x families) goes to a simulated ``healthy`` device of
its own platform three ways where they apply:

- ``usb``: ``kiosk flash --usb FILE --simulate healthy@PLATFORM --json`` (over USB: DFU, and for what DFU cannot
  carry, the bootloader and NCP firmware, a control-request update to the running device, as particle-cli's
  ``particle flash --usb`` does);
- ``serial``: the same with ``--serial`` (YModem in listening mode; Device OS below 6.0.0 only);
- ``usb-control``: the bootloader and NCP firmware through the Python API the CLI uses (``firmware.plan.plan_flash``
  with the automatic choice, ``kiosk.executor.FlashExecutor``).

Before the flash the test reads the device's module table (control request 90, as ``kiosk inspect`` does) and works
out on its own, from the rules below, whether the planner must refuse and why. After a flash, "reported" means: the
module table lists the module (function, index, version), every check it reports passes, and its dependencies are
the module's own. Where the simulator is known to be wrong the case is marked ``xfail(strict=True)`` with the fault
and its source, so it turns into a failure (telling us to remove the mark) once the simulator is fixed.

``make test`` runs one file per platform, function and transport; ``KIOSK_LONG=1`` runs every file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.module import Module, ModuleFlag, NotAModuleError, parse_module
from firmware.plan import PlanRefused, Transport, plan_flash
from firmware.platforms import Function, function_name, platform_by_id
from firmware.versions import YMODEM_REMOVED_SYSTEM_VERSION
from hw.control import ControlChannel, ControlFailure, ModuleInfo
from kiosk import modes
from kiosk.bench import Bench, simulated_bench
from kiosk.cli import main
from kiosk.executor import FlashExecutor
from kiosk.facts import gather_facts
from tests.fixture_paths import CORPUS, FIXTURES
from tests.interop.conftest import LONG

REAL = sorted(FIXTURES.glob("*.bin")) + sorted(CORPUS.glob("*.bin"))
#: The MCU families hw/sim models (hw/sim/scenarios.py: Gen2, Gen3 and rtl872x).
SIMULATED_FAMILIES = ("stm32f2xx", "nrf52840", "rtl872x")
#: What DFU cannot carry, and Particle's CLI sends by control-request update instead (particle-cli
#: src/lib/flash-helper.js createFlashSteps; ../shared/reference/usb-serial-protocols.md 5.2).
NOT_OVER_DFU = (Function.BOOTLOADER, Function.NCP_FIRMWARE)

# --- the rules, each with its source -----------------------------------------------------------------------------

RULE_UNSOUND = (
    "the file fails verification",
    "a module with a bad CRC, SHA-256 or layout is never flashed (README 'Refused: a bad CRC or SHA-256'; the "
    "device's own integrity check, device-os dynalib/inc/module_info.h module_info_crc_t)",
)
RULE_NO_YMODEM = (
    "Device OS 6.0.0 and later have no YModem",
    "Device OS 6.0.0 removed YModem from the listening-mode console (device-os system/src/system_ymodem.cpp; "
    "usb-serial-protocols.md 3.2: 'f' answers 'Serial/YModem flashing is no longer supported')",
)
DEPENDENCY_FACT = (
    "the device checks each module's dependencies at boot (device-os dynalib/inc/module_info.h module_dependency_t, "
    "MODULE_VALIDATION_DEPENDENCIES), so a module whose dependency the device lacks is refused (README, firmware plan)"
)

# --- simulator faults: strict xfails ------------------------------------------------------------------------------
#: Known simulator faults a case runs into: (predicate on the module and its platform family, the fault with its
#: source). Each such case is marked xfail(strict=True), so it fails, telling us to remove the entry, once the
#: simulator is fixed. Issue 14's faults that these cases met (nRF52840 system parts at 0x30000 up to 6.1.1; the Gen2
#: bootloader's header-only check) were fixed in hw/sim while this suite was written; none is known now.
KNOWN_SIMULATOR_FAULTS: tuple[tuple[Callable[[Module, str], bool], str], ...] = ()


def simulator_fault(module: Module, family: str) -> str | None:
    """The known simulator fault this module runs into, if any."""
    return next((fault for applies, fault in KNOWN_SIMULATOR_FAULTS if applies(module, family)), None)


# --- the cases ------------------------------------------------------------------------------------------------------


def _module(path: Path) -> Module | None:
    try:
        return parse_module(path.read_bytes())
    except NotAModuleError:
        return None


def _simulated(module: Module | None) -> bool:
    platform = platform_by_id(module.platform_id) if module is not None else None
    return (
        platform is not None
        and platform.mcu.name in SIMULATED_FAMILIES
        and module.function != Function.ASSET  # an asset's platform id 0 is no platform (module-format.md)
    )


def _cases() -> tuple[list[tuple[str, Path]], list[Path]]:
    cases, others, seen = [], [], set()
    for path in REAL:
        module = _module(path)
        if not _simulated(module):
            others.append(path)
            continue
        transports = ["usb", "serial"] + (["usb-control"] if module.function in NOT_OVER_DFU else [])
        for transport in transports:
            kind = (transport, module.platform_id, module.function, module.index)
            if LONG or kind not in seen:
                cases.append((transport, path))
            seen.add(kind)
    return cases, others


CASES, OTHERS = _cases()


# --- the simulated device -------------------------------------------------------------------------------------------


@dataclass
class Device:
    """What the test reads from the simulated device: its facts and its module table (control request 90)."""

    system_version: int | None
    modules: list[ModuleInfo] | None  # None: the device did not answer request 90
    mode: str | None


def read_device(bench: Bench) -> Device:
    slot = bench.slot(1)
    device = modes.wait_for_device(slot, 15.0, "normal")
    if device is None:
        found = modes.wait_for_device(slot, 1.0)
        return Device(None, None, found.mode if found else None)
    facts = gather_facts(slot, device)
    try:
        table = ControlChannel(device.usb_device, bench.clock, device.platform.quirks).module_info(timeout_s=5.0)
    except ControlFailure:
        table = None
    return Device(facts.system_version, table, device.mode)


def describe_table(device: Device) -> str:
    if device.modules is None:
        return f"no module table (control request 90 unanswered; USB mode {device.mode})"
    return ", ".join(
        f"{function_name(m.function)} {m.index} v{m.version}" + (f" FAIL {sorted(m.failed)}" if m.failed else "")
        for m in device.modules
    )


def expected_refusals(module: Module, transport: str, device: Device) -> list[tuple[str, str]]:
    """Every (reason fragment, source) the planner must refuse this module for; empty: it must allow it."""
    if module.problems:
        return [RULE_UNSOUND]
    out = []
    if transport == "serial" and (device.system_version or 0) >= YMODEM_REMOVED_SYSTEM_VERSION:
        out.append(RULE_NO_YMODEM)
    have = {(m.function, m.index): m.version for m in device.modules or () if "integrity" not in m.failed}
    for dep in module.real_dependencies:
        if have.get((dep.function, dep.index), -1) < dep.version:
            out.append((f"needs {function_name(dep.function)} {dep.index} version {dep.version} or newer",
                        DEPENDENCY_FACT))  # fmt: skip
    return out


def expected_dependencies(module: Module) -> list[tuple[int, int, int]]:
    """The dependencies the device reports for the module in request 90."""
    if module.function == Function.RADIO_STACK:
        # Device OS makes the radio stack's entry from the SoftDevice itself: version = its firmware id, no
        # dependencies (device-os v6.1.1 hal/src/nRF52840/platform_radio_stack.cpp
        # platform_radio_stack_fetch_module_info).
        return []
    return [(d.function, d.index, d.version) for d in module.real_dependencies]


#: Nordic's SoftDevice info block: its unique string, 20 bytes at 0x2018 past the SoftDevice's start (nrf_sdm.h
#: SD_UNIQUE_STR_OFFSET, SD_UNIQUE_STR_SIZE; the real argon-softdevice-6.1.1.bin has the magic 0x51B1E5DB at +0x2004
#: and its firmware id 0xB6 at +0x200C, as that block lays out).
SD_UNIQUE_STR_OFFSET, SD_UNIQUE_STR_SIZE = 0x2018, 20


def expected_size(module: Module, legacy: bool) -> int:
    """The size request 90 reports: end - start (+ 4 for the CRC in the current format), 0 without addresses."""
    if module.function in (Function.RADIO_STACK, Function.NCP_FIRMWARE):
        # their entries are made up without addresses (platform_radio_stack.cpp, platform_ncp_update.cpp)
        return 0
    span = module.end_address - module.start_address
    # legacy: device-os v2.3.0 system/src/control/storage.cpp "size = end - start"; current: v6.1.1
    # system/src/system_info_encoding.cpp "size = end - start; if (size > 0) size += sizeof(uint32_t) /* CRC */"
    return span if legacy else span + 4


def expected_hash(module: Module) -> bytes:
    """The hash request 90 reports (current format; storage.cpp asks EncodeFirmwareModules for FORCE_SHA)."""
    if module.function == Function.RADIO_STACK:
        # the SoftDevice's unique string, the rest zero (device-os v6.1.1 hal/src/nRF52840/platform_radio_stack.cpp)
        dropped = module.prefix_size if module.flags & ModuleFlag.DROP_MODULE_INFO else 0
        at = dropped + (0x1000 + SD_UNIQUE_STR_OFFSET - module.start_address)
        return module.data[at : at + SD_UNIQUE_STR_SIZE] + bytes(32 - SD_UNIQUE_STR_SIZE)
    if module.function == Function.NCP_FIRMWARE:
        # "For now we simply fill the SHA field with version" (hal/network/ncp/wifi/platform_ncp_update.cpp)
        return module.version.to_bytes(2, "little") * 16
    return module.sha256  # module.suffix.sha (system_info_encoding.cpp)


# --- flashing ----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    call: str
    refused: list[str] | None  # the planner's reasons, or None when it planned
    ok: bool
    mechanisms: list[str]
    detail: str


def flash_by_cli(bench: Bench, monkeypatch, capsys, transport: str, path: Path, platform: str) -> Outcome:
    """`kiosk flash --usb|--serial FILE --simulate healthy@PLATFORM --json`, on this bench (kept open after it)."""
    spec = f"healthy@{platform}"
    argv = ["flash", f"--{transport}", str(path), "--simulate", spec, "--json"]

    def the_bench(asked: str, speed: float | None = None) -> Bench:
        assert asked == spec
        return bench

    with monkeypatch.context() as patch:
        patch.setattr("kiosk.commands.device_cmd.simulated_bench", the_bench)
        patch.setattr(bench, "close", lambda: None)  # looked at after the command; closed by the test
        capsys.readouterr()
        status = main(argv)
        out, err = capsys.readouterr()
    call = "kiosk " + " ".join(argv)
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        return Outcome(call, None, False, [], f"exit {status}, no JSON: {out[-500:]} {err[-500:]}")
    if doc.get("refused"):
        assert status == 2, f"{call}: refused with exit {status}"
        return Outcome(call, [r["reason"] for r in doc["reasons"]], False, [], "")
    mechanisms = [s["mechanism"] for s in doc.get("steps", [])]
    return Outcome(call, None, status == 0 and doc.get("ok", False), mechanisms, f"exit {status}: {doc.get('detail')}")


def flash_by_control(bench: Bench, path: Path, module: Module) -> Outcome:
    """The kiosk's own choice over USB (Transport.AUTO), as `kiosk flash` runs it (flash_cmd._run)."""
    slot = bench.slot(1)
    facts = gather_facts(slot, modes.identify(slot))
    call = f"plan_flash(DeviceFacts of healthy@{facts.platform.name}, [{path.name}], Transport.AUTO) + FlashExecutor"
    try:
        plan = plan_flash(facts, [(str(path), module)], Transport.AUTO)
    except PlanRefused as refused:
        return Outcome(call, [r.reason for r in refused.refusals], False, [], "")
    report = FlashExecutor(slot, plan).run()
    return Outcome(call, None, report.ok, [s.mechanism.value for s in plan.steps], report.detail)


# --- the tests ---------------------------------------------------------------------------------------------------

EXPECTED_MECHANISM = {"usb": "dfu", "serial": "ymodem", "usb-control": "control-request"}


def expected_mechanism(transport: str, module: Module) -> str:
    """Over USB the bootloader and NCP firmware go to a running device by control-request update (particle-cli
    src/lib/flash-helper.js createFlashSteps; usb-serial-protocols.md 5.2), the rest by DFU."""
    if transport == "usb" and module.function in NOT_OVER_DFU:
        return "control-request"
    return EXPECTED_MECHANISM[transport]


@pytest.mark.parametrize(("transport", "path"), CASES, ids=[f"{t}-{p.name}" for t, p in CASES])
def test_real_fixture_is_flashed_and_reported(request, monkeypatch, capsys, transport, path):
    module = parse_module(path.read_bytes())
    platform = platform_by_id(module.platform_id)
    bench = simulated_bench(f"healthy@{platform.name}")
    try:
        with bench.clock.actor():
            before = read_device(bench)
            assert before.modules is not None, f"healthy@{platform.name} does not answer request 90 before the flash"
            expected = expected_refusals(module, transport, before)
            fault = simulator_fault(module, platform.mcu.name) if not expected else None
            if fault:
                request.applymarker(pytest.mark.xfail(strict=True, reason=fault))
            if transport == "usb-control":
                outcome = flash_by_control(bench, path, module)
            else:
                outcome = flash_by_cli(bench, monkeypatch, capsys, transport, path, platform.name)
            after = read_device(bench)
    finally:
        bench.close()

    what = f"{path.name} ({platform.name} {module.function_name} {module.index} v{module.version})"
    if expected:
        assert outcome.refused is not None, (
            f"{outcome.call}: planned and ran ({outcome.detail}) although it must be refused: "
            + "; ".join(f"{fragment!r} ({source})" for fragment, source in expected)
        )
        for reason in outcome.refused:
            assert any(fragment in reason for fragment, _ in expected), (
                f"{outcome.call}: refused {what} for {reason!r}, which none of the expected reasons covers: "
                f"{[f for f, _ in expected]}"
            )
        assert describe_table(after) == describe_table(before), f"{outcome.call}: refused, yet the device changed"
        return

    assert outcome.refused is None, f"{outcome.call}: refused {what}: {outcome.refused}; no rule says it must be"
    assert outcome.ok, (
        f"{outcome.call}: {what} not flashed and reported: {outcome.detail}; module table after: "
        f"{describe_table(after)}"
    )
    wanted = expected_mechanism(transport, module)
    assert set(outcome.mechanisms) == {wanted}, f"{outcome.call}: by {outcome.mechanisms}"
    listed = [
        m for m in after.modules or () if (m.function, m.index, m.version) == (module.function, module.index,
                                                                                  module.version)
    ]  # fmt: skip
    assert listed, (
        f"{outcome.call}: after the flash, control request 90 does not list {what}; it lists {describe_table(after)}"
    )
    entry = listed[0]
    assert not entry.failed, (
        f"{outcome.call}: control request 90 reports {what} with failed checks {sorted(entry.failed)} "
        f"(device-os system/src/system_info_encoding.cpp: checked vs passed flags)"
    )
    reported = [(d.function, d.index, d.version) for d in entry.dependencies]
    assert reported == expected_dependencies(module), (
        f"{outcome.call}: control request 90 reports {what} with dependencies {reported}, the module header says "
        f"{expected_dependencies(module)} (device-os system/src/system_info_encoding.cpp encodes module_info_t's)"
    )
    assert entry.size == expected_size(module, entry.legacy), (
        f"{outcome.call}: control request 90 reports {what} with size {entry.size}, Device OS reports "
        f"{expected_size(module, entry.legacy)} ({'legacy' if entry.legacy else 'current'} reply format; "
        "device-os system/src/control/storage.cpp@v2.3.0, system/src/system_info_encoding.cpp@v6.1.1)"
    )
    if entry.legacy:
        # the legacy reply (GetModuleInfoReply.Module up to Device OS 5.5.0) has no hash field at all
        assert entry.hash is None, f"{outcome.call}: a legacy reply with a hash"
    else:
        assert entry.hash == expected_hash(module), (
            f"{outcome.call}: control request 90 reports {what} with hash "
            f"{entry.hash.hex() if entry.hash else None}, Device OS reports {expected_hash(module).hex()} "
            "(device-os v6.1.1 system/src/control/storage.cpp FORCE_SHA, system_info_encoding.cpp)"
        )


def test_the_cases_cover_every_simulated_family_and_transport():
    families = {platform_by_id(parse_module(p.read_bytes()).platform_id).mcu.name for _, p in CASES}
    assert families == set(SIMULATED_FAMILIES)
    assert {t for t, _ in CASES} == {"usb", "serial", "usb-control"}
    # the files that met issue 14's layout and boot faults are in the short profile too
    names = {p.name for _, p in CASES}
    assert {"cli__binaries__argon-system-part1@4.1.0.bin", "RC4_unlocker.bin"} <= names


#: Fixtures that are no module of a platform the simulator models, and what the kiosk says to each.
OTHER_REASONS = {
    "stm32f1xx": "the simulator has no core",  # the Core (Gen1)
    "nrf51": "the simulator has no bluz",  # Bluz, a third-party nRF51 board
}


@pytest.mark.parametrize("path", OTHERS, ids=[p.name for p in OTHERS])
def test_fixture_of_no_simulated_platform_is_refused_with_its_reason(capsys, path):
    """Not skipped: each is offered to the kiosk and the refusal is asserted."""
    module = _module(path)
    platform = platform_by_id(module.platform_id) if module is not None else None
    if module is not None and module.function == Function.ASSET:
        # an asset goes with its application, by control-request update; YModem cannot carry it
        # (usb-serial-protocols.md 5.2: "asset | normal | control-request firmware update")
        argv = ["flash", "--serial", str(path), "--simulate", "healthy@p2", "--json"]
        fragment = "assets cannot be sent over YModem"
    elif platform is None or module.problems:
        argv = ["flash", "--usb", str(path), "--simulate", "healthy@boron", "--json"]
        fragment = "the file fails verification"
    else:
        argv = ["flash", "--usb", str(path), "--simulate", f"healthy@{platform.name}", "--json"]
        fragment = OTHER_REASONS[platform.mcu.name]
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, f"kiosk {' '.join(argv)}: exit {status}: {out}{err}"
    assert fragment in out + err, f"kiosk {' '.join(argv)}: {out}{err}"


#: Two simulated platforms of each family: a module of one offered to the other.
SIBLINGS = {"stm32f2xx": ("photon", "electron"), "nrf52840": ("boron", "argon"), "rtl872x": ("p2", "msom")}
WRONG_PLATFORM = (
    [p for t, p in CASES if t == "usb"]
    if LONG
    else [
        next(
            p for t, p in CASES if t == "usb" and platform_by_id(parse_module(p.read_bytes()).platform_id).mcu.name == f
        )
        for f in SIMULATED_FAMILIES
    ]
)


@pytest.mark.parametrize("path", WRONG_PLATFORM, ids=[p.name for p in WRONG_PLATFORM])
def test_real_fixture_offered_to_another_platform_is_refused(capsys, path):
    """The planner refuses a module made for another platform (device-os: the device checks module_info_t.platform_id,
    MODULE_VALIDATION_PLATFORM), and writes nothing."""
    module = parse_module(path.read_bytes())
    made_for = platform_by_id(module.platform_id)
    other = next(name for name in SIBLINGS[made_for.mcu.name] if name != made_for.name)
    argv = ["flash", "--usb", str(path), "--simulate", f"healthy@{other}", "--json"]
    status = main(argv)
    doc = json.loads(capsys.readouterr().out)
    call = "kiosk " + " ".join(argv)
    assert status == 2 and doc["refused"], f"{call}: exit {status}: {doc}"
    reasons = [r["reason"] for r in doc["reasons"]]
    allowed = [f"made for {made_for.name}, but the device is a {other}", RULE_UNSOUND[0]]
    assert all(any(fragment in reason for fragment in allowed) for reason in reasons), f"{call}: {reasons}"
    if not module.problems:
        assert any(allowed[0] in reason for reason in reasons), f"{call}: no wrong-platform reason in {reasons}"
