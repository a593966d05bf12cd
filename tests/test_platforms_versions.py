"""The platform table, DfuSe memory maps and Device OS versions.

Facts from ../shared/reference/module-format.md section 3 and usb-serial-protocols.md sections 1.1-1.2;
version numbers from module-format.md 1.6 and cross-checked against the version-named real binaries.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from firmware.memory_map import MemoryMapError, Sector, parse_memory_map
from firmware.module import parse_module
from firmware.platforms import (
    MCUS,
    PLATFORMS,
    QUIRK_CONTROL_OUT_DATA_STAGE,
    QUIRK_NO_CONTROL_REQUESTS,
    Function,
    ModuleSlot,
    Storage,
    UnknownPlatformError,
    platform_by_id,
    platform_by_name,
    platform_by_usb,
    platform_label,
)
from firmware.versions import (
    RELEASES,
    DeviceOsVersion,
    VersionError,
    bootloader_releases,
    bootloader_version_for,
    describe_system_version,
    last_release,
    parse_device_os,
    release_name,
    release_names,
    system_version_for,
)
from tests.fixture_paths import fixture_bytes

SUPPORTED = [p for p in PLATFORMS if p.supported]
ON_USB = [p for p in PLATFORMS if p.usb_vid is not None]
K = 1024

# --- the platform table ----------------------------------------------------------------------------


def test_ids_and_names_are_unique():
    ids = [p.id for p in PLATFORMS]
    names = [p.name for p in PLATFORMS]
    assert len(ids) == len(set(ids))
    assert len(names) == len(set(names))
    assert all(name == name.lower() and " " not in name for name in names)


def test_usb_identities_are_unique():
    pairs = [(p.usb_vid, pid) for p in ON_USB for pid in (p.usb_pid_normal, p.usb_pid_dfu) if pid is not None]
    assert len(pairs) == len(set(pairs))


@pytest.mark.parametrize(
    ("platform_id", "name", "mcu", "normal", "dfu"),
    [
        (6, "photon", "stm32f2xx", 0xC006, 0xD006),
        (8, "p1", "stm32f2xx", 0xC008, 0xD008),
        (10, "electron", "stm32f2xx", 0xC00A, 0xD00A),
        (12, "argon", "nrf52840", 0xC00C, 0xD00C),
        (13, "boron", "nrf52840", 0xC00D, 0xD00D),
        (14, "xenon", "nrf52840", 0xC00E, 0xD00E),
        (15, "esomx", "nrf52840", 0xC00F, 0xD00F),
        (22, "asom", "nrf52840", 0xC016, 0xD016),
        (23, "bsom", "nrf52840", 0xC017, 0xD017),
        (24, "xsom", "nrf52840", 0xC018, 0xD018),
        (25, "b5som", "nrf52840", 0xC019, 0xD019),
        (26, "tracker", "nrf52840", 0xC01A, 0xD01A),
        (28, "trackerm", "rtl872x", 0xC01C, 0xD01C),
        (32, "p2", "rtl872x", 0xC020, 0xD020),
        (35, "msom", "rtl872x", 0xC023, 0xD023),
        (37, "electron2", "nrf52840", 0xC025, 0xD025),
        (38, "sulu", "rtl872x", 0xC026, 0xD026),
    ],
)
def test_documented_platforms(platform_id, name, mcu, normal, dfu):
    """usb-serial-protocols.md 1.1: id, name, MCU family, normal and DFU PIDs on 0x2B04."""
    p = platform_by_id(platform_id)
    assert (p.name, p.mcu.name, p.usb_vid, p.usb_pid_normal, p.usb_pid_dfu) == (name, mcu, 0x2B04, normal, dfu)
    assert p.supported


def test_particle_vid_pids_follow_the_platform_id():
    """0x2B04 platforms: normal PID 0xC0xx, DFU PID 0xD0xx, xx = platform id (newhal, id 60000, is the exception)."""
    particle = [p for p in PLATFORMS if p.usb_vid == 0x2B04 and p.id <= 0xFF]
    assert len(particle) >= 19
    for p in particle:
        assert p.usb_pid_normal == 0xC000 | p.id, p.name
        assert p.usb_pid_dfu in (0xD000 | p.id, None), p.name
    tachyon = platform_by_name("tachyon")
    assert (tachyon.usb_pid_normal, tachyon.usb_pid_dfu) == (0xC02A, None)
    newhal = platform_by_id(60000)
    assert (newhal.usb_vid, newhal.usb_pid_normal, newhal.usb_pid_dfu) == (0x2B04, 0x607D, 0x607F)


def test_core_is_on_the_old_openmoko_vid():
    core = platform_by_id(0)
    assert core.name == "core"
    assert (core.usb_vid, core.usb_pid_normal, core.usb_pid_dfu) == (0x1D50, 0x607D, 0x607F)
    assert core.mcu.name == "stm32f1xx"
    assert platform_by_usb(0x1D50, 0x607D) == (core, "normal")
    assert platform_by_usb(0x1D50, 0x607F) == (core, "dfu")
    # the same PIDs on Particle's VID are the newhal test platform, not the Core
    assert platform_by_usb(0x2B04, 0x607F)[0].name == "newhal"


def test_rtl872x_quirk_set():
    rtl = {p.id for p in PLATFORMS if p.mcu is MCUS["rtl872x"]}
    quirky = {p.id for p in PLATFORMS if QUIRK_CONTROL_OUT_DATA_STAGE in p.quirks}
    assert rtl == quirky == {28, 32, 35, 38}
    no_control = {p.name for p in PLATFORMS if QUIRK_NO_CONTROL_REQUESTS in p.quirks}
    assert no_control == {"tachyon"}
    assert {p.name for p in PLATFORMS if p.quirks} == {"trackerm", "p2", "msom", "sulu", "tachyon"}


def test_supported_platforms():
    assert {p.name for p in SUPPORTED} == {
        "core",
        "photon",
        "p1",
        "electron",
        "argon",
        "boron",
        "xenon",
        "esomx",
        "asom",
        "bsom",
        "xsom",
        "b5som",
        "tracker",
        "trackerm",
        "p2",
        "msom",
        "electron2",
        "sulu",
    }
    assert not platform_by_name("tachyon").supported  # on USB, but has no DFU and no layout


def test_system_parts_per_generation():
    assert platform_by_name("photon").system_parts == (1, 2)
    assert platform_by_name("electron").system_parts == (1, 2, 3)
    assert platform_by_name("boron").system_parts == (1,)
    assert platform_by_name("p2").system_parts == (1,)
    assert platform_by_name("core").system_parts == ()


def test_ncp_platforms():
    assert {p.name for p in PLATFORMS if p.has_ncp} == {"argon", "asom", "tracker"}
    (ncp,) = platform_by_name("argon").slots_for(Function.NCP_FIRMWARE, 0)
    assert ncp.storage is Storage.EXTERNAL_MCU
    assert ncp.fits(0, 0xCA73C)  # an NCP address is in the NCP's space: always accepted


@pytest.mark.parametrize(
    ("function", "start"),
    [(Function.MONO_FIRMWARE, 0x10C), (Function.BOOTLOADER, 0x10C), (Function.USER_PART, 0)],
)
def test_core_prefix_offsets(function, start):
    assert platform_by_name("core").mcu.prefix_offset(function) == start


def test_prefix_offsets_per_mcu():
    """module-format.md 1.1."""
    f2, nrf, rtl = MCUS["stm32f2xx"], MCUS["nrf52840"], MCUS["rtl872x"]
    assert [f2.prefix_offset(f) for f in (2, 3, 4, 5)] == [0x184, 0x184, 0x184, 0]
    assert [nrf.prefix_offset(f) for f in (2, 3, 4, 5, 7, 8)] == [0x200, 0x200, 0x200, 0, 0, 0]
    assert [rtl.prefix_offset(f) for f in (2, 3, 4, 5)] == [0x20, 0, 0, 0]
    assert MCUS["nrf51"].prefix_offset(Function.SYSTEM_PART) == 0xC0


# --- DFU alt settings cover the layout -------------------------------------------------------------


def covered(memory_map, start: int, end: int) -> bool:
    """Every byte of [start, end) lies in some sector (whatever its attributes)."""
    at = start
    for sector in memory_map.sectors_touching(start, end - start):
        if sector.start > at:
            return False
        at = max(at, sector.end)
    return at >= end


@pytest.mark.parametrize("platform", SUPPORTED, ids=[p.name for p in SUPPORTED])
def test_dfu_alt_strings_parse(platform):
    assert platform.dfu_alts
    maps = [platform.memory_map(alt) for alt in range(len(platform.dfu_alts))]
    assert all(m is not None and m.segments for m in maps)
    assert maps[0].name == "Internal Flash"
    assert platform.memory_map(len(platform.dfu_alts)) is None
    for m in maps:
        assert not m.protected
        for a, b in pairwise(m.segments):
            assert a.end <= b.start  # in address order, never overlapping


@pytest.mark.parametrize("platform", SUPPORTED, ids=[p.name for p in SUPPORTED])
def test_alt_0_covers_every_internal_slot(platform):
    internal = platform.memory_map(0)
    slots = [s for s in platform.layout if s.storage is Storage.INTERNAL]
    assert slots
    for slot in slots:
        assert covered(internal, slot.start, slot.end), f"{platform.name} {slot.name} not in alt 0"
        if slot.function == Function.BOOTLOADER:
            continue  # bootloader sectors may be read-only over DFU
        assert internal.can_write(slot.start, slot.end - slot.start), f"{platform.name} {slot.name} read-only"


def test_gen3_bootloader_region_is_partly_read_only():
    internal = platform_by_name("boron").memory_map(0)
    assert internal.can_write(0xF4000, 0x4000)
    assert not internal.can_write(0xF4000, 0xC000)  # the top 32 KB ("8*004Ka") is read-only
    assert not internal.can_write(0x0, 0x1000)  # MBR


@pytest.mark.parametrize(
    ("name", "external_size"),
    [("argon", 4), ("boron", 4), ("bsom", 4), ("b5som", 8), ("tracker", 8), ("esomx", 8)],
)
def test_gen3_external_flash_size(name, external_size):
    p = platform_by_name(name)
    assert [p.memory_map(a).name for a in range(3)] == ["Internal Flash", "DCT Flash", "External Flash"]
    external = p.memory_map(2)
    assert external.segments[0].start == 0x80000000
    assert sum(s.size for s in external.segments) == external_size * K * K


def test_alt_counts():
    assert len(platform_by_name("photon").dfu_alts) == 2
    assert platform_by_name("p1").memory_map(2).name == "Serial Flash"
    assert len(platform_by_name("p2").dfu_alts) == 2  # no alt 2 on rtl872x
    assert sum(s.size for s in platform_by_name("p2").memory_map(0).segments) == 8 * K * K


# --- USB and name lookups --------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ON_USB, ids=[p.name for p in ON_USB])
def test_platform_by_usb_round_trip(platform):
    assert platform_by_usb(platform.usb_vid, platform.usb_pid_normal) == (platform, "normal")
    if platform.usb_pid_dfu is not None:
        assert platform_by_usb(platform.usb_vid, platform.usb_pid_dfu) == (platform, "dfu")


@pytest.mark.parametrize(("vid", "pid"), [(0x2B04, 0xC0FF), (0x2B04, 0xD0FE), (0x1234, 0xC00D), (0x1D50, 0xC00D)])
def test_platform_by_usb_unknown(vid, pid):
    assert platform_by_usb(vid, pid) is None


@pytest.mark.parametrize("platform", PLATFORMS, ids=[p.name for p in PLATFORMS])
def test_platform_by_name_and_number(platform):
    assert platform_by_name(platform.name) is platform
    assert platform_by_name(platform.name.upper()) is platform
    assert platform_by_name(f"  {platform.name} ") is platform
    assert platform_by_name(str(platform.id)) is platform
    assert platform_by_id(platform.id) is platform
    assert platform_label(platform.id) == platform.name


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("photon2", "p2"),
        ("Photon-2", "p2"),
        ("E-Series", "electron"),
        ("assettracker", "tracker"),
        ("M-SoM", "msom"),
    ],
)
def test_platform_by_name_aliases(alias, name):
    assert platform_by_name(alias).name == name


@pytest.mark.parametrize("bad", ["photon3", "", "99", "boron!", "-13", "p 2"])
def test_platform_by_name_refuses_unknown_names_listing_the_known_ones(bad):
    with pytest.raises(UnknownPlatformError) as info:
        platform_by_name(bad)
    message = str(info.value)
    assert repr(bad) in message
    for name in ("photon", "boron", "p2", "msom", "tracker"):
        assert name in message
    assert "gcc" not in message  # only platforms the kiosk can flash are offered


def test_unknown_platform_error_is_a_lookup_error():
    assert issubclass(UnknownPlatformError, LookupError)
    assert platform_by_id(129) is None
    assert platform_label(129) == "unknown platform 129"


def test_module_slot_fits_boundaries():
    slot = ModuleSlot(Function.USER_PART, 1, 0x1000, 0x2000)
    assert slot.fits(0x1000, 0x1FFC)  # CRC ends exactly at the slot end
    assert not slot.fits(0x1000, 0x1FFD)  # CRC runs past it
    assert not slot.fits(0x0FFC, 0x1800)  # starts before the slot
    assert not slot.fits(0x1800, 0x1800)  # empty
    assert not slot.fits(0x1800, 0x1000)  # reversed
    assert ModuleSlot(Function.ASSET, 0, 0, 0, storage=Storage.ANYWHERE).fits(0x12345678, 0x12345679)


def test_real_user_parts_fit_their_slots():
    for name in ("p2-user-part.bin", "tracker-user-part-extensions.bin", "080_user-part-xenon.bin"):
        m = parse_module(fixture_bytes(name))
        p = platform_by_id(m.platform_id)
        assert p.slot_for_module(m.function, m.index, m.start_address, m.end_address) is not None, name
    largest = parse_module(fixture_bytes("tracker-max-size@5.5.0-rc.1.bin"))  # 2 bytes short of the limit
    slot = platform_by_id(26).slot_for_module(5, 2, largest.start_address, largest.end_address)
    assert slot is not None and largest.end_address + 4 == 0xF3FFE == slot.end - 2
    assert platform_by_id(26).slot_for_module(5, 2, largest.start_address, largest.end_address + 4) is None


# --- memory maps -----------------------------------------------------------------------------------

GEN3_INTERNAL = "@Internal Flash   /0x00000000/1*004Ka,47*004Kg,192*004Kg,4*004Kg,4*004Kg,8*004Ka"
GEN2_INTERNAL = "@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg"
RTL_INTERNAL = "@Internal Flash   /0x08000000/2048*004Kg"
DCT_GEN3 = "@DCT Flash   /0x00000000/1*016Ke"
EXTERNAL_4MB = "@External Flash   /0x80000000/1024*004Kg"


def test_gen3_internal_flash_map():
    m = parse_memory_map(GEN3_INTERNAL)
    assert m.name == "Internal Flash"
    assert len(m.segments) == 256
    assert all(s.size == 4 * K for s in m.segments)
    assert m.segments[0] == Sector(0, 4 * K, readable=True, erasable=False, writable=False)
    assert m.segments[1] == Sector(0x1000, 4 * K, readable=True, erasable=True, writable=True)
    assert m.segments[-1].start == 0xFF000 and not m.segments[-1].writable
    assert m.segments[-9].start == 0xF7000 and m.segments[-9].writable
    assert m.segments[-1].end == 0x100000


def test_gen2_internal_flash_map():
    m = parse_memory_map(GEN2_INTERNAL)
    assert [(hex(s.start), s.size // K, s.writable) for s in m.segments[:6]] == [
        ("0x8000000", 16, False),
        ("0x8004000", 16, False),
        ("0x8008000", 16, False),
        ("0x800c000", 16, True),
        ("0x8010000", 64, True),
        ("0x8020000", 128, True),
    ]
    assert len(m.segments) == 12
    assert m.segments[-1].end == 0x08100000
    assert m.can_write(0x08020000, 0xA0000)
    assert not m.can_write(0x08000000, 0x4000)


def test_rtl_and_external_maps():
    rtl = parse_memory_map(RTL_INTERNAL)
    assert len(rtl.segments) == 2048 and rtl.segments[-1].end == 0x08800000
    external = parse_memory_map(EXTERNAL_4MB)
    assert external.name == "External Flash"
    assert external.segments[0].start == 0x80000000 and external.segments[-1].end == 0x80400000


def test_dct_letter_e_is_read_and_write_without_erase():
    (sector,) = parse_memory_map(DCT_GEN3).segments
    assert sector == Sector(0, 16 * K, readable=True, erasable=False, writable=True)
    assert not parse_memory_map(DCT_GEN3).can_write(0, 16)  # writing needs erasable sectors


@pytest.mark.parametrize(
    ("letter", "readable", "erasable", "writable"),
    [
        ("a", True, False, False),
        ("b", False, True, False),
        ("c", True, True, False),
        ("d", False, False, True),
        ("e", True, False, True),
        ("f", False, True, True),
        ("g", True, True, True),
    ],
)
def test_sector_letters(letter, readable, erasable, writable):
    (sector,) = parse_memory_map(f"@X/0x0/1*4K{letter}").segments
    assert (sector.readable, sector.erasable, sector.writable) == (readable, erasable, writable)


@pytest.mark.parametrize(
    "text",
    [
        GEN3_INTERNAL.replace("Ka", "Kb").replace("Kg", "Kb"),
        GEN2_INTERNAL.replace("Ka", "Kb").replace("Kg", "Kb"),
        RTL_INTERNAL.replace("Kg", "Kb"),
    ],
)
def test_protected_b_strings(text):
    m = parse_memory_map(text)
    assert m.protected
    assert all(s.erasable and not s.readable and not s.writable for s in m.segments)
    assert not m.can_write(m.segments[0].start, 4096)
    assert sum(s.size for s in m.segments) == sum(s.size for s in parse_memory_map(text.replace("Kb", "Kg")).segments)


def test_units_and_several_address_groups():
    m = parse_memory_map("@Mixed/0x08000000/2*512 a,1*1Mg/0x20000000/4*16Bg")
    assert [(s.start, s.size) for s in m.segments] == [
        (0x08000000, 512),
        (0x08000200, 512),
        (0x08000400, 1024 * 1024),
        (0x20000000, 16),
        (0x20000010, 16),
        (0x20000020, 16),
        (0x20000030, 16),
    ]


def test_can_write_edges():
    m = parse_memory_map("@X/0x1000/2*4Kg/0x8000/1*4Kg")
    assert m.can_write(0x1000, 0x2000)
    assert not m.can_write(0x1000, 0x2001)  # one byte into the gap
    assert not m.can_write(0x1000, 0)
    assert not m.can_write(0x0, 0x10)  # before the first sector
    assert m.can_write(0x8FFF, 1)
    assert not m.can_write(0x2FFF, 0x5002)  # spans the gap
    assert [s.start for s in m.sectors_touching(0x1FFF, 2)] == [0x1000, 0x2000]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Internal Flash/0x08000000/1*16Kg", "must start with '@'"),
        ("@Internal Flash", "needs '/ADDRESS/SECTORS' groups"),
        ("@Internal Flash/0x08000000", "needs '/ADDRESS/SECTORS' groups"),
        ("@X/0x0/1*4Kg/0x8000", "needs '/ADDRESS/SECTORS' groups"),
        ("@X/0xZZ/1*4Kg", "bad address '0xZZ'"),
        ("@X//1*4Kg", "bad address"),
        ("@X/0x0/1*4Kz", "bad sector run '1\\*4Kz'"),
        ("@X/0x0/4Kg", "bad sector run"),
        ("@X/0x0/1*4Kg,", "bad sector run ''"),
        ("@X/0x0/", "bad sector run"),
        ("@X/0x0/1*4Gg", "bad sector run"),
        ("@X/0x0/a*4Kg", "bad sector run"),
        ("", "must start with '@'"),
    ],
)
def test_malformed_memory_maps(text, reason):
    with pytest.raises(MemoryMapError, match=reason):
        parse_memory_map(text)


def test_memory_map_error_is_a_value_error():
    assert issubclass(MemoryMapError, ValueError)


# --- versions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "bootloader", "name"),
    [
        (5301, 2101, "5.3.1"),
        (6000, 3000, "6.0.0"),
        (4100, 1200, "4.1.0"),
        (5600, 2400, "5.6.0"),
        (5300, 2100, "5.3.0"),
        (5500, 2300, "5.5.0-rc.1"),
        (3101, 1100, "3.1.0-alpha.2"),
        (1502, 501, "1.5.0"),
        (1300, 311, "1.3.0-alpha.1"),
        (1213, 311, "1.2.1"),
        (1100, 300, "1.1.0-rc.1"),
        (0, None, "0.4.0"),
        (10, None, "0.4.8-rc.6"),
    ],
)
def test_release_rows(system, bootloader, name):
    """module-format.md 1.6 (Device OS system/system-versions.md)."""
    assert release_name(system) == name
    assert system_version_for(name) == system
    assert system_version_for(f"v{name}") == system
    assert bootloader_version_for(name) == bootloader
    assert describe_system_version(system) == name
    if bootloader is not None:
        assert name in bootloader_releases(bootloader)


def test_shared_module_numbers():
    assert release_names(312) == ("0.8.0-rc.13", "0.8.0-rc.14")
    assert release_name(312) == "0.8.0-rc.14"  # the newest
    assert system_version_for("0.8.0-rc.13") == system_version_for("0.8.0-rc.14") == 312
    assert release_names(4)[0] == "0.4.4-rc.1" and len(release_names(4)) == 6
    assert bootloader_releases(3000) == ("6.0.0", "6.1.0")


def test_unknown_versions():
    assert release_name(9999) is None
    assert release_names(9999) == ()
    assert system_version_for("9.9.9") is None
    assert bootloader_version_for("9.9.9") is None
    assert bootloader_releases(12345) == ()
    assert describe_system_version(6501) == "module version 6501"  # newer than the table


def test_release_table_is_data_with_a_source_for_every_row():
    """The table lives in firmware/device_os_releases.toml; every row names its source, and the source keys exist."""
    import tomllib

    from firmware.versions import RELEASE_TABLE, TABLE

    raw = tomllib.loads(RELEASE_TABLE.read_text())
    assert len(raw["releases"]) == len(TABLE) == len(RELEASES)
    keys = set(raw["sources"])
    for row in raw["releases"]:
        assert row["source"], row["name"]
        cited = {part.split()[0] for part in row["source"].split("; ")}
        assert cited <= keys, row
        # a fact no source gives is said to be UNVERIFIED, never guessed
        assert all(isinstance(v, int) or v == "UNVERIFIED" for k, v in row.items() if k not in ("name", "source"))


def test_release_table_is_current_to_6_4_x():
    """Particle's Device Restore module versions (docs device-restore/<release>/*.json): 6.3.0 is 6302, not 6300."""
    from firmware.versions import release_modules

    assert [(system_version_for(r), bootloader_version_for(r)) for r in ("6.2.1", "6.3.0", "6.3.4", "6.4.0", "6.4.1")] \
        == [(6201, 3101), (6302, 3101), (6305, 3200), (6400, 3300), (6401, 3301)]  # fmt: skip
    assert describe_system_version(6305) == "6.3.4" and parse_device_os("6.3.4") == 6305
    row = release_modules("v6.3.4")
    assert (row.prebootloader_part1, row.softdevice, row.ncp_esp32) == (11, 202, 7)
    assert row.source.startswith("DR 6.3.4")
    # from device-os tags: the P2 prebootloader-part1 the 5.6.0 bootloader fixture depends on (7), and 6.2.0's (9)
    assert release_modules("5.6.0").prebootloader_part1 == 7 and release_modules("6.2.0").prebootloader_part1 == 9
    assert release_modules("0.4.0").bootloader is None and release_modules("9.9.9") is None
    assert last_release("boron") == last_release("p2") == "6.4.1"


