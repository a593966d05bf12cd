"""`kiosk touch-bridge [--device PATH]`: the touchscreen as a pointer, for a terminal without touch input.

Runs as a service beside the touchscreen session (deploy/systemd/particle-kiosk-touch.service): it grabs the
touchscreen, so cage never sees its touches, and feeds a virtual pointer device (uinput) with what
:class:`hw.touch_bridge.TouchToPointer` makes of them. Linux only; needs python-evdev (deploy/install.sh
installs it) and access to /dev/uinput and the touchscreen (the service runs as root, sandboxed).
UNVERIFIED on a real Pi: the translation is tested, the kernel side is evdev's.
"""

from __future__ import annotations

import argparse
import sys

from hw.touch_bridge import (
    ABS_MT_POSITION_X,
    ABS_MT_POSITION_Y,
    ABS_X,
    ABS_Y,
    BTN_LEFT,
    EV_ABS,
    EV_KEY,
    INPUT_PROP_DIRECT,
    TouchToPointer,
)
from kiosk.commands.common import EXIT_NOT_FOUND, CommandError

DEVICE_NAME = "particle-kiosk touch pointer"


def register(sub: argparse._SubParsersAction) -> None:
    touch = sub.add_parser("touch-bridge", help="turn the touchscreen into a pointer (for foot without touch input)")
    touch.add_argument("--device", help="the touchscreen's /dev/input/eventN (default: the first touchscreen)")
    touch.set_defaults(handler=cmd_touch_bridge)


def _evdev():
    try:
        import evdev
    except ImportError:
        raise CommandError(
            "python-evdev is not installed: the touch bridge needs it (deploy/install.sh installs it into the "
            "kiosk's virtual environment; or: pip install evdev)",
            EXIT_NOT_FOUND,
        ) from None
    return evdev


def _touchscreen(evdev, path: str | None):
    if path is not None:
        try:
            return evdev.InputDevice(path)
        except OSError as exc:
            raise CommandError(f"cannot open {path}: {exc.strerror}", EXIT_NOT_FOUND) from None
    for candidate in evdev.list_devices():
        try:
            device = evdev.InputDevice(candidate)
        except OSError:
            continue
        axes = {code for code, _info in device.capabilities(absinfo=True).get(EV_ABS, [])}
        if INPUT_PROP_DIRECT in device.input_props() and {ABS_MT_POSITION_X, ABS_X} & axes:
            return device
        device.close()
    raise CommandError("no touchscreen found (no input device with direct touch): nothing to bridge",
                       EXIT_NOT_FOUND)  # fmt: skip


def cmd_touch_bridge(args: argparse.Namespace) -> int:
    evdev = _evdev()
    screen = _touchscreen(evdev, args.device)
    axes = dict(screen.capabilities(absinfo=True).get(EV_ABS, []))
    x = axes.get(ABS_MT_POSITION_X) or axes.get(ABS_X)
    y = axes.get(ABS_MT_POSITION_Y) or axes.get(ABS_Y)
    if x is None or y is None:
        raise CommandError(f"{screen.path} reports no X/Y axes: not a touchscreen", EXIT_NOT_FOUND)
    pointer = evdev.UInput({EV_KEY: [BTN_LEFT], EV_ABS: [(ABS_X, x), (ABS_Y, y)]}, name=DEVICE_NAME)
    print(f"touch bridge: {screen.name} ({screen.path}) -> {DEVICE_NAME}", file=sys.stderr)
    bridge = TouchToPointer()
    screen.grab()  # cage no longer sees the raw touches, only the pointer
    try:
        for event in screen.read_loop():
            for out in bridge.feed(event.type, event.code, event.value):
                pointer.write(*out)
    finally:
        pointer.close()
    return 0
