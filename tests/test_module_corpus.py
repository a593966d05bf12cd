"""Every real binary in the fixtures (the 13 documented files and the wider corpus) against module-format.md §4.

The section 4 table (one row per repository file) is transcribed below in the document's own notation,
keyed by the local file name (BVR files keep their base name; particle-cli files are
``cli__<path with / replaced by __>``; the 13 files of EXPECTED.md sit one folder up). Also: nothing raises
but NotAModuleError, the known malformed legacy files are reported, sound files re-encode to their own
bytes, and non-modules are refused with a clear message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from functools import cache
from typing import NamedTuple

import pytest

from firmware.module import (
    MIN_MODULE_SIZE,
    ExtensionType,
    Module,
    NotAModuleError,
    encode_module,
    parse_module,
    split_modules,
)
from tests.fixture_paths import CORPUS, FIXTURES

# module-format.md section 4, transcribed: file name, then
# | size | plat | fn/idx/ver | start-end | pfx | flags | deps | sfx | pid/pver | CRC / SHA |
# ("-" for pid/pver where the suffix size is < 40; SHA "[0,len-38)" or "other").
# The table prints "-" for the product of the two 0xFF-padded RC4 bootloaders although their (invalid)
# suffix size 0xFFFF is >= 40: the u16s at L-44/L-42 read 0xFFFF there, which is what EXPECTED.md
# (BVR-asserted) gives for RC4_bootloader_pad_BM-09, so 65535/65535 is written for those two rows.
# BVR specs/binaries/emptybin.bin (0 bytes, no values, no local copy) is covered by test_empty_file_*.
SECTION_4 = """
040_system-part1.bin
    | 248744 | 6 | 4/1/1 | 8020000-805cba4 | 388 | 0x0 | (0,0,0) (0,0,0) | 36 | - | ok / [0,len-38) |
040_system-part2.bin
    | 125272 | 6 | 4/2/1 | 8060000-807e954 | 388 | 0x0 | (4,1,1) (0,0,0) | 36 | - | ok / [0,len-38) |
040_user-part.bin
    | 4752 | 6 | 5/1/2 | 80a0000-80a128c | 0 | 0x0 | (4,2,1) (0,0,0) | 36 | - | ok / [0,len-38) |
043_system-part1.bin
    | 248732 | 6 | 4/1/3 | 8020000-805cb98 | 388 | 0x0 | (0,0,0) (0,0,0) | 40 | 65535/65535 | ok / [0,len-38) |
043_system-part2.bin
    | 150508 | 6 | 4/2/3 | 8060000-8084be8 | 388 | 0x0 | (4,1,3) (0,0,0) | 40 | 65535/65535 | ok / [0,len-38) |
043_user-part.bin
    | 2460 | 6 | 5/1/2 | 80a0000-80a0998 | 0 | 0x0 | (4,2,3) (0,0,0) | 40 | 65535/65535 | ok / [0,len-38) |
044_Core_Tinker_P5_V10.bin
    | 88292 | 0 | 3/0/0 | 8005000-801a8e0 | 268 | 0x0 | (0,0,0) (0,0,0) | 40 | 5/10 | ok / [0,len-38) |
080_bootloader-xenon.bin
    | 33128 | 14 | 2/0/211 | f4000-fc164 | 512 | 0x0 | (0,0,0) (0,0,0) | 40 | 65535/65535 | ok / [0,len-38) |
080_system-part1-xenon.bin
    | 619908 | 14 | 4/1/312 | 30000-c7580 | 512 | 0x0 | (0,0,0) (2,0,101) | 40 | 65535/65535 | ok / [0,len-38) |
080_user-part-xenon.bin
    | 3312 | 14 | 5/1/5 | d4000-d4cec | 0 | 0x0 | (4,1,312) (0,0,0) | 40 | 65535/65535 | ok / [0,len-38) |
