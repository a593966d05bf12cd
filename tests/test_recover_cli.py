"""`kiosk recover` end to end on the simulator: verdicts, the journal, parallel slots."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from kiosk.cli import main
from kiosk.journal import Journal


def run_json(capsys, *argv: str):
    status = main([*argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_recover_one_slot_is_journaled(capsys, tmp_path):
    journal = tmp_path / "journal.sqlite"
    status, doc = run_json(capsys, "recover", "--simulate", "app-crash@photon", "--journal", str(journal))
    assert status == 0
    assert (doc["verdict"], doc["rung"]) == ("recovered", "safe-mode")
    assert doc["elapsed_s"] > 0 and doc["minimum_s"] > 0
    assert [s["rung"] for s in doc["steps"]][:2] == ["identify", "safe-mode"]
    run = Journal(journal).run(doc["run_id"])
    assert (run["status"], run["verdict"], run["platform"]) == ("finished", "recovered", "photon")
    assert len(run["steps"]) == len(doc["steps"])
    assert all(step["outcome"] for step in run["steps"])  # every step was completed in the journal
    kinds = {o["kind"] for o in run["observations"]}
    assert {"led", "usb", "modules"} <= kinds


def test_recover_all_slots_in_parallel(capsys, tmp_path):
    status, docs = run_json(capsys, "recover", "--all", "--simulate", "app-crash,corrupt-system@photon,healthy@p2,dead",
                            "--journal", str(tmp_path / "j.sqlite"))  # fmt: skip
    assert status == 1  # the dead one cannot be recovered
    assert [(d["slot"], d["verdict"]) for d in docs] == [
        (1, "recovered"), (2, "recovered"), (3, "healthy"), (4, "damaged-hardware"),
    ]  # fmt: skip
    one = [d["elapsed_s"] for d in docs]
    assert max(one) < 60  # in parallel: as long as the slowest, not the sum


def test_recover_healthy_writes_nothing(capsys, tmp_path):
    status, doc = run_json(capsys, "recover", "--simulate", "healthy", "--journal", str(tmp_path / "j.sqlite"))
    assert status == 0 and doc["verdict"] == "healthy"
    assert [s["rung"] for s in doc["steps"]] == ["identify"]


def test_history_report_and_device_history(capsys, tmp_path):
    journal = str(tmp_path / "j.sqlite")
    status, doc = run_json(capsys, "recover", "--simulate", "app-heap@boron", "--journal", journal)
    assert status == 0
    status, runs = run_json(capsys, "history", "--journal", journal)
    assert status == 0 and [r["id"] for r in runs] == [doc["run_id"]]
    device = runs[0]["device_id"]
    status, history = run_json(capsys, "device-history", device, "--powered-by", "LiPo and USB", "--journal", journal)
    assert status == 0 and history["powered_by"] == "LiPo and USB"
    assert main(["report", str(doc["run_id"]), "--journal", journal]) == 0
    markdown = capsys.readouterr().out
    assert "SOS, code 8 (OutOfHeap)" in markdown and "LiPo and USB" in markdown
    assert main(["report", str(doc["run_id"]), "--format", "json", "--journal", journal]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"]["verdict"] == "recovered" if isinstance(report.get("verdict"), dict) else True
    assert main(["report", "999", "--journal", journal]) == 2
    capsys.readouterr()


def test_history_without_a_journal_says_so(capsys, tmp_path):
    assert main(["history", "--journal", str(tmp_path / "none.sqlite")]) == 1
    assert "nothing has been recovered here yet" in capsys.readouterr().err


def test_demo_recovers_its_devices(capsys, tmp_path):
    status, docs = run_json(capsys, "demo", "--speed", "1000", "--scenarios", "app-crash,cold-boot-fixes@photon",
                            "--journal", str(tmp_path / "j.sqlite"))  # fmt: skip
    assert status == 0
    assert [(d["verdict"], d["rung"]) for d in docs] == [("recovered", "safe-mode"), ("recovered", "cold-boot")]


# --- `kiosk history` and `kiosk report` on journals written directly (a clock the test sets) ---------------

DEVICE_A, DEVICE_B, DEVICE_C = "e00fce68aabbccddeeff0011", "e00fce68aabbccddeeff0022", "0a10aced202194944a0c2b3d"


def write_runs(path, runs, start=datetime(2025, 3, 14, 9, 26, 41, tzinfo=UTC)):
    """Journal ``runs`` (slot, device id, verdict, rung, elapsed_s; verdict None: still running) a minute apart."""
    now = [start]
    with Journal(path, now=lambda: now[0]) as journal:
        ids = []
        for i, (slot, device, verdict, rung, elapsed) in enumerate(runs):
            now[0] = start + timedelta(minutes=i)
            run_id = journal.start_run(slot, device, "boron")
            if verdict is not None:
                journal.finish_run(run_id, verdict, rung, "", elapsed_s=elapsed)
            ids.append(run_id)
    return ids


def report_of(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """`kiosk report ... --format json`: the exit status, the report (None when there is none) and stderr."""
    status = main(["report", *argv, "--format", "json"])
    out, err = capsys.readouterr()
    return status, json.loads(out) if out else None, err


def test_history_shows_when_each_run_started_and_how_long_it_took(capsys, tmp_path):
    journal = tmp_path / "j.sqlite"
    ids = write_runs(journal, [(1, DEVICE_A, "recovered", "safe-mode", 41.24),
                               (2, DEVICE_B, "needs-owner", None, 245.0), (3, None, None, None, None)])  # fmt: skip
    # A clock in another time zone: still shown in UTC (09:29 here is 11:29 in UTC+2).
    with Journal(journal, now=lambda: datetime(2025, 3, 14, 11, 29, 5, tzinfo=timezone(timedelta(hours=2)))) as j:
        ids.append(j.start_run(4, DEVICE_C, "p2"))
        j.finish_run(ids[-1], "healthy", None, "", elapsed_s=3 * 3600 + 125)
    assert main(["history", "--journal", str(journal)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "started", "(UTC)", "took", "slot", "device", "platform", "status", "verdict"]
    assert [line.split()[:4] for line in lines[1:]] == [
        [str(ids[3]), "2025-03-14", "09:29", "3"],  # newest first; then the took column: "3 h 02 min"
        [str(ids[2]), "2025-03-14", "09:28", "-"],
        [str(ids[1]), "2025-03-14", "09:27", "4"],
        [str(ids[0]), "2025-03-14", "09:26", "41.2"],
    ]
    newest, running, owner, fixed = lines[1:]
    assert "3 h 02 min" in newest and f" 4  {DEVICE_C}  p2 " in newest and newest.endswith("finished  healthy")
    assert " 3  ?  " in running and running.endswith("running   -")
    assert "4 min 05 s" in owner and owner.endswith("needs-owner")
    assert "41.2 s" in fixed and fixed.endswith("recovered by safe-mode")
    # Aligned: every column starts where its heading does.
    for heading in ("started", "slot", "device", "platform", "status", "verdict"):
        column = lines[0].index(heading)
        assert all(line[column - 1] == " " and line[column] != " " for line in lines[1:] if heading != "slot"), heading
    assert {len(line[: lines[0].index("device")]) for line in lines} == {lines[0].index("device")}


def test_history_limit_says_how_many_older_runs_there_are(capsys, tmp_path):
    journal = tmp_path / "j.sqlite"
    ids = write_runs(journal, [(1 + i % 2, DEVICE_A, "recovered", "cold-boot", 9.8) for i in range(7)])
    assert main(["history", "--limit", "3", "--journal", str(journal)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in lines[1:4]] == ids[:-4:-1]  # the three newest
    assert lines[4:] == ["... and 4 older runs (--limit 0 shows them all)"]
    assert main(["history", "--limit", "0", "--journal", str(journal)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in lines[1:]] == ids[::-1]  # all of them, and no "older" line
    assert main(["history", "--limit", "7", "--journal", str(journal)]) == 0
    assert "older" not in capsys.readouterr().out
    status, runs = run_json(capsys, "history", "--limit", "2", "--journal", str(journal))
    assert status == 0 and [r["id"] for r in runs] == ids[:-3:-1] and runs[0]["started_at"].startswith("2025-03-14T")
    assert main(["history", "--limit", "-1", "--journal", str(journal)]) == 2
    assert "is not a count" in capsys.readouterr().err


def test_report_takes_the_latest_run_of_the_journal_a_slot_or_a_device(capsys, tmp_path):
    journal = tmp_path / "j.sqlite"
    ids = write_runs(journal, [
        (1, DEVICE_A, "recovered", "safe-mode", 30.0),
        (2, DEVICE_B, "needs-technician", None, 50.0),
        (1, DEVICE_C, "healthy", None, 5.0),   # slot 1's latest
        (2, DEVICE_A, "recovered", "update", 90.0),  # slot 2's latest and device A's latest
        (3, DEVICE_B, None, None, None),  # the latest of all, of slot 3 and of device B: still running
    ])  # fmt: skip
    path = str(journal)
    cases = {
        (): (ids[4], "(the latest in the journal, still running)"),
        ("--slot", "1"): (ids[2], "(the latest of slot 1)"),
        ("--slot", "2"): (ids[3], "(the latest of slot 2)"),
        ("--slot", "3"): (ids[4], "(the latest of slot 3, still running)"),
        ("--device", DEVICE_A): (ids[3], f"(the latest of device {DEVICE_A})"),
        ("--device", DEVICE_B.upper()): (ids[4], f"(the latest of device {DEVICE_B}, still running)"),
        ("--device", DEVICE_C): (ids[2], f"(the latest of device {DEVICE_C})"),
        (str(ids[1]),): (ids[1], ""),
    }
    for argv, (run_id, how) in cases.items():
        status, report, err = report_of(capsys, *argv, "--journal", path)
        assert status == 0 and report["run"]["id"] == run_id, argv
        assert err.strip() == f"report of run {run_id} {how}".strip(), argv
    # Markdown and --out say the same; the markdown is the chosen run's.
    assert main(["report", "--slot", "1", "--journal", path]) == 0
    out, err = capsys.readouterr()
    assert DEVICE_C in out.splitlines()[0] and err == f"report of run {ids[2]} (the latest of slot 1)\n"
    assert main(["report", "--device", DEVICE_A, "--out", str(tmp_path / "r.md"), "--journal", path]) == 0
    out, err = capsys.readouterr()
    assert out == "" and DEVICE_A in (tmp_path / "r.md").read_text()
    assert err == f"report of run {ids[3]} (the latest of device {DEVICE_A}) written to {tmp_path / 'r.md'}\n"


def test_report_latest_is_the_last_started_even_when_the_clock_went_back(capsys, tmp_path):
    journal = tmp_path / "j.sqlite"
    ids = write_runs(journal, [(2, DEVICE_A, "healthy", None, 5.0)], start=datetime(2025, 6, 1, tzinfo=UTC))
    ids += write_runs(journal, [(2, DEVICE_B, "healthy", None, 5.0)], start=datetime(2024, 1, 1, tzinfo=UTC))
    status, report, _ = report_of(capsys, "--slot", "2", "--journal", str(journal))
    assert status == 0 and report["run"]["id"] == ids[1] and report["device"]["device_id"] == DEVICE_B


def test_report_refuses_contradictions_and_ids_that_are_not_device_ids(capsys, tmp_path):
    journal = tmp_path / "j.sqlite"
    ids = write_runs(journal, [(1, DEVICE_A, "healthy", None, 5.0)])
    path = str(journal)
    for argv, says in [
        ((str(ids[0]), "--slot", "1"), f"RUN_ID {ids[0]} and --slot contradict each other"),
        ((str(ids[0]), "--device", DEVICE_A), f"RUN_ID {ids[0]} and --device contradict each other"),
        (("--device", "adff26"), "'adff26' is not a device id: a device id is 24 hex digits"),
        (("--device", DEVICE_A[:-1] + "g"), "is not a device id: a device id is 24 hex digits"),
        (("--device", DEVICE_A + "0"), "is not a device id: a device id is 24 hex digits"),
        (("--slot", "0"), "'0' is not a slot"),
        (("--slot", "two"), "'two' is not a slot"),
        (("--slot", "1", "--device", DEVICE_A), "not allowed with argument"),
    ]:
        status, report, err = report_of(capsys, *argv, "--journal", path)
        assert (status, report) == (2, None), argv
        assert says in err and "Traceback" not in err, argv


def test_report_and_history_say_no_runs_recorded_alike(capsys, tmp_path):
    journal = tmp_path / "j.sqlite"
    Journal(journal).close()  # a journal without runs
    path = str(journal)
    status, report, err = report_of(capsys, "--journal", path)
    assert (status, report) == (1, None)
    assert err == f"kiosk: no runs recorded in {path}: run `kiosk recover` first\n"
    assert main(["history", "--journal", path]) == 0
    assert capsys.readouterr().out == f"no runs recorded in {path}: run `kiosk recover` first\n"
    write_runs(journal, [(1, DEVICE_A, "healthy", None, 5.0), (2, DEVICE_B, "healthy", None, 5.0)])
    for argv, whose in [(("--slot", "3"), "for slot 3"), (("--device", DEVICE_C), f"for device {DEVICE_C}")]:
        status, report, err = report_of(capsys, *argv, "--journal", path)
        assert (status, report) == (1, None), argv
        assert err == f"kiosk: no runs recorded {whose} in {path}: `kiosk history` lists the runs there are\n"
    assert main(["history", "--device", DEVICE_C, "--journal", path]) == 0
    assert capsys.readouterr().out.startswith(f"no runs recorded for device {DEVICE_C} in {path}")
    status, report, err = report_of(capsys, "99", "--journal", path)
    assert (status, report) == (2, None) and err.startswith(f"kiosk: no run 99 in {path}")
    # No journal at all: the same words, and what to do.
    status, report, err = report_of(capsys, "--slot", "1", "--journal", str(tmp_path / "none.sqlite"))
    assert (status, report) == (1, None) and err.startswith("kiosk: no runs recorded: there is no journal at")
    assert "run `kiosk recover` first" in err


def test_history_and_report_texts_speak_of_the_cli_commands(capsys, tmp_path):
    journal = tmp_path / "j.sqlite"
    Journal(journal).close()
    texts = []
    for argv in (["history"], ["report"], ["report", "--slot", "2"], ["report", "7"], ["report", "--device", "x"]):
        for where in (journal, tmp_path / "none.sqlite"):
            main([*argv, "--journal", str(where)])
            texts.append("".join(capsys.readouterr()))
    for argv in (["history", "--help"], ["report", "--help"]):
        main(argv)
        texts.append("".join(capsys.readouterr()))
    assert all("Recover" not in text and "button" not in text.lower() for text in texts), texts
    assert sum("`kiosk recover`" in text for text in texts) >= 4


def _piped(journal, *argv: str, read_lines: int) -> tuple[int, list[bytes], bytes]:
    """`python -m kiosk.cli ARGV` into a reader that reads ``read_lines`` lines, then closes the pipe."""
    command = [sys.executable, "-m", "kiosk.cli", *argv, "--journal", str(journal)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    assert proc.stdout is not None and proc.stderr is not None
    lines = [proc.stdout.readline() for _ in range(read_lines)]
    proc.stdout.close()  # the reader goes away, as `head` does
    err = proc.stderr.read()
    return proc.wait(timeout=60), lines, err


def test_output_piped_into_a_reader_that_closes_early_ends_quietly(tmp_path):
    journal = tmp_path / "j.sqlite"
    ids = write_runs(journal, [(1 + i % 4, DEVICE_A, "recovered", "safe-mode", 12.5) for i in range(1500)])
    # 1500 lines of about 100 bytes: more than a pipe holds, so the writer meets the closed pipe for sure.
    status, lines, err = _piped(journal, "history", "--limit", "0", read_lines=2)
    assert lines[0].split()[:3] == [b"run", b"started", b"(UTC)"] and lines[1].split()[0] == str(ids[-1]).encode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err and b"Exception ignored" not in err, err
    assert status == 141
    status, lines, err = _piped(journal, "history", "--limit", "0", "--json", read_lines=1)
    assert (status, lines, err) == (141, [b"[\n"], b"")
    # A reader that is gone before anything is written (`kiosk report | head -0`, say).
    status, lines, err = _piped(journal, "report", "--slot", "2", read_lines=0)
    assert (status, err) == (141, b"")
    # Read to the end, nothing is broken: the status is the command's own.
    status, lines, err = _piped(journal, "history", read_lines=52)  # the heading, 50 runs, the last line
    assert status == 0 and lines[-1] == b"... and 1450 older runs (--limit 0 shows them all)\n" and err == b""


def test_flaky_cable_is_named_with_its_count_in_the_verdict_the_journal_and_the_report(capsys, tmp_path):
    journal = tmp_path / "j.sqlite"
    status, doc = run_json(capsys, "recover", "--simulate", "flaky-cable", "--journal", str(journal))
    assert status == 0 and doc["verdict"] == "recovered"
    errors = doc["usb_errors"]
    assert errors > 0  # the scenario's cable garbles one DFU transfer in 7
    assert main(["report", "--journal", str(journal), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"]["usb_errors"] == errors
    assert f"check the USB cable: {errors} USB transfers failed" in report["verdict"]["what_to_do"]
    assert main(["report", "--journal", str(journal)]) == 0
    assert f"- USB cable: check the USB cable: {errors} USB transfers failed" in capsys.readouterr().out
    # a sound cable says nothing of it
    status, doc = run_json(capsys, "recover", "--simulate", "corrupt-system", "--journal", str(journal))
    assert status == 0 and doc["usb_errors"] == 0
    assert main(["report", "--journal", str(journal)]) == 0
    assert "USB cable" not in capsys.readouterr().out


def test_recover_says_what_to_do_in_the_clis_own_words(capsys, tmp_path):
    assert main(["recover", "--simulate", "battery-fitted", "--journal", str(tmp_path / "j.sqlite")]) == 1
    out = capsys.readouterr().out
    assert "what to do: Unplug its battery, then run `kiosk recover --slot 1` again." in out
    assert "Recover button" not in out and "press Recover" not in out
