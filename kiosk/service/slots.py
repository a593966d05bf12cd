"""What one slot's card shows, as plain data, how each event changes it, and how it travels as JSON.

The card is a pure function of a :class:`SlotState`; :func:`apply` folds a ladder or flash event into
it. The bench service keeps one per slot, reduced from its engine's events, and sends each new one to its
clients as JSON (:func:`to_json`, :func:`from_json`): a touchscreen that (re)connects draws what every slot
does now, and never needs the ladder's event types. Nothing here imports Textual or the drivers.

    >>> from kiosk.ladder import RungStarted
    >>> state = SlotState(1, "slot 1")
    >>> state = apply(state, RungStarted(1, "identify"), at=0.0)
    >>> state.rungs["identify"], state.rungs["cold-boot"]
    ('running', 'waiting')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # events and the ladder (and all it imports) come with the bench, after the first frame
    from kiosk.events import Event, PlanFinished, PlanStarted, Progress, Retry, StepFinished, StepStarted
    from kiosk.ladder import Observation, RungFinished, RungStarted, RunStarted, Verdict

#: The ladder's rungs in order, with the short label a card has room for and the long one it has at 120x40.
RUNGS: dict[str, tuple[str, str]] = {
    "identify": ("look", "Identify: USB, modules, LED"),
    "cold-boot": ("power", "Cold boot (power off, on)"),
    "safe-mode": ("safe", "Safe mode, then Tinker"),
    "update": ("update", "Device OS update + Tinker"),
    "second-try": ("again", "Second try, other order"),
    "swd-restore": ("swd", "Restore over SWD"),
}

#: A rung's state -> the symbol beside it (never colour alone) and the word for it.
RUNG_STATES: dict[str, tuple[str, str]] = {
    "waiting": ("·", "waiting"),
    "running": ("▶", "running"),
    "done": ("✔", "done"),
    "skipped": ("–", "skipped"),
    "failed": ("✘", "failed"),
    "stopped": ("■", "stopped"),
    "halted": ("!", "halted"),
}

#: What a RungFinished outcome says about the rung.
OUTCOME_STATE: dict[str, str] = {
    "observed": "done",
    "done": "done",
    "healthy": "done",
    "written": "done",
    "skipped": "skipped",
    "not yet": "failed",
    "failed": "failed",
    "refused": "failed",
    "no-image": "failed",
    "technician": "failed",
    "damaged": "failed",
    "needs-technician": "halted",  # the run ended in this rung: the verdict says what the technician must do
    "needs-owner": "halted",
}


@dataclass(frozen=True)
class VerdictWords:
    """How a verdict reads from a metre away: a symbol, a headline and its style class (what to do is
    :func:`kiosk.advice.instruction`'s)."""

    symbol: str
    headline: str
    tone: str  # "good", "attention", "bad", "neutral": the CSS class; the words say the same


VERDICTS: dict[str, VerdictWords] = {
    "healthy": VerdictWords("✔", "HEALTHY", "good"),
    "recovered": VerdictWords("✔", "RECOVERED", "good"),
    "recovered-by-swd": VerdictWords("✔", "RECOVERED BY SWD", "good"),
    "needs-technician": VerdictWords("!", "NEEDS YOU", "attention"),
    "needs-owner": VerdictWords("!", "NEEDS THE OWNER", "attention"),
    "damaged-hardware": VerdictWords("✘", "DAMAGED HARDWARE", "bad"),
    "stopped": VerdictWords("■", "STOPPED", "neutral"),
    "interrupted": VerdictWords("■", "INTERRUPTED", "attention"),  # the bench service stopped mid-run
    "flashed": VerdictWords("✔", "FLASHED", "good"),
    "flash-failed": VerdictWords("✘", "FLASH FAILED", "bad"),
    "error": VerdictWords("✘", "KIOSK FAULT", "bad"),
}

GOOD_VERDICTS = frozenset({"healthy", "recovered", "recovered-by-swd", "flashed"})

#: Words for USB modes as the card shows them.
USB_MODES: dict[str | None, str] = {
    "normal": "running",
    "dfu": "DFU",
    "listening": "listening",
    None: "not on USB",
}

#: What the flash executor's phases are called on the progress line.
PHASES: dict[str, str] = {"erase": "erasing", "write": "writing", "verify": "verifying", "send": "sending"}


def kib(n: int) -> str:
    """Bytes as KiB in a card's few cells: whole numbers from 10 KiB, one decimal below."""
    return f"{n / 1024:.0f}" if n >= 10 * 1024 else f"{n / 1024:.1f}"


@dataclass(frozen=True)
class FlashProgress:
    """The write in progress: which step of how many, bytes done, and the rate seen so far."""

    name: str
    step: int  # 1-based
    steps: int
    done: int
    total: int
    phase: str
    started_at: float  # device seconds when this step's bytes began
    updated_at: float

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)

    @property
    def seconds_left(self) -> float | None:
        """Device seconds left at the rate seen so far; None until there is a rate."""
        spent = self.updated_at - self.started_at
        if self.done <= 0 or spent <= 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) * spent / self.done)


