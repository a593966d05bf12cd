"""firmware.plan: every refusal, and the ordering rules on whole releases of six platforms."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from firmware.builder import build_module
from firmware.module import Dependency, Module, ModuleFlag, parse_module
from firmware.plan import (
    DeviceFacts,
    InstalledModule,
    Mechanism,
    PlanRefused,
    Transport,
    plan_flash,
)
from firmware.platforms import Function as F
from firmware.platforms import platform_by_name
from firmware.releases import synthetic_release
from tests.fixture_paths import FIXTURES


def release(platform: str, version: str) -> list[tuple[str, Module]]:
    """A whole synthetic release, encrypted modules left out as `update` leaves them out."""
    files = synthetic_release(platform, version)
    modules = [(name, parse_module(data)) for name, data in files.items()]
    return [(n, m) for n, m in modules if not m.flags & ModuleFlag.ENCRYPTED]


def device(platform: str, **kw) -> DeviceFacts:
    return DeviceFacts(platform_by_name(platform), **kw)


def names(plan) -> list[str]:
    return [s.name.split("@")[0] for s in plan.steps]


def position(plan, fragment: str) -> int:
    return next(n for n, s in enumerate(plan.steps) if fragment in s.name)


def refusal_reasons(exc: pytest.ExceptionInfo[PlanRefused]) -> str:
    return " | ".join(r.reason for r in exc.value.refusals)


def user_part(platform_id: int = 13, dep_version: int = 5301, **kw) -> Module:
    return parse_module(
        build_module(
            platform_id=platform_id,
            function=F.USER_PART,
            version=6,
            dependencies=[(F.SYSTEM_PART, 1, dep_version)],
            **kw,
        )
    )


# --- ordering on whole releases -----------------------------------------------------------------

RELEASES = [
    ("photon", "2.3.0"),
    ("electron", "2.3.0"),
    ("boron", "6.1.1"),
    ("argon", "4.1.0"),
    ("p2", "6.2.0"),
    ("msom", "5.9.0"),
]


@pytest.mark.parametrize(("platform", "version"), RELEASES)
def test_release_plan_puts_every_dependency_first(platform, version):
    plan = plan_flash(device(platform), release(platform, version))
    written = [s.module for s in plan.steps if s.module is not None]
    assert len(written) == len(release(platform, version))
    seen: list[Module] = []
    needs = {(m.function, m.index): {(d.function, d.index) for d in m.real_dependencies} for m in written}

    def reaches(start: tuple[int, int], goal: tuple[int, int]) -> bool:  # through dependencies, any length
        todo, done = [start], set()
        while todo:
            key = todo.pop()
            if key == goal:
                return True
            if key not in done:
                done.add(key)
                todo += needs.get(key, ())
        return False

    for m in written:
        for dep in m.real_dependencies:
            provider = [p for p in written if (p.function, p.index) == (dep.function, dep.index)]
            # a cycle (Gen3 system part <-> radio stack; Electron parts 1 -> 3 -> 2 -> 1) is broken by rank
            cyclic = provider and reaches((dep.function, dep.index), (m.function, m.index))
            if provider and not cyclic:
                assert provider[0] in seen, f"{m.function_name} {m.index} written before its dependency {dep}"
        seen.append(m)
    assert not plan.warnings


@pytest.mark.parametrize(("platform", "version"), RELEASES)
def test_release_plan_mechanisms(platform, version):
    plan = plan_flash(device(platform), release(platform, version))
    for step in plan.steps:
        m = step.module
        if m is None:
            continue
        if m.function in (F.BOOTLOADER, F.NCP_FIRMWARE):
            assert step.mechanism is Mechanism.CONTROL and step.device_mode == "normal" and step.address is None
        else:
            assert step.mechanism is Mechanism.DFU and step.device_mode == "dfu"
            assert step.address == m.start_address and step.alt_setting == 0


def test_photon_release_order():
    plan = plan_flash(device("photon"), release("photon", "2.3.0"))
    assert names(plan) == ["photon-bootloader", "photon-system-part1", "photon-system-part2", "photon-tinker"]


def test_electron_release_order_follows_indices_not_release_names():
    # Electron release file "system-part1" is index 3; part 3 needs index 2, which needs index 1.
    plan = plan_flash(device("electron"), release("electron", "2.3.0"))
    indices = [s.module.index for s in plan.steps if s.module.function == F.SYSTEM_PART]
    assert indices == [1, 2, 3]
    assert names(plan)[1:4] == ["electron-system-part2", "electron-system-part3", "electron-system-part1"]


def test_boron_release_radio_stack_goes_without_its_prefix():
    plan = plan_flash(device("boron"), release("boron", "6.1.1"))
    step = plan.steps[position(plan, "softdevice")]
    assert step.dropped_prefix == 24
    assert step.payload == step.module.data[24:]
    assert step.address == 0x1000
    assert position(plan, "bootloader") < position(plan, "system-part1")


def test_boron_user_part_invalidates_the_former_128k_slot_first():
    plan = plan_flash(device("boron"), release("boron", "6.1.1"))
    invalidate = position(plan, "invalidate")
    assert plan.steps[invalidate].address == 0xD4000
    assert plan.steps[invalidate].payload == b"\xff" * 4096
    assert invalidate == position(plan, "tinker") - 1


def test_no_invalidation_for_an_old_user_part_at_the_old_address():
    old = parse_module(
        build_module(platform_id=13, function=F.USER_PART, index=1, version=5, dependencies=[(F.SYSTEM_PART, 1, 1502)])
    )
    plan = plan_flash(device("boron", system_version=1502), [("old.bin", old)])
    assert names(plan) == ["old.bin"]


def test_argon_ncp_goes_by_control_request_in_normal_mode():
    plan = plan_flash(device("argon"), release("argon", "4.1.0"))
    ncp = plan.steps[position(plan, "ncp-firmware")]
    assert ncp.mechanism is Mechanism.CONTROL and ncp.device_mode == "normal"
    assert ncp.payload == ncp.module.data


def test_p2_prebootloader_before_bootloader_before_system_part():
    plan = plan_flash(device("p2"), release("p2", "6.2.0"))
    assert position(plan, "prebootloader-part1") < position(plan, "p2-bootloader") < position(plan, "system-part1")
    tinker = plan.steps[position(plan, "tinker")]
    assert tinker.address == tinker.module.start_address and tinker.module.end_address + 4 == 0x08600000


def test_msom_release_plan():
    plan = plan_flash(device("msom", system_version=5901), release("msom", "5.9.0"))
    assert names(plan) == ["msom-prebootloader-part1", "msom-bootloader", "msom-system-part1", "msom-tinker"]


def test_device_in_dfu_gets_its_dfu_steps_first_and_the_bootloader_into_the_ota_region_last():
    """Device Restore USB's order: system part, SoftDevice, Tinker, then the bootloader into the OTA region."""
    plan = plan_flash(device("boron", mode="dfu"), release("boron", "6.1.1"))
    mechanisms = [s.mechanism for s in plan.steps]
    assert mechanisms[:-1] == [Mechanism.DFU] * (len(mechanisms) - 1)
    last = plan.steps[-1]
    assert (last.mechanism, last.module.function, last.device_mode) == (Mechanism.DFU_OTA, F.BOOTLOADER, "dfu")
    assert (last.alt_setting, last.address) == (2, 0x8024C000)  # 6.1.1 applies it: the 5.5.0+ region
    assert last.payload == last.module.data  # the whole module: Device OS reads its header in the region
    assert last.pending_flag == (1, 1753, b"\xa5")


