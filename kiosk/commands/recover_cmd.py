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

from kiosk.commands.common import EXIT_FAILED, EXIT_OK, CommandError, emit
from kiosk.commands.device_cmd import add_bench_options, open_bench
from kiosk.commands.flash_cmd import LIBRARY_HELP, _library
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

    hist = sub.add_parser("history", help="past recovery runs from the journal")
    hist.add_argument("--device", metavar="ID", help="only this device's runs")
    hist.add_argument("--journal", type=Path, help=f"the journal (default {default_journal()})")
    hist.add_argument("--json", action="store_true", help="print one JSON document")
    hist.set_defaults(handler=cmd_history)

    rep = sub.add_parser("report", help="the support-ticket bundle of one run (Markdown or JSON)")
    rep.add_argument("run_id", type=int, metavar="RUN_ID")
    rep.add_argument("--format", choices=("md", "json"), default="md")
    rep.add_argument("--out", type=Path, help="write it to this file instead of printing it")
    rep.add_argument("--journal", type=Path, help=f"the journal (default {default_journal()})")
    rep.set_defaults(handler=cmd_report)

    dev = sub.add_parser("device-history", help="show, or set, what the support ticket asks about a device")
    dev.add_argument("device_id", metavar="DEVICE_ID")
    for name, text in HISTORY_OPTIONS.items():
        dev.add_argument(f"--{name}", help=text)
    dev.add_argument("--journal", type=Path, help=f"the journal (default {default_journal()})")
    dev.add_argument("--json", action="store_true", help="print one JSON document")
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
    if args.json:
        emit(docs if args.all else docs[0])
    else:
        for doc in docs:
            print(f"slot {doc['slot']}: {doc['verdict']}" + (f" by {doc['rung']}" if doc.get("rung") else "")
                  + f": {doc.get('detail', '')} (run {doc.get('run_id')})")  # fmt: skip
    return EXIT_OK if all(d["verdict"] in GOOD_VERDICTS for d in docs) else EXIT_FAILED


def _open_journal(args: argparse.Namespace):
    from kiosk.journal import Journal, JournalError

    path = args.journal or default_journal()
    if not Path(path).exists():
        raise CommandError(f"no journal at {path}: nothing has been recovered here yet", 1)
    try:
        return Journal(path)
    except JournalError as exc:
        raise CommandError(str(exc), 2) from None


def cmd_history(args: argparse.Namespace) -> int:
    journal = _open_journal(args)
    runs = journal.runs(device_id=args.device)
    journal.close()
    if args.json:
        emit(runs)
        return EXIT_OK
    if not runs:
        print("no runs recorded" + (f" for {args.device}" if args.device else ""))
    for r in runs:
        fixed = f"by {r['rung_that_fixed']}" if r.get("rung_that_fixed") else ""
        print(f"run {r['id']}: slot {r['slot']} {r['device_id'] or '?'} {r['platform'] or '?'} "
              f"{r['status']} {r['verdict'] or ''} {fixed}")  # fmt: skip
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from kiosk.journal import UnknownRecordError
    from kiosk.report import build_report, render_json, render_markdown

    journal = _open_journal(args)
    try:
        report = build_report(journal, args.run_id)
    except UnknownRecordError as exc:
        raise CommandError(str(exc), 2) from None
    finally:
        journal.close()
    text = render_markdown(report) if args.format == "md" else render_json(report)
    if args.out:
        args.out.write_text(text)
        print(f"report of run {args.run_id} written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def cmd_device_history(args: argparse.Namespace) -> int:
    from kiosk.journal import Journal

    journal = Journal(args.journal or default_journal())
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
