"""The CLI through the bench service: when `kiosk service` runs, it owns the bench, and the commands ask it.

Two programs must never drive the same slot, so every command that would open the real bench (no ``--simulate``)
first looks for a bench service on its socket (``--socket``, else ``$KIOSK_SOCKET``, else
/run/particle-kiosk/bench.sock). When one answers, the command goes through it: `kiosk recover`, `flash`,
`update`, `restore --swd`, `backup restore`, `list`, `inspect`, the mode commands (`dfu`, `safe-mode`, `listen`,
`reset`, `cold-boot`), `led`, `history`, `report` and `device-history`, with the same output, text or ``--json``,
and the same exit status as when they open the bench themselves (a flash's files are read by the service, on
the same host; a backup is read from the service's journal). A slot another client runs something on is refused
as busy (exit 2); Ctrl+C stops what the command started there. When none answers, they open the bench as
before. A socket this user may not open is refused (the bench may be the service's), never taken for "no
service". ``--simulate`` always means a private simulated bench of the command's own: it never touches the
service.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import socket
import sys
import time
from pathlib import Path
from typing import Any

from kiosk.commands.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_REFUSED, CommandError

SOCKET_ENV = "KIOSK_SOCKET"
PROBE_TIMEOUT_S = 2.0
LIST_WAIT_S = 600.0  # `kiosk list` in the service: each slot's look, and a start waiting on one, and then some
STOP_WAIT_S = 60.0  # after Ctrl+C or the hour: how long the stopped runs get to release buttons and end
START_HINT = "sudo systemctl stop particle-kiosk-bench"


def add_socket_option(parser: argparse.ArgumentParser) -> None:
    from kiosk.service.wire import DEFAULT_SOCKET

    parser.add_argument("--socket", type=Path, default=None,
                        help=f"the bench service's socket: when a service answers there, the command goes through "
                             f"it (default ${SOCKET_ENV}, else {DEFAULT_SOCKET})")  # fmt: skip


def socket_path(args: argparse.Namespace) -> Path:
    """Where this command looks for the bench service."""
    from kiosk.service.wire import DEFAULT_SOCKET

    return Path(getattr(args, "socket", None) or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


def _probe(path: Path) -> str:
    """``"none"`` (no socket, or nobody listens: a service that died), ``"denied"`` (a socket this user may not
    use: a service may well run), or ``"up"`` (something listens)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(PROBE_TIMEOUT_S)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        return "none"
    except PermissionError:
        return "denied"
    except OSError:
        return "none"
    finally:
        sock.close()
    return "up"


def command_name(args: argparse.Namespace) -> str:
    sub = getattr(args, "backup_command", None)
    return f"kiosk {args.command}" + (f" {sub}" if sub else "") if getattr(args, "command", None) else "kiosk"


def connect(args: argparse.Namespace, *, subscribe: bool = False):
    """A connected BenchClient when a bench service answers (and this command should use it), else None.

    ``subscribe``: notifications go to the client's ``events`` queue as (method, params), from the subscription
    on. A socket this user may not open is a refusal, not "no service": the bench may be the service's."""
    if getattr(args, "simulate", None):
        return None
    from kiosk.service.client import BenchClient, ServiceUnavailable

    path = socket_path(args)
    found = _probe(path)
    if found == "none":
        return None
    if found == "denied":
        raise CommandError(f"a bench service's socket {path} is there, but this user may not use it: the service "
                           "may own the bench, so the kiosk does not open it behind its back. Join the kiosk's "
                           "group (see deploy/README.md), or name another socket with --socket",
                           EXIT_REFUSED)  # fmt: skip
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    client = BenchClient(path, client=command_name(args), role="cli", subscribe=subscribe,
                         on_notification=lambda method, params: events.put((method, params)))  # fmt: skip
    client.events = events  # type: ignore[attr-defined]
    try:
        client.connect(PROBE_TIMEOUT_S)
    except ServiceUnavailable as exc:
        raise CommandError(f"something listens on {path} but is not a bench service that answers ({exc}); "
                           "the kiosk does not open the bench beside it", EXIT_FAILED) from None  # fmt: skip
    return client


