"""Device OS versions: module version numbers, release names, and how to compare releases.

A module's ``version`` field is a number from a table, not derived from the release name: system
part 5301 is Device OS 5.3.1, whose bootloader is 2101 (and 6.3.0 is 6302). The table is data,
``device_os_releases.toml``: Device OS' ``system/system-versions.md`` and Particle's Device Restore
files, with the source of each row. Numbers grow with releases, so module numbers compare like the
releases they stand for.

    >>> release_name(5301), system_version_for("5.3.1"), bootloader_version_for("5.3.1")
    ('5.3.1', 5301, 2101)
    >>> DeviceOsVersion.parse("1.5.4-rc.1") < DeviceOsVersion.parse("1.5.4")
    True
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, total_ordering
from pathlib import Path

#: Device OS 6.0.0 removed YModem from the listening-mode console and the 28800 baud trigger.
YMODEM_REMOVED_SYSTEM_VERSION = 6000
#: Control requests (mode switches, firmware update, module info): Gen2 from 0.8.0, Gen3 from 0.9.0.
CONTROL_REQUESTS_SINCE = {2: 300, 3: 400, 4: 400}
#: Particle's CLI does not trust control requests on Gen2 before 2.0.0 ("somewhat inconsistent").
GEN2_RELIABLE_CONTROL_SINCE = 2000

#: The release table's file: every release's module versions with their sources (facts as data, not code).
RELEASE_TABLE = Path(__file__).with_name("device_os_releases.toml")
#: The module columns a row of the table may carry besides system and bootloader.
MODULE_COLUMNS = ("bootloader", "prebootloader_part1", "softdevice", "ncp_esp32")


@dataclass(frozen=True)
class ReleaseModules:
    """One row of the release table: a release's module versions (None where UNVERIFIED) and their source."""

    name: str
    system: int
    bootloader: int | None
    prebootloader_part1: int | None = None
    softdevice: int | None = None
    ncp_esp32: int | None = None
    source: str = ""


def _load_table(path: Path) -> tuple[ReleaseModules, ...]:
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    rows = []
    for row in raw["releases"]:
        known = {k: (v if isinstance(v, int) else None) for k, v in row.items() if k in MODULE_COLUMNS}
        rows.append(ReleaseModules(row["name"], row["system"], **{"bootloader": None, **known}, source=row["source"]))
    return tuple(rows)


TABLE: tuple[ReleaseModules, ...] = _load_table(RELEASE_TABLE)
# (system module version, bootloader module version or None, release name), in release order.
RELEASES: tuple[tuple[int, int | None, str], ...] = tuple((r.system, r.bootloader, r.name) for r in TABLE)
_MODULES = {r.name: r for r in TABLE}


def release_modules(release: str) -> ReleaseModules | None:
    """The release table's row for ``release`` (None when the table does not know it yet)."""
    return _MODULES.get(release.strip().removeprefix("v"))


_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


class VersionError(ValueError):
    """A Device OS version that is neither a release name nor a module version number."""