103_system-part1.bin
    | 124780 | 103 | 4/1/1 | 18000-36768 | 192 | 0x0 | (0,0,0) (0,0,0) | 40 | 65535/65535 | ok / [0,len-38) |
RC2_bootloader.bin
    | 15904 | 6 | 2/0/2 | 8000000-8003cb4 | 388 | 0x0 | (0,0,0) (0,0,0) | 99 | 15098/2048 | ok / other |
RC4_bootloader_pad_BM-09.bin
    | 16384 | 6 | 2/0/2 | 8000000-8003f98 | 388 | 0x0 | (0,0,0) (0,0,0) | 65535 | 65535/65535 | BAD / other |
RC4_bootloader_pad_BM-14.bin
    | 16384 | 8 | 2/0/2 | 8000000-8003ed8 | 388 | 0x0 | (0,0,0) (0,0,0) | 65535 | 65535/65535 | BAD / other |
RC4_unlocker.bin
    | 379696 | 6 | 3/0/0 | 8020000-807cb2c | 388 | 0x0 | (0,0,0) (0,0,0) | 36 | - | ok / [0,len-38) |
argon-ncp-firmware-0.0.5-ota.bin
    | 829248 | 12 | 7/0/5 | 0-ca73c | 0 | 0x0 | (0,0,0) (0,0,0) | 36 | - | ok / other |
argon-softdevice-6.1.1.bin
    | 151080 | 12 | 8/0/182 | 1000-25e24 | 0 | 0x1 | (4,1,1300) (2,0,311) | 36 | - | ok / [0,len-38) |
boron-som-system-part1@1.1.0-rc.1.bin
    | 648812 | 23 | 4/1/1100 | 30000-ce668 | 512 | 0x0 | (2,0,201) (0,0,0) | 40 | 65535/65535 | ok / [0,len-38) |
cat.bin
    | 21597 | 0 | 9/0/0 | 0-5459 | 0 | 0x1 | (0,0,0) (0,0,0) | 95 | 65535/65535 | ok / [0,len-38) |
p2-bootloader-protected-cert.bin
    | 53829 | 32 | 2/0/2400 | 8004000-8011241 | 32 | 0x0 | (2,2,7) (0,0,0) | 367 | 65535/65535 | ok / [0,len-38) |
p2-bootloader-protected.bin
    | 53529 | 32 | 2/0/2400 | 8004000-8011115 | 32 | 0x0 | (2,2,7) (0,0,0) | 67 | 65535/65535 | ok / [0,len-38) |
p2-bootloader@5.6.0.bin
    | 53524 | 32 | 2/0/2400 | 8004000-8011110 | 32 | 0x0 | (2,2,7) (0,0,0) | 62 | 65535/65535 | ok / [0,len-38) |
p2-tinker@5.3.1.bin
    | 49152 | 32 | 5/1/6 | 85f4000-85ffffc | 0 | 0x0 | (4,1,5301) (0,0,0) | 62 | 32/4 | ok / [0,len-38) |
p2-user-part-prefix-extensions.bin
    | 49264 | 32 | 5/1/6 | 85f3f90-85ffffc | 0 | 0x10 | (4,1,5300) (0,0,0) | 62 | 32/4 | ok / [0,len-38) |
p2-user-part.bin
    | 8192 | 32 | 5/1/6 | 85fe000-85ffffc | 0 | 0x0 | (4,1,5001) (0,0,0) | 62 | 32/48879 | ok / [0,len-38) |
tracker-bootloader-protected-cert.bin
    | 46715 | 26 | 2/0/2400 | f4000-ff677 | 512 | 0x0 | (0,0,0) (0,0,0) | 349 | 0/0 | ok / [0,len-38) |
tracker-bootloader-protected.bin
    | 46415 | 26 | 2/0/2400 | f4000-ff54b | 512 | 0x0 | (0,0,0) (0,0,0) | 49 | 0/0 | ok / [0,len-38) |