def test_device_in_normal_mode_keeps_dependency_order():
    plan = plan_flash(device("boron", mode="normal"), release("boron", "6.1.1"))
    assert plan.steps[0].mechanism is Mechanism.CONTROL  # the bootloader, which the system part needs


def test_order_does_not_depend_on_the_order_given():
    files = release("electron", "2.3.0")
    a = names(plan_flash(device("electron"), files))
    b = names(plan_flash(device("electron"), list(reversed(files))))
    assert a == b


def test_serial_transport_is_ymodem_in_listening_mode_for_everything():
    plan = plan_flash(device("photon", system_version=2301), release("photon", "2.3.0"), Transport.SERIAL)
    assert {s.mechanism for s in plan.steps} == {Mechanism.YMODEM}
    assert {s.device_mode for s in plan.steps} == {"listening"}
    assert all(s.payload == s.module.data for s in plan.steps)


def test_gen2_before_2_0_gets_the_bootloader_into_the_ota_region_not_by_control_request():
    """Control requests are unreliable below 2.0.0 on Gen2; the 2.3.0 the plan writes applies the bootloader
    from 0x080C0000 (device-os STM32F2xx flash_mal.h INTERNAL_FLASH_OTA_ADDRESS)."""
    plan = plan_flash(device("photon", system_version=1502), release("photon", "2.3.0"))
    boot = plan.steps[position(plan, "bootloader")]
    assert (boot.mechanism, boot.alt_setting, boot.address) == (Mechanism.DFU_OTA, 0, 0x080C0000)
    assert boot is plan.steps[-1] or plan.steps[-1].mechanism is not Mechanism.DFU


