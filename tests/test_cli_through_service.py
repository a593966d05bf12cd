"""The CLI through the bench service: with a service running, `kiosk recover`, `flash`, `update`, `restore --swd`,
`backup restore`, `list`, `inspect`, the mode commands, `led`, `history`, `report` and `device-history` ask it (the
same documents and exit statuses as alone, a busy slot refused), ``--simulate`` keeps to a private bench, with no
service answering each opens the bench itself, and Ctrl+C stops what the command started in the service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kiosk.cli import main
from kiosk.journal import BACKUP_MEDIA_TYPE, Journal
from kiosk.service.client import BenchClient, ServiceError
from tests.test_service import ROOT, service_on, wait_for


@pytest.fixture
def short_dir():
    """A folder with a short path: a socket's path has room for 108 bytes, pytest's tmp_path may not fit."""
    folder = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def service(short_dir, monkeypatch):
    """A simulated bench service on a temporary socket, which KIOSK_SOCKET names for every command."""
    from kiosk.commands import through_service

    started = service_on(short_dir, "app-crash@boron,healthy@p2", speed=50.0)
    monkeypatch.setenv("KIOSK_SOCKET", str(started.socket_path))
    monkeypatch.setattr(through_service, "FLASH_WAIT_S", 60.0)  # a flash that never ends fails the test, soon
    yield started
    started.close()


def test_recover_through_the_service_prints_the_document_it_prints_alone(service, capsys, tmp_path):
    status, out, err = cli(capsys, "recover", "--slot", "1", "--json")
    assert status == 0, err
    served = json.loads(out)
    assert "through the bench service on" in err
    status, out, _ = cli(capsys, "recover", "--simulate", "app-crash@boron", "--json", "--journal",
                         str(tmp_path / "alone.sqlite"))  # fmt: skip
    assert status == 0
    alone = json.loads(out)
    assert served.keys() == alone.keys()
    assert (served["slot"], served["verdict"], served["rung"]) == (alone["slot"], alone["verdict"], alone["rung"])
    assert [s["rung"] for s in served["steps"]] == [s["rung"] for s in alone["steps"]]
    run = Journal(service.engine.journal_path).run(served["run_id"])  # the service's journal kept it
    assert (run["status"], run["verdict"]) == ("finished", "recovered")


def test_recover_through_the_service_streams_progress_and_says_what_to_do(service, capsys):
    status, out, err = cli(capsys, "recover", "--slot", "1")
    assert status == 0
    assert "  slot 1: identify" in err and "  slot 1: safe-mode" in err and "  slot 1: recovered (" in err
    assert out.startswith("slot 1: recovered by safe-mode: ") and "  what to do: " in out


def test_recover_all_through_the_service_and_a_slot_another_client_runs(service, capsys):
    with BenchClient(service.socket_path, client="touchscreen", role="touchscreen").connect() as screen:
        screen.call("slot.recover", {"slot": 1})  # the touchscreen recovers slot 1 now
        status, _, err = cli(capsys, "recover", "--slot", "1")
        assert status == 2 and "busy" in err  # refused: the slot is the touchscreen's run
        status, out, _ = cli(capsys, "recover", "--all", "--json")
    docs = json.loads(out)
    assert status == 1  # one slot could not be recovered by this command
    assert [(d["slot"], d["verdict"]) for d in docs] == [(1, "error"), (2, "healthy")]
    assert "busy" in docs[0]["detail"] and docs[0]["run_id"] is None


def test_a_journal_or_library_other_than_the_services_is_refused_for_recover(service, capsys, tmp_path):
    status, _, err = cli(capsys, "recover", "--slot", "2", "--journal", str(tmp_path / "mine.sqlite"))
    assert status == 2 and "uses its own journal" in err
    status, _, err = cli(capsys, "recover", "--slot", "2", "--library", str(tmp_path / "lib"))
    assert status == 2 and "uses its own library" in err
    journal = str(service.engine.journal_path)
    assert cli(capsys, "recover", "--slot", "2", "--journal", journal)[0] == 0  # its own journal, named: fine


def test_bench_commands_open_the_bench_themselves_when_no_service_answers(service, capsys, short_dir):
    """A service runs, but not on the socket the command names: each command opens the bench itself (here: no
    config, exit 3 as ever), and none says it goes through a service."""
    nobody = ["--socket", str(short_dir / "nobody.sock"), "--config", str(short_dir / "none.toml")]
    for argv in (["list"], ["restore", "--swd"], ["backup", "restore", "1"], ["dfu"], ["flash", "tinker"]):
        status, _, err = cli(capsys, *argv, *nobody)
        assert status == 3 and "bench service" not in err, (argv, err)


def test_simulate_keeps_to_a_private_bench_beside_a_running_service(service, capsys, tmp_path):
    status, out, err = cli(capsys, "recover", "--simulate", "healthy", "--json", "--journal",
                           str(tmp_path / "mine.sqlite"))  # fmt: skip
    assert status == 0 and json.loads(out)["verdict"] == "healthy" and "bench service" not in err
    assert Journal(service.engine.journal_path).runs() == []  # the service's bench and journal were not used
    assert len(Journal(tmp_path / "mine.sqlite").runs()) == 1


def test_history_report_and_device_history_through_the_service_match_the_journal_read_alone(service, capsys):
    status, out, _ = cli(capsys, "recover", "--slot", "1", "--json")
    run_id = json.loads(out)["run_id"]
    journal = str(service.engine.journal_path)
    answers = {}
    for argv in (["history", "--json"], ["history"], ["report", str(run_id)], ["report", "--slot", "1"],
                 ["report", "--format", "json"]):  # fmt: skip
        served = cli(capsys, *argv)
        alone = cli(capsys, *argv, "--journal", journal, "--socket", "/nonexistent/bench.sock")
        assert served[0] == alone[0] == 0, argv
        assert served[1] == alone[1], argv  # the same bytes on stdout
        answers[tuple(argv)] = served
    device = json.loads(answers[("history", "--json")][1])[0]["device_id"]
    status, out, _ = cli(capsys, "device-history", device, "--powered-by", "LiPo", "--json")
    assert status == 0 and json.loads(out)["powered_by"] == "LiPo"
    assert Journal(journal).device_history(device)["powered_by"] == "LiPo"  # set in the service's journal
    assert "LiPo" in cli(capsys, "report", str(run_id))[1]
    assert cli(capsys, "report", "999")[0] == 2


def test_history_of_another_journal_file_reads_that_file(service, capsys, tmp_path):
    other = tmp_path / "other.sqlite"
    assert cli(capsys, "recover", "--simulate", "healthy", "--journal", str(other))[0] == 0
    status, out, _ = cli(capsys, "history", "--json", "--journal", str(other))
    assert status == 0 and [r["platform"] for r in json.loads(out)] == ["boron"]


def test_inspect_through_the_service_matches_inspect_alone(service, capsys):
    served_status, out, err = cli(capsys, "inspect", "--slot", "2", "--json")
    assert "through the bench service" in err
    served = json.loads(out)
    library = str(service.engine.library.root)
    status, out, _ = cli(capsys, "inspect", "--slot", "2", "--json", "--simulate", "app-crash@boron,healthy@p2",
                         "--library", library)  # fmt: skip
    alone = json.loads(out)
    assert served_status == status and served.keys() == alone.keys() and served["library"] == library

    def checks(doc: dict) -> list:
        return [(m["function"], m["index"], m["ok"], m["library"]) for m in doc["modules"]]

    assert checks(served) == checks(alone) and len(served["modules"]) == 5
    status, out, _ = cli(capsys, "inspect", "--slot", "2")
    assert status == served_status and "Integrity: PASS" in out
    assert cli(capsys, "inspect", "--slot", "9")[0] == 2  # no such slot: refused, as alone


def test_ctrl_c_on_a_recover_through_the_service_stops_the_run_it_started(short_dir):
    """The real command in its own process, against a service in this one, interrupted mid-run."""
    service = service_on(short_dir, "app-crash@boron", speed=1.0)
    heard: list[tuple[str, dict]] = []
    try:
        watcher = BenchClient(service.socket_path, client="test", role="cli", subscribe=True,
                              on_notification=lambda m, p: heard.append((m, p))).connect()  # fmt: skip
        env = {**os.environ, "KIOSK_SOCKET": str(service.socket_path), "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "recover", "--slot", "1"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            wait_for(lambda: any(m == "slot.busy" for m, _ in heard), 30, "the recovery to start in the service")
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 1 and "stopped" in err
        wait_for(lambda: any(m == "slot.idle" for m, _ in heard), 30, "the run's end")
        idle = next(p for m, p in heard if m == "slot.idle")
        assert idle["verdict"] == "stopped"
        watcher.close()
    finally:
        service.close()


def test_no_service_and_no_simulate_means_the_bench_of_the_config(capsys, short_dir, monkeypatch):
    """The old path is untouched when nobody answers on the socket (a stale socket file included)."""
    import socket

    stale = short_dir / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()  # a file nobody listens on: a service that died
    monkeypatch.setenv("KIOSK_SOCKET", str(stale))
    status, _, err = cli(capsys, "recover", "--slot", "1", "--config", str(short_dir / "none.toml"),
                         "--journal", str(short_dir / "j.sqlite"))  # fmt: skip
    assert status == 3 and "bench service" not in err
    assert Path(stale).exists()


# -- kiosk flash and kiosk update through the service ------------------------------------------------------------
SPEC = "app-crash@boron,healthy@p2"


def alone(capsys, service, tmp_path, *argv: str, files: bool = True) -> tuple[int, str, str]:
    """The same command on a private simulated bench like the service's, with the service's library."""
    mine = ["--library", str(service.engine.library.root), "--journal", str(tmp_path / "alone.sqlite")]
    return cli(capsys, *argv, "--simulate", SPEC, *(mine if files else []))


def steps(doc: dict) -> list:
    return [(Path(s["name"]).name, s["mechanism"]) for s in doc["plan"]["steps"]]


def outcomes(doc: dict) -> list:
    return [s["outcome"] for s in doc["steps"]]


def test_flash_through_the_service_gives_the_document_flash_gives_alone(service, capsys, tmp_path):
    status, out, err = cli(capsys, "flash", "tinker", "--slot", "1", "--json")
    assert status == 0, err
    assert "kiosk flash: through the bench service on" in err
    served = json.loads(out)
    a_status, a_out, _ = alone(capsys, service, tmp_path, "flash", "tinker", "--slot", "1", "--json")
    by_itself = json.loads(a_out)
    assert a_status == status and served.keys() == by_itself.keys()
    assert (served["refused"], served["command"], served["platform"]) == (False, "flash", "boron")
    assert steps(served) == steps(by_itself) and len(served["plan"]["steps"]) == 2
    assert outcomes(served) == outcomes(by_itself) == ["written", "written"]
    assert served["figures"].keys() == by_itself["figures"].keys() and served["final_usb_mode"] == "normal"
    assert len(served["backups"]) == len(by_itself["backups"]) == 1  # the customer's app, kept first
    journal = Journal(service.engine.journal_path)  # the service's journal kept it, as the command does alone
    run = journal.run(served["run_id"])
    assert (run["kind"], run["verdict"]) == ("manual flash", "flashed")
    assert {"command": "flash"} in [o["data"] for o in run["observations"] if o["kind"] == "command"]
    again = json.loads(cli(capsys, "flash", "tinker", "--slot", "1", "--json")[1])  # the device has it now
    assert again["plan"]["steps"] == [] and [s["why"] for s in again["already_on_device"]] == [
        "already on the device (same version and hash)"]  # fmt: skip


def test_flash_of_a_file_through_the_service_tells_the_progress_and_the_result_as_alone(service, capsys, tmp_path,
                                                                                       monkeypatch):  # fmt: skip
    module = next((service.engine.library.root / "modules" / "p2" / "apps").glob("*.bin"))
    monkeypatch.chdir(tmp_path)
    Path("app.bin").write_bytes(module.read_bytes())  # a relative path: the service reads it from its own folder
    status, out, err = cli(capsys, "flash", "app.bin", "--slot", "2")
    assert status == 0, err
    a_status, a_out, a_err = alone(capsys, service, tmp_path, "flash", "app.bin", "--slot", "2")
    assert a_status == status
    assert out.splitlines()[-1].startswith("slot 2: done (") and a_out.splitlines()[-1].startswith("slot 2: done (")
    progress = [line for line in err.splitlines() if line.startswith("  ")]
    assert progress and progress == [line for line in a_err.splitlines() if line.startswith("  ")]
    assert any(line.startswith("  1/1 app.bin: dfu, ") for line in progress)
    assert any(line.startswith("      written") for line in progress)


def test_a_refused_flash_through_the_service_is_refused_in_the_words_alone(service, capsys, tmp_path):
    served = cli(capsys, "flash", "--serial", "tinker", "--slot", "2")
    by_itself = alone(capsys, service, tmp_path, "flash", "--serial", "tinker", "--slot", "2")
    assert served[0] == by_itself[0] == 2
    lines = served[2].splitlines()[1:]  # after the line that says it goes through the service
    assert lines[0] == "Refused: nothing was written." and "no YModem" in lines[1]
    assert lines[:2] == by_itself[2].splitlines()[:2]
    assert lines[2].startswith("  It plans this way (checked): kiosk flash tinker --slot 2")  # --usb|auto planned
    doc = json.loads(cli(capsys, "flash", "--serial", "tinker", "--slot", "2", "--json")[1])
    alone_doc = json.loads(alone(capsys, service, tmp_path, "flash", "--serial", "tinker", "--slot", "2", "--json")[1])
    assert doc["reasons"] == alone_doc["reasons"] and doc["refused"] is True
    assert doc["suggestion"]["transport"] == alone_doc["suggestion"]["transport"]
    for argv in (["flash", str(tmp_path / "missing.bin")], ["flash", "/etc/hostname"]):  # unreadable, no module
        served, by_itself = cli(capsys, *argv), alone(capsys, service, tmp_path, *argv)
        assert served[0] == by_itself[0] == 2, argv
        assert served[2].splitlines()[-1] == by_itself[2].splitlines()[-1], argv
    assert cli(capsys, "flash", "tinker", "--slot", "9")[0] == 2  # no such slot: refused, as alone
    assert cli(capsys, "flash", "tinker", "--library", str(tmp_path))[0] == 2  # not the service's library


def test_flash_on_a_slot_another_client_runs_is_refused(service, capsys):
    with BenchClient(service.socket_path, client="touchscreen", role="touchscreen").connect() as screen:
        screen.call("slot.recover", {"slot": 1})
        status, _, err = cli(capsys, "flash", "tinker", "--slot", "1")
        assert status == 2 and "busy" in err
        status, _, err = cli(capsys, "update", "--slot", "1")
        assert status == 2 and "busy" in err


def test_update_through_the_service_gives_the_document_update_gives_alone(service, capsys, tmp_path):
    status, out, err = cli(capsys, "update", "--slot", "2", "--json")
    assert status == 0, err
    served = json.loads(out)
    a_status, a_out, _ = alone(capsys, service, tmp_path, "update", "--slot", "2", "--json")
    by_itself = json.loads(a_out)
    assert a_status == status and served.keys() == by_itself.keys()
    for key in ("command", "device_os", "skipped", "lacks", "platform"):
        assert served[key] == by_itself[key], key
    assert steps(served) == steps(by_itself) and outcomes(served) == outcomes(by_itself)
    status, _, err = cli(capsys, "update", "--slot", "2", "--device-os", "9.9.9")
    a_status, _, a_err = alone(capsys, service, tmp_path, "update", "--slot", "2", "--device-os", "9.9.9")
    assert status == a_status == 2 and err.splitlines()[-1] == a_err.splitlines()[-1]
    status, _, err = cli(capsys, "update", "--slot", "2")
    assert status == 0 and "Updating P2 / Photon 2 in slot 2 to Device OS " in err


def test_tests_talk_to_no_bench_service_of_the_host_unless_they_start_one(capsys, short_dir):
    """tests/conftest.py names a socket nobody listens on: a service on the developer's or CI host (at
    /run/particle-kiosk/bench.sock, or where the shell's KIOSK_SOCKET says) never answers a test's command."""
    import argparse

    from kiosk.commands import through_service
    from kiosk.service.wire import DEFAULT_SOCKET

    path = through_service.socket_path(argparse.Namespace())
    assert path != Path(DEFAULT_SOCKET) and not path.exists() and through_service._probe(path) == "none"
    status, _, err = cli(capsys, "list", "--config", str(short_dir / "none.toml"))
    assert status == 3 and "bench service" not in err  # no config, no service: the bench itself, not found


def test_mode_commands_through_the_service_give_what_they_give_alone(service, capsys, tmp_path):
    status, out, err = cli(capsys, "dfu", "--slot", "2", "--json")
    assert status == 0 and "kiosk dfu: through the bench service on" in err
    served = json.loads(out)
    a_status, a_out, _ = alone(capsys, service, tmp_path, "dfu", "--slot", "2", "--json", files=False)
    by_itself = json.loads(a_out)
    assert a_status == status and served.keys() == by_itself.keys()
    for key in ("slot", "command", "requested", "reached", "ok", "via", "platform"):
        assert served[key] == by_itself[key], key
    assert [a["method"] for a in served["attempts"]] == [a["method"] for a in by_itself["attempts"]]
    status, out, _ = cli(capsys, "reset", "--slot", "2")
    assert status == 0 and out.splitlines()[-1].startswith("slot 2: normal reached via ")
    with BenchClient(service.socket_path, client="touchscreen", role="touchscreen").connect() as screen:
        screen.call("slot.recover", {"slot": 1})
        status, _, err = cli(capsys, "dfu", "--slot", "1")
        assert status == 2 and "busy" in err  # the touchscreen's run has the slot
    assert cli(capsys, "dfu", "--slot", "9")[0] == 2


def test_led_through_the_service_reads_what_led_reads_alone(service, capsys, tmp_path):
    status, out, err = cli(capsys, "led", "--slot", "2", "--json", "--watch", "3")
    assert status == 0 and "kiosk led: through the bench service on" in err
    served = json.loads(out)
    a_status, a_out, _ = alone(capsys, service, tmp_path, "led", "--slot", "2", "--json", "--watch", "3", files=False)
    by_itself = json.loads(a_out)
    assert a_status == status and served.keys() == by_itself.keys() and served["slot"] == 2
    status, out, _ = cli(capsys, "led", "--slot", "2", "--watch", "3")
    a_status, a_out, _ = alone(capsys, service, tmp_path, "led", "--slot", "2", "--watch", "3", files=False)
    assert status == a_status == 0 and out.startswith("slot 2: ") and a_out.startswith("slot 2: ")
    assert cli(capsys, "led", "--slot", "2", "--watch", "0")[0] == 2  # out of range: refused


# -- kiosk list, kiosk restore --swd, kiosk backup restore through the service -----------------------------------
@pytest.mark.parametrize("spec, exit_status", [("healthy@boron,dead@p2", 0), ("dead@boron", 3)])
def test_list_through_the_service_prints_what_list_prints_alone(short_dir, capsys, monkeypatch, spec, exit_status):
    """The same bytes on stdout and the same exit status, for a device that answers and a slot with none (a
    bench with no device at all is exit 3)."""
    service = service_on(short_dir, spec, speed=50.0)
    monkeypatch.setenv("KIOSK_SOCKET", str(service.socket_path))
    try:
        for argv in (["list", "--json"], ["list"]):
            status, out, err = cli(capsys, *argv)
            a_status, a_out, a_err = cli(capsys, *argv, "--simulate", spec)
            assert "kiosk list: through the bench service on" in err and "bench service" not in a_err
            assert status == a_status == exit_status, err
            assert out == a_out, argv  # the same rows, in the same words
        rows = json.loads(cli(capsys, "list", "--json")[1])
    finally:
        service.close()
    if exit_status == 0:
        assert [(r["platform"], r["mode"], r["device_os"]) for r in rows] == [("boron", "normal", "6.1.1"),
                                                                            (None, None, None)]  # fmt: skip
    else:
        assert [r["device_id"] for r in rows] == [None]


def test_list_through_the_service_does_not_ask_a_busy_slots_device(service, capsys, monkeypatch):
    from kiosk.commands import device_cmd

    looked: list[int] = []
    real = device_cmd.device_row
    monkeypatch.setattr(device_cmd, "device_row", lambda bench, slot: looked.append(slot.index) or real(bench, slot))
    with BenchClient(service.socket_path, client="touchscreen", role="touchscreen").connect() as screen:
        screen.call("slot.recover", {"slot": 1})
        status, out, err = cli(capsys, "list", "--json")
        text_status, text, _ = cli(capsys, "list")
        screen.call("slot.stop", {"slot": 1})
    assert status == text_status == 0, err
    rows = json.loads(out)
    assert looked == [2, 2]  # slot 1 recovers: its device is asked nothing, not even looked for on USB
    assert rows[0]["busy_with"] == "recovery" and rows[0]["device_os"] is None and rows[0]["slot"] == 1
    assert "busy_with" not in rows[1] and rows[1]["device_os"]
    assert "slot 1: " in text and "busy with a recovery: the device is not asked now" in text
    assert text.splitlines()[1].startswith("slot 2: ") and "Device OS " in text.splitlines()[1]


@pytest.fixture
def swd_service(short_dir, monkeypatch):
    """A service whose slot 1 has a device with no bootloader (only SWD brings it back) and slot 2 a protected
    one; the library has the boron's restore image."""
    started = service_on(short_dir, "missing-bootloader@boron,protected@boron", speed=50.0)
    monkeypatch.setenv("KIOSK_SOCKET", str(started.socket_path))
    yield started
    started.close()


