"""`kiosk firmware show|import|list|plan`: the firmware toolkit on the command line."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from firmware.library import FirmwareLibrary, ImportReport, LibraryError
from firmware.module import Module, NotAModuleError, parse_module
from firmware.plan import TRANSPORT_FLAGS, DeviceFacts, PlanRefused, Transport, plan_flash
from firmware.platforms import FUNCTION_PHRASES, UnknownPlatformError, platform_by_name
from firmware.versions import VersionError, describe_system_version, parse_device_os
from kiosk.commands.common import CommandError, emit

LIBRARY_ENV = "PARTICLE_KIOSK_LIBRARY"
NO_PRODUCT = 0xFFFF
SHOW_KEYS = (
    "platform_id", "platform", "function", "index", "version", "start_address", "end_address",
    "prefix_offset", "flags", "dependencies", "suffix_size", "product_id", "product_version",
    "sha256", "sha_ok", "crc_ok",
)  # fmt: skip


def default_library() -> Path:
    """``$PARTICLE_KIOSK_LIBRARY``, else ``$XDG_DATA_HOME/particle-kiosk/firmware``."""
    if os.environ.get(LIBRARY_ENV):
        return Path(os.environ[LIBRARY_ENV])
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "particle-kiosk" / "firmware"


def register(sub: argparse._SubParsersAction) -> None:
    fw = sub.add_parser("firmware", help="inspect module files and manage the offline firmware library")
    fw_sub = fw.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)

    show = fw_sub.add_parser("show", help="what a module file is (like `particle binary inspect`)")
    show.add_argument("files", nargs="+", metavar="FILE")
    show.add_argument("--json", action="store_true", help="print one JSON document")
    show.set_defaults(handler=cmd_show)

    library_help = f"the firmware library folder (default: ${LIBRARY_ENV} or {default_library()})"
    imp = fw_sub.add_parser("import", help="verify and add a Device OS release (zip or folder) or files")
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--library", type=Path, help=library_help)
    imp.add_argument("--json", action="store_true", help="print one JSON document")
    imp.set_defaults(handler=cmd_import)

    lst = fw_sub.add_parser("list", help="what the library holds")
    lst.add_argument("--library", type=Path, help=library_help)
    lst.add_argument("--json", action="store_true", help="print one JSON document")
    lst.set_defaults(handler=cmd_list)

    plan = fw_sub.add_parser("plan", help="the ordered flash steps for files on a device, or why not")
    plan.add_argument("files", nargs="+", metavar="FILE")
    plan.add_argument("--platform", required=True, help="the device's platform (name or id, e.g. boron)")
    plan.add_argument("--device-os", metavar="VERSION", help="the Device OS the device runs (5.3.1 or 5301)")
    plan.add_argument(
        "--mode", choices=("normal", "dfu", "listening", "safe"), help="the mode the device is in now, if known"
    )
    transport = plan.add_mutually_exclusive_group()
    transport.add_argument("--usb", dest="transport", action="store_const", const=Transport.USB,
                           help="over USB only: DFU, a control request, or DFU into the OTA region, as the device "
                                "allows (default: Particle's own choice per module)")  # fmt: skip
    transport.add_argument(
        "--serial", dest="transport", action="store_const", const=Transport.SERIAL,
        help="YModem in listening mode only (Device OS below 6.0)"
    )
    plan.set_defaults(transport=Transport.AUTO)
    plan.add_argument("--json", action="store_true", help="print one JSON document")
    plan.set_defaults(handler=cmd_plan)


def _library(args: argparse.Namespace) -> FirmwareLibrary:
    return FirmwareLibrary(args.library or default_library())


# --- show ---------------------------------------------------------------------------------------


def _show_document(path: str) -> tuple[dict[str, Any], Module | None, bool]:
    """(JSON object, parsed module or None, readable) for one file."""
    doc: dict[str, Any] = {"file": path, "is_module": False, **dict.fromkeys(SHOW_KEYS)}
    doc["flags"], doc["dependencies"] = [], []
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        doc["problems"] = [f"cannot read the file: {exc.strerror or exc}"]
        return doc, None, False
    try:
        module = parse_module(data)
    except NotAModuleError as exc:
        doc["problems"] = [str(exc)]
        return doc, None, True
    doc.update(module.to_json())
    doc["file"] = path
    return doc, module, True


def cmd_show(args: argparse.Namespace) -> int:
    results = [_show_document(path) for path in args.files]
    if args.json:
        emit([doc for doc, _, _ in results])
    else:
        for doc, module, _ in results:
            print(_describe(doc, module))
    if not all(readable for _, _, readable in results):
        return 2
    return 0 if all(doc["is_module"] and not doc["problems"] for doc, _, _ in results) else 1


def _describe(doc: dict[str, Any], m: Module | None) -> str:
    lines = [doc["file"]]
    if m is None:
        return "\n".join([*lines, *(f"  {p}" for p in doc["problems"])])
    crc = "ok" if m.crc_ok else f"BAD (stored {m.crc32:08x}, computed {m.crc_computed:08x})"
    lines.append(f"  CRC is {crc} ({m.crc32:08x})")
    sha = f"ok (over the {m.sha_range})" if m.sha_ok else "BAD"
    lines.append(f"  SHA-256 is {sha}")
    lines.append(f"  Compiled for {m.platform_name} (platform {m.platform_id})")
    phrase = FUNCTION_PHRASES.get(m.function, f"a module of function {m.function}")
    version = m.version
    if m.function in (4, 3):  # system part, monolithic: name the Device OS release
        version = f"{m.version} (Device OS {describe_system_version(m.version)})"
    lines.append(f"  This is {phrase} number {m.index} at version {version}")
    for dep in m.real_dependencies:
        dep_phrase = FUNCTION_PHRASES.get(dep.function, f"a module of function {dep.function}")
        lines.append(f"  It depends on {dep_phrase} number {dep.index} at version {dep.version}")
    if m.product_id not in (None, NO_PRODUCT) and m.product_version not in (None, NO_PRODUCT):
        lines.append(f"  It is firmware for product id {m.product_id} at version {m.product_version}")
    lines.append(f"  UUID (SHA-256): {m.sha256.hex()}")
    lines.append(
        f"  Address 0x{m.start_address:08x}-0x{m.end_address:08x}, {m.size} bytes, header at offset {m.prefix_offset}"
    )
    if m.flags:
        lines.append(f"  Flags: {', '.join(m.flag_names)}")
    if m.security_mode:
        lines.append(f"  Security mode: {m.security_mode}")
    lines += [f"  PROBLEM: {p}" for p in m.problems]
    return "\n".join(lines)


# --- import / list ----------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    lib = _library(args)
    total = ImportReport()
    for path in args.paths:
        try:
            report = lib.import_path(path)
        except LibraryError as exc:
            raise CommandError(str(exc), 2) from None
        total.added += report.added
        total.unchanged += report.unchanged
        total.quarantined += report.quarantined
        total.skipped += report.skipped
    if args.json:
        emit({"library": str(lib.root), **total.to_json()})
    else:
        for entry in total.added:
            print(f"added        {entry.path}")
        for entry in total.unchanged:
            print(f"already here {entry.path}")
        for q in total.quarantined:
            print(f"QUARANTINED  {q.source}: {q.reason}")
        for source, why in total.skipped:
            print(f"skipped      {source}: {why}")
        print(
            f"{len(total.added)} added, {len(total.unchanged)} already in the library, "
            f"{len(total.quarantined)} quarantined, {len(total.skipped)} skipped ({lib.root})"
        )
    return 1 if total.quarantined else 0


def cmd_list(args: argparse.Namespace) -> int:
    lib = _library(args)
    try:
        entries, quarantine = lib.entries(), lib.quarantined()
    except LibraryError as exc:
        raise CommandError(str(exc), 1) from None
    bundles = _bundles(lib, entries)
    if args.json:
        emit(
            {
                "library": str(lib.root),
                "entries": [e.to_json() for e in entries],
                "quarantine": [vars(q) for q in quarantine],
                "bundles": [b.to_json() for b in bundles],
            }
        )
        return 0
    if not entries and not quarantine:
        print(f"The library at {lib.root} is empty: add Device OS with `kiosk firmware import PATH`.")
        return 0
    for e in sorted(entries, key=lambda e: (e.platform, e.release or "", e.function or "", e.index or 0)):
        what = f"{e.function} {e.index} v{e.version}" if e.kind == "module" else e.kind
        print(f"{e.platform:10} {e.release or '-':14} {e.name:22} {what:22} {e.sha256[:12]}  {e.path}")
    for bundle in bundles:
        for lack in bundle.lacks:
            print(f"INCOMPLETE  {bundle.platform.name} {bundle.release}: {lack}")
    for q in quarantine:
        print(f"QUARANTINED {q.source}: {q.reason}")
    return 0


def _bundles(lib: FirmwareLibrary, entries: list) -> list:
    """The bundle of every (platform, release) the library holds a system part for: what `kiosk update` would
    send, and what it lacks."""
    found = []
    for platform_name, release in sorted({(e.platform, e.release) for e in entries
                                          if e.release and e.function == "system-part"}):  # fmt: skip
        try:
            found.append(lib.bundle(platform_by_name(platform_name), release))
        except (LibraryError, UnknownPlatformError):
            continue  # not a release the kiosk can send (the reason shows with `kiosk update`)
    return found


# --- plan -------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    try:
        platform = platform_by_name(args.platform)
        system_version = parse_device_os(args.device_os) if args.device_os else None
    except (UnknownPlatformError, VersionError) as exc:
        raise CommandError(str(exc), 2) from None
    wanted = []
    for path in args.files:
        try:
            wanted.append((path, parse_module(Path(path).read_bytes())))
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}", 2) from None
        except NotAModuleError as exc:
            raise CommandError(f"{path}: {exc}", 2) from None
    device = DeviceFacts(platform, system_version=system_version, mode=args.mode)
    try:
        plan = plan_flash(device, wanted, args.transport)
    except PlanRefused as refused:
        suggested = _suggested_plan(args, refused.suggestion)
        if args.json:
            emit({"refused": True, "reasons": [{"file": r.name, "reason": r.reason} for r in refused.refusals],
                  "suggestion": suggested and {"transport": refused.suggestion.value, "argv": suggested}})  # fmt: skip
        else:
            print("Refused: nothing would be written.", file=sys.stderr)
            for r in refused.refusals:
                print(f"  {r.name}: {r.reason}", file=sys.stderr)
            if suggested:
                print(f"It plans this way (checked): {shlex.join(suggested)}", file=sys.stderr)
        return 2
    if args.json:
        emit({"refused": False, **plan.to_json()})
        return 0
    print(f"Plan for a {platform.display_name} ({args.transport.value}):")
    for n, step in enumerate(plan.steps, 1):
        where = f" at 0x{step.address:08x} (alt {step.alt_setting})" if step.address is not None else ""
        print(f"  {n}. {step.name}: {step.mechanism.value}{where}, device in {step.device_mode} mode")
        if step.note:
            print(f"     {step.note}")
    for warning in plan.warnings:
        print(f"  note: {warning}")
    return 0


def _suggested_plan(args: argparse.Namespace, transport: Transport | None) -> list[str] | None:
    """This `kiosk firmware plan` command with ``transport`` instead of the one given: the planner tried it on the
    same device and files, and it planned (PlanRefused.suggestion)."""
    if transport is None:
        return None
    argv = ["kiosk", "firmware", "plan", "--platform", args.platform]
    if args.device_os:
        argv += ["--device-os", args.device_os]
    if args.mode:
        argv += ["--mode", args.mode]
    flag = TRANSPORT_FLAGS[transport]
    return argv + ([flag] if flag else []) + list(args.files)