tracker-bootloader@5.6.0.bin
    | 46406 | 26 | 2/0/2400 | f4000-ff542 | 512 | 0x0 | (0,0,0) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
tracker-max-size@5.5.0-rc.1.bin
    | 262142 | 26 | 5/2/6 | b4000-f3ffa | 0 | 0x0 | (4,1,5500) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
tracker-system-part1@3.1.0-alpha.2.bin
    | 505230 | 26 | 4/1/3101 | 30000-ab58a | 512 | 0x0 | (2,0,1006) (7,0,7) | 40 | 65535/65535 | ok / [0,len-38) |
tracker-tinker@5.3.1.bin
    | 6874 | 26 | 5/2/6 | b4000-b5ad6 | 0 | 0x0 | (4,1,5301) (0,0,0) | 40 | 26/3 | ok / [0,len-38) |
tracker-user-part-extensions.bin
    | 7024 | 26 | 5/2/6 | b4000-b5b6c | 0 | 0x0 | (4,1,5301) (0,0,0) | 190 | 26/3 | ok / [0,len-38) |
unknown.bin
    | 8256 | 129 | 129/99/9999 | 20003000-2000503c | 16 | 0x80 | (129,99,999) (129,29,129) | 36 | - | ok / other |
cli__binaries__argon-bootloader-610.bin
    | 47798 | 12 | 2/0/3000 | f4000-ffab2 | 512 | 0x0 | (0,0,0) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__binaries__argon-bootloader-620.bin
    | 48358 | 12 | 2/0/3001 | f4000-ffce2 | 512 | 0x0 | (0,0,0) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__binaries__argon-system-part1@4.1.0.bin
    | 469386 | 12 | 4/1/4100 | 30000-a2986 | 512 | 0x0 | (8,0,202) (2,0,1200) | 40 | 65535/65535 | ok / [0,len-38) |
cli__binaries__argon-tinker-620.bin
    | 11214 | 12 | 5/2/6 | b4000-b6bca | 0 | 0x0 | (4,1,6101) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__binaries__argon_stroby.bin
    | 8012 | 12 | 5/1/6 | d4000-d5f48 | 0 | 0x0 | (4,1,1213) (0,0,0) | 40 | 65535/65535 | ok / [0,len-38) |
cli__binaries__boron_blank.bin
    | 7240 | 13 | 5/1/6 | d4000-d5c44 | 0 | 0x0 | (4,1,1213) (0,0,0) | 40 | 65535/65535 | ok / [0,len-38) |
cli__binaries__core_tinker.bin
    | 82864 | 0 | 3/0/0 | 8005000-80193ac | 268 | 0x0 | (0,0,0) (0,0,0) | 40 | 0/3 | ok / [0,len-38) |
cli__binaries__electron_tinker.bin
    | 5776 | 10 | 5/1/3 | 8080000-808168c | 0 | 0x0 | (4,2,10) (0,0,0) | 40 | 10/2 | ok / [0,len-38) |
cli__binaries__p1_tinker-0.4.5.bin
    | 5324 | 8 | 5/1/3 | 80a0000-80a14c8 | 0 | 0x0 | (4,2,6) (0,0,0) | 40 | 8/2 | ok / [0,len-38) |
cli__binaries__p1_tinker.bin
    | 4740 | 8 | 5/1/2 | 80a0000-80a1280 | 0 | 0x0 | (4,2,3) (0,0,0) | 40 | 65535/65535 | ok / [0,len-38) |
cli__binaries__photon_tinker-0.4.5.bin
    | 5324 | 6 | 5/1/3 | 80a0000-80a14c8 | 0 | 0x0 | (4,2,6) (0,0,0) | 40 | 6/2 | ok / [0,len-38) |
cli__binaries__photon_tinker.bin
    | 3952 | 6 | 5/1/2 | 80a0000-80a0f6c | 0 | 0x0 | (4,2,1) (0,0,0) | 36 | - | ok / [0,len-38) |
