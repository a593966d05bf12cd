"""The module table of a device, like `particle serial inspect`: each module with PASS/FAIL per check.

The device runs four checks on every module at boot (integrity = CRC, address range, platform,
dependencies) and reports them in control request 90 or the listening-mode ``s`` JSON; this module
turns either into one table for the technician and the support ticket. Where the device reports a
hash (request 90 from Device OS 5.6.0 on), each module is also compared with the firmware library:
PASS when the library has a module that the device would report with the same hash, FAIL when the
library has that Device OS part (same function, index and version) with another hash, "not in the
library" otherwise (a customer's app, a release the library lacks). What the hash is comes from
``hw.control.module_info_hash``: the suffix's SHA-256 (not the file's), the SoftDevice's unique string
for the radio stack, the version alone for the NCP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from firmware.library import FirmwareLibrary, LibraryEntry, LibraryError
from firmware.module import NotAModuleError, parse_module
from firmware.platforms import FUNCTION_PHRASES, Function, Platform, function_name
from firmware.versions import describe_system_version
from hw.control import ModuleInfo, ModuleStore, module_info_hash

CHECKS = ("integrity", "range", "platform", "dependencies")
CHECK_LABELS = {
    "integrity": "Integrity",
    "range": "Address Range",
    "platform": "Platform",
    "dependencies": "Dependencies",
}
#: What the library comparison can say about one module.
HASH_PASS, HASH_FAIL, NOT_IN_LIBRARY, HASH_NOT_REPORTED = "PASS", "FAIL", "not in the library", "not reported"
SUFFIX_SHA = "SHA-256 in the module's suffix"
#: What the device's hash is made of, where it is not the module's SHA-256.
HASH_BASIS = {
    Function.RADIO_STACK: "the SoftDevice's unique string",
    Function.NCP_FIRMWARE: "the NCP's version only",
}


@dataclass(frozen=True)
class HashCheck:
    """The library's verdict on one module's hash: ``verdict`` one of PASS, FAIL, "not in the library",
    "not reported"; ``entry`` the library file it matched (PASS) or differs from (FAIL)."""

    verdict: str
    entry: str | None = None
    basis: str = SUFFIX_SHA

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "entry": self.entry, "basis": self.basis}

    def describe(self) -> str:
        basis = "" if self.basis == SUFFIX_SHA else f"; the device's hash is {self.basis}"
        if self.verdict == HASH_PASS:
            return f"PASS (the library's {self.entry}{basis})"
        if self.verdict == HASH_FAIL:
            return f"FAIL (differs from the library's {self.entry}{basis})"
        return self.verdict


@dataclass(frozen=True)
class InspectedModule:
    """One module as the device reports it, with the verdict of each of its checks.

    ``size`` is the module image in bytes, its CRC included (0 where flash holds no module header), in
    either reply format; ``max_size``, ``store`` and ``hash`` only where the device reports them.
    """

    function: int
    index: int
    version: int
    size: int
    checks: dict[str, bool | None]  # None: the device did not report this check
    dependencies: tuple[tuple[int, int, int], ...]
    max_size: int | None = None
    store: str | None = None
    hash: bytes | None = None
    library: HashCheck | None = None  # None: not compared with a library

    @property
    def ok(self) -> bool:
        """The device's own checks all pass (the library's verdict is :attr:`matches_library`)."""
        return all(v is not False for v in self.checks.values())

    @property
    def matches_library(self) -> bool:
        """Not found to differ from the library (PASS, not in it, or not compared)."""
        return self.library is None or self.library.verdict != HASH_FAIL

    def to_json(self) -> dict[str, Any]:
        return {
            "function": function_name(self.function),
            "index": self.index,
            "version": self.version,
            "size": self.size,
            "max_size": self.max_size,
            "store": self.store,
            "hash": None if self.hash is None else self.hash.hex(),
            "checks": {k: (None if v is None else ("PASS" if v else "FAIL")) for k, v in self.checks.items()},
            "ok": self.ok,
            "library": None if self.library is None else self.library.to_json(),
            "dependencies": [{"function": function_name(f), "index": i, "version": v} for f, i, v in self.dependencies],
        }


class LibraryHashes:
    """The hash a device would report for each library module of one platform, to compare with.

    Only modules whose (function, index) the device reported are read. A library file that no longer
    matches its manifest, or is not a module, is left out (``problems`` says which).
    """

    def __init__(self, library: FirmwareLibrary, platform: Platform, wanted: Iterable[tuple[int, int]]):
        self.by_hash: dict[tuple[int, int, bytes], LibraryEntry] = {}
        self.parts: dict[tuple[int, int, int], LibraryEntry] = {}  # Device OS parts, by identity (not apps)
        self.problems: list[str] = []
        wanted_names = {(function_name(f), i) for f, i in wanted}
        try:
            entries = library.entries()
        except LibraryError as exc:
            self.problems.append(str(exc))
            return
        for entry in entries:
            if entry.kind != "module" or entry.platform_id != platform.id:
                continue
            if (entry.function, entry.index) not in wanted_names:
                continue
            try:
                module = parse_module(library.read(entry))
            except (LibraryError, NotAModuleError) as exc:
                self.problems.append(str(exc))
                continue
            identity = (module.function, module.index)
            self.by_hash.setdefault((*identity, module_info_hash(module)), entry)
            if "/apps/" not in entry.path:  # an app's version says nothing about which app it is
                self.parts.setdefault((*identity, module.version), entry)

    def check(self, m: ModuleInfo) -> HashCheck:
        basis = HASH_BASIS.get(m.function, SUFFIX_SHA)
        if m.hash is None:
            return HashCheck(HASH_NOT_REPORTED, basis=basis)
        found = self.by_hash.get((m.function, m.index, bytes(m.hash)))
        if found is not None:
            return HashCheck(HASH_PASS, found.path, basis)
        same = self.parts.get((m.function, m.index, m.version))
        if same is not None:
            return HashCheck(HASH_FAIL, same.path, basis)
        return HashCheck(NOT_IN_LIBRARY, basis=basis)


def _store_name(store: int | None) -> str | None:
    if store is None:
        return None
    try:
        return ModuleStore(store).name.lower()
    except ValueError:
        return f"store-{store}"


def from_control(modules: list[ModuleInfo], hashes: LibraryHashes | None = None) -> list[InspectedModule]:
    """From control request 90 (either reply format; the legacy one reports only two checks and no hash).
    With ``hashes``, each module's hash is compared with the library's."""
    out = []
    for m in modules:
        reported = CHECKS if not m.legacy else ("integrity", "dependencies")
        checks = {c: (c not in m.failed) if c in reported else None for c in CHECKS}
        deps = tuple((d.function, d.index, d.version) for d in m.dependencies)
        out.append(
            InspectedModule(
                m.function,
                m.index,
                m.version,
                m.image_size,
                checks,
                deps,
                max_size=m.max_size,
                store=_store_name(m.store),
                hash=None if m.hash is None else bytes(m.hash),
                library=None if hashes is None else hashes.check(m),
            )
        )
    return out


def describe(platform: Platform, modules: list[InspectedModule], source: str, library: str | None = None) -> str:
    """The table as text, in `particle serial inspect` wording; ``library`` names the library compared with."""
    lines = [f"Platform: {platform.id} - {platform.display_name}", f"Modules (from {source})"]
    if library is not None:
        lines.append(f"Hashes compared with the library at {library}")
    for m in modules:
        phrase = FUNCTION_PHRASES.get(m.function, f"module of function {m.function}").split(" ", 1)[1]
        version = m.version
        if function_name(m.function) in ("system-part", "mono"):
            version = f"{m.version} (Device OS {describe_system_version(m.version)})"
        lines.append(f"  {phrase.capitalize()} #{m.index} - version {version}, {m.size} bytes")
        for check in CHECKS:
            verdict = m.checks[check]
            lines.append(
                f"    {CHECK_LABELS[check]}: {'not reported' if verdict is None else ('PASS' if verdict else 'FAIL')}"
            )
        if m.library is not None:
            lines.append(f"    Library hash: {m.library.describe()}")
        for f, i, v in m.dependencies:
            dep_phrase = FUNCTION_PHRASES.get(f, f"module of function {f}").split(" ", 1)[1]
            lines.append(f"      needs {dep_phrase} #{i} - version {v} or newer")
    bad = [m for m in modules if not m.ok]
    differ = [m for m in modules if not m.matches_library]
    summary = ["All modules PASS" if not bad else f"{len(bad)} module(s) FAIL"]
    if differ:
        summary.append(f"{len(differ)} module(s) differ from the library")
    lines.append("; ".join(summary))
    return "\n".join(lines)
