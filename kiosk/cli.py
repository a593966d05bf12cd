"""`kiosk`: the command line. Subcommands live in ``kiosk/commands/``; this module wires them up.

Conventions (DESIGN.md): ``--json`` prints one JSON document on stdout; exit status 0 done,
1 the operation failed, 2 refused (bad arguments, ``--force``, a module that may not be flashed,
bad config), 3 hardware or device not found.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
COMMAND_MODULES = ("device_cmd", "flash_cmd", "recover_cmd", "backup_cmd", "firmware_cmd", "doctor_cmd", "tui_cmd",
                   "service_cmd", "touch_cmd")
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


#: The exit status when the reader of the output went away (``kiosk history | head -3``): 128 + SIGPIPE,
#: what a shell reports for any program a closed pipe ended.
EXIT_BROKEN_PIPE = 141


def _run(handler, args: argparse.Namespace) -> int:
    """Run a command's handler; its exit status, or the one its CommandError carries.

    Output piped into a reader that closes early (``kiosk history | head -3``) ends quietly: no traceback, no
    "Exception ignored ... BrokenPipeError" at exit, and the exit status :data:`EXIT_BROKEN_PIPE` (141, as a
    shell reports for a program a closed pipe ended; the command's own status is not known then).
    """
    try:
        try:
            status = int(handler(args))
        except CommandError as exc:
            print(f"kiosk: {exc}", file=sys.stderr)
            status = exc.status
        except KeyboardInterrupt:
            print("kiosk: stopped", file=sys.stderr)
            status = EXIT_FAILED
        sys.stdout.flush()  # here, not at exit: a broken pipe is then one this function can catch
        return status
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush (of what is still buffered) cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (stdout replaced, e.g. by a test's capture)
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
