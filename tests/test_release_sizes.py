"""The sizes of the real release modules: each with its source, each fitting where its release keeps it."""

from __future__ import annotations

import pytest

from firmware.platforms import platform_by_name
from firmware.release_sizes import SIZES, real_size, room
from tests.fixture_paths import fixture_bytes


@pytest.mark.parametrize(("platform", "release", "part"), sorted(SIZES))
def test_every_size_in_the_table_fits_its_own_release_and_says_where_it_comes_from(platform, release, part):
    size = SIZES[(platform, release, part)]
    limit = room(platform_by_name(platform), release, part)
    assert limit is None or size.size <= limit, f"{size.size} bytes, room for {limit}"
    if size.verified:
        assert size.source.startswith(("DR ", "fixture ")), size.source
    else:
        assert "UNVERIFIED" in size.source


def test_the_sizes_read_from_particles_data_are_end_minus_start_plus_the_crc():
    # DR 6.1.1/boron.json: system-part1 0x30000-0xb3940; DR 6.2.0/p2.json: system-part1 0x8060000-0x81899e4
    assert real_size("boron", "6.1.1", "system-part1").size == 0xB3940 - 0x30000 + 4 == 538_948
    assert real_size("p2", "6.2.0", "system-part1").size == 0x81899E4 - 0x8060000 + 4 == 1_219_048
    assert real_size("photon", "2.3.0", "system-part2").size == 260_984


def test_a_size_from_a_fixture_is_that_fixtures_size():
    assert real_size("argon", "6.1.1", "ncp-firmware").size == len(fixture_bytes("argon-ncp-firmware-0.0.5-ota.bin"))


def test_a_stand_in_never_takes_a_size_that_does_not_fit():
    # the Electron's 128 KB system slots: never the Photon's 256 KB parts, even for a release it has no data for
    electron = platform_by_name("electron")
    for part in ("system-part1", "system-part2", "system-part3"):
        size = real_size(electron, "1.5.2", part)
        assert size.size <= room(electron, "1.5.2", part)
        assert size.source.startswith("as electron 2.3.0's")
    # a Xenon on 6.1.1 (which no Xenon had) gets the Boron's 6.1.1 part, not its own 1.5.2 one that would not fit
    assert real_size("xenon", "6.1.1", "system-part1").source.startswith("as boron 6.1.1's")
    with pytest.raises(KeyError):
        real_size("boron", "6.1.1", "system-part2")