def test_gen2_too_old_for_the_ota_region_gets_the_bootloader_over_ymodem():
    """Device OS below 1.2.1 has no pending update (device-os PR #1788) and unreliable control requests."""
    boot = [(n, m) for n, m in release("photon", "2.3.0") if m.function == F.BOOTLOADER]
    plan = plan_flash(device("photon", system_version=1102), boot)
    assert [s.mechanism for s in plan.steps] == [Mechanism.YMODEM]
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("photon", system_version=1102), boot, Transport.USB)
    assert "takes neither" in refusal_reasons(exc) or "does not apply a pending update" in refusal_reasons(exc)
    assert exc.value.suggestion is Transport.AUTO  # tried: the automatic choice plans (YModem)
    plan_flash(device("photon", system_version=1102), boot, exc.value.suggestion)


def test_auto_bootloader_of_a_device_in_dfu_goes_into_the_ota_region_of_the_new_version():
    # The Gen2 device runs 1.5.2 but is in DFU: the system parts go first, then the bootloader into the OTA
    # region the 2.3.0 it will run looks at, as Device Restore USB does.
    plan = plan_flash(device("photon", system_version=1502, mode="dfu"), release("photon", "2.3.0"))
    assert plan.steps[-1].module.function == F.BOOTLOADER
    assert plan.steps[-1].mechanism is Mechanism.DFU_OTA


def test_unknown_device_os_over_serial_warns_that_it_will_be_checked():
    plan = plan_flash(device("boron"), [("tinker.bin", user_part())], Transport.SERIAL)
    assert any("YModem works only below 6.0.0" in w for w in plan.warnings)


def test_unknown_dependency_is_a_warning_not_a_silent_pass():
    plan = plan_flash(device("boron"), [("tinker.bin", user_part())], Transport.USB)
    assert any("system-part 1 >= 5301" in w and "unchecked" in w for w in plan.warnings)


def test_installed_module_that_breaks_is_a_warning():
    installed = (
        InstalledModule(F.SYSTEM_PART, 1, 6101),
        InstalledModule(F.USER_PART, 2, 6, (Dependency(F.SYSTEM_PART, 1, 6101),)),
    )
    older = [(n, m) for n, m in release("boron", "5.9.0") if m.function != F.USER_PART]
    plan = plan_flash(
        device("boron", system_version=6101, modules=(*installed, InstalledModule(F.BOOTLOADER, 0, 3001))), older
    )
    assert any("user-part 2 will not run" in w for w in plan.warnings)


# --- refusals --------------------------------------------------------------------------------


