"""`kiosk update` and `kiosk flash` on the simulator: what gets written, how, and what is refused."""

from __future__ import annotations

import json

import pytest

from firmware.builder import build_module
from firmware.module import parse_module
from firmware.platforms import Function
from firmware.releases import synthetic_release
from hw.sim.device import Mode
from kiosk import bench as bench_module
from kiosk.cli import main

NEEDS_FLASHING = ["boron", "photon", "electron", "argon", "p2"]


@pytest.fixture
def captured_bench(monkeypatch):
    """Keep the simulated bench a command ran on, to look at the device afterwards."""
    benches = []
    real = bench_module.simulated_bench

    def keep(spec, speed=None):
        bench = real(spec, speed)
        benches.append((bench, bench.close))
        bench.close = lambda: None  # looked at after the command; closed at teardown
        return bench

    monkeypatch.setattr("kiosk.commands.device_cmd.simulated_bench", keep)
    yield _Benches(benches)
    for _, close in benches:
        close()


class _Benches:
    """The benches the command made, by position."""

    def __init__(self, pairs: list):
        self._pairs = pairs

    def __getitem__(self, index: int):
        return self._pairs[index][0]


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    status = main([*argv, "--json"])
    out, _ = capsys.readouterr()
    return status, json.loads(out)


def boots_with_all_modules_valid(device) -> bool:
    device.clock.sleep(5.0)
    modules = device.modules.values()
    return (
        device.mode == Mode.NORMAL
        and all(m.valid_integrity for m in modules)
        and all(m.module is None or device.dependencies_met(m.module) for m in modules)
    )


@pytest.mark.parametrize("platform", NEEDS_FLASHING)
def test_update_repairs_a_corrupt_system_part(capsys, captured_bench, platform):
    status, doc = run_json(capsys, "update", "--simulate", f"corrupt-system@{platform}")
    assert status == 0, doc["detail"]
    assert doc["ok"] and doc["final_usb_mode"] == "normal"
    mechanisms = {s["function"]: s["mechanism"] for s in doc["steps"]}
    device = captured_bench[0].slot(1).device
    started_in_dfu = any(what == "mode: dfu" for _, what in device.log[:3])  # Gen2 runs a damaged part 1
    # never plainly over DFU: into the OTA region of a device in DFU (Device Restore), else by control request
    assert mechanisms["bootloader"] == ("dfu-ota" if started_in_dfu else "control-request")
    assert mechanisms["system-part"] == "dfu"
    with device.clock.actor():
        assert boots_with_all_modules_valid(device)
    for step in doc["steps"]:
        assert step["bytes"] > 0 and step["elapsed_s"] > 0 and step["device_busy_s"] > 0
        assert step["usb_transfers"] > 0 and step["host_cpu_s"] >= 0
    figures = doc["figures"]
    assert set(figures) == {"usb_transfers", "host_cpu_s", "device_busy_s", "device_demanded_s", "elapsed_s",
                            "usb_errors"}  # fmt: skip
    assert figures["usb_errors"] == 0  # a sound simulated cable
    # what the device demanded covers its flash time plus the switches and restarts, and no more than happened
    assert figures["device_busy_s"] < figures["device_demanded_s"] <= figures["elapsed_s"]


@pytest.mark.parametrize("platform", ["boron", "argon"])
def test_the_radio_stack_goes_without_its_module_header(capsys, captured_bench, platform):
    status, doc = run_json(capsys, "update", "--simulate", f"corrupt-system@{platform}")
    assert status == 0
    step = next(s for s in doc["plan"]["steps"] if s["function"] == "radio-stack")
    assert step["dropped_prefix"] == 24 and step["address"] == "0x00001000"
    device = captured_bench[0].slot(1).device
    softdevice = synthetic_release(platform, "6.1.1")[f"{platform}-softdevice@6.1.1.bin"]
    assert device.flash.read(0, 0x1000, len(softdevice) - 24) == softdevice[24:]


