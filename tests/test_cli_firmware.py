"""`kiosk firmware ...` end to end: JSON shape, text, exit statuses, and --force refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.builder import build_module
from firmware.platforms import Function as F
from firmware.releases import synthetic_release
from kiosk.cli import FORCE_REFUSAL, asks_for_force, main
from tests.fixture_paths import FIXTURES

SHOW_KEYS = {
    "file", "is_module", "platform_id", "platform", "function", "index", "version", "start_address",
    "end_address", "prefix_offset", "flags", "dependencies", "suffix_size", "product_id", "product_version",
    "sha256", "sha_ok", "crc_ok", "problems",
}  # fmt: skip
THIRTEEN = sorted(p for p in FIXTURES.glob("*.bin"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_show_json_has_every_key_for_all_thirteen_files(capsys):
    assert len(THIRTEEN) == 13
    status, out, _ = run(capsys, "firmware", "show", "--json", *map(str, THIRTEEN))
    docs = json.loads(out)
    assert [Path(d["file"]).name for d in docs] == [p.name for p in THIRTEEN]
    for doc in docs:
        assert set(doc) >= SHOW_KEYS
    by_name = {Path(d["file"]).name: d for d in docs}
    product = by_name["product_firmware.bin"]
    assert (product["platform"], product["function"], product["index"], product["version"]) == (
        "electron", "user-part", 1, 6,
    )  # fmt: skip
    assert (product["product_id"], product["product_version"]) == (8178, 13)
    assert product["dependencies"] == [{"function": "system-part", "index": 2, "version": 1201}]
    assert product["sha256"] == "3200f1aa2d533b53d9ea892f97153207daf1dc6a401714ce4e5e9c47a85529ce"
    assert product["crc_ok"] and product["sha_ok"] and product["problems"] == []
    softdevice = by_name["argon-softdevice-6.1.1.bin"]
    assert softdevice["function"] == "radio-stack" and softdevice["flags"] == ["drop-module-info"]
    assert softdevice["product_id"] is None and softdevice["product_version"] is None
    assert by_name["044_Core_Tinker_P5_V10.bin"]["function"] == "mono"
    assert by_name["044_Core_Tinker_P5_V10.bin"]["prefix_offset"] == 268
    assert not by_name["RC4_bootloader_pad_BM-09.bin"]["crc_ok"]
    assert status == 1  # two of the thirteen have problems


def test_show_text_reads_like_particle_binary_inspect(capsys):
    status, out, _ = run(capsys, "firmware", "show", str(FIXTURES / "product_firmware.bin"))
    assert status == 0
    assert "CRC is ok (e309c618)" in out
    assert "Compiled for electron" in out
    assert "This is an application module number 1 at version 6" in out
    assert "It depends on a system module number 2 at version 1201" in out
    assert "It is firmware for product id 8178 at version 13" in out


def test_show_names_the_device_os_of_a_system_part(capsys, tmp_path):
    path = tmp_path / "sys.bin"
    path.write_bytes(build_module(platform_id=13, function=F.SYSTEM_PART, version=6101))
    _, out, _ = run(capsys, "firmware", "show", str(path))
    assert "a system module number 1 at version 6101 (Device OS 6.1.1)" in out


def test_show_a_file_that_is_not_a_module(capsys, tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20)
    status, out, _ = run(capsys, "firmware", "show", "--json", str(tmp_path / "photo.jpg"))
    doc = json.loads(out)[0]
    assert status == 1
    assert doc["is_module"] is False and doc["platform"] is None and doc["crc_ok"] is None
    assert "not a Particle module" in doc["problems"][0]


def test_show_an_unreadable_file_is_exit_2_and_still_reports_the_rest(capsys, tmp_path):
    status, out, _ = run(capsys, "firmware", "show", "--json", str(tmp_path / "missing.bin"), str(THIRTEEN[0]))
    docs = json.loads(out)
    assert status == 2
    assert "cannot read the file" in docs[0]["problems"][0]
    assert docs[1]["is_module"] is True


def test_import_then_list(capsys, tmp_path):
    rel = tmp_path / "rel"
    rel.mkdir()
    for name, data in synthetic_release("boron", "6.1.1").items():
        (rel / name).write_bytes(data)
    library = tmp_path / "lib"
    status, out, _ = run(capsys, "firmware", "import", "--library", str(library), "--json", str(rel))
    report = json.loads(out)
    assert status == 0 and len(report["added"]) == 4 and report["quarantined"] == []
    status, out, _ = run(capsys, "firmware", "import", "--library", str(library), str(rel))
    assert status == 0 and "0 added, 4 already in the library" in out
    status, out, _ = run(capsys, "firmware", "list", "--library", str(library), "--json")
    listing = json.loads(out)
    assert {e["name"] for e in listing["entries"]} == {"bootloader", "softdevice", "system-part1", "tinker"}
    status, out, _ = run(capsys, "firmware", "list", "--library", str(library))
    assert "boron" in out and "6.1.1" in out and "system-part1" in out


def test_import_with_quarantine_exits_1_and_says_why(capsys, tmp_path):
    bad = bytearray(build_module(platform_id=13, function=F.USER_PART, version=6))
    bad[-1] ^= 1
    (tmp_path / "bad.bin").write_bytes(bytes(bad))
    status, out, _ = run(capsys, "firmware", "import", "--library", str(tmp_path / "lib"), str(tmp_path / "bad.bin"))
    assert status == 1
    assert "QUARANTINED" in out and "CRC-32 does not match" in out


def test_library_location_comes_from_the_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PARTICLE_KIOSK_LIBRARY", str(tmp_path / "envlib"))
    run(capsys, "firmware", "import", str(FIXTURES / "product_firmware.bin"))
    assert (tmp_path / "envlib" / "manifest.json").exists()
    status, out, _ = run(capsys, "firmware", "list", "--json")
    assert status == 0 and json.loads(out)["library"] == str(tmp_path / "envlib")


def test_empty_library_says_how_to_fill_it(capsys, tmp_path):
    status, out, _ = run(capsys, "firmware", "list", "--library", str(tmp_path / "none"))
    assert status == 0 and "kiosk firmware import" in out


def test_plan_json(capsys, tmp_path):
    paths = []
    for name, data in synthetic_release("argon", "4.1.0").items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    status, out, _ = run(capsys, "firmware", "plan", "--platform", "argon", "--device-os", "4.0.2", "--json", *paths)
    doc = json.loads(out)
    assert status == 0 and doc["refused"] is False
    assert [s["function"] for s in doc["steps"]][:2] == ["bootloader", "ncp"]
    softdevice = next(s for s in doc["steps"] if s["function"] == "radio-stack")
    assert softdevice == {
        **softdevice, "mechanism": "dfu", "address": "0x00001000", "alt_setting": 0, "dropped_prefix": 24,
    }  # fmt: skip


def test_plan_refusal_is_exit_2_with_every_reason(capsys, tmp_path):
    (tmp_path / "boot.bin").write_bytes(build_module(platform_id=13, function=F.BOOTLOADER, version=3001))
    (tmp_path / "argon.bin").write_bytes(build_module(platform_id=12, function=F.USER_PART, version=6))
    status, _, err = run(capsys, "firmware", "plan", "--platform", "boron", "--serial", "--device-os", "6.1.1",
                         str(tmp_path / "boot.bin"), str(tmp_path / "argon.bin"))  # fmt: skip
    assert status == 2
    assert "Refused: nothing would be written" in err
    assert "made for argon" in err
    assert "It plans this way" not in err  # the Argon file plans on no transport: nothing to suggest
    status, out, _ = run(capsys, "firmware", "plan", "--platform", "boron", "--serial", "--device-os", "6.1.1",
                         "--json", str(tmp_path / "boot.bin"))  # fmt: skip
    doc = json.loads(out)
    assert status == 2 and doc["refused"] is True and "have no YModem" in doc["reasons"][0]["reason"]
    suggested = doc["suggestion"]["argv"]
    assert suggested[:3] == ["kiosk", "firmware", "plan"] and "--serial" not in suggested
    status, out, _ = run(capsys, *suggested[1:], "--json")  # the advice is a command that plans
    assert status == 0 and json.loads(out)["steps"][0]["mechanism"] == "control-request"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--platform", "potato"], "unknown platform 'potato'; the kiosk knows: core, photon"),
        (["--platform", "boron", "--device-os", "9.9.9"], "not in the kiosk's release table"),
        (["--platform", "boron", "--device-os", "banana"], "is not a Device OS version"),
    ],
)
def test_plan_bad_arguments_are_refused_clearly(capsys, argv, message):
    status, _, err = run(capsys, "firmware", "plan", *argv, str(THIRTEEN[0]))
    assert status == 2 and message in err


def test_plan_of_a_file_that_is_not_a_module(capsys, tmp_path):
    (tmp_path / "x.bin").write_bytes(b"hello" * 100)
    status, _, err = run(capsys, "firmware", "plan", "--platform", "boron", str(tmp_path / "x.bin"))
    assert status == 2 and "not a Particle module" in err


FORCE_SPELLINGS = [
    "--force", "-f", "-F", "--Force", "--FORCE", "--force=yes", "--forced", "--force-flash", "--force_flash",
    "-fv", "--no-verify", "--skip-checks", "--override", "--ignore-crc", "--unsafe",
]  # fmt: skip


@pytest.mark.parametrize("spelling", FORCE_SPELLINGS)
def test_force_is_refused_in_every_spelling(capsys, spelling, tmp_path):
    status, out, err = run(capsys, "firmware", "plan", "--platform", "boron", spelling, str(THIRTEEN[0]))
    assert status == 2
    assert out == ""
    assert "never forces a flash" in err and "Fix what the refusal names instead" in err


def test_force_refused_before_anything_runs(capsys, tmp_path):
    library = tmp_path / "lib"
    status, _, _ = run(capsys, "firmware", "import", "--library", str(library), "--force", str(THIRTEEN[0]))
    assert status == 2 and not library.exists()


@pytest.mark.parametrize("argv", [["--help"], ["firmware", "show", "x.bin"], ["--", "-f"], ["-h"], ["--version-x"]])
def test_not_force(argv):
    assert asks_for_force(argv) is None


def test_console_script_runs_and_refuses_force():
    proc = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "firmware", "show", "--force", "x.bin"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert FORCE_REFUSAL.splitlines()[0] in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_command_opens_the_kiosk_and_without_a_bench_says_so(capsys):
    """Bare `kiosk` is the touchscreen kiosk on the configured bench; here there is none: exit 3, one message."""
    status, _, err = run(capsys)
    assert status == 3 and "no bench config at" in err and "--simulate" in err
    assert "Traceback" not in err


def test_help_lists_the_commands(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "firmware" in out and "recover" in out


def test_unknown_option_is_exit_2(capsys):
    status, _, err = run(capsys, "firmware", "show", "--bogus", "x.bin")
    assert status == 2 and "unrecognized arguments" in err


def test_plan_on_device_os_6_3_4_and_a_release_the_table_does_not_know(capsys, tmp_path):
    """6.3.4 is in the release table (Particle's Device Restore: system 6305); 6.5.0 is not, and the refusal says
    what to give instead."""
    tinker = tmp_path / "boron-tinker@6.3.4.bin"
    tinker.write_bytes(synthetic_release("boron", "6.3.4", body_size=4096)["boron-tinker@6.3.4.bin"])
    status, out, _ = run(capsys, "firmware", "plan", "--platform", "boron", "--device-os", "6.3.4", "--json",
                         str(tinker))  # fmt: skip
    doc = json.loads(out)
    assert status == 0 and doc["refused"] is False and [s["function"] for s in doc["steps"]][-1] == "user-part"
    status, _, err = run(capsys, "firmware", "plan", "--platform", "boron", "--device-os", "6.5.0", str(tinker))
    assert status == 2 and "not in the kiosk's release table" in err and "--device-os 5301" in err


def test_list_says_which_release_lacks_a_part_and_what_to_import(capsys, tmp_path):
    folder = tmp_path / "boron-6.1.1"
    folder.mkdir()
    for name, data in synthetic_release("boron", "6.1.1").items():
        if "bootloader" not in name:  # a release imported without its bootloader
            (folder / name).write_bytes(data)
    library = str(tmp_path / "lib")
    assert run(capsys, "firmware", "import", str(folder), "--library", library)[0] == 0
    status, out, _ = run(capsys, "firmware", "list", "--library", library)
    assert status == 0
    incomplete = [line for line in out.splitlines() if line.startswith("INCOMPLETE")]
    assert len(incomplete) == 1 and "boron 6.1.1" in incomplete[0] and "bootloader" in incomplete[0]
    assert "import" in incomplete[0]
    status, out, _ = run(capsys, "firmware", "list", "--library", library, "--json")
    (bundle,) = json.loads(out)["bundles"]
    assert bundle["release"] == "6.1.1" and bundle["lacks"] and "bootloader" in bundle["missing"]
    boot = folder / "boron-bootloader@6.1.1.bin"
    boot.write_bytes(synthetic_release("boron", "6.1.1")[boot.name])
    assert run(capsys, "firmware", "import", str(boot), "--library", library)[0] == 0
    status, out, _ = run(capsys, "firmware", "list", "--library", library)
    assert "INCOMPLETE" not in out
