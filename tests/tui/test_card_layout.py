"""The card's layout (issue 13): whatever the card's size and the verdict, the instruction is whole, the lines
fit the card, and the verdict's words match the ladder's (no "by <rung>" where no rung fixed it)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from kiosk.advice import AGAIN_TOUCHSCREEN, instruction
from kiosk.ladder import CHECKLIST_ACTION, PROTECTED_ACTION, SENSOR_ACTION, Verdict
from kiosk.service.slots import RUNGS, SlotState, apply, finish
from kiosk.tui.widgets.slot_card import card_lines

CONSOLE = Console(width=200)
#: Every instruction the ladder gives (kiosk.ladder), and one long one.
ACTIONS = ["", "Unplug its battery", PROTECTED_ACTION, SENSOR_ACTION, CHECKLIST_ACTION,
           "Unplug all but the one to recover", "Connect an SWD debugger to the device",
           "Restore it with `kiosk restore --swd --platform P` (P: its platform)"]  # fmt: skip
VERDICT_NAMES = ["healthy", "recovered", "recovered-by-swd", "needs-technician", "needs-owner", "damaged-hardware",
                 "stopped"]  # fmt: skip
#: Card body sizes (cells) the main screen gives: four slots at 80x24 and 120x40, one slot, and more.
SIZES = [(38, 5), (56, 13), (76, 15), (116, 32)]


def idle_with(verdict: str, action: str, again: bool, usb_errors: int, detail: str, rung: str | None) -> SlotState:
    state = SlotState(1, "slot 1", present=True, device_id="e00fce68aabbccddeeff0011", usb_mode="normal")
    state = apply(state, Verdict(1, verdict, rung, detail, 12.0, 11.0, action, again, usb_errors), at=12.0)
    return finish(state, None, None, 7)


def shown(lines) -> str:
    return " ".join(line.plain for line in lines)


@settings(max_examples=150, deadline=None)
@given(verdict=st.sampled_from(VERDICT_NAMES), action=st.sampled_from(ACTIONS), again=st.booleans(),
       usb_errors=st.integers(0, 5000), detail=st.text(min_size=0, max_size=400),
       size=st.sampled_from(SIZES), roomy=st.booleans())  # fmt: skip
def test_the_whole_instruction_is_on_the_card_at_every_size(verdict, action, again, usb_errors, detail, size, roomy):
    width, height = size
    state = idle_with(verdict, action, again, usb_errors, detail, None)
    lines, verdict_at, tone = card_lines(state, roomy, 0, width, height, CONSOLE)
    assert len(lines) <= height and all(line.cell_len <= width for line in lines)
    words = instruction(verdict, action, again, usb_errors, AGAIN_TOUCHSCREEN)
    assert " ".join(words.split()) in " ".join(shown(lines[verdict_at:]).split())
    assert tone is not None


@pytest.mark.parametrize("size", [s for s in SIZES if s[1] >= 13])
def test_what_was_found_fills_the_room_left_and_is_cut_with_an_ellipsis(size):
    width, height = size
    detail = "nothing answers over USB or SWD; " * 200
    state = idle_with("damaged-hardware", CHECKLIST_ACTION, False, 0, detail, None)
    lines, _, _ = card_lines(state, True, 0, width, height, CONSOLE)
    assert len(lines) == height  # the room is used
    assert lines[-1].plain.endswith("…")


@pytest.mark.parametrize("verdict, rung, head", [
    ("recovered", "safe-mode", "✔ RECOVERED by safe-mode"),
    ("recovered-by-swd", "swd-restore", "✔ RECOVERED BY SWD (12 s)"),  # "by SWD" once
    ("needs-technician", None, "! NEEDS YOU (12 s)"),
    ("damaged-hardware", None, "✘ DAMAGED HARDWARE (12 s)"),
])  # fmt: skip
def test_the_headline_names_only_the_rung_that_fixed_it(verdict, rung, head):
    state = idle_with(verdict, "", False, 0, "", rung)
    lines, verdict_at, _ = card_lines(state, False, 0, 38, 6, CONSOLE)
    assert lines[verdict_at].plain.startswith(head)
    assert lines[verdict_at].plain.count("SWD") <= 1


def test_a_rung_that_ended_the_run_is_not_shown_done():
    from kiosk.ladder import RungFinished, RungStarted

    state = SlotState(1, "slot 1")
    for event in (RungStarted(1, "identify"), RungFinished(1, "identify", "observed"), RungStarted(1, "safe-mode"),
                  RungFinished(1, "safe-mode", "done"), RungFinished(1, "safe-mode", "needs-owner"),
                  Verdict(1, "needs-owner", None, "Device Protection is on", 9.0, 9.0, PROTECTED_ACTION, True)):
        state = apply(state, event, 0.0)
    assert state.rungs["safe-mode"] == "halted" and state.rungs["identify"] == "done"
    assert [state.rungs[r] for r in RUNGS if r not in ("identify", "safe-mode")] == ["skipped"] * 4