@total_ordering
@dataclass(frozen=True)
class DeviceOsVersion:
    """A Device OS release name (semantic version), comparable by semver precedence."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> DeviceOsVersion:
        return _parse_version(text)

    @classmethod
    def _parse(cls, text: str) -> DeviceOsVersion:
        match = _SEMVER.match(text.strip())
        if not match:
            raise VersionError(f"{text!r} is not a Device OS version (expected e.g. 5.3.1 or 1.5.4-rc.1)")
        major, minor, patch, pre = match.groups()
        parts = tuple(int(p) if p.isdigit() else p for p in pre.split(".")) if pre else ()
        return cls(int(major), int(minor), int(patch), parts)

    def _key(self) -> tuple:
        # A release sorts after its pre-releases; numeric identifiers sort before alphanumeric ones.
        pre = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if pre else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, DeviceOsVersion):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}.{self.patch}"
        return base + ("-" + ".".join(str(p) for p in self.prerelease) if self.prerelease else "")


@lru_cache(maxsize=1024)  # releases are named again and again (every catalogue look-up); a version is immutable
def _parse_version(text: str) -> DeviceOsVersion:
    return DeviceOsVersion._parse(text)


_BY_SYSTEM: dict[int, list[str]] = {}
_BY_RELEASE: dict[str, tuple[int, int | None]] = {}
_BY_BOOTLOADER: dict[int, list[str]] = {}
for _system, _bootloader, _name in RELEASES:
    _BY_SYSTEM.setdefault(_system, []).append(_name)
    _BY_RELEASE[_name] = (_system, _bootloader)
    if _bootloader is not None:
        _BY_BOOTLOADER.setdefault(_bootloader, []).append(_name)


def release_names(system_version: int) -> tuple[str, ...]:
    """Every release name that shipped this system module version (pre-releases can share one)."""
    return tuple(_BY_SYSTEM.get(system_version, ()))


def release_name(system_version: int) -> str | None:
    """The newest release name with this system module version, or None if the table lacks it."""
    names = _BY_SYSTEM.get(system_version)
    return names[-1] if names else None


def system_version_for(release: str) -> int | None:
    entry = _BY_RELEASE.get(release.strip().removeprefix("v"))
    return entry[0] if entry else None


def bootloader_version_for(release: str) -> int | None:
    entry = _BY_RELEASE.get(release.strip().removeprefix("v"))
    return entry[1] if entry else None


def bootloader_releases(bootloader_version: int) -> tuple[str, ...]:
    """The releases that shipped this bootloader module version."""
    return tuple(_BY_BOOTLOADER.get(bootloader_version, ()))


def parse_device_os(text: str) -> int:
    """A technician's ``--device-os`` value as a system module version.

    Accepts a release name (``5.3.1``) or a module version number (``5301``); raises
    VersionError with what to type instead.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    number = system_version_for(text)
    if number is not None:
        return number
    DeviceOsVersion.parse(text)  # raises for text that is not a version at all
    raise VersionError(
        f"Device OS {text} is not in the kiosk's release table; give its system module version "
        f"number instead (e.g. --device-os 5301 for 5.3.1)"
    )


def describe_system_version(system_version: int) -> str:
    """``5.3.1`` where the table knows the number, else ``module version 6305``."""
    name = release_name(system_version)
    return name if name else f"module version {system_version}"


# --- The releases each platform had --------------------------------------------------------------------

