"""The 13 documented real binaries: every value ../shared/fixtures/particle-binaries/EXPECTED.md gives.

Each row of EXPECTED.md is transcribed by hand into one dict below (values as the document writes
them; ``None`` where the document says -1). Where the document details extensions, security mode,
assets or the product-firmware CLI output, a dedicated test checks them. The CLI e2e CRCs of
module-format.md section 4 ("Repo test assertions") are checked for the corpus files they name.
"""

from __future__ import annotations

import hashlib
import json
import zlib

import pytest

from firmware.module import ExtensionType, Module, ModuleFlag, parse_module
from firmware.platforms import FUNCTION_PHRASES, RTL_IMAGE_SIGNATURE, Function
from tests.fixture_paths import CORPUS, FIXTURES, fixture_bytes

NONE = (0, 0, 0)

# One dict per EXPECTED.md row. ``file_sha`` is the file SHA-256 prefix the document gives next to the
# size; ``uid`` the fwUniqueId (suffix SHA-256) where given; ``sha_range`` follows the "Independent check"
# paragraph (SHA over [0, len-38) for all but the three named exceptions).
EXPECTED: list[dict] = [
    {
        "file": "040_system-part1.bin",
        "size": 248744,
        "file_sha": "049ac719",
        "platform": 6,
        "platform_name": "photon",
        "function": Function.SYSTEM_PART,
        "index": 1,
        "version": 1,
        "start": 0x8020000,
        "end": 0x805CBA4,
        "prefix_offset": 388,
        "flags": 0,
        "reserved": 0,
        "dep1": NONE,
        "dep2": NONE,
        "suffix_size": 36,
        "product": (None, None),
        "crc": "5d7db471",
        "crc_ok": True,
        "sha_range": "module",
        "uid": "ecb6acb4cf75ca04169f2214a24c470516cabe91683ac3664bdd174c4bb50386",
    },
    {
        "file": "044_Core_Tinker_P5_V10.bin",
        "size": 88292,
        "file_sha": "2daeb990",
        "platform": 0,
        "platform_name": "core",
        "function": Function.MONO_FIRMWARE,
        "index": 0,
        "version": 0,
        "start": 0x8005000,
        "end": 0x801A8E0,
        "prefix_offset": 268,
        "flags": 0,
        "reserved": 0,
        "dep1": NONE,
        "dep2": NONE,
        "suffix_size": 40,
        "product": (5, 10),
        "crc": "a24d58c0",
        "crc_ok": True,
        "sha_range": "module",
    },
    {
        "file": "RC4_bootloader_pad_BM-09.bin",
        "size": 16384,
        "file_sha": "3f832610",
        "platform": 6,
        "platform_name": "photon",
        "function": Function.BOOTLOADER,
        "index": 0,
        "version": 2,
        "start": 0x8000000,
        "end": 0x8003F98,
        "prefix_offset": 388,
        "flags": 0,
        "reserved": 0,
        "dep1": NONE,
        "dep2": NONE,
        "suffix_size": 65535,
        "product": (65535, 65535),
        "crc": "ffffffff",
        "crc_ok": False,
        "sha_range": None,
        "uid": "ff" * 32,
    },
    {
        "file": "080_bootloader-xenon.bin",
        "size": 33128,
        "file_sha": "4104d67b",
        "platform": 14,
        "platform_name": "xenon",
        "function": Function.BOOTLOADER,
        "index": 0,
        "version": 211,
        "start": 0xF4000,
        "end": 0xFC164,
        "prefix_offset": 512,
        "flags": 0,
        "reserved": 0,
        "dep1": NONE,
        "dep2": NONE,
        "suffix_size": 40,
        "product": (65535, 65535),
        "crc": "dea1ed2c",
        "crc_ok": True,
        "sha_range": "module",
    },
    {
        "file": "080_user-part-xenon.bin",
        "size": 3312,
        "file_sha": "da112f6b",
        "platform": 14,
        "platform_name": "xenon",
        "function": Function.USER_PART,
        "index": 1,
        "version": 5,
        "start": 0xD4000,
        "end": 0xD4CEC,
        "prefix_offset": 0,
        "flags": 0,
        "reserved": 0,
        "dep1": (4, 1, 312),
        "dep2": NONE,
        "suffix_size": 40,
        "product": (65535, 65535),
        "crc": "ad33492b",
        "crc_ok": True,
        "sha_range": "module",
    },
    {
        "file": "argon-softdevice-6.1.1.bin",
        "size": 151080,
        "file_sha": "d67f3672",
        "platform": 12,
        "platform_name": "argon",
        "function": Function.RADIO_STACK,
        "index": 0,
        "version": 182,
        "start": 0x1000,
        "end": 0x25E24,
        "prefix_offset": 0,
        "flags": ModuleFlag.DROP_MODULE_INFO,
        "reserved": 0,
        "dep1": (4, 1, 1300),
        "dep2": (2, 0, 311),
        "suffix_size": 36,
        "product": (None, None),
        "crc": "64d6d713",
        "crc_ok": True,
        "sha_range": "module",
    },
    {
        "file": "argon-ncp-firmware-0.0.5-ota.bin",
        "size": 829248,
        "file_sha": "1f06fe03",
        "platform": 12,
        "platform_name": "argon",
        "function": Function.NCP_FIRMWARE,
        "index": 0,
        "version": 5,
        "start": 0x0,
        "end": 0xCA73C,
        "prefix_offset": 0,
        "flags": 0,
        "reserved": 33,  # mcu_target = PLATFORM_NCP_ESP32 (0x21)
        "dep1": NONE,
        "dep2": NONE,
        "suffix_size": 36,
        "product": (None, None),
        "crc": "f1e8f272",
        "crc_ok": True,
        "sha_range": "payload",  # create_module.py hashes [24, len-40) only
    },
    {
        "file": "p2-user-part.bin",
        "size": 8192,
        "file_sha": "0257daa2",
        "platform": 32,
        "platform_name": "p2",
        "function": Function.USER_PART,
        "index": 1,
        "version": 6,
        "start": 0x85FE000,
        "end": 0x85FFFFC,
        "prefix_offset": 0,
        "flags": 0,
        "reserved": 0,
        "dep1": (4, 1, 5001),
        "dep2": NONE,
        "suffix_size": 62,
        "product": (32, 48879),
        "crc": "0e3d4f63",
        "crc_ok": True,
        "sha_range": "module",
        "uid": "23b745ac727531a5d1278d32266fbb92c48150ed057c88c9bdebea962c06515d",
    },
    {
        "file": "p2-user-part-prefix-extensions.bin",
        "size": 49264,
        "file_sha": "eb577744",
        "platform": 32,
        "platform_name": "p2",
        "function": Function.USER_PART,
        "index": 1,
        "version": 6,
        "start": 0x85F3F90,
        "end": 0x85FFFFC,
        "prefix_offset": 0,
        "flags": ModuleFlag.PREFIX_EXTENSIONS,
        "reserved": 0,
        "dep1": (4, 1, 5300),
        "dep2": NONE,
        "suffix_size": 62,
        "product": (32, 4),
        "crc": "53a6df7b",
        "crc_ok": True,
        "sha_range": "module",
        "uid": "a0485beefdd9a2e5c6a5f53ed37d3418defa750cc41b1e2c324759010bfedfd8",
    },
    {
        "file": "p2-bootloader-protected.bin",
        "size": 53529,
        "file_sha": "42f0bff2",
        "platform": 32,
        "platform_name": "p2",
        "function": Function.BOOTLOADER,
        "index": 0,
        "version": 2400,
        "start": 0x8004000,
        "end": 0x8011115,
        "prefix_offset": 32,
        "flags": 0,
        "reserved": 0,
        "dep1": (2, 2, 7),
        "dep2": NONE,
        "suffix_size": 67,
        "product": (65535, 65535),
        "crc": "7334a9fe",
        "crc_ok": True,
        "sha_range": "module",
    },
    {
        "file": "tracker-user-part-extensions.bin",
        "size": 7024,
        "file_sha": "3882cdf9",
        "platform": 26,
        "platform_name": "tracker",
        "function": Function.USER_PART,
        "index": 2,
        "version": 6,
        "start": 0xB4000,
        "end": 0xB5B6C,
        "prefix_offset": 0,
        "flags": 0,
        "reserved": 0,
        "dep1": (4, 1, 5301),
        "dep2": NONE,
        "suffix_size": 190,
        "product": (26, 3),
        "crc": "bb3d2c74",
        "crc_ok": True,
        "sha_range": "module",
    },
    {
        "file": "unknown.bin",
        "size": 8256,
        "file_sha": "32623a9a",
        "platform": 129,
        "platform_name": "unknown platform 129",
        "function": 129,
        "index": 99,
        "version": 9999,
        "start": 0x20003000,
        "end": 0x2000503C,
        "prefix_offset": 16,
        "flags": 0x80,
        "reserved": 129,
        "dep1": (129, 99, 999),
        "dep2": (129, 29, 129),
        "suffix_size": 36,
        "product": (None, None),
        "crc": "d96cf003",
        "crc_ok": True,
        "sha_range": None,  # synthetic: the SHA field matches no range
    },
    {
        "file": "product_firmware.bin",
        "size": 19884,
        "file_sha": "e492ebb6",
        "platform": 10,
        "platform_name": "electron",
        "function": Function.USER_PART,
        "index": 1,
        "version": 6,
        "start": 0x8080000,
        "end": 0x8084DA8,
        "prefix_offset": 0,
        "flags": 0,
        "reserved": 0,
        "dep1": (4, 2, 1201),
        "dep2": NONE,
        "suffix_size": 40,
        "product": (8178, 13),
        "crc": "e309c618",
        "crc_ok": True,
        "sha_range": "module",
        "uid": "3200f1aa2d533b53d9ea892f97153207daf1dc6a401714ce4e5e9c47a85529ce",
    },
]
BY_FILE = {row["file"]: row for row in EXPECTED}