def announce(client, what: str) -> None:
    print(f"{what}: through the bench service on {client.socket_path} "
          f"({(client.hello or {}).get('bench') or 'the bench'})", file=sys.stderr)  # fmt: skip


def _same(mine: Path | None, theirs: str | None) -> bool:
    return mine is None or (theirs is not None and Path(mine).expanduser().resolve() == Path(theirs).resolve())


def check_same_files(args: argparse.Namespace, state: dict[str, Any]) -> None:
    """``--journal`` and ``--library`` name the service's own, or are refused: the service uses its own."""
    for option, key in (("journal", "journal"), ("library", "library")):
        mine = getattr(args, option, None)
        if not _same(mine, state.get(key)):
            raise CommandError(f"--{option} {mine}: the bench service on {socket_path(args)} uses its own {option}, "
                               f"{state.get(key)}; leave --{option} out, or stop the service first "
                               f"({START_HINT})", EXIT_REFUSED)  # fmt: skip


def failure(exc: Exception, *, refused_status: int = EXIT_FAILED) -> CommandError:
    """A service's error (or a lost service) as the CLI's error, with the exit status the CLI gives alone."""
    from kiosk.service import wire
    from kiosk.service.client import ServiceError, ServiceUnavailable

    if isinstance(exc, ServiceError):
        if exc.code in (wire.BUSY, wire.NOT_ALLOWED, wire.INVALID_PARAMS):
            return CommandError(exc.message, EXIT_REFUSED)
        if exc.code == wire.NOT_FOUND:
            return CommandError(exc.message, EXIT_REFUSED)
        if exc.code == wire.REFUSED:
            return CommandError(exc.message, refused_status)
        return CommandError(f"the bench service failed: {exc.message}", EXIT_FAILED)
    if isinstance(exc, ServiceUnavailable):
        return CommandError(f"the bench service went away: {exc}", EXIT_FAILED)
    return CommandError(str(exc), EXIT_FAILED)


# -- kiosk recover -----------------------------------------------------------------------------------------------
def recover(args: argparse.Namespace, client, show) -> list[dict[str, Any]]:
    """Start the ladder on the slots in the service, tell the progress as the service publishes it, wait for
    every verdict, and give each slot's result document (as `kiosk recover --json` prints it alone)."""
    from kiosk.runner import RUN_TIMEOUT_S
    from kiosk.service.client import ServiceError, ServiceUnavailable

    events: queue.Queue = client.events
    try:
        state = client.call("bench.state", timeout=10)
    except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
        raise failure(exc) from None
    check_same_files(args, state)
    slots = [s["index"] for s in state["slots"]] if args.all else [args.slot]
    runs: dict[int, int] = {}  # slot -> its run id
    docs: dict[int, dict[str, Any]] = {}
    for slot in slots:
        try:
            runs[slot] = client.call("slot.recover", {"slot": slot}, timeout=30)["run_id"]
        except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
            if not args.all or isinstance(exc, ServiceUnavailable):
                _stop(client, runs, events, docs)
                raise failure(exc) from None
            docs[slot] = {"slot": slot, "run_id": None, "verdict": "error", "detail": str(exc)}
    deadline = time.monotonic() + RUN_TIMEOUT_S + STOP_WAIT_S
    try:
        _wait(client, runs, events, docs, show, deadline)
    except KeyboardInterrupt:
        _stop(client, runs, events, docs)  # what this command started is this command's to stop
        raise
    if len(docs) < len(slots) and client.connected:  # the hour is over: stop what overran, as alone
        _stop(client, runs, events, docs)
    for slot, run_id in runs.items():
        if slot not in docs:
            detail = "the run did not finish in time"
            if not client.connected:
                detail = (f"the connection to the bench service was lost; the run goes on there: `kiosk report "
                          f"{run_id}` shows it later")  # fmt: skip
            docs[slot] = {"slot": slot, "run_id": run_id, "verdict": "error", "detail": detail}
    return [docs[slot] for slot in slots]


