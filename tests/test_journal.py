"""The journal: schema and migrations, begin-before/end-after steps, interrupted runs, threads, redaction,
and a real kill -9 of a process in the middle of a run."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiosk.journal import MIGRATIONS, SCHEMA_VERSION, Journal, JournalError, UnknownRecordError

ROOT = Path(__file__).resolve().parents[1]
SECRET = "Q7XK2M9PLW4RT8Z"  # shaped like a Device Secret: 15 characters


def ticking_clock(start: datetime = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)):
    """A ``now`` that moves one second per call: every record gets its own, predictable time."""
    counter = itertools.count()
    return lambda: start + timedelta(seconds=next(counter))


@pytest.fixture
def journal(tmp_path):
    with Journal(tmp_path / "journal.sqlite", now=ticking_clock()) as j:
        yield j


def test_new_journal_has_every_table_in_wal_mode_with_full_sync(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        tables = {r[0] for r in j._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"runs", "steps", "observations", "device_history", "artifacts", "schema_version"} <= tables
        assert j.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
        assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert j._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        with pytest.raises(UnknownRecordError):
            j.observe(999, "led", {})
        with pytest.raises(sqlite3.IntegrityError):  # and SQLite enforces the foreign keys behind the journal
            j._db.execute("INSERT INTO steps (run_id, seq, rung, action, started_at) VALUES (999, 1, 'r', 'a', 't')")


def test_a_version_1_journal_is_migrated_and_keeps_its_runs(tmp_path):
    path = tmp_path / "old.sqlite"
    Journal(path, migrations=MIGRATIONS[:1]).close()
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO runs (slot, device_id, platform, started_at, status) VALUES (1, 'e00f', 'photon', 't0', 'running')"
    )
    db.execute(
        "INSERT INTO steps (run_id, seq, rung, action, started_at, outcome) VALUES (1, 1, 'cold-boot', 'a', 't1', 'ok')"
    )
    db.commit()
    db.close()

    with Journal(path, now=ticking_clock()) as j:
        assert j.schema_version() == SCHEMA_VERSION
        versions = [r[0] for r in j._db.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        old = j.run(1)
        assert (old["device_id"], old["scenario"], old["elapsed_s"]) == ("e00f", None, None)
        assert [s["outcome"] for s in old["steps"]] == ["ok"]
        assert j.mark_interrupted() == [1]  # the old run was left running: the new code closes it honestly
        j.set_device_history("e00f", powered_by="USB")
        assert j.device_history("e00f")["powered_by"] == "USB"
        assert j.run(j.start_run(2, None, None, scenario="healthy"))["scenario"] == "healthy"


def test_a_journal_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?, 'later')", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(JournalError, match=rf"version {SCHEMA_VERSION + 1} is newer than this kiosk knows"):
        Journal(path)
    with pytest.raises(JournalError, match="newer"):
        Journal(tmp_path / "new.sqlite", migrations=MIGRATIONS[:1])


def test_a_failing_migration_leaves_the_journal_as_it_was(tmp_path):
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    broken = (*MIGRATIONS, "CREATE TABLE half_done (a INTEGER); THIS IS NOT SQL;")
    with pytest.raises(sqlite3.OperationalError):
        Journal(path, migrations=broken)
    with Journal(path) as j:
        assert j.schema_version() == SCHEMA_VERSION
        assert not j._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'half_done'").fetchall()


def test_a_step_is_on_disk_before_its_action_and_completed_after(tmp_path, journal):
    other = Journal(tmp_path / "journal.sqlite")  # a second connection sees only what was committed
    run_id = journal.start_run(1, "E00FCE68AABBCCDDEEFF0011", "boron", scenario="app-crash")
    step_id = journal.begin_step(run_id, "safe-mode", "hold MODE through the reset", device_s=3.25)

    seen = other.run(run_id)["steps"]
    assert [(s["id"], s["seq"], s["outcome"], s["ended_at"]) for s in seen] == [(step_id, 1, None, None)]
    assert seen[0]["started_device_s"] == 3.25

    journal.end_step(step_id, "ok", "breathing magenta", {"held_s": 1.4}, device_s=5.0)
    step = other.run(run_id)["steps"][0]
    assert (step["outcome"], step["detail"], step["figures"], step["ended_device_s"]) == (
        "ok",
        "breathing magenta",
        {"held_s": 1.4},
        5.0,
    )
    assert step["started_at"] < step["ended_at"]  # the injected clock, one second per record
    with pytest.raises(JournalError, match="already ended"):
        journal.end_step(step_id, "failed")
    with pytest.raises(UnknownRecordError):
        journal.end_step(12345, "ok")
    assert journal.begin_step(run_id, "dfu", "enter DFU") and journal.run(run_id)["steps"][1]["seq"] == 2
    other.close()


def test_an_observation_belongs_to_the_open_step_unless_told(journal):
    run_id = journal.start_run(1, "aa", "boron")
    before = journal.observe(run_id, "usb", {"mode": "dfu"})
    step_id = journal.begin_step(run_id, "safe-mode", "hold MODE")
    during = journal.observe(run_id, "led", {"colour": "magenta"}, device_s=4.5)
    journal.end_step(step_id, "ok")
    after = journal.observe(run_id, "led", {"colour": "magenta"})
    by_id = {o["id"]: o for o in journal.run(run_id)["observations"]}
    assert [by_id[i]["step_id"] for i in (before, during, after)] == [None, step_id, None]
    assert by_id[during]["device_s"] == 4.5 and by_id[during]["data"] == {"colour": "magenta"}


def test_finishing_a_run_records_the_verdict_and_closes_open_steps(journal):
    run_id = journal.start_run(2, "e00fce68aabbccddeeff0011", "argon")
    journal.end_step(journal.begin_step(run_id, "cold-boot", "VBUS off, on"), "failed", "still solid cyan")
    journal.begin_step(run_id, "dfu", "enter DFU")  # the technician pressed Stop during this one
    journal.finish_run(run_id, "stopped by technician", None, "", elapsed_s=12.5, minimum_s=11.0, status="stopped")

    run = journal.run(run_id)
    assert (run["status"], run["verdict"], run["rung_that_fixed"], run["elapsed_s"], run["minimum_s"]) == (
        "stopped",
        "stopped by technician",
        None,
        12.5,
        11.0,
    )
    assert [s["outcome"] for s in run["steps"]] == ["failed", "stopped"]
    with pytest.raises(JournalError, match="already ended"):
        journal.finish_run(run_id, "recovered", "dfu")
    with pytest.raises(JournalError, match="no new steps"):
        journal.begin_step(run_id, "dfu", "again")
    with pytest.raises(ValueError):
        journal.finish_run(journal.start_run(1, None, None), "x", None, status="running")


def test_mark_interrupted_closes_runs_a_crash_left_open(tmp_path, journal):
    crashed = journal.start_run(1, "aa", "boron")
    done_step = journal.begin_step(crashed, "cold-boot", "VBUS off, on")
    journal.end_step(done_step, "ok")
    journal.begin_step(crashed, "dfu", "write system part 1")
    finished = journal.start_run(2, "bb", "argon")
    journal.finish_run(finished, "healthy", None)

    assert journal.mark_interrupted() == []  # its own runs are live, not crashed

    with Journal(tmp_path / "journal.sqlite", now=ticking_clock()) as after_restart:
        assert after_restart.mark_interrupted() == [crashed]
        run = after_restart.run(crashed)
        assert run["status"] == "interrupted" and run["ended_at"] and "stopped while" in run["detail"]
        assert [s["outcome"] for s in run["steps"]] == ["ok", "interrupted"]
        assert after_restart.run(finished)["status"] == "finished"
        assert after_restart.mark_interrupted() == []


def test_four_slots_write_in_parallel_threads(journal):
    steps_per_run, errors = 25, []
    barrier = threading.Barrier(4)

    def ladder(slot: int) -> None:
        try:
            barrier.wait()
            run_id = journal.start_run(slot, f"device{slot}", "boron")
            for n in range(steps_per_run):
                step_id = journal.begin_step(run_id, f"rung{n}", "act")
                journal.observe(run_id, "led", {"colour": "cyan", "n": n}, step_id)
                journal.end_step(step_id, "ok", figures={"n": n})
            journal.finish_run(run_id, "recovered", f"rung{steps_per_run - 1}")
        except Exception as exc:  # reported below: a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=ladder, args=(slot,)) for slot in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    runs = journal.runs()
    assert sorted(r["slot"] for r in runs) == [1, 2, 3, 4]
    for summary in runs:
        run = journal.run(summary["id"])
        assert [s["seq"] for s in run["steps"]] == list(range(1, steps_per_run + 1))
        assert [s["figures"]["n"] for s in run["steps"]] == list(range(steps_per_run))
        assert all(s["outcome"] == "ok" for s in run["steps"]) and run["status"] == "finished"
        assert len(run["observations"]) == steps_per_run
    assert journal._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_no_secret_reaches_the_disk(tmp_path):
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        run_id = j.start_run(1, "e00fce68aabbccddeeff0011", "boron")
        transcript = f"Device ID: e00fce68aabbccddeeff0011\r\nDevice Secret: {SECRET}\r\nSerial Number: P0123\r\n"
        step_id = j.begin_step(run_id, "listen", "serial i")
        j.end_step(step_id, "ok", f"reply: {transcript}", {"ms": 12.0, "device_secret": SECRET})
        j.observe(run_id, "transcript", {"i": transcript, "json": f'{{"ms": "{SECRET}"}}', "ms": SECRET}, step_id)
        j.observe(run_id, "serial", transcript)
        j.set_device_history("e00fce68aabbccddeeff0011", firmware_notes=f"Device Secret: {SECRET}")
        j.add_artifact(run_id, "listen.txt", transcript)
        j.add_artifact(run_id, "inspect.json", f'{{"ms":"{SECRET}"}}'.encode(), "application/json")

        run = j.run(run_id)
        assert run["steps"][0]["figures"] == {"ms": 12.0, "device_secret": "<redacted>"}  # a duration stays
        assert "Device ID: e00fce68aabbccddeeff0011" in run["steps"][0]["detail"]  # the rest is kept
        assert run["observations"][0]["data"]["ms"] == "<redacted>"
        assert j.artifact(run["artifacts"][0]["id"])[2].count(b"<redacted>") == 1
        everything = repr(run) + repr(j.device_history("e00fce68aabbccddeeff0011"))
        assert SECRET not in everything and "<redacted>" in everything
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("j.sqlite"))
    assert raw and SECRET.encode() not in raw


def test_device_history_is_kept_per_device_and_updated_field_by_field(journal):
    assert journal.device_history("E00F") is None
    journal.set_device_history("E00F", powered_by="LiPo and USB", mounted_on="Feather carrier")
    journal.set_device_history("e00f", peripherals="BME280 on I2C", mounted_on=None)
    history = journal.device_history("e00f")
    assert (history["powered_by"], history["mounted_on"], history["peripherals"], history["firmware_notes"]) == (
        "LiPo and USB",
        None,
        "BME280 on I2C",
        None,
    )
    with pytest.raises(TypeError, match="colour"):
        journal.set_device_history("e00f", colour="red")


def test_runs_lists_newest_first_and_by_device(journal):
    ids = [journal.start_run(1, device, "boron") for device in ("AA", "bb", "aa")]
    assert [r["id"] for r in journal.runs()] == ids[::-1]
    assert [r["id"] for r in journal.runs(device_id="aa")] == [ids[2], ids[0]]
    assert [r["id"] for r in journal.runs(limit=1)] == [ids[2]]
    journal.identify_run(ids[1], platform="argon")
    assert (journal.run(ids[1])["device_id"], journal.run(ids[1])["platform"]) == ("bb", "argon")
    with pytest.raises(UnknownRecordError):
        journal.run(999)


_CHILD = """
import sys, time
from kiosk.journal import Journal
j = Journal(sys.argv[1])
run_id = j.start_run(1, "e00fce68aabbccddeeff0011", "boron", scenario="app-crash")
for n in range(3):
    step = j.begin_step(run_id, f"rung{n}", "act")
    j.observe(run_id, "led", {"colour": "red", "pattern": "sos", "n": n}, step)
    j.end_step(step, "ok", f"step {n} done", {"n": n})
