"""`kiosk backup list` and `kiosk backup restore RUN`: the customer's apps the kiosk kept, and putting one back.

Every run that wrote over a user part first read the app back over DFU and kept it (kiosk.backup): a file
beside the journal and a journal artifact with its SHA-256. ``restore`` flashes it back through the normal
planner (every check applies; there is no way around one) to the device in the slot, and refuses when that
device is not the one the app came from or when the file no longer has the SHA-256 the journal recorded.
The restore is a run of its own, so the app it writes over is kept too.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

from firmware.module import NotAModuleError, parse_module
from firmware.plan import Transport
from kiosk.backup import backup_path
from kiosk.commands.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, CommandError, emit
from kiosk.commands.device_cmd import _slot, add_bench_options, open_bench
from kiosk.commands.flash_cmd import _run, identify


def register(sub: argparse._SubParsersAction) -> None:
    from kiosk.commands.recover_cmd import default_journal

    backup = sub.add_parser("backup", help="the customer's apps kept before the kiosk wrote over them")
    actions = backup.add_subparsers(dest="backup_command", metavar="ACTION", required=True)
    lst = actions.add_parser("list", help="every backup: run, device, platform, size, SHA-256, app version, when")
    lst.add_argument("--device", metavar="ID", help="only this device's")
    lst.add_argument("--journal", type=Path, help=f"the journal (default {default_journal()})")
    lst.add_argument("--json", action="store_true", help="print one JSON document")
    lst.set_defaults(handler=cmd_list)

    restore = actions.add_parser("restore", help="flash the app kept by run RUN back to the device it came from")
    restore.add_argument("run_id", type=int, metavar="RUN", help="the run that kept it (`kiosk backup list`)")
    restore.add_argument("--journal", type=Path, help=f"the journal (default {default_journal()})")
    add_bench_options(restore)
    restore.set_defaults(handler=cmd_restore)


def _journal(args: argparse.Namespace):
    from kiosk.commands.recover_cmd import default_journal
    from kiosk.journal import Journal, JournalError

    path = args.journal or default_journal()
    if not Path(path).exists():
        raise CommandError(f"there is no journal at {path}, so no backups: name the journal with --journal",
                           EXIT_NOT_FOUND)  # fmt: skip
    try:
        return Journal(path)
    except JournalError as exc:
        raise CommandError(str(exc), EXIT_REFUSED) from None
    except sqlite3.DatabaseError as exc:
        raise CommandError(f"{path} is not a kiosk journal ({exc})", EXIT_REFUSED) from None


def _check(journal, backup: dict[str, Any]) -> tuple[Path, str | None]:
    """The backup's file, and what is wrong with it (None: there, and its SHA-256 is the one recorded)."""
    path = backup_path(journal, str(backup.get("file") or ""))
    try:
        data = path.read_bytes()
    except OSError as exc:
        return path, f"the file {path} cannot be read ({exc.strerror or exc})"
    if hashlib.sha256(data).hexdigest() != backup.get("sha256"):
        return path, (f"the file {path} no longer has the SHA-256 the journal recorded ({backup.get('sha256')}): "
                      "it was changed or damaged since, so it is not what came off the device")  # fmt: skip
    return path, None


def cmd_list(args: argparse.Namespace) -> int:
    journal = _journal(args)
    try:
        backups = journal.backups(device_id=args.device)
        for b in backups:
            _, problem = _check(journal, b)
            b["file_ok"] = problem is None
            b["file_problem"] = problem
        path = journal.path
    finally:
        journal.close()
    if args.json:
        emit(backups)
        return EXIT_OK
    if not backups:
        print(f"no backups in {path}" + (f" of device {args.device.strip().lower()}" if args.device else "")
              + ": none was needed yet (the kiosk keeps the app whenever it writes over one)")  # fmt: skip
        return EXIT_OK
    heading = ("run", "device", "platform", "size", "SHA-256", "app version", "kept at (UTC)", "file")
    rows = [heading]
    for b in backups:
        file = str(b.get("file")) + ("" if b["file_ok"] else "  (FILE CHANGED OR MISSING)")
        rows.append((str(b["run_id"]), b.get("device_id") or "?", b.get("platform") or "?", str(b.get("size")),
                     str(b.get("sha256")), f"v{b.get('version')}", _when(b.get("created_at")), file))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(heading))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _when(stamp: Any) -> str:
    from kiosk.commands.recover_cmd import _started

    return _started(stamp if isinstance(stamp, str) else None)