def _wait(client, runs: dict[int, int], events: queue.Queue, docs: dict[int, dict[str, Any]], show,
          deadline: float) -> None:  # fmt: skip
    """Until every run in ``runs`` has its document in ``docs`` (or the deadline, or the service is lost)."""
    from kiosk.service.client import ServiceError, ServiceUnavailable

    while any(slot not in docs for slot in runs) and time.monotonic() < deadline:
        try:
            method, params = events.get(timeout=0.5)
        except queue.Empty:
            if not client.connected:
                return
            continue
        slot = params.get("slot")
        if slot not in runs or slot in docs:
            continue  # another slot, or a run this command has seen end
        if method == "slot.event":  # the slot was idle when this command started it: its events are this run's
            show(params.get("event") or {})
        elif method == "slot.idle" and params.get("run_id") == runs[slot]:
            run_id = runs[slot]
            try:
                docs[slot] = client.call("recovery.result", {"run_id": run_id}, timeout=10)
            except (ServiceError, ServiceUnavailable, TimeoutError):
                docs[slot] = {"slot": slot, "run_id": run_id, "verdict": params.get("verdict") or "error",
                              "detail": params.get("detail") or ""}  # fmt: skip


def _stop(client, runs: dict[int, int], events: queue.Queue, docs: dict[int, dict[str, Any]]) -> None:
    """Stop this command's unfinished runs in the service and wait (a while) for their verdicts."""
    unfinished = {slot: run_id for slot, run_id in runs.items() if slot not in docs}
    for slot in unfinished:
        try:
            client.call("slot.stop", {"slot": slot}, timeout=10)
        except Exception:  # the service may be gone: nothing more to stop from here
            return
    _wait(client, unfinished, events, docs, lambda _event: None, time.monotonic() + STOP_WAIT_S)


def event_printer(json_out: bool):
    """The progress lines `kiosk recover` prints, from the service's event JSON (kiosk.events to_json)."""

    def show(event: dict[str, Any]) -> None:
        if json_out:
            return
        if event.get("event") == "RungStarted":
            print(f"  slot {event.get('slot')}: {event.get('rung')}", file=sys.stderr)
        elif event.get("event") == "Verdict":
            print(f"  slot {event.get('slot')}: {event.get('verdict')} ({float(event.get('elapsed_s') or 0):.1f} s)",
                  file=sys.stderr)  # fmt: skip

    return show


# -- kiosk inspect -------------------------------------------------------------------------------------------------
def inspect(args: argparse.Namespace, client) -> dict[str, Any]:
    """The service's inspection of the slot's device (it talks to the device; the CLI prints)."""
    from kiosk.service.client import ServiceError, ServiceUnavailable

    try:
        check_same_files(args, client.call("bench.state", timeout=10))
        return client.call("slot.inspect", {"slot": args.slot}, timeout=120)
    except ServiceError as exc:
        not_there = exc.message.lower().startswith("no ") or "not found" in exc.message.lower()
        raise failure(exc, refused_status=EXIT_NOT_FOUND if not_there else EXIT_FAILED) from None
    except (ServiceUnavailable, TimeoutError) as exc:
        raise failure(exc) from None


# -- the journal: history, report, device-history ----------------------------------------------------------------
def service_journal(args: argparse.Namespace) -> ServiceJournal | None:
    """The bench service's journal when a service runs and ``--journal`` names no other file (another file is
    no one's bench: the command reads it itself); None to open the file."""
    client = connect(args)
    if client is None:
        return None
    journal = ServiceJournal(client)
    if not _same(getattr(args, "journal", None), journal.path):
        journal.close()
        return None
    return journal


