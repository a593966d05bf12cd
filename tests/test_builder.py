"""The module builder: whatever it builds parses back sound, with every field it was given.

Every platform of the table and every module function but NONE, with and without compression; prefix
extensions; the suffix styles (nRF52 "product": extensions, END, raw product data; rtl872x "extensions":
TLVs ending in PRODUCT_DATA; the 36-byte base); asset modules; real files rebuilt byte for byte from
their fields; and field patches through dataclasses.replace + encode_module(seal=True).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from firmware.builder import (
    asset_dependency_extension,
    asset_module,
    build_module,
    dynamic_location_extension,
    hash_extension,
    name_extension,
    product_data_extension,
    security_mode_extension,
)
from firmware.module import (
    Dependency,
    Extension,
    ExtensionType,
    Module,
    ModuleFlag,
    _score,
    decompress_body,
    encode_module,
    find_prefix,
    parse_module,
    split_modules,
)
from firmware.platforms import MCUS, PLATFORMS, Function, platform_by_id
from tests.fixture_paths import fixture_bytes

FUNCTIONS = [f for f in Function if f != Function.NONE]
RTL = MCUS["rtl872x"]
DEPS = [(Function.SYSTEM_PART, 1, 5301), (Function.BOOTLOADER, 0, 2101)]


def body_of(size: int, seed: int = 1) -> bytes:
    """Compressible but not uniform: random words from a small vocabulary."""
    rng = random.Random(seed)
    words = [b"particle", b"module", b"\x00\x00\x00\x00", b"\xff\xff", rng.randbytes(6)]
    out = b"".join(rng.choice(words) for _ in range(size))
    return out[:size]


def expected_offset(platform_id: int, function: int) -> int:
    if function == Function.ASSET:
        return 0
    return platform_by_id(platform_id).mcu.prefix_offset(function)


def indices_for(platform, function) -> list[int]:
    return sorted({s.index for s in platform.layout if s.function == function}) or [0]


def stored_body(m: Module) -> bytes:
    return m.data[m.body_start : m.suffix_start]


def dep_tuples(m: Module) -> list[tuple[int, int, int]]:
    return [(d.function, d.index, d.version) for d in m.real_dependencies]


def comparable(m: Module) -> dict:
    """Every field but the bytes and what sealing recomputes."""
    skip = {"data", "sha256", "crc32", "crc_computed"}
    return {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name not in skip}


# --- every platform, every function ----------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS, ids=[f.name.lower() for f in FUNCTIONS])
@pytest.mark.parametrize("platform", PLATFORMS, ids=[p.name for p in PLATFORMS])
def test_round_trip_every_platform_and_function(platform, function):
    for index in indices_for(platform, function):
        for compress in (False, True):
            body = body_of(3000, seed=index)
            data = build_module(
                platform_id=platform.id,
                function=function,
                version=5301,
                index=index,
                dependencies=DEPS,
                body=body,
                compress=compress,
            )
            m = parse_module(data)
            where = f"{platform.name} {function.name} index {index} compress={compress}"
            assert m.problems == (), where
            assert m.crc_ok and m.sha_ok and m.sha_range == "module", where
            assert (m.platform_id, m.function, m.index, m.version) == (platform.id, function, index, 5301), where
            assert dep_tuples(m) == DEPS, where
            assert m.size == len(data) == m.end_address - m.start_address + 4, where

            offset = expected_offset(platform.id, function)
            assert m.prefix_offset == offset, where
            if offset == 0:
                assert m.prefix_found_by == "start", where
            elif platform.mcu is RTL:
                assert m.prefix_found_by == "image-header", where
            else:
                assert m.prefix_found_by == "vector-table", where

            slots = platform.slots_for(function, index)
            if slots and function != Function.ASSET:
                slot = platform.slot_for_module(function, index, m.start_address, m.end_address)
                assert slot is not None, f"{where}: {m.start_address:#x}-{m.end_address:#x} outside {slots}"
                if slot.grows_left:
                    assert m.end_address + 4 == slot.end, where

            if compress:
                assert m.flags & ModuleFlag.COMPRESSED, where
                assert m.compression is not None and m.compression.method == 0, where
                assert m.compression.original_size == len(body), where
                assert decompress_body(m) == body, where
                assert len(stored_body(m)) < len(body), where  # it really is deflated
            else:
                assert m.compression is None, where
                stored = stored_body(m)
                assert stored[: len(body)] == body, where
                assert stored[len(body) :] == bytes(len(stored) - len(body)), where  # grows-left padding only
                with pytest.raises(ValueError, match="not compressed"):
                    decompress_body(m)

            assert encode_module(m) == data, where
            assert encode_module(m, seal=True) == data, where


@pytest.mark.parametrize("platform", PLATFORMS, ids=[p.name for p in PLATFORMS])
def test_auto_suffix_style_follows_the_mcu(platform):
    m = parse_module(
        build_module(platform_id=platform.id, function=Function.USER_PART, version=6, product_id=77, product_version=3)
    )
    assert (m.product_id, m.product_version) == (77, 3)
    if platform.mcu is RTL:
        assert m.suffix_size == 62
        assert m.raw_product_data is False
        assert [e.type for e in m.suffix_extensions] == [ExtensionType.DYNAMIC_LOCATION, ExtensionType.PRODUCT_DATA]
        location, product = (e.fields() for e in m.suffix_extensions)
        assert location["module_start_address"] == m.start_address
        assert product == {"product_id": 77, "product_version": 3}
    else:
        assert m.suffix_size == 40
        assert m.raw_product_data is True
        assert m.suffix_extensions == ()


def test_default_indices():
    boron, photon, p2 = platform_by_id(13), platform_by_id(6), platform_by_id(32)
    assert parse_module(build_module(platform_id=boron.id, function=Function.USER_PART, version=6)).index == 2
    assert parse_module(build_module(platform_id=photon.id, function=Function.USER_PART, version=6)).index == 1
    assert parse_module(build_module(platform_id=p2.id, function=Function.SYSTEM_PART, version=6)).index == 1
    assert parse_module(build_module(platform_id=p2.id, function=Function.BOOTLOADER, version=6)).index == 0


def test_rtl_user_part_grows_left_and_ends_at_the_slot_end():
    small = parse_module(build_module(platform_id=32, function=Function.USER_PART, version=6, body_size=1000))
    large = parse_module(build_module(platform_id=32, function=Function.USER_PART, version=6, body_size=40000))
    for m in (small, large):
        assert m.end_address + 4 == 0x08600000
        assert m.start_address % 8 == 0
    assert large.start_address < small.start_address


def test_explicit_start_address_is_kept():
    m = parse_module(build_module(platform_id=13, function=Function.USER_PART, version=6, start_address=0xD4000))
    assert m.start_address == 0xD4000
    assert m.problems == ()


def test_more_than_two_dependencies_is_refused():
    with pytest.raises(ValueError, match="at most two"):
        build_module(platform_id=13, function=Function.USER_PART, version=6, dependencies=[(4, 1, 1)] * 3)


def test_dependency_objects_and_tuples_are_equivalent():
    a = build_module(platform_id=13, function=5, version=6, dependencies=[Dependency(4, 1, 6101)])
    b = build_module(platform_id=13, function=5, version=6, dependencies=[(4, 1, 6101)])
    assert a == b


def test_combined_modules_split_apart():
    first = build_module(platform_id=32, function=Function.SYSTEM_PART, version=5301, flags=ModuleFlag.COMBINED)
    second = build_module(platform_id=32, function=Function.USER_PART, version=6, dependencies=[(4, 1, 5301)])
    modules = split_modules(first + second)
    assert [(m.function, m.size) for m in modules] == [
        (Function.SYSTEM_PART, len(first)),
        (Function.USER_PART, len(second)),
    ]
    assert all(m.problems == () for m in modules)
    assert modules[0].data == first and modules[1].data == second
    head = parse_module(first + second)  # the first module only; its CRC covers its own bytes
    assert head.size == len(first) and head.crc_ok
    # without COMBINED on the first module, what follows is not another module but trailing garbage
    (alone,) = split_modules(second + first)
    assert alone.size == len(second + first)
    assert any("padded or followed by other data" in p for p in alone.problems)


# --- prefix extensions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform_id", "function"),
    [(32, Function.USER_PART), (6, Function.SYSTEM_PART), (32, Function.BOOTLOADER), (0, Function.MONO_FIRMWARE)],
)
def test_prefix_extensions(platform_id, function):
    digest = hashlib.sha256(b"asset").digest()
    exts = [name_extension("my-app"), asset_dependency_extension("cat.jpg", digest), hash_extension(digest)]
    data = build_module(platform_id=platform_id, function=function, version=6, prefix_extensions=exts)
    m = parse_module(data)
    assert m.problems == () and m.crc_ok and m.sha_ok
    assert m.flags & ModuleFlag.PREFIX_EXTENSIONS
    assert [e.type for e in m.prefix_extensions] == [
        ExtensionType.NAME,
        ExtensionType.ASSET_DEPENDENCY,
        ExtensionType.HASH,
        ExtensionType.END,
    ]
    assert list(m.prefix_extensions[:3]) == exts
    assert m.prefix_size == 24 + sum(e.length for e in exts) + 4
    assert m.body_start == m.prefix_offset + m.prefix_size
    assert m.prefix_extensions[0].offset == m.prefix_offset + 24
    assert m.name == "my-app"
    assert m.asset_dependencies == [{"hash_type": 0, "hash": digest.hex(), "name": "cat.jpg"}]
    assert encode_module(m, seal=True) == data


def test_prefix_extensions_keep_a_given_end_padding():
    padded_end = Extension(ExtensionType.END, b"\x00\x00\x00")
    m = parse_module(
        build_module(
            platform_id=32,
            function=Function.USER_PART,
            version=6,
            prefix_extensions=[name_extension("x"), padded_end],
            compress=True,
            body=b"payload" * 100,
        )
    )
    assert [e.type for e in m.prefix_extensions] == [ExtensionType.NAME, ExtensionType.END]
    assert m.prefix_extensions[-1].fields() == {"padding": 3}
    assert m.prefix_size == 24 + 5 + 7
    assert decompress_body(m) == b"payload" * 100


# --- suffix styles ---------------------------------------------------------------------------------


def test_product_style_suffix_extensions_end_then_raw_product_data():
    """nRF52 style (tracker-user-part-extensions.bin): extensions, END, then product id and version."""
    digests = [hashlib.sha256(n).digest() for n in (b"a", b"b")]
    exts = [asset_dependency_extension("a.bin", digests[0]), asset_dependency_extension("b.bin", digests[1])]
    data = build_module(
        platform_id=26,
        function=Function.USER_PART,
        version=6,
        suffix="product",
        suffix_extensions=exts,
        product_id=26,
        product_version=3,
    )
    m = parse_module(data)
    assert m.problems == ()
    assert [e.type for e in m.suffix_extensions] == [
        ExtensionType.ASSET_DEPENDENCY,
        ExtensionType.ASSET_DEPENDENCY,
        ExtensionType.END,
    ]
    assert m.raw_product_data is True
    assert (m.product_id, m.product_version) == (26, 3)
    assert m.suffix_size == 36 + sum(e.length for e in exts) + 4 + 4
    assert m.suffix_extensions[0].offset == m.suffix_start
    assert [a["name"] for a in m.asset_dependencies] == ["a.bin", "b.bin"]
    assert data[-44:-40] == bytes.fromhex("1a000300")  # pid 26, pver 3 as raw u16s


def test_product_style_security_mode_matches_tracker_protected_bootloader_layout():
    """tracker-bootloader-protected.bin: SECURITY_MODE (5) + END (4) + raw product (4) + 36 = 49."""
    m = parse_module(
        build_module(
            platform_id=26,
            function=Function.BOOTLOADER,
            version=2400,
            suffix_extensions=[security_mode_extension(True)],
            product_id=0,
            product_version=0,
        )
    )
    real = parse_module(fixture_bytes("tracker-bootloader-protected.bin"))
    assert m.suffix_size == real.suffix_size == 49
    assert [(e.type, e.length) for e in m.suffix_extensions] == [(e.type, e.length) for e in real.suffix_extensions]
    assert m.security_mode == real.security_mode == "protected"
    assert m.problems == ()


def test_extensions_style_security_mode_matches_p2_protected_bootloader_layout():
    """p2-bootloader-protected.bin: SECURITY_MODE, DYNAMIC_LOCATION, PRODUCT_DATA; suffix size 67."""
    m = parse_module(
        build_module(
            platform_id=32,
            function=Function.BOOTLOADER,
            version=2400,
            suffix_extensions=[security_mode_extension(True)],
        )
    )
    real = parse_module(fixture_bytes("p2-bootloader-protected.bin"))
    assert m.suffix_size == real.suffix_size == 67
    assert [(e.type, e.length) for e in m.suffix_extensions] == [(e.type, e.length) for e in real.suffix_extensions]
    assert m.suffix_extensions[1].fields()["module_start_address"] == 0x08004000
    assert (m.product_id, m.product_version) == (0xFFFF, 0xFFFF)
    assert m.security_mode == "protected"
    assert m.prefix_offset == real.prefix_offset == 32
    assert m.problems == ()


def test_extensions_style_on_an_nrf_platform_without_dynamic_location():
    m = parse_module(
        build_module(
            platform_id=13,
            function=Function.USER_PART,
            version=6,
            suffix="extensions",
            suffix_extensions=[name_extension("n")],
            product_id=13,
            product_version=9,
        )
    )
    assert [e.type for e in m.suffix_extensions] == [ExtensionType.NAME, ExtensionType.PRODUCT_DATA]
    assert m.raw_product_data is False
    assert (m.product_id, m.product_version) == (13, 9)
    assert m.suffix_size == 36 + 5 + 10
    assert m.problems == ()


def test_extensions_style_with_dynamic_location_on_request():
    m = parse_module(
        build_module(platform_id=13, function=Function.USER_PART, version=6, suffix="extensions", dynamic_location=True)
    )
    assert [e.type for e in m.suffix_extensions] == [ExtensionType.DYNAMIC_LOCATION, ExtensionType.PRODUCT_DATA]
    assert m.suffix_extensions[0].fields()["module_start_address"] == m.start_address == 0xB4000


@pytest.mark.parametrize("platform_id", [6, 13, 32, 0])
def test_base_suffix_is_36_bytes_without_product_data(platform_id):
    data = build_module(platform_id=platform_id, function=Function.SYSTEM_PART, version=1, suffix="base")
    m = parse_module(data)
    assert m.suffix_size == 36
    assert (m.product_id, m.product_version) == (None, None)
    assert m.raw_product_data is False
    assert m.suffix_extensions == ()
    assert m.problems == ()
    assert m.suffix_start == len(data) - 40


def test_base_suffix_refuses_extensions():
    with pytest.raises(ValueError, match="no room for extensions"):
        build_module(platform_id=6, function=5, version=1, suffix="base", suffix_extensions=[name_extension("x")])


def test_unknown_suffix_style_is_refused():
    with pytest.raises(ValueError, match="unknown suffix style 'fancy'"):
        build_module(platform_id=6, function=5, version=1, suffix="fancy")


def test_extension_helpers_encode_the_documented_payloads():
    assert product_data_extension(32, 0xBEEF).encode() == bytes.fromhex("01000a00ffff2000efbe")
    assert dynamic_location_extension(0x85FE000, 0x85FE088, 0x23FEE48).encode() == (
        bytes.fromhex("02001000") + bytes.fromhex("00e05f08 88e05f08 48ee3f02".replace(" ", ""))
    )
    assert name_extension("cat.jpg").encode() == b"\x11\x00\x0b\x00cat.jpg"
    assert hash_extension(b"\xaa" * 32).encode() == b"\x10\x00\x26\x00\x00\x20" + b"\xaa" * 32
    assert security_mode_extension(True).encode() == b"\x13\x00\x05\x00\x01"
    assert security_mode_extension(False, b"cert").encode() == b"\x13\x00\x09\x00\x00cert"
    assert asset_dependency_extension("a", b"\x01" * 32).encode() == b"\x12\x00\x27\x00\x00\x20" + b"\x01" * 32 + b"a"


# --- asset modules ---------------------------------------------------------------------------------


def test_asset_module_fields():
    content = b"some asset content " * 50
    m = parse_module(asset_module("logo.png", content))
    assert m.problems == () and m.crc_ok and m.sha_ok
    assert (m.function, m.index, m.version, m.platform_id) == (Function.ASSET, 0, 0, 0)
    assert m.start_address == 0 and m.prefix_offset == 0
    assert m.flags == ModuleFlag.DROP_MODULE_INFO
    assert m.name == "logo.png"
    assert stored_body(m) == content
    assert [e.type for e in m.suffix_extensions] == [ExtensionType.HASH, ExtensionType.NAME, ExtensionType.PRODUCT_DATA]
    assert m.suffix_extensions[0].fields() == {"hash_type": 0, "hash": hashlib.sha256(content).hexdigest()}
    assert (m.product_id, m.product_version) == (0xFFFF, 0xFFFF)


def test_asset_module_rebuilds_cat_bin_byte_for_byte():
    real = fixture_bytes("cat.bin")
    m = parse_module(real)
    assert asset_module("cat.jpg", stored_body(m)) == real


# --- real files rebuilt from their fields ----------------------------------------------------------


def rebuild(name: str, **options) -> tuple[bytes, bytes]:
    real = fixture_bytes(name)
    m = parse_module(real)
    built = build_module(
        platform_id=m.platform_id,
        function=m.function,
        version=m.version,
        index=m.index,
        start_address=options.pop("start_address", m.start_address),
        body=stored_body(m),
        dependencies=m.real_dependencies,
        flags=m.flags,
        reserved=m.reserved,
        product_id=0xFFFF if m.product_id is None else m.product_id,
        product_version=0xFFFF if m.product_version is None else m.product_version,
        **options,
    )
    return built, real


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("040_user-part.bin", {"suffix": "base"}),
        ("product_firmware.bin", {"suffix": "product"}),
        ("cli__binaries__argon-tinker-620.bin", {}),
        ("argon-softdevice-6.1.1.bin", {"suffix": "base", "start_address": None}),
    ],
)
def test_real_files_rebuild_byte_for_byte(name, options):
    built, real = rebuild(name, **options)
    assert built == real


def test_tracker_user_part_with_asset_extensions_rebuilds_byte_for_byte():
    exts = parse_module(fixture_bytes("tracker-user-part-extensions.bin")).suffix_extensions
    built, real = rebuild("tracker-user-part-extensions.bin", suffix="product", suffix_extensions=exts)
    assert built == real


def test_p2_user_part_rebuilds_byte_for_byte_with_its_own_dynamic_location():
    location = parse_module(fixture_bytes("p2-user-part.bin")).suffix_extensions[0]
    assert location.fields()["dynalib_load_address"] == 0x85FE088
    built, real = rebuild(
        "p2-user-part.bin",
        start_address=None,
        suffix="extensions",
        dynamic_location=False,
        suffix_extensions=[location],
    )
    assert parse_module(built).suffix_extensions[0].fields() == location.fields()
    assert built == real


# --- patching one field ----------------------------------------------------------------------------


def built_nrf_user_part() -> bytes:
    return build_module(platform_id=13, function=Function.USER_PART, version=6, dependencies=[(4, 1, 5301)])


def built_gen2_system_part() -> bytes:
    return build_module(
        platform_id=6, function=Function.SYSTEM_PART, index=2, version=2301, dependencies=[(4, 1, 2301)]
    )


def built_p2_user_part() -> bytes:
    return build_module(platform_id=32, function=Function.USER_PART, version=6, dependencies=[(4, 1, 5301)])


def built_p2_bootloader() -> bytes:
    return build_module(platform_id=32, function=Function.BOOTLOADER, version=2400, dependencies=[(2, 2, 7)])


SOURCES = {
    "nrf-user": built_nrf_user_part,
    "gen2-system": built_gen2_system_part,
    "p2-user": built_p2_user_part,
    "p2-bootloader": built_p2_bootloader,
    "real-product-firmware": lambda: fixture_bytes("product_firmware.bin"),
    "real-xenon-bootloader": lambda: fixture_bytes("080_bootloader-xenon.bin"),
    "real-p2-user-part": lambda: fixture_bytes("p2-user-part.bin"),
}
EXTENSION_STYLE = {"p2-user", "p2-bootloader", "real-p2-user-part"}  # product data inside PRODUCT_DATA
PATCHES = {
    "version": 4321,
    "index": 7,
    "reserved": 33,
    "dependencies": (Dependency(4, 1, 6101), Dependency(2, 0, 3001)),
    "suffix_reserved": 0x1234,
    "product_id": 4242,
    "product_version": 17,
}
SAME_FAMILY = {13: 12, 6: 8, 10: 8, 14: 12, 32: 35}  # platform_id patch that keeps the MCU family


def patch_params():
    for source in SOURCES:
        for field, value in [*PATCHES.items(), ("platform_id", None)]:
            yield pytest.param(source, field, value, id=f"{source}-{field}")


@pytest.mark.parametrize(("source", "field", "value"), list(patch_params()))
def test_patching_one_field_changes_exactly_that_field(source, field, value):
    original = parse_module(SOURCES[source]())
    assert original.problems == ()
    if field == "platform_id":
        value = SAME_FAMILY[original.platform_id]
    assert getattr(original, field) != value
    patched_module = dataclasses.replace(original, **{field: value})
    data = encode_module(patched_module, seal=True)
    again = parse_module(data)
    assert getattr(again, field) == value
    assert again.problems == ()
    assert again.crc_ok and again.sha_ok and again.sha_range == "module"
    before, after = comparable(original), comparable(again)
    changed = {k for k in before if before[k] != after[k]}
    if source in EXTENSION_STYLE and field in ("product_id", "product_version"):
        # rtl872x style: the product fields live inside the PRODUCT_DATA suffix extension, so that
        # extension (and no other) changes with them
        assert changed == {field, "suffix_extensions"}
        differing = [a.type for a, b in zip(original.suffix_extensions, again.suffix_extensions, strict=True) if a != b]
        assert differing == [ExtensionType.PRODUCT_DATA]
    else:
        assert changed == {field}
    assert len(data) == original.size
    # outside the prefix and the suffix nothing moved
    assert data[: original.prefix_offset] == original.data[: original.prefix_offset]
    assert stored_body(again) == stored_body(original)


def test_encode_without_seal_keeps_the_stored_crc_so_a_patch_shows():
    original = parse_module(built_nrf_user_part())
    data = encode_module(dataclasses.replace(original, version=7))
    again = parse_module(data)
    assert again.version == 7
    assert again.crc32 == original.crc32 and not again.crc_ok
    assert any("CRC-32" in p for p in again.problems)


# --- random builder arguments ---------------------------------------------------------------------

_DIGEST = hashlib.sha256(b"x").digest()
EXTENSION_CHOICES = [
    name_extension("app"),
    name_extension("ünïcode-名前"),
    hash_extension(_DIGEST),
    asset_dependency_extension("asset.bin", _DIGEST),
    security_mode_extension(True),
    security_mode_extension(False, b"\x30\x82" + bytes(40)),
    Extension(ExtensionType.ASSET_TYPE, b"\x01\x00"),
    Extension(0x0042, b"opaque"),
]
dependency = st.tuples(st.integers(1, 9), st.integers(0, 255), st.integers(0, 0xFFFF))


@settings(max_examples=400, deadline=None)
# Found by this test: on a small nRF51 system part (prefix at 0xC0), the bytes at 0x10C (where an
# nRF52 system part keeps its prefix) looked like a known header by chance and shadowed the real one.
@example(
    platform=platform_by_id(103),
    function=Function.SYSTEM_PART,
    version=0,
    index=None,
    dependencies=[],
    body=b"",
    compress=True,
    suffix="extensions",
    prefix_extensions=[
        hash_extension(_DIGEST),
        Extension(ExtensionType.ASSET_TYPE, b"\x01\x00"),
        Extension(0x0042, b"opaque"),
    ],
    suffix_extensions=[],
    product=(0, 0),
    reserved=0,
    extra_flags=0,
    start_address=None,
)
@given(
    platform=st.sampled_from(PLATFORMS),
    function=st.sampled_from(FUNCTIONS),
    version=st.integers(0, 0xFFFF),
    index=st.none() | st.integers(0, 255),
    dependencies=st.lists(dependency, max_size=2),
    body=st.binary(max_size=3000),
    compress=st.booleans(),
    suffix=st.sampled_from(["auto", "base", "product", "extensions"]),
    prefix_extensions=st.lists(st.sampled_from(EXTENSION_CHOICES), max_size=3),
    suffix_extensions=st.lists(st.sampled_from(EXTENSION_CHOICES), max_size=3),
    product=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    reserved=st.integers(0, 255),
    extra_flags=st.sampled_from([0, ModuleFlag.DROP_MODULE_INFO, ModuleFlag.ENCRYPTED]),
    start_address=st.none() | st.integers(0, 0x0FFF_FFFF).map(lambda a: a & ~3),
)
def test_random_builder_arguments_always_round_trip(
    platform,
    function,
    version,
    index,
    dependencies,
    body,
    compress,
    suffix,
    prefix_extensions,
    suffix_extensions,
    product,
    reserved,
    extra_flags,
    start_address,
):
    if suffix == "base":
        suffix_extensions = []
    data = build_module(
        platform_id=platform.id,
        function=function,
        version=version,
        index=index,
        start_address=start_address,
        dependencies=dependencies,
        body=body,
        compress=compress,
        suffix=suffix,
        prefix_extensions=prefix_extensions,
        suffix_extensions=suffix_extensions,
        product_id=product[0],
        product_version=product[1],
        reserved=reserved,
        flags=extra_flags,
    )
    m = parse_module(data)
    assert m.problems == ()
    assert m.crc_ok and m.sha_ok and m.sha_range == "module"
    assert (m.platform_id, m.function, m.version, m.reserved) == (platform.id, function, version, reserved)
    if index is not None:
        assert m.index == index
    if start_address is not None:
        assert m.start_address == start_address
    assert dep_tuples(m) == dependencies
    assert m.flags & extra_flags == extra_flags
    assert m.prefix_offset == expected_offset(platform.id, function)
    assert list(m.prefix_extensions[: len(prefix_extensions)]) == prefix_extensions
    if prefix_extensions:
        assert m.prefix_extensions[-1].type == ExtensionType.END
    assert list(m.suffix_extensions[: len(suffix_extensions)]) == suffix_extensions
    style = suffix if suffix != "auto" else ("extensions" if platform.mcu is RTL else "product")
    if style == "base":
        assert (m.suffix_size, m.product_id) == (36, None)
    else:
        assert (m.product_id, m.product_version) == product
        assert m.raw_product_data is (style == "product")
    if compress:
        assert decompress_body(m) == body
    else:
        assert stored_body(m)[: len(body)] == body
    assert encode_module(m) == data
    assert encode_module(m, seal=True) == data


def test_a_chance_header_where_another_mcu_family_keeps_it_does_not_shadow_the_real_one():
    """The case the test above found: a tiny compressed bluz (nRF51) system part, prefix at 0xC0."""
    data = build_module(
        platform_id=103,
        function=Function.SYSTEM_PART,
        version=0,
        body=b"",
        compress=True,
        suffix="extensions",
        prefix_extensions=[
            hash_extension(_DIGEST),
            Extension(ExtensionType.ASSET_TYPE, b"\x01\x00"),
            Extension(0x0042, b"opaque"),
        ],
    )
    chance = _score(data, 0x10C)  # an nRF52 system part's offset, inside this module's prefix extensions
    assert chance.known and not chance.fits
    assert find_prefix(data)[:2] == (0xC0, "vector-table")
    m = parse_module(data)
    assert m.problems == () and m.prefix_offset == 0xC0 and m.platform_name == "bluz"
