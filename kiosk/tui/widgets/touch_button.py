"""The kiosk's button: a Textual Button drawn flat, bold and in high contrast for a finger on a touchscreen.

It behaves as a Button (``Button.Pressed``, variants, disabled, keyboard focus); only its look is its own.
Its stylesheet is a few rules instead of Textual's Button's hundreds of lines (which also style flat, ANSI and
compact forms the kiosk never shows), so it parses and matches quicker while the first frame is being drawn.

    >>> TouchButton("▶ RECOVER", id="act-1", variant="success")  # doctest: +SKIP
"""

from __future__ import annotations

from textual.widgets import Button


class TouchButton(Button, inherit_css=False):
    """A large, flat button: its variant's colour as the face with the background's colour for the words;
    focus shows as an accent border, a press as a tint."""

    DEFAULT_CSS = """
    TouchButton {
        width: auto;
        min-width: 16;
        height: 3;
        content-align: center middle;
        text-align: center;
        text-style: bold;
        color: $foreground;
        background: $panel;
        border: tall $foreground 40%;
        pointer: pointer;
    }
    TouchButton:hover { background: $surface; }
    TouchButton:focus { border: tall $accent; }
    TouchButton.-active { tint: $background 40%; }
    TouchButton:disabled { text-opacity: 0.6; pointer: not-allowed; }
    TouchButton.-primary { color: $background; background: $primary; border: blank; }
    TouchButton.-success { color: $background; background: $success; border: blank; }
    TouchButton.-warning { color: $background; background: $warning; border: blank; }
    TouchButton.-error { color: $background; background: $error; border: blank; }
    TouchButton.-primary:focus, TouchButton.-success:focus, TouchButton.-warning:focus, TouchButton.-error:focus {
        border: tall $accent;
    }
    """
