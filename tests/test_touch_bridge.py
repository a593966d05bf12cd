"""The touch bridge: a touchscreen's first finger becomes pointer clicks (for Bookworm's foot, which
ignores touch); the service side checked against a fake evdev."""

from __future__ import annotations

import sys
import types

import pytest

from hw.touch_bridge import (
    ABS_MT_POSITION_X,
    ABS_MT_POSITION_Y,
    ABS_MT_SLOT,
    ABS_MT_TRACKING_ID,
    ABS_X,
    ABS_Y,
    BTN_LEFT,
    BTN_TOUCH,
    EV_ABS,
    EV_KEY,
    EV_SYN,
    INPUT_PROP_DIRECT,
    SYN_REPORT,
    TouchToPointer,
)
from kiosk.cli import main

SYN = (EV_SYN, SYN_REPORT, 0)


def run(events):
    bridge = TouchToPointer()
    out = []
    for event in events:
        out += bridge.feed(*event)
    return out


def test_a_tap_moves_then_presses_then_releases():
    out = run([(EV_ABS, ABS_MT_TRACKING_ID, 3), (EV_ABS, ABS_MT_POSITION_X, 100), (EV_ABS, ABS_MT_POSITION_Y, 50),
               (EV_KEY, BTN_TOUCH, 1), SYN, (EV_ABS, ABS_MT_TRACKING_ID, -1), (EV_KEY, BTN_TOUCH, 0), SYN])  # fmt: skip
    assert out == [(EV_ABS, ABS_X, 100), (EV_ABS, ABS_Y, 50), (EV_KEY, BTN_LEFT, 1), SYN, (EV_KEY, BTN_LEFT, 0), SYN]


def test_a_second_finger_changes_nothing():
    out = run([(EV_ABS, ABS_MT_TRACKING_ID, 1), (EV_ABS, ABS_MT_POSITION_X, 10), (EV_ABS, ABS_MT_POSITION_Y, 20), SYN,
               (EV_ABS, ABS_MT_SLOT, 1), (EV_ABS, ABS_MT_TRACKING_ID, 2), (EV_ABS, ABS_MT_POSITION_X, 700), SYN,
               (EV_ABS, ABS_MT_TRACKING_ID, -1), SYN])  # fmt: skip
    assert out == [(EV_ABS, ABS_X, 10), (EV_ABS, ABS_Y, 20), (EV_KEY, BTN_LEFT, 1), SYN]


def test_a_single_touch_screen_and_a_held_finger_that_moves():
    out = run([(EV_ABS, ABS_X, 5), (EV_ABS, ABS_Y, 6), (EV_KEY, BTN_TOUCH, 1), SYN,
               (EV_ABS, ABS_X, 9), SYN, SYN, (EV_KEY, BTN_TOUCH, 0), SYN])  # fmt: skip
    assert out == [(EV_ABS, ABS_X, 5), (EV_ABS, ABS_Y, 6), (EV_KEY, BTN_LEFT, 1), SYN,
                   (EV_ABS, ABS_X, 9), (EV_ABS, ABS_Y, 6), SYN, (EV_KEY, BTN_LEFT, 0), SYN]  # fmt: skip


class _Event:
    def __init__(self, type_, code, value):
        self.type, self.code, self.value = type_, code, value


def _fake_evdev(events, *, direct=True):
    written, grabbed = [], []

    class InputDevice:
        def __init__(self, path):
            self.path, self.name = path, "FT5406 memory based driver"

        def capabilities(self, absinfo=True):
            return {EV_ABS: [(ABS_MT_POSITION_X, "x-info"), (ABS_MT_POSITION_Y, "y-info")]}

        def input_props(self):
            return [INPUT_PROP_DIRECT] if direct else []

        def grab(self):
            grabbed.append(self.path)

        def read_loop(self):
            yield from (_Event(*e) for e in events)

        def close(self):
            pass

    class UInput:
        def __init__(self, caps, name):
            self.caps, self.name = caps, name

        def write(self, *event):
            written.append(event)

        def close(self):
            pass

    module = types.SimpleNamespace(InputDevice=InputDevice, UInput=UInput, list_devices=lambda: ["/dev/input/event4"])
    return module, written, grabbed


def test_the_service_grabs_the_touchscreen_and_writes_clicks(monkeypatch):
    evdev, written, grabbed = _fake_evdev([(EV_ABS, ABS_MT_TRACKING_ID, 1), (EV_ABS, ABS_MT_POSITION_X, 300),
                                           (EV_ABS, ABS_MT_POSITION_Y, 200), SYN, (EV_ABS, ABS_MT_TRACKING_ID, -1),
                                           SYN])  # fmt: skip
    monkeypatch.setitem(sys.modules, "evdev", evdev)
    assert main(["touch-bridge"]) == 0
    assert grabbed == ["/dev/input/event4"]
    assert written == [(EV_ABS, ABS_X, 300), (EV_ABS, ABS_Y, 200), (EV_KEY, BTN_LEFT, 1), SYN, (EV_KEY, BTN_LEFT, 0),
                       SYN]  # fmt: skip


def test_no_touchscreen_and_no_evdev_are_one_clear_line_each(monkeypatch, capsys):
    evdev, _written, _grabbed = _fake_evdev([], direct=False)  # a touchpad, not a touchscreen
    monkeypatch.setitem(sys.modules, "evdev", evdev)
    assert main(["touch-bridge"]) == 3
    assert "no touchscreen found" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "evdev", None)  # import evdev raises ImportError
    assert main(["touch-bridge"]) == 3
    assert "python-evdev is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["touch-bridge", "--device", "/nonexistent/event9"]])
def test_a_named_device_that_cannot_be_opened(monkeypatch, capsys, argv):
    evdev, _w, _g = _fake_evdev([])

    def refuse(path):
        raise OSError(2, "No such file or directory")

    monkeypatch.setitem(sys.modules, "evdev", types.SimpleNamespace(**{**vars(evdev), "InputDevice": refuse}))
    assert main(argv) == 3
    assert "cannot open /nonexistent/event9: No such file or directory" in capsys.readouterr().err
