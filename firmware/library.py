"""The kiosk's offline firmware library: verified Device OS modules on disk, with a manifest.

Layout of the library folder::

    manifest.json                        what is here, with every file's SHA-256
    modules/<platform>/<release>/...     Device OS parts (bootloader, system parts, radio stack, NCP)
    modules/<platform>/apps/...          user parts such as Tinker
    restore/<platform>/...               SWD restore images (.hex)
    quarantine/...                       files that failed verification, kept for inspection

Importing verifies every file (module structure, CRC-32, SHA-256, platform, address range) before
it is placed; a file is written under a temporary name and renamed, so a crash never leaves a
truncated file in the library. Importing the same bytes twice changes nothing. Reads check the
SHA-256 pinned in the manifest.

    >>> lib = FirmwareLibrary("/var/lib/particle-kiosk/firmware")       # doctest: +SKIP
    >>> lib.import_path("particle_device-os@6.1.1+boron.binaries.zip")  # doctest: +SKIP
    >>> lib.bundle("boron").release                                     # doctest: +SKIP
    '6.1.1'
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firmware.intelhex import HexError, parse_hex
from firmware.module import PREFIX_SIZE, PREFIX_STRUCT, Module, NotAModuleError, parse_module, split_modules
from firmware.platforms import (
    PLATFORMS,
    Function,
    Platform,
    Storage,
    function_name,
    platform_by_id,
    platform_by_name,
)
from firmware.versions import DeviceOsVersion, VersionError, release_modules, release_name

MANIFEST = "manifest.json"
SCHEMA = 1
MAX_FILE_BYTES = 32 * 1024 * 1024  # larger than any module or restore image; stops zip bombs
FIRMWARE_SUFFIXES = (".bin", ".hex")
#: Functions that make up a Device OS release (what `update` flashes); user parts are apps.
#: MCU families whose whole flash image is the modules laid out by address (see swd_image).
MODULE_SET_RESTORE = frozenset({"stm32f2xx"})
DEVICE_OS_FUNCTIONS = (Function.BOOTLOADER, Function.RADIO_STACK, Function.SYSTEM_PART, Function.NCP_FIRMWARE)
#: The parts a release has besides its system parts, per MCU family (module-format.md 5; Particle's Device Restore
#: files): (function, index, the name a bundle reports it by, the release-table column with its version). NCP
#: firmware is added where the platform has an NCP. The RTL872x prebootloader MBR (index 1) is encrypted: the
#: device installs it itself, so a bundle does not need it.
RELEASE_PARTS: dict[str, tuple[tuple[int, int, str, str], ...]] = {
    "stm32f2xx": ((Function.BOOTLOADER, 0, "bootloader", "bootloader"),),
    "nrf52840": ((Function.BOOTLOADER, 0, "bootloader", "bootloader"),
                 (Function.RADIO_STACK, 0, "softdevice", "softdevice")),
    "rtl872x": ((Function.BOOTLOADER, 0, "bootloader", "bootloader"),
                (Function.BOOTLOADER, 2, "prebootloader-part1", "prebootloader_part1")),
}  # fmt: skip
NCP_PART = (Function.NCP_FIRMWARE, 0, "ncp", "ncp_esp32")

_VERSION_IN_NAME = re.compile(r"@v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+?)?)(?:\+[0-9A-Za-z.]+)?(?=$|\.[a-z]+$)")
_OLD_STYLE_NAME = re.compile(
    r"^(?P<name>[a-z0-9-]+?)-(?P<version>\d+\.\d+\.\d+(?:-[0-9a-z.]+)?)-(?P<platform>[a-z0-9]+)$"
)


class LibraryError(Exception):
    """Something about the library itself is wrong: its manifest, its files, or a lookup."""


@dataclass(frozen=True)
class LibraryEntry:
    """One file in the library and what it is."""

    path: str  # relative to the library root
    sha256: str
    size: int
    kind: str  # "module" or "restore-image"
    platform_id: int
    platform: str
    name: str  # "system-part1", "bootloader", "tinker", "softdevice", ...
    release: str | None
    source: str  # the name it was imported under
    function: str | None = None
    index: int | None = None
    version: int | None = None
    dependencies: tuple[tuple[str, int, int], ...] = ()
    encrypted: bool = False

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LibraryEntry:
        raw = dict(raw)
        raw["dependencies"] = tuple(tuple(d) for d in raw.get("dependencies", ()))
        return cls(**raw)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["dependencies"] = [list(d) for d in self.dependencies]
        return out

    @property
    def system_dependency(self) -> int:
        """The highest system-part version this module needs (0 when it needs none)."""
        return max((v for f, _i, v in self.dependencies if f == "system-part"), default=0)


@dataclass(frozen=True)
class Quarantined:
    """A file that failed verification: where it is kept and why."""

    path: str
    sha256: str
    source: str
    reason: str


@dataclass
class ImportReport:
    """What one import did, file by file."""

    added: list[LibraryEntry] = field(default_factory=list)
    unchanged: list[LibraryEntry] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, why)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [e.to_json() for e in self.added],
            "unchanged": [e.to_json() for e in self.unchanged],
            "quarantined": [asdict(q) for q in self.quarantined],
            "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
        }


@dataclass(frozen=True)
class Bundle:
    """The Device OS parts of one release for one platform (what `update` writes)."""

    platform: Platform
    release: str
    entries: tuple[LibraryEntry, ...]
    missing: tuple[str, ...]  # parts a release normally has that the library lacks
    lacks: tuple[str, ...] = ()  # a sentence per missing part: what needs it and what to import

    def to_json(self) -> dict[str, Any]:
        return {"platform": self.platform.name, "release": self.release, "entries": [e.to_json() for e in self.entries],
                "missing": list(self.missing), "lacks": list(self.lacks)}  # fmt: skip


@dataclass
class _Incoming:
    source: str
    data: bytes
    context_release: str | None
    group: str = ""  # the zip or folder it came in: files that arrive together are one release
    group_release: str | None = None  # the release of the system parts of its group, if they agree


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _old_style(stem: str) -> re.Match[str] | None:
    """``system-part1-0.7.0-photon``: Device OS 0.7.x release names, only with a real platform."""
    match = _OLD_STYLE_NAME.match(stem)
    if match is None:
        return None
    with contextlib.suppress(LookupError):
        platform_by_name(match.group("platform"))
        return match
    return None


def release_from_name(name: str) -> str | None:
    """The Device OS release a file or archive name carries (``boron-bootloader@6.1.1+lto.bin``)."""
    base = Path(name).name
    match = _VERSION_IN_NAME.search(base)
    if match:
        return match.group(1)
    old = _old_style(Path(base).stem)
    return old.group("version") if old else None


_BARE_VERSION = re.compile(r"^v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?)$")
#: Modules whose file names carry their own version, not a Device OS release (``tracker-esp32-ncp@0.0.7.bin``,
#: ``boron-softdevice@6.0.0.bin``): they take a release only from the system parts they arrive with, and bundles
#: bind them to the releases whose modules depend on them.
OWN_VERSIONED = (Function.RADIO_STACK, Function.NCP_FIRMWARE)


def release_of_folder(name: str) -> str | None:
    """The release a folder named as Particle publishes restore files names (``6.3.4/boron.hex``), else the
    release its name carries (``boron@6.3.4``)."""
    match = _BARE_VERSION.match(Path(name).name)
    return match.group(1) if match else release_from_name(name)


def _context_of(path: Path) -> str | None:
    """The release a file's or archive's own name carries, else its folder's (``6.3.4/boron.zip``)."""
    return release_from_name(path.name) or release_of_folder(path.parent.name)