_parsed: dict[str, Module] = {}


def parsed(name: str) -> Module:
    if name not in _parsed:
        _parsed[name] = parse_module(fixture_bytes(name))
    return _parsed[name]


def dep(d) -> tuple[int, int, int]:
    return (d.function, d.index, d.version)


def test_the_table_covers_exactly_the_13_documented_files():
    on_disk = sorted(p.name for p in FIXTURES.glob("*.bin"))
    assert len(EXPECTED) == 13
    assert sorted(BY_FILE) == on_disk
    text = (FIXTURES / "EXPECTED.md").read_text()
    for name in BY_FILE:
        assert f"| {name} (" in text


@pytest.mark.parametrize("row", EXPECTED, ids=[r["file"] for r in EXPECTED])
def test_file_identity(row):
    data = (FIXTURES / row["file"]).read_bytes()
    assert len(data) == row["size"]
    assert hashlib.sha256(data).hexdigest().startswith(row["file_sha"])


@pytest.mark.parametrize("row", EXPECTED, ids=[r["file"] for r in EXPECTED])
def test_prefix_fields(row):
    m = parsed(row["file"])
    assert m.platform_id == row["platform"]
    assert m.platform_name == row["platform_name"]
    assert m.function == row["function"]
    assert m.index == row["index"]
    assert m.version == row["version"]
    assert (m.start_address, m.end_address) == (row["start"], row["end"])
    assert m.prefix_offset == row["prefix_offset"]
    assert m.flags == row["flags"]
    assert m.reserved == row["reserved"]
    assert dep(m.dependencies[0]) == row["dep1"]
    assert dep(m.dependencies[1]) == row["dep2"]


