"""Property tests of the module parser on mangled real files: it never raises but NotAModuleError.

The sample files cover different layouts: a Gen2 system part (vector table, prefix at 0x184, 36-byte
suffix), a Gen3 bootloader (prefix at 0x200, raw product data), a P2 user part with prefix and suffix
extensions, a P2 protected bootloader (Realtek image header, SECURITY_MODE), an nRF52 user part with
asset extensions and END + raw product data, the Core monolith (0x10C) and an asset module. The NCP file
(830 KB) is left out of the loops. Beyond "no other exception", a single flipped bit or a changed field
of a sound file must always be caught: NotAModuleError, a CRC mismatch or a reported problem.
"""

from __future__ import annotations

import contextlib
import json
import struct
import zlib
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.module import Module, NotAModuleError, encode_module, parse_module, split_modules
from tests.fixture_paths import fixture_bytes

SAMPLES = (
    "040_system-part2.bin",  # Gen2 system part, vector table, 36-byte suffix
    "080_bootloader-xenon.bin",  # Gen3 bootloader at 0x200
    "p2-user-part-prefix-extensions.bin",  # P2 user part, prefix + suffix extensions
    "p2-bootloader-protected.bin",  # Realtek image header, SECURITY_MODE suffix extension
    "tracker-user-part-extensions.bin",  # nRF52 suffix extensions, END, raw product data
    "044_Core_Tinker_P5_V10.bin",  # Core monolith at 0x10C
    "cat.bin",  # asset module: HASH, NAME, PRODUCT_DATA
)
SMALL = ("040_user-part.bin", "tracker-user-part-extensions.bin")

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def original(name: str) -> bytes:
    return fixture_bytes(name)


@cache
def parsed(name: str) -> Module:
    m = parse_module(original(name))
    assert m.problems == (), f"{name} should be a sound sample"
    return m


def parse_or_none(data: bytes) -> Module | None:
    """Parse; NotAModuleError is the one allowed exception. Whatever parses must serialise and re-encode."""
    try:
        m = parse_module(data)
    except NotAModuleError as exc:
        assert str(exc)  # a message for the technician
        return None
    assert isinstance(m, Module)
    json.loads(json.dumps(m.to_json()))
    encoded = encode_module(m)
    assert isinstance(encoded, bytes)
    if not m.problems:
        assert encoded == m.data  # a module reported sound is fully described by its fields
    with contextlib.suppress(NotAModuleError):
        split_modules(data)
    return m


def caught(m: Module | None) -> bool:
    return m is None or not m.crc_ok or bool(m.problems)


def flip(data: bytes, position: int, bit: int) -> bytes:
    out = bytearray(data)
    out[position] ^= 1 << bit
    return bytes(out)


def with_valid_crc(data: bytes) -> bytes:
    return data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "big")


def structural_regions(name: str) -> list[int]:
    """Byte positions of the vector table/image header start, the prefix and its extensions, and the suffix."""
    m = parsed(name)
    head = range(min(8, m.prefix_offset))
    prefix = range(m.prefix_offset, m.body_start + 8)
    suffix = range(m.size - 4 - m.suffix_size - 8, m.size)
    return sorted({*head, *prefix, *suffix})


# --- truncation ------------------------------------------------------------------------------------


@FAST
@given(data=st.data(), name=st.sampled_from(SAMPLES))
def test_truncation_at_any_length_only_raises_not_a_module(data, name):
    full = original(name)
    length = data.draw(
        st.one_of(
            st.integers(0, len(full) - 1),
            st.integers(max(0, len(full) - 400), len(full) - 1),  # into the suffix
            st.integers(0, min(len(full) - 1, 1200)),  # into the header
        ),
        label="length",
    )
    m = parse_or_none(full[:length])
    # a cut-off module is never reported sound
    assert caught(m)
    if m is not None:
        assert any("truncated" in p or "header says" in p for p in m.problems) or not m.crc_ok


def test_every_truncation_of_a_small_file():
    full = original("040_user-part.bin")
    for length in range(0, len(full), 7):
        assert caught(parse_or_none(full[:length])), length
    for length in range(len(full) - 64, len(full)):
        assert caught(parse_or_none(full[:length])), length


