"""firmware.intelhex: strict parsing of restore images, and the writer used by tests and the demo."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.intelhex import HexError, format_hex, parse_hex


def test_round_trip_across_64k_boundaries():
    segments = [(0x0000FFF0, os.urandom(100)), (0x00030000, os.urandom(70000)), (0x08000000, b"\x01\x02")]
    image = parse_hex(format_hex(segments))
    assert [(s.address, s.data) for s in image.segments] == segments
    assert image.read(0x0000FFF0, 100) == segments[0][1]
    assert image.read(0x0003FFFF, 2) == segments[1][1][0xFFFF:0x10001]
    assert image.read(0x00030000, 70001) is None  # past the end of the segment
    assert image.contains(0x08000001) and not image.contains(0x08000002)


def test_adjacent_records_merge_into_one_segment():
    image = parse_hex(format_hex([(0x1000, b"a" * 16), (0x1010, b"b" * 16)]))
    assert len(image.segments) == 1 and image.segments[0].data == b"a" * 16 + b"b" * 16


def test_start_address_record():
    image = parse_hex(":0400000508000131BD\n:00000001FF\n")
    assert image.start_address == 0x08000131


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (":0400000001020304F3\n:00000001FF\n", "line 1: checksum mismatch"),
        (":0400000001020304F2\n", "no end-of-file record"),
        ("0400000001020304F2\n:00000001FF\n", "starts with ':'"),
        (":04000000010203ZZF2\n:00000001FF\n", "not hexadecimal"),
        (":0500000001020304F2\n:00000001FF\n", "record length does not match"),
        (":00000001FF\n:0400000001020304F2\n", "data after the end-of-file record"),
        (":0400000001020304F2\n:0400000001020304F2\n:00000001FF\n", "overlaps"),
        (":020000060000F8\n:00000001FF\n", "unknown or malformed record type 6"),
    ],
)
def test_malformed_files_name_the_fault(text, message):
    with pytest.raises(HexError, match=message):
        parse_hex(text)


def test_binary_garbage_is_a_clear_error():
    with pytest.raises(HexError, match="non-ASCII"):
        parse_hex(b"\x00\xff\xfe binary")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_hexerror(data):
    with contextlib.suppress(HexError):
        parse_hex(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 0xFFFFF000), st.binary(min_size=1, max_size=600), st.integers(0, 10_000))
def test_any_single_character_change_is_caught(address, data, where):
    text = format_hex([(address, data)])
    lines = text.splitlines()
    line_no = where % (len(lines) - 1)  # not the EOF record
    line = lines[line_no]
    pos = 1 + (where // 7) % (len(line) - 1)
    new = "0" if line[pos] != "0" else "1"
    lines[line_no] = line[:pos] + new + line[pos + 1 :]
    with pytest.raises(HexError):
        parse_hex("\n".join(lines) + "\n")
