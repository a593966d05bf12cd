"""firmware.library with Particle's own file names and shapes, each imported with the kiosk's own import.

Device Restore publishes ``<version>/<platform>.hex`` and ``<version>/<platform>.zip`` whose members are named without
a version (``system-part1.bin``, ``softdevice.bin``, ``bootloader.bin``, ``tinker.bin``, ``prebootloader-part1.bin``);
SoftDevice and NCP files carry their own versions (``boron-softdevice@6.0.0.bin``, ``tracker-esp32-ncp@0.0.7.bin``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from firmware.builder import build_module
from firmware.intelhex import format_hex
from firmware.library import FirmwareLibrary, LibraryError
from firmware.module import ModuleFlag, parse_module
from firmware.platforms import Function as F
from firmware.releases import BODY, SOFTDEVICE_VERSION, synthetic_release, synthetic_restore_image


@pytest.fixture
def lib(tmp_path) -> FirmwareLibrary:
    return FirmwareLibrary(tmp_path / "library")


def restore_members(platform: str, release: str) -> dict[str, bytes]:
    """A release's files under the names Device Restore gives them inside ``<version>/<platform>.zip``."""
    files = synthetic_release(platform, release, body_size=BODY)
    return {name.removeprefix(f"{platform}-").replace(f"@{release}", ""): data for name, data in files.items()}


def restore_zip(root: Path, platform: str, release: str, drop: tuple[str, ...] = ()) -> Path:
    path = root / release / f"{platform}.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in restore_members(platform, release).items():
            if name.removesuffix(".bin") not in drop:
                z.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("platform", "parts"),
    [("boron", {"bootloader", "softdevice", "system-part1"}),
     ("p2", {"bootloader", "prebootloader-part1", "prebootloader-mbr", "system-part1"})],
)  # fmt: skip
def test_a_device_restore_zip_is_one_release(lib, tmp_path, platform, parts):
    """Nothing lands in "unreleased": the system part's version names the release (6305 = 6.3.4) for every member."""
    zipped = restore_zip(tmp_path / "device-restore", platform, "6.3.4")
    report = lib.import_path(zipped)
    assert not report.quarantined
    assert not [e for e in report.added if "unreleased" in e.path]
    assert {e.release for e in report.added if "/apps/" not in e.path} == {"6.3.4"}
    bundle = lib.bundle(platform)
    assert bundle.release == "6.3.4" and bundle.missing == () and bundle.lacks == ()
    assert {e.name for e in bundle.entries} == parts
    assert lib.tinker(platform).system_dependency == 6305


def test_a_device_restore_zip_without_a_version_anywhere_takes_its_system_parts(lib, tmp_path):
    path = tmp_path / "boron.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in restore_members("boron", "6.4.1").items():
            z.writestr(name, data)
    lib.import_path(path)
    assert lib.releases("boron") == ["6.4.1"] and lib.bundle("boron").missing == ()


def test_a_folder_of_device_restore_zips_and_hex_files(lib, tmp_path):
    """Two releases side by side, as Particle publishes them: each zip and each restore image its own release."""
    root = tmp_path / "device-restore"
    for release in ("6.3.3", "6.3.4"):
        restore_zip(root, "boron", release)
        image = format_hex(synthetic_restore_image("boron", release, body_size=BODY))
        (root / release / "boron.hex").write_text(image)
    report = lib.import_path(root)
    assert not report.quarantined, report.quarantined
    images = sorted((e.release, e.path) for e in lib.entries() if e.kind == "restore-image")
    assert images == [("6.3.3", "restore/boron/boron-restore@6.3.3.hex"),
                      ("6.3.4", "restore/boron/boron-restore@6.3.4.hex")]  # fmt: skip
    assert lib.restore_image("boron").release == "6.3.4"
    assert lib.restore_image("boron", "6.3.3").release == "6.3.3"
    assert lib.releases("boron") == ["6.3.3", "6.3.4"]
    # the SoftDevice is the same file in both zips: kept once, and both bundles have it
    for release in ("6.3.3", "6.3.4"):
        bundle = lib.bundle("boron", release)
        assert bundle.missing == () and "softdevice" in {e.name for e in bundle.entries}, release
    assert len([e for e in lib.entries() if e.function == "radio-stack"]) == 1


def test_a_restore_image_imported_alone_takes_the_release_of_its_folder_or_of_its_system_part(lib, tmp_path):
    (tmp_path / "6.3.4").mkdir()
    (tmp_path / "6.3.4" / "boron.hex").write_text(format_hex(synthetic_restore_image("boron", "6.3.4", body_size=BODY)))
    (tmp_path / "mystery.hex").write_text(format_hex(synthetic_restore_image("boron", "6.3.3", body_size=BODY)))
    lib.import_path(tmp_path / "6.3.4" / "boron.hex")
    lib.import_path(tmp_path / "mystery.hex")
    assert sorted(e.release for e in lib.entries()) == ["6.3.3", "6.3.4"]