def swd_alone(capsys, service, tmp_path, *argv: str) -> tuple[int, str, str]:
    return cli(capsys, "restore", "--swd", *argv, "--simulate", "missing-bootloader@boron,protected@boron",
               "--library", str(service.engine.library.root))  # fmt: skip


def test_swd_restore_through_the_service_gives_what_it_gives_alone(swd_service, capsys, tmp_path):
    status, out, err = cli(capsys, "restore", "--swd", "--platform", "boron", "--json")
    assert status == 0, err
    assert "kiosk restore: through the bench service on" in err
    served = json.loads(out)
    a_status, a_out, _ = swd_alone(capsys, swd_service, tmp_path, "--platform", "boron", "--json")
    by_itself = json.loads(a_out)
    assert a_status == status and served.keys() == by_itself.keys()
    for key in ("slot", "ok", "platform", "image", "final_usb_mode"):
        assert served[key] == by_itself[key], key
    assert served["ok"] is True and served["final_usb_mode"] == "normal"
    step, alone_step = served["steps"][0], by_itself["steps"][0]
    assert step.keys() == alone_step.keys()
    for key in ("module", "file", "mechanism", "bytes", "outcome", "mass_erased", "notes", "device_busy_s"):
        assert step[key] == alone_step[key], key
    # the text: the phases on stderr as they begin, the same words at the end; not a journal run, as alone
    status, out, err = cli(capsys, "restore", "--swd", "--platform", "boron")
    a_status, a_out, a_err = swd_alone(capsys, swd_service, tmp_path, "--platform", "boron")
    assert status == a_status == 0
    phases = [line for line in err.splitlines() if line.startswith("  ")]
    assert phases and phases == [line for line in a_err.splitlines() if line.startswith("  ")]
    assert out == a_out and out.startswith("slot 1: restored ")
    assert Journal(swd_service.engine.journal_path).runs() == []
    state = swd_service.board.state(1)  # the card showed the write and says how it went
    assert state.verdict == "flashed" and "restored " in state.verdict_detail and not state.running


