"""The customer's app kept before the kiosk writes over it, listed, and put back (kiosk.backup, `kiosk backup`),
on the simulator for each platform family; and the modules a device already has left out (same version and hash).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from firmware.builder import build_module
from firmware.module import parse_module
from firmware.plan import DeviceFacts, InstalledModule, Transport, plan_flash
from firmware.platforms import Function, platform_by_name
from hw.control import ModuleInfo, module_info_hash
from kiosk import bench as bench_module
from kiosk.backup import NO_APP, store, user_slots
from kiosk.cli import main
from kiosk.executor import ALREADY_ON_DEVICE, skip_installed
from kiosk.facts import installed
from kiosk.journal import Journal

PLATFORMS = ("boron", "photon", "p2")  # Gen3, Gen2, Gen4 (rtl872x: the app grows down from its slot's end)


@pytest.fixture
def shared_bench(monkeypatch):
    """One simulated bench for every command of a test, so a later command finds the device as the last left it."""
    made: list = []
    real = bench_module.simulated_bench

    def same(spec, speed=None):
        if not made:
            bench = real(spec, speed)
            made.append((bench, bench.close))
            bench.close = lambda: None
        return made[0][0]

    monkeypatch.setattr("kiosk.commands.device_cmd.simulated_bench", same)
    yield made
    for _, close in made:
        close()


def _apps(device) -> dict[int, bytes]:
    """The simulated device's user parts (index -> the module's bytes), as its own boot scan finds them."""
    with device.clock.lock:
        device.rescan()
        return {key[1]: m.data for key, m in device.modules.items() if key[0] == Function.USER_PART}


def _json(capsys, *argv: str) -> tuple[int, object]:
    status = main([*argv, "--json"])
    out, _ = capsys.readouterr()
    return status, json.loads(out)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_backup_is_taken_listed_and_restored(platform, shared_bench, tmp_path, capsys):
    journal = tmp_path / "journal.sqlite"
    spec = f"app-crash@{platform}"
    status, recovered = _json(capsys, "recover", "--simulate", spec, "--journal", str(journal))
    assert status == 0 and recovered["verdict"] == "recovered", recovered
    bench = shared_bench[0][0]
    device = bench.slot(1).device
    # Tinker replaced the crashing app; the app itself is kept beside the journal, byte for byte.
    tinker = _apps(device)
    status, listed = _json(capsys, "backup", "list", "--journal", str(journal))
    assert status == 0 and len(listed) == 1
    kept = listed[0]
    assert kept["run_id"] == recovered["run_id"] and kept["platform"] == platform and kept["file_ok"] is True
    assert kept["device_id"] == device.device_id.lower() and kept["version"] == 6
    data = (tmp_path / kept["file"]).read_bytes()
    assert kept["file"] == f"backups/{recovered['run_id']}-{platform}-user-part{kept['index']}.bin"
    assert hashlib.sha256(data).hexdigest() == kept["sha256"] and len(data) == kept["size"]
    app = parse_module(data)
    assert app.function == Function.USER_PART and not app.problems and app.data != tinker.get(app.index)
    # The journal step that wrote over it says so, and the report lists it.
    with Journal(journal) as j:
        details = " ".join(s["detail"] for s in j.run(recovered["run_id"])["steps"])
    assert "backed up to " + kept["file"] in details
    assert main(["report", "--journal", str(journal)]) == 0
    report = capsys.readouterr().out
    assert "## Backup of the app" in report and kept["sha256"] in report

    status, restored = _json(capsys, "backup", "restore", str(recovered["run_id"]), "--simulate", spec,
                             "--journal", str(journal))  # fmt: skip
    assert status == 0, restored
    assert _apps(device)[app.index] == data  # the customer's own app is back where it was
    assert [s["outcome"] for s in restored["steps"]] == ["written"] * len(restored["steps"])
    # The restore was a run of its own, and kept what it wrote over (Tinker) before writing.
    status, listed = _json(capsys, "backup", "list", "--journal", str(journal))
    assert [b["run_id"] for b in listed] == [restored["run_id"], recovered["run_id"]]
    assert parse_module((tmp_path / listed[0]["file"]).read_bytes()).data in tinker.values()


def test_a_device_with_no_readable_app_says_so_and_is_flashed_all_the_same(shared_bench, tmp_path, capsys):
    journal = tmp_path / "journal.sqlite"
    assert main(["list", "--simulate", "healthy@boron", "--json"]) == 0
    capsys.readouterr()
    device = shared_bench[0][0].slot(1).device
    for slot in user_slots(device.platform):  # a blank user part: nothing to keep
        device.flash.load(0, slot.start, b"\xff" * (slot.end - slot.start))
    assert _apps(device) == {}  # (and the device's module table says so too)
    status, out = _json(capsys, "flash", "tinker", "--simulate", "healthy@boron", "--journal", str(journal))
    assert status == 0 and out["backups"] == [], out
    assert any(NO_APP in s["detail"] for s in out["steps"])
    report = _report_json(journal, out["run_id"])
    assert [b["kept"] for b in report["backups"]] == [False] and NO_APP in report["backups"][0]["detail"]
    assert any(NO_APP in s["detail"] for s in report["steps"])


def _report_json(journal: Path, run_id: int) -> dict:
    from kiosk.report import build_report

    with Journal(journal) as j:
        return build_report(j, run_id)


def test_an_app_that_cannot_be_kept_is_not_written_over(shared_bench, tmp_path, capsys):
    journal = tmp_path / "journal.sqlite"
    (tmp_path / "backups").write_text("a file where the folder should be")
    assert main(["list", "--simulate", "app-crash@boron", "--json"]) == 0
    capsys.readouterr()
    device = shared_bench[0][0].slot(1).device
    before = _apps(device)
    status, out = _json(capsys, "flash", "tinker", "--simulate", "app-crash@boron", "--journal", str(journal))
    assert status == 1 and "could not be kept" in out["detail"], out
    assert _apps(device) == before  # the crashing app is still there, untouched


def test_restore_refuses_another_device_a_changed_file_and_a_run_without_one(tmp_path, capsys):
    journal = tmp_path / "journal.sqlite"
    status, recovered = _json(capsys, "recover", "--simulate", "app-crash@boron", "--journal", str(journal))
    assert status == 0
    run = str(recovered["run_id"])
    # healthy@boron is another device (its own id): refused, nothing written
    assert main(["backup", "restore", run, "--simulate", "healthy@boron", "--journal", str(journal)]) == 2
    err = capsys.readouterr().err
    assert "is of device" in err and "Put device" in err
    status, doc = _json(capsys, "backup", "restore", run, "--simulate", "healthy@boron", "--journal", str(journal))
    assert status == 2 and doc["refused"] is True and "is of device" in doc["detail"]
    assert main(["backup", "restore", "99", "--simulate", "app-crash@boron", "--journal", str(journal)]) == 3
    assert "there is no run 99" in capsys.readouterr().err
    with Journal(journal) as j:
        other = j.start_run(1, None, "boron")
        j.finish_run(other, "healthy", None)
    assert main(["backup", "restore", str(other), "--simulate", "app-crash@boron", "--journal", str(journal)]) == 3
    assert "kept no app" in capsys.readouterr().err
    status, listed = _json(capsys, "backup", "list", "--journal", str(journal))
    path = tmp_path / listed[0]["file"]
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    assert main(["backup", "restore", run, "--simulate", "app-crash@boron", "--journal", str(journal)]) == 2
    assert "no longer has the SHA-256" in capsys.readouterr().err
    status, listed = _json(capsys, "backup", "list", "--journal", str(journal))
    assert listed[0]["file_ok"] is False
    path.unlink()
    assert main(["backup", "restore", run, "--simulate", "app-crash@boron", "--journal", str(journal)]) == 3
    assert main(["backup", "list", "--journal", str(tmp_path / "none.sqlite")]) == 3


def test_store_never_replaces_a_backup(tmp_path):
    first = store(tmp_path / "backups", "1-boron-user-part2.bin", b"one")
    second = store(tmp_path / "backups", "1-boron-user-part2.bin", b"two")
    assert first != second and first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == ["1-boron-user-part2.1.bin",
                                                                          "1-boron-user-part2.bin"]


# --- what the device already has ---------------------------------------------------------------------------


def _info(m, *, hash: bytes | None = None, failed: frozenset = frozenset()) -> InstalledModule:
    """``m`` as the device's module table reports it, as kiosk.facts passes it on to the planner."""
    return installed(ModuleInfo(m.function, m.index, m.version, m.size, (), failed, False,
                                hash=module_info_hash(m) if hash is None else hash))  # fmt: skip