def test_refuses_a_bad_crc():
    data = bytearray(build_module(platform_id=13, function=F.USER_PART, version=6))
    data[100] ^= 0x01
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron"), [("bad.bin", parse_module(bytes(data)))], Transport.USB)
    assert "CRC-32 does not match" in refusal_reasons(exc)
    assert exc.value.refusals[0].name == "bad.bin"


def test_refuses_a_real_padded_legacy_bootloader():
    bad = parse_module((FIXTURES / "RC4_bootloader_pad_BM-09.bin").read_bytes())
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("photon", system_version=2301), [("rc4.bin", bad)], Transport.SERIAL)
    assert "fails verification" in refusal_reasons(exc)


def test_refuses_the_wrong_platform():
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("argon"), [("boron.bin", user_part(13))], Transport.USB)
    assert "made for boron, but the device is a argon" in refusal_reasons(exc)


USB_ONLY_BY_DEVICE_OS = [(F.BOOTLOADER, 0, "boron"), (F.NCP_FIRMWARE, 0, "argon"), (F.NCP_FIRMWARE, 0, "tracker"),
                         (F.ASSET, 0, "boron")]  # fmt: skip


@pytest.mark.parametrize(("function", "index", "platform"), USB_ONLY_BY_DEVICE_OS)
def test_usb_sends_what_dfu_cannot_carry_by_control_request_to_a_running_device(function, index, platform):
    """particle-cli `particle flash --usb`: bootloader, NCP and assets by control request."""
    pid = platform_by_name(platform).id if function != F.ASSET else 0
    m = parse_module(build_module(platform_id=pid, function=function, index=index, version=3001))
    for transport in (Transport.USB, Transport.AUTO):
        plan = plan_flash(device(platform, system_version=6101, mode="normal"), [("x.bin", m)], transport)
        assert [s.mechanism for s in plan.steps] == [Mechanism.CONTROL]


@pytest.mark.parametrize(("function", "index", "platform", "alt", "address"), [
    (F.BOOTLOADER, 0, "boron", 2, 0x8024C000), (F.NCP_FIRMWARE, 0, "argon", 2, 0x8024C000),
    (F.NCP_FIRMWARE, 0, "tracker", 2, 0x80689000), (F.BOOTLOADER, 0, "photon", 0, 0x080C0000),
    (F.BOOTLOADER, 2, "p2", 0, 0x08300000),
])  # fmt: skip
def test_usb_writes_it_into_the_ota_region_of_a_device_in_dfu(function, index, platform, alt, address):
    """Device Restore USB: over DFU into the OTA region, then 0xA5 at DCT offset 1753 (alt 1)."""
    p = platform_by_name(platform)
    slot = p.slots_for(function, index)[0] if function != F.NCP_FIRMWARE else None
    where = {"start_address": slot.start} if slot else {}
    m = parse_module(build_module(platform_id=p.id, function=function, index=index, version=3001, **where))
    version = {"photon": 2301, "tracker": 6101}.get(platform, 6101)
    plan = plan_flash(device(platform, system_version=version, mode="dfu"), [("x.bin", m)], Transport.USB)
    (step,) = plan.steps
    assert (step.mechanism, step.alt_setting, step.address, step.pending_flag) == (
        Mechanism.DFU_OTA, alt, address, (1, 1753, b"\xa5"))  # fmt: skip


def test_ota_region_follows_the_device_os_that_applies_it():
    """4 MB Gen3: 0x289000 up to 5.4.x, 0x24C000 from 5.5.0 (device-os nRF52840 flash_mal.h)."""
    m = parse_module(build_module(platform_id=13, function=F.BOOTLOADER, version=2700, start_address=0xF4000))
    old = plan_flash(device("boron", system_version=5301, mode="dfu"), [("b.bin", m)], Transport.USB)
    assert old.steps[0].address == 0x80289000
    with_system = [("b.bin", m), *[(n, x) for n, x in release("boron", "5.9.0") if x.function == F.SYSTEM_PART]]
    new = plan_flash(device("boron", system_version=5301, mode="dfu"), with_system, Transport.USB)
    assert new.steps[-1].address == 0x8024C000 and new.steps[0].mechanism is Mechanism.DFU