def test_swd_restore_through_the_service_is_refused_as_alone(swd_service, capsys, tmp_path):
    # slot 2's protected device panics over and over: while it reboots it answers no control request, so only
    # in DFU mode (the protection string) is its protection sure to be read; the command alone asks it at once
    assert cli(capsys, "dfu", "--slot", "2")[0] == 0
    refusals = (
        ["--slot", "2"],  # Device Protection: exit 2
        [],  # no device on USB and no --platform: exit 2
        ["--platform", "p2"],  # pyOCD has no target for the P2: exit 1, with a document
        ["--platform", "nonesuch"],  # exit 2
        ["--platform", "boron", "--device-os", "9.9.9"],  # no restore image of that release: exit 2
        ["--platform", "boron", "--probe", "no-such-probe"],  # not the probe named: exit 3
    )
    for argv in refusals:
        served = cli(capsys, "restore", "--swd", *argv)
        by_itself = swd_alone(capsys, swd_service, tmp_path, *argv)
        assert served[0] == by_itself[0] != 0, argv
        assert served[2].splitlines()[-1] == by_itself[2].splitlines()[-1], argv  # the same words
        served = cli(capsys, "restore", "--swd", *argv, "--json")
        by_itself = swd_alone(capsys, swd_service, tmp_path, *argv, "--json")
        assert served[0] == by_itself[0] and served[1] == by_itself[1], argv  # a failed restore's document too
    assert "Device Protection is on" in cli(capsys, "restore", "--swd", "--slot", "2")[2]
    assert cli(capsys, "restore", "--swd", "--platform", "boron", "--probe", "no-such-probe")[0] == 3
    assert cli(capsys, "restore", "--swd", "--slot", "9")[0] == 2  # no such slot, as alone
    assert not any(swd_service.board.state(n).running for n in (1, 2))