def test_skip_installed_leaves_out_only_the_same_module_with_the_same_hash():
    boron = platform_by_name("boron")
    system = parse_module(build_module(platform_id=boron.id, function=Function.SYSTEM_PART, index=1, version=6101,
                                       start_address=0x30000, body_size=600))  # fmt: skip
    tinker = parse_module(build_module(platform_id=boron.id, function=Function.USER_PART, index=2, version=6,
                                       dependencies=[(Function.SYSTEM_PART, 1, 6101)], body_size=600))  # fmt: skip
    other = parse_module(build_module(platform_id=boron.id, function=Function.USER_PART, index=2, version=6,
                                      dependencies=[(Function.SYSTEM_PART, 1, 6101)], body_size=600,
                                      seed=7))  # fmt: skip
    plan = plan_flash(DeviceFacts(boron, 6101), [("system.bin", system), ("tinker.bin", tinker)], Transport.USB)
    assert [s.name for s in plan.steps][-2:] == ["invalidate the former 128 KiB user part", "tinker.bin"]

    kept, skipped = skip_installed(plan, [_info(tinker)])
    assert [s.name for s in skipped] == ["tinker.bin"]
    assert [s.name for s in kept.steps] == ["system.bin"]  # the invalidation goes with the user part it was for
    # another app of the same version (another hash), one that fails a check, or no hash: written all the same
    for infos in ([_info(other)], [_info(tinker, failed=frozenset({"dependencies"}))], [_info(tinker, hash=b"")],
                  None, []):  # fmt: skip
        assert skip_installed(plan, infos) == (plan, [])
    kept, skipped = skip_installed(plan, [_info(system)])
    assert [s.name for s in skipped] == ["system.bin"] and len(kept.steps) == 2


