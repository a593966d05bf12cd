"""`kiosk flash [--usb|--serial] FILE...` and `kiosk update [--device-os V]`: plan, refuse or write.

With no transport flag the kiosk chooses per module as Particle's tools do (``particle flash --usb``: the
bootloader, NCP and assets by control request, the rest by DFU; Device Restore USB's OTA region for a device
in DFU mode); ``--usb`` keeps to USB (DFU, control request, or the OTA region as the device's state allows);
``--serial`` is YModem in listening mode (Device OS below 6.0.0). Everything is checked before a byte moves
(firmware.plan); a refusal is exit 2 with every reason, and, where another transport plans, that command. The
write itself runs through kiosk.executor and reports per step the module, mechanism, bytes, outcome and
the figures usb_transfers, host_cpu_s, device_busy_s and elapsed_s (device seconds).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from firmware.intelhex import HexError
from firmware.library import FirmwareLibrary, LibraryError
from firmware.module import PREFIX_SIZE, PREFIX_STRUCT, Module, NotAModuleError, parse_module
from firmware.plan import TRANSPORT_FLAGS, DeviceFacts, PlanRefused, Transport, plan_flash
from firmware.platforms import Function, UnknownPlatformError, bootloader_facts, platform_by_name
from firmware.versions import VersionError, parse_device_os, release_name
from hw.dfu import DfuDevice, DfuError
from hw.flash_timing import device_busy_s
from hw.swd import NoProbe, NoTargetPower, ProbeNotFound, SwdError, image_segments, restore
from hw.usb_identity import ParticleUsbDevice, UsbAccessError
from kiosk import modes
from kiosk.backup import BackupKeeper
from kiosk.bench import Bench, Slot
from kiosk.commands.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, CommandError, emit
from kiosk.commands.device_cmd import _slot, add_bench_options, open_bench
from kiosk.commands.firmware_cmd import default_library
from kiosk.events import Event, Progress, StepFinished, StepStarted
from kiosk.executor import ALREADY_ON_DEVICE, ExecutionReport, FlashExecutor, skip_installed
from kiosk.facts import gather_facts

LIBRARY_NAMES = ("tinker",)
LIBRARY_HELP = "the firmware library (default: the kiosk's; a synthetic demo library with --simulate)"


def register(sub: argparse._SubParsersAction) -> None:
    flash = sub.add_parser("flash", help="write module files (or library names such as tinker) to the device")
    transport = flash.add_mutually_exclusive_group()
    transport.add_argument("--usb", dest="transport", action="store_const", const=Transport.USB,
                           help="over USB only: DFU, control request, or DFU into the OTA region, as the device "
                                "allows (default: the kiosk chooses per module as Particle's tools do)")  # fmt: skip
    transport.add_argument("--serial", dest="transport", action="store_const", const=Transport.SERIAL,
                           help="YModem in listening mode (Device OS below 6.0.0)")  # fmt: skip
    flash.set_defaults(transport=Transport.AUTO)
    flash.add_argument("files", nargs="+", metavar="FILE|NAME")
    flash.add_argument(
        "--library", type=Path, help="the firmware library (default: the kiosk's; the demo one with --simulate)"
    )
    add_journal_option(flash)
    add_bench_options(flash)
    flash.set_defaults(handler=cmd_flash)

    restore = sub.add_parser("restore", help="restore a device over SWD from the library's restore image")
    restore.add_argument("--swd", action="store_true", required=True, help="over the SWD debugger (the only way)")
    restore.add_argument("--probe", metavar="UID", help="the debugger's unique id (default: the slot's config)")
    restore.add_argument("--platform", help="the device's platform, when it does not show on USB (e.g. boron)")
    restore.add_argument("--device-os", metavar="VERSION", help="the restore image's release (default: newest)")
    restore.add_argument("--library", type=Path, help=LIBRARY_HELP)
    add_bench_options(restore)
    restore.set_defaults(handler=cmd_restore)

    serial = sub.add_parser("serial", help="maintenance over a serial port")
    serial_sub = serial.add_subparsers(dest="serial_command", metavar="ACTION", required=True)
    ymodem = serial_sub.add_parser("send-ymodem", help="send a file by plain YModem to any serial port")
    ymodem.add_argument("file", metavar="FILE")
    ymodem.add_argument("--port", required=True, help="the serial port (e.g. /dev/ttyACM0)")
    ymodem.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the receiver's C")
    ymodem.add_argument("--json", action="store_true", help="print one JSON document")
    ymodem.set_defaults(handler=cmd_send_ymodem)

    update = sub.add_parser("update", help="install a Device OS release from the library (like particle update)")
    update.add_argument("--device-os", metavar="VERSION", help="the release (default: the newest in the library)")
    update.add_argument(
        "--library", type=Path, help="the firmware library (default: the kiosk's; the demo one with --simulate)"
    )
    add_journal_option(update)
    add_bench_options(update)
    update.set_defaults(handler=cmd_update)


def add_journal_option(parser: argparse.ArgumentParser) -> None:
    from kiosk.commands.recover_cmd import default_journal  # recover_cmd imports this module

    parser.add_argument("--journal", type=Path, help=f"the journal, where the run and the app's backup are kept "
                        f"(default {default_journal()})")  # fmt: skip


def _library(args: argparse.Namespace, bench: Bench) -> FirmwareLibrary:
    if args.library:
        return FirmwareLibrary(args.library)
    if bench.simulated:
        from kiosk.demo_library import demo_library  # synthetic releases for the simulated devices

        return demo_library({s.device.platform.name for s in bench.slots})
    return FirmwareLibrary(default_library())


def identify(slot: Slot) -> tuple[ParticleUsbDevice, DeviceFacts]:
    """The device in the slot and what it says of itself (exit 3 when there is none)."""
    try:
        device = modes.identify(slot)
    except (modes.DeviceNotFound, UsbAccessError) as exc:
        raise CommandError(str(exc), EXIT_NOT_FOUND) from None
    facts = gather_facts(slot, device)
    if facts.mode == "dfu" and facts.system_version is None and not facts.protected:
        version = _system_version_in_flash(slot, device)
        if version is not None:
            facts = DeviceFacts(facts.platform, version, facts.modules, facts.mode, facts.protected)
    return device, facts


def _system_version_in_flash(slot: Slot, device) -> int | None:
    """In DFU mode Device OS cannot be asked: read the system part's module header where the bootloader looks
    for it (an UPLOAD of 24 bytes, nothing written). Only the version it says; whether it runs is not known."""
    p = device.platform
    facts = bootloader_facts(p)
    offset = p.mcu.prefix_offset(Function.SYSTEM_PART)
    try:
        with DfuDevice(device.usb_device, slot.clock) as dfu:
            for address in facts.system_search if facts is not None else ():
                fields = PREFIX_STRUCT.unpack(dfu.read(address + offset, PREFIX_SIZE))
                start, _end, _r, _flags, version, platform_id, function, _index = fields[:8]
                if (start, platform_id) == (address, p.id) and function in (Function.SYSTEM_PART,
                                                                            Function.MONO_FIRMWARE):  # fmt: skip
                    return version
    except DfuError:
        return None
    return None


def _load(paths: list[str], facts: DeviceFacts, library: FirmwareLibrary | None) -> list[tuple[str, Module]]:
    wanted = []
    for item in paths:
        if item.lower() in LIBRARY_NAMES and not Path(item).exists():
            if library is None:
                raise CommandError(f"{item}: no library to take it from", EXIT_REFUSED)
            try:
                entry = library.tinker(facts.platform, facts.system_version)
                data = library.read(entry)
            except LibraryError as exc:
                raise CommandError(str(exc), EXIT_REFUSED) from None
            wanted.append((f"{item} ({entry.path})", parse_module(data)))
            continue
        try:
            wanted.append((item, parse_module(Path(item).read_bytes())))
        except OSError as exc:
            raise CommandError(f"cannot read {item}: {exc.strerror or exc}", EXIT_REFUSED) from None
        except NotAModuleError as exc:
            raise CommandError(f"{item}: {exc}; nothing was written", EXIT_REFUSED) from None
    return wanted


def _printer(json_out: bool):
    def show(event: Event) -> None:
        if json_out:
            return
        if isinstance(event, StepStarted):
            print(
                f"  {event.index + 1}/{event.total} {event.name}: {event.mechanism}, {event.size} bytes",
                file=sys.stderr,
            )
        elif isinstance(event, Progress) and event.done == event.total:
            print(f"      {event.phase} done", file=sys.stderr)
        elif isinstance(event, StepFinished):
            print(f"      {event.outcome}{': ' + event.detail if event.detail else ''}", file=sys.stderr)

    return show


def _run(args: argparse.Namespace, slot: Slot, device: ParticleUsbDevice, facts: DeviceFacts,
         wanted: list[tuple[str, Module]], transport: Transport, bench: Bench, extra: dict) -> int:  # fmt: skip
    try:
        plan = plan_flash(facts, wanted, transport)
    except PlanRefused as refused:
        reasons = [{"file": r.name, "reason": r.reason} for r in refused.refusals]
        suggested = suggested_command(args, refused.suggestion)
        if args.json:
            emit({"slot": slot.index, "refused": True, "reasons": reasons, **extra,
                  "suggestion": suggested and {"transport": refused.suggestion.value, "argv": suggested}})  # fmt: skip
        else:
            print("Refused: nothing was written.", file=sys.stderr)
            for r in refused.refusals:
                print(f"  {r.name}: {r.reason}", file=sys.stderr)
            if suggested:
                print(f"  It plans this way (checked): {' '.join(suggested)}", file=sys.stderr)
        return EXIT_REFUSED
    # What the device already has (same version and hash) is left out, as Device Restore does.
    plan, skipped = skip_installed(plan, facts.modules)
    already = [{**s.to_json(), "why": ALREADY_ON_DEVICE} for s in skipped]
    if not args.json:
        for step in skipped:
            print(f"  {step.name}: {ALREADY_ON_DEVICE}; skipped", file=sys.stderr)
    journal, run_id = _start_run(args, slot, device, facts, extra.get("command", "flash"))
    try:
        executor = FlashExecutor(slot, plan, on_user_part_overwrite=BackupKeeper(journal, run_id).callback(
            device.device_id, facts.platform))  # fmt: skip
        executor.bus.subscribe(_printer(args.json))
        executor.bus.subscribe(_journal_steps(journal, run_id))
        try:
            report: ExecutionReport = executor.run()
        except BaseException as exc:  # the journal must not show this run running for ever
            journal.finish_run(run_id, "flash-failed", None, f"the flash failed: {type(exc).__name__}: {exc}")
            raise
        verdict = "flashed" if report.ok else ("stopped" if report.detail.startswith("stopped") else "flash-failed")
        notes = [s.detail for s in report.steps if s.outcome == "written" and s.detail]
        journal.finish_run(run_id, verdict, None, "; ".join([report.detail or f"{len(plan.steps)} step(s) written",
                           *notes]), report.elapsed_s, None, usb_errors=report.usb_errors)  # fmt: skip
        backups = journal.backups(run_id)
    finally:
        journal.close()
    if args.json:
        emit({"slot": slot.index, "refused": False, "platform": facts.platform.name, **extra, "run_id": run_id,
              "plan": plan.to_json(), "already_on_device": already, "backups": backups,
              **report.to_json()})  # fmt: skip
    else:
        for warning in plan.warnings:
            print(f"note: {warning}")
        for b in backups:
            print(f"backup: the app that was on the device is kept in {b['file']} (SHA-256 {b['sha256']}); "
                  f"`kiosk backup restore {run_id}` puts it back")  # fmt: skip
        verdict = "done" if report.ok else f"FAILED: {report.detail}"
        if report.ok and not plan.steps:
            verdict = "nothing to write: the device already has every module (same version and hash)"
        where = {"normal": "running Device OS", "dfu": "in DFU mode"}.get(report.final_mode or "", "not on USB")
        print(f"slot {slot.index}: {verdict} ({report.elapsed_s:.1f} s; the device is {where})")
    return EXIT_OK if report.ok else EXIT_FAILED


def _start_run(args: argparse.Namespace, slot: Slot, device: ParticleUsbDevice, facts: DeviceFacts,
               command: str):  # fmt: skip
    """Open the journal and record this flash as a run of its own (kind "manual flash"): (journal, run id)."""
    from kiosk.commands.recover_cmd import default_journal
    from kiosk.journal import Journal, JournalError

    path = getattr(args, "journal", None) or default_journal()
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        journal = Journal(path)
    except (JournalError, OSError, sqlite3.DatabaseError) as exc:
        raise CommandError(f"cannot open the journal {path} ({exc}); nothing was written. Name another one with "
                           "--journal", EXIT_REFUSED) from None  # fmt: skip
    run_id = journal.start_run(slot.index, device.device_id, facts.platform.name, slot.scenario,
                               kind="manual flash")  # fmt: skip
    journal.observe(run_id, "command", {"command": command})
    return journal, run_id


def _journal_steps(journal, run_id: int):
    """Each step of the plan into the journal, begun before its write and ended after it."""
    steps: dict[int, int] = {}

    def record(event: Event) -> None:
        if isinstance(event, StepStarted):
            steps[event.index] = journal.begin_step(run_id, "manual-flash", f"write {Path(event.name).name} by "
                                                    f"{event.mechanism}, {event.size} bytes")  # fmt: skip
        elif isinstance(event, StepFinished) and event.index in steps:
            journal.end_step(steps.pop(event.index), event.outcome, event.detail, event.figures)

    return record


def suggested_command(args: argparse.Namespace, transport: Transport | None) -> list[str] | None:
    """The `kiosk flash` (or `kiosk update`) command line with ``transport`` instead of the one given, for a
    refusal's advice: the planner tried that transport on the same device and modules, and it plans."""
    if transport is None or getattr(args, "files", None) is None:
        return None  # `kiosk update` has no transport to change
    argv = ["kiosk", "flash"]
    flag = TRANSPORT_FLAGS[transport]
    if flag:
        argv.append(flag)
    argv += list(args.files)
    for option in ("library", "simulate", "slot"):
        value = getattr(args, option, None)
        if value is not None and not (option == "slot" and value == 1):
            argv += [f"--{option}", str(value)]
    if getattr(args, "simulate", None) is None and getattr(args, "config", None) is not None:
        argv += ["--config", str(args.config)]
    return argv