@pytest.mark.parametrize("platform", ["argon", "tracker"])
def test_ncp_of_a_device_in_dfu_goes_into_the_ota_region_in_a_pass_of_its_own(capsys, captured_bench, platform):
    status, doc = run_json(capsys, "update", "--simulate", f"corrupt-system@{platform}")
    assert status == 0, doc["detail"]
    ota = [s for s in doc["plan"]["steps"] if s["mechanism"] == "dfu-ota"]
    assert {s["function"] for s in ota} == {"ncp", "bootloader"}  # one module per pass
    address = {"argon": "0x8024c000", "tracker": "0x80689000"}[platform]  # flash_mal.h, 4 MB and 8 MB
    assert {(s["alt_setting"], s["address"]) for s in ota} == {(2, address)}
    device = captured_bench[0].slot(1).device
    ncp = next(s for s in doc["plan"]["steps"] if s["function"] == "ncp")
    assert device.ncp is not None and parse_module(device.ncp).version == ncp["version"]
    assert not device.hazards


@pytest.mark.parametrize("platform", ["argon", "tracker"])
def test_ncp_of_a_running_device_goes_by_control_request(capsys, captured_bench, tmp_path, platform):
    from firmware.builder import build_module
    from firmware.platforms import Function, platform_by_name
    from firmware.releases import NCP_ESP32, NCP_VERSION

    files = synthetic_release(platform, "6.1.1")
    name = next(n for n in files if "ncp" in n)
    (tmp_path / name).write_bytes(files[name])
    # the device has this very NCP (same version, so the same hash in its module table): left out, as Device
    # Restore does
    status, doc = run_json(capsys, "flash", str(tmp_path / name), "--simulate", f"healthy@{platform}")
    assert status == 0 and doc["steps"] == [] and [s["function"] for s in doc["already_on_device"]] == ["ncp"]
    newer = build_module(platform_id=platform_by_name(platform).id, function=Function.NCP_FIRMWARE,
                         version=NCP_VERSION + 1, index=0, reserved=NCP_ESP32, suffix="base")  # fmt: skip
    (tmp_path / "ncp-newer.bin").write_bytes(newer)
    status, doc = run_json(capsys, "flash", str(tmp_path / "ncp-newer.bin"), "--simulate", f"healthy@{platform}")
    assert status == 0, doc["detail"]
    assert [s["mechanism"] for s in doc["steps"]] == ["control-request"]
    assert captured_bench[1].slot(1).device.ncp == newer


@pytest.mark.parametrize("platform", ["boron", "photon", "p2"])
def test_flaky_cable_completes_with_retries(capsys, captured_bench, platform):
    status, doc = run_json(capsys, "update", "--simulate", f"flaky-cable@{platform}")
    assert status == 0, doc["detail"]
    device = captured_bench[0].slot(1).device
    assert device.dfu.stats.faults or device._dfu_transfers >= 7  # the cable did garble transfers
    with device.clock.actor():
        assert boots_with_all_modules_valid(device)


@pytest.mark.parametrize("platform", ["boron", "photon", "p2"])
def test_drops_dfu_is_re_entered_and_the_update_completes(capsys, captured_bench, platform):
    status, doc = run_json(capsys, "update", "--simulate", f"drops-dfu@{platform}")
    assert status == 0, doc["detail"]
    retried = [s for s in doc["steps"] if s["attempts"] > 1]
    assert retried and "left DFU mode" in retried[0]["detail"]
    device = captured_bench[0].slot(1).device
    assert any("drops out of DFU" in what for _, what in device.log)
    with device.clock.actor():
        assert boots_with_all_modules_valid(device)


def test_flash_tinker_by_name_over_usb(capsys, captured_bench):
    status, doc = run_json(capsys, "flash", "--usb", "tinker", "--simulate", "app-crash@photon")
    assert status == 0, doc.get("detail")
    assert [s["function"] for s in doc["steps"]] == ["user-part"]
    device = captured_bench[0].slot(1).device
    with device.clock.actor():
        device.clock.sleep(20.0)
        assert device.mode == Mode.NORMAL  # Tinker runs; the crashing app is gone


