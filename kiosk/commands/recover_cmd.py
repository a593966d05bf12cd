"""`kiosk recover [--slot N | --all]`: the recovery ladder on one slot or all of them, journaled.

Slots recover in parallel, one worker thread each (each a clock actor, so simulated device time waits
for all of them). Every run, step and observation goes to the journal (SQLite) before and after it
happens. ``--json`` prints, per slot, the run id, the verdict, the rung that fixed it, the steps with
their outcomes, and ``elapsed_s`` and ``minimum_s`` (device seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import Any

from kiosk.bench import Slot
from kiosk.commands.common import EXIT_FAILED, EXIT_OK, CommandError, emit
from kiosk.commands.device_cmd import add_bench_options, open_bench
from kiosk.commands.flash_cmd import LIBRARY_HELP, _library
from kiosk.events import EventBus
from kiosk.ladder import Ladder, LadderResult, RungStarted, Verdict

#: Verdicts after which the device works.
GOOD_VERDICTS = ("healthy", "recovered", "recovered-by-swd")
RUN_TIMEOUT_S = 3600.0  # device seconds; a ladder takes minutes at worst


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

    try:
        journal = Journal(args.journal or default_journal())
    except JournalError as exc:
        raise CommandError(str(exc), 2) from None
    interrupted = journal.mark_interrupted()
    if interrupted and not args.json:
        print(
            f"note: runs {', '.join(map(str, interrupted))} were interrupted (kiosk stopped mid-run)", file=sys.stderr
        )
    bus = EventBus()
    bus.subscribe(_printer(args.json))
    results: dict[int, tuple[int, LadderResult]] = {}
    errors: dict[int, str] = {}
    with open_bench(args) as bench:
        library = _library(args, bench)
        slots = bench.slots if args.all else [bench.slot(args.slot)]
        ready = [threading.Event() for _ in slots]

        def work(slot: Slot, registered: threading.Event) -> None:
            with bench.clock.actor():
                registered.set()
                run_id = journal.start_run(slot.index, None, None, slot.scenario)
                try:
                    ladder = Ladder(slot, library, bus, journal=journal, run_id=run_id)
                    if slot.device is not None:  # a simulated slot's label names its platform
                        ladder.platform_hint = slot.device.platform
                    result = ladder.run()
                    status = "stopped" if result.verdict == "stopped" else "finished"
                    journal.finish_run(run_id, result.verdict, result.rung, result.detail, result.elapsed_s,
                                       result.minimum_s, status)  # fmt: skip
                    results[slot.index] = (run_id, result)
                except Exception as exc:  # one slot's failure must not take the others down
                    journal.finish_run(run_id, "error", None, f"{type(exc).__name__}: {exc}")
                    errors[slot.index] = f"{type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=work, args=(s, r), name=f"ladder-slot-{s.index}", daemon=True)
                   for s, r in zip(slots, ready, strict=True)]  # fmt: skip
        for thread in threads:
            thread.start()
        for registered in ready:
            registered.wait(10.0)  # each worker joins the clock before time may move on
        bench.clock.wait_for(lambda: not any(t.is_alive() for t in threads), RUN_TIMEOUT_S, poll=1.0)
    journal.close()
    docs: list[dict[str, Any]] = []
    for slot in slots:
        if slot.index in errors:
            docs.append({"slot": slot.index, "verdict": "error", "detail": errors[slot.index]})
            continue
        run_id, result = results[slot.index]
        docs.append({"slot": slot.index, "run_id": run_id, **result.to_json()})
    if args.json:
        emit(docs if args.all else docs[0])
    else:
        for doc in docs:
            print(f"slot {doc['slot']}: {doc['verdict']}" + (f" by {doc['rung']}" if doc.get("rung") else "")
                  + f": {doc.get('detail', '')} (run {doc.get('run_id')})")  # fmt: skip
    return EXIT_OK if all(d["verdict"] in GOOD_VERDICTS for d in docs) else EXIT_FAILED