def test_swd_restore_on_a_slot_another_client_runs_is_refused(service, capsys):
    with BenchClient(service.socket_path, client="touchscreen", role="touchscreen").connect() as screen:
        screen.call("slot.recover", {"slot": 1})
        status, _, err = cli(capsys, "restore", "--swd", "--platform", "boron", "--slot", "1")
        assert status == 2 and "busy with a recovery" in err


def test_an_swd_restore_through_the_service_keeps_its_slot_busy_and_ctrl_c_stops_it(short_dir):
    """The real command in its own process: while it restores, the slot is busy for every other client (a
    recovery or mode change refused, `kiosk list` does not ask it); Ctrl+C stops the restore it started."""
    from kiosk.service.wire import BUSY

    service = service_on(short_dir, "missing-bootloader@boron,healthy@p2", speed=1.0)
    heard: list[tuple[str, dict]] = []
    try:
        watcher = BenchClient(service.socket_path, client="test", role="touchscreen", subscribe=True,
                              on_notification=lambda m, p: heard.append((m, p))).connect()  # fmt: skip
        env = {**os.environ, "KIOSK_SOCKET": str(service.socket_path), "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "kiosk.cli", "restore", "--swd", "--platform", "boron"]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: any(m == "slot.event" and p["slot"] == 1 and p["event"]["event"] == "Progress"
                                 for m, p in heard), 60, "the restore to begin writing")  # fmt: skip
            busy = next(p for m, p in heard if m == "slot.busy")
            assert (busy["slot"], busy["busy_with"], busy["state"]["activity"]) == (1, "restore over SWD",
                                                                                      "running")  # fmt: skip
            for method, params in (("slot.recover", {"slot": 1}), ("slot.mode", {"slot": 1, "mode": "reset"})):
                with pytest.raises(ServiceError) as refused:
                    watcher.call(method, params)
                assert refused.value.code == BUSY and "busy with a restore over SWD" in refused.value.message
            rows = watcher.call("bench.devices", {}, timeout=60)["slots"]
            assert rows[0]["busy_with"] == "restore over SWD" and "busy_with" not in rows[1]
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 1 and "stopped" in err, err
        wait_for(lambda: any(m == "slot.idle" for m, _ in heard), 30, "the restore's end")
        idle = next(p for m, p in heard if m == "slot.idle")
        assert idle["slot"] == 1 and idle["verdict"] == "stopped"
        assert watcher.call("slot.recover", {"slot": 1})["run_id"]  # the slot is free again
        watcher.call("slot.stop", {"slot": 1})
        watcher.close()
    finally:
        service.close()