def _written_nothing(device) -> bool:
    return device.dfu.stats.transfers.get("DNLOAD", 0) == 0 and not device.control_server.active_ids


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: build_module(platform_id=12, function=Function.USER_PART, version=6), "made for argon"),
        (lambda: _flip(build_module(platform_id=13, function=Function.USER_PART, version=6)), "CRC-32"),
    ],
)
def test_bad_files_are_refused_before_any_byte(capsys, captured_bench, tmp_path, make, message):
    path = tmp_path / "x.bin"
    path.write_bytes(make())
    status, doc = run_json(capsys, "flash", "--usb", str(path), "--simulate", "app-crash")
    assert status == 2 and doc["refused"] is True
    assert message in doc["reasons"][0]["reason"]
    assert _written_nothing(captured_bench[0].slot(1).device)


def test_serial_flash_on_device_os_6_is_refused_before_any_byte(capsys, captured_bench, tmp_path):
    tinker = synthetic_release("boron", "6.1.1")["boron-tinker@6.1.1.bin"]
    (tmp_path / "tinker.bin").write_bytes(tinker)
    status, doc = run_json(capsys, "flash", "--serial", str(tmp_path / "tinker.bin"), "--simulate", "app-crash")
    assert status == 2
    assert "Device OS 6.0.0 and later have no YModem" in doc["reasons"][0]["reason"]
    assert _written_nothing(captured_bench[0].slot(1).device)


@pytest.mark.parametrize("flag", [[], ["--usb"]])
def test_bootloader_on_device_os_6_in_normal_mode_goes_by_control_request(capsys, captured_bench, tmp_path, flag):
    """particle-cli `particle flash --usb bootloader.bin`: a control-request update; no dead end on 6.x."""
    boot = synthetic_release("boron", "6.1.1")["boron-bootloader@6.1.1.bin"]
    (tmp_path / "boot.bin").write_bytes(boot)
    status, doc = run_json(capsys, "flash", *flag, str(tmp_path / "boot.bin"), "--simulate", "old-bootloader")
    assert status == 0, doc["detail"]
    assert [s["mechanism"] for s in doc["steps"]] == ["control-request"]
    device = captured_bench[0].slot(1).device
    assert device.bootloader_version == parse_module(boot).version
    with device.clock.actor():
        assert boots_with_all_modules_valid(device)  # the system part's dependency is met now: out of safe mode


@pytest.mark.parametrize("platform", ["boron", "photon", "p2"])
def test_bootloader_by_kiosk_flash_on_a_dfu_only_device(capsys, captured_bench, tmp_path, platform):
    """The system part over DFU and the bootloader into the OTA region; the new Device OS applies it at boot."""
    release = {"boron": "6.1.1", "photon": "2.3.0", "p2": "6.2.0"}[platform]
    files = synthetic_release(platform, release)
    wanted = [n for n in files if "system-part" in n or "-bootloader@" in n or "prebootloader-part1" in n]
    for name in wanted:
        (tmp_path / name).write_bytes(files[name])
    status, doc = run_json(capsys, "flash", *[str(tmp_path / n) for n in wanted],
                           "--simulate", f"dfu-only-old-bootloader@{platform}")  # fmt: skip
    assert status == 0, doc["detail"]
    by_function = {(s["function"], s["name"].rsplit("/", 1)[-1]): s["mechanism"] for s in doc["steps"]}
    assert {m for (f, _), m in by_function.items() if f == "bootloader"} == {"dfu-ota"}
    assert {m for (f, _), m in by_function.items() if f == "system-part"} == {"dfu"}
    device = captured_bench[0].slot(1).device
    assert device.bootloader_version == parse_module(files[f"{platform}-bootloader@{release}.bin"]).version
    assert device.flash.read(1, 1753, 1) == b"\xff"  # Device OS cleared the flag before it applied
    assert not device.hazards
    with device.clock.actor():
        assert boots_with_all_modules_valid(device)