def _through_service(args: argparse.Namespace, *, update: bool) -> int | None:
    """The command in the bench service when one runs (it owns the bench): its exit status; None: none runs."""
    from kiosk.commands import through_service

    client = through_service.connect(args, subscribe=True)
    if client is None:
        return None
    with client:
        through_service.announce(client, f"kiosk {'update' if update else 'flash'}")
        return through_service.flash(args, client, update=update)


def cmd_flash(args: argparse.Namespace) -> int:
    served = _through_service(args, update=False)
    if served is not None:
        return served
    with open_bench(args) as bench:
        slot = _slot(bench, args.slot)
        device, facts = identify(slot)
        needs_library = any(f.lower() in LIBRARY_NAMES and not Path(f).exists() for f in args.files)
        library = _library(args, bench) if needs_library else None
        wanted = _load(args.files, facts, library)
        return _run(args, slot, device, facts, wanted, args.transport, bench, {"command": "flash"})


def cmd_update(args: argparse.Namespace) -> int:
    served = _through_service(args, update=True)
    if served is not None:
        return served
    with open_bench(args) as bench:
        slot = _slot(bench, args.slot)
        device, facts = identify(slot)
        library = _library(args, bench)
        try:
            release = None
            if args.device_os:
                number = parse_device_os(args.device_os)
                release = release_name(number) if args.device_os.isdigit() else args.device_os
            bundle = library.bundle(facts.platform, release)
            wanted, skipped = [], []
            for entry in bundle.entries:
                if entry.encrypted:
                    skipped.append(f"{entry.name}: encrypted; the device installs it itself")
                    continue
                wanted.append((entry.path, parse_module(library.read(entry))))
        except (LibraryError, VersionError) as exc:
            raise CommandError(str(exc), EXIT_REFUSED) from None
        if not args.json:
            print(f"Updating {facts.platform.display_name} in slot {slot.index} to Device OS {bundle.release}",
                  file=sys.stderr)  # fmt: skip
            for note in skipped:
                print(f"  skipped {note}", file=sys.stderr)
            for lack in bundle.lacks:  # the planner refuses what this leaves unmet; this says what to import
                print(f"  the library lacks {lack}", file=sys.stderr)
        extra = {"command": "update", "device_os": bundle.release, "skipped": skipped, "lacks": list(bundle.lacks)}
        return _run(args, slot, device, facts, wanted, Transport.AUTO, bench, extra)