# --- single bit flips ------------------------------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(data=st.data(), name=st.sampled_from(SAMPLES))
def test_a_single_bit_flip_anywhere_is_always_caught(data, name):
    full = original(name)
    position = data.draw(st.integers(0, len(full) - 1), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    m = parse_or_none(flip(full, position, bit))
    assert caught(m), f"flip of bit {bit} at {position} in {name} went unnoticed"


@settings(max_examples=300, deadline=None)
@given(data=st.data(), name=st.sampled_from(SAMPLES))
def test_a_single_bit_flip_in_header_or_suffix_is_always_caught(data, name):
    position = data.draw(st.sampled_from(structural_regions(name)), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    assert caught(parse_or_none(flip(original(name), position, bit)))


FLIP_PARTS = 6  # each file's bytes in this many parts, so that parallel test workers share the work


@pytest.mark.parametrize("part", range(FLIP_PARTS))
@pytest.mark.parametrize("name", SMALL)
def test_every_single_bit_flip_of_a_small_file_is_caught(name, part):
    """Exhaustive: every bit of the file (36 KB of flips for the 4.7 KB user part), a sixth of its bytes per case."""
    full = original(name)
    missed = [
        (position, bit)
        for position in range(part, len(full), FLIP_PARTS)
        for bit in range(8)
        if not caught(parse_or_none(flip(full, position, bit)))
    ]
    assert missed == []


@pytest.mark.parametrize("name", SAMPLES)
def test_every_bit_flip_in_the_structural_bytes_is_caught(name):
    full = original(name)
    missed = [
        (position, bit)
        for position in structural_regions(name)
        for bit in range(8)
        if not caught(parse_or_none(flip(full, position, bit)))
    ]
    assert missed == []


# --- random bytes ----------------------------------------------------------------------------------


@FAST
@given(blob=st.binary(max_size=3000))
def test_random_bytes_only_raise_not_a_module(blob):
    parse_or_none(blob)


@FAST
@given(
    start=st.integers(0, 0xFFFFFFFF),
    body=st.binary(min_size=0, max_size=600),
    platform=st.sampled_from([0, 6, 10, 12, 13, 26, 32, 35, 103, 129, 0xFFFF]),
    function=st.integers(0, 12),
    flags=st.integers(0, 0xFF),
    deps=st.binary(min_size=8, max_size=8),
    head=st.sampled_from([0, 0x20, 0x10C, 0x184, 0x200]),
    tail=st.binary(min_size=36, max_size=120),
    fix_crc=st.booleans(),
)
def test_random_module_shaped_bytes_only_raise_not_a_module(
    start, body, platform, function, flags, deps, head, tail, fix_crc
):
    """A plausible prefix whose size matches the file, followed by random body, suffix and CRC."""
    total = head + 24 + len(body) + len(tail) + 4
    end = (start + total - 4) & 0xFFFFFFFF
    vector = struct.pack("<I", 0x20010000) + bytes(max(0, head - 4))
    prefix = struct.pack("<IIBBHHBB", start, end, 0, flags, 1, platform, function, 0) + deps
    data = vector[:head] + prefix + body + tail + bytes(4)
    if fix_crc:
        data = with_valid_crc(data)
    parse_or_none(data)


# --- random patches of header and suffix fields ---------------------------------------------------


def fields_of(name: str) -> list[tuple[int, int]]:
    """(offset, size) of every header and suffix field of a sample file, extension headers included."""
    m = parsed(name)
    p, size = m.prefix_offset, m.size
    prefix = [(p + o, n) for o, n in ((0, 4), (4, 4), (8, 1), (9, 1), (10, 2), (12, 2), (14, 1), (15, 1))]
    prefix += [(p + 16, 1), (p + 17, 1), (p + 18, 2), (p + 20, 1), (p + 21, 1), (p + 22, 2)]
    suffix = [(size - 4, 4), (size - 6, 2), (size - 38, 32), (size - 40, 2)]
    if m.suffix_size >= 40:
        suffix += [(size - 44, 2), (size - 42, 2)]
    extensions = [(e.offset, 2) for e in m.extensions] + [(e.offset + 2, 2) for e in m.extensions]
    extensions += [(e.offset + 4, min(4, len(e.payload))) for e in m.extensions if e.payload]
    head = [(0, 4), (4, 4)] if p else []
    return prefix + suffix + extensions + head


@settings(max_examples=800, deadline=None)
@given(data=st.data(), name=st.sampled_from(SAMPLES), fix_crc=st.booleans())
def test_random_patches_of_fields_only_raise_not_a_module(data, name, fix_crc):
    full = original(name)
    offset, size = data.draw(st.sampled_from(fields_of(name)), label="field")
    value = data.draw(
        st.one_of(
            st.binary(min_size=size, max_size=size),
            st.sampled_from([b"\x00" * size, b"\xff" * size]),
            st.integers(0, 0x200).map(lambda n: n.to_bytes(4, "little")[:size]),
        ),
        label="value",
    )
    patched = full[:offset] + value + full[offset + size :]
    if fix_crc:
        patched = with_valid_crc(patched)
    m = parse_or_none(patched)
    if patched != full and not fix_crc:
        # a change of up to 32 contiguous bits is always a CRC-32 error; a changed SHA is a SHA error
        assert caught(m), f"{name}: patch {value.hex()} at {offset} went unnoticed"


@FAST
@given(data=st.data(), name=st.sampled_from(SAMPLES))
def test_random_suffix_with_valid_crc_only_raises_not_a_module(data, name):
    """The whole suffix replaced by random bytes (keeping a plausible size field), CRC recomputed."""
    full = original(name)
    m = parsed(name)
    span = data.draw(st.integers(8, max(8, m.suffix_size)), label="span")
    noise = data.draw(st.binary(min_size=span, max_size=span), label="noise")
    size_field = data.draw(st.integers(0, 0xFFFF) | st.integers(30, 300), label="suffix size")
    patched = full[: len(full) - 4 - span] + noise
    patched = patched[:-2] + struct.pack("<H", size_field) + bytes(4)
    parse_or_none(with_valid_crc(patched))


# --- JSON --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_to_json_of_a_sample_round_trips_through_json(name):
    j = parsed(name).to_json()
    assert json.loads(json.dumps(j)) == j
    assert j["crc_ok"] is True and j["problems"] == []