@pytest.mark.parametrize("row", EXPECTED, ids=[r["file"] for r in EXPECTED])
def test_suffix_fields_and_integrity(row):
    m = parsed(row["file"])
    assert m.size == row["size"]
    assert m.suffix_size == row["suffix_size"]
    assert (m.product_id, m.product_version) == row["product"]
    assert f"{m.crc32:08x}" == row["crc"]
    assert m.crc_ok is row["crc_ok"]
    assert m.sha_range == row["sha_range"]
    assert m.sha_ok is (row["sha_range"] is not None)
    if "uid" in row:
        assert m.sha256.hex() == row["uid"]


@pytest.mark.parametrize("row", EXPECTED, ids=[r["file"] for r in EXPECTED])
def test_independent_check_size_and_crc(row):
    """EXPECTED.md: every file but RC4_BM-09 has len == end - start + 4 and a big-endian zlib CRC-32 tail."""
    data = fixture_bytes(row["file"])
    m = parsed(row["file"])
    consistent = row["file"] != "RC4_bootloader_pad_BM-09.bin"
    assert (len(data) == m.end_address - m.start_address + 4) is consistent
    assert m.crc_computed == zlib.crc32(data[:-4])
    assert (zlib.crc32(data[:-4]).to_bytes(4, "big") == data[-4:]) is consistent
    assert m.crc_ok is consistent