def test_release_table_numbers_never_decrease():
    numbers = [system for system, _, _ in RELEASES]
    assert numbers == sorted(numbers)
    names = [name for _, _, name in RELEASES]
    assert len(names) == len(set(names))
    for name in names:
        DeviceOsVersion.parse(name)  # every name is a version


@pytest.mark.parametrize(
    ("file", "release", "version_of"),
    [
        ("p2-tinker@5.3.1.bin", "5.3.1", "dependency"),
        ("tracker-tinker@5.3.1.bin", "5.3.1", "dependency"),
        ("tracker-max-size@5.5.0-rc.1.bin", "5.5.0-rc.1", "dependency"),
        ("cli__p2__tinker__tinker-5.0.0-p2.bin", "5.0.0", "dependency"),
        ("cli__trackerm__tinker__tinker-5.8.0-trackerm.bin", "5.8.0", "dependency"),
        ("cli__b5som__tinker__tinker-1.5.0-b5som.bin", "1.5.0", "dependency"),
        ("cli__tracker__tinker__tracker-tinker@1.5.4-rc.1.bin", "1.5.4-rc.1", "dependency"),
        ("cli__bsom__tinker__tinker-1.1.0-rc.1-bsom.bin", "1.1.0-rc.1", "dependency"),
        ("cli__argon__tinker__tinker-0.8.0-rc.27-argon.bin", "0.8.0-rc.27", "dependency"),
        ("cli__electron__tinker-usb-debugging__tinker-usb-debugging-0.6.0-electron.bin", "0.6.0", "dependency"),
        ("tracker-system-part1@3.1.0-alpha.2.bin", "3.1.0-alpha.2", "module"),
        ("boron-som-system-part1@1.1.0-rc.1.bin", "1.1.0-rc.1", "module"),
        ("cli__binaries__argon-system-part1@4.1.0.bin", "4.1.0", "module"),
        ("cli__esim__binaries__esim-firmware-b5som.bin", "5.2.0", "module"),
        ("p2-bootloader@5.6.0.bin", "5.6.0", "bootloader"),
        ("tracker-bootloader@5.6.0.bin", "5.6.0", "bootloader"),
    ],
)
def test_version_named_real_binaries_agree_with_the_table(file, release, version_of):
    m = parse_module(fixture_bytes(file))
    if version_of == "dependency":
        assert m.dependencies[0].function == Function.SYSTEM_PART
        assert m.dependencies[0].version == system_version_for(release)
    elif version_of == "module":
        assert m.version == system_version_for(release)
    else:
        assert m.function == Function.BOOTLOADER
        assert m.version == bootloader_version_for(release)