class RestoreRefused(CommandError):
    """An SWD restore that did not happen, or failed: the words, the exit status, ``reason`` (a key of
    :data:`RESTORE_REFUSALS`) and, when the restore itself failed, the document ``--json`` prints."""

    def __init__(self, message: str, reason: str, document: dict | None = None):
        super().__init__(message, RESTORE_REFUSALS[reason])
        self.reason = reason
        self.document = document


#: Why an SWD restore did not happen -> the exit status `kiosk restore --swd` gives (alone and through the service).
RESTORE_REFUSALS = {
    "unknown-platform": EXIT_REFUSED,  # --platform names none
    "no-platform": EXIT_REFUSED,  # the device is not on USB and --platform is not given
    "other-platform": EXIT_REFUSED,  # --platform is not what USB says
    "protected": EXIT_REFUSED,  # Device Protection: a restore would erase it open
    "no-image": EXIT_REFUSED,  # the library has no restore image for it
    "no-swd": EXIT_NOT_FOUND,  # the slot has no debugger wired
    "not-found": EXIT_NOT_FOUND,  # no probe, not the probe named, or no target power (with a document)
    "swd-failed": EXIT_FAILED,  # the restore failed on the way (with a document)
}


def swd_restore(slot: Slot, library: Callable[[], FirmwareLibrary], *, platform_name: str | None,
                device_os: str | None, probe: str | None, progress: Callable[[int, int, str], None],
                begin: Callable[[int], None] = lambda _size: None, cancel=None) -> dict:  # fmt: skip
    """`kiosk restore --swd` on ``slot`` (a clock actor), alone and in the bench service: check first (the
    platform, Device Protection, the library's restore image, a debugger on the slot), then ``begin(bytes)``,
    program the image and wait for the device to run; the document ``--json`` prints. RestoreRefused says why
    not. ``cancel`` (a clock event) stops every wait (hw.clock.Cancelled)."""
    device = modes.wait_for_device(slot, modes.FIND_TIMEOUT_S, cancel=cancel)
    try:
        platform = platform_by_name(platform_name) if platform_name else (device.platform if device else None)
    except UnknownPlatformError as exc:
        raise RestoreRefused(str(exc), "unknown-platform") from None
    if platform is None:
        raise RestoreRefused("the device does not show on USB, so the kiosk cannot tell which platform it is: say "
                             "it with --platform (e.g. --platform boron)", "no-platform")  # fmt: skip
    if device is not None and device.platform.id != platform.id:
        raise RestoreRefused(f"--platform {platform.name}, but USB says the device is a {device.platform.name}",
                             "other-platform")  # fmt: skip
    if device is not None and gather_facts(slot, device).protected:
        raise RestoreRefused("Device Protection is on: a restore would have to erase it open, which the kiosk never "
                             "does. Ask the product's owner for service mode", "protected")  # fmt: skip
    try:
        source, image = library().swd_image(platform, device_os)
    except (LibraryError, HexError) as exc:
        raise RestoreRefused(str(exc), "no-image") from None
    if slot.swd is None:
        raise RestoreRefused("this slot has no SWD debugger wired", "no-swd")
    begin(sum(len(data) for _address, data in image_segments(image)))
    started, cpu = slot.clock.now(), time.process_time()
    try:
        result = restore(slot.swd, platform, image, unique_id=probe or slot.swd_probe_id, allow_unlock=False,
                         progress=progress, cancel=cancel)  # fmt: skip
    except SwdError as exc:
        document = {"slot": slot.index, "ok": False, "platform": platform.name, "image": source,
                    "error": type(exc).__name__, "detail": str(exc)}  # fmt: skip
        reason = "not-found" if isinstance(exc, NoProbe | ProbeNotFound | NoTargetPower) else "swd-failed"
        raise RestoreRefused(str(exc), reason, document) from None
    back = modes.wait_for_device(slot, 15.0, cancel=cancel)
    elapsed = slot.clock.now() - started
    step = {
        "module": "restore image", "file": source, "mechanism": "swd", "bytes": result.bytes_written,
        "outcome": "written", "mass_erased": result.mass_erased, "notes": list(result.notes),
        "usb_transfers": 0, "host_cpu_s": round(time.process_time() - cpu, 4),
        "device_busy_s": round(sum(device_busy_s(platform, "swd", len(d), a) for a, d in image_segments(image)), 4),
        "elapsed_s": round(elapsed, 4),
    }  # fmt: skip
    return {"slot": slot.index, "ok": back is not None and back.mode == "normal", "platform": platform.name,
            "image": source, "final_usb_mode": back.mode if back else None, "steps": [step]}  # fmt: skip