def cmd_restore(args: argparse.Namespace) -> int:
    try:
        return _restore(args)
    except CommandError as exc:  # --json: one document on stdout whatever happened (the words go to stderr too)
        if args.json:
            emit({"run_id": None, "restoring_run": args.run_id, "refused": exc.status == EXIT_REFUSED,
                  "ok": False, "status": exc.status, "detail": str(exc)})  # fmt: skip
        raise


class BackupRefused(CommandError):
    """A backup that is not put back: the words, the exit status, and ``reason`` (a key of BACKUP_REFUSALS)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message, BACKUP_REFUSALS[reason])
        self.reason = reason


#: Why `kiosk backup restore` puts nothing back -> its exit status (alone and through the bench service).
BACKUP_REFUSALS = {
    "no-run": EXIT_NOT_FOUND,  # the journal has no such run
    "no-backup": EXIT_NOT_FOUND,  # the run kept no app
    "backup-missing": EXIT_NOT_FOUND,  # the file is gone
    "backup-changed": EXIT_REFUSED,  # the file is there but not what came off the device (or cannot be read)
    "backup-not-a-module": EXIT_REFUSED,
    "other-device": EXIT_REFUSED,  # the device in the slot is not the one the app came from
}


def kept_modules(journal, run_id: int) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
    """The backups run ``run_id`` kept (newest first, as the journal lists them) and their modules in the order
    they were kept, each file checked against the SHA-256 the journal recorded; BackupRefused says why not."""
    backups = journal.backups(run_id=run_id)
    if not backups:
        if not any(r["id"] == run_id for r in journal.runs(limit=None)):
            raise BackupRefused(f"there is no run {run_id} in {journal.path}: `kiosk backup list` lists the runs "
                                "that kept an app", "no-run")  # fmt: skip
        raise BackupRefused(f"run {run_id} kept no app (nothing was written over one, or the device had no readable "
                            "app): `kiosk backup list` lists the runs that did", "no-backup")  # fmt: skip
    wanted = []
    for b in reversed(backups):  # in the order they were kept
        path, problem = _check(journal, b)
        if problem is not None:
            raise BackupRefused(f"refused: {problem}; nothing was written",
                                "backup-missing" if not path.exists() else "backup-changed")  # fmt: skip
        try:
            wanted.append((str(path), parse_module(path.read_bytes())))
        except NotAModuleError as exc:
            raise BackupRefused(f"refused: {path} is not a module ({exc}); nothing was written",
                                "backup-not-a-module") from None  # fmt: skip
    return backups, wanted


def check_device(run_id: int, backups: list[dict[str, Any]], slot: int, device_id: str | None) -> str:
    """The device in ``slot`` (its id, lower case) when it is the one the backups were kept from; else
    BackupRefused ("other-device")."""
    kept_from = {b.get("device_id") for b in backups}
    here = (device_id or "").lower()
    if here not in kept_from:
        whose = ", ".join(sorted(str(d) for d in kept_from))
        raise BackupRefused(f"refused: run {run_id}'s backup is of device {whose}, but the device in slot {slot} is "
                            f"{here or 'one without an id'}; nothing was written. Put device {whose} in the slot",
                            "other-device")  # fmt: skip
    return here


def restoring(run_id: int, backups: list[dict[str, Any]]) -> dict[str, Any]:
    """What `kiosk backup restore` says of the backups it puts back (its JSON's ``restoring_run``, ``restoring``)."""
    return {"restoring_run": run_id,
            "restoring": [{k: b.get(k) for k in ("file", "sha256", "version", "index")} for b in backups]}  # fmt: skip


def _restore(args: argparse.Namespace) -> int:
    from kiosk.commands import through_service

    client = through_service.connect(args, subscribe=True)
    if client is not None:  # the bench and its journal are the service's: it checks and flashes
        with client:
            through_service.announce(client, "kiosk backup restore")
            return through_service.flash(args, client, backup_run=args.run_id)
    journal = _journal(args)
    try:
        backups, wanted = kept_modules(journal, args.run_id)
    finally:
        journal.close()
    with open_bench(args) as bench:
        slot = _slot(bench, args.slot)
        device, facts = identify(slot)
        here = check_device(args.run_id, backups, slot.index, device.device_id)
        if not args.json:
            print(f"Restoring the app kept by run {args.run_id} to {facts.platform.display_name} {here} in slot "
                  f"{slot.index}", file=sys.stderr)  # fmt: skip
        extra = {"command": "backup restore", **restoring(args.run_id, backups)}
        return _run(args, slot, device, facts, wanted, Transport.AUTO, bench, extra)