BACKUP_SPEC = "app-crash@boron,dead@p2"


@pytest.fixture
def backup_service(short_dir, monkeypatch):
    """A service whose slot 1 device crashes in its app (the recovery keeps the app, then writes Tinker over it)
    and whose slot 2 shows nothing on USB."""
    started = service_on(short_dir, BACKUP_SPEC, speed=50.0)
    monkeypatch.setenv("KIOSK_SOCKET", str(started.socket_path))
    yield started
    started.close()


@pytest.fixture
def one_bench(monkeypatch):
    """Alone, every command of a test on one simulated bench, so the next finds the device as the last left it."""
    from kiosk.bench import simulated_bench

    made: list = []

    def same(spec, speed=None):
        if not made:
            made.append(simulated_bench(spec, speed))
            made.append(made[0].close)
            made[0].close = lambda: None
        return made[0]

    monkeypatch.setattr("kiosk.commands.device_cmd.simulated_bench", same)
    yield
    if made:
        made[1]()


def test_backup_restore_through_the_service_gives_what_it_gives_alone(backup_service, one_bench, capsys, tmp_path):
    journal = str(tmp_path / "alone.sqlite")
    mine = ["--simulate", BACKUP_SPEC, "--journal", journal]

    def recovered(*alone: str) -> str:  # the recovery keeps the crashing app, then writes Tinker over it
        doc = json.loads(cli(capsys, "recover", "--slot", "1", "--json", *alone)[1])
        assert doc["verdict"] == "recovered"
        return str(doc["run_id"])

    library = ["--library", str(backup_service.engine.library.root)]  # the same Tinker, kept in its turn
    run, alone_run = recovered(), recovered(*mine, *library)
    status, out, err = cli(capsys, "backup", "restore", run, "--slot", "1", "--json")
    assert status == 0, err
    assert "kiosk backup restore: through the bench service on" in err
    served = json.loads(out)
    a_status, a_out, _ = cli(capsys, "backup", "restore", alone_run, "--slot", "1", "--json", *mine)
    by_itself = json.loads(a_out)
    assert a_status == status and served.keys() == by_itself.keys()
    for key in ("refused", "platform", "command", "ok", "final_usb_mode"):
        assert served[key] == by_itself[key], key
    assert served["command"] == "backup restore" and served["restoring_run"] == int(run)
    assert [r["sha256"] for r in served["restoring"]] == [r["sha256"] for r in by_itself["restoring"]]
    assert steps(served) == steps(by_itself) and outcomes(served) == outcomes(by_itself)
    assert set(outcomes(served)) == {"written"} and served["final_usb_mode"] == "normal"
    assert len(served["backups"]) == len(by_itself["backups"]) == 1  # what it wrote over (Tinker) is kept too
    with Journal(backup_service.engine.journal_path) as kept:  # a run of its own in the service's journal
        restored = kept.run(served["run_id"])
    assert (restored["kind"], restored["verdict"]) == ("manual flash", "flashed")
    assert {"command": "backup restore"} in [o["data"] for o in restored["observations"] if o["kind"] == "command"]
    # the text (the crashing app is back: recovered again first): what it restores where, the progress, the end
    run, alone_run = recovered(), recovered(*mine, *library)
    served = cli(capsys, "backup", "restore", run, "--slot", "1")
    by_itself = cli(capsys, "backup", "restore", alone_run, "--slot", "1", *mine)
    assert served[0] == by_itself[0] == 0
    said = served[2].splitlines()[1:]  # after the line that says it goes through the service
    assert said[0].startswith(f"Restoring the app kept by run {run} to Boron ") and said[0].endswith(" in slot 1")
    assert said[0] == by_itself[2].splitlines()[0].replace(f"run {alone_run} ", f"run {run} ")
    here, there = str(Path(backup_service.engine.journal_path).parent), str(tmp_path)  # each journal's folder
    assert [line.replace(here, "J") for line in said[1:]] == [line.replace(there, "J") for line in
                                                              by_itself[2].splitlines()[1:]]  # fmt: skip
    assert any(line.startswith("  1/") for line in said)
    assert served[1].splitlines()[-1].split(" (")[0] == by_itself[1].splitlines()[-1].split(" (")[0] == "slot 1: done"