def restore_words(document: dict) -> str:
    """The line `kiosk restore --swd` prints once the image is written."""
    mode = document["final_usb_mode"]
    where = f"running ({mode} mode on USB)" if mode else "not on USB"
    return f"slot {document['slot']}: restored {document['steps'][0]['bytes']} bytes over SWD; the device is {where}"


def phase_printer(json_out: bool) -> Callable[[int, int, str], None]:
    """The progress lines `kiosk restore --swd` prints: each phase once, as it begins."""
    shown: set[str] = set()

    def progress(done: int, total: int, phase: str) -> None:
        if not json_out and phase not in shown:
            shown.add(phase)
            print(f"  {phase} ({total} bytes)", file=sys.stderr)

    return progress


def cmd_restore(args: argparse.Namespace) -> int:
    """Program the platform's restore image over SWD, then wait for the device to run."""
    from kiosk.commands import through_service

    client = through_service.connect(args, subscribe=True)
    if client is not None:
        with client:
            through_service.announce(client, "kiosk restore")
            document = through_service.swd_restore(args, client)
    else:
        with open_bench(args) as bench:
            slot = _slot(bench, args.slot)
            try:
                document = swd_restore(slot, lambda: _library(args, bench), platform_name=args.platform,
                                       device_os=args.device_os, probe=args.probe,
                                       progress=phase_printer(args.json))  # fmt: skip
            except RestoreRefused as exc:
                if args.json and exc.document is not None:
                    emit(exc.document)
                raise
    if args.json:
        emit(document)
    else:
        print(restore_words(document))
    return EXIT_OK if document["ok"] else EXIT_FAILED


def cmd_send_ymodem(args: argparse.Namespace) -> int:
    """Plain YModem to any port: wait for the receiver's C, send, report. Real time (no device here)."""
    from hw.clock import RealClock
    from hw.serial_console import SerialError
    from hw.ymodem import send_ymodem

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}", EXIT_REFUSED) from None
    try:
        result = send_ymodem(args.port, data, Path(args.file).name, RealClock(), handshake="plain",
                             handshake_timeout=args.timeout)  # fmt: skip
    except SerialError as exc:
        raise CommandError(f"YModem to {args.port} failed: {exc}", EXIT_FAILED) from None
    figures = {
        "bytes": result.bytes,
        "seconds": round(result.seconds, 3),
        "blocks": result.blocks,
        "retransmissions": result.retransmissions,
        "bytes_per_second": round(result.bytes_per_second),
    }
    if args.json:
        emit({"port": args.port, "file": args.file, "ok": True, **figures})
    else:
        print(f"sent {result.bytes} bytes to {args.port} in {result.seconds:.2f} s "
              f"({result.bytes_per_second:.0f} B/s, {result.retransmissions} retransmissions)")  # fmt: skip
    return EXIT_OK
