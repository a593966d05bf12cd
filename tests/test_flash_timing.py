"""hw.flash_timing.dfu_work_s: the device seconds of DFU work, priced as the device does it.

The RTL872x (P2) driver reads a sector before erasing it and skips the erase when it is blank; a host that
erased a sector and wrote nothing there since knows it is blank, so a retry's second erase costs nothing there.
"""

from __future__ import annotations

import pytest

from firmware.platforms import platform_by_name
from hw.dfu import FlashOp
from hw.flash_timing import dfu_work_s, memory_kind, timing_for

KB = 1024


def _erase_s(name: str, alt: int = 0) -> float:
    platform = platform_by_name(name)
    memory = platform.memory_map(alt)
    assert memory is not None
    return timing_for(platform, memory_kind(memory)).erase_time_s(4 * KB)


def test_a_write_is_priced_by_its_program_units():
    p2 = platform_by_name("p2")
    one = dfu_work_s(p2, [FlashOp("write", 0, 0x08060000, 4 * KB)])
    two = dfu_work_s(p2, [FlashOp("write", 0, 0x08060000, 4 * KB), FlashOp("write", 0, 0x08061000, 4 * KB)])
    assert one > 0 and two == pytest.approx(2 * one)


def test_a_second_erase_of_a_sector_left_blank_is_free_on_the_p2():
    p2 = platform_by_name("p2")
    erase = FlashOp("erase", 0, 0x08060000, 4 * KB)
    assert _erase_s("p2") > 0
    assert dfu_work_s(p2, [erase]) == pytest.approx(_erase_s("p2"))
    assert dfu_work_s(p2, [erase, erase]) == pytest.approx(_erase_s("p2"))  # read-check, no erase


def test_a_write_into_the_sector_makes_the_next_erase_cost_again():
    p2 = platform_by_name("p2")
    erase = FlashOp("erase", 0, 0x08060000, 4 * KB)
    write_inside = FlashOp("write", 0, 0x08060800, 256)
    write_elsewhere = FlashOp("write", 0, 0x08061000, 256)
    wrote = dfu_work_s(p2, [write_inside])
    assert dfu_work_s(p2, [erase, write_inside, erase]) == pytest.approx(2 * _erase_s("p2") + wrote)
    assert dfu_work_s(p2, [erase, write_elsewhere, erase]) == pytest.approx(_erase_s("p2") + wrote)


def test_what_is_blank_carries_across_calls_through_the_callers_map():
    p2 = platform_by_name("p2")
    erase = FlashOp("erase", 0, 0x08060000, 4 * KB)
    blank: dict[tuple[int, int], int] = {}
    first = dfu_work_s(p2, [erase], blank)  # one attempt, broken off before any write
    second = dfu_work_s(p2, [erase], blank)  # the retry
    assert first == pytest.approx(_erase_s("p2")) and second == 0.0
    assert blank == {(0, 0x08060000): 0x08061000}


def test_an_nrf52840_erases_every_time():
    boron = platform_by_name("boron")
    erase = FlashOp("erase", 0, 0x000F4000, 4 * KB)
    assert dfu_work_s(boron, [erase, erase]) == pytest.approx(2 * _erase_s("boron"))