def test_argon_system_part_depends_on_its_release_bootloader():
    m = parse_module(fixture_bytes("cli__binaries__argon-system-part1@4.1.0.bin"))
    assert (m.dependencies[1].function, m.dependencies[1].version) == (
        Function.BOOTLOADER,
        bootloader_version_for("4.1.0"),
    )


# --- DeviceOsVersion ordering ----------------------------------------------------------------------


def test_semver_precedence_chain():
    """semver.org 11: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-alpha.beta < 1.0.0-beta < ... < 1.0.0."""
    chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1-rc.1",
        "1.0.1",
        "1.1.0",
        "2.0.0",
        "10.0.0",
    ]
    versions = [DeviceOsVersion.parse(v) for v in chain]
    for lower, higher in pairwise(versions):
        assert lower < higher, (lower, higher)
        assert higher > lower
        assert not higher < lower
    assert sorted(reversed(versions)) == versions


def test_device_os_pre_releases():
    v = DeviceOsVersion.parse
    assert v("1.5.4-rc.1") < v("1.5.4")
    assert v("1.5.4-rc.2") < v("1.5.4-rc.10")  # numerically, not as text
    assert v("5.5.0-rc.1") < v("5.5.0") < v("5.6.0")
    assert v("0.8.0-rc.27") < v("0.9.0-rc.1") < v("0.9.0") < v("1.0.0")
    assert v("3.0.1-p2.5") > v("3.0.0")
    assert v("6.0.0") > v("5.9.0")