def test_backup_restore_through_the_service_is_refused_as_alone(backup_service, one_bench, capsys, tmp_path):
    run = str(json.loads(cli(capsys, "recover", "--slot", "1", "--json")[1])["run_id"])
    empty = str(json.loads(cli(capsys, "recover", "--slot", "2", "--json")[1])["run_id"])  # a run that kept nothing
    journal = tmp_path / "alone.sqlite"
    mine = ["--simulate", BACKUP_SPEC, "--journal", str(journal)]
    assert cli(capsys, "recover", "--slot", "1", *mine)[0] == 0
    assert cli(capsys, "recover", "--slot", "2", *mine)[0] != 0
    for argv in (["99"], [empty], [run, "--slot", "2"]):  # no such run, a run without a backup, no device: exit 3
        served, by_itself = cli(capsys, "backup", "restore", *argv), cli(capsys, "backup", "restore", *argv, *mine)
        assert served[0] == by_itself[0] == 3, (argv, served[2])
        words = served[2].splitlines()[-1].replace(str(backup_service.engine.journal_path), "J")
        assert words == by_itself[2].splitlines()[-1].replace(str(journal), "J"), argv
        doc = json.loads(cli(capsys, "backup", "restore", *argv, "--json")[1])
        alone_doc = json.loads(cli(capsys, "backup", "restore", *argv, "--json", *mine)[1])
        assert (doc["ok"], doc["refused"], doc["status"]) == (alone_doc["ok"], alone_doc["refused"], 3), argv
    # a backup kept from another device than the one in the slot: refused, nothing written, the same words
    served_journal = backup_service.engine.journal_path
    for path in (served_journal, journal):
        with Journal(path) as kept:
            backup = kept.backups(run_id=int(run))[0]
            fake = kept.start_run(1, "0" * 24, "boron", kind="manual flash")
            facts = {k: v for k, v in backup.items() if k not in ("artifact_id", "run_id", "created_at", "slot")}
            kept.add_artifact(fake, "other.bin", json.dumps({**facts, "device_id": "0" * 24}), BACKUP_MEDIA_TYPE)
    served, by_itself = cli(capsys, "backup", "restore", str(fake)), cli(capsys, "backup", "restore", str(fake), *mine)
    assert served[0] == by_itself[0] == 2
    assert served[2].splitlines()[-1] == by_itself[2].splitlines()[-1]
    assert f"run {fake}'s backup is of device {'0' * 24}, but the device in slot 1 is " in served[2]
    with Journal(served_journal) as kept:
        backup = kept.backups(run_id=int(run))[0]
    # a changed file, then a missing one
    path = Path(served_journal).parent / backup["file"]
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    status, _, err = cli(capsys, "backup", "restore", run, "--slot", "1")
    assert status == 2 and "no longer has the SHA-256" in err and "nothing was written" in err
    path.unlink()
    assert cli(capsys, "backup", "restore", run, "--slot", "1")[0] == 3
    assert cli(capsys, "backup", "restore", run, "--slot", "9")[0] == 2  # no such slot
    assert cli(capsys, "backup", "restore", run, "--journal", str(journal))[0] == 2  # not the service's journal