product_firmware.bin
    | 19884 | 10 | 5/1/6 | 8080000-8084da8 | 0 | 0x0 | (4,2,1201) (0,0,0) | 40 | 8178/13 | ok / [0,len-38) |
cli__third_party_ota__app-with-assets.bin
    | 7171 | 12 | 5/2/6 | b4000-b5bff | 0 | 0x0 | (4,1,4006) (0,0,0) | 183 | 12/3 | ok / [0,len-38) |
cli__third_party_ota__tinker_argon_541.bin
    | 3822 | 12 | 5/2/6 | b4000-b4eea | 0 | 0x0 | (4,1,5410) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__third_party_ota__invalid_no_assets__app.bin
    | 3822 | 12 | 5/2/6 | b4000-b4eea | 0 | 0x0 | (4,1,5501) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__third_party_ota__valid__app.bin
    | 3822 | 12 | 5/2/6 | b4000-b4eea | 0 | 0x0 | (4,1,5501) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__third_party_ota__valid-no-proj-prop__app.bin
    | 7028 | 12 | 5/2/6 | b4000-b5b70 | 0 | 0x0 | (4,1,4006) (0,0,0) | 40 | 12/3 | ok / [0,len-38) |
cli__third_party_ota__valid-no-prop__app.bin
    | 3822 | 12 | 5/2/6 | b4000-b4eea | 0 | 0x0 | (4,1,5501) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__third_party_ota__valid_env__app.bin
    | 3822 | 12 | 5/2/6 | b4000-b4eea | 0 | 0x0 | (4,1,5501) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__third_party_ota__valid_env_no_assets__app.bin
    | 3822 | 12 | 5/2/6 | b4000-b4eea | 0 | 0x0 | (4,1,5501) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__third_party_ota__zero_assets__app.bin
    | 3822 | 12 | 5/2/6 | b4000-b4eea | 0 | 0x0 | (4,1,5501) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__esim__binaries__esim-firmware-b5som.bin
    | 565968 | 25 | 3/0/5200 | 30000-ba2cc | 512 | 0x0 | (0,0,0) (0,0,0) | 40 | 0/0 | ok / [0,len-38) |
cli__argon__tinker__tinker-0.8.0-rc.27-argon.bin
    | 11972 | 12 | 5/1/5 | d4000-d6ec0 | 0 | 0x0 | (4,1,326) (0,0,0) | 40 | 12/3 | ok / [0,len-38) |
cli__b5som__tinker__tinker-1.5.0-b5som.bin
    | 12016 | 25 | 5/1/6 | d4000-d6eec | 0 | 0x0 | (4,1,1502) (0,0,0) | 40 | 25/3 | ok / [0,len-38) |
cli__boron__tinker__tinker-0.8.0-rc.27-boron.bin
    | 11412 | 13 | 5/1/5 | d4000-d6c90 | 0 | 0x0 | (4,1,326) (0,0,0) | 40 | 13/3 | ok / [0,len-38) |
cli__bsom__tinker__tinker-1.1.0-rc.1-bsom.bin
    | 11644 | 23 | 5/1/6 | d4000-d6d78 | 0 | 0x0 | (4,1,1100) (0,0,0) | 40 | 23/3 | ok / [0,len-38) |
cli__core__tinker__core_tinker.bin
    | 98932 | 0 | 3/0/207 | 8005000-801d270 | 268 | 0x0 | (0,0,0) (0,0,0) | 40 | 0/3 | ok / [0,len-38) |
cli__electron__tinker__electron_tinker.bin
    | 5776 | 10 | 5/1/3 | 8080000-808168c | 0 | 0x0 | (4,2,10) (0,0,0) | 40 | 10/2 | ok / [0,len-38) |
