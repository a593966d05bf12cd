"""firmware.library imports of hostile zips and folders: nothing lands outside the library, nothing crashes.

Zips with traversal and absolute member names, symbolic links (to a file outside, a folder, a device, nowhere),
duplicate names, directories, empty, random, corrupt and sound modules, broken Intel HEX, and the archive's own bytes
damaged; folders with the same plus pipes, sparse files past the size cap and nested zips. After every import:

- only LibraryError was raised (with a sentence saying nothing was imported), or a report came back in which every
  file is added, unchanged, quarantined or skipped, and every quarantine or skip says why;
- nothing outside the library root changed, and the root holds only regular files (no links, nothing outside);
- the manifest's entries are in the root with the bytes their SHA-256 says;
- importing the same thing again adds and writes nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tempfile
import warnings
import zipfile
from functools import cache
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.intelhex import format_hex
from firmware.library import MAX_FILE_BYTES, FirmwareLibrary, ImportReport, LibraryError
from firmware.releases import synthetic_release
from tests.fuzz import fuzz_settings
from tests.fuzz.guard import within


@cache
def sound_files() -> tuple[tuple[str, bytes], ...]:
    """Real-looking release files (and Tinker) that a library takes."""
    files = {
        **synthetic_release("boron", "6.1.1", body_size=512),
        **synthetic_release("photon", "2.3.1", body_size=512),
    }
    return tuple(sorted(files.items()))


# --- what goes into a zip or a folder ------------------------------------------------------------------

NAMES = st.sampled_from(
    [
        "boron-system-part1@6.1.1.bin",
        "boron-bootloader@6.1.1.bin",
        "tinker.bin",
        "x.bin",
        "X.BIN",
        "restore.hex",
        "boron-restore.hex",
        "readme.txt",
        "..bin",
        " .bin",
        "名前@6.1.1+lto.bin",
        "nested.zip",
        "manifest.json",
    ]
)
ZIP_PREFIXES = st.sampled_from(
    ["", "release/", "../", "../../", "/", "/etc/", "a/../../", "..\\", "C:/", "./", "release/../../../tmp/"]
)


@st.composite
def contents(draw) -> tuple[str, bytes]:
    """(kind, bytes): what a file holds."""
    kind = draw(st.sampled_from(["sound", "corrupt", "empty", "random", "hex", "bad-hex", "text"]))
    if kind == "sound":
        return kind, draw(st.sampled_from(sound_files()))[1]
    if kind == "corrupt":
        data = bytearray(draw(st.sampled_from(sound_files()))[1])
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= draw(st.integers(1, 255))
        return kind, bytes(data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)
    if kind == "empty":
        return kind, b""
    if kind == "random":
        return kind, draw(st.binary(max_size=600))
    if kind == "hex":
        segment = (draw(st.integers(0, 0x0810_0000)), draw(st.binary(min_size=1, max_size=64)))
        return kind, format_hex([segment]).encode()
    if kind == "bad-hex":
        lines = draw(st.lists(st.from_regex(r":[0-9A-Fa-fG]{0,44}", fullmatch=True), max_size=5))
        return kind, ("\n".join(lines) + "\n").encode()
    return kind, draw(st.text(max_size=100)).encode("utf-8", "surrogatepass")


@st.composite
def zip_members(draw) -> list[tuple[str, str, bytes]]:
    """(type, name, bytes) with type "file", "link" (bytes = the link's target) or "dir"."""
    members = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(ZIP_PREFIXES) + draw(NAMES)
        kind = draw(st.sampled_from(["file", "file", "file", "link", "dir"]))
        if kind == "link":
            target = draw(st.sampled_from(["../outside/sentinel.bin", "/dev/zero", "/etc/passwd", "nowhere"]))
            members.append(("link", name, target.encode()))
        elif kind == "dir":
            members.append(("dir", name.rstrip("/") + "/", b""))
        else:
            members.append(("file", name, draw(contents())[1]))
    return members


def make_zip(members: list[tuple[str, str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        warnings.simplefilter("ignore")  # duplicate names are the point
        for kind, name, data in members:
            info = zipfile.ZipInfo(name)
            if kind == "link":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            elif kind == "dir":
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
            z.writestr(info, data)
    return buf.getvalue()


# --- the world the library lives in ---------------------------------------------------------------------


class World:
    """A temporary folder: ``library`` (the root), ``outside`` (a sentinel that must never change), ``src``."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "library"
        self.outside = base / "outside"
        self.src = base / "src"
        self.outside.mkdir()
        self.src.mkdir()
        (self.outside / "sentinel.bin").write_bytes(sound_files()[0][1])
        self.library = FirmwareLibrary(self.root)

    def snapshot_outside(self) -> dict[str, object]:
        """Everything outside the library root: paths, kinds, bytes, link targets."""
        seen: dict[str, object] = {}
        for dirpath, dirnames, filenames in os.walk(self.base, followlinks=False):
            if Path(dirpath) == self.base and "library" in dirnames:
                dirnames.remove("library")
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode):
                    seen[str(path)] = ("link", os.readlink(path))
                elif stat.S_ISREG(info.st_mode) and info.st_size > MAX_FILE_BYTES:
                    seen[str(path)] = ("sparse", info.st_size, info.st_mtime_ns)  # too big to read here
                elif stat.S_ISREG(info.st_mode):
                    seen[str(path)] = ("file", path.read_bytes())
                else:
                    seen[str(path)] = ("other", stat.S_IFMT(info.st_mode))
        return seen

    def snapshot_root(self) -> dict[str, bytes]:
        out = {}
        for dirpath, _dirnames, filenames in os.walk(self.root, followlinks=False):
            for name in filenames:
                path = Path(dirpath) / name
                info = path.lstat()
                assert stat.S_ISREG(info.st_mode), f"{path} in the library is not a regular file"
                assert path.resolve().is_relative_to(self.root.resolve())
                if name != ".lock":
                    out[str(path.relative_to(self.root))] = path.read_bytes()
        return out

    def import_checked(self, source: Path) -> ImportReport | None:
        """Import ``source`` and check every invariant; None when it was refused (LibraryError).

        fsync is skipped (a throwaway folder needs no durability; it would make the fuzzing wait on the disk).
        """
        with mock.patch("firmware.library.os.fsync"):
            return self._import_checked(source)

    def _import_checked(self, source: Path) -> ImportReport | None:
        outside = self.snapshot_outside()
        try:
            report = self.library.import_path(source)
        except LibraryError as exc:
            assert str(exc) and ("nothing was imported" in str(exc) or "does not exist" in str(exc)), str(exc)
            report = None
        assert self.snapshot_outside() == outside, "the import changed something outside the library"
        stored = self.snapshot_root()
        if report is not None:
            for q in report.quarantined:
                assert q.reason and q.source
                assert q.path == "" or (q.path.startswith("quarantine/") and q.path in stored)
            for source_name, reason in report.skipped:
                assert source_name and reason
        for entry in self.library.entries():
            data = stored[entry.path]
            assert hashlib.sha256(data).hexdigest() == entry.sha256
            assert (self.root / entry.path).resolve().is_relative_to(self.root.resolve())
        # the same again: nothing added, nothing written
        try:
            again = self.library.import_path(source)
        except LibraryError:
            assert report is None
        else:
            assert again.added == [], [e.path for e in again.added]
        assert self.snapshot_root() == stored
        assert self.snapshot_outside() == outside
        return report


def accounted(report: ImportReport) -> int:
    return len(report.added) + len(report.unchanged) + len(report.quarantined) + len(report.skipped)


# --- zips -------------------------------------------------------------------------------------------------


@fuzz_settings(200)
@given(members=zip_members(), damage=st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 255)), max_size=3))
def test_hostile_zips(members, damage):
    data = bytearray(make_zip(members))
    for at, xor in damage:
        data[at % len(data)] ^= xor
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))
        archive = world.src / "particle_device-os@6.1.1+boron.binaries.zip"
        archive.write_bytes(bytes(data))
        report = world.import_checked(archive)
        if report is not None and not damage:
            files = [m for m in members if m[0] != "dir"]
            assert accounted(report) == len(files)
            for kind, name, _ in members:
                if kind == "link":
                    assert (f"{archive.name}:{name}", "a symbolic link inside the zip: links are not followed") in (
                        report.skipped
                    )


# --- folders ----------------------------------------------------------------------------------------------

FOLDERS = st.sampled_from(["", "6.1.1/", "a/b/", "boron@6.1.1/", ".hidden/"])


@st.composite
def folder_items(draw) -> list[tuple[str, str, object]]:
    """(type, relative path, payload): "file" (bytes), "link" (target), "fifo", "sparse" (size), "zip" (members)."""
    items = []
    used = set()
    for _ in range(draw(st.integers(0, 6))):
        rel = draw(FOLDERS) + draw(NAMES)
        if rel.lower() in used:
            continue
        used.add(rel.lower())
        kind = draw(st.sampled_from(["file", "file", "file", "link", "fifo", "sparse", "zip"]))
        if kind == "link":
            target = draw(
                st.sampled_from(["OUTSIDE/sentinel.bin", "OUTSIDE", "/dev/zero", "/etc/passwd", "nowhere", "."])
            )
            items.append(("link", rel, target))
        elif kind == "sparse":
            items.append(("sparse", rel, draw(st.sampled_from([MAX_FILE_BYTES + 1, 2**40]))))
        elif kind == "zip":
            items.append(("zip", rel + ".zip", draw(zip_members())))
        elif kind == "fifo":
            items.append(("fifo", rel, None))
        else:
            items.append(("file", rel, draw(contents())[1]))
    return items


def build_folder(world: World, items: list[tuple[str, str, object]]) -> Path:
    folder = world.src / "device-os@6.1.1"
    folder.mkdir()
    for kind, rel, payload in items:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            path.write_bytes(payload)
        elif kind == "link":
            os.symlink(str(payload).replace("OUTSIDE", str(world.outside)), path)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "sparse":
            with path.open("wb") as fh:
                fh.truncate(payload)
        else:
            path.write_bytes(make_zip(payload))
    return folder


@fuzz_settings(200)
@given(items=folder_items())
def test_hostile_folders(items):
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))
        folder = build_folder(world, items)
        report = world.import_checked(folder)
        if report is None:
            # only a zip that does not open refuses a whole folder (as it refuses on its own)
            assert any(rel.lower().endswith(".zip") and kind != "link" for kind, rel, _ in items)
            return
        skipped = dict(report.skipped)
        for kind, rel, _ in items:
            path = str(folder / rel)
            if kind == "link":
                assert skipped[path] == "a symbolic link: links are not followed, copy the file"
            elif kind == "fifo":
                assert path in skipped
            elif kind == "sparse" and rel.lower().endswith((".bin", ".hex")):
                assert "larger than any firmware file" in skipped[path]
        stored = world.snapshot_root()
        assert all(len(data) <= MAX_FILE_BYTES for data in stored.values())


# --- single paths and plain cases -------------------------------------------------------------------------


@pytest.mark.parametrize("special", ["/dev/null", "fifo.bin", "fifo.zip", "fifo-folder"])
def test_a_device_or_pipe_is_refused_not_read_forever(tmp_path, special):
    """Found by fuzzing: a device (/dev/zero) or a pipe was read until memory ran out or a writer came; a pipe
    named .zip blocked in open(). A path given on its own is refused; inside a folder it is skipped."""
    world = World(tmp_path)
    if special == "fifo-folder":
        folder = world.src / "release"
        folder.mkdir()
        os.mkfifo(folder / "boron-bootloader@6.1.1.bin")
        report = within(10, lambda: world.library.import_path(folder))
        assert report.skipped == [
            (str(folder / "boron-bootloader@6.1.1.bin"), "not a regular file (a device, pipe or socket)")
        ]
        return
    path = Path(special)
    if not path.is_absolute():
        path = world.src / special
        os.mkfifo(path)
    with pytest.raises(LibraryError, match="is not a file or a folder"):
        within(10, lambda: world.library.import_path(path))
    assert not world.root.exists() or world.snapshot_root() == {}


def test_a_link_in_a_folder_to_a_file_outside_is_not_followed(tmp_path):
    """Found by fuzzing: a link was followed, importing whatever it pointed to from anywhere on the machine."""
    world = World(tmp_path)
    folder = world.src / "release"
    folder.mkdir()
    os.symlink(world.outside / "sentinel.bin", folder / "boron-bootloader@6.1.1.bin")
    os.symlink(tmp_path / "nowhere", folder / "dangling.bin")
    report = world.library.import_path(folder)
    assert report.added == [] and report.quarantined == []
    assert sorted(report.skipped) == [
        (str(folder / "boron-bootloader@6.1.1.bin"), "a symbolic link: links are not followed, copy the file"),
        (str(folder / "dangling.bin"), "a symbolic link: links are not followed, copy the file"),
    ]


def _member_flags(data: bytes, *, encrypted: bool = False, method: int | None = None) -> bytes:
    raw = bytearray(data)
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    if encrypted:
        raw[local + 6] |= 1
        raw[central + 8] |= 1
    if method is not None:
        raw[local + 8] = raw[central + 10] = method
    return bytes(raw)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [({"encrypted": True}, "password required"), ({"method": 99}, "compression method is not supported")],
)
def test_an_encrypted_or_unknown_compression_member_is_skipped_with_the_reason(tmp_path, damage, reason):
    """Found by fuzzing: zipfile's RuntimeError (encrypted) and NotImplementedError escaped import_path."""
    world = World(tmp_path)
    module = sound_files()[0][1]
    archive = world.src / "r.zip"
    archive.write_bytes(_member_flags(make_zip([("file", "boron-bootloader@6.1.1.bin", module)]), **damage))
    report = world.library.import_path(archive)
    assert report.added == []
    [(source, why)] = report.skipped
    assert source == "r.zip:boron-bootloader@6.1.1.bin" and why.startswith("cannot be unpacked") and reason in why


def test_a_zip_member_past_the_size_cap_is_skipped_unread(tmp_path):
    world = World(tmp_path)
    archive = world.src / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z, z.open("huge.bin", "w", force_zip64=True) as fh:
        chunk = bytes(1 << 20)
        for _ in range(MAX_FILE_BYTES // len(chunk) + 1):
            fh.write(chunk)
    report = world.library.import_path(archive)
    assert report.skipped == [
        ("big.zip:huge.bin", f"{MAX_FILE_BYTES + (1 << 20)} bytes is larger than any firmware file")
    ]
    assert world.library.entries() == []


def test_empty_and_not_module_files_are_quarantined_with_the_reason(tmp_path):
    world = World(tmp_path)
    folder = world.src / "f"
    folder.mkdir()
    (folder / "empty.bin").write_bytes(b"")
    (folder / "words.bin").write_bytes(b"hello " * 40)
    report = world.library.import_path(folder)
    reasons = {Path(q.source).name: q.reason for q in report.quarantined}
    assert reasons == {
        "empty.bin": "0 bytes is too short for a Particle module (at least 64)",
        "words.bin": "no Particle module header found: this file is not a Particle module binary",
    }
    assert all(q.path.startswith("quarantine/") for q in report.quarantined)


def test_sound_modules_under_traversal_names_land_inside_the_library(tmp_path):
    world = World(tmp_path)
    name, module = next(f for f in sound_files() if f[0].startswith("boron-bootloader"))
    archive = world.src / "t.zip"
    archive.write_bytes(make_zip([("file", f"../../../{name}", module), ("file", f"/abs/{name}", module)]))
    report = world.import_checked(archive)
    assert [e.path for e in report.added] == ["modules/boron/6.1.1/boron-bootloader@6.1.1.bin"]
    assert len(report.unchanged) == 1


def test_a_zip_member_whose_name_starts_with_nul_is_skipped(tmp_path):
    """Found by the long fuzzing profile: a damaged byte turned a name's first "/" into NUL; zipfile cut the name to
    "" and ZipInfo.is_dir() raised IndexError out of import_path."""
    world = World(tmp_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Xboron-bootloader@6.1.1.bin", sound_files()[0][1])
    archive = world.src / "nul.zip"
    archive.write_bytes(buf.getvalue().replace(b"Xboron-bootloader", b"\x00boron-bootloader"))
    report = world.import_checked(archive)
    assert report.skipped == [("nul.zip:", "a member without a name (a damaged zip directory)")]
    assert report.added == []