@pytest.mark.parametrize("row", EXPECTED, ids=[r["file"] for r in EXPECTED])
def test_independent_check_sha_over_module(row):
    """EXPECTED.md: SHA-256(file[:-38]) == file[-38:-6] for all but RC4_BM-09, the NCP file and unknown.bin."""
    data = fixture_bytes(row["file"])
    exceptions = ("RC4_bootloader_pad_BM-09.bin", "argon-ncp-firmware-0.0.5-ota.bin", "unknown.bin")
    holds = row["file"] not in exceptions
    assert (hashlib.sha256(data[:-38]).digest() == data[-38:-6]) is holds
    assert (parsed(row["file"]).sha_range == "module") is holds
    assert parsed(row["file"]).sha256 == data[-38:-6]


@pytest.mark.parametrize("row", EXPECTED, ids=[r["file"] for r in EXPECTED])
def test_sound_files_report_no_problems(row):
    m = parsed(row["file"])
    broken = row["file"] in ("RC4_bootloader_pad_BM-09.bin", "unknown.bin")
    assert bool(m.problems) is broken
    assert m.sound is not broken


@pytest.mark.parametrize("row", EXPECTED, ids=[r["file"] for r in EXPECTED])
def test_to_json_carries_the_expected_values(row):
    j = json.loads(json.dumps(parsed(row["file"]).to_json()))
    assert j["platform_id"] == row["platform"]
    assert j["index"] == row["index"]
    assert j["version"] == row["version"]
    assert j["start_address"] == row["start"]
    assert j["prefix_offset"] == row["prefix_offset"]
    assert j["mcu_target"] == row["reserved"]
    assert j["suffix_size"] == row["suffix_size"]
    assert j["crc32"] == row["crc"]
    assert j["crc_ok"] is row["crc_ok"]
    assert [(d["index"], d["version"]) for d in j["dependencies"]] == [
        (d[1], d[2]) for d in (row["dep1"], row["dep2"]) if d != NONE
    ]


# --- extension details ---------------------------------------------------------------------------


def ext_summary(exts) -> list[tuple[int, int, int]]:
    return [(e.type, e.length, e.offset) for e in exts]


def test_p2_user_part_suffix_extensions():
    m = parsed("p2-user-part.bin")
    assert m.prefix_extensions == ()
    assert ext_summary(m.suffix_extensions) == [
        (ExtensionType.DYNAMIC_LOCATION, 16, 8126),
        (ExtensionType.PRODUCT_DATA, 10, 8142),
    ]
    location, product = (e.fields() for e in m.suffix_extensions)
    assert location == {
        "module_start_address": 0x85FE000,
        "dynalib_load_address": 0x85FE088,
        "dynalib_start_address": 0x23FEE48,
    }
    assert product == {"product_id": 32, "product_version": 48879}
    assert m.raw_product_data is False


def test_p2_user_part_prefix_extensions():
    m = parsed("p2-user-part-prefix-extensions.bin")
    assert m.prefix_size == 136
    assert m.body_start == 136
    assert ext_summary(m.prefix_extensions) == [
        (ExtensionType.ASSET_DEPENDENCY, 58, 24),
        (ExtensionType.ASSET_DEPENDENCY, 49, 82),
        (ExtensionType.END, 5, 131),
    ]
    first, second, end = (e.fields() for e in m.prefix_extensions)
    assert first["name"] == "103_system-part1.bin"
    assert first["hash_type"] == 0
    assert first["hash"].startswith("124c92ed") and first["hash"].endswith("547e0")
    assert len(first["hash"]) == 64
    assert second["name"] == "unknown.bin"
    assert second["hash"].startswith("7bb001b0") and second["hash"].endswith("a03d2e")
    assert end == {"padding": 1}
    assert [a["name"] for a in m.asset_dependencies] == ["103_system-part1.bin", "unknown.bin"]


