"""`kiosk recover [--slot N | --all]`: the recovery ladder on one slot or all of them, journaled.

Slots recover in parallel, one worker thread each (each a clock actor, so simulated device time waits
for all of them). Every run, step and observation goes to the journal (SQLite) before and after it
happens. ``--json`` prints, per slot, the run id, the verdict, the rung that fixed it, the steps with
their outcomes, and ``elapsed_s`` and ``minimum_s`` (device seconds).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
from pathlib import Path
from typing import Any

from kiosk.advice import again_cli, instruction
from kiosk.commands.common import EXIT_FAILED, EXIT_OK, CommandError, emit
from kiosk.commands.device_cmd import add_bench_options, open_bench
from kiosk.commands.flash_cmd import LIBRARY_HELP, _library
from kiosk.commands.through_service import ServiceJournal, add_socket_option, announce, connect, service_journal
from kiosk.events import EventBus
from kiosk.ladder import RungStarted, Verdict
from kiosk.runner import RecoveryRunner

#: What Particle's support asks about a device (kiosk.journal HISTORY_FIELDS), as CLI options.
HISTORY_OPTIONS = {
    "powered-by": "how it is powered (USB, LiPo, VIN supply...)",
    "mounted-on": "what it is mounted on (breadboard, carrier board, product PCB...)",
    "peripherals": "what is connected to it",
    "firmware-notes": "which app and Device OS it runs, and how it got them",
}

DEMO_SCENARIOS = "app-crash@boron,corrupt-system@photon,frozen@p2,cold-boot-fixes@argon"

#: Verdicts after which the device works.
GOOD_VERDICTS = ("healthy", "recovered", "recovered-by-swd")


def _runner_lock(journal: Path):
    """The journal's runner lock (non-blocking); None when another kiosk process holds it."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    handle = open(journal.with_name(journal.name + ".runner-lock"), "w")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def default_journal() -> Path:
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "particle-kiosk" / "journal.sqlite"


