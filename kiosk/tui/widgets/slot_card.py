"""One slot's card: device, live LED, the ladder, flash progress, the verdict and one big Recover/Stop button.

Every part renders from a :class:`~kiosk.service.slots.SlotState` and nothing else, so the card shows the same
whether the state came from a live device or from fixed events in a snapshot test. Colour is never the
only signal: every colour has a word and a symbol beside it.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static

from kiosk.advice import AGAIN_TOUCHSCREEN, instruction
from kiosk.service.slots import RUNG_STATES, RUNGS, USB_MODES, VERDICTS, SlotState, kib
from kiosk.tui.guard import guard_handlers
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
    """A block lit in the LED's colour as the device blinks, with the pattern in words and any SOS code
    ("was SOS n" once the LED shows something else)."""
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
        showing = (state.led or {}).get("pattern") == "sos"  # the SOS is on the LED now, or it was earlier
        was = "" if showing else "was "
        code = Text(f"{was}SOS {sos['sos_code']} {sos.get('sos_name') or ''}".rstrip(), style="bold reverse")
        if roomy:
            code.append(f" {sos.get('sos_meaning') or ''}".rstrip(), style="bold")
            meaning = None  # the SOS meaning says more than the pattern's
            lines.append(code)
        elif f"SOS {sos['sos_code']}" not in words or was:
            swatch.append(" ")
            swatch.append_text(code)
        elif sos.get("sos_name"):  # the LED's words have the code: its name beside them
            swatch.append(f" {sos['sos_name']}", style="bold reverse")
    if roomy and meaning:
        lines.append(Text(meaning, style="italic"))
    return Text("\n").join(lines)


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


#: What a busy card says it does before the work's own events say more.
BUSY_WORDS = {"recovery": "recovering…", "manual flash": "flashing…", "restore over SWD": "restoring over SWD…",
              "mode change": "changing its mode…"}  # fmt: skip


def verdict_text(state: SlotState) -> tuple[Text, Text, Text, str | None]:
    """The verdict as three parts: a headline, the instruction a technician acts on (which the card always
    shows whole), and what was found (shown as far as there is room); and the tone (good, attention, bad,
    neutral; None: no verdict yet). While a slot works, the headline is what it is doing."""
    if state.running:
        detail = state.rung_detail or BUSY_WORDS.get(state.busy_with or "", "working…")
        return Text(detail, style="italic"), Text(), Text(), None
    if state.verdict is not None:
        words = VERDICTS.get(state.verdict) or VERDICTS["error"]
        head = Text(f"{words.symbol} {words.headline}", style="bold")
        if state.verdict_rung and state.good and state.verdict != "recovered-by-swd":  # (that one says how)
            head.append(f" by {state.verdict_rung}")
        if state.elapsed_s is not None:
            head.append(f" ({state.elapsed_s:.0f} s)")
        action = instruction(state.verdict, state.verdict_action, state.verdict_again, state.usb_errors,
                             AGAIN_TOUCHSCREEN)  # fmt: skip
        return head, Text(action, style="bold"), Text(state.verdict_detail, style="italic"), words.tone
    done = Text(state.rung_detail, style="italic") if state.busy_with == "mode change" else Text()  # what came of it
    if state.present is False:
        return Text("○ No device on USB: plug a device in.", style="bold"), Text("A dark device? Press RECOVER."), \
            done, None  # fmt: skip
    if state.present is None:
        return Text("looking for a device…", style="italic"), Text(), done, None
    return Text("● Ready: press RECOVER", style="bold"), Text(), done, None


def card_lines(state: SlotState, roomy: bool, tick: int, width: int, height: int,
               console: Console) -> tuple[list[Text], int, str | None]:  # fmt: skip
    """The card's words as at most ``height`` lines of ``width`` cells, the index of the verdict's first line,
    and the verdict's tone.

    The verdict's headline and its whole instruction come first; then, as room allows: the rungs, the
    LED, the flash bar, the rungs as a list (roomy), what was found, and the LED's meaning. What does not
    fit is left out (what was found is cut with an ellipsis), never the instruction.
    """
    width = max(10, width)

    def wrap(text: Text) -> list[Text]:
        return list(text.wrap(console, width)) if text.plain else []

    head, action, found, tone = verdict_text(state)
    must = wrap(head) + wrap(action)
    led_long = wrap(led_text(state, True)) if roomy else []
    led_short = led_text(state, False)
    led_short.no_wrap, led_short.overflow = True, "ellipsis"
    rungs_long = wrap(ladder_text(state, True)) if roomy else []

    def bar_lines(long: bool) -> list[Text]:
        bar = bar_text(state, long, tick, width)
        return wrap(bar) if bar.plain else ([Text()] if state.running else [])

    left = height - len(must)
    parts: dict[str, list[Text]] = {}

    def take(name: str, lines: list[Text]) -> bool:
        nonlocal left
        extra = len(lines) - len(parts.get(name, []))
        if not lines or extra > left:
            return False
        parts[name] = lines
        left -= extra
        return True

    ladder = state.busy_with in (None, "recovery")  # by hand (a flash, a restore, a mode change) is no recovery
    if ladder:
        take("rungs", [ladder_text(state, False)])
    take("led", [led_short])
    take("bar", bar_lines(False))
    if rungs_long and ladder:
        take("rungs", [Text(), *rungs_long])  # a blank line above the list
    if roomy:
        take("bar", bar_lines(True))  # with the step's name and number
    found_lines = wrap(found)
    if found_lines and left > 0:
        shown = found_lines[:left]
        if len(shown) < len(found_lines):
            last = shown[-1]
            last.truncate(max(1, width - 1))
            last.append("…")
        parts["found"] = shown
        left -= len(shown)
    if led_long:
        take("led", led_long)
    above = [*parts.get("led", []), *parts.get("rungs", []), *parts.get("bar", [])]
    lines = [*above, *must, *parts.get("found", [])]
    for line in lines:
        line.no_wrap, line.overflow = True, "ellipsis"
        line.truncate(width, overflow="ellipsis")
    return lines, len(above), tone


@guard_handlers
class CardBody(Static):
    """The card's words, drawn as one widget: the LED, the rungs, the flash bar and the verdict.

    One widget rather than four keeps the first frame quick (Textual's cost is per widget). The lines are
    laid out for the widget's size (:func:`card_lines`): the verdict's instruction is always whole.
    """

    text = ""  # what the card says, as plain text (tests and logs read it)
    _shown: Text | None = None  # what was last drawn

    def show(self, state: SlotState, roomy: bool, tick: int) -> None:
        width, height = self.size.width or 36, self.size.height or 6
        lines, verdict_at, tone = card_lines(state, roomy, tick, width, height, self.app.console)
        if tone is not None:
            colour = _tone_colour(self.app, tone)
            for line in lines[verdict_at:]:
                line.stylize(colour)
        shown = Text("\n").join(lines)
        if shown == self._shown:
            return  # the same words in the same colours: nothing to repaint
        self._shown = shown
        self.text = "\n".join(line.plain for line in lines)
        shown.no_wrap, shown.overflow = True, "ellipsis"  # laid out to the width already: no second wrapping
        # The body's size comes from the card (kiosk.tcss: 1fr each way), never from its words: no layout pass,
        # which is most of what a repaint costs (every LED change repaints the body).
        self.update(shown, layout=False)

    def on_resize(self) -> None:
        card = self.parent
        if isinstance(card, SlotCard) and card.state is not None and card._composed:
            card._render_state(card.state)


def _tone_colour(app, tone: str) -> str:
    theme = app.current_theme
    return {"good": theme.success, "attention": theme.warning, "bad": theme.error}.get(tone) or theme.foreground


class FlashBar(Static):
    """Bytes and time left while flashing, on its own (the manual flash screen)."""

    def show(self, state: SlotState, roomy: bool, tick: int) -> None:
        self.update(bar_text(state, roomy, tick, self.size.width or 36))


#: A card at least this wide (cells, its border included) uses the long forms where its height has room for
#: them (card_lines decides, line by line): the rungs as a list, the LED's meaning, the step being written.
ROOMY_WIDTH = 40  # the longest rung line (38 cells) fits a 40-cell card
PADDED_WIDTH = 50  # from this wide a card has a cell of margin each side


@guard_handlers
class SlotCard(Vertical):
    """One slot. ``state`` drives everything; ``roomy`` (from the card's own size) switches to the long forms.
    A tap anywhere on the card selects its slot (what Flash and Report act on)."""

    state: reactive[SlotState | None] = reactive(None, init=False, always_update=True)
    roomy: reactive[bool] = reactive(False, init=False)

    def __init__(self, state: SlotState, **kwargs) -> None:
        super().__init__(id=f"slot-{state.index}", classes="slot-card", **kwargs)
        self._initial = state
        self._tick = 0
        self._composed = False  # a state that comes before the parts exist waits for on_mount
        self._titles: tuple[str, str] | None = None  # the border's title and subtitle as last set
        self._button_look: tuple[str, str, bool] | None = None  # the big button's label, variant, disabled
        # the parts, kept (not queried) so a state arriving while the app shuts down finds them even once removed
        self._body = CardBody(classes="card-body")
        self._button = TouchButton("▶ RECOVER", id=f"act-{state.index}", classes="act", variant="success")

    def compose(self) -> ComposeResult:
        yield from (self._body, self._button)

    def on_mount(self) -> None:
        # the app's state may have moved on while the card was being mounted
        self._composed = True
        self.set_class(getattr(self.app, "selected", None) == self._initial.index, "selected")
        self.state = getattr(self.app, "states", {}).get(self._initial.index, self._initial)

    def watch_state(self, state: SlotState | None) -> None:
        if state is not None and self._composed:
            self._render_state(state)

    def on_resize(self) -> None:
        width = self.outer_size.width
        self.roomy = width >= ROOMY_WIDTH
        self.set_class(width >= PADDED_WIDTH, "padded")

    def on_click(self) -> None:
        select = getattr(self.app, "select_slot", None)
        if select is not None:
            select(self._initial.index)

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
        # Only what changed is set: a border title (set even to the same text) repaints the whole card, and the
        # LED's swatch changes state many times a second while a device blinks.
        platform = state.shown_platform
        title = f"Slot {state.index}" + (f" · {platform}" if platform else "")
        mode = USB_MODES.get(state.usb_mode, state.usb_mode or "")
        settings = getattr(self.app, "settings", None)
        ident = state.device_id if settings is not None and settings.full_device_ids else state.short_id
        subtitle = " · ".join(x for x in (ident, mode if state.present is not None else None) if x)
        if (title, subtitle) != self._titles:
            self._titles = (title, subtitle)
            self.border_title, self.border_subtitle = title, subtitle
        self._body.show(state, self.roomy, self._tick)
        if state.activity == "stopping":
            look = ("■ STOPPING…", "warning", True)
        elif state.running:
            look = ("■ STOP FLASH" if state.busy_with == "manual flash" else "■ STOP", "error", False)
        else:
            look = ("▶ RECOVER", "success", False)
        if look != self._button_look:
            self._button_look = look
            button = self._button
            button.label, button.variant, button.disabled = look
        self.set_class(state.running, "busy")
