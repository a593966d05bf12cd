"""One slot's card: device, live LED, the ladder, flash progress, the verdict and one big Recover/Stop button.

Every part renders from a :class:`~kiosk.tui.state.SlotState` and nothing else, so the card shows the same
whether the state came from a live device or from fixed events in a snapshot test. Colour is never the
only signal: every colour has a word and a symbol beside it.
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static

from kiosk.tui.state import RUNG_STATES, RUNGS, USB_MODES, VERDICTS, SlotState
from kiosk.tui.widgets.touch_button import TouchButton

#: LED colour names -> the swatch's colour on screen (bright enough to read on black).
LED_STYLES: dict[str, str] = {
    "red": "#ff3b30",
    "green": "#30d158",
    "blue": "#3c8cff",
    "yellow": "#ffd60a",
    "cyan": "#32e0ff",
    "magenta": "#ff4dff",
    "white": "#ffffff",
    "off": "#3a3a3a",
}
#: The classifier's pattern names -> words a technician says.
PATTERN_WORDS: dict[str, str] = {
    "solid": "solid",
    "blink-slow": "blinking slowly",
    "blink-normal": "blinking",
    "blink-fast": "blinking fast",
    "breathing": "breathing",
    "off": "off",
    "sos": "SOS",
    "unknown": "changing",
}
#: Activity shown while a rung runs and no bytes move: the indeterminate bar's words.
WAITING_WORDS: dict[str, str] = {
    "identify": "watching the device",
    "cold-boot": "power off, drain, power on",
    "safe-mode": "restarting in safe mode",
    "update": "putting it in DFU, writing Device OS",
    "second-try": "writing again, other order",
    "swd-restore": "programming over SWD",
}
#: How each rung state is drawn (besides its symbol and word).
RUNG_STYLES: dict[str, str] = {"running": "bold reverse", "done": "bold", "failed": "bold underline",
                               "waiting": "dim", "skipped": "dim strike"}  # fmt: skip


def kib(n: int) -> str:
    return f"{n / 1024:.0f}" if n >= 10 * 1024 else f"{n / 1024:.1f}"


def led_words(state: SlotState) -> tuple[str, str | None]:
    """What the LED shows, in words (colour and pattern), and what it means (None: no meaning known)."""
    if not state.led_sensor:
        return "no LED sensor on this slot", "the kiosk judges by USB and control requests"
    reading = state.led
    if reading is None:
        if state.led_lit is None:
            return "LED: looking…", None
        return ("LED off" if state.led_lit == "off" else f"LED {state.led_lit}"), None
    pattern = reading.get("pattern") or "unknown"
    colour = reading.get("colour")
    if pattern == "off":
        words = "LED off"
    elif pattern == "sos":
        code = reading.get("sos_code")
        words = f"red SOS {code}" if code is not None else "red SOS"
    elif pattern == "unknown":
        seen = reading.get("colours_seen") or []
        words = "changing" + (f" ({'/'.join(seen)})" if seen else "")
    else:
        words = f"{PATTERN_WORDS.get(pattern, pattern)} {colour or ''}".strip()
        hz = reading.get("frequency_hz")
        if hz and pattern.startswith("blink"):
            words += f" {hz:g} Hz"
    if reading.get("sure") is False and pattern not in ("unknown", "sos"):
        words = "probably " + words
    return words, reading.get("meaning")


def led_text(state: SlotState, roomy: bool) -> Text:
    """A block lit in the LED's colour as the device blinks, with the pattern in words and any SOS code."""
    lit = state.led_lit
    swatch = Text()
    if not state.led_sensor:
        swatch.append(" ?? ", style="reverse")
    elif lit is None:
        swatch.append(" ·· ", style="dim")
    else:
        swatch.append("████" if lit != "off" else "░░░░", style=LED_STYLES.get(lit, "#ffffff"))
    swatch.append(" ")
    words, meaning = led_words(state)
    swatch.append(words, style="bold")
    sos = state.sos
    lines = [swatch]
    if sos and sos.get("sos_code") is not None:
        was = "was " if state.good and not state.running else ""
        code = Text(f"{was}SOS {sos['sos_code']} {sos.get('sos_name') or ''}", style="bold reverse")
        if roomy:
            code.append(f" {sos.get('sos_meaning') or ''}", style="bold")
            meaning = None  # the SOS meaning says more than the pattern's
            lines.append(code)
        elif f"SOS {sos['sos_code']}" not in words or was:
            swatch.append(" ")
            swatch.append_text(code)
    if roomy and meaning:
        lines.append(Text(meaning, style="italic"))
    text = Text("\n").join(lines)
    if not roomy:
        text.no_wrap, text.overflow = True, "ellipsis"
    return text