def test_device_os_version_parse_and_str():
    v = DeviceOsVersion.parse("v1.5.4-rc.1")
    assert (v.major, v.minor, v.patch, v.prerelease) == (1, 5, 4, ("rc", 1))
    assert str(v) == "1.5.4-rc.1"
    assert str(DeviceOsVersion.parse("5.3.1")) == "5.3.1"
    assert DeviceOsVersion.parse("2.3.1+lto") == DeviceOsVersion.parse("2.3.1")  # build metadata ignored
    assert DeviceOsVersion.parse(" 6.1.0 ") == DeviceOsVersion(6, 1, 0)
    assert DeviceOsVersion.parse("1.5.4") <= DeviceOsVersion.parse("1.5.4")


@pytest.mark.parametrize("bad", ["", "5", "5.3", "5.3.x", "five", "5.3.1-", "1.2.3.4"])
def test_device_os_version_refuses_non_versions(bad):
    with pytest.raises(VersionError, match="is not a Device OS version"):
        DeviceOsVersion.parse(bad)


def test_device_os_version_does_not_compare_with_strings():
    with pytest.raises(TypeError):
        _ = DeviceOsVersion.parse("1.0.0") < "2.0.0"


# --- parse_device_os -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [("5.3.1", 5301), ("5301", 5301), (" 5.3.1 ", 5301), ("v5.3.1", 5301), ("6.0.0", 6000), ("1.5.4-rc.1", 1514)],
)
def test_parse_device_os(text, number):
    assert parse_device_os(text) == number


