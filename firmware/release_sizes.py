"""How large the real Device OS release modules are, with where each size comes from.

Real binaries are not redistributable, so ``firmware.releases`` builds synthetic ones; they take their sizes from
this table, so that every device-seconds figure (DFU erase and write, YModem, a control-request update, an SWD
restore) is measured on modules as large as Particle's. A size is the whole module file, prefix to CRC:
``end_address - start_address + 4``.

Sources (facts only, nothing copied but the numbers):

- **DR**: Particle's Device Restore data, ``particle-iot/docs`` ``src/assets/files/device-restore/<release>/
  <platform>.json``: the prefix of each module of that release as Particle published it (``moduleStartAddy`` and
  ``moduleEndAddy``; the size is end - start + 4). The commit of each file is named with it.
- **fixture**: a file in ``../shared/fixtures/particle-binaries`` and its row in ``EXPECTED.md``.
- **UNVERIFIED**: an estimate, with how it was made; chosen at the large end of what is plausible, so that the
  figures measured on it do not flatter the kiosk.

Every size fits its platform's flash slot (``firmware.platforms``; ``tests/test_release_sizes.py`` checks each one
against the layout of its own release).

    >>> real_size("boron", "6.1.1", "system-part1").size
    538948
    >>> real_size("boron", "6.1.1", "system-part1").source.startswith("DR 6.1.1/boron.json")
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.platforms import Platform, platform_by_name
from firmware.versions import system_version_for


@dataclass(frozen=True)
class RealSize:
    """The size in bytes of one real release module and where it comes from (``verified``: read from a real file
    or Particle's own data, not estimated)."""

    size: int
    source: str
    verified: bool = True


def _dr(release: str, platform: str, commit: str, start: int, end: int, note: str = "") -> RealSize:
    """A size from Particle's Device Restore JSON: the module's end address - start address + 4."""
    where = f"DR {release}/{platform}.json @{commit[:8]}: 0x{start:x}-0x{end:x}"
    return RealSize(end - start + 4, f"{where}; {note}" if note else where)


# The Device Restore JSON commits read (particle-iot/docs), one per file.
_C = {
    ("2.3.0", "photon"): "9301439f28ac7718463b8b264054edf5c85e022f",
    ("2.3.0", "p1"): "165034b6d878800563205bdd7d931309bf814b55",
    ("2.3.0", "electron"): "1faf2670738820e327451eec2a5d0c8d43106371",
    ("1.5.2", "photon"): "50a962e35bd9b24f35fd71a7b26091658f30d4cf",
    ("1.5.2", "boron"): "4fc2855f8400f05b0b52104ce1fe03b01e221fa2",
    ("1.5.2", "xenon"): "50a962e35bd9b24f35fd71a7b26091658f30d4cf",
    ("5.9.0", "boron"): "1e6db3dc6f9e78b477ab2700e1684ee7cd7eb762",
    ("6.1.1", "boron"): "ab9d630fae9b44f7f12359852736e27895df1bd7",
    ("6.1.1", "argon"): "ab9d630fae9b44f7f12359852736e27895df1bd7",
    ("6.1.1", "bsom"): "cfc39765abc642b49e99649a718b4522efad806d",
    ("6.1.1", "b5som"): "ab9d630fae9b44f7f12359852736e27895df1bd7",
    ("6.1.1", "esomx"): "4aadf43b33c203e3a58dc6399ea5442063f193ba",
    ("6.1.1", "tracker"): "ab9d630fae9b44f7f12359852736e27895df1bd7",
    ("5.0.0", "p2"): "287eecb4ed318a80589de4e89819661e5209d297",
    ("5.9.0", "p2"): "1e6db3dc6f9e78b477ab2700e1684ee7cd7eb762",
    ("6.2.0", "p2"): "199d20205d17031d11a94f47a864af6c8b0077d4",
    ("6.2.0", "msom"): "199d20205d17031d11a94f47a864af6c8b0077d4",
    ("6.2.0", "trackerm"): "199d20205d17031d11a94f47a864af6c8b0077d4",
}


def _rows(release: str, platform: str, **parts: tuple[int, int]) -> dict[tuple[str, str, str], RealSize]:
    commit = _C[(release, platform)]
    return {(platform, release, part.replace("_", "-")): _dr(release, platform, commit, *span)
            for part, span in parts.items()}  # fmt: skip


#: The same SoftDevice module (S140, module version 202) in every Gen3 release from 1.5.2 to 6.1.1 that was read:
#: 0x1000-0x265d4 in DR 1.5.2/boron, 1.5.2/xenon, 5.9.0/boron, 6.1.1/argon, boron, bsom, b5som, esomx and tracker.
#: (The fixture argon-softdevice-6.1.1.bin, 151,080 bytes, is an older S140, module version 182.)
_SOFTDEVICE_SPAN = (0x1000, 0x265D4)

#: (platform, release, part) -> the size of that release's module. Parts are named as Particle names the release
#: files (``<platform>-<part>@<release>.bin``): on the Electron, "system-part1" is index 3 at 0x08060000,
#: "system-part2" index 1 and "system-part3" index 2 (DR 2.3.0/electron.json says so).
SIZES: dict[tuple[str, str, str], RealSize] = {
    # --- Gen2, stm32f2xx ----------------------------------------------------------------------------
    **_rows("2.3.0", "photon", bootloader=(0x8000000, 0x8003B10), system_part1=(0x8020000, 0x805AF54),
            system_part2=(0x8060000, 0x809FB74), tinker=(0x80A0000, 0x80A315C)),
    **_rows("2.3.0", "p1", bootloader=(0x8000000, 0x8003DA4), system_part1=(0x8020000, 0x805AF54),
            system_part2=(0x8060000, 0x809FBF4), tinker=(0x80A0000, 0x80A31AC)),
    **_rows("2.3.0", "electron", bootloader=(0x8000000, 0x8003D34), system_part1=(0x8060000, 0x80755A8),
            system_part2=(0x8020000, 0x803BD58), system_part3=(0x8040000, 0x805E0A8), tinker=(0x8080000, 0x808285C)),
    **_rows("1.5.2", "photon", bootloader=(0x8000000, 0x8003BE4), system_part1=(0x8020000, 0x805A3B4),
            system_part2=(0x8060000, 0x809FD44), tinker=(0x80A0000, 0x80A352C)),
    # --- Gen3, nrf52840 -----------------------------------------------------------------------------
    **_rows("1.5.2", "boron", bootloader=(0xF4000, 0xFE428), softdevice=_SOFTDEVICE_SPAN,
            system_part1=(0x30000, 0xCF710), tinker=(0xD4000, 0xD6E5C)),
    **_rows("1.5.2", "xenon", bootloader=(0xF4000, 0xFE3D8), softdevice=_SOFTDEVICE_SPAN,
            system_part1=(0x30000, 0xC1BC8), tinker=(0xD4000, 0xD6CEC)),
    **_rows("5.9.0", "boron", bootloader=(0xF4000, 0xFF442), softdevice=_SOFTDEVICE_SPAN,
            system_part1=(0x30000, 0xB3B48), tinker=(0xB4000, 0xB621E)),
    **_rows("6.1.1", "boron", bootloader=(0xF4000, 0xFFBD6), softdevice=_SOFTDEVICE_SPAN,
            system_part1=(0x30000, 0xB3940), tinker=(0xB4000, 0xB5C5A)),
    **_rows("6.1.1", "argon", bootloader=(0xF4000, 0xFFBD6), softdevice=_SOFTDEVICE_SPAN,
            system_part1=(0x30000, 0xAC400), tinker=(0xB4000, 0xB5C3E)),
    **_rows("6.1.1", "bsom", bootloader=(0xF4000, 0xFFBF6), softdevice=_SOFTDEVICE_SPAN,
            system_part1=(0x30000, 0xB3A80), tinker=(0xB4000, 0xB5CB6)),
    **_rows("6.1.1", "b5som", bootloader=(0xF4000, 0xFFBD6), softdevice=_SOFTDEVICE_SPAN,
            system_part1=(0x30000, 0xB2628), tinker=(0xB4000, 0xB5CB6)),
    **_rows("6.1.1", "esomx", bootloader=(0xF4000, 0xFFBE6), softdevice=_SOFTDEVICE_SPAN,
            system_part1=(0x30000, 0xB37C8), tinker=(0xB4000, 0xB5C7E)),
    # The Tracker's release carries Tracker Edge, not Tinker, as its application (0xb4000-0xd5f68, 139,112 bytes);
    # the kiosk's Tinker for it is sized as the Boron's. Its NCP (ESP32, module version 7) is in the same file.
    **_rows("6.1.1", "tracker", bootloader=(0xF4000, 0xFFCF6), softdevice=_SOFTDEVICE_SPAN,
            system_part1=(0x30000, 0xB3D38), ncp_firmware=(0x0, 0xD30CC)),
    # --- rtl872x (P2 / Photon 2, M-SoM, Tracker M) ----------------------------------------------------
    **_rows("5.0.0", "p2", bootloader=(0x8004000, 0x8010D48), prebootloader_part1=(0x8014000, 0x8018C88),
            system_part1=(0x8060000, 0x814D142), tinker=(0x85F4000, 0x85FFFFC)),
    **_rows("5.9.0", "p2", bootloader=(0x8004000, 0x8011C20), prebootloader_part1=(0x8014000, 0x8027560),
            system_part1=(0x8060000, 0x8189104), tinker=(0x85F4000, 0x85FFFFC)),
    **_rows("6.2.0", "p2", bootloader=(0x8004000, 0x8012390), prebootloader_part1=(0x8014000, 0x8027560),
            system_part1=(0x8060000, 0x81899E4), tinker=(0x85F4000, 0x85FFFFC)),
    **_rows("6.2.0", "msom", bootloader=(0x8004000, 0x80123F0), prebootloader_part1=(0x8014000, 0x80275FC),
            system_part1=(0x8060000, 0x819D168), tinker=(0x85F2000, 0x85FFFFC)),
    **_rows("6.2.0", "trackerm", bootloader=(0x8004000, 0x8012440), prebootloader_part1=(0x8014000, 0x8027618),
            system_part1=(0x8060000, 0x819D080), tinker=(0x85F4000, 0x85FFFFC)),
    # --- what the Device Restore data does not carry ----------------------------------------------------
    ("argon", "6.1.1", "ncp-firmware"): RealSize(
        829_248, "fixture argon-ncp-firmware-0.0.5-ota.bin (EXPECTED.md: 829248 bytes, NCP firmware 0 version 5, "
        "0x0-0xca73c): the Argon's ESP32 NCP firmware, which Device OS releases do not change"),
    ("p2", "6.2.0", "prebootloader-mbr"): RealSize(
        8_192, "UNVERIFIED: the module's own bound, 0x08000000-0x08002000 (maximum_size 0x2000 in device-os "
        "hal/src/rtl872x/ota_module_bounds.c, which request 90 reports as max_size; the flash region of "
        "module-format.md 3.3 is 16 KB, but Device OS accepts no MBR module larger than its bound); the encrypted "
        "MBR module is in no Device Restore JSON and no fixture, so it is sized at that bound", verified=False),
}  # fmt: skip

#: The platform and release whose sizes stand for a family where a platform's own are not in SIZES.
FAMILY_REFERENCE = {"stm32f2xx": ("photon", "2.3.0"), "nrf52840": ("boron", "6.1.1"), "rtl872x": ("p2", "6.2.0")}
#: Parts one platform of a family has and its reference lacks: where to take their size from instead.
PART_REFERENCE = {"ncp-firmware": ("argon", "6.1.1"), "prebootloader-mbr": ("p2", "6.2.0")}
#: The release file's name of the user part the kiosk writes: Tinker (the layout calls its slot "user-part").
_SLOT_NAMES = {"tinker": "user-part"}


def _version(release: str) -> int:
    version = system_version_for(release)
    if version is not None:
        return version
    major, minor, patch = (int("".join(c for c in x if c.isdigit()) or 0) for x in (release.split(".") + ["0"] * 3)[:3])
    return major * 1000 + minor * 100 + patch


def room(platform: Platform, release: str, part: str) -> int | None:
    """The most bytes ``part`` may have on ``platform`` under ``release``: the largest slot of that name the
    release uses (slots that say which releases keep a module there are taken at their word); None where the
    module lives on another chip (NCP firmware) or the layout has no such slot."""
    name = _SLOT_NAMES.get(part, part)
    version = _version(release)
    sizes = []
    for slot in platform.layout:
        if slot.name != name or slot.end <= slot.start:
            continue
        used_by = getattr(slot, "used_by", None)
        if used_by is not None and not used_by(version):
            continue
        sizes.append(slot.end - slot.start)
    return max(sizes, default=None)


def real_size(platform: str | Platform, release: str, part: str) -> RealSize:
    """The size of ``part`` (a release file's name: bootloader, softdevice, system-part1, tinker, ...) of Device OS
    ``release`` for ``platform``.

    Where that exact module is not in SIZES, the first of these that fits the platform's slot for the release
    (``room``) stands in, and the source says whose size it is: the family's reference platform (FAMILY_REFERENCE)
    in the same release, then the same platform in its nearest release, then the reference platform in its
    nearest, then PART_REFERENCE. Raises KeyError when none is known or none fits."""
    p = platform if isinstance(platform, Platform) else platform_by_name(platform)
    exact = SIZES.get((p.name, release, part))
    if exact is not None:
        return exact
    reference = FAMILY_REFERENCE.get(p.mcu.name, (p.name, release))[0]
    wanted = _version(release)

    def nearest(name: str) -> list[tuple[str, str]]:
        releases = sorted({r for (n, r, q) in SIZES if n == name and q == part},
                          key=lambda r: (abs(_version(r) - wanted), -_version(r)))  # fmt: skip
        return [(name, r) for r in releases]

    candidates = [(reference, release), *nearest(p.name), *nearest(reference), PART_REFERENCE.get(part)]
    limit = room(p, release, part)
    for candidate in candidates:
        found = SIZES.get((*candidate, part)) if candidate else None
        if found is not None and (limit is None or found.size <= limit):
            name, of = candidate
            return RealSize(found.size, f"as {name} {of}'s {part} ({found.source})", found.verified)
    raise KeyError(f"no real size of a {p.name} {part} that fits its {release} layout (firmware/release_sizes.py)")