class ServiceJournal:
    """The service's journal, asked over the socket, with the few methods the journal commands use."""

    def __init__(self, client) -> None:
        self.client = client
        try:
            state = self.ask("bench.state")
        except BaseException:
            client.close()
            raise
        if state.get("journal") is None:
            client.close()
            raise CommandError(f"the bench service on {client.socket_path} keeps no journal", EXIT_FAILED)
        self.path = state["journal"]
        self._total: int | None = None

    def ask(self, method: str, params: dict[str, Any] | None = None) -> Any:
        from kiosk.service.client import ServiceError, ServiceUnavailable

        try:
            return self.client.call(method, params or {}, timeout=60)
        except ServiceError as exc:
            from kiosk.service import wire

            if exc.code == wire.NOT_FOUND:
                from kiosk.journal import UnknownRecordError

                raise UnknownRecordError(exc.message) from None
            raise failure(exc) from None
        except (ServiceUnavailable, TimeoutError) as exc:
            raise failure(exc) from None

    def runs(self, device_id: str | None = None, limit: int | None = 50) -> list[dict[str, Any]]:
        from kiosk.service.api import MAX_RUNS

        params: dict[str, Any] = {"limit": min(limit or MAX_RUNS, MAX_RUNS)}
        if device_id:
            params["device_id"] = device_id
        found = self.ask("history.runs", params)
        self._total = found.get("total")
        return found["runs"]

    def count_runs(self, device_id: str | None = None) -> int:
        if self._total is None:
            self.runs(device_id, 1)
        return int(self._total or 0)

    def latest_run_id(self, *, slot: int | None = None, device_id: str | None = None) -> int | None:
        params = {k: v for k, v in (("slot", slot), ("device_id", device_id)) if v is not None}
        return self.ask("history.latest", params)["run_id"]

    def run(self, run_id: int) -> dict[str, Any]:
        return self.ask("history.run", {"run_id": run_id})

    def report(self, run_id: int) -> dict[str, Any]:
        return self.ask("report", {"run_id": run_id})

    def device_history(self, device_id: str) -> dict[str, Any] | None:
        return self.ask("device.history.get", {"device_id": device_id})["history"] or None

    def set_device_history(self, device_id: str, **answers: str) -> None:
        self.ask("device.history.set", {"device_id": device_id, "answers": answers})

    def close(self) -> None:
        self.client.close()


# -- kiosk flash, kiosk update -----------------------------------------------------------------------------------
FLASH_WAIT_S = 3 * 3600.0  # a Device OS update over YModem at its slowest, and then some