def test_parse_device_os_accepts_numbers_the_table_lacks():
    assert parse_device_os("6305") == 6305


def test_parse_device_os_unknown_release_gives_advice():
    with pytest.raises(VersionError) as info:
        parse_device_os("9.9.9")
    message = str(info.value)
    assert "9.9.9" in message
    assert "release table" in message
    assert "--device-os 5301" in message


@pytest.mark.parametrize("bad", ["latest", "", "5.3", "-1"])
def test_parse_device_os_refuses_non_versions_with_an_example(bad):
    with pytest.raises(VersionError, match=r"expected e\.g\. 5\.3\.1"):
        parse_device_os(bad)


def test_version_error_is_a_value_error():
    assert issubclass(VersionError, ValueError)


# --- layouts by version, bootloaders by version, the releases each platform had ---------------------------


def test_nrf52840_system_part1_moved_in_6_1_2():
    """device-os hal/src/nRF52840/ota_module_bounds.c: 0x30000 at tag v6.1.1, 0x28000 on test/v6.1.2."""
    from firmware.platforms import NRF_APP_CODE_MOVED

    boron = platform_by_name("boron")
    assert NRF_APP_CODE_MOVED == system_version_for("6.1.2") == 6102
    where = {r: boron.slots_for(Function.SYSTEM_PART, 1, system_version_for(r))[0] for r in ("3.0.0", "6.1.1", "6.1.2")}
    assert {r: (hex(s.start), hex(s.end)) for r, s in where.items()} == {
        "3.0.0": ("0x30000", "0xd4000"),
        "6.1.1": ("0x30000", "0xb4000"),
        "6.1.2": ("0x28000", "0xb4000"),
    }
    assert boron.slots_for(Function.RADIO_STACK, 0, 6101)[0].end == 0x30000
    assert boron.slots_for(Function.RADIO_STACK, 0, 6102)[0].end == 0x27000
    assert boron.slots_for(Function.MONO_FIRMWARE, 0, 6101)[0].start == 0x30000
    assert all(s.source for s in boron.layout if s.since or s.until)
    for release in (r for _s, _b, r in RELEASES if system_version_for(r) >= 1000):
        # every release has exactly one place for each module of the layout
        at = boron.layout_at(system_version_for(release))
        assert len({(s.function, s.index) for s in at}) == len(at), release