#: Spans of the release table (first and last release, inclusive, in table order) each platform had.
#: Source: device-os `.buildpackrc` (RELEASE_PLATFORMS and PRERELEASE_PLATFORMS, the platforms a tag is
#: built and released for) at every tag from v0.5.3 to v6.2.0; before v0.5.3 no tag has the file, so the
#: first Gen2 releases come from the real binaries Particle's tools test with (module-format.md 4: BVR
#: 040_system-part1.bin is a Photon 0.4.0 system part, CLI p1_tinker.bin depends on system 3 = 0.4.3,
#: electron_tinker.bin on system 10 = 0.4.8-rc.6) and are UNVERIFIED beyond them. Gen3 appears in
#: `.buildpackrc` at v0.8.0-rc.26; rc.15 to rc.25 have no tag in the mirror read (UNVERIFIED). 1.0.x was
#: Gen2 only, 0.8.0-rc.26 to 0.9.0 Gen3 only. A release named "<version>-<platform>.<n>" (1.4.5-b5som.N,
#: 1.5.x-tracker.N, 3.x.1-p2.N) was made for that platform alone: see :func:`platform_releases`.
#: Platforms with no span (electron2, sulu) had no release of this table.
#: From 6.2.1 on, the platforms a release had are those of Particle's Device Restore files for it (particle-iot/docs
#: src/assets/files/device-restore/<release>/: argon, b5som, boron, bsom, esomx, msom, p2, tracker, trackerm at
#: 6.2.1, 6.3.0, 6.3.2, 6.3.3, 6.3.4, 6.4.0 and 6.4.1).
PLATFORM_RELEASES: dict[str, tuple[tuple[str, str], ...]] = {
    "core": (("0.4.0", "0.8.0-rc.14"), ("1.0.0", "1.4.4")),
    "photon": (("0.4.0", "0.8.0-rc.14"), ("1.0.0", "3.3.1")),
    "p1": (("0.4.3", "0.8.0-rc.14"), ("1.0.0", "3.3.1")),
    "electron": (("0.4.8-rc.6", "0.8.0-rc.14"), ("1.0.0", "3.3.1")),
    "argon": (("0.8.0-rc.15", "0.9.0"), ("1.1.0-rc.1", "6.4.1")),
    "boron": (("0.8.0-rc.15", "0.9.0"), ("1.1.0-rc.1", "6.4.1")),
    # Xenon support ended with the 1.5.x line (no xenon in .buildpackrc from v2.0.0)
    "xenon": (("0.8.0-rc.15", "0.9.0"), ("1.1.0-rc.1", "1.5.4-rc.2")),
    "asom": (("1.1.0-rc.1", "1.4.4"),),
    "bsom": (("1.1.0-rc.1", "6.4.1"),),
    "xsom": (("1.1.0-rc.1", "1.4.4"),),
    "b5som": (("1.4.5-b5som.1", "6.4.1"),),
    # the tracker line, then 1.5.3-tracker.1 on: 1.5.1 and 1.5.2 were not built for it
    "tracker": (("1.5.1-tracker.1", "1.5.1-tracker.3"), ("1.5.3-tracker.1", "6.4.1")),
    "esomx": (("4.0.0-alpha.2", "6.4.1"),),
    "p2": (("3.0.1-p2.1", "3.0.1-p2.5"), ("3.2.1-p2.1", "3.2.1-p2.4"), ("5.0.0-alpha.1", "6.4.1")),
    "trackerm": (("5.0.0", "6.4.1"),),
    "msom": (("5.5.0-rc.1", "6.4.1"),),
}

_RELEASE_ORDER = {name: i for i, (_s, _b, name) in enumerate(RELEASES)}


def _line_of(release: str) -> str | None:
    """The platform a release was made for alone (``1.5.1-tracker.2`` -> ``tracker``), if any."""
    pre = DeviceOsVersion.parse(release).prerelease
    return pre[0] if pre and isinstance(pre[0], str) and pre[0] in PLATFORM_RELEASES else None


def platform_releases(platform: str) -> tuple[str, ...]:
    """The releases of the table the platform had, oldest first."""
    names = [name for _s, _b, name in RELEASES]
    out: list[str] = []
    for first, last in PLATFORM_RELEASES.get(platform, ()):
        for name in names[_RELEASE_ORDER[first] : _RELEASE_ORDER[last] + 1]:
            line = _line_of(name)
            if (line is None or line == platform) and name not in out:
                out.append(name)
    return tuple(out)


def had_release(platform: str, release: str) -> bool:
    """Whether Particle released Device OS ``release`` for the platform."""
    return release in platform_releases(platform)


def stable_release_before(platform: str, release: str, ok: Callable[[str], bool] = lambda r: True) -> str | None:
    """The platform's newest release that is no pre-release, not newer than ``release``, with a bootloader
    version in the table (a synthetic release needs one) and passing ``ok``; None when there is none."""
    limit = DeviceOsVersion.parse(release)
    for name in reversed(platform_releases(platform)):
        version = DeviceOsVersion.parse(name)
        if not version.prerelease and version <= limit and bootloader_version_for(name) is not None and ok(name):
            return name
    return None


def release_had(platform: str, release: str) -> str | None:
    """``release`` if the platform had it, else its newest stable release before it (the demo library and the
    simulator give each platform a release it really had)."""
    return release if had_release(platform, release) else stable_release_before(platform, release)


def last_release(platform: str, *, stable: bool = False) -> str | None:
    """The platform's newest release of the table (``stable``: the newest that is no pre-release)."""
    names = [r for r in platform_releases(platform) if not stable or not DeviceOsVersion.parse(r).prerelease]
    return names[-1] if names else None