def register(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser("recover", help="run Particle's recovery procedure on a slot's device, alone")
    which = rec.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every slot, in parallel")
    rec.add_argument("--library", type=Path, help=LIBRARY_HELP)
    rec.add_argument("--journal", type=Path, help=f"the journal (default {default_journal()})")
    add_bench_options(rec)
    rec.set_defaults(handler=cmd_recover)

    demo = sub.add_parser("demo", help="watch simulated faulty devices being recovered in parallel")
    demo.add_argument("--scenarios", default=DEMO_SCENARIOS, metavar="SCENARIO[@PLATFORM][,...]",
                      help=f"the devices on the demo bench (default {DEMO_SCENARIOS})")  # fmt: skip
    demo.add_argument("--speed", type=float, default=1.0, help="device seconds per real second (default 1)")
    demo.add_argument("--journal", type=Path, help=f"the journal (default {default_journal()})")
    demo.add_argument("--json", action="store_true", help="print one JSON document")
    demo.set_defaults(handler=cmd_demo)

    hist = sub.add_parser("history", help="past recovery runs from the journal, newest first")
    hist.add_argument("--device", metavar="ID", help="only this device's runs")
    hist.add_argument("--limit", type=_count, default=HISTORY_LIMIT, metavar="N",
                      help=f"at most N runs, the newest (default {HISTORY_LIMIT}; a last line says how many "
                           "older ones there are); 0: all of them")  # fmt: skip
    hist.add_argument("--journal", type=Path, help=f"the journal (default {default_journal()})")
    hist.add_argument("--json", action="store_true", help="print one JSON document")
    add_socket_option(hist)
    hist.set_defaults(handler=cmd_history)

    rep = sub.add_parser("report", help="the support-ticket bundle of one run (Markdown or JSON)",
                         description="The support-ticket bundle of one run: RUN_ID's, or the latest run (of a "
                                     "slot with --slot, of a device with --device).")  # fmt: skip
    rep.add_argument("run_id", type=int, nargs="?", metavar="RUN_ID",
                     help="the run (`kiosk history` lists them; default: the latest run)")  # fmt: skip
    latest = rep.add_mutually_exclusive_group()
    latest.add_argument("--slot", type=_slot_number, metavar="N", help="the latest run of slot N (1-based)")
    latest.add_argument("--device", type=_device_id, metavar="ID",
                        help="the latest run of this device (its id: 24 hex digits, as on its label)")  # fmt: skip
    rep.add_argument("--format", choices=("md", "json"), default="md")
    rep.add_argument("--out", type=Path, help="write it to this file instead of printing it")
    rep.add_argument("--journal", type=Path, help=f"the journal (default {default_journal()})")
    add_socket_option(rep)
    rep.set_defaults(handler=cmd_report)

    dev = sub.add_parser("device-history", help="show, or set, what the support ticket asks about a device")
    dev.add_argument("device_id", metavar="DEVICE_ID")
    for name, text in HISTORY_OPTIONS.items():
        dev.add_argument(f"--{name}", help=text)
    dev.add_argument("--journal", type=Path, help=f"the journal (default {default_journal()})")
    dev.add_argument("--json", action="store_true", help="print one JSON document")
    add_socket_option(dev)
    dev.set_defaults(handler=cmd_device_history)


def _printer(json_out: bool):
    def show(event: object) -> None:
        if json_out:
            return
        if isinstance(event, RungStarted):
            print(f"  slot {event.slot}: {event.rung}", file=sys.stderr)
        elif isinstance(event, Verdict):
            print(f"  slot {event.slot}: {event.verdict} ({event.elapsed_s:.1f} s)", file=sys.stderr)

    return show


def cmd_recover(args: argparse.Namespace) -> int:
    """The ladder on the slots: in the bench service when one runs (it owns the bench), else on a bench this
    command opens (``--simulate``: always a private simulated one). The same output and exit status either way."""
    from kiosk.commands import through_service

    client = connect(args, subscribe=True)
    if client is not None:
        with client:
            announce(client, "kiosk recover")
            return _finish(args, through_service.recover(args, client, through_service.event_printer(args.json)))
    return _recover_alone(args)


def _recover_alone(args: argparse.Namespace) -> int:
    from kiosk.journal import Journal, JournalError

    path = args.journal or default_journal()
    try:
        journal = Journal(path)
    except JournalError as exc:
        raise CommandError(str(exc), 2) from None
    # Only the process that holds the runner lock may call other runs interrupted: a second kiosk process
    # (the TUI and a CLI run at once) must not mark the first one's live runs.
    lock = _runner_lock(Path(path))
    interrupted = journal.mark_interrupted() if lock is not None else []
    if interrupted and not args.json:
        print(
            f"note: runs {', '.join(map(str, interrupted))} were interrupted (kiosk stopped mid-run)", file=sys.stderr
        )
    bus = EventBus()
    bus.subscribe(_printer(args.json))
    with open_bench(args) as bench:
        library = _library(args, bench)
        slots = bench.slots if args.all else [bench.slot(args.slot)]
        runner = RecoveryRunner(bench, library, journal, bus)
        for slot in slots:
            runner.start(slot.index)
        if not runner.wait(*(s.index for s in slots)):
            runner.stop_all()  # a ladder that overran its hour stops, releasing buttons and restoring power
            runner.wait(timeout_s=60.0)
    journal.close()
    if lock is not None:
        lock.close()
    docs: list[dict[str, Any]] = []
    for slot in slots:
        run = runner.run(slot.index)
        if run is None or run.result is None:
            detail = run.error if run is not None and run.error else "the run did not finish in time"
            docs.append({"slot": slot.index, "run_id": run.run_id if run else None, "verdict": "error",
                         "detail": detail})  # fmt: skip
            continue
        docs.append({"slot": slot.index, "run_id": run.run_id, **run.result.to_json()})
    return _finish(args, docs)


def _finish(args: argparse.Namespace, docs: list[dict[str, Any]]) -> int:
    """Print the slots' result documents (``--json``: one, or the list with ``--all``); the exit status."""
    if args.json:
        emit(docs if args.all else docs[0])
    else:
        for doc in docs:
            print(f"slot {doc['slot']}: {doc['verdict']}" + (f" by {doc['rung']}" if doc.get("rung") else "")
                  + f": {doc.get('detail', '')} (run {doc.get('run_id')})")  # fmt: skip
            todo = instruction(doc["verdict"], doc.get("action", ""), doc.get("again", False),
                               doc.get("usb_errors", 0), again_cli(doc["slot"]))  # fmt: skip
            print(f"  what to do: {todo}")
    return EXIT_OK if all(d["verdict"] in GOOD_VERDICTS for d in docs) else EXIT_FAILED


#: `kiosk history` lists this many runs unless --limit says otherwise.
HISTORY_LIMIT = 50
DEVICE_ID_LOOKS = "a device id is 24 hex digits, as on the device's label (e.g. e00fce68aabbccddeeff0011)"


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: a whole number, 0 or more")
    return value


def _slot_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a slot: slots are numbered from 1")
    return value


def _device_id(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 24 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device id: {DEVICE_ID_LOOKS}")
    return value


def _open_journal(args: argparse.Namespace):
    import sqlite3

    from kiosk.journal import Journal, JournalError

    path = args.journal or default_journal()
    if not Path(path).exists():
        raise CommandError(
            f"no runs recorded: there is no journal at {path} (nothing has been recovered here yet); "
            "run `kiosk recover` first, or name the journal with --journal",
            EXIT_FAILED,
        )
    try:
        return Journal(path)
    except JournalError as exc:
        raise CommandError(str(exc), 2) from None
    except sqlite3.DatabaseError as exc:
        raise CommandError(f"{path} is not a kiosk journal ({exc})", 2) from None


def _journal_for(args: argparse.Namespace):
    """The journal the journal commands read: the bench service's (asked over its socket) when one runs and
    ``--journal`` names no other file, else the file itself."""
    return service_journal(args) or _open_journal(args)


def _no_runs(path: object, whose: str = "") -> str:
    """What `kiosk history` and `kiosk report` say when the journal has no run to show: the same words."""
    hint = "`kiosk history` lists the runs there are" if whose else "run `kiosk recover` first"
    return f"no runs recorded{whose} in {path}: {hint}"


def _started(stamp: str | None) -> str:
    """A journal timestamp as UTC minutes, e.g. ``2025-03-14 09:26`` (the text itself if it does not parse)."""
    from datetime import UTC, datetime

    if not stamp:
        return "?"
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M")


def _took(seconds: float | None) -> str:
    """A run's length on the device clock: ``9.8 s``, ``4 min 05 s``, ``1 h 02 min``; ``-`` when not known."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def history_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The runs as aligned text: a heading, then one line per run (the verdict with the rung that fixed it)."""
    heading = ("run", "started (UTC)", "took", "slot", "device", "platform", "status", "verdict")
    rows = [heading]
    for r in runs:
        verdict = r.get("verdict") or "-"
        if r.get("rung_that_fixed"):
            verdict += f" by {r['rung_that_fixed']}"
        rows.append((str(r["id"]), _started(r.get("started_at")), _took(r.get("elapsed_s")), str(r["slot"]),
                     r.get("device_id") or "?", r.get("platform") or "?", r.get("status") or "?", verdict))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(heading))]
    right = {0, 2, 3}  # the run, took and slot columns: numbers line up on the right

    def line(row: tuple[str, ...]) -> str:
        cells = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "  ".join(cells).rstrip()

    return [line(row) for row in rows]