cli__electron__tinker-usb-debugging__tinker-usb-debugging-0.6.0-electron.bin
    | 10464 | 10 | 5/1/4 | 8080000-80828dc | 0 | 0x0 | (4,2,102) (0,0,0) | 40 | 10/3 | ok / [0,len-38) |
cli__esomx__tinker__tinker-6.3.4-esomx.bin
    | 8854 | 15 | 5/2/6 | b4000-b6292 | 0 | 0x0 | (4,1,6305) (0,0,0) | 40 | 15/3 | ok / [0,len-38) |
cli__msom__tinker__tinker-6.3.4-msom.bin
    | 57344 | 35 | 5/1/6 | 85f2000-85ffffc | 0 | 0x0 | (4,1,6305) (0,0,0) | 62 | 35/4 | ok / [0,len-38) |
cli__p1__tinker__tinker-0.4.5-p1.bin
    | 5324 | 8 | 5/1/3 | 80a0000-80a14c8 | 0 | 0x0 | (4,2,6) (0,0,0) | 40 | 8/2 | ok / [0,len-38) |
cli__p2__tinker__tinker-5.0.0-p2.bin
    | 49152 | 32 | 5/1/6 | 85f4000-85ffffc | 0 | 0x0 | (4,1,5002) (0,0,0) | 62 | 32/4 | ok / [0,len-38) |
cli__photon__tinker__tinker-0.4.5-photon.bin
    | 5324 | 6 | 5/1/3 | 80a0000-80a14c8 | 0 | 0x0 | (4,2,6) (0,0,0) | 40 | 6/2 | ok / [0,len-38) |
cli__tracker__tinker__tracker-tinker@1.5.4-rc.1.bin
    | 11568 | 26 | 5/1/6 | d4000-d6d2c | 0 | 0x0 | (4,1,1514) (0,0,0) | 40 | 26/3 | ok / [0,len-38) |
cli__trackerm__tinker__tinker-5.8.0-trackerm.bin
    | 49152 | 28 | 5/1/6 | 85f4000-85ffffc | 0 | 0x0 | (4,1,5800) (0,0,0) | 62 | 28/4 | ok / [0,len-38) |
cli__xenon__tinker__tinker-0.8.0-rc.27-xenon.bin
    | 11012 | 14 | 5/1/5 | d4000-d6b00 | 0 | 0x0 | (4,1,326) (0,0,0) | 40 | 14/3 | ok / [0,len-38) |
