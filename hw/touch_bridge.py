"""Touch to pointer: a touchscreen's first finger, turned into an absolute pointer with a left button.

Why: the kiosk runs in foot under cage, and Bookworm's foot (1.13) ignores touch input, so taps never reach
Textual. With the bridge holding the touchscreen (an exclusive grab) and offering a pointer device in its
place (absolute X/Y and BTN_LEFT, the way a virtual machine's USB tablet looks), cage sees a mouse, foot
reports clicks, and every button of the kiosk works by tap. Only the first finger counts: the kiosk has no
gesture, drag or multi-touch. Event codes are linux/input-event-codes.h.

    >>> bridge = TouchToPointer()
    >>> for event in [(EV_ABS, ABS_MT_TRACKING_ID, 7), (EV_ABS, ABS_MT_POSITION_X, 400),
    ...               (EV_ABS, ABS_MT_POSITION_Y, 240), (EV_KEY, BTN_TOUCH, 1)]:
    ...     bridge.feed(*event)
    []
    []
    []
    []
    >>> bridge.feed(EV_SYN, SYN_REPORT, 0)
    [(3, 0, 400), (3, 1, 240), (1, 272, 1), (0, 0, 0)]
"""

from __future__ import annotations

EV_SYN, EV_KEY, EV_ABS = 0x00, 0x01, 0x03
SYN_REPORT = 0
BTN_LEFT, BTN_TOUCH = 0x110, 0x14A
ABS_X, ABS_Y = 0x00, 0x01
ABS_MT_SLOT, ABS_MT_POSITION_X, ABS_MT_POSITION_Y, ABS_MT_TRACKING_ID = 0x2F, 0x35, 0x36, 0x39
INPUT_PROP_DIRECT = 0x01  # a touchscreen (the finger is where the pointer is), not a touchpad

Event = tuple[int, int, int]  # (type, code, value)


class TouchToPointer:
    """Feed it a touchscreen's events, one at a time; it returns the pointer events to write, at each
    SYN_REPORT: the position first, then the button, so a tap clicks where the finger is."""

    def __init__(self) -> None:
        self._slot = 0
        self._touching = False  # what the pointer's button says
        self._finger = False  # what the touchscreen says, this frame
        self._x: int | None = None
        self._y: int | None = None
        self._moved = False

    def feed(self, type_: int, code: int, value: int) -> list[Event]:
        if type_ == EV_ABS:
            self._abs(code, value)
        elif type_ == EV_KEY and code == BTN_TOUCH:
            self._finger = bool(value)
        elif type_ == EV_SYN and code == SYN_REPORT:
            return self._report()
        return []

    def _abs(self, code: int, value: int) -> None:
        if code == ABS_MT_SLOT:
            self._slot = value
        elif self._slot != 0 and code in (ABS_MT_TRACKING_ID, ABS_MT_POSITION_X, ABS_MT_POSITION_Y):
            return  # a second finger: ignored
        elif code == ABS_MT_TRACKING_ID:
            self._finger = value >= 0
        elif code in (ABS_MT_POSITION_X, ABS_X):
            self._moved |= value != self._x
            self._x = value
        elif code in (ABS_MT_POSITION_Y, ABS_Y):
            self._moved |= value != self._y
            self._y = value

    def _report(self) -> list[Event]:
        out: list[Event] = []
        if self._moved and self._x is not None and self._y is not None:
            out += [(EV_ABS, ABS_X, self._x), (EV_ABS, ABS_Y, self._y)]
        self._moved = False
        if self._finger != self._touching:
            self._touching = self._finger
            out.append((EV_KEY, BTN_LEFT, int(self._touching)))
        if out:
            out.append((EV_SYN, SYN_REPORT, 0))
        return out
