"""What a verdict asks the technician to do, in one sentence, worded for the front end that shows it.

The ladder keeps what it found (``detail``) apart from what to do (``action``, and ``again``: then recover
it again), so the touchscreen can always show the whole instruction and each front end can name its own
way of starting again: the touchscreen's RECOVER button, the CLI's ``kiosk recover``, the report's plain
words. A run that met USB errors says to check the cable, with the count, whatever its verdict.

    >>> instruction("needs-technician", "Unplug its battery", True, 0, "press RECOVER")
    'Unplug its battery, then press RECOVER.'
    >>> instruction("stopped", "", False, 0, "press RECOVER")
    'Press RECOVER.'
    >>> instruction("recovered", "", False, 3, "press RECOVER")
    'Hand it back; check the USB cable: 3 USB transfers failed.'
"""

from __future__ import annotations

#: What a verdict asks when the ladder named nothing more particular.
DEFAULT_ACTIONS: dict[str, str] = {
    "healthy": "Nothing was wrong: hand it back",
    "recovered": "Hand it back",
    "recovered-by-swd": "Hand it back",
    "needs-technician": "Read the report for what to do",
    "needs-owner": "The product's owner must act first",
    "damaged-hardware": "Work through the checklist in the report",
    "stopped": "",  # the detail says buttons released, power on; the sentence is only how to start again
    "interrupted": "",  # the bench service stopped mid-run: the run's record is kept; start it again
    "flashed": "The chosen modules are on the device and it runs",
    "flash-failed": "Nothing more was written; read the line below",
    "error": "The kiosk itself failed on this slot: see the report",
}
#: How each front end says "start the recovery again".
AGAIN_TOUCHSCREEN = "press RECOVER"
AGAIN_REPORT = "recover it again"
#: Verdicts after which starting again is the obvious next thing, whatever the ladder said.
RESTARTABLE = frozenset({"stopped", "interrupted"})


def again_cli(slot: int) -> str:
    return f"run `kiosk recover --slot {slot}` again"


def cable_words(usb_errors: int) -> str:
    """The cable's share of a run, or "" when it had none."""
    if usb_errors <= 0:
        return ""
    plural = "s" if usb_errors != 1 else ""
    return f"check the USB cable: {usb_errors} USB transfer{plural} failed"


def instruction(verdict: str | None, action: str, again: bool, usb_errors: int, again_words: str) -> str:
    """The whole sentence a technician acts on: the action (or the verdict's default), how to start again,
    and the cable's count when the run met USB errors."""
    words = action or DEFAULT_ACTIONS.get(verdict or "", DEFAULT_ACTIONS["error"])
    if again or verdict in RESTARTABLE:
        words = f"{words}, then {again_words}" if words else again_words[:1].upper() + again_words[1:]
    cable = cable_words(usb_errors)
    if cable:
        words = f"{words}; {cable}"
    return words + "."