def test_backup_restore_on_a_slot_another_client_runs_is_refused(backup_service, capsys):
    run = str(json.loads(cli(capsys, "recover", "--slot", "1", "--json")[1])["run_id"])
    # the device in slot 1 runs Tinker now (a recovery of it ends at once): slot 2's, which shows nothing on
    # USB, takes the ladder a while
    heard: list[tuple[str, dict]] = []
    with BenchClient(backup_service.socket_path, client="touchscreen", role="touchscreen", subscribe=True,
                     on_notification=lambda m, p: heard.append((m, p))).connect() as screen:  # fmt: skip
        for json_out in ([], ["--json"]):  # each while the touchscreen's recovery has just begun on the slot
            heard.clear()
            screen.call("slot.recover", {"slot": 2})
            status, out, err = cli(capsys, "backup", "restore", run, "--slot", "2", *json_out)
            screen.call("slot.stop", {"slot": 2})
            wait_for(lambda: any(m == "slot.idle" for m, _ in heard), 30, "the recovery to stop")
            assert status == 2 and "busy with a recovery" in err
            if json_out:
                assert json.loads(out)["refused"] is True and json.loads(out)["status"] == 2


def test_ctrl_c_on_a_mode_command_through_the_service_stops_the_change_it_started(short_dir):
    """`kiosk dfu` in its own process, on a device that refuses the control request (so MODE is held through
    RESET): the touchscreen hears the slot busy, and Ctrl+C lets MODE go at once."""
    service = service_on(short_dir, "protected@boron", speed=1.0)
    buttons = service.engine.bench.slot(1).buttons
    heard: list[tuple[str, dict]] = []
    try:
        watcher = BenchClient(service.socket_path, client="test", role="touchscreen", subscribe=True,
                              on_notification=lambda m, p: heard.append((m, p))).connect()  # fmt: skip
        env = {**os.environ, "KIOSK_SOCKET": str(service.socket_path), "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "kiosk.cli", "dfu", "--slot", "1"]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: buttons.mode.pressed, 60, "MODE held for the DFU mode")
            assert [p["busy_with"] for m, p in heard if m == "slot.busy"] == ["mode change"]
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 1 and "stopped" in err, err
        wait_for(lambda: any(m == "slot.idle" for m, _ in heard), 10, "the mode change's end")
        assert not buttons.mode.pressed and not buttons.reset.pressed
        idle = next(p for m, p in heard if m == "slot.idle")
        assert idle["state"]["rung_detail"] == "dfu stopped; buttons released"
        watcher.close()
    finally:
        service.close()