def test_unknown_device_os_in_dfu_cannot_place_the_ota_region():
    m = parse_module(build_module(platform_id=13, function=F.BOOTLOADER, version=3001, start_address=0xF4000))
    plan = plan_flash(device("boron", mode="dfu"), [("b.bin", m)], Transport.USB)  # falls back, says why
    assert plan.steps[0].mechanism is Mechanism.CONTROL
    assert any("add the system part it should run" in w for w in plan.warnings)


def test_p2_prebootloader_and_bootloader_get_a_pass_each_in_dependency_order():
    plan = plan_flash(device("p2", mode="dfu"), release("p2", "6.2.0"))
    ota = [s for s in plan.steps if s.mechanism is Mechanism.DFU_OTA]
    assert [(s.module.function, s.module.index) for s in ota] == [(F.BOOTLOADER, 2), (F.BOOTLOADER, 0)]
    assert list(plan.steps[-2:]) == ota  # after every plain DFU step of the session


def test_assets_are_refused_over_serial_with_a_suggestion_that_plans():
    asset = parse_module(build_module(platform_id=0, function=F.ASSET, version=1))
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron", system_version=5901), [("a.bin", asset)], Transport.SERIAL)
    assert "assets cannot be sent over YModem" in refusal_reasons(exc)
    assert exc.value.suggestion is not None and "it plans with" in str(exc.value)
    plan_flash(device("boron", system_version=5901), [("a.bin", asset)], exc.value.suggestion)


def test_refuses_ymodem_on_device_os_6():
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron", system_version=6000), [("tinker.bin", user_part())], Transport.SERIAL)
    assert "the device runs Device OS 6.0.0" in refusal_reasons(exc)
    assert "no YModem" in refusal_reasons(exc)


def test_ymodem_still_fine_on_5_9():
    plan = plan_flash(device("boron", system_version=5901), [("tinker.bin", user_part())], Transport.SERIAL)
    assert plan.steps[0].mechanism is Mechanism.YMODEM


def test_refuses_ymodem_after_the_plan_itself_installs_device_os_6():
    parts = [(n, m) for n, m in release("boron", "6.1.1") if m.function != F.BOOTLOADER]
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron", system_version=5901), parts, Transport.SERIAL)
    reasons = {r.name.split("@")[0]: r.reason for r in exc.value.refusals}
    assert set(reasons) == {"boron-tinker"}  # the system part itself still goes to a 5.9 device
    assert "written earlier in this plan" in reasons["boron-tinker"]


def test_refuses_encrypted_modules():
    files = synthetic_release("p2", "6.2.0")
    mbr = parse_module(files["p2-prebootloader-mbr@6.2.0.bin"])
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("p2"), [("mbr.bin", mbr)])
    assert "encrypted module" in refusal_reasons(exc)


def test_refuses_an_unmet_dependency_the_plan_does_not_satisfy():
    installed = (InstalledModule(F.SYSTEM_PART, 1, 5301),)
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron", modules=installed), [("tinker.bin", user_part(dep_version=6101))], Transport.USB)
    assert "needs system-part 1 version 6101 or newer, and the device has 5301" in refusal_reasons(exc)


def test_refuses_when_the_plan_brings_a_too_old_dependency():
    old_system = parse_module(
        build_module(platform_id=13, function=F.SYSTEM_PART, version=5301, dependencies=[(F.BOOTLOADER, 0, 2101)])
    )
    with pytest.raises(PlanRefused) as exc:
        plan_flash(
            device("boron", system_version=6101),
            [("sys.bin", old_system), ("tinker.bin", user_part(dep_version=6101))],
            Transport.USB,
        )
    assert "the plan brings 5301" in refusal_reasons(exc)