@dataclass(frozen=True)
class SlotState:
    """Everything one slot's card shows."""

    index: int
    name: str
    platform_hint: str | None = None  # the slot's label (a simulated device's platform)
    led_sensor: bool = True
    device_id: str | None = None
    platform: str | None = None
    usb_mode: str | None = None
    present: bool | None = None  # None: not looked yet
    led_lit: str | None = None  # the colour lit right now ("off" when dark), None: not sampled
    led: dict[str, Any] | None = None  # the latest LedReading.to_json()
    sos: dict[str, Any] | None = None  # the last whole SOS reading this run (code, name, meaning)
    activity: str = "idle"  # idle, starting, running, stopping, flashing
    busy_with: str | None = None  # "recovery", "manual flash", "restore over SWD" or "mode change" (the last one)
    rungs: dict[str, str] = field(default_factory=lambda: dict.fromkeys(RUNGS, "waiting"))
    rung_detail: str = ""
    progress: FlashProgress | None = None
    plan_steps: int = 0
    retries: int = 0
    verdict: str | None = None
    verdict_detail: str = ""
    verdict_rung: str | None = None
    verdict_action: str = ""  # what to do (kiosk.advice.instruction words it)
    verdict_again: bool = False  # ... then recover it again
    usb_errors: int = 0  # USB transfers of the run that failed on the wire and were retried
    elapsed_s: float | None = None
    run_id: int | None = None
    last_run_id: int | None = None

    @property
    def running(self) -> bool:
        return self.activity != "idle"

    @property
    def short_id(self) -> str | None:
        """The device id a technician compares with the label: first 6 and last 4 digits."""
        if not self.device_id:
            return None
        return self.device_id if len(self.device_id) <= 12 else f"{self.device_id[:6]}…{self.device_id[-4:]}"

    @property
    def shown_platform(self) -> str | None:
        return self.platform or self.platform_hint

    @property
    def good(self) -> bool:
        """The last verdict says the device works."""
        return self.verdict in GOOD_VERDICTS

    @property
    def current_rung(self) -> str | None:
        return next((r for r, s in self.rungs.items() if s == "running"), None)


def fresh_run(state: SlotState, busy_with: str = "recovery") -> SlotState:
    """The card as a new run starts: rungs waiting, no verdict, the device as last seen."""
    return replace(state, activity="starting", busy_with=busy_with, rungs=dict.fromkeys(RUNGS, "waiting"),
                   rung_detail="", progress=None, plan_steps=0, retries=0, verdict=None, verdict_detail="",
                   verdict_rung=None, verdict_action="", verdict_again=False, usb_errors=0, elapsed_s=None,
                   run_id=None, sos=None)  # fmt: skip


def _led_update(state: SlotState, reading: dict[str, Any]) -> SlotState:
    sos = state.sos
    if reading.get("pattern") == "sos" and reading.get("sos_code") is not None:
        sos = {k: reading.get(k) for k in ("sos_code", "sos_name", "sos_meaning")}
    return replace(state, led=reading, sos=sos)


