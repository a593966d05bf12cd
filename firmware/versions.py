"""Device OS versions: module version numbers, release names, and how to compare releases.

A module's ``version`` field is a number from a table, not derived from the release name: system
part 5301 is Device OS 5.3.1, whose bootloader is 2101. The table is Device OS'
``system/system-versions.md`` (facts transcribed as data). Numbers grow with releases, so module
numbers compare like the releases they stand for.

    >>> release_name(5301), system_version_for("5.3.1"), bootloader_version_for("5.3.1")
    ('5.3.1', 5301, 2101)
    >>> DeviceOsVersion.parse("1.5.4-rc.1") < DeviceOsVersion.parse("1.5.4")
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import total_ordering

#: Device OS 6.0.0 removed YModem from the listening-mode console and the 28800 baud trigger.
YMODEM_REMOVED_SYSTEM_VERSION = 6000
#: Control requests (mode switches, firmware update, module info): Gen2 from 0.8.0, Gen3 from 0.9.0.
CONTROL_REQUESTS_SINCE = {2: 300, 3: 400, 4: 400}
#: Particle's CLI does not trust control requests on Gen2 before 2.0.0 ("somewhat inconsistent").
GEN2_RELIABLE_CONTROL_SINCE = 2000

# (system module version, bootloader module version or None, release name), in release order.
RELEASES: tuple[tuple[int, int | None, str], ...] = (
    (0, None, "0.4.0"),
    (1, None, "0.4.1"),
    (2, None, "0.4.2"),
    (3, None, "0.4.3"),
    (4, None, "0.4.4-rc.1"),
    (4, None, "0.4.4-rc.2"),
    (4, None, "0.4.4-rc.3"),
    (4, None, "0.4.4-rc.4"),
    (4, None, "0.4.4-rc.5"),
    (4, None, "0.4.4-rc.6"),
    (5, None, "0.4.4"),
    (6, None, "0.4.5"),
    (7, None, "0.4.6"),
    (8, None, "0.4.7"),
    (9, None, "0.4.8-rc.1"),
    (10, None, "0.4.8-rc.6"),
    (11, 7, "0.4.9"),
    (12, None, "0.5.0-rc.1"),
    (13, None, "0.5.0-rc.2"),
    (13, None, "0.5.0"),
    (14, None, "0.5.1-rc.1"),
    (15, None, "0.5.1-rc.2"),
    (15, None, "0.5.1"),
    (16, None, "0.5.2-rc.1"),
    (17, None, "0.5.2"),
    (18, None, "0.5.3-rc.1"),
    (19, None, "0.5.3-rc.2"),
    (20, None, "0.5.3-rc.3"),
    (21, None, "0.5.3"),
    (22, None, "0.5.4"),
    (23, None, "0.5.5"),
    (100, None, "0.6.0-rc.1"),
    (101, None, "0.6.0-rc.2"),
    (102, None, "0.6.0"),
    (103, 9, "0.6.1-rc.1"),
    (104, None, "0.6.1-rc.2"),
    (105, None, "0.6.1"),
    (106, None, "0.6.2-rc.1"),
    (107, None, "0.6.2-rc.2"),
    (108, 11, "0.6.2"),
    (109, 11, "0.6.3"),
    (110, 11, "0.6.4"),
    (200, 100, "0.7.0-rc.1"),
    (201, 100, "0.7.0-rc.2"),
    (202, 100, "0.7.0-rc.3"),
    (203, 100, "0.7.0-rc.4"),
    (204, 101, "0.7.0-rc.5"),
    (205, 101, "0.7.0-rc.6"),
    (206, 101, "0.7.0-rc.7"),
    (207, 101, "0.7.0"),
    (300, 101, "0.8.0-rc.1"),
    (301, 101, "0.8.0-rc.2"),
    (302, 201, "0.8.0-rc.3"),
    (303, 201, "0.8.0-rc.4"),
    (304, 201, "0.8.0-rc.5"),
    (305, 201, "0.8.0-rc.6"),
    (306, 201, "0.8.0-rc.7"),
    (307, 201, "0.8.0-rc.8"),
    (308, 201, "0.8.0-rc.9"),
    (309, 201, "0.8.0-rc.10"),
    (310, 201, "0.8.0-rc.11"),
    (311, 201, "0.8.0-rc.12"),
    (312, 201, "0.8.0-rc.13"),
    (312, 201, "0.8.0-rc.14"),
    (314, 209, "0.8.0-rc.15"),
    (315, 209, "0.8.0-rc.16"),
    (316, 210, "0.8.0-rc.17"),
    (317, 210, "0.8.0-rc.18"),
    (318, 211, "0.8.0-rc.19"),
    (319, 212, "0.8.0-rc.20"),
    (320, 212, "0.8.0-rc.21"),
    (321, 213, "0.8.0-rc.22"),
    (322, 214, "0.8.0-rc.23"),
    (323, 214, "0.8.0-rc.24"),
    (324, 214, "0.8.0-rc.25"),
    (325, 215, "0.8.0-rc.26"),
    (326, 215, "0.8.0-rc.27"),
    (400, 300, "0.9.0-rc.1"),
    (401, 300, "0.9.0-rc.2"),
    (402, 300, "0.9.0-rc.3"),
    (403, 300, "0.9.0"),
    (1000, 201, "1.0.0"),
    (1001, 201, "1.0.1-rc.1"),
    (1002, 201, "1.0.1"),
    (1100, 300, "1.1.0-rc.1"),
    (1101, 301, "1.1.0-rc.2"),
    (1102, 301, "1.1.0"),
    (1200, 300, "1.2.0-alpha.1"),
    (1201, 300, "1.2.0-beta.1"),
    (1202, 302, "1.2.0-rc.1"),
    (1210, 310, "1.2.1-rc.1"),
    (1211, 311, "1.2.1-rc.2"),
    (1212, 311, "1.2.1-rc.3"),
    (1213, 311, "1.2.1"),
    (1300, 311, "1.3.0-alpha.1"),
    (1301, 311, "1.3.0-rc.1"),
    (1320, 400, "1.3.1-rc.1"),
    (1321, 401, "1.3.1"),
    (1400, 500, "1.4.0-rc.1"),
    (1401, 500, "1.4.0"),
    (1402, 500, "1.4.1-rc.1"),
    (1403, 500, "1.4.1"),
    (1404, 501, "1.4.2"),
    (1405, 501, "1.4.3"),
    (1406, 501, "1.4.4"),
    (1407, 501, "1.4.5-b5som.1"),
    (1408, 501, "1.4.5-b5som.2"),
    (1500, 501, "1.5.0-rc.1"),
    (1501, 501, "1.5.0-rc.2"),
    (1502, 501, "1.5.0"),
    (1503, 501, "1.5.1-tracker.1"),
    (1504, 501, "1.5.1-tracker.2"),
    (1505, 501, "1.5.1-tracker.3"),
    (1510, 501, "1.5.1-rc.1"),
    (1511, 501, "1.5.1"),
    (1512, 502, "1.5.2"),
    (1513, 502, "1.5.3-tracker.1"),
    (1514, 502, "1.5.4-rc.1"),
    (1515, 502, "1.5.4-rc.2"),
    (2000, 1000, "2.0.0-alpha.1"),
    (2001, 1000, "2.0.0-alpha.2"),
    (2002, 1001, "2.0.0-alpha.3"),
    (2003, 1002, "2.0.0-alpha.4"),
    (2004, 1002, "2.0.0-rc.1"),
    (2005, 1003, "2.0.0-rc.2"),
    (2006, 1003, "2.0.0-rc.3"),
    (2007, 1003, "2.0.0-rc.4"),
    (2008, 1003, "2.0.0"),
    (2009, 1004, "2.0.1-alpha.1"),
    (2010, 1005, "2.0.1-alpha.2"),
    (2011, 1005, "2.0.1"),
    (2100, 1005, "2.1.0-rc.1"),
    (2101, 1005, "2.1.0"),
    (2200, 1006, "2.2.0-rc.1"),
    (2201, 1006, "2.2.0-rc.2"),
    (2202, 1006, "2.2.0"),
    (2300, 1006, "2.3.0-rc.1"),
    (2301, 1006, "2.3.0"),
    (2302, 1006, "2.3.1"),
    (3000, 1005, "3.0.0-alpha.1"),
    (3001, 1005, "3.0.0-alpha.2"),
    (3002, 1005, "3.0.0-beta.1"),
    (3003, 1005, "3.0.0-rc.1"),
    (3004, 1005, "3.0.0-rc.2"),
    (3005, 1005, "3.0.0"),
    (3010, 1005, "3.0.1-p2.1"),
    (3011, 1006, "3.0.1-p2.2"),
    (3012, 1006, "3.0.1-p2.3"),
    (3013, 1006, "3.0.1-p2.4"),
    (3014, 1007, "3.0.1-p2.5"),
    (3100, 1100, "3.1.0-alpha.1"),
    (3101, 1100, "3.1.0-alpha.2"),
    (3102, 1100, "3.1.0-rc.1"),
    (3103, 1100, "3.1.0"),
    (3200, 1100, "3.2.0-rc.1"),
    (3201, 1100, "3.2.0"),
    (3210, 1007, "3.2.1-p2.1"),
    (3211, 1007, "3.2.1-p2.2"),
    (3212, 1008, "3.2.1-p2.3"),
    (3213, 1009, "3.2.1-p2.4"),
    (3300, 1100, "3.3.0-rc.1"),
    (3301, 1100, "3.3.0"),
    (3302, 1100, "3.3.1"),
    (4000, 1100, "4.0.0-alpha.1"),
    (4001, 1101, "4.0.0-alpha.2"),
    (4002, 1101, "4.0.0-beta.1"),
    (4003, 1101, "4.0.0"),
    (4004, 1101, "4.0.1-rc.1"),
    (4005, 1101, "4.0.1"),
    (4006, 1101, "4.0.2"),
    (4100, 1200, "4.1.0"),
    (4200, 1200, "4.2.0"),
    (5000, 2000, "5.0.0-alpha.1"),
    (5001, 2000, "5.0.0-alpha.2"),
    (5002, 2000, "5.0.0"),
    (5003, 2001, "5.0.1"),
    (5004, 2001, "5.1.0"),
    (5200, 2002, "5.2.0"),
    (5300, 2100, "5.3.0"),
    (5301, 2101, "5.3.1"),
    (5302, 2102, "5.3.2"),
    (5400, 2200, "5.4.0"),
    (5410, 2210, "5.4.1"),
    (5500, 2300, "5.5.0-rc.1"),
    (5501, 2300, "5.5.0"),
    (5600, 2400, "5.6.0"),
    (5700, 2500, "5.7.0"),
    (5800, 2600, "5.8.0"),
    (5801, 2600, "5.8.1"),
    (5802, 2601, "5.8.2"),
    (5901, 2700, "5.9.0"),
    (6000, 3000, "6.0.0"),
    (6100, 3000, "6.1.0"),
    (6101, 3001, "6.1.1"),
    (6102, 3002, "6.1.2"),
    (6200, 3100, "6.2.0"),
)

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
PLATFORM_RELEASES: dict[str, tuple[tuple[str, str], ...]] = {
    "core": (("0.4.0", "0.8.0-rc.14"), ("1.0.0", "1.4.4")),
    "photon": (("0.4.0", "0.8.0-rc.14"), ("1.0.0", "3.3.1")),
    "p1": (("0.4.3", "0.8.0-rc.14"), ("1.0.0", "3.3.1")),
    "electron": (("0.4.8-rc.6", "0.8.0-rc.14"), ("1.0.0", "3.3.1")),
    "argon": (("0.8.0-rc.15", "0.9.0"), ("1.1.0-rc.1", "6.2.0")),
    "boron": (("0.8.0-rc.15", "0.9.0"), ("1.1.0-rc.1", "6.2.0")),
    # Xenon support ended with the 1.5.x line (no xenon in .buildpackrc from v2.0.0)
    "xenon": (("0.8.0-rc.15", "0.9.0"), ("1.1.0-rc.1", "1.5.4-rc.2")),
    "asom": (("1.1.0-rc.1", "1.4.4"),),
    "bsom": (("1.1.0-rc.1", "6.2.0"),),
    "xsom": (("1.1.0-rc.1", "1.4.4"),),
    "b5som": (("1.4.5-b5som.1", "6.2.0"),),
    # the tracker line, then 1.5.3-tracker.1 on: 1.5.1 and 1.5.2 were not built for it
    "tracker": (("1.5.1-tracker.1", "1.5.1-tracker.3"), ("1.5.3-tracker.1", "6.2.0")),
    "esomx": (("4.0.0-alpha.2", "6.2.0"),),
    "p2": (("3.0.1-p2.1", "3.0.1-p2.5"), ("3.2.1-p2.1", "3.2.1-p2.4"), ("5.0.0-alpha.1", "6.2.0")),
    "trackerm": (("5.0.0", "6.2.0"),),
    "msom": (("5.5.0-rc.1", "6.2.0"),),
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
