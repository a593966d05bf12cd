"""firmware.library: import, verification, quarantine, idempotence, bundles and Tinker lookups."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from firmware.builder import build_module
from firmware.intelhex import format_hex
from firmware.library import FirmwareLibrary, LibraryError, release_from_name
from firmware.module import parse_module
from firmware.platforms import Function as F
from firmware.releases import synthetic_release
from tests.fixture_paths import CORPUS, FIXTURES


def write_release(folder: Path, platform: str, version: str) -> dict[str, bytes]:
    files = synthetic_release(platform, version)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def zip_release(path: Path, platform: str, version: str, extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    files = synthetic_release(platform, version)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**files, **(extra or {})}.items():
            z.writestr(f"release/{name}", data)
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def lib(tmp_path) -> FirmwareLibrary:
    return FirmwareLibrary(tmp_path / "library")


def test_import_a_release_zip_and_get_its_bundle(lib, tmp_path):
    files = zip_release(tmp_path / "particle_device-os@6.1.1+boron.binaries.zip", "boron", "6.1.1")
    report = lib.import_path(tmp_path / "particle_device-os@6.1.1+boron.binaries.zip")
    assert len(report.added) == len(files) and not report.quarantined
    bundle = lib.bundle("boron")
    assert bundle.release == "6.1.1"
    assert {e.name for e in bundle.entries} == {"bootloader", "softdevice", "system-part1"}
    assert bundle.missing == ()
    for entry in bundle.entries:  # the bytes come back exactly, checked against the manifest
        assert lib.read(entry) == files[f"boron-{entry.name}@6.1.1.bin"]
    assert lib.tinker("boron").name == "tinker"


def test_bundle_picks_the_newest_release_or_the_one_asked_for(lib, tmp_path):
    write_release(tmp_path / "a", "boron", "5.9.0")
    write_release(tmp_path / "b", "boron", "6.1.1")
    write_release(tmp_path / "c", "boron", "6.0.0")
    for folder in "abc":
        lib.import_path(tmp_path / folder)
    assert lib.releases("boron") == ["5.9.0", "6.0.0", "6.1.1"]
    assert lib.bundle("boron").release == "6.1.1"
    assert lib.bundle("boron", "5.9.0").release == "5.9.0"
    assert {e.version for e in lib.bundle("boron", "5.9.0").entries if e.function == "system-part"} == {5901}
    with pytest.raises(LibraryError, match=r"Device OS 4\.1\.0 for boron is not in the library.*5\.9\.0, 6\.0\.0"):
        lib.bundle("boron", "4.1.0")


def test_bundle_of_an_electron_needs_all_three_system_parts(lib, tmp_path):
    files = write_release(tmp_path / "rel", "electron", "2.3.0")
    (tmp_path / "rel" / "electron-system-part3@2.3.0.bin").unlink()
    lib.import_path(tmp_path / "rel")
    with pytest.raises(LibraryError, match="no complete Device OS release for electron"):
        lib.bundle("electron")
    with pytest.raises(LibraryError, match="incomplete: missing system-part index 2"):
        lib.bundle("electron", "2.3.0")
    (tmp_path / "rel" / "electron-system-part3@2.3.0.bin").write_bytes(files["electron-system-part3@2.3.0.bin"])
    lib.import_path(tmp_path / "rel")
    assert len([e for e in lib.bundle("electron").entries if e.function == "system-part"]) == 3


def test_bundle_says_what_a_release_lacks(lib, tmp_path):
    write_release(tmp_path / "rel", "argon", "4.1.0")
    (tmp_path / "rel" / "argon-ncp-firmware@4.1.0.bin").unlink()
    (tmp_path / "rel" / "argon-bootloader@4.1.0.bin").unlink()
    lib.import_path(tmp_path / "rel")
    assert lib.bundle("argon").missing == ("bootloader", "ncp")


def test_importing_the_same_files_twice_changes_nothing(lib, tmp_path):
    zip_release(tmp_path / "rel.zip", "p2", "6.2.0", extra={"junk.bin": b"not firmware at all" * 10})
    first = lib.import_path(tmp_path / "rel.zip")
    before = tree(lib.root)
    mtime = (lib.root / "manifest.json").stat().st_mtime_ns
    second = lib.import_path(tmp_path / "rel.zip")
    assert tree(lib.root) == before
    assert (lib.root / "manifest.json").stat().st_mtime_ns == mtime
    assert not second.added
    assert len(second.unchanged) == len(first.added)
    assert [q.sha256 for q in second.quarantined] == [q.sha256 for q in first.quarantined]


def test_corrupt_and_truncated_files_never_enter_the_library(lib, tmp_path):
    good = build_module(platform_id=13, function=F.USER_PART, version=6, dependencies=[(F.SYSTEM_PART, 1, 5301)])
    flipped = bytearray(good)
    flipped[500] ^= 0x10
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "flipped.bin").write_bytes(bytes(flipped))
    (folder / "truncated.bin").write_bytes(good[:-100])
    (folder / "empty.bin").write_bytes(b"")
    (folder / "notes.txt").write_text("hello")
    report = lib.import_path(folder)
    assert not report.added
    reasons = {Path(q.source).name: q.reason for q in report.quarantined}
    assert "CRC-32 does not match" in reasons["flipped.bin"]
    assert "truncated" in reasons["truncated.bin"]
    assert "too short" in reasons["empty.bin"]
    assert [Path(s).name for s, _ in report.skipped] == ["notes.txt"]
    assert lib.entries() == []
    stored = {p.name for p in (lib.root / "modules").rglob("*")} if (lib.root / "modules").exists() else set()
    assert stored == set()
    # the quarantined bytes are kept for inspection, byte for byte
    q = next(q for q in lib.quarantined() if q.source.endswith("flipped.bin"))
    assert (lib.root / q.path).read_bytes() == bytes(flipped)


def test_real_fixtures_import_with_the_malformed_ones_quarantined(lib):
    report = lib.import_path(FIXTURES)
    quarantined = {Path(q.source).name for q in report.quarantined}
    assert {"RC4_bootloader_pad_BM-09.bin", "RC2_bootloader.bin", "RC4_bootloader_pad_BM-14.bin"} <= quarantined
    assert "unknown.bin" in quarantined
    assert "103_system-part1.bin" in quarantined  # bluz: not a platform the kiosk flashes
    added = {e.source for e in report.added}
    assert {"040_system-part1.bin", "argon-softdevice-6.1.1.bin", "argon-ncp-firmware-0.0.5-ota.bin"} <= added
    assert lib.verify() == []
    assert lib.releases("argon") == ["4.1.0"]
    assert lib.tinker("core").platform == "core"  # the Core's Tinker is monolithic


def test_tinker_matches_the_device_os(lib):
    lib.import_path(CORPUS)
    assert lib.tinker("argon").system_dependency == 6101
    assert lib.tinker("argon", system_version=5500).system_dependency == 5410
    assert lib.tinker("argon", system_version=1000).system_dependency == 326
    with pytest.raises(LibraryError, match="needs system version 326 or newer"):
        lib.tinker("argon", system_version=100)
    with pytest.raises(LibraryError, match="no Tinker for boron"):
        FirmwareLibrary(lib.root.parent / "other").tinker("boron")


def test_a_file_changed_on_disk_is_caught_on_read(lib, tmp_path):
    write_release(tmp_path / "rel", "boron", "6.1.1")
    lib.import_path(tmp_path / "rel")
    entry = lib.bundle("boron").entries[0]
    path = lib.root / entry.path
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(LibraryError, match="changed on disk"):
        lib.read(entry)
    assert len(lib.verify()) == 1


def test_a_conflicting_module_is_quarantined_not_overwritten(lib, tmp_path):
    write_release(tmp_path / "one", "boron", "6.1.1")
    lib.import_path(tmp_path / "one")
    other = synthetic_release("boron", "6.1.1", seed=99)  # same identities, different bytes
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "boron-bootloader@6.1.1.bin").write_bytes(other["boron-bootloader@6.1.1.bin"])
    report = lib.import_path(tmp_path / "two")
    assert "conflicts with modules/boron/6.1.1/boron-bootloader@6.1.1.bin" in report.quarantined[0].reason
    assert (
        lib.read(next(e for e in lib.entries() if e.name == "bootloader"))
        == (tmp_path / "one" / "boron-bootloader@6.1.1.bin").read_bytes()
    )


def test_a_damaged_manifest_is_an_error_not_an_empty_library(lib, tmp_path):
    write_release(tmp_path / "rel", "boron", "6.1.1")
    lib.import_path(tmp_path / "rel")
    (lib.root / "manifest.json").write_text("{ not json")
    with pytest.raises(LibraryError, match=r"manifest .* is damaged"):
        lib.entries()
    with pytest.raises(LibraryError):
        lib.import_path(tmp_path / "rel")
    assert (lib.root / "manifest.json").read_text() == "{ not json"  # nothing overwritten


def test_a_bad_zip_is_refused_and_nothing_changes(lib, tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(LibraryError, match="not a readable zip archive"):
        lib.import_path(tmp_path / "bad.zip")
    assert not (lib.root / "manifest.json").exists()


def test_a_damaged_member_inside_a_zip_is_quarantined(lib, tmp_path):
    files = zip_release(tmp_path / "rel.zip", "boron", "6.1.1")
    raw = bytearray((tmp_path / "rel.zip").read_bytes())
    target = files["boron-system-part1@6.1.1.bin"][1000:1016]
    at = raw.find(target)
    raw[at] ^= 0xFF  # stored (not deflated): the zip's own CRC catches this
    (tmp_path / "rel.zip").write_bytes(bytes(raw))
    report = lib.import_path(tmp_path / "rel.zip")
    assert [Path(q.source.split(":")[-1]).name for q in report.quarantined] == ["boron-system-part1@6.1.1.bin"]
    assert len(report.added) == len(files) - 1


def test_missing_path_is_a_clear_error(lib, tmp_path):
    with pytest.raises(LibraryError, match="does not exist"):
        lib.import_path(tmp_path / "nope.zip")


def test_manifest_pins_every_sha256(lib, tmp_path):
    write_release(tmp_path / "rel", "p2", "6.2.0")
    lib.import_path(tmp_path / "rel")
    doc = json.loads((lib.root / "manifest.json").read_text())
    assert doc["schema"] == 1
    for entry in doc["entries"]:
        assert hashlib.sha256((lib.root / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    encrypted = [e for e in doc["entries"] if e["encrypted"]]
    assert [e["name"] for e in encrypted] == ["prebootloader-mbr"]


def test_import_leaves_no_temporary_files(lib, tmp_path):
    write_release(tmp_path / "rel", "boron", "6.1.1")
    lib.import_path(tmp_path / "rel")
    assert not [p for p in lib.root.rglob(".incoming-*")]


def test_restore_image_hex_is_verified_and_filed_by_platform(lib, tmp_path):
    files = synthetic_release("boron", "6.1.1", tinker=False)
    segments = []
    for data in files.values():
        m = parse_module(data)
        if m.function == F.SYSTEM_PART:
            segments.append((m.start_address, data))
    (tmp_path / "restore.hex").write_text(format_hex(segments))
    report = lib.import_path(tmp_path / "restore.hex")
    assert [(e.kind, e.platform) for e in report.added] == [("restore-image", "boron")]
    # a corrupt record is caught by its checksum
    text = (tmp_path / "restore.hex").read_text().splitlines()
    text[5] = text[5][:-3] + ("0" if text[5][-3] != "0" else "1") + text[5][-2:]
    (tmp_path / "bad.hex").write_text("\n".join(text) + "\n")
    bad = lib.import_path(tmp_path / "bad.hex")
    assert "checksum mismatch" in bad.quarantined[0].reason


def test_restore_image_without_a_platform_is_quarantined(lib, tmp_path):
    (tmp_path / "mystery.hex").write_text(format_hex([(0x1000, os.urandom(64))]))
    report = lib.import_path(tmp_path / "mystery.hex")
    assert "cannot tell which platform" in report.quarantined[0].reason


@pytest.mark.parametrize(
    ("name", "release"),
    [
        ("boron-system-part1@6.1.1.bin", "6.1.1"),
        ("photon-bootloader@2.3.1+lto.bin", "2.3.1"),
        ("particle_device-os@5.3.1+boron.binaries.zip", "5.3.1"),
        ("p2-tinker@5.3.1.bin", "5.3.1"),
        ("system-part1-0.7.0-photon.bin", "0.7.0"),
        ("argon-ncp-firmware-0.0.5-ota.bin", None),
        ("tinker.bin", None),
        ("boron-system-part1@6.2.0-rc.1.bin", "6.2.0-rc.1"),
    ],
)
def test_release_from_name(name, release):
    assert release_from_name(name) == release