def test_dependency_met_by_the_plan_is_accepted():
    installed = (InstalledModule(F.SYSTEM_PART, 1, 5301), InstalledModule(F.BOOTLOADER, 0, 3001))
    parts = [(n, m) for n, m in release("boron", "6.1.1") if m.function in (F.SYSTEM_PART, F.USER_PART)]
    installed += (InstalledModule(F.RADIO_STACK, 0, 202),)
    plan = plan_flash(device("boron", modules=installed), parts, Transport.USB)
    assert names(plan)[0] == "boron-system-part1"


def test_dependency_on_a_missing_module_is_refused():
    plan_modules = (InstalledModule(F.SYSTEM_PART, 1, 6101),)  # no bootloader reported at all
    system = [(n, m) for n, m in release("boron", "6.1.1") if m.function == F.SYSTEM_PART]
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron", modules=plan_modules), system, Transport.USB)
    assert "the device has none" in refusal_reasons(exc)


def test_refuses_a_compressed_module_over_dfu():
    m = parse_module(build_module(platform_id=13, function=F.USER_PART, version=6, compress=True))
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron"), [("z.bin", m)], Transport.USB)
    assert "compressed module" in refusal_reasons(exc)


def test_refuses_a_module_outside_the_platform_layout():
    m = parse_module(build_module(platform_id=13, function=F.USER_PART, version=6, start_address=0x50000))
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron"), [("x.bin", m)], Transport.USB)
    assert "is not where a boron keeps it" in refusal_reasons(exc)


def test_refuses_a_protected_device():
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron", protected=True), [("t.bin", user_part())], Transport.USB)
    assert "Device Protection is on" in refusal_reasons(exc)


def test_refuses_serial_on_the_core_and_unsupported_platforms():
    core = parse_module((FIXTURES / "044_Core_Tinker_P5_V10.bin").read_bytes())
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("core"), [("core.bin", core)], Transport.SERIAL)
    assert "the Core has no serial (YModem) flashing" in refusal_reasons(exc)
    assert exc.value.suggestion is Transport.AUTO and "no transport flag" in str(exc.value)
    assert plan_flash(device("core"), [("core.bin", core)], Transport.USB).steps[0].address == 0x08005000
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("tachyon"), [("t.bin", user_part())])
    assert "does not know how to flash" in refusal_reasons(exc)


def test_refuses_nothing_to_flash():
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron"), [])
    assert "no modules given" in refusal_reasons(exc)


def test_every_reason_is_listed_not_just_the_first():
    bad = bytearray(build_module(platform_id=13, function=F.USER_PART, version=6))
    bad[200] ^= 0xFF
    wanted = [("bad.bin", parse_module(bytes(bad))), ("argon.bin", user_part(12))]
    with pytest.raises(PlanRefused) as exc:
        plan_flash(device("boron"), wanted, Transport.USB)
    assert [r.name for r in exc.value.refusals] == ["bad.bin", "argon.bin"]


def test_there_is_no_way_to_skip_a_check():
    params = set(inspect.signature(plan_flash).parameters)
    assert params == {"device", "wanted", "transport", "order"}
    fields = {f.name for f in dataclasses.fields(DeviceFacts)}
    assert not {f for f in fields if "force" in f or "skip" in f or "check" in f}


def test_apps_first_order_still_checks_dependencies_on_the_final_state():
    parts = release("boron", "6.1.1")
    plan = plan_flash(device("boron", system_version=5901), parts, Transport.AUTO, order="apps-first")
    assert names(plan)[:2] == ["invalidate the former 128 KiB user part", "boron-tinker"]
    assert {s.module.function for s in plan.steps[2:] if s.module} == {F.BOOTLOADER, F.RADIO_STACK, F.SYSTEM_PART}
    tinker_alone = [(n, m) for n, m in parts if m.function == F.USER_PART]
    installed = (InstalledModule(F.SYSTEM_PART, 1, 5901),)
    with pytest.raises(PlanRefused, match="6101"):
        plan_flash(device("boron", modules=installed), tinker_alone, Transport.AUTO, order="apps-first")
    with pytest.raises(ValueError, match="order must be one of"):
        plan_flash(device("boron"), parts, Transport.AUTO, order="whatever")
