"""The touchscreen kiosk: a Textual app a technician runs with one finger.

The touchscreen is a client of the bench service (``kiosk service``), which owns the bench, the runs, the
journal and the library: this process draws and asks, and never imports a driver, the simulator or the
ladder. It can start, crash and restart at any moment; the runs go on in the service. On (re)connect the
service sends every slot's state (a :class:`~kiosk.service.slots.SlotState`), and then each new one as it
changes; the app shows them and changes them only in message handlers on the UI thread. Calls to the service
(Recover, Stop) run in plain daemon threads; look-ups (history, reports, the library) in thread workers.

The first frame comes first: the main screen shows a card per slot (known from the arguments or the
config) at once, and only then does the link connect; the cards come alive when the service answers.
While it does not, the title says so and the link keeps trying.

    kiosk tui --simulate app-crash@boron,corrupt-system@photon --speed 3
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.reactive import Reactive
from textual.screen import Screen
from textual.theme import Theme
from textual.widgets import Button

from kiosk.service.slots import SlotState, fresh_run, from_json
from kiosk.tui.guard import guard_handlers
from kiosk.tui.link import ServiceError, ServiceLink, ServiceUnavailable
from kiosk.tui.media import MEDIA_ROOTS
from kiosk.tui.messages import BenchFailed, Connected, Disconnected, Notice, ServiceNote
from kiosk.tui.screens.main import MainScreen
from kiosk.tui.settings import TuiSettings
from kiosk.tui.widgets.slot_card import SlotCard

#: A barcode scanner types a 24-hex device id and Enter within this many seconds. A person who types an id
#: and Enter that fast gets the same (harmless) result: the device's slot is selected, nothing is pressed.
SCAN_WINDOW_S = 5.0
DEVICE_ID_LENGTH = 24
HEX = frozenset("0123456789abcdefABCDEF")
TICK_S = 0.25  # the indeterminate bar's step
NOT_ALLOWED = -32003  # the service's code for a press this screen may not make (kiosk.service.wire)
#: What the title says while the service does not answer (and how to start it on a real bench).
NOT_ANSWERING = "the bench service is not answering; reconnecting…"
START_IT = "start it: sudo systemctl start particle-kiosk-bench"

THEMES = (
    Theme(name="kiosk-dark", primary="#4da3ff", secondary="#ffd60a", accent="#ffd60a", warning="#ffb000",
          error="#ff453a", success="#30d158", foreground="#ffffff", background="#000000", surface="#101010",
          panel="#1c1c1c", dark=True),
    Theme(name="kiosk-light", primary="#003e99", secondary="#7a4a00", accent="#7a4a00", warning="#8a5a00",
          error="#b00020", success="#006b1e", foreground="#000000", background="#ffffff", surface="#f2f2f2",
          panel="#e0e0e0", dark=False),
)
_THEMES = {theme.name: theme for theme in THEMES}


def _screen_factory(name: str, app: KioskApp):
    """The screen behind a name (imported on first use: the main screen shows first, fast)."""
    if name == "flash":
        from kiosk.tui.screens.flash import FlashScreen

        return FlashScreen(app.selected)
    if name == "library":
        from kiosk.tui.screens.library import LibraryScreen

        return LibraryScreen()
    if name == "history":
        from kiosk.tui.screens.history import HistoryScreen

        return HistoryScreen()
    if name == "report":
        from kiosk.tui.screens.report import ReportScreen

        state = app.states.get(app.selected)  # the selected slot's latest run: this session's, or the journal's
        return ReportScreen(state.last_run_id if state else None, slot=app.selected,
                            device_id=state.device_id if state else None)  # fmt: skip
    if name == "settings":
        from kiosk.tui.screens.settings import SettingsScreen

        return SettingsScreen()
    raise LookupError(f"no screen {name!r}")


@guard_handlers
class KioskApp(App[None]):
    """The kiosk on one bench. ``live`` False: no pollers and no animation (snapshot tests feed events).
    ``demo``: a simulated bench, which Ctrl+C (or Ctrl+Q) closes, as the title says."""

    CSS_PATH = "kiosk.tcss"
    #: The kiosk's own theme from the start, so the stylesheet is parsed once, with its colours: setting
    #: ``theme`` in __init__ instead re-parses every stylesheet and restyles every widget during start-up.
    theme: Reactive[str] = Reactive(THEMES[0].name)
    TITLE = "Particle bench kiosk"
    ENABLE_COMMAND_PALETTE = False  # a kiosk: nothing a technician could wander into
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("r", "recover_selected", "Recover", show=False),
        Binding("s", "stop_selected", "Stop", show=False),
        Binding("m", "open('flash')", "Flash by hand", show=False),
        Binding("l", "open('library')", "Library", show=False),
        Binding("h", "open('history')", "History", show=False),
        Binding("p", "open('report')", "Report", show=False),
        Binding("o", "open('settings')", "Settings", show=False),
        Binding("escape", "back", "Back", show=False),
        *(Binding(str(n), f"select_slot({n})", f"Slot {n}", show=False) for n in range(1, 5)),
    ]

    def __init__(self, link: ServiceLink | None, *, live: bool = True, settings: TuiSettings | None = None,
                 settings_file: Path | None = None, bench_words: str = "",
                 slots: Iterable[SlotState] = (), demo: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.demo = demo
        self.link = link
        self.live = live
        self.settings = settings or TuiSettings()
        self.settings_file = settings_file
        self.bench_words = bench_words
        self.states: dict[int, SlotState] = {s.index: s for s in slots}  # the cards of the first frame
        self.selected = 1
        self.bench_ready = threading.Event()  # the service answered once (or the bench could not be opened)
        self.bench_error: str | None = None
        self.connected = False
        self.offline_words: str | None = None  # why the service does not answer, while it does not
        self.bench_info: dict = {}  # the service's bench.state: journal, library, interrupted runs, rights
        self.may_act = True
        self.seq = 0  # the last change of the service's board this screen has drawn
        self._interrupted_told = False
        self._bench_started = False
        self._scan: list[tuple[str, float]] = []
        self.media_roots: tuple[Path, ...] = MEDIA_ROOTS  # where USB sticks appear (tests point it elsewhere)
        for theme in THEMES:
            self.register_theme(theme)
        self.set_class(True, f"-theme-{self.theme}", update=False)  # as Textual's theme watcher would
        if self.settings.theme != self.theme:
            self.theme = self.settings.theme
        _keep_out_of_gc()  # the modules and this app live as long as the process

    def get_theme(self, theme_name: str) -> Theme | None:
        # the kiosk's themes are known before __init__ registers them: Textual builds the stylesheet first
        return _THEMES.get(theme_name) or super().get_theme(theme_name)

    def get_default_screen(self) -> Screen:
        # the main screen is the first screen, composed with the app (no blank screen under it)
        return MainScreen()

    # -- start ------------------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.live:
            self.set_interval(TICK_S, self._tick)

    def on_ready(self) -> None:
        # Textual's Ready comes as the first frame is being drawn; the bench opens once it is on the screen
        self.call_after_refresh(self.start_bench)

    def start_bench(self) -> None:
        """Connect to the service in the link's thread, once the first frame is on the screen."""
        if self.link is not None and not self._bench_started:
            self._bench_started = True
            if self.link.private is not None:
                self.link.private.watch(lambda error: self.post_message(BenchFailed(error)))
            self.link.start(self.post_message)

    def on_connected(self, message: Connected) -> None:
        main = self.main_screen
        if main is None or self.bench_error is not None:
            return
        snapshot, hello = message.snapshot, message.hello
        self.connected, self.offline_words = True, None
        self.bench_info = snapshot
        self.bench_words = self.bench_words or str(hello.get("bench") or snapshot.get("bench") or "")
        self.may_act = bool(snapshot.get("may_act", hello.get("may_act", True)))
        shown = list(self.states)
        self.states = {}
        for data in snapshot.get("slots", []):  # the bench as it is now: the first frame's came from the arguments
            state = from_json(data)
            self.states[state.index] = state
        self.seq = int(snapshot.get("seq") or 0)
        if list(self.states) != shown:
            main.show_slots()
        else:
            for index, state in self.states.items():
                self.set_state(index, state)
            main.show_title()
        interrupted = snapshot.get("interrupted") or []
        if interrupted and not self._interrupted_told:
            self._interrupted_told = True
            runs = ", ".join(map(str, interrupted))
            self.notify(f"Runs {runs} were interrupted (the kiosk stopped mid-run); their record is kept.")
        _keep_out_of_gc()
        self.bench_ready.set()

    def on_disconnected(self, message: Disconnected) -> None:
        self.connected = False
        self.offline_words = message.why
        main = self.main_screen
        if main is not None:
            main.show_title()

    def on_bench_failed(self, message: BenchFailed) -> None:
        main = self.main_screen
        if main is None:
            return
        self.bench_error = message.error
        self.states.clear()  # the cards the first frame showed give way to what went wrong
        main.show_problem(f"The bench could not be opened:\n{message.error}")
        main.show_title()
        self.bench_ready.set()

    def on_service_note(self, message: ServiceNote) -> None:
        params = message.params
        if message.method == "notice":
            self.notify(str(params.get("text", "")), severity=params.get("severity", "information"), timeout=8)
            return
        data = params.get("state")
        slot = params.get("slot")
        if not isinstance(data, dict) or slot not in self.states:
            return
        self.seq = max(self.seq, int(params.get("seq") or 0))
        self.set_state(slot, from_json(data))

    def on_unmount(self) -> None:
        gc.unfreeze()  # (a test process goes on after the app: what was kept out is collected as usual again)

    def spawn(self, work: Callable[[], None], name: str) -> threading.Thread:
        """Run ``work`` in a daemon thread; what it raises reaches the technician as a notice."""

        def guarded() -> None:
            try:
                work()
            except Exception as exc:
                self.post_message(Notice(f"{name}: {exc}", "error"))

        thread = threading.Thread(target=guarded, name=f"tui-{name}", daemon=True)
        thread.start()
        return thread

    # -- what the screen says ---------------------------------------------------------------------
    @property
    def main_screen(self) -> MainScreen | None:
        """The main screen; None while the app is shutting down (workers may still be posting)."""
        return next((s for s in self.screen_stack if isinstance(s, MainScreen)), None)

    def title_text(self) -> str:
        slots = f" · {len(self.states)} slot{'s' if len(self.states) != 1 else ''}" if self.states else ""
        # a demo says how to leave it (in the room "tap RECOVER" takes: the big buttons say that themselves)
        hint = "Ctrl+C quits the demo" if self.demo else "tap RECOVER on a slot"
        if self.connected and not self.may_act:  # (on_connected draws the title before bench_ready is set)
            hint = "VIEW ONLY" + (": tap a button to enter the PIN" if self.bench_info.get("control") == "pin" else "")
        if self.offline_words is not None and self.bench_error is None:
            if self.demo or (self.link is not None and self.link.private is not None):
                return f"⚠ {NOT_ANSWERING} · {self.offline_words}"
            return f"⚠ {NOT_ANSWERING} · {START_IT}"  # a real bench: what to do comes first
        bench = f" · {self.bench_words}" if self.bench_words else ""  # none until a config-less client connects
        return f"PARTICLE BENCH KIOSK{bench}{slots} · {hint}"

    def action_help_quit(self) -> None:
        # Ctrl+C: a demo on a laptop closes as any terminal program does; the bench's kiosk only says how
        if self.demo:
            self.exit()
        else:
            super().action_help_quit()

    def set_state(self, slot: int, state: SlotState) -> None:
        self.states[slot] = state
        main = self.main_screen
        card = main.card(slot) if main is not None else None
        if card is not None:
            card.state = state
        stack = self.screen_stack  # empty while the app shuts down (a worker may still be posting)
        # the screen on top follows the slots once it is composed (a screen just pushed has no widgets yet)
        follower = getattr(stack[-1], "slot_changed", None) if stack and stack[-1].is_mounted else None
        if follower is not None:
            follower(slot, state)

    def _tick(self) -> None:
        main = self.main_screen
        for card in main.query("SlotCard") if main is not None else ():
            card.advance()

    def notify(self, message: str, *, markup: bool = False, **kwargs: Any) -> None:
        """Textual's toast, but plain text by default: the kiosk's words carry paths, `[remote] control` and
        the service's own messages, which as markup lost their brackets (and could fail to parse)."""
        super().notify(message, markup=markup, **kwargs)

    def on_notice(self, message: Notice) -> None:
        self.notify(message.text, severity=message.severity, timeout=8)

    def refused(self, exc: Exception) -> None:
        """(Any thread.) Say why the service did not do what was pressed; offer the PIN where one unlocks."""
        if isinstance(exc, ServiceError) and exc.code == NOT_ALLOWED and self.bench_info.get("control") == "pin":
            self.call_from_thread(self.ask_pin) if threading.current_thread() is not threading.main_thread() \
                else self.ask_pin()  # fmt: skip
            return
        words = str(exc) if isinstance(exc, ServiceError | ServiceUnavailable) else f"{type(exc).__name__}: {exc}"
        self.post_message(Notice(words, "warning"))

    def ask_pin(self) -> None:
        from kiosk.tui.screens.pin import PinScreen

        if not isinstance(self.screen, PinScreen):
            self.push_screen(PinScreen())

    def unlocked(self, rights: dict) -> None:
        self.may_act = bool(rights.get("may_act"))
        self.bench_info = {**self.bench_info, **rights}
        main = self.main_screen
        if main is not None:
            main.show_title()

    # -- actions ----------------------------------------------------------------------------------
    def toggle_slot(self, slot: int) -> None:
        """The slot's big button: Recover when idle, Stop when busy."""
        self.selected = slot
        state = self.states.get(slot)
        if state is None:
            return
        if state.running:
            self.stop_slot(slot)
        else:
            self.recover_slot(slot)

    def opened(self) -> bool:
        """The service answers: the cards' buttons may act. Before that a press says to wait a moment."""
        if self.bench_ready.is_set() and self.bench_error is None and self.connected:
            return True
        if not self.bench_ready.is_set():
            self.notify("The bench is still opening: a moment, then press again.", timeout=3)
        elif self.bench_error is None:
            self.notify(f"Not pressed: {NOT_ANSWERING}", severity="warning", timeout=4)
        return False

    def recover_slot(self, slot: int) -> None:
        state = self.states.get(slot)
        if state is None or state.running or self.link is None or not self.opened():
            return
        self.set_state(slot, fresh_run(state))
        self.spawn(lambda: self._ask("slot.recover", slot, state), f"recover-{slot}")

    def _ask(self, method: str, slot: int, before: SlotState) -> None:
        """(A thread.) Ask the service to act on a slot; a refusal puts the card back as it was, and says why."""
        try:
            self.link.call(method, {"slot": slot})
        except (ServiceError, ServiceUnavailable, TimeoutError) as exc:
            self.call_from_thread(self._put_back, slot, before)
            self.refused(exc)

    def _put_back(self, slot: int, before: SlotState) -> None:
        state = self.states.get(slot)
        if state is not None and state.activity in ("starting", "stopping") and not before.running:
            self.set_state(slot, before)
        elif state is not None and state.activity == "stopping":
            self.set_state(slot, _replace(state, activity="running"))

    def stop_slot(self, slot: int) -> None:
        """Stop at once: the card says so now; the ladder ends promptly with buttons released, power on."""
        state = self.states.get(slot)
        if state is None or not state.running or self.link is None or not self.opened():
            return
        self.set_state(slot, _replace(state, activity="stopping"))
        self.spawn(lambda: self._ask("slot.stop", slot, state), f"stop-{slot}")

    def action_recover_selected(self) -> None:
        self.recover_slot(self.selected)

    def action_stop_selected(self) -> None:
        self.stop_slot(self.selected)

    def action_select_slot(self, slot: int) -> None:
        if slot not in self.states or not isinstance(self.screen, MainScreen):
            return
        self.select_slot(slot)
        with contextlib.suppress(Exception):
            self.screen.query_one(f"#act-{slot}", Button).focus()

    def select_slot(self, slot: int) -> None:
        """Make ``slot`` the one Flash and Report act on; its card shows it (a double accent border)."""
        if slot not in self.states:
            return
        self.selected = slot
        main = self.main_screen
        for card in main.query(SlotCard) if main is not None else ():
            card.set_class(card.id == f"slot-{slot}", "selected")

    def action_open(self, name: str) -> None:
        if not self.bench_ready.is_set() or self.bench_error is not None or not isinstance(self.screen, MainScreen):
            return
        self.push_screen(_screen_factory(name, self))

    def action_back(self) -> None:
        if not isinstance(self.screen, MainScreen) and len(self.screen_stack) > 1:
            self.pop_screen()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        widget_id = getattr(event.widget, "id", None) or ""
        if widget_id.startswith("act-"):
            self.select_slot(int(widget_id.removeprefix("act-")))

    def apply_settings(self, settings: TuiSettings) -> None:
        self.settings = settings
        self.theme = settings.theme
        for slot, state in self.states.items():
            self.set_state(slot, state)

    # -- a barcode scanner ------------------------------------------------------------------------
    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded and self._scanned(event):
            return  # (a forwarded key is one bubbling back up: it was counted when it first arrived)
        await super().on_event(event)

    def _scanned(self, event: events.Key) -> bool:
        """True when this Enter ends a device id typed at scanner speed (then it is handled here)."""
        from textual.widgets import Input

        if isinstance(self.focused, Input):
            return False  # the history filter and the report form take the scanner's typing themselves
        now = time.monotonic()
        if event.character and event.character in HEX:
            self._scan = [(c, t) for c, t in self._scan if now - t <= SCAN_WINDOW_S]
            self._scan.append((event.character.lower(), now))
            return False
        if event.key != "enter":
            self._scan.clear()
            return False
        typed = "".join(c for c, _ in self._scan[-DEVICE_ID_LENGTH:])
        recent = self._scan and now - self._scan[-DEVICE_ID_LENGTH:][0][1] <= SCAN_WINDOW_S
        self._scan.clear()
        if len(typed) != DEVICE_ID_LENGTH or not recent:
            return False
        self.scanned(typed)
        return True

    def scanned(self, device_id: str) -> None:
        """A device id from the scanner: show its slot if it is on the bench, else its history."""
        for slot, state in self.states.items():
            if state.device_id == device_id:
                for _ in range(len(self.screen_stack) - 1):  # back to the main screen, however deep
                    self.pop_screen()
                self.action_select_slot(slot)
                self.notify(f"Device {device_id} is in slot {slot}.")
                return
        if self.bench_ready.is_set() and self.bench_error is None and self.connected:
            from kiosk.tui.screens.history import HistoryScreen

            self.push_screen(HistoryScreen(device_id))
            self.notify(f"Device {device_id} is not on the bench: its history.")


def _keep_out_of_gc() -> None:
    """Move every object alive now out of the cyclic collector's way (``gc.freeze``): objects made at start-up
    (modules, classes, the widgets, the bench) live as long as the kiosk, yet a full collection walks them all,
    holding the GIL. On a simulated bench with four slots flashing such a pass took 100 ms and more, the event
    loop's longest stalls; and one during start-up delays the first frame by 10-15 ms. Refcounting still frees
    frozen objects; only the cycle search skips them."""
    gc.freeze()


def _replace(state: SlotState, **changes) -> SlotState:
    from dataclasses import replace

    return replace(state, **changes)