def _system_release(data: bytes, source: str, context: str | None) -> str | None:
    """The release a file's system part says it belongs to (name, context, else the table), None for other files."""
    if source.lower().endswith(".hex"):
        return None
    with contextlib.suppress(NotAModuleError):
        for module in split_modules(data):
            if module.function in (Function.SYSTEM_PART, Function.MONO_FIRMWARE) and not _is_app(module, source):
                return release_from_name(source) or context or release_name(module.version)
    return None


def _name_from_file(source: str, platform: Platform) -> str | None:
    """The part name in a release file name: ``boron-system-part1@6.1.1.bin`` -> ``system-part1``."""
    base = Path(source).name
    old = _old_style(Path(base).stem)
    if old:
        return old.group("name")
    if "@" not in base:
        return None
    stem = base.split("@")[0]
    prefix = platform.name + "-"
    return stem[len(prefix) :] if stem.startswith(prefix) and len(stem) > len(prefix) else None


def _is_app(module: Module, source: str) -> bool:
    """User parts, and monolithic Tinker (the Core's Tinker is a monolithic image)."""
    if module.function == Function.USER_PART:
        return True
    return module.function == Function.MONO_FIRMWARE and "tinker" in Path(source).name.lower()


def _part_name(module: Module, platform: Platform, source: str) -> str:
    if _is_app(module, source):
        lowered = Path(source).name.lower()
        return "tinker" if "tinker" in lowered else (module.name or Path(source).stem)
    from_file = _name_from_file(source, platform)
    if from_file:
        return from_file
    slot = next(iter(platform.slots_for(module.function, module.index)), None)
    return slot.name if slot and slot.name else f"{function_name(module.function)}{module.index}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9@+._-]", "_", Path(name).name)[:120] or "file"


