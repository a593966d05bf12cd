"""`kiosk`: the command line. Subcommands live in ``kiosk/commands/``; this module wires them up.

Conventions (DESIGN.md): ``--json`` prints one JSON document on stdout; exit status 0 done,
1 the operation failed, 2 refused (bad arguments, ``--force``, a module that may not be flashed,
bad config), 3 hardware or device not found.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kiosk.commands import tui_cmd
from kiosk.commands.common import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, CommandError

FORCE_REFUSAL = (
    "kiosk: refused: the kiosk never forces a flash, and has no option that skips a check.\n"
    "Every module must pass its checks (CRC-32, SHA-256, platform, address, dependencies, transport).\n"
    "Fix what the refusal names instead: use the file made for this device, import the missing Device OS\n"
    "parts with `kiosk firmware import`, or choose --usb / --serial as the message suggests."
)
# Option names that mean "skip the checks", whatever their spelling.
_BYPASS_WORDS = (
    "force",
    "forse",
    "frc",
    "override",
    "skipcheck",
    "skipverif",
    "noverify",
    "nocheck",
    "ignorecrc",
    "unsafe",
)


def asks_for_force(argv: Sequence[str]) -> str | None:
    """The argument that asks to force or skip checks, if any (``--force``, ``-f``, ``--Force=yes``...)."""
    for arg in argv:
        if arg == "--":
            break
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].lower().replace("-", "").replace("_", "")
            if name == "f" or any(word in name for word in _BYPASS_WORDS):
                return arg
        elif arg.startswith("-") and len(arg) > 1 and not arg[1:2].isdigit() and "f" in arg[1:].lower():
            return arg  # -f, -F, -fv: no kiosk short option uses f
    return None


#: The command modules, in the order their commands are listed.
COMMAND_MODULES = ("device_cmd", "flash_cmd", "recover_cmd", "firmware_cmd", "doctor_cmd", "tui_cmd", "touch_cmd")
#: Commands that start the touchscreen: they parse with tui_cmd alone, so the kiosk's start-up does not pay
#: for importing every other command (about 90 ms on a Pi-class machine).
TOUCHSCREEN_COMMANDS = ("tui", "serve")


def build_parser(touchscreen_only: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk",
        description="Particle bench recovery kiosk: recover, flash and inspect Particle devices, offline.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in ("tui_cmd",) if touchscreen_only else COMMAND_MODULES:
        importlib.import_module(f"kiosk.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    forced = asks_for_force(args_list)
    if forced is not None:
        print(f"{FORCE_REFUSAL}\n(argument: {forced})", file=sys.stderr)
        return EXIT_REFUSED
    if not args_list:  # bare `kiosk`: the touchscreen on the configured bench
        return _run(tui_cmd.cmd_tui, tui_cmd.tui_defaults())
    parser = build_parser(touchscreen_only=args_list[0] in TOUCHSCREEN_COMMANDS)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse prints its own message; usage errors are refusals
        return EXIT_OK if exc.code == 0 else EXIT_REFUSED
    if getattr(args, "handler", None) is None:  # only options, no command: the touchscreen as well
        return _run(tui_cmd.cmd_tui, tui_cmd.tui_defaults())
    return _run(args.handler, args)


def _run(handler, args: argparse.Namespace) -> int:
    try:
        return int(handler(args))
    except CommandError as exc:
        print(f"kiosk: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("kiosk: stopped", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