def test_softdevice_and_ncp_named_with_their_own_versions_serve_the_releases_that_depend_on_them(lib, tmp_path):
    boron = restore_members("boron", "6.3.4")
    (tmp_path / "boron-softdevice@6.0.0.bin").write_bytes(boron["softdevice.bin"])
    lib.import_path(tmp_path / "boron-softdevice@6.0.0.bin")
    assert lib.releases("boron") == [] and not [e for e in lib.entries() if e.release == "6.0.0"]
    restore_zip(tmp_path / "dr", "boron", "6.3.4", drop=("softdevice",))
    lib.import_path(tmp_path / "dr" / "6.3.4" / "boron.zip")
    bundle = lib.bundle("boron", "6.3.4")
    softdevice = next(e for e in bundle.entries if e.function == "radio-stack")
    assert softdevice.version == SOFTDEVICE_VERSION and softdevice.source == "boron-softdevice@6.0.0.bin"
    assert bundle.missing == ()

    tracker = restore_members("tracker", "6.4.1")
    (tmp_path / "tracker-esp32-ncp@0.0.7.bin").write_bytes(tracker.pop("ncp-firmware.bin"))
    lib.import_path(tmp_path / "tracker-esp32-ncp@0.0.7.bin")
    with zipfile.ZipFile(tmp_path / "tracker.zip", "w") as z:
        for name, data in tracker.items():
            z.writestr(name, data)
    lib.import_path(tmp_path / "tracker.zip")
    bundle = lib.bundle("tracker")
    assert bundle.release == "6.4.1" and bundle.missing == ()
    ncp = next(e for e in bundle.entries if e.function == "ncp")
    assert (ncp.version, ncp.release, ncp.source) == (7, None, "tracker-esp32-ncp@0.0.7.bin")
    assert not [e for e in lib.entries() if e.release == "0.0.7"]


def test_a_bundle_without_its_radio_stack_or_bootloader_says_so(lib, tmp_path):
    lib.import_path(restore_zip(tmp_path, "boron", "6.3.4", drop=("softdevice", "bootloader")))
    bundle = lib.bundle("boron")
    assert bundle.missing == ("bootloader", "softdevice")
    bootloader, softdevice = bundle.lacks
    assert "system-part1 v6305 needs bootloader 0 at version 3200 or newer" in bootloader
    assert "needs radio-stack 0 at version 202 or newer" in softdevice and "Device Restore zip for 6.3.4" in softdevice
    # a SoftDevice too old for the dependency does not serve it, and the bundle says what the library has
    old = build_module(platform_id=13, function=F.RADIO_STACK, version=182, start_address=0x1000, body_size=BODY,
                       flags=ModuleFlag.DROP_MODULE_INFO, suffix="base")  # fmt: skip
    (tmp_path / "boron-softdevice@6.1.1.bin").write_bytes(old)
    lib.import_path(tmp_path / "boron-softdevice@6.1.1.bin")
    bundle = lib.bundle("boron")
    assert "softdevice" in bundle.missing and "the library has only v182" in bundle.lacks[-1]
    assert bundle.to_json()["missing"] == list(bundle.missing)


def test_a_p2_bootloader_brings_the_prebootloader_it_depends_on(lib, tmp_path):
    lib.import_path(restore_zip(tmp_path, "p2", "6.3.4", drop=("prebootloader-part1",)))
    bundle = lib.bundle("p2")
    assert bundle.missing == ("prebootloader-part1",)
    assert "bootloader v3200 needs bootloader 2" in bundle.lacks[0]


def test_a_release_the_table_does_not_know_is_importable_from_its_own_files(lib, tmp_path):
    """6.5.0 is newer than the table: its zip's name gives the release, its modules their versions."""
    bootloader = build_module(platform_id=13, function=F.BOOTLOADER, version=3400, start_address=0xF4000,
                              body_size=BODY)  # fmt: skip
    system = build_module(platform_id=13, function=F.SYSTEM_PART, index=1, version=6500, start_address=0x28000,
                          dependencies=[(F.BOOTLOADER, 0, 3400), (F.RADIO_STACK, 0, 202)], body_size=BODY)  # fmt: skip
    softdevice = restore_members("boron", "6.4.1")["softdevice.bin"]
    path = tmp_path / "particle_device-os@6.5.0+boron.binaries.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {"boron-bootloader@6.5.0.bin": bootloader, "boron-system-part1@6.5.0.bin": system,
                           "boron-softdevice@6.5.0.bin": softdevice}.items():  # fmt: skip
            z.writestr(name, data)
    report = lib.import_path(path)
    assert not report.quarantined
    bundle = lib.bundle("boron")
    assert bundle.release == "6.5.0" and bundle.missing == ()
    assert {(e.name, e.version) for e in bundle.entries} == {("bootloader", 3400), ("system-part1", 6500),
                                                             ("softdevice", 202)}  # fmt: skip
    assert parse_module(lib.read(next(e for e in bundle.entries if e.version == 6500))).version == 6500
    with pytest.raises(LibraryError, match=r"Device OS 6\.4\.1 for boron is not in the library"):
        lib.bundle("boron", "6.4.1")