def test_rtl_and_gen2_layouts_do_not_move():
    for name in ("p2", "photon", "electron"):
        p = platform_by_name(name)
        assert all(s.since == 0 and s.until is None for s in p.layout), name


@pytest.mark.parametrize(
    ("fixture", "start"),
    [("cli__binaries__argon-system-part1@4.1.0.bin", 0x30000), ("tracker-system-part1@3.1.0-alpha.2.bin", 0x30000),
     ("boron-som-system-part1@1.1.0-rc.1.bin", 0x30000), ("080_system-part1-xenon.bin", 0x30000),
     ("040_system-part1.bin", 0x08020000)],
)  # fmt: skip
def test_the_planner_writes_a_real_system_part_where_its_header_says(fixture, start):
    from firmware.plan import DeviceFacts, Mechanism, plan_flash
    from tests.fixture_paths import fixture_bytes

    m = parse_module(fixture_bytes(fixture))
    assert m.start_address == start
    plan = plan_flash(DeviceFacts(platform_by_id(m.platform_id), mode="dfu"), [(fixture, m)])
    (step,) = [s for s in plan.steps if s.module is m]
    assert (step.mechanism, step.address) == (Mechanism.DFU, start)


def test_the_planner_writes_synthetic_system_parts_where_their_release_keeps_them():
    from firmware.plan import DeviceFacts, plan_flash
    from firmware.releases import synthetic_release

    for release, start in (("6.1.1", 0x30000), ("6.1.2", 0x28000), ("6.2.0", 0x28000)):
        modules = [(n, parse_module(d)) for n, d in synthetic_release("boron", release).items()]
        plan = plan_flash(DeviceFacts(platform_by_name("boron"), mode="dfu"), modules)
        system = next(s for s in plan.steps if "system-part1" in s.name)
        assert system.address == start == system.module.start_address, release