def apply_led(state: SlotState, lit: str | None, reading: dict[str, Any] | None) -> SlotState:
    """The live LED: the colour lit now and (when a new classification came) what it reads as."""
    state = replace(state, led_lit=lit)
    return _led_update(state, reading) if reading is not None else state


def apply_device(state: SlotState, device_id: str | None, platform: str | None, mode: str | None) -> SlotState:
    """What the USB poller saw on the slot's port (nothing: device_id and mode None)."""
    present = mode is not None
    if not present:
        return replace(state, present=False, usb_mode=None)
    changed = device_id is not None and state.device_id is not None and device_id != state.device_id
    state = replace(state, present=True, device_id=device_id or state.device_id, platform=platform or state.platform,
                    usb_mode=mode)  # fmt: skip
    if changed and not state.running:  # another device in the slot: the last verdict was about the old one
        state = replace(state, verdict=None, verdict_detail="", verdict_rung=None, verdict_action="",
                        verdict_again=False, usb_errors=0, sos=None,
                        rungs=dict.fromkeys(RUNGS, "waiting"), last_run_id=None)  # fmt: skip
    return state


def apply(state: SlotState, event: Event, at: float) -> SlotState:
    """``state`` after ``event`` (published at device time ``at``)."""
    handler = (_HANDLERS or _handlers()).get(type(event))
    return handler(state, event, at) if handler is not None else state


def _run_started(state: SlotState, e: RunStarted, at: float) -> SlotState:
    if state.activity == "idle":  # the run's first event came before the engine said the slot is busy
        state = fresh_run(state)
    return replace(state, activity="running", device_id=e.device_id or state.device_id,
                   platform=e.platform or state.platform)  # fmt: skip


def _rung_started(state: SlotState, e: RungStarted, at: float) -> SlotState:
    rungs = dict(state.rungs)
    for name, s in rungs.items():  # a rung left running without a finish (the ladder moved on) is done with
        if s == "running":
            rungs[name] = "done"
    if e.rung in rungs:
        rungs[e.rung] = "running"
    activity = state.activity if state.activity == "stopping" else "running"
    return replace(state, rungs=rungs, rung_detail="", progress=None, activity=activity)


def _rung_finished(state: SlotState, e: RungFinished, at: float) -> SlotState:
    rungs = dict(state.rungs)
    if e.rung in rungs:
        rungs[e.rung] = OUTCOME_STATE.get(e.outcome, "done")
    return replace(state, rungs=rungs, rung_detail=e.detail or state.rung_detail, progress=None)


def _observation(state: SlotState, e: Observation, at: float) -> SlotState:
    if e.what == "led" and isinstance(e.data, dict):
        return _led_update(state, e.data)
    if e.what == "usb" and isinstance(e.data, dict):
        mode = e.data.get("usb_mode")
        state = replace(state, usb_mode=mode, present=mode is not None)
        led = e.data.get("led")
        return _led_update(state, led) if isinstance(led, dict) else state
    if e.what == "library" and isinstance(e.data, dict):
        return replace(state, rung_detail=str(e.data.get("problem", "")))
    return state


def _verdict(state: SlotState, e: Verdict, at: float) -> SlotState:
    # e.rung is the rung that fixed it (None when none did): only that one is done by the verdict itself
    rungs = dict(state.rungs)
    for name, s in rungs.items():
        if s == "running":
            rungs[name] = "stopped" if e.verdict == "stopped" else ("done" if name == e.rung else "failed")
        elif s == "waiting":
            rungs[name] = "skipped"
    if e.rung in rungs:
        rungs[e.rung] = "done"
    return replace(state, rungs=rungs, verdict=e.verdict, verdict_detail=e.detail, verdict_rung=e.rung,
                   verdict_action=e.action, verdict_again=e.again, usb_errors=e.usb_errors, elapsed_s=e.elapsed_s,
                   progress=None)  # fmt: skip


def _plan_started(state: SlotState, e: PlanStarted, at: float) -> SlotState:
    return replace(state, plan_steps=e.steps, progress=None)


