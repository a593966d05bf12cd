"""Manual flashing: choose a slot, modules (from the library or a USB stick) and the transport (automatic, as
Particle's tools choose per module; usb only; serial); the planner checks everything first and its refusal is
shown in plain words before a byte is written, with the transport that would plan where one would (tried by
checking again, not guessed). No force anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, RadioSet, Static

from kiosk.service.slots import VERDICTS, SlotState, fresh_run
from kiosk.tui.link import ServiceError, ServiceUnavailable
from kiosk.tui.media import firmware_files, removable_media
from kiosk.tui.screens.base import KioskScreen
from kiosk.tui.widgets.choices import ChoiceList, mark_radios, marked_radio
from kiosk.tui.widgets.slot_card import FlashBar
from kiosk.tui.widgets.touch_button import TouchButton

#: The transports a technician may choose, with the words on their buttons; the first is the default.
TRANSPORTS: dict[str, tuple[str, str]] = {  # key -> (the service's transport, words)
    "auto": ("auto", "automatic"),
    "usb": ("usb", "usb only"),
    "serial": ("serial", "serial (YModem)"),
}
DEFAULT_TRANSPORT = next(iter(TRANSPORTS))
NOT_ALLOWED = -32003  # kiosk.service.wire's code for a press this screen may not make
#: How each mechanism writes, in the words of a checked plan.
MECHANISM_WORDS = {
    "dfu": "DFU",
    "dfu-ota": "DFU into the OTA region; Device OS applies it at its next boot",
    "control-request": "control request",
    "ymodem": "YModem",
}


@dataclass(frozen=True)
class Source:
    """A module the technician chose: a library entry (its path in the library) or a file on a stick."""

    label: str
    library: str | None = None
    path: Path | None = None

    def to_json(self) -> dict[str, str]:
        if self.library:
            return {"library": self.library, "label": self.label}
        return {"file": str(self.path), "label": self.label}


def describe_plan(plan: dict[str, Any]) -> Text:
    """The checked plan (the service's flash.plan answer) in words: what goes where, how, and any warnings."""
    text = Text(f"OK to flash: {plan['device']}\n", style="bold")
    for n, step in enumerate(plan["steps"], 1):
        how = MECHANISM_WORDS.get(step["mechanism"], step["mechanism"])
        text.append(f"{n}. {Path(step['name']).name} → {how}, {step['size']} bytes ({step['device_mode']} mode)\n")
    for warning in plan["warnings"]:
        text.append(f"note: {warning}\n", style="italic")
    return text


def describe_refusal(plan: dict[str, Any], plans_with: str | None = None) -> Text:
    """Every reason, and ``plans_with``: the key of a transport with which the same check planned."""
    text = Text(f"REFUSED ✘ nothing was written. {plan['device']}\n", style="bold")
    for refusal in plan["refusals"]:
        text.append(f"• {Path(refusal['name']).name}: {refusal['reason']}\n")
    if plans_with is not None:
        text.append(f"It plans with “{TRANSPORTS[plans_with][1]}” (checked): choose it and tap CHECK.\n")
    return text


class FlashScreen(KioskScreen):
    """Pick, check, then flash; the slot's card on the main screen shows the same progress."""

    TITLE_TEXT = "FLASH BY HAND · choose slot, modules and transport · CHECK, then FLASH"

    def __init__(self, slot: int = 1) -> None:
        super().__init__()
        self.slot = slot
        self.sources: dict[str, Source] = {}
        self.checked: dict[str, Any] | None = None  # the service's answer to flash.plan, with its plan id
        self._slot_was_running = False  # the result is said once, as the flash ends (not on every LED change)

    def body(self) -> Iterable:
        app = self.app
        with Vertical(classes="body"):
            with Horizontal(classes="row", id="slot-row"):
                for number in app.states:
                    yield TouchButton(f"Slot {number}", id=f"pick-{number}", classes="pick")
            with RadioSet(id="transport"):
                for key, (_, words) in TRANSPORTS.items():
                    yield marked_radio(words, key == DEFAULT_TRANSPORT, f"transport-{key}")
            yield ChoiceList(id="modules")
            yield FlashBar(id="flash-progress")
            yield Static("Choose modules, then tap CHECK.", id="plan-result", classes="note")

    def buttons(self) -> Iterable[Button]:
        yield TouchButton("USB stick", id="stick")
        yield TouchButton("Check", id="check", variant="primary")
        yield TouchButton("Flash", id="flash", variant="success", disabled=True)

    def on_mount(self) -> None:
        self._pick(self.slot if self.slot in self.app.states else next(iter(self.app.states), 1))

    # -- choosing ------------------------------------------------------------------------------------
    def _pick(self, slot: int) -> None:
        self.slot = slot
        self._slot_was_running = False
        for button in self.query(".pick").results(Button):
            chosen = button.id == f"pick-{slot}"
            button.label = f"◆ Slot {button.id.removeprefix('pick-')}" if chosen else f"Slot {button.id[5:]}"
            button.variant = "primary" if chosen else "default"
        self._invalidate()
        self._load_library()
        self.slot_changed(slot, self.app.states.get(slot))

    @work(thread=True, exclusive=True, group="library")
    def _load_library(self) -> None:
        state = self.app.states.get(self.slot)
        platform = state.shown_platform if state else None
        try:
            entries = self.app.link.call("library.list", {"platform": platform})["entries"]
        except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
            self.app.call_from_thread(self.say, "plan-result", f"The library could not be read: {exc}", "problem")
            return
        entries.sort(key=lambda e: (e["platform"], e.get("release") or "", e["name"]), reverse=True)
        sources = [Source(e["label"], library=e["path"]) for e in entries if e.get("kind") == "module"]
        self.app.call_from_thread(self._show_sources, sources, keep_files=True)

    def _show_sources(self, sources: list[Source], keep_files: bool = False) -> None:
        chosen = set(self.query_one(ChoiceList).selected)
        kept = {k: v for k, v in self.sources.items() if keep_files and v.path is not None}
        self.sources = {**kept, **{f"lib:{s.library}": s for s in sources if s.library is not None},
                        **{f"file:{s.path}": s for s in sources if s.path is not None}}  # fmt: skip
        self.query_one(ChoiceList).set_choices([(s.label, key) for key, s in self.sources.items()], chosen)
        if not self.sources:
            self.say("plan-result", "The library has nothing for this platform: import a release in Library, "
                     "or tap USB stick.", "problem")  # fmt: skip

    def pressed_stick(self) -> None:
        sticks = removable_media(self.app.media_roots)
        if not sticks:
            self.say("plan-result", "No USB stick found: plug one in, wait a moment, then tap USB stick again.",
                     "problem")  # fmt: skip
            return
        files: list[Source] = []
        problems = []
        for stick in sticks:
            try:
                files += [Source(f"stick {stick.name}: {f.name}", path=f) for f in firmware_files(stick)]
            except OSError as exc:
                problems.append(f"{stick}: {exc}")
        if not files:
            self.say("plan-result", f"No .bin files on {', '.join(map(str, sticks))}. "
                     + " ".join(problems), "problem")  # fmt: skip
            return
        library = [s for s in self.sources.values() if s.library is not None]
        self._show_sources([*library, *files])
        self.say("plan-result", f"{len(files)} module file(s) from the USB stick added to the list.", "note")

    def on_choice_list_changed(self, _event: ChoiceList.Changed) -> None:
        self._invalidate()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        mark_radios(event.radio_set)
        self._invalidate()

    def pressed_pick(self, slot: int) -> None:
        self._pick(slot)

    def _invalidate(self) -> None:
        """A choice changed: what was checked no longer holds, so Flash waits for a new Check."""
        self.checked = None
        state = self.app.states.get(self.slot)
        if state is not None and state.running:
            return  # the button is Stop while this slot works
        flash = self.query_one("#flash", Button)
        flash.label, flash.variant, flash.disabled = "Flash", "success", True

    @property
    def transport(self) -> str:
        pressed = self.query_one(RadioSet).pressed_button
        key = (pressed.id or "").removeprefix("transport-") if pressed else DEFAULT_TRANSPORT
        return TRANSPORTS.get(key, TRANSPORTS[DEFAULT_TRANSPORT])[0]

    # -- checking and flashing ------------------------------------------------------------------------
    def pressed_check(self) -> None:
        chosen = [self.sources[key] for key in self.query_one(ChoiceList).selected if key in self.sources]
        if not chosen:
            self.say("plan-result", "Choose at least one module first (tap it in the list).", "problem")
            return
        self.say("plan-result", f"Checking with the device in slot {self.slot}… nothing is written yet.", "note")
        self._check(self.slot, chosen, self.transport)

    @work(thread=True, exclusive=True, group="check")
    def _check(self, slot: int, chosen: list[Source], transport: str) -> None:
        params = {"slot": slot, "modules": [s.to_json() for s in chosen], "transport": transport}
        try:
            result = self.app.link.call("flash.plan", params)
        except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
            self.app.call_from_thread(self._refused, exc)
            return
        self.app.call_from_thread(self._show_check, result)

    def _refused(self, exc: Exception) -> None:
        self.say("plan-result", f"✘ {exc}", "problem")
        if getattr(exc, "code", None) == NOT_ALLOWED:
            self.app.refused(exc)

    def _show_check(self, result: dict[str, Any]) -> None:
        if result["slot"] != self.slot:
            return
        if result["refused"]:
            self.checked = None
            # the planner's own suggestion: a transport it tried on the same device and modules, and it planned
            plans_with = next((key for key, (t, _) in TRANSPORTS.items() if t == result["suggestion"]), None)
            self.say("plan-result", describe_refusal(result, plans_with), "problem")
            return
        self.checked = result
        self.say("plan-result", describe_plan(result), "good")
        self.query_one("#flash", Button).disabled = False

    def pressed_flash(self) -> None:
        state = self.app.states.get(self.slot)
        if state is not None and state.running:
            if state.busy_with == "manual flash":
                self.app.stop_slot(self.slot)
            else:
                self.say("plan-result", f"Slot {self.slot} is busy with a {state.busy_with}: wait for its verdict, "
                         "or stop it on the main screen.", "problem")  # fmt: skip
            return
        if self.checked is None:
            self.say("plan-result", "Tap CHECK first: the plan is checked before anything is written.", "problem")
            return
        plan, slot = self.checked, self.slot
        self.checked = None  # a plan is written once; the next flash is checked again
        before = self.app.states[slot]
        self.app.set_state(slot, fresh_run(before, "manual flash"))
        self.say("plan-result", f"Flashing slot {slot}: {len(plan['steps'])} step(s)…", "note")

        def flash() -> None:
            try:
                self.app.link.call("flash.start", {"plan_id": plan["plan_id"]})
            except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
                self.app.call_from_thread(self.app._put_back, slot, before)
                self.app.call_from_thread(self._refused, exc)

        self.app.spawn(flash, f"flash-{slot}")

    def slot_changed(self, slot: int, state: SlotState | None) -> None:
        """Called by the app whenever a slot's state changes: mirror this slot's progress and result."""
        if slot != self.slot or state is None:
            return
        self.query_one(FlashBar).show(state, True, 0)
        flash = self.query_one("#flash", Button)
        ended, self._slot_was_running = self._slot_was_running and not state.running, state.running
        if state.running:
            busy = state.busy_with == "manual flash"
            flash.label = "■ Stop" if busy else f"Busy: {state.busy_with}"
            flash.variant, flash.disabled = ("error" if busy else "default"), state.activity == "stopping" or not busy
            if busy and state.rung_detail:
                self.say("plan-result", state.rung_detail, "note")
        elif ended:
            flash.label, flash.variant, flash.disabled = "Flash", "success", True
            if state.busy_with != "manual flash" or state.verdict is None:
                self.say("plan-result", f"Slot {slot} is free again: tap CHECK.", "note")
                return
            kind = "good" if state.verdict == "flashed" else "problem"
            words = VERDICTS.get(state.verdict) or VERDICTS["error"]
            self.say("plan-result", f"{words.symbol} {words.headline}: {state.verdict_detail}\nTap CHECK to flash "
                     "again, or choose other modules.", kind)  # fmt: skip