def test_p2_user_part_prefix_extensions_suffix_extensions():
    m = parsed("p2-user-part-prefix-extensions.bin")
    assert ext_summary(m.suffix_extensions) == [
        (ExtensionType.DYNAMIC_LOCATION, 16, 49198),
        (ExtensionType.PRODUCT_DATA, 10, 49214),
    ]
    location, product = (e.fields() for e in m.suffix_extensions)
    assert location == {
        "module_start_address": 0x85F3F90,
        "dynalib_load_address": 0x85F4088,
        "dynalib_start_address": 0x23F51F8,
    }
    assert location["module_start_address"] == m.start_address
    assert product == {"product_id": 32, "product_version": 4}


def test_p2_bootloader_protected_security_mode_and_suffix_order():
    data = fixture_bytes("p2-bootloader-protected.bin")
    m = parsed("p2-bootloader-protected.bin")
    assert data[:8] == RTL_IMAGE_SIGNATURE == bytes.fromhex("99999696 3fcc66fc")
    assert m.prefix_found_by == "image-header"
    assert m.security_mode == "protected"
    assert ext_summary(m.suffix_extensions) == [
        (ExtensionType.SECURITY_MODE, 5, 53458),
        (ExtensionType.DYNAMIC_LOCATION, 16, 53463),
        (ExtensionType.PRODUCT_DATA, 10, 53479),
    ]
    security, location, product = (e.fields() for e in m.suffix_extensions)
    assert security == {"mode": "protected", "certificate_length": 0}
    assert location == {"module_start_address": 0x8004000, "dynalib_load_address": 0, "dynalib_start_address": 0}
    assert product == {"product_id": 0xFFFF, "product_version": 0xFFFF}
    assert m.to_json()["security_mode"] == "protected"


def test_tracker_user_part_asset_dependencies():
    m = parsed("tracker-user-part-extensions.bin")
    assert m.asset_dependencies == [
        {
            "hash_type": 0,
            "hash": "3a2c00b0b9b37f02b266bd75b2758638c40a7ab400353fea3ca9169552f26f63",
            "name": "btgap.a",
        },
        {
            "hash_type": 0,
            "hash": "28c040ee247e13f230835be0a8fb50ca95b4b5548a7256c862db09140e01ef6b",
            "name": "cat.jpg",
        },
        {
            "hash_type": 0,
            "hash": "3a54bbfb74733253df7adcc8a0e475e934c18636f44f7c94dbeb056a98d9b563",
            "name": "km4_image2_all.bin",
        },
    ]


def test_tracker_user_part_assets_live_in_the_suffix():
    m = parsed("tracker-user-part-extensions.bin")
    assert m.prefix_extensions == ()
    assert [(e.type, e.length) for e in m.suffix_extensions] == [
        (ExtensionType.ASSET_DEPENDENCY, 45),
        (ExtensionType.ASSET_DEPENDENCY, 45),
        (ExtensionType.ASSET_DEPENDENCY, 56),
        (ExtensionType.END, 4),
    ]
    assert m.suffix_extensions[0].offset == 6830 == m.suffix_start
    # nRF52 style: END, then product id and version standing on their own
    assert m.raw_product_data is True
    assert m.security_mode is None


def test_argon_ncp_reserved_byte_and_payload_hash():
    data = fixture_bytes("argon-ncp-firmware-0.0.5-ota.bin")
    m = parsed("argon-ncp-firmware-0.0.5-ota.bin")
    assert m.reserved == 33 == 0x21
    assert m.to_json()["mcu_target"] == 33
    assert m.sha_range == "payload"
    assert m.sha256 == hashlib.sha256(data[24 : len(data) - 40]).digest()
    assert m.sha256 != hashlib.sha256(data[:-38]).digest()


def test_unknown_bin_is_parsed_but_flagged():
    m = parsed("unknown.bin")
    assert m.reserved == 129
    assert m.flags == 0x80
    assert m.flag_names == ["unknown-0x80"]
    assert m.sha_ok is False
    assert m.crc_ok is True
    assert m.prefix_found_by == "search"
    text = " ".join(m.problems)
    assert "unknown platform id 129" in text
    assert "unknown module function 129" in text
    assert "unknown flag bits 0x80" in text
    assert "SHA-256" in text


