"""A QR code drawn with half blocks (two modules per cell, dark on white), shown only where it fits.

A device id and verdict make a version-2 code: 25 modules, 25 cells wide and 13 rows high (29 x 15 with
its quiet zone), which fits the 7" screen.

    >>> lines = qr_lines("E00FCE68AABBCCDDEEFF0011 RECOVERED")
    >>> len(lines[0]), len(lines), fits(lines, 29, 15), fits(lines, 28, 15)
    (25, 13, True, False)
"""

from __future__ import annotations

import segno
from rich.text import Text
from textual.widgets import Static

QUIET_ROWS, QUIET_COLUMNS = 1, 2  # the quiet zone (2 modules each side) is the widget's white padding
#: (top dark, bottom dark) -> the character; white background, black foreground.
HALF_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def qr_lines(data: str) -> list[str]:
    """The code as text rows, two module rows per text row (the quiet zone is left to the widget's padding)."""
    code = segno.make(data, error="l", micro=False, boost_error=False)
    rows = [[bool(m) for m in row] for row in code.matrix]
    blank = [False] * len(rows[0])
    if len(rows) % 2:
        rows.append(blank)
    return ["".join(HALF_BLOCKS[(top[i], bottom[i])] for i in range(len(top))) for top, bottom in zip(rows[::2],
            rows[1::2], strict=True)]  # fmt: skip


def fits(lines: list[str], width: int, height: int) -> bool:
    """Whether the code and its quiet zone fit in ``width`` x ``height`` cells."""
    return bool(lines) and len(lines[0]) + 2 * QUIET_COLUMNS <= width and len(lines) + 2 * QUIET_ROWS <= height


class QrCode(Static):
    """Shows the first of ``texts`` (longest first) whose code fits the room it has, or says it does not fit."""

    def __init__(self, texts: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.texts = texts
        self.shown: str | None = None

    def show_in(self, width: int, height: int) -> None:
        for text in self.texts:
            lines = qr_lines(text)
            if fits(lines, width, height):
                self.shown = text
                self.remove_class("problem")
                self.add_class("qr")
                self.update(Text("\n".join(lines), style="#000000 on #ffffff"))
                return
        self.shown = None
        self.remove_class("qr")
        self.add_class("problem")
        self.update("The screen is too small for a QR code here: save the report to a USB stick instead.")