def test_kiosk_flash_says_what_is_already_on_the_device(tmp_path, capsys):
    status, out = _json(capsys, "flash", "tinker", "--simulate", "healthy@boron", "--journal",
                        str(tmp_path / "j.sqlite"))  # fmt: skip
    assert status == 0 and out["steps"] == [] and out["backups"] == []
    assert [s["why"] for s in out["already_on_device"]] == [ALREADY_ON_DEVICE]
    assert main(["flash", "tinker", "--simulate", "healthy@boron", "--journal", str(tmp_path / "j.sqlite")]) == 0
    captured = capsys.readouterr()
    assert ALREADY_ON_DEVICE in captured.err and "nothing to write" in captured.out


def test_the_touchscreens_manual_flash_keeps_the_app_first(tmp_path):
    from kiosk.demo_library import demo_library
    from kiosk.service.engine import KioskBackend, Source

    posted: list = []
    backend = KioskBackend(lambda: bench_module.simulated_bench("app-crash@p2"),
                           lambda bench: demo_library(("p2",), root=tmp_path / "lib", body_size=600),
                           tmp_path / "journal.sqlite", posted.append)  # fmt: skip
    backend.open()
    try:
        device = backend.bench.slot(1).device
        app = next(iter(_apps(device).values()))
        tinker = next(e for e in backend.library.entries() if "tinker" in e.name and e.platform == "p2")
        manual = backend.plan_manual(1, [Source("tinker", entry=tinker)], Transport.AUTO)
        assert manual.plan is not None, manual.refusals
        backend.flash(1, manual.plan, device.device_id)
        kept = backend.journal.backups()
        assert len(kept) == 1 and (tmp_path / kept[0]["file"]).read_bytes() == app
        assert "backed up to" in posted[-1].detail
    finally:
        backend.close()