j.begin_step(run_id, "dfu", "write system part 1")
print(run_id, flush=True)
time.sleep(60)
"""

_CHILD_LOOP = """
import sys
from kiosk.journal import Journal
j = Journal(sys.argv[1])
run_id = j.start_run(1, "e00fce68aabbccddeeff0011", "boron")
while True:
    step = j.begin_step(run_id, "loop", "act")
    j.end_step(step, "ok", "x" * 200, {"n": step})
    print(step, flush=True)
"""


def _child(code: str, path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )


def test_kill_9_loses_no_completed_step(tmp_path):
    path = tmp_path / "journal.sqlite"
    child = _child(_CHILD, path)
    try:
        run_id = int(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL

    with Journal(path) as j:
        assert j._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        run = j.run(run_id)
        assert run["status"] == "running"
        assert [(s["rung"], s["outcome"], s["figures"]) for s in run["steps"][:3]] == [
            (f"rung{n}", "ok", {"n": n}) for n in range(3)
        ]
        assert (run["steps"][3]["rung"], run["steps"][3]["outcome"]) == ("dfu", None)  # begun, never ended
        assert len(run["observations"]) == 3
        assert j.mark_interrupted() == [run_id]
        run = j.run(run_id)
        assert run["status"] == "interrupted"
        assert [s["outcome"] for s in run["steps"]] == ["ok", "ok", "ok", "interrupted"]


def test_kill_9_in_the_middle_of_writing_loses_nothing_reported_done(tmp_path):
    path = tmp_path / "journal.sqlite"
    child = _child(_CHILD_LOOP, path)
    reported = []
    try:
        while len(reported) < 150:  # killed while it is busy writing, at no chosen point
            reported.append(int(child.stdout.readline()))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    with Journal(path) as j:
        assert j._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        steps = {s["id"]: s for s in j.run(1)["steps"]}
        assert all(steps[i]["outcome"] == "ok" and steps[i]["figures"] == {"n": i} for i in reported)
        assert sum(1 for s in steps.values() if s["outcome"] is None) <= 1


def test_backups_are_artifacts_listed_by_run_and_device_and_a_damaged_record_still_lists(journal):
    from kiosk.journal import BACKUP_MEDIA_TYPE

    first = journal.start_run(1, "E00FCE68AABBCCDDEEFF0011", "boron")
    second = journal.start_run(2, "e00fce68aabbccddeeff0022", "p2")
    facts = {"file": "backups/1-boron-user-part2.bin", "sha256": "ab" * 32, "size": 6068, "version": 6}
    journal.add_artifact(first, "1-boron-user-part2.bin", json_text(facts), BACKUP_MEDIA_TYPE)
    journal.add_artifact(first, "transcript.txt", "serial output")  # not a backup
    journal.add_artifact(second, "2-p2-user-part1.bin", "{not json", BACKUP_MEDIA_TYPE)
    listed = journal.backups()
    assert [b["run_id"] for b in listed] == [second, first]  # newest first
    assert listed[1]["sha256"] == "ab" * 32 and listed[1]["device_id"] == "e00fce68aabbccddeeff0011"
    assert listed[0]["problems"] == ["the journal's record of this backup does not read"]
    assert [b["run_id"] for b in journal.backups(run_id=first)] == [first]
    assert [b["run_id"] for b in journal.backups(device_id="E00FCE68AABBCCDDEEFF0022")] == [second]
    assert journal.backups(run_id=999) == []


def test_a_journal_from_before_backups_lists_none_and_keeps_one(tmp_path):
    path = tmp_path / "old.sqlite"
    Journal(path, migrations=MIGRATIONS[:2]).close()  # made by a kiosk two migrations old
    with Journal(path) as j:
        assert j.schema_version() == SCHEMA_VERSION and j.backups() == []
        run = j.start_run(1, None, "boron")
        from kiosk.journal import BACKUP_MEDIA_TYPE

        j.add_artifact(run, "b.bin", json_text({"sha256": "cd" * 32}), BACKUP_MEDIA_TYPE)
        assert [b["sha256"] for b in j.backups()] == ["cd" * 32]


def json_text(value) -> str:
    import json

    return json.dumps(value)