def test_rc4_bootloader_pad_bm09_is_all_ff_at_the_end():
    data = fixture_bytes("RC4_bootloader_pad_BM-09.bin")
    m = parsed("RC4_bootloader_pad_BM-09.bin")
    assert m.crc_ok is False
    assert m.crc32 == 0xFFFFFFFF
    assert m.sha256 == b"\xff" * 32
    assert m.suffix_reserved == 0xFFFF
    assert (m.suffix_size, m.product_id, m.product_version) == (0xFFFF, 0xFFFF, 0xFFFF)
    assert data[-44:] == b"\xff" * 44
    assert m.end_address - m.start_address + 4 == 16284 != len(data)
    text = " ".join(m.problems)
    assert "16284" in text and "padded" in text
    assert "CRC-32 does not match" in text
    assert "suffix size 65535" in text


def test_product_firmware_cli_values():
    """particle-cli e2e "Binary Inspect": CRC, platform, function/index/version, UUID, product, dependency."""
    m = parsed("product_firmware.bin")
    assert m.crc_ok and f"{m.crc32:08x}" == "e309c618"  # "CRC is ok (e309c618)"
    assert m.platform_name == "electron"  # "Compiled for electron"
    assert FUNCTION_PHRASES[m.function] == "an application module"
    assert (m.index, m.version) == (1, 6)  # "application module number 1 at version 6"
    assert m.sha256.hex() == "3200f1aa2d533b53d9ea892f97153207daf1dc6a401714ce4e5e9c47a85529ce"  # UUID
    assert (m.product_id, m.product_version) == (8178, 13)  # "product id 8178 at version 13"
    (only,) = m.real_dependencies
    assert FUNCTION_PHRASES[only.function] == "a system module"
    assert (only.index, only.version) == (2, 1201)  # "depends on a system module number 2 at version 1201"


# --- particle-cli e2e "Binary Inspect" values for the corpus files (module-format.md section 4) ----------

# file: (crc, function, index, version, dependency (function, index, version) or None, UUID prefix/suffix)
CLI_E2E = {
    "cli__binaries__core_tinker.bin": ("aded513e", Function.MONO_FIRMWARE, 0, 0, None, ("d7e7a22d", "0697")),
    "cli__binaries__photon_tinker.bin": ("ba4f59ab", Function.USER_PART, 1, 2, (4, 2, 1), ("2ba4e71e", "943a")),
    "cli__binaries__photon_tinker-0.4.5.bin": ("4a738441", Function.USER_PART, 1, 3, (4, 2, 6), None),
    "cli__binaries__p1_tinker.bin": ("61972e4d", Function.USER_PART, 1, 2, (4, 2, 3), None),
    "cli__binaries__p1_tinker-0.4.5.bin": ("70e7c48c", Function.USER_PART, 1, 3, (4, 2, 6), None),
    "cli__binaries__electron_tinker.bin": ("b3934494", Function.USER_PART, 1, 3, (4, 2, 10), None),
    "cli__binaries__argon_stroby.bin": ("da140931", Function.USER_PART, 1, 6, (4, 1, 1213), None),
    "cli__binaries__boron_blank.bin": ("4d02d94f", Function.USER_PART, 1, 6, (4, 1, 1213), None),
    "product_firmware.bin": ("e309c618", Function.USER_PART, 1, 6, (4, 2, 1201), ("3200f1aa", "29ce")),
}


@pytest.mark.parametrize("name", sorted(CLI_E2E))
def test_cli_e2e_binary_inspect_values(name):
    crc, function, index, version, dependency, uid = CLI_E2E[name]
    folder = FIXTURES if (FIXTURES / name).is_file() else CORPUS
    m = parse_module((folder / name).read_bytes())
    assert m.crc_ok is True
    assert f"{m.crc32:08x}" == crc
    assert (m.function, m.index, m.version) == (function, index, version)
    assert [dep(d) for d in m.real_dependencies] == ([dependency] if dependency else [])
    if uid is not None:
        assert m.sha256.hex().startswith(uid[0]) and m.sha256.hex().endswith(uid[1])
    assert m.problems == ()


def test_cli_e2e_core_tinker_is_a_core_monolith():
    m = parse_module((CORPUS / "cli__binaries__core_tinker.bin").read_bytes())
    assert m.platform_name == "core"
    assert FUNCTION_PHRASES[m.function] == "a monolithic firmware module"
    assert m.prefix_offset == 268