class FirmwareLibrary:
    """The firmware library in folder ``root`` (created on first import)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    # -- manifest ----------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not path.exists():
            return {"schema": SCHEMA, "entries": [], "quarantine": []}
        try:
            raw = json.loads(path.read_text())
            if raw.get("schema") != SCHEMA:
                raise ValueError(f"schema {raw.get('schema')!r}, expected {SCHEMA}")
            raw["entries"] = [LibraryEntry.from_json(e) for e in raw["entries"]]
            raw["quarantine"] = [Quarantined(**q) for q in raw["quarantine"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise LibraryError(
                f"the library manifest {path} is damaged ({exc}); restore it from a backup, or move the "
                "library folder aside and import the firmware again"
            ) from None
        return raw

    def _save(self, manifest: dict[str, Any]) -> None:
        doc = {
            "schema": SCHEMA,
            "entries": [e.to_json() for e in sorted(manifest["entries"], key=lambda e: e.path)],
            "quarantine": [asdict(q) for q in sorted(manifest["quarantine"], key=lambda q: q.path)],
        }
        _atomic_write(self.root / MANIFEST, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one import at a time (CLI and TUI may both import)
            yield

    def entries(self) -> list[LibraryEntry]:
        return list(self._load()["entries"])

    def quarantined(self) -> list[Quarantined]:
        return list(self._load()["quarantine"])

    # -- import ------------------------------------------------------------------------------
    def import_path(self, path: str | os.PathLike[str]) -> ImportReport:
        """Import a release zip, a folder, or a single .bin/.hex file. Raise LibraryError if unreadable."""
        path = Path(path)
        if not path.exists():
            raise LibraryError(f"{path} does not exist")
        report = ImportReport()
        incoming = list(self._read_source(path, report))
        _bind_groups(incoming)
        with self._locked():
            manifest = self._load()
            before = json.dumps([e.to_json() for e in manifest["entries"]]) + str(manifest["quarantine"])
            for item in incoming:
                self._import_one(item, manifest, report)
            after = json.dumps([e.to_json() for e in manifest["entries"]]) + str(manifest["quarantine"])
            if after != before or not (self.root / MANIFEST).exists():
                self._save(manifest)
        return report

    def _read_source(self, path: Path, report: ImportReport) -> Iterator[_Incoming]:
        if path.is_dir():
            context = release_of_folder(path.name)
            for child in sorted(path.rglob("*")):
                # Links are not followed: one could point anywhere on the machine (or at a device that never ends).
                if child.is_symlink():
                    report.skipped.append((str(child), "a symbolic link: links are not followed, copy the file"))
                elif child.is_dir():
                    continue
                elif child.suffix.lower() == ".zip":
                    yield from self._read_zip(child, report)
                elif child.suffix.lower() in FIRMWARE_SUFFIXES:
                    yield from self._read_file(child, report, _context_of(child) or context)
                else:
                    report.skipped.append((str(child), "not a .bin, .hex or .zip file"))
        elif not _regular(path):
            raise LibraryError(f"{path} is not a file or a folder (a device, pipe or socket); nothing was imported")
        elif path.suffix.lower() == ".zip":
            yield from self._read_zip(path, report)
        else:
            yield from self._read_file(path, report, release_of_folder(path.parent.name))

    def _read_file(self, path: Path, report: ImportReport, context: str | None) -> Iterator[_Incoming]:
        try:
            if not _regular(path):
                report.skipped.append((str(path), "not a regular file (a device, pipe or socket)"))
                return
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                report.skipped.append((str(path), f"{size} bytes is larger than any firmware file"))
                return
            with path.open("rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)  # the size may change while it is read
        except OSError as exc:
            report.skipped.append((str(path), f"cannot be read ({exc.strerror or exc})"))
            return
        if len(data) > MAX_FILE_BYTES:
            report.skipped.append((str(path), "grew larger than any firmware file while it was read"))
            return
        yield _Incoming(str(path), data, context, group=str(path.parent))

    def _read_zip(self, path: Path, report: ImportReport) -> Iterator[_Incoming]:
        context = _context_of(path)
        if not _regular(path):
            report.skipped.append((str(path), "not a regular file (a device, pipe or socket)"))
            return
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise LibraryError(f"{path} is not a readable zip archive ({exc}); nothing was imported") from None
        with archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                source = f"{path.name}:{info.filename}"
                if not info.filename:  # a name that starts with NUL: zipfile cuts it to "" (and is_dir() raises)
                    report.skipped.append((source, "a member without a name (a damaged zip directory)"))
                    continue
                if info.is_dir():
                    continue
                if stat.S_ISLNK(info.external_attr >> 16):
                    report.skipped.append((source, "a symbolic link inside the zip: links are not followed"))
                    continue
                if Path(info.filename).suffix.lower() not in FIRMWARE_SUFFIXES:
                    report.skipped.append((source, "not a .bin or .hex file"))
                    continue
                if info.file_size > MAX_FILE_BYTES:
                    report.skipped.append((source, f"{info.file_size} bytes is larger than any firmware file"))
                    continue
                try:
                    data = archive.read(info)
                except (RuntimeError, NotImplementedError) as exc:  # encrypted; a compression zipfile lacks
                    report.skipped.append((source, f"cannot be unpacked: {exc}"))
                    continue
                except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
                    report.quarantined.append(Quarantined("", "", source, f"damaged inside the zip: {exc}"))
                    continue
                yield _Incoming(source, data, context or release_from_name(info.filename), group=str(path))

    def _import_one(self, item: _Incoming, manifest: dict[str, Any], report: ImportReport) -> None:
        sha = _sha(item.data)
        for entry in manifest["entries"]:
            if entry.sha256 == sha:
                report.unchanged.append(entry)
                return
        for q in manifest["quarantine"]:
            if q.sha256 == sha:
                report.quarantined.append(q)
                return
        try:
            candidates = self._verify(item)
        except _Rejected as rejected:
            self._quarantine(item, sha, str(rejected), manifest, report)
            return
        for entry, _data in candidates:
            clash = next((e for e in manifest["entries"] if _same_identity(e, entry) or e.path == entry.path), None)
            if clash is not None:
                reason = f"conflicts with {clash.path}: same name or module and version, different contents"
                self._quarantine(item, sha, reason, manifest, report)
                return
        for entry, data in candidates:
            _atomic_write(self.root / entry.path, data)
            manifest["entries"].append(entry)
            report.added.append(entry)

    def _quarantine(self, item: _Incoming, sha: str, reason: str, manifest: dict, report: ImportReport) -> None:
        rel = f"quarantine/{sha[:12]}-{_safe(item.source)}"
        _atomic_write(self.root / rel, item.data)
        q = Quarantined(rel, sha, item.source, reason)
        manifest["quarantine"].append(q)
        report.quarantined.append(q)

    def _verify(self, item: _Incoming) -> list[tuple[LibraryEntry, bytes]]:
        """Library entries for a file that passes every check; raises _Rejected with the reason."""
        if item.source.lower().endswith(".hex"):
            return [self._verify_hex(item)]
        try:
            modules = split_modules(item.data)
        except NotAModuleError as exc:
            raise _Rejected(str(exc)) from None
        out = []
        offset = 0
        for module in modules:
            data = item.data[offset : offset + module.size]
            offset += module.size
            out.append((self._module_entry(module, data, item), data))
        if offset != len(item.data):
            raise _Rejected(f"{len(item.data) - offset} bytes follow the last module")
        return out

    def _module_entry(self, module: Module, data: bytes, item: _Incoming) -> LibraryEntry:
        if module.problems:
            raise _Rejected("; ".join(module.problems))
        platform = platform_by_id(module.platform_id)
        if module.function == Function.ASSET:
            raise _Rejected("asset modules belong to an application, not to the firmware library")
        if platform is None or not platform.supported:
            raise _Rejected(f"made for {module.platform_name}, which the kiosk cannot flash")
        slot = platform.slot_for_module(module.function, module.index, module.start_address, module.end_address)
        if slot is None:
            raise _Rejected(
                f"{module.function_name} {module.index} at 0x{module.start_address:x}-0x{module.end_address:x} "
                f"is not where a {platform.name} keeps it"
            )
        if module.function in OWN_VERSIONED:
            release = item.group_release  # its name's version is its own; the release is the one it came with
        else:
            release = release_from_name(item.source) or item.context_release
            if release is None and module.function in (Function.SYSTEM_PART, Function.MONO_FIRMWARE):
                release = release_name(module.version)
            release = release or item.group_release
        app = _is_app(module, item.source)
        if app:
            release = None  # apps are not part of a release; they carry their own dependencies
        if release is not None:
            try:
                DeviceOsVersion.parse(release)
            except VersionError:
                release = None
        name = _part_name(module, platform, item.source)
        if app:
            rel = f"modules/{platform.name}/apps/{platform.name}-{_safe(name)}-{_sha(data)[:8]}.bin"
        else:
            folder = release or "unreleased"
            label = f"@{release}" if release else f"-v{module.version}"
            rel = f"modules/{platform.name}/{folder}/{platform.name}-{_safe(name)}{label}.bin"
        return LibraryEntry(
            path=rel,
            sha256=_sha(data),
            size=len(data),
            kind="module",
            platform_id=platform.id,
            platform=platform.name,
            name=name,
            release=release,
            source=Path(item.source).name,
            function=module.function_name,
            index=module.index,
            version=module.version,
            dependencies=tuple((d.to_json()["function"], d.index, d.version) for d in module.real_dependencies),
            encrypted=bool(module.flags & 0x08),
        )

    def _verify_hex(self, item: _Incoming) -> tuple[LibraryEntry, bytes]:
        try:
            image = parse_hex(item.data)
        except HexError as exc:
            raise _Rejected(f"Intel HEX: {exc}") from None
        platforms = set()
        for platform, module in modules_in_image(image):
            if module.problems:
                raise _Rejected(f"its {module.function_name} at 0x{module.start_address:x}: {module.problems[0]}")
            platforms.add(platform)
        named = _platform_in_name(item.source)
        if named is not None:
            platforms.add(named)
        if len(platforms) != 1:
            found = ", ".join(sorted(p.name for p in platforms)) or "none"
            raise _Rejected(f"cannot tell which platform this restore image is for (found: {found})")
        platform = platforms.pop()
        release = release_from_name(item.source) or item.context_release
        if release is None:  # Particle's <version>/<platform>.hex: the image's own system part says which
            inside = {release_name(m.version) for p, m in modules_in_image(image)
                      if p.id == platform.id and m.function == Function.SYSTEM_PART}  # fmt: skip
            release = inside.pop() if len(inside) == 1 else None
        # one image per release: Particle names every one <platform>.hex, so the release goes in the path
        name = _safe(item.source)
        if release is not None and release not in name:
            name = f"{platform.name}-restore@{release}.hex"
        return (
            LibraryEntry(
                path=f"restore/{platform.name}/{name}",
                sha256=_sha(item.data),
                size=len(item.data),
                kind="restore-image",
                platform_id=platform.id,
                platform=platform.name,
                name="restore",
                release=release,
                source=Path(item.source).name,
            ),
            item.data,
        )

    # -- lookups -----------------------------------------------------------------------------
    def read(self, entry: LibraryEntry) -> bytes:
        """The bytes of an entry, after checking them against the SHA-256 pinned at import."""
        path = self.root / entry.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LibraryError(f"library file {entry.path} cannot be read ({exc}); import it again") from None
        if _sha(data) != entry.sha256:
            raise LibraryError(
                f"library file {entry.path} changed on disk since it was imported (SHA-256 differs); "
                "import the original file again"
            )
        return data

    def verify(self) -> list[str]:
        """Every stored file checked against the manifest: a sentence per file that fails."""
        problems = []
        for entry in self.entries():
            try:
                self.read(entry)
            except LibraryError as exc:
                problems.append(str(exc))
        return problems

    def releases(self, platform: Platform | str) -> list[str]:
        """Releases with a system part for the platform, oldest first."""
        p = platform if isinstance(platform, Platform) else platform_by_name(platform)
        found = {e.release for e in self._device_os(p) if e.function == "system-part" and e.release}
        return sorted(found, key=DeviceOsVersion.parse)

    def _device_os(self, platform: Platform) -> list[LibraryEntry]:
        names = {function_name(f) for f in DEVICE_OS_FUNCTIONS}
        return [e for e in self.entries() if e.platform_id == platform.id and e.function in names]

    def bundle(self, platform: Platform | str, release: str | None = None) -> Bundle:
        """The Device OS parts of ``release`` (default: the newest complete one) for the platform."""
        p = platform if isinstance(platform, Platform) else platform_by_name(platform)
        entries = self._device_os(p)
        available = self.releases(p)
        if not available:
            raise LibraryError(
                f"the library has no Device OS for {p.name}; import a release with `kiosk firmware import`"
            )
        if release is None:
            complete = [r for r in available if not self._missing_system_parts(p, entries, r)]
            if not complete:
                raise LibraryError(
                    f"no complete Device OS release for {p.name} in the library (have: "
                    f"{', '.join(available)}); import the missing system parts"
                )
            release = complete[-1]
        own = [e for e in entries if e.release == release]
        if not own:
            raise LibraryError(
                f"Device OS {release} for {p.name} is not in the library (it has {', '.join(available)}); "
                "import it with `kiosk firmware import`"
            )
        missing = self._missing_system_parts(p, entries, release)
        if missing:
            raise LibraryError(f"Device OS {release} for {p.name} is incomplete: missing {', '.join(missing)}")
        chosen, names, lacks = _bind_parts(p, release, own, entries)
        return Bundle(p, release, tuple(sorted(chosen, key=lambda e: (e.function, e.index))), names, lacks)

    @staticmethod
    def _missing_system_parts(p: Platform, entries: list[LibraryEntry], release: str) -> list[str]:
        have = {e.index for e in entries if e.release == release and e.function == "system-part"}
        return [f"system-part index {i}" for i in p.system_parts if i not in have]

    def restore_image(self, platform: Platform | str, release: str | None = None) -> LibraryEntry:
        """The SWD restore image (.hex) for the platform: of ``release``, else the newest."""
        p = platform if isinstance(platform, Platform) else platform_by_name(platform)
        images = [e for e in self.entries() if e.kind == "restore-image" and e.platform_id == p.id]
        if release is not None:
            images = [e for e in images if e.release == release]
        if not images:
            which = f"Device OS {release} " if release else ""
            raise LibraryError(
                f"the library has no {which}SWD restore image for {p.name}; import Particle's restore .hex for it "
                "with `kiosk firmware import`"
            )

        def newest(e: LibraryEntry) -> tuple:
            return (e.release is not None, DeviceOsVersion.parse(e.release) if e.release else None, e.path)

        return max(images, key=newest)

    def swd_image(self, platform: Platform | str, release: str | None = None) -> tuple[str, object]:
        """(what it is, the image) for an SWD restore: the restore .hex, else, where modules laid out by
        address make a whole image (Gen2: the DCT with the keys stays), the release's modules and Tinker.
        Gen3 also needs the Nordic MBR and UICR, which no module carries: there only the .hex will do."""
        p = platform if isinstance(platform, Platform) else platform_by_name(platform)
        try:
            entry = self.restore_image(p, release)
            return entry.path, parse_hex(self.read(entry))
        except LibraryError:
            if p.mcu.name not in MODULE_SET_RESTORE:
                raise
        bundle = self.bundle(p, release)
        segments = []
        for entry in [e for e in bundle.entries if not e.encrypted] + [self.tinker(p)]:
            data = self.read(entry)
            segments.append((parse_module(data).start_address, data))
        return f"Device OS {bundle.release} modules and Tinker, laid out by address", sorted(segments)

    def tinker(self, platform: Platform | str, system_version: int | None = None) -> LibraryEntry:
        """Tinker for the platform: the newest one whose Device OS dependency ``system_version`` meets."""
        p = platform if isinstance(platform, Platform) else platform_by_name(platform)
        tinkers = [e for e in self.entries() if e.platform_id == p.id and "/apps/" in e.path and e.name == "tinker"]
        if not tinkers:
            raise LibraryError(f"the library has no Tinker for {p.name}; import one with `kiosk firmware import`")
        usable = [e for e in tinkers if system_version is None or e.system_dependency <= system_version]
        if not usable:
            needs = min(e.system_dependency for e in tinkers)
            raise LibraryError(
                f"every Tinker for {p.name} in the library needs system version {needs} or newer; "
                f"the device has {system_version}: update Device OS first"
            )
        return max(usable, key=lambda e: (e.system_dependency, e.version or 0, e.path))


class _Rejected(Exception):
    """Internal: why a file goes to quarantine."""


def _bind_groups(items: list[_Incoming]) -> None:
    """Give each file the release of the system parts it arrived with (a Device Restore zip's bootloader.bin and
    softdevice.bin name no release; its system-part1.bin does, by its version), where those agree on one."""
    found: dict[str, set[str]] = {}
    for item in items:
        release = _system_release(item.data, item.source, item.context_release)
        if release is not None:
            found.setdefault(item.group, set()).add(release)
    for item in items:
        releases = found.get(item.group, set())
        item.group_release = next(iter(releases)) if len(releases) == 1 else None


def _bind_parts(
    p: Platform, release: str, own: list[LibraryEntry], entries: list[LibraryEntry]
) -> tuple[list[LibraryEntry], tuple[str, ...], tuple[str, ...]]:
    """The release's own modules plus, for each part it needs (by its modules' dependencies, or because every release
    of the family has one), the module that serves it: the release's own, else the one of the version the release
    table gives it, else the newest that meets the dependency (a SoftDevice or NCP is shared by many releases and is
    filed with the first that brought it). Returns (entries, names of the parts missing, a sentence for each)."""
    parts = list(RELEASE_PARTS.get(p.mcu.name, ())) + ([NCP_PART] if p.has_ncp else [])
    names = {(f, i): (name, column) for f, i, name, column in parts}
    row = release_modules(release)
    chosen = list(own)
    needs: dict[tuple[int, int], tuple[int, str]] = {(f, i): (0, f"Device OS {release}") for f, i, _n, _c in parts}
    missing: list[str] = []
    lacks: list[str] = []
    queue = list(own)
    while queue:  # dependencies of what is chosen, and of what that brings (a P2 bootloader needs prebootloader-part1)
        entry = queue.pop()
        for fname, index, version in entry.dependencies:
            key = _FUNCTION_BY_NAME.get(fname)
            if key is None or key == Function.SYSTEM_PART:
                continue
            have = needs.get((key, index), (0, ""))
            if version > have[0]:
                needs[(key, index)] = (version, f"{entry.name} v{entry.version}")
        for (function, index), (version, _why) in list(needs.items()):
            if any(e.function == function_name(function) and e.index == index for e in chosen):
                continue
            pick = _serving(entries, function, index, version, release, row, names.get((function, index)))
            if pick is not None:
                chosen.append(pick)
                queue.append(pick)
    for (function, index), (version, why) in needs.items():
        have = [e for e in chosen if e.function == function_name(function) and e.index == index]
        name = names.get((function, index), (f"{function_name(function)} {index}", ""))[0]
        if have and all((e.version or 0) >= version for e in have):
            continue
        older = sorted({e.version for e in entries if e.function == function_name(function) and e.index == index})
        missing.append(name)
        at = f" at version {version} or newer" if version else ""
        found = f" (the library has only v{', v'.join(map(str, older))})" if older else ""
        lacks.append(f"{name}: {why} needs {function_name(function)} {index}{at}{found}; import the release's "
                     f"{name} file, or Particle's Device Restore zip for {release}")  # fmt: skip
    return chosen, tuple(missing), tuple(lacks)


_FUNCTION_BY_NAME = {function_name(f): f for f in Function}


def _serving(
    entries: list[LibraryEntry], function: int, index: int, version: int, release: str, row: Any,
    part: tuple[str, str] | None,
) -> LibraryEntry | None:
    """The library module that serves (function, index) for ``release``: see _bind_parts for the order."""
    fname = function_name(function)
    fits = [e for e in entries if e.function == fname and e.index == index and (e.version or 0) >= version]
    if not fits:
        return None
    own = [e for e in fits if e.release == release]
    listed = getattr(row, part[1], None) if row is not None and part is not None else None
    same = [e for e in fits if listed is not None and e.version == listed]
    for group in (own, same, fits):
        if group:
            return max(group, key=lambda e: (e.version or 0, e.release is not None, e.path))
    return None


def _same_identity(a: LibraryEntry, b: LibraryEntry) -> bool:
    if a.kind != "module" or b.kind != "module" or "/apps/" in a.path or "/apps/" in b.path:
        return False
    return (a.platform_id, a.function, a.index, a.version, a.release) == (
        b.platform_id,
        b.function,
        b.index,
        b.version,
        b.release,
    ) and a.sha256 != b.sha256


def _platform_in_name(source: str) -> Platform | None:
    stem = Path(source).name.lower()
    for token in re.split(r"[^a-z0-9]+", stem):
        with contextlib.suppress(LookupError):
            p = platform_by_name(token)
            if p.supported:
                return p
    return None


def modules_in_image(image: Any) -> list[tuple[Platform, Module]]:
    """Modules found in a flash image at the start address of any supported platform's slot."""
    found: dict[int, tuple[Platform, Module]] = {}
    for platform in PLATFORMS:
        if not platform.supported:
            continue
        for slot in platform.layout:
            if slot.storage is not Storage.INTERNAL or slot.start in found or not image.contains(slot.start):
                continue
            offset = platform.mcu.prefix_offset(slot.function)
            raw = image.read(slot.start + offset, PREFIX_SIZE)
            if raw is None:
                continue
            start, end, _r, _f, _v, platform_id, function, index, _d1, _d2 = PREFIX_STRUCT.unpack(raw)
            if (start, platform_id, function, index) != (slot.start, platform.id, slot.function, slot.index):
                continue
            data = image.read(start, end - start + 4)
            if data is None:
                continue
            with contextlib.suppress(NotAModuleError):
                found[slot.start] = (platform, parse_module(data))
    return list(found.values())


def _regular(path: Path) -> bool:
    """A regular file (following a link): not a device, pipe or socket, which could block or never end."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
