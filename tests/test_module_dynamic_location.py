"""firmware.module.dynamic_location: where an rtl872x user part starts, read from the end of its slot."""

from __future__ import annotations

from firmware.builder import build_module
from firmware.module import SUFFIX_TAIL_SIZE, dynamic_location, parse_module
from firmware.platforms import Function


def test_a_p2_user_part_says_where_it_starts_from_its_last_bytes():
    data = build_module(platform_id=32, function=Function.USER_PART, version=6, body=bytes(5000))
    start = parse_module(data).start_address
    tail = (bytes(SUFFIX_TAIL_SIZE) + data)[-SUFFIX_TAIL_SIZE:]  # what a read of the slot's last bytes gives
    assert dynamic_location(tail) == start


def test_no_suffix_there_reads_as_none():
    assert dynamic_location(bytes(SUFFIX_TAIL_SIZE)) is None  # a blank (or zeroed) end of slot
    assert dynamic_location(b"\xff" * SUFFIX_TAIL_SIZE) is None  # erased flash
    assert dynamic_location(b"\x01\x02") is None  # too short to hold anything
    boron = build_module(platform_id=13, function=Function.USER_PART, version=6, body=bytes(5000))
    assert dynamic_location(boron[-SUFFIX_TAIL_SIZE:]) is None  # a Gen3 part has no DYNAMIC_LOCATION