def cmd_history(args: argparse.Namespace) -> int:
    """The journal's runs, newest first: when each started (UTC), how long it took (device clock), verdict."""
    journal = _journal_for(args)
    try:
        limit = args.limit or None
        runs = journal.runs(device_id=args.device, limit=limit)
        total = journal.count_runs(device_id=args.device) if limit is not None and len(runs) == limit else len(runs)
        path = journal.path
    finally:
        journal.close()
    if args.json:
        emit(runs)
        return EXIT_OK
    if not runs:
        print(_no_runs(path, f" for device {args.device.strip().lower()}" if args.device else ""))
        return EXIT_OK
    print("\n".join(history_lines(runs)))
    if total > len(runs):
        older = total - len(runs)
        print(f"... and {older} older run{'s' if older != 1 else ''} (--limit 0 shows them all)")
    return EXIT_OK


def _chosen_run(args: argparse.Namespace, journal: Any) -> tuple[int, str]:
    """The run `kiosk report` reports on, and how it was chosen (``the latest of slot 2``, or ``""``)."""
    if args.run_id is not None:
        if args.slot is not None or args.device is not None:
            option = "--slot" if args.slot is not None else "--device"
            raise CommandError(
                f"RUN_ID {args.run_id} and {option} contradict each other: RUN_ID names the run, {option} asks "
                "for the latest one; give one or the other",
                2,
            )
        return args.run_id, ""
    if args.slot is not None:
        whose, how = f" for slot {args.slot}", f"the latest of slot {args.slot}"
    elif args.device is not None:
        whose, how = f" for device {args.device}", f"the latest of device {args.device}"
    else:
        whose, how = "", "the latest in the journal"
    run_id = journal.latest_run_id(slot=args.slot, device_id=args.device)
    if run_id is None:
        raise CommandError(_no_runs(journal.path, whose), EXIT_FAILED)
    return run_id, how