def flash(args: argparse.Namespace, client, *, update: bool = False, backup_run: int | None = None) -> int:
    """`kiosk flash FILE...` (or `kiosk update`, or `kiosk backup restore RUN`: ``backup_run``) in the service:
    planned there (it reads the files: the same host; a backup's from its journal), refused in the words and
    with the exit status the command gives alone, else written there with the progress told as the service
    publishes it, and the same result printed."""
    from firmware.plan import Transport
    from kiosk.commands import flash_cmd
    from kiosk.commands.common import EXIT_OK, emit
    from kiosk.service.client import ServiceError, ServiceUnavailable

    events: queue.Queue = client.events
    try:
        check_same_files(args, client.call("bench.state", timeout=10))
    except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
        raise failure(exc) from None
    command = "update" if update else ("backup restore" if backup_run is not None else "flash")
    transport = Transport.AUTO if update or backup_run is not None else args.transport
    params: dict[str, Any] = {"slot": args.slot, "transport": transport.value, "skip_installed": True}
    if update:
        params["update"] = {"device_os": _release(args.device_os)}
    elif backup_run is not None:
        params["backup"] = {"run_id": backup_run}
    else:
        params["modules"] = [_module(item) for item in args.files]
    try:
        planned = client.call("flash.plan", params, timeout=300)
    except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
        raise _plan_failure(exc) from None
    extra: dict[str, Any] = {"command": command}
    if backup_run is not None:
        about = planned.get("backup") or {}
        extra.update({"restoring_run": about.get("restoring_run"), "restoring": list(about.get("restoring") or [])})
        if not args.json:
            print(f"Restoring the app kept by run {backup_run} to {planned.get('platform_display')} "
                  f"{(planned.get('device_id') or '').lower()} in slot {args.slot}", file=sys.stderr)  # fmt: skip
    if update:
        about = planned.get("update") or {}
        extra.update({"device_os": about.get("device_os"), "skipped": list(about.get("skipped") or []),
                      "lacks": list(about.get("lacks") or [])})  # fmt: skip
        if not args.json:
            print(f"Updating {planned.get('platform_display')} in slot {args.slot} to Device OS "
                  f"{extra['device_os']}", file=sys.stderr)  # fmt: skip
            for note in extra["skipped"]:
                print(f"  skipped {note}", file=sys.stderr)
            for lack in extra["lacks"]:
                print(f"  the library lacks {lack}", file=sys.stderr)
    if planned["refused"]:
        suggestion = Transport(planned["suggestion"]) if planned.get("suggestion") else None
        suggested = flash_cmd.suggested_command(args, suggestion)
        refusals = [(r.get("file") or r["name"], r["reason"]) for r in planned["refusals"]]
        if args.json:
            emit({"slot": args.slot, "refused": True, "reasons": [{"file": f, "reason": r} for f, r in refusals],
                  **extra, "suggestion": suggested and {"transport": suggestion.value, "argv": suggested}})  # fmt: skip
        else:
            print("Refused: nothing was written.", file=sys.stderr)
            for name, reason in refusals:
                print(f"  {name}: {reason}", file=sys.stderr)
            if suggested:
                print(f"  It plans this way (checked): {' '.join(suggested)}", file=sys.stderr)
        return EXIT_REFUSED
    already = planned.get("already_on_device") or []
    if not args.json:
        for step in already:
            print(f"  {step['name']}: {step['why']}; skipped", file=sys.stderr)
    try:
        run_id = client.call("flash.start", {"plan_id": planned["plan_id"], "command": command}, timeout=30)["run_id"]
    except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
        raise failure(exc, refused_status=EXIT_REFUSED) from None
    if run_id is None:
        raise CommandError(f"the bench service on {client.socket_path} keeps no journal, so it cannot say how the "
                           "flash went; it goes on there", EXIT_FAILED)  # fmt: skip
    show = flash_event_printer(args.json)
    idle: dict[int, dict[str, Any]] = {}
    try:
        _wait_flash(client, args.slot, run_id, events, idle, show, time.monotonic() + FLASH_WAIT_S)
    except KeyboardInterrupt:  # what this command started is this command's to stop
        try:
            client.call("slot.stop", {"slot": args.slot}, timeout=10)
            _wait_flash(client, args.slot, run_id, events, idle, lambda _e: None, time.monotonic() + STOP_WAIT_S)
        except Exception:  # the service may be gone: nothing more to stop from here
            pass
        raise
    if run_id not in idle:
        if client.connected:
            raise CommandError(f"the flash did not end in time; it goes on in the service: `kiosk report {run_id}` "
                               "shows it later", EXIT_FAILED)  # fmt: skip
        raise CommandError(f"the connection to the bench service was lost; the flash goes on there: `kiosk report "
                           f"{run_id}` shows it later", EXIT_FAILED)  # fmt: skip
    try:
        result = client.call("flash.result", {"run_id": run_id}, timeout=10)
    except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
        raise failure(exc) from None
    if "steps" not in result:  # the write itself failed in the service (alone: the command's own error)
        raise CommandError(result.get("detail") or "the flash failed in the service", EXIT_FAILED)
    report = {k: result[k] for k in ("ok", "detail", "final_usb_mode", "elapsed_s", "steps", "figures")}
    plan = result["plan"]
    if args.json:
        emit({"slot": args.slot, "refused": False, "platform": result["platform"], **extra, "run_id": run_id,
              "plan": plan, "already_on_device": already, "backups": result["backups"], **report})  # fmt: skip
    else:
        for warning in plan["warnings"]:
            print(f"note: {warning}")
        for b in result["backups"]:
            print(f"backup: the app that was on the device is kept in {b['file']} (SHA-256 {b['sha256']}); "
                  f"`kiosk backup restore {run_id}` puts it back")  # fmt: skip
        verdict = "done" if report["ok"] else f"FAILED: {report['detail']}"
        if report["ok"] and not plan["steps"]:
            verdict = "nothing to write: the device already has every module (same version and hash)"
        where = {"normal": "running Device OS", "dfu": "in DFU mode"}.get(report["final_usb_mode"] or "", "not on USB")
        print(f"slot {args.slot}: {verdict} ({float(report['elapsed_s']):.1f} s; the device is {where})")
    return EXIT_OK if report["ok"] else EXIT_FAILED


