"""firmware.module on bad bytes: only NotAModuleError is raised; everything else wrong is a listed problem.

Inputs: random bytes, and the real binaries of ../shared/fixtures/particle-binaries mutated (bit flips, truncation,
extension, overwritten runs, a wrong platform id resealed so the checksums still hold). A parsed module must stay
usable whatever it holds (``to_json``, re-encoding, extension decoding, inflating), and a damaged sound module is
never reported sound.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.builder import build_module
from firmware.module import (
    MAX_MODULE_SIZE,
    MIN_MODULE_SIZE,
    Extension,
    Module,
    ModuleFlag,
    NotAModuleError,
    decompress_body,
    encode_module,
    parse_module,
    split_modules,
)
from firmware.platforms import PLATFORMS, platform_by_id
from tests.fixture_paths import CORPUS, FIXTURES
from tests.fuzz import fuzz_settings

# The 13 documented binaries and the corpus: small enough to mutate quickly (the 800 KB NCP image is left out).
SOURCES = sorted(p for folder in (FIXTURES, CORPUS) for p in folder.glob("*.bin") if p.stat().st_size <= 300 * 1024)


@cache
def _source(index: int) -> bytes:
    return SOURCES[index].read_bytes()


@cache
def _sound(index: int) -> bool:
    """The file is one sound module, every byte of it (not a COMBINED file, not padded)."""
    try:
        module = parse_module(_source(index))
    except NotAModuleError:
        return False
    return module.sound and module.size == len(_source(index))


def parse_or_refuse(data: bytes) -> Module | None:
    """parse_module, where NotAModuleError (with a message that says so) is the only way to refuse."""
    try:
        module = parse_module(data)
    except NotAModuleError as exc:
        assert "module" in str(exc) and str(exc)[0].isalnum()
        return None
    check_usable(module, data)
    return module


def check_usable(module: Module, data: bytes) -> None:
    """Whatever a parsed module holds, everything the kiosk does with one works and problems are sentences."""
    assert all(isinstance(p, str) and p for p in module.problems)
    if module.sound:
        assert module.crc_ok and module.sha_ok
        assert module.size == module.end_address - module.start_address + 4
        assert encode_module(module) == module.data
    assert module.size <= len(data)
    json.dumps(module.to_json())
    for ext in module.extensions:
        assert ext.decode_problem() is None or "extension at offset" in ext.decode_problem()
        ext.to_json()
    _ = (module.name, module.security_mode, module.asset_dependencies, module.flag_names, module.platform_name)
    encode_module(module)
    encode_module(module, seal=True)
    if module.compression is not None:
        try:
            decompress_body(module)
        except ValueError as exc:
            assert (
                "cannot inflate" in str(exc)
                or "does not inflate" in str(exc)
                or "inflates to" in str(exc)
                or ("larger than any module" in str(exc))
            )
    try:
        split_modules(data)
    except NotAModuleError:
        assert module.flags & ModuleFlag.COMBINED  # only a module that says another follows can lead there


# --- random bytes -------------------------------------------------------------------------------------


@fuzz_settings(300)
@given(st.binary(max_size=4096))
def test_random_bytes_are_a_module_or_not_a_module(data):
    parse_or_refuse(data)


@fuzz_settings(200)
@given(st.sampled_from([0x0, 0x20, 0xC0, 0x10C, 0x184, 0x200]), st.binary(min_size=24, max_size=24), st.binary())
def test_random_headers_where_devices_look(offset, prefix, rest):
    """A 24-byte random prefix at each offset a device looks: exercises the header checks, not only the search."""
    head = bytes([0x00, 0x40, 0x00, 0x20]) + bytes(offset)  # a vector table's stack pointer in SRAM
    data = (head[:offset] + prefix + rest).ljust(MIN_MODULE_SIZE, b"\0")
    parse_or_refuse(data)


# --- mutated real binaries ----------------------------------------------------------------------------

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**31), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 2**31)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=600)),
    st.tuples(st.just("overwrite"), st.integers(0, 2**31), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("zero-tail"), st.integers(1, 64)),
)


def mutate(data: bytes, op: tuple) -> bytes:
    out = bytearray(data)
    if not out:
        return bytes(op[1]) if op[0] == "extend" else b""
    kind = op[0]
    if kind == "flip":
        out[op[1] % len(out)] ^= 1 << op[2]
    elif kind == "truncate":
        del out[op[1] % len(out) :]
    elif kind == "extend":
        out += op[1]
    elif kind == "overwrite":
        at = op[1] % len(out)
        out[at : at + len(op[2])] = op[2]
    else:
        out[-op[1] :] = bytes(min(op[1], len(out)))
    return bytes(out)


@fuzz_settings(250)
@given(st.integers(0, len(SOURCES) - 1), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_real_binaries_never_raise_anything_but_not_a_module(index, ops):
    data = _source(index)
    for op in ops:
        data = mutate(data, op)
    parse_or_refuse(data)


@fuzz_settings(150)
@given(st.integers(0, len(SOURCES) - 1), st.integers(0, 2**31), st.integers(0, 7))
def test_one_flipped_bit_in_a_sound_module_is_always_found(index, where, bit):
    """CRC-32 catches every single-bit error: a damaged module is never reported sound."""
    original = _source(index)
    data = mutate(original, ("flip", where, bit))
    module = parse_or_refuse(data)
    if _sound(index) and module is not None:
        flipped = where % len(original)
        inside = flipped < module.size  # a COMBINED file: a flip in a later module is that module's problem
        assert not module.sound or not inside, f"{SOURCES[index].name}: bit {bit} of byte {flipped} flipped"


@fuzz_settings(150)
@given(st.integers(0, len(SOURCES) - 1), st.integers(1, 2**31))
def test_a_truncated_sound_module_is_never_sound(index, cut):
    original = _source(index)
    data = original[: -(1 + cut % len(original))]
    module = parse_or_refuse(data)
    if _sound(index) and module is not None:
        assert not module.sound, f"{SOURCES[index].name} cut to {len(data)} bytes"


@fuzz_settings(150)
@given(st.integers(0, len(SOURCES) - 1), st.integers(0, 0xFFFF))
def test_wrong_platform_resealed_is_parsed_with_that_platform_or_refused(index, platform_id):
    """A module made for another (or no) platform, with valid checksums: what a wrong download looks like."""
    try:
        original = parse_module(_source(index))
    except NotAModuleError:
        return
    data = encode_module(dataclasses.replace(original, platform_id=platform_id), seal=True)
    module = parse_or_refuse(data)
    if module is None:
        return
    if module.prefix_offset == original.prefix_offset:
        assert module.platform_id == platform_id
    if platform_by_id(platform_id) is None and module.platform_id == platform_id:
        assert any(f"unknown platform id {platform_id}" in p for p in module.problems)


# --- built modules with garbage fields ----------------------------------------------------------------


@fuzz_settings(150)
@given(
    platform=st.sampled_from(PLATFORMS),
    function=st.integers(0, 255),
    flags=st.integers(0, 255),
    dependencies=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF)), max_size=2),
    extensions=st.lists(st.builds(Extension, st.integers(0, 0xFFFE), st.binary(max_size=40)), max_size=3),
    compression=st.none()
    | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**32 - 1)),
)
def test_built_modules_with_garbage_fields_parse_as_data(
    platform, function, flags, dependencies, extensions, compression
):
    """Sealed modules whose function, flags, dependencies, extensions or compression header are nonsense."""
    body = bytes(range(256)) * 4
    if compression is not None:
        # a COMPRESSED flag over a random compression header and a stream that is no Deflate
        body = struct.pack("<HBBI", *compression) + body
        flags |= ModuleFlag.COMPRESSED
    data = build_module(
        platform_id=platform.id,
        function=function,
        version=1,
        index=0,
        start_address=0x1000,
        body=body,
        dependencies=[d for d in dependencies if d[0]],
        flags=flags & ~ModuleFlag.PREFIX_EXTENSIONS,
        suffix="product",
        suffix_extensions=extensions,
    )
    parse_or_refuse(data)


def compressed_module(body: bytes, method: int = 0, window_bits: int = 0, claimed: int | None = None) -> Module:
    header = struct.pack("<HBBI", 8, method, window_bits, len(body) if claimed is None else claimed)
    data = build_module(
        platform_id=13, function=5, version=1, index=1, start_address=0x30000, body=header + body,
        flags=ModuleFlag.COMPRESSED,
    )  # fmt: skip
    return parse_module(data)


@pytest.mark.parametrize(
    ("method", "window_bits", "message"),
    [(3, 0, "unknown method 3"), (0, 99, "window bits 99 out of range"), (0, 7, "window bits 7 out of range")],
)
def test_a_compression_header_zlib_cannot_take_says_what_is_wrong(method, window_bits, message):
    """Found by the test above: zlib's own "Invalid initialization option" said nothing about the file."""
    module = compressed_module(b"\x03\x00", method, window_bits)
    assert any("compression" in p for p in module.problems)
    with pytest.raises(ValueError, match=message):
        decompress_body(module)


def test_a_decompression_bomb_is_refused_before_it_inflates():
    """A compressed body that claims more than any flash holds is refused, not inflated into memory."""
    huge = MAX_MODULE_SIZE + 1
    stream = zlib.compressobj(9, zlib.DEFLATED, -15)
    module = compressed_module(stream.compress(bytes(huge)) + stream.flush(), claimed=huge)
    with pytest.raises(ValueError, match="larger than any module"):
        decompress_body(module)