def test_bootloaders_by_version():
    from firmware.platforms import BOOTLOADERS, bootloader_facts

    boron, p2, photon = (platform_by_name(n) for n in ("boron", "p2", "photon"))
    rows = {v: bootloader_facts(boron, v) for v in (2700, 3000, 3001, 3002, 3100)}
    assert {v: r.dfuse_commands.hex(" ") for v, r in rows.items()} == {
        2700: "00 21 41", 3000: "00 21 41", 3001: "00 21 41 fa", 3002: "00 21 41 fa", 3100: "00 21 41 fa fb"}
    assert {v: r.protection for v, r in rows.items()} == {2700: False, 3000: True, 3001: True, 3002: True, 3100: True}
    assert [v for v, r in rows.items() if r.protection_string] == [3100]
    assert {v: r.system_search for v, r in rows.items()} == {
        2700: (0x30000,), 3000: (0x30000,), 3001: (0x30000,), 3002: (0x28000, 0x30000), 3100: (0x28000, 0x30000)}
    assert bootloader_facts(p2, 3001).dfuse_commands.hex(" ") == "00 21 41 fa"
    assert bootloader_facts(p2).system_search == (0x08060000,)
    gen2 = bootloader_facts(photon, 1006)
    assert (gen2.verifies_crc, gen2.system_search, gen2.dfuse_commands.hex(" ")) == (False, (0x08020000,), "00 21 41")
    assert bootloader_facts(platform_by_name("core")) is None
    for family, table in BOOTLOADERS.items():
        assert [r.since for r in table] == sorted(r.since for r in table), family
        assert all(r.source for r in table), family
    # the versions named are the bootloader versions of the releases that brought each change
    assert [bootloader_version_for(r) for r in ("6.0.0", "6.1.1", "6.1.2", "6.2.0")] == [3000, 3001, 3002, 3100]


