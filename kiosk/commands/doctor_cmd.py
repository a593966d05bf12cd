"""`kiosk doctor [--active] [--json]`: check the bench and say what is wrong and how to fix it.

Exit status 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kiosk.commands.common import EXIT_FAILED, EXIT_OK, emit
from kiosk.commands.device_cmd import add_bench_options
from kiosk.doctor import CHECKS, FAIL, WARN, DoctorOptions, run_checks, summary


def register(sub: argparse._SubParsersAction) -> None:
    checks = "; ".join(f"{c.name}: {c.what}" for c in CHECKS)
    doc = sub.add_parser(
        "doctor",
        help="check the bench (config, GPIO, USB, udev, library, journal) and say how to fix what is wrong",
        description=f"Checks, in order: {checks}.",
    )
    add_bench_options(doc, slot=False)
    doc.add_argument(
        "--active",
        action="store_true",
        help="also press RESET and MODE and cold-boot each slot's device (through the hazard guard)",
    )
    doc.add_argument("--journal", type=Path, help="the journal to check (default: the kiosk's)")
    doc.add_argument("--library", type=Path, help="the firmware library to check (default: the kiosk's)")
    doc.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="NAME",
        help="a platform the library must have a Device OS bundle for (repeatable)",
    )
    doc.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    options = DoctorOptions(
        config=args.config,
        simulate=args.simulate,
        speed=args.speed,
        active=args.active,
        journal=args.journal,
        library=args.library,
        platforms=tuple(args.platform),
        socket=args.socket,
    )
    results = run_checks(options)
    counts = summary(results)
    ok = counts[FAIL] == 0
    if args.json:
        emit(
            {
                "ok": ok,
                "simulated": args.simulate is not None,
                "active": args.active,
                "counts": counts,
                "checks": [r.to_json() for r in results],
            }
        )
    else:
        for result in results:
            print(result.line())
        if ok:
            warned = f", {counts[WARN]} warning(s)" if counts[WARN] else ""
            print(f"kiosk doctor: nothing failed{warned}", file=sys.stderr)
        else:
            print(
                f"kiosk doctor: {counts[FAIL]} problem(s), {counts[WARN]} warning(s): fix the FAIL lines in order, "
                "then run `kiosk doctor` again",
                file=sys.stderr,
            )
    return EXIT_OK if ok else EXIT_FAILED