def ladder_text(state: SlotState, roomy: bool) -> Text:
    """The rungs with their states: one line of symbols and short names, or a list with words when roomy."""
    out = Text()
    for n, (rung, (short, long)) in enumerate(RUNGS.items()):
        rung_state = state.rungs.get(rung, "waiting")
        symbol, word = RUNG_STATES[rung_state]
        style = RUNG_STYLES.get(rung_state, "")
        if roomy:
            out.append(f"{symbol} {word:8} ", style=style)
            out.append(long + ("\n" if n < len(RUNGS) - 1 else ""), style=style)
        else:
            out.append(f"{symbol}{short}", style=style)
            out.append(" " if n < len(RUNGS) - 1 else "")
    return out


def bar_text(state: SlotState, roomy: bool, tick: int, width: int) -> Text:
    """Bytes and time left while flashing; an indeterminate bar while a rung waits for the device; else empty."""
    width = max(10, width)
    p = state.progress
    if p is not None:
        left = p.seconds_left
        figures = f" {p.fraction * 100:3.0f}% {kib(p.done)}/{kib(p.total)} KiB"
        figures += f" {left:.0f} s left" if left is not None else ""
        bar_width = max(6, width - len(figures))
        filled = round(bar_width * p.fraction)
        line = Text("█" * filled, style="bold")
        line.append("░" * (bar_width - filled), style="dim")
        line.append(figures, style="bold")
        line.no_wrap, line.overflow = True, "ellipsis"
        if roomy:
            phase = {"erase": "erasing", "write": "writing", "verify": "verifying"}.get(p.phase, p.phase)
            head = Text(f"{phase} {p.name} (step {p.step} of {p.steps})")
            line = Text("\n").join([head, line])
        return line
    if state.activity in ("starting", "running", "stopping", "flashing") or (state.running and not p):
        rung = state.current_rung
        words = {"starting": "starting…", "stopping": "stopping: releasing buttons, power on"}.get(
            state.activity, WAITING_WORDS.get(rung or "", "working…")
        )
        span = max(4, min(12, width // 4))
        track = max(span + 1, min(width // 2, 20))
        pos = tick % (2 * (track - span)) if track > span else 0
        pos = pos if pos <= track - span else 2 * (track - span) - pos
        bar = Text("░" * pos, style="dim")
        bar.append("▓" * span, style="bold")
        bar.append("░" * (track - span - pos), style="dim")
        bar.append(f" {words}")
        bar.no_wrap, bar.overflow = not roomy, "ellipsis"
        return bar
    return Text()


def verdict_text(state: SlotState, roomy: bool) -> tuple[Text, str | None]:
    """The verdict in words a technician acts on, and its tone (good, attention, bad, neutral; None: no
    verdict). An empty slot says to plug a device in."""
    if state.running:
        detail = state.rung_detail or ("recovering…" if state.busy_with == "recovery" else "flashing…")
        return Text(detail, style="italic"), None
    if state.verdict is not None:
        words = VERDICTS.get(state.verdict) or VERDICTS["error"]
        head = Text(f"{words.symbol} {words.headline}", style="bold")
        if state.verdict_rung:
            head.append(f" by {state.verdict_rung}")
        if state.elapsed_s is not None:
            head.append(f" ({state.elapsed_s:.0f} s)")
        body = [head]
        if state.verdict_detail:  # the words a technician acts on come first
            body.append(Text(state.verdict_detail))
        if roomy:
            body.append(Text(words.action, style="italic"))
        return Text("\n").join(body), words.tone
    if state.present is False:
        return Text("○ No device on USB: plug a device in.\nA dark device? Press RECOVER.", style="bold"), None
    if state.present is None:
        return Text("looking for a device…", style="italic"), None
    return Text("● Ready: press RECOVER", style="bold"), None


class CardBody(Static):
    """The card's words, drawn as one widget: the LED, the rungs, the flash bar and the verdict.

    One widget rather than four keeps the first frame quick (Textual's cost is per widget). Each part keeps
    its own lines: the LED at most three (one when not roomy), the bar one (two when roomy, none when roomy
    and idle), the verdict the rest, in its tone's colour.
    """

    text = ""  # what the card says, as plain text (tests and logs read it)

    def show(self, state: SlotState, roomy: bool, tick: int) -> None:
        width = self.size.width or 36
        verdict, tone = verdict_text(state, roomy)
        if tone is not None:
            verdict.stylize(_tone_colour(self.app, tone))
        bar = bar_text(state, roomy, tick, width)
        parts = [led_text(state, roomy)]
        if roomy:
            parts.append(Text())  # a blank line above the list of rungs
        parts.append(ladder_text(state, roomy))
        if bar or not roomy:
            parts.append(bar)  # one line even when empty, so the verdict does not jump when a flash starts
        parts.append(verdict)
        self.text = "\n".join(part.plain for part in parts)
        self.update(Group(*parts))


def _tone_colour(app, tone: str) -> str:
    theme = app.current_theme
    return {"good": theme.success, "attention": theme.warning, "bad": theme.error}.get(tone) or theme.foreground


class FlashBar(Static):
    """Bytes and time left while flashing, on its own (the manual flash screen)."""

    def show(self, state: SlotState, roomy: bool, tick: int) -> None:
        self.update(bar_text(state, roomy, tick, self.size.width or 36))


class SlotCard(Vertical):
    """One slot. ``state`` drives everything; ``roomy`` switches to the long forms on a big screen."""

    state: reactive[SlotState | None] = reactive(None, init=False, always_update=True)
    roomy: reactive[bool] = reactive(False, init=False)

    def __init__(self, state: SlotState, **kwargs) -> None:
        super().__init__(id=f"slot-{state.index}", classes="slot-card", **kwargs)
        self._initial = state
        self._tick = 0
        self._composed = False  # a state that comes before the parts exist waits for on_mount
        # the parts, kept (not queried) so a state arriving while the app shuts down finds them even once removed
        self._body = CardBody(classes="card-body")
        self._button = TouchButton("▶ RECOVER", id=f"act-{state.index}", classes="act", variant="success")

    def compose(self) -> ComposeResult:
        yield from (self._body, self._button)

    def on_mount(self) -> None:
        # the app's state may have moved on while the card was being mounted
        self._composed = True
        self.state = getattr(self.app, "states", {}).get(self._initial.index, self._initial)

    def watch_state(self, state: SlotState | None) -> None:
        if state is not None and self._composed:
            self._render_state(state)

    def watch_roomy(self, roomy: bool) -> None:
        self.set_class(roomy, "roomy")
        if self.state is not None and self._composed:
            self._render_state(self.state)

    def advance(self) -> None:
        """One step of the indeterminate bar (called by the app's timer while the slot is busy)."""
        self._tick += 1
        if self._composed and self.state is not None and self.state.running and self.state.progress is None:
            self._body.show(self.state, self.roomy, self._tick)

    def _render_state(self, state: SlotState) -> None:
        platform = state.shown_platform
        self.border_title = f"Slot {state.index}" + (f" · {platform}" if platform else "")
        mode = USB_MODES.get(state.usb_mode, state.usb_mode or "")
        settings = getattr(self.app, "settings", None)
        ident = state.device_id if settings is not None and settings.full_device_ids else state.short_id
        subtitle = " · ".join(x for x in (ident, mode if state.present is not None else None) if x)
        self.border_subtitle = subtitle
        self._body.show(state, self.roomy, self._tick)
        button = self._button
        if state.activity == "stopping":
            button.label, button.variant, button.disabled = "■ STOPPING…", "warning", True
        elif state.running:
            stop = "■ STOP FLASH" if state.busy_with == "manual flash" else "■ STOP"
            button.label, button.variant, button.disabled = stop, "error", False
        else:
            button.label, button.variant, button.disabled = "▶ RECOVER", "success", False
        self.set_class(state.running, "busy")