def cmd_report(args: argparse.Namespace) -> int:
    """One run's report: RUN_ID's, or the latest run (of --slot N, of --device ID); says on stderr which."""
    from kiosk.journal import UnknownRecordError
    from kiosk.report import build_report, render_json, render_markdown

    journal = _journal_for(args)
    try:
        run_id, how = _chosen_run(args, journal)
        status = journal.run(run_id)["status"] if how else None
        if isinstance(journal, ServiceJournal):  # the service builds it from its journal, the same renderers
            answer = journal.report(run_id)
            text = answer["markdown"] if args.format == "md" else answer["json"]
        else:
            report = build_report(journal, run_id)
            text = render_markdown(report) if args.format == "md" else render_json(report)
    except UnknownRecordError as exc:
        raise CommandError(f"{exc} in {journal.path}: `kiosk history` lists the runs there are", 2) from None
    finally:
        journal.close()
    if status in ("running", "interrupted"):
        how += ", still running" if status == "running" else ", interrupted"
    which = f"report of run {run_id}" + (f" ({how})" if how else "")
    if args.out:
        args.out.write_text(text)
        print(f"{which} written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()  # the report first: this line then closes it, and never shows for a broken pipe
        print(which, file=sys.stderr)
    return EXIT_OK


def cmd_device_history(args: argparse.Namespace) -> int:
    from kiosk.journal import Journal

    journal = service_journal(args) or Journal(args.journal or default_journal())
    given = {k.replace("-", "_"): getattr(args, k.replace("-", "_")) for k in HISTORY_OPTIONS}
    given = {k: v for k, v in given.items() if v is not None}
    if given:
        journal.set_device_history(args.device_id, **given)
    history = journal.device_history(args.device_id) or {}
    journal.close()
    if args.json:
        emit({"device_id": args.device_id.lower(), **history})
    else:
        for name in HISTORY_OPTIONS:
            print(f"{name}: {history.get(name.replace('-', '_')) or 'not given'}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """`kiosk recover --all` on a simulated bench of faulty devices, paced so a person can follow it."""
    args.simulate = args.scenarios
    args.all = True
    args.slot = 1
    args.library = None
    args.config = None
    return cmd_recover(args)