def _module(item: str) -> dict[str, Any]:
    """One FILE|NAME of `kiosk flash` as flash.plan takes it: a library name (tinker) unless such a file is
    here, else the file by its absolute path (the service's working folder is not this one), labelled as given."""
    from kiosk.commands.flash_cmd import LIBRARY_NAMES

    if item.lower() in LIBRARY_NAMES and not Path(item).exists():
        return {"tinker": True, "label": item}
    return {"file": str(Path(item).expanduser().absolute()), "label": item}


def _release(device_os: str | None) -> str | None:
    """``--device-os`` as `kiosk update` reads it alone (a release name, or a module version number)."""
    from firmware.versions import VersionError, parse_device_os, release_name

    if not device_os:
        return None
    try:
        number = parse_device_os(device_os)
    except VersionError as exc:
        raise CommandError(str(exc), EXIT_REFUSED) from None
    return release_name(number) if device_os.isdigit() else device_os


def _plan_failure(exc: Exception) -> CommandError:
    """flash.plan's error in the words and with the exit status `kiosk flash` gives alone."""
    from kiosk.service import wire
    from kiosk.service.client import ServiceError

    if isinstance(exc, ServiceError) and exc.code == wire.REFUSED and isinstance(exc.data, dict):
        from kiosk.commands.backup_cmd import BACKUP_REFUSALS, BackupRefused

        reason, name, error = exc.data.get("reason"), exc.data.get("file"), exc.data.get("error")
        if reason in BACKUP_REFUSALS:  # `kiosk backup restore`: the service's words are the command's
            return BackupRefused(exc.message, reason)
        if reason == "no-device":
            return CommandError(exc.message, EXIT_NOT_FOUND)
        if reason == "unreadable":
            return CommandError(f"cannot read {name}: {error}", EXIT_REFUSED)
        if reason == "not-a-module":
            return CommandError(f"{name}: {error}; nothing was written", EXIT_REFUSED)
    return failure(exc, refused_status=EXIT_REFUSED)


def _wait_flash(client, slot: int, run_id: int, events: queue.Queue, idle: dict[int, dict[str, Any]], show,
                deadline: float) -> None:  # fmt: skip
    """Tell the flash's events until its slot.idle (kept in ``idle``), the deadline, or the service is lost."""
    while run_id not in idle and time.monotonic() < deadline:
        try:
            method, params = events.get(timeout=0.5)
        except queue.Empty:
            if not client.connected:
                return
            continue
        if params.get("slot") != slot:
            continue
        if method == "slot.event":
            show(params.get("event") or {})
        elif method == "slot.idle" and params.get("run_id") == run_id:
            idle[run_id] = params


def flash_event_printer(json_out: bool):
    """The progress lines `kiosk flash` prints, from the service's event JSON (kiosk.events to_json)."""

    def show(event: dict[str, Any]) -> None:
        if json_out:
            return
        kind = event.get("event")
        if kind == "StepStarted":
            print(f"  {event['index'] + 1}/{event['total']} {event['name']}: {event['mechanism']}, "
                  f"{event['size']} bytes", file=sys.stderr)  # fmt: skip
        elif kind == "Progress" and event.get("done") == event.get("total"):
            print(f"      {event['phase']} done", file=sys.stderr)
        elif kind == "StepFinished":
            detail = event.get("detail")
            print(f"      {event['outcome']}{': ' + detail if detail else ''}", file=sys.stderr)

    return show


# -- kiosk restore --swd -----------------------------------------------------------------------------------------
RESTORE_WAIT_S = 2 * 3600.0  # the slowest SWD restore (a mass erase and a whole image at a slow clock), and then some


