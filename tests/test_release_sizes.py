"""The synthetic releases have the sizes of the real release modules, and every size fits where it goes."""

from __future__ import annotations

import pytest

from firmware.library import FirmwareLibrary
from firmware.module import ModuleFlag, parse_module
from firmware.plan import DeviceFacts, PlanRefused, plan_flash
from firmware.platforms import PLATFORMS, platform_by_name
from firmware.release_sizes import FAMILY_REFERENCE, SIZES, real_size, room
from firmware.releases import BODY, synthetic_release
from hw.sim import scenarios
from kiosk.demo_library import DEMO_RELEASES, MARKER, demo_library
from tests.fixture_paths import fixture_bytes

#: Every platform of a family the simulator runs, and every release the demo library and the scenarios use.
SIM_PLATFORMS = [p for p in PLATFORMS if p.supported and p.mcu.name in FAMILY_REFERENCE]


def _releases(family: str) -> list[str]:
    used = set(DEMO_RELEASES.get(family, ()))
    for table in ("CURRENT_RELEASE", "OLD_RELEASE", "PREVIOUS_RELEASE"):
        release = getattr(scenarios, table, {}).get(family)
        if release:
            used.add(release)
    return sorted(used)


RELEASES = [(p.name, r) for p in SIM_PLATFORMS for r in _releases(p.mcu.name)]


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


@pytest.mark.parametrize(("platform", "release"), RELEASES)
def test_each_synthetic_module_is_as_large_as_the_real_one_and_fits_its_slot(platform, release):
    p = platform_by_name(platform)
    for name, data in synthetic_release(p, release).items():
        part = name.split("@")[0].removeprefix(f"{p.name}-")
        module = parse_module(data)
        assert len(data) == real_size(p, release, part).size, name
        assert module.sound, (name, module.problems)
        assert p.slot_for_module(module.function, module.index, module.start_address, module.end_address), name


@pytest.mark.parametrize("platform", ["photon", "electron", "boron", "argon", "tracker", "p2", "msom"])
def test_the_planner_takes_each_demo_release_at_its_real_size(platform):
    p = platform_by_name(platform)
    for release in DEMO_RELEASES[p.mcu.name]:
        wanted = [(name, parse_module(data)) for name, data in synthetic_release(p, release).items()]
        wanted = [(n, m) for n, m in wanted if not m.flags & ModuleFlag.ENCRYPTED]
        try:
            plan = plan_flash(DeviceFacts(p), wanted)
        except PlanRefused as exc:
            pytest.fail(f"{platform} {release}: {[r.reason for r in exc.refusals]}")
        assert {n for n, _ in wanted} <= {step.name for step in plan.steps}


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


def test_body_size_still_makes_small_modules_for_tests_that_need_no_real_sizes():
    files = synthetic_release("boron", "6.1.1", body_size=BODY)
    small = {name: len(data) for name, data in files.items() if "softdevice" not in name}
    assert max(small.values()) < BODY + 1024
    assert len(files["boron-softdevice@6.1.1.bin"]) < 16 * 1024  # the SoftDevice id at 0x300C needs its 8 KB


def test_the_demo_library_holds_real_sizes_and_makes_again_one_an_older_kiosk_made(tmp_path, monkeypatch):
    root = tmp_path / "demo"
    old = FirmwareLibrary(root)  # what a kiosk with 4 KB synthetic modules left behind
    folder = tmp_path / "photon@2.3.0"
    folder.mkdir()
    for name, data in synthetic_release("photon", "2.3.0", body_size=BODY).items():
        (folder / name).write_bytes(data)
    old.import_path(folder)
    (root / MARKER).write_text("made by an older kiosk\n")
    lib = demo_library(["photon"], root=root)
    sizes = {e.name: e.size for e in lib.entries() if e.kind == "module"}
    assert sizes["system-part1"] == real_size("photon", "2.3.0", "system-part1").size
    assert sizes["tinker"] == real_size("photon", "2.3.0", "tinker").size
    assert lib.quarantined() == []
    before = sorted((e.path, e.sha256) for e in lib.entries())
    imports = []
    real_import = FirmwareLibrary.import_path
    monkeypatch.setattr(
        FirmwareLibrary, "import_path", lambda self, path: imports.append(path) or real_import(self, path)
    )
    assert sorted((e.path, e.sha256) for e in demo_library(["photon"], root=root).entries()) == before
    assert imports == []  # a library that holds this release is left as it is (Tinker's entry has no release)


def test_a_demo_library_with_every_platform_is_opened_again_without_importing(tmp_path, monkeypatch):
    root = tmp_path / "demo"
    demo_library(["boron", "p2"], root=root, body_size=BODY)
    imports = []
    monkeypatch.setattr(FirmwareLibrary, "import_path", lambda self, path: imports.append(path))
    demo_library(["boron", "p2"], root=root, body_size=BODY)
    assert imports == []


def test_a_folder_that_is_not_a_demo_library_is_not_emptied(tmp_path):
    root = tmp_path / "mine"
    lib = FirmwareLibrary(root)
    name = "photon-system-part1@2.3.0.bin"  # the same release's part, other bytes: someone's own library
    (tmp_path / name).write_bytes(synthetic_release("photon", "2.3.0", body_size=BODY)[name])
    lib.import_path(tmp_path / name)
    with pytest.raises(ValueError, match="other than the demo library"):
        demo_library(["photon"], root=root)
    assert [e.sha256 for e in FirmwareLibrary(root).entries()] == [e.sha256 for e in lib.entries()]