def test_a_lone_bootloader_on_a_dfu_only_device_reads_the_system_version_from_flash(capsys, captured_bench, tmp_path):
    """In DFU mode the kiosk reads the system part's header over DFU to know which OTA region applies."""
    boot = synthetic_release("boron", "6.1.1")["boron-bootloader@6.1.1.bin"]
    (tmp_path / "boot.bin").write_bytes(boot)
    status, doc = run_json(capsys, "flash", str(tmp_path / "boot.bin"), "--simulate", "corrupt-system@boron")
    (step,) = doc["plan"]["steps"]
    assert (step["mechanism"], step["address"]) == ("dfu-ota", "0x8024c000")
    # the damaged system part does not run, so nothing applies it: said, not hidden
    assert status == 1 and "its Device OS does not run" in doc["detail"]


REFUSED_WITH_ADVICE = [
    # (scenario, file in the boron 6.1.1 release, transport flag)
    ("healthy", "boron-bootloader@6.1.1.bin", "--serial"),  # 6.x has no YModem
    ("healthy", "boron-tinker@6.1.1.bin", "--serial"),
    ("dfu-only-old-bootloader", "boron-bootloader@6.1.1.bin", "--serial"),
    ("healthy", "boron-system-part1@6.1.1.bin", "--serial"),
]


@pytest.mark.parametrize(("scenario", "name", "flag"), REFUSED_WITH_ADVICE)
def test_every_suggested_command_plans(capsys, tmp_path, scenario, name, flag):
    (tmp_path / name).write_bytes(synthetic_release("boron", "6.1.1")[name])
    status, doc = run_json(capsys, "flash", flag, str(tmp_path / name), "--simulate", scenario)
    assert status == 2 and doc["suggestion"], doc
    argv = doc["suggestion"]["argv"]
    assert argv[:2] == ["kiosk", "flash"] and flag not in argv
    status, doc = run_json(capsys, *argv[1:])
    assert doc["refused"] is False, doc  # the advice was a command the kiosk accepts


def test_update_to_a_release_the_library_lacks(capsys):
    status = main(["update", "--device-os", "5.3.1", "--simulate", "corrupt-system"])
    _, err = capsys.readouterr()
    assert status == 2 and "Device OS 5.3.1 for boron is not in the library" in err


def test_flash_refuses_force(capsys):
    status = main(["flash", "--usb", "--force", "tinker", "--simulate", "healthy"])
    assert status == 2 and "never forces a flash" in capsys.readouterr().err