def swd_restore(args: argparse.Namespace, client) -> dict[str, Any]:
    """`kiosk restore --swd` in the service (it owns the probe; the slot is busy meanwhile): the phases told as
    the service publishes them, the document ``--json`` prints, or the refusal with the exit status the command
    gives alone. Ctrl+C stops the restore this command started."""
    import threading

    from kiosk.commands.flash_cmd import RESTORE_REFUSALS, RestoreRefused, phase_printer
    from kiosk.service import wire
    from kiosk.service.client import ServiceError, ServiceUnavailable

    try:
        check_same_files(args, client.call("bench.state", timeout=10))
    except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
        raise failure(exc) from None
    params = {"slot": args.slot, **{k: v for k, v in (("platform", args.platform), ("device_os", args.device_os),
                                                      ("probe", args.probe)) if v is not None}}  # fmt: skip
    answer: dict[str, Any] = {}

    def ask() -> None:  # in a thread: this one tells the progress and takes Ctrl+C
        try:
            answer["value"] = client.call("slot.restore", params, timeout=RESTORE_WAIT_S)
        except Exception as exc:
            answer["error"] = exc

    events: queue.Queue = client.events
    show = phase_printer(args.json)

    def tell(until_done: threading.Thread) -> None:
        while True:
            try:
                method, note = events.get(timeout=0.2)
            except queue.Empty:
                if not until_done.is_alive():
                    return
                continue
            event = note.get("event") or {}
            if method == "slot.event" and note.get("slot") == args.slot and event.get("event") == "Progress":
                show(event["done"], event["total"], event["phase"])

    worker = threading.Thread(target=ask, name="kiosk-restore", daemon=True)
    worker.start()
    try:
        tell(worker)
    except KeyboardInterrupt:  # what this command started is this command's to stop
        try:
            client.call("slot.stop", {"slot": args.slot}, timeout=10)
            worker.join(STOP_WAIT_S)
        except Exception:  # the service may be gone: nothing more to stop from here
            pass
        raise
    worker.join()
    exc = answer.get("error")
    if exc is None:
        return answer["value"]
    if isinstance(exc, ServiceError) and exc.code == wire.REFUSED and isinstance(exc.data, dict):
        reason = exc.data.get("reason")
        if reason in RESTORE_REFUSALS:
            document = exc.data.get("document")
            if args.json and isinstance(document, dict):
                from kiosk.commands.common import emit

                emit(document)
            raise RestoreRefused(exc.message, reason, document)
    raise _slot_failure(exc)


# -- kiosk dfu|safe-mode|listen|reset|cold-boot, kiosk led -------------------------------------------------------
def _slot_failure(exc: Exception) -> CommandError:
    """slot.mode's or slot.led's error with the exit status the command gives alone."""
    from kiosk.service import wire
    from kiosk.service.client import ServiceError

    if isinstance(exc, ServiceError) and exc.code == wire.REFUSED and isinstance(exc.data, dict):
        if exc.data.get("reason") in ("no-device", "no-led", "usb-access"):
            return CommandError(exc.message, EXIT_NOT_FOUND)
        if exc.data.get("reason") == "stopped":
            return CommandError(exc.message, EXIT_FAILED)
    return failure(exc, refused_status=EXIT_REFUSED)


def list_devices(args: argparse.Namespace, client) -> dict[str, Any]:
    """`kiosk list` in the service (it looks at each idle slot as the command does alone): ``{"slots": rows}``."""
    from kiosk.service.client import ServiceError, ServiceUnavailable

    try:
        return client.call("bench.devices", {}, timeout=LIST_WAIT_S)
    except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
        raise _slot_failure(exc) from None


def mode(args: argparse.Namespace, client) -> dict[str, Any]:
    """The mode command in the service (it moves the buttons, inside its hazard guard): the ModeResult JSON.
    Ctrl+C stops the mode change this command started (buttons released, power back after the drain time)."""
    from kiosk.service.client import ServiceError, ServiceUnavailable

    try:
        return client.call("slot.mode", {"slot": args.slot, "mode": args.operation}, timeout=600)
    except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
        raise _slot_failure(exc) from None
    except KeyboardInterrupt:  # what this command started is this command's to stop
        with contextlib.suppress(Exception):  # the service may be gone: nothing more to stop from here
            client.call("slot.stop", {"slot": args.slot}, timeout=10)
        raise


def led(args: argparse.Namespace, client) -> dict[str, Any]:
    """The slot's LED reading from the service (which samples it): the reading JSON and its words (``text``)."""
    from kiosk.service.client import ServiceError, ServiceUnavailable

    params: dict[str, Any] = {"slot": args.slot}
    if args.watch is not None:
        params["watch_s"] = args.watch
    try:
        return client.call("slot.led", params, timeout=(args.watch or 60.0) + 60.0)
    except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
        raise _slot_failure(exc) from None
