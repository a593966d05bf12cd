"""`kiosk inspect`: the module table with each module's hash compared with the firmware library.

The device reports, per module, the SHA-256 stored in the module's suffix (Device OS >= 5.6.0, request 90); the
library knows each imported file, so inspect works out the hash each library module would be reported with
(``hw.control.module_info_hash``) and says PASS (the same), FAIL (the library's module of that function, index
and version has another hash) or "not in the library".
"""

from __future__ import annotations

from pathlib import Path

from firmware.library import FirmwareLibrary
from firmware.platforms import Function, platform_by_name
from firmware.releases import synthetic_release
from hw.control import ModuleInfo
from kiosk import inspect as inspection
from tests.test_cli_device import run, run_json  # the CLI's test helpers, shared


def by_function(doc: dict) -> dict[str, dict]:
    return {m["function"]: m for m in doc["modules"]}


def test_a_healthy_boron_matches_the_library_module_by_module(capsys):
    status, doc = run_json(capsys, "inspect", "--simulate", "healthy@boron")
    assert status == 0 and doc["ok"] is True and doc["library_problems"] == []
    modules = by_function(doc)
    assert set(modules) == {"bootloader", "system-part", "user-part", "radio-stack"}
    library = FirmwareLibrary(doc["library"])
    for name, m in modules.items():
        assert m["library"]["verdict"] == "PASS", name
        entry = next(e for e in library.entries() if e.path == m["library"]["entry"])
        assert (entry.platform, entry.function, entry.index, entry.version) == ("boron", name, m["index"], m["version"])
        assert len(bytes.fromhex(m["hash"])) == 32
    # the hash is the suffix's SHA-256 (file bytes [L-38, L-6)), not the SHA-256 of the file
    system = modules["system-part"]
    entry = next(e for e in library.entries() if e.path == system["library"]["entry"])
    data = library.read(entry)
    assert system["hash"] == data[-38:-6].hex() != entry.sha256
    assert system["size"] == len(data) and system["max_size"] == 0xA4000 and system["store"] == "main"
    assert modules["radio-stack"]["library"]["basis"] == "the SoftDevice's unique string"
    assert modules["radio-stack"]["size"] == 0
    status, out, _ = run(capsys, "inspect", "--simulate", "healthy@boron")
    assert status == 0 and out.count("Library hash: PASS (the library's modules/boron/") == 4
    assert "All modules PASS" in out and "differ" not in out


def test_the_argon_ncp_matches_by_its_version(capsys):
    status, doc = run_json(capsys, "inspect", "--simulate", "healthy@argon")
    ncp = by_function(doc)["ncp"]
    assert status == 0 and ncp["library"]["verdict"] == "PASS" and ncp["size"] == 0 and ncp["dependencies"] == []
    assert ncp["library"]["basis"] == "the NCP's version only"
    assert bytes.fromhex(ncp["hash"]) == ncp["version"].to_bytes(2, "little") * 16


def _library_of_another_build(tmp_path: Path) -> Path:
    """A library whose boron 6.1.1 is another build (other bytes, same versions) than the simulator runs."""
    root, folder = tmp_path / "lib", tmp_path / "boron@6.1.1"
    folder.mkdir()
    for name, data in synthetic_release("boron", "6.1.1", seed=99).items():
        (folder / name).write_bytes(data)
    FirmwareLibrary(root).import_path(folder)
    return root


def test_a_module_that_differs_from_the_librarys_same_version_fails(capsys, tmp_path):
    root = _library_of_another_build(tmp_path)
    status, doc = run_json(capsys, "inspect", "--simulate", "healthy@boron", "--library", str(root))
    assert status == 1 and doc["ok"] is False and doc["library"] == str(root)
    modules = by_function(doc)
    assert all(m["ok"] for m in modules.values())  # the device's own checks all pass
    for name in ("bootloader", "system-part"):
        assert modules[name]["library"]["verdict"] == "FAIL"
        assert modules[name]["library"]["entry"].startswith("modules/boron/6.1.1/")
    # Tinker of another build: an app is known by its hash only, so it is not in the library rather than a FAIL
    assert modules["user-part"]["library"]["verdict"] == "not in the library"
    status, out, _ = run(capsys, "inspect", "--simulate", "healthy@boron", "--library", str(root))
    assert status == 1 and "Library hash: FAIL (differs from the library's modules/boron/6.1.1/" in out
    assert out.splitlines()[-1] == "All modules PASS; 2 module(s) differ from the library"


def test_modules_the_library_lacks_are_said_so(capsys):
    """deps-mismatch runs the previous release with an app built for a newer one: neither is in the demo library."""
    status, doc = run_json(capsys, "inspect", "--simulate", "deps-mismatch@boron")
    modules = by_function(doc)
    assert modules["system-part"]["library"]["verdict"] == "not in the library"
    assert modules["user-part"]["library"] == {"verdict": "not in the library", "entry": None,
                                               "basis": "SHA-256 in the module's suffix"}  # fmt: skip
    assert status == 1 and modules["user-part"]["checks"]["dependencies"] == "FAIL"


def test_an_old_device_sends_no_hash(capsys):
    status, doc = run_json(capsys, "inspect", "--simulate", "healthy@photon")
    assert status == 0 and doc["ok"] is True
    assert {m["library"]["verdict"] for m in doc["modules"]} == {"not reported"}
    assert {m["hash"] for m in doc["modules"]} == {None} and {m["max_size"] for m in doc["modules"]} == {None}
    status, out, _ = run(capsys, "inspect", "--simulate", "healthy@photon")
    assert "Library hash: not reported" in out


def test_an_empty_or_damaged_library_leaves_every_module_unmatched(tmp_path):
    boron = platform_by_name("boron")
    info = ModuleInfo(Function.SYSTEM_PART, 1, 6101, 4000, (), frozenset(), False, hash=b"\x01" * 32)
    empty = inspection.LibraryHashes(FirmwareLibrary(tmp_path / "none"), boron, [(Function.SYSTEM_PART, 1)])
    assert empty.check(info).verdict == "not in the library" and empty.problems == []
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    damaged = inspection.LibraryHashes(FirmwareLibrary(tmp_path / "bad"), boron, [(Function.SYSTEM_PART, 1)])
    assert damaged.check(info).verdict == "not in the library" and "damaged" in damaged.problems[0]


def test_a_library_file_changed_on_disk_is_left_out_and_said_so(tmp_path):
    root = _library_of_another_build(tmp_path)
    library = FirmwareLibrary(root)
    entry = next(e for e in library.entries() if e.function == "system-part")
    path = root / entry.path
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    hashes = inspection.LibraryHashes(library, platform_by_name("boron"), [(Function.SYSTEM_PART, 1)])
    assert hashes.parts == {} and "changed on disk" in hashes.problems[0]


def test_the_legacy_size_is_shown_with_its_crc():
    """The legacy reply sends end - start; the table shows the module's bytes, as `kiosk firmware show` does."""
    legacy = ModuleInfo(Function.BOOTLOADER, 0, 1006, 4548, (), frozenset(), True, validity=0)
    current = ModuleInfo(Function.BOOTLOADER, 0, 1006, 4552, (), frozenset(), False, checked_flags=0x1E,
                         passed_flags=0x1E)  # fmt: skip
    assert [m.size for m in inspection.from_control([legacy, current])] == [4552, 4552]