def _step_started(state: SlotState, e: StepStarted, at: float) -> SlotState:
    progress = FlashProgress(PurePath(e.name).name, e.index + 1, e.total, 0, e.size, "write", at, at)
    return replace(state, progress=progress)


def _progress(state: SlotState, e: Progress, at: float) -> SlotState:
    p = state.progress
    if p is None or p.step != e.index + 1:
        p = FlashProgress(f"step {e.index + 1}", e.index + 1, max(state.plan_steps, e.index + 1), 0, e.total, e.phase,
                          at, at)  # fmt: skip
    if e.phase != p.phase:  # a new phase (erase -> write) starts its own clock
        p = replace(p, phase=e.phase, started_at=at)
    return replace(state, progress=replace(p, done=e.done, total=e.total, updated_at=at))


def _step_finished(state: SlotState, e: StepFinished, at: float) -> SlotState:
    detail = f"{PurePath(e.name).name}: {e.outcome}" + (f" ({e.detail})" if e.detail else "")
    return replace(state, progress=None, rung_detail=detail)


def _retry(state: SlotState, e: Retry, at: float) -> SlotState:
    return replace(state, retries=state.retries + 1, rung_detail=f"retry {e.attempt}: {e.reason}")


def _plan_finished(state: SlotState, e: PlanFinished, at: float) -> SlotState:
    return replace(state, progress=None, rung_detail=e.detail or state.rung_detail)


_HANDLERS: dict[type, Any] = {}


def _handlers() -> dict[type, Any]:
    """Each event type -> how it changes a card (filled on the first event: events come once the bench is open,
    and importing the ladder for its event types before the first frame would slow the kiosk's start)."""
    from kiosk.events import PlanFinished, PlanStarted, Progress, Retry, StepFinished, StepStarted
    from kiosk.ladder import Observation, RungFinished, RungStarted, RunStarted, Verdict

    _HANDLERS.update({
        RunStarted: _run_started,
        RungStarted: _rung_started,
        RungFinished: _rung_finished,
        Observation: _observation,
        Verdict: _verdict,
        PlanStarted: _plan_started,
        StepStarted: _step_started,
        Progress: _progress,
        StepFinished: _step_finished,
        Retry: _retry,
        PlanFinished: _plan_finished,
    })  # fmt: skip
    return _HANDLERS


def finish(state: SlotState, verdict: str | None, detail: str | None, run_id: int | None) -> SlotState:
    """The card once the worker has ended: idle, with the verdict (an error if the ladder gave none); with no
    verdict (a mode change gives none) ``detail`` says what came of it."""
    if state.verdict is None and verdict is not None:
        state = replace(state, verdict=verdict, verdict_detail=detail or "")
    elif verdict is None and detail:
        state = replace(state, rung_detail=detail)
    return replace(state, activity="idle", progress=None, run_id=None, last_run_id=run_id or state.last_run_id)


def started(state: SlotState, busy_with: str, run_id: int | None, detail: str | None = None) -> SlotState:
    """A recovery, a manual flash, a restore over SWD or a mode change has begun (the card is fresh unless the
    run's first events came first); ``detail``: what it does, in words, until its events say more."""
    if state.activity == "idle":
        state = fresh_run(state, busy_with)
    if detail:
        state = replace(state, rung_detail=detail)
    activity = state.activity if state.activity == "stopping" else "running"
    return replace(state, activity=activity, busy_with=busy_with, run_id=run_id if run_id is not None else state.run_id)


def to_json(state: SlotState) -> dict[str, Any]:
    """The state as plain JSON values (what the bench service sends)."""
    return asdict(state)


_FIELDS = frozenset(f.name for f in fields(SlotState))
_PROGRESS_FIELDS = frozenset(f.name for f in fields(FlashProgress))


def from_json(data: dict[str, Any]) -> SlotState:
    """The state a service sent; keys this version does not know are left out (a newer service may add some)."""
    values = {k: v for k, v in data.items() if k in _FIELDS}
    progress = values.get("progress")
    if isinstance(progress, dict):
        values["progress"] = FlashProgress(**{k: v for k, v in progress.items() if k in _PROGRESS_FIELDS})
    return SlotState(**values)