def test_what_device_os_checks_at_boot():
    from firmware.platforms import boot_validated

    assert boot_validated(platform_by_name("boron")) == ((Function.BOOTLOADER, 0), (Function.SYSTEM_PART, 1))
    assert boot_validated(platform_by_name("p2")) == ((Function.BOOTLOADER, 0), (Function.SYSTEM_PART, 1))
    assert boot_validated(platform_by_name("photon")) == ((Function.BOOTLOADER, 0), (Function.SYSTEM_PART, 2))
    assert boot_validated(platform_by_name("p1")) == boot_validated(platform_by_name("photon"))
    assert boot_validated(platform_by_name("electron")) == ()


def test_the_releases_each_platform_had():
    from firmware.versions import PLATFORM_RELEASES, had_release, last_release, platform_releases

    assert last_release("xenon") == "1.5.4-rc.2" and last_release("xenon", stable=True) == "1.5.2"
    assert not had_release("xenon", "6.1.1") and not had_release("xenon", "2.0.0")
    assert last_release("photon") == last_release("electron") == "3.3.1"  # 4.0.0 dropped Gen2
    assert not had_release("photon", "4.0.0") and had_release("photon", "2.3.0")
    assert not had_release("boron", "1.0.0") and had_release("photon", "1.0.0")  # 1.0.x was Gen2 only
    assert not had_release("photon", "0.9.0") and had_release("boron", "0.9.0")  # 0.9.0 was Gen3 only
    # one-platform lines belong to their platform alone
    assert had_release("tracker", "1.5.1-tracker.2") and not had_release("boron", "1.5.1-tracker.2")
    assert had_release("p2", "3.0.1-p2.5") and not had_release("argon", "3.0.1-p2.5")
    assert not had_release("p2", "4.0.0") and had_release("p2", "5.0.0")
    assert not had_release("tracker", "1.5.2") and had_release("tracker", "1.5.4-rc.1")
    assert platform_releases("msom")[0] == "5.5.0-rc.1" and platform_releases("trackerm")[0] == "5.0.0"
    assert platform_releases("electron2") == platform_releases("sulu") == ()
    for name, spans in PLATFORM_RELEASES.items():
        assert platform_by_name(name).supported, name
        for first, last in spans:  # every span names releases of the table, in order
            assert DeviceOsVersion.parse(first) <= DeviceOsVersion.parse(last), name
            assert system_version_for(first) is not None and system_version_for(last) is not None


def test_the_demo_library_gives_each_platform_a_release_it_had(tmp_path):
    from firmware.versions import had_release, release_had
    from kiosk.demo_library import demo_library

    assert release_had("boron", "6.1.1") == "6.1.1"
    assert release_had("xenon", "6.1.1") == "1.5.2"  # Xenon support ended after 1.5.x
    lib = demo_library(["xenon", "boron", "photon"], root=tmp_path / "lib", body_size=1024)
    releases = {(e.platform, e.release) for e in lib.entries() if e.release}
    assert releases == {("xenon", "1.5.2"), ("boron", "6.1.1"), ("photon", "2.3.0")}
    assert all(had_release(platform, release) for platform, release in releases)