def _flip(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x40
    assert parse_module(bytes(damaged)).crc_ok is False
    return bytes(damaged)


@pytest.mark.parametrize("platform", ["boron", "photon"])
def test_swd_restore_brings_back_a_device_without_bootloader(capsys, captured_bench, platform):
    status, doc = run_json(
        capsys, "restore", "--swd", "--platform", platform, "--simulate", f"missing-bootloader@{platform}"
    )
    assert status == 0 and doc["ok"] and doc["final_usb_mode"] == "normal"
    step = doc["steps"][0]
    assert step["mechanism"] == "swd" and step["bytes"] > 0 and step["device_busy_s"] > 0
    assert step["mass_erased"] is (platform == "boron")  # Gen3 restores erase first; Gen2 keeps its DCT
    device = captured_bench[0].slot(1).device
    with device.clock.actor():
        assert boots_with_all_modules_valid(device)


def test_swd_restore_needs_the_platform_when_usb_is_silent(capsys):
    status = main(["restore", "--swd", "--simulate", "missing-bootloader"])
    assert status == 2 and "--platform" in capsys.readouterr().err


def test_swd_restore_of_a_p2_says_pyocd_has_no_target(capsys):
    status = main(["restore", "--swd", "--platform", "p2", "--simulate", "missing-bootloader@p2"])
    assert status == 1 and "pyOCD has no target for the P2" in capsys.readouterr().err


def test_swd_restore_of_a_dead_device(capsys):
    status = main(["restore", "--swd", "--platform", "boron", "--simulate", "dead"])
    assert status == 3 and "not powered" in capsys.readouterr().err


def test_swd_restore_refused_on_a_protected_device(capsys):
    status = main(["restore", "--swd", "--simulate", "protected"])
    assert status == 2 and "Device Protection is on" in capsys.readouterr().err


def test_swd_restore_of_a_protected_device_whose_protection_went_unseen_is_stopped_by_its_locked_debug_port(
    capsys, captured_bench, monkeypatch
):
    """A protected Boron in its crash loop may not answer the control request that shows its protection; its
    debug port is locked (APPROTECT) all the same, and the restore never mass-erases it open."""
    from firmware.plan import DeviceFacts
    from kiosk.commands import flash_cmd

    def unanswered(slot, device):
        return DeviceFacts(device.platform, None, None, mode=device.mode, protected=False)

    monkeypatch.setattr(flash_cmd, "gather_facts", unanswered)
    status = main(["restore", "--swd", "--simulate", "protected@boron"])
    err = capsys.readouterr().err
    assert status == 1 and "locked (APPROTECT" in err and "mass erase" in err
    device = captured_bench[0].slot(1).device
    with device.clock.actor():
        modules = device.modules.values()
        assert all(m.valid_integrity for m in modules) and sum(len(m.data) for m in modules) > 100_000  # not erased


@pytest.mark.parametrize("platform", ["boron", "photon", "p2"])
def test_tinker_first_update_takes_only_in_the_other_order(platform):
    """tinker-first: the update alone is written and verified but does not take, and the executor says so;
    Tinker first, then the update, works (the recovery ladder's second try)."""
    from firmware.plan import Transport, plan_flash
    from kiosk.demo_library import demo_library
    from kiosk.executor import FlashExecutor
    from kiosk.facts import gather_facts

    lib = demo_library([platform])
    bundle = lib.bundle(platform)
    update = [(e.path, parse_module(lib.read(e))) for e in bundle.entries if not e.encrypted]
    tinker_entry = lib.tinker(platform)
    tinker = [(tinker_entry.path, parse_module(lib.read(tinker_entry)))]
    with bench_module.simulated_bench(f"tinker-first@{platform}") as bench, bench.clock.actor():
        slot = bench.slot(1)
        device = slot.device

        def run(wanted, order="dependencies"):
            facts = gather_facts(slot, bench_module_wait(slot))
            return FlashExecutor(slot, plan_flash(facts, wanted, Transport.AUTO, order)).run()

        first = run(update + tinker)  # the update, then Tinker: written and verified, yet the update does not take
        assert not first.ok and "does not report system-part" in first.detail
        assert any("did not take" in what for _, what in device.log)
        second = run(update + tinker, order="apps-first")  # the other order
        assert second.ok, second.detail
        assert boots_with_all_modules_valid(device)


def bench_module_wait(slot):
    from kiosk import modes

    device = modes.wait_for_device(slot, 10.0)
    assert device is not None
    return device


def test_swd_restore_from_module_sets_on_gen2_but_not_gen3(capsys, tmp_path):
    from kiosk.demo_library import demo_library

    library = tmp_path / "lib"
    for platform in ("photon", "boron"):
        demo = demo_library([platform], root=tmp_path / f"demo-{platform}")
        for entry in demo.entries():
            if entry.kind == "module":  # the release and Tinker, but no restore .hex
                (tmp_path / "in").mkdir(exist_ok=True)
                (tmp_path / "in" / entry.path.split("/")[-1]).write_bytes(demo.read(entry))
    assert main(["firmware", "import", "--library", str(library), str(tmp_path / "in")]) == 0
    capsys.readouterr()
    status, doc = run_json(capsys, "restore", "--swd", "--platform", "photon", "--library", str(library),
                           "--simulate", "missing-bootloader@photon")  # fmt: skip
    assert status == 0 and doc["ok"] and "laid out by address" in doc["image"]
    status = main(["restore", "--swd", "--platform", "boron", "--library", str(library),
                   "--simulate", "missing-bootloader"])  # fmt: skip
    assert status == 2 and "no SWD restore image for boron" in capsys.readouterr().err