"""


class Row(NamedTuple):
    file: str
    size: int
    platform: int
    fn_idx_ver: tuple[int, int, int]
    start_end: tuple[int, int]
    prefix_offset: int
    flags: int
    deps: tuple[tuple[int, int, int], ...]
    suffix_size: int
    product: tuple[int, int] | None
    crc_ok: bool
    sha_over_module: bool  # "[0,len-38)" -> sha_range == "module"; "other" -> anything else


def _parse_table(text: str) -> tuple[Row, ...]:
    lines = [line.strip() for line in text.strip().splitlines()]
    rows = []
    for name, cells_line in zip(lines[::2], lines[1::2], strict=True):
        size, plat, fiv, span, pfx, flags, deps, sfx, product, check = (c.strip() for c in cells_line.split("|")[1:-1])
        start, end = span.split("-")
        crc, sha = (c.strip() for c in check.split("/", 1))
        assert crc in ("ok", "BAD") and sha in ("[0,len-38)", "other"), cells_line
        rows.append(
            Row(
                file=name,
                size=int(size),
                platform=int(plat),
                fn_idx_ver=tuple(int(x) for x in fiv.split("/")),
                start_end=(int(start, 16), int(end, 16)),
                prefix_offset=int(pfx),
                flags=int(flags, 16),
                deps=tuple(tuple(int(x) for x in d) for d in re.findall(r"\((\d+),(\d+),(\d+)\)", deps)),
                suffix_size=int(sfx),
                product=None if product == "-" else tuple(int(x) for x in product.split("/")),
                crc_ok=crc == "ok",
                sha_over_module=sha == "[0,len-38)",
            )
        )
    return tuple(rows)


TABLE = _parse_table(SECTION_4)
ROWS = {row.file: row for row in TABLE}

# Files a parser must flag (module-format.md 2.3 "Legacy oddities", corpus README, EXPECTED.md).
MALFORMED = {"RC2_bootloader.bin", "RC4_bootloader_pad_BM-09.bin", "RC4_bootloader_pad_BM-14.bin"}
SYNTHETIC = {"unknown.bin"}  # unknown platform, function and flag bit; SHA matches nothing
SOUND = sorted(set(ROWS) - MALFORMED - SYNTHETIC)


def path_of(name: str):
    return FIXTURES / name if (FIXTURES / name).is_file() else CORPUS / name


@cache
def data_of(name: str) -> bytes:
    return path_of(name).read_bytes()


@cache
def parsed(name: str) -> Module:
    return parse_module(data_of(name))


ALL_FILES = sorted([p.name for p in FIXTURES.glob("*.bin")] + [p.name for p in CORPUS.glob("*.bin")])


def test_the_table_covers_every_fixture_file_exactly_once():
    assert len(ALL_FILES) == 71 == len(set(ALL_FILES))
    assert len(TABLE) == len(ROWS) == 71
    assert sorted(ROWS) == ALL_FILES
    assert len(list(CORPUS.glob("*.bin"))) == 58


@pytest.mark.parametrize("name", ALL_FILES)
def test_every_file_parses_without_exception(name):
    m = parse_module(data_of(name))
    assert m.size == len(data_of(name))
    json.dumps(m.to_json())
    modules = split_modules(data_of(name))
    assert len(modules) == 1  # none of the real files is COMBINED
    assert modules[0] == m


@pytest.mark.parametrize("row", TABLE, ids=[r.file for r in TABLE])
def test_section4_table_values(row: Row):
    m = parsed(row.file)
    assert len(data_of(row.file)) == row.size
    assert m.platform_id == row.platform
    assert (m.function, m.index, m.version) == row.fn_idx_ver
    assert (m.start_address, m.end_address) == row.start_end
    assert m.prefix_offset == row.prefix_offset
    assert m.flags == row.flags
    assert tuple((d.function, d.index, d.version) for d in m.dependencies) == row.deps
    assert m.suffix_size == row.suffix_size
    if row.product is None:
        assert (m.product_id, m.product_version) == (None, None)
    else:
        assert (m.product_id, m.product_version) == row.product
    assert m.crc_ok is row.crc_ok
    if row.sha_over_module:
        assert m.sha_range == "module"
        assert m.sha_ok is True
        assert hashlib.sha256(data_of(row.file)[:-38]).digest() == m.sha256
    else:
        assert m.sha_range != "module"


@pytest.mark.parametrize("name", SOUND)
def test_sound_files_have_no_problems(name):
    m = parsed(name)
    assert m.problems == ()
    assert m.sound
    assert m.crc_ok and m.sha_ok
    assert m.end_address - m.start_address + 4 == m.size


def test_rc2_bootloader_is_reported_as_malformed():
    m = parsed("RC2_bootloader.bin")
    assert m.problems
    assert not m.sound
    text = " ".join(m.problems)
    # end - start + 4 = 15544, but the file is 15904 bytes; the suffix is garbage; the SHA matches nothing
    assert "15544" in text and "15904" in text and "padded" in text
    assert "suffix" in text
    assert "SHA-256" in text
    assert m.sha_ok is False


def test_rc4_bootloader_pad_bm14_is_reported_as_malformed():
    m = parsed("RC4_bootloader_pad_BM-14.bin")
    assert not m.sound
    text = " ".join(m.problems)
    assert "CRC-32 does not match" in text and "ffffffff" in text
    assert "suffix size 65535" in text and "impossible" in text
    assert "padded" in text and "16092" in text
    assert m.crc_ok is False
    assert m.crc32 == 0xFFFFFFFF
    assert data_of("RC4_bootloader_pad_BM-14.bin")[-100:] == b"\xff" * 100


@pytest.mark.parametrize("name", sorted(MALFORMED | SYNTHETIC))
def test_problem_files_do_not_reencode_as_sound(name):
    """Whatever a flagged file re-encodes to, it must still be flagged (problems are not laundered)."""
    m = parsed(name)
    assert m.problems
    try:
        again = parse_module(encode_module(m))
    except NotAModuleError:
        return
    assert again.problems


@pytest.mark.parametrize("name", SOUND)
def test_sound_files_reencode_to_their_own_bytes(name):
    assert encode_module(parsed(name)) == data_of(name)


@pytest.mark.parametrize("name", SOUND)
def test_sound_files_reencode_sealed_to_their_own_bytes(name):
    """Sealing recomputes SHA-256 and CRC-32 over the range the file used: an unchanged file stays the same."""
    assert encode_module(parsed(name), seal=True) == data_of(name)


def test_sealing_a_patched_payload_hashed_ncp_file_keeps_the_payload_range():
    """create_module.py wrappers hash [24, L-40): a patched, sealed NCP module still hashes the payload."""
    m = parsed("argon-ncp-firmware-0.0.5-ota.bin")
    sealed = parse_module(encode_module(dataclasses.replace(m, version=6), seal=True))
    assert sealed.problems == ()
    assert (sealed.platform_id, sealed.function, sealed.version, sealed.reserved) == (12, 7, 6, 33)
    assert sealed.sha_range == "payload"
    assert sealed.sha256 == m.sha256  # the payload did not change
    assert sealed.crc32 != m.crc32


# --- non-modules ---------------------------------------------------------------------------------


def test_empty_file_is_not_a_module():
    with pytest.raises(NotAModuleError, match=r"^0 bytes is too short for a Particle module \(at least 64\)$"):
        parse_module(b"")


@pytest.mark.parametrize("length", [1, 4, 24, 36, 40, MIN_MODULE_SIZE - 1])
def test_too_short_is_not_a_module(length):
    with pytest.raises(NotAModuleError, match=rf"^{length} bytes is too short for a Particle module"):
        parse_module(bytes(length))


def test_truncated_real_prefix_is_not_a_module():
    # the first 63 bytes of a real user part: the prefix is there, but no room for suffix and CRC
    with pytest.raises(NotAModuleError, match="too short"):
        parse_module(data_of("040_user-part.bin")[: MIN_MODULE_SIZE - 1])


def test_jpeg_is_not_a_module():
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + random.Random(7).randbytes(20000)
    with pytest.raises(NotAModuleError, match="not a Particle module binary"):
        parse_module(jpeg + b"\xff\xd9")


def test_the_real_jpeg_inside_cat_bin_is_not_a_module():
    cat = parsed("cat.bin")
    picture = cat.data[cat.body_start : cat.suffix_start]
    assert picture[:4] == bytes.fromhex("ffd8ffe0")
    assert hashlib.sha256(picture).hexdigest() == cat.extension_fields(ExtensionType.HASH)[0]["hash"]
    with pytest.raises(NotAModuleError, match="no Particle module header found"):
        parse_module(picture)


@pytest.mark.parametrize("text_file", [FIXTURES / "EXPECTED.md", CORPUS / "README.md"], ids=lambda p: p.name)
def test_text_files_are_not_modules(text_file):
    with pytest.raises(NotAModuleError, match="not a Particle module binary"):
        parse_module(text_file.read_bytes())


@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_blank_flash_is_not_a_module(fill):
    with pytest.raises(NotAModuleError):
        parse_module(bytes([fill]) * 16384)


def test_not_a_module_error_is_a_value_error():
    assert issubclass(NotAModuleError, ValueError)
