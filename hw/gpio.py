"""Real drivers on gpiozero: the device's RESET and MODE lines, its power, and the LED sensor.

The device's RESET and MODE inputs are active-low with pull-ups: the kiosk only ever pulls them low or
lets go, never drives them high. Two wirings (bench config ``wiring``):

- ``transistor``: the GPIO drives a transistor or optocoupler that pulls the line low; the GPIO's
  active level is configurable (``active_high``);
- ``direct``: the GPIO is wired to the line itself and emulates open drain: output low to press, input
  with no pull (high impedance) to release.

Every choreography passes the :class:`~hw.hazard.HazardGuard` first, waits on the slot's clock, and
releases the buttons whatever happens (cancel, error).
"""

from __future__ import annotations

import bisect
import math
import threading
from array import array
from dataclasses import dataclass

from gpiozero import DigitalInputDevice, DigitalOutputDevice
from gpiozero.pins import Factory

from hw.clock import Cancelled, Clock, ClockEvent
from hw.hazard import BOOTLOADER_DFU_S, BOOTLOADER_SAFE_MODE_S, HazardGuard, HazardRefused
from hw.led_classifier import LedReading, LedSample, classify
from hw.led_signals import COLOURS

TAP_S = 0.15  # a clean RESET press: the device ignores presses under 30 ms
LISTEN_HOLD_S = 3.0  # runtime MODE hold that starts listening mode
#: Margins past the bootloader's thresholds when no LED sensor confirms the stage (clock only).
CLOCK_MARGIN_S = 0.3
#: How long the LED must show the stage's colour before the kiosk trusts it (two 5 Hz blinks).
STAGE_CONFIRM_S = 0.3
STAGE_COLOURS = {"safe-mode": "magenta", "dfu": "yellow"}
#: When each stage is latched if MODE is let go: [start, end) seconds after RESET is released.
STAGE_WINDOWS = {"safe-mode": (BOOTLOADER_SAFE_MODE_S, BOOTLOADER_DFU_S), "dfu": (BOOTLOADER_DFU_S, 6.5)}


class ButtonLine:
    """One active-low device input (RESET, MODE or EN) pulled low by a GPIO.

    ``pin`` is a gpiozero pin name or BCM number; ``wiring`` is ``transistor`` (the GPIO drives a
    transistor that pulls the line low; ``active_high`` says which GPIO level does that) or
    ``direct`` (open drain: output low to press, high impedance to release).

        >>> line = ButtonLine("GPIO17", pin_factory=MockFactory())  # doctest: +SKIP
        >>> line.press(); line.pressed                               # doctest: +SKIP
        True
    """

    def __init__(self, pin: int | str, *, wiring: str = "transistor", active_high: bool = True,
                 pin_factory: Factory | None = None, name: str = ""):  # fmt: skip
        self.name = name or str(pin)
        self.wiring = wiring
        self._pressed = False
        if wiring == "transistor":
            self._out = DigitalOutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
            self._pin = self._out.pin
        elif wiring == "direct":
            self._out = None
            factory = pin_factory or DigitalOutputDevice.pin_factory
            self._pin = factory.pin(pin)
            self._let_go()
        else:
            raise ValueError(f"wiring must be 'transistor' or 'direct', not {wiring!r}")

    def _let_go(self) -> None:
        self._pin.function = "input"
        fixed = self._pin.info.pull  # GPIO2/3 on a Pi have fixed pull-ups (I2C)
        if fixed == "down":
            raise ValueError(f"{self.name}: {self._pin.info.name} has a fixed pull-down; a direct-wired button "
                             "line needs a pin that can float (or transistor wiring)")  # fmt: skip
        if not fixed:
            self._pin.pull = "floating"  # the device's own pull-up holds the line high

    def press(self) -> None:
        if self._out is not None:
            self._out.on()
        else:
            self._pin.function = "output"
            self._pin.state = 0
        self._pressed = True

    def release(self) -> None:
        if self._out is not None:
            self._out.off()
        else:
            self._let_go()
        self._pressed = False

    @property
    def pressed(self) -> bool:
        return self._pressed

    @property
    def pin(self):  # the gpiozero pin, for the simulator and for tests
        return self._pin

    def close(self) -> None:
        self.release()
        if self._out is not None:
            self._out.close()
        else:
            self._pin.close()


@dataclass(frozen=True)
class StageResult:
    """How a bootloader hold ended: ``by`` is "led" (the stage's colour was seen), "clock" (no sensor:
    timed past the stage's threshold) or "led-not-seen" (a sensor that never showed the colour: released
    at the last safe moment of the stage's window; the caller must check the mode reached)."""

    stage: str
    held_s: float
    by: str


class Buttons:
    """RESET and MODE of one slot, with the hazard guard and the choreographies the kiosk uses.

    All durations are in seconds of the slot's clock. ``led`` (optional) lets bootloader holds
    release as soon as the wanted stage shows, instead of on the clock alone.
    """

    def __init__(self, reset: ButtonLine, mode: ButtonLine, clock: Clock, guard: HazardGuard,
                 led: LedSensor | None = None):  # fmt: skip
        self.reset = reset
        self.mode = mode
        self.clock = clock
        self.guard = guard
        self.led = led

    def release_all(self) -> None:
        """Let go of both lines (teardown: always safe)."""
        was_mode = self.mode.pressed
        self.reset.release()
        self.mode.release()
        if was_mode:
            self.guard.mode_released()

    def tap_reset(self, cancel: ClockEvent | None = None) -> None:
        """Press RESET for a clean 150 ms and let go: the device restarts."""
        self.guard.check_not_applying("RESET")
        try:
            self.reset.press()
            self.clock.sleep(TAP_S, cancel)
        finally:
            self.reset.release()

    def hold_mode(self, seconds: float, cancel: ClockEvent | None = None) -> None:
        """Hold MODE for ``seconds`` while the device runs (at most 5 s), then release."""
        self.guard.check_mode_hold(seconds, in_bootloader=False)
        self.guard.check_mode_press()
        try:
            self.mode.press()
            self.clock.sleep(seconds, cancel)
        finally:
            self.mode.release()
            self.guard.mode_released()

    def enter_listening(self, cancel: ClockEvent | None = None) -> None:
        """Listening mode: MODE held 3 s while Device OS runs (released well before 5 s)."""
        self.hold_mode(LISTEN_HOLD_S + CLOCK_MARGIN_S, cancel)

    def enter_bootloader_stage(self, stage: str, cancel: ClockEvent | None = None) -> StageResult:
        """Safe mode (``safe-mode``) or DFU (``dfu``): hold MODE through a RESET tap, let go at the stage.

        With an LED sensor MODE is released once the stage's colour has shown for a moment past its
        threshold; without one, a fixed margin past the threshold. Never later than the guard allows.
        """
        if stage not in STAGE_WINDOWS:
            raise ValueError(f"unknown bootloader stage {stage!r}: safe-mode or dfu")
        opens, closes = STAGE_WINDOWS[stage]
        # The latest moment to let go: inside the stage's window and inside the guard's limit.
        latest = min(closes - CLOCK_MARGIN_S, self.guard.limits.bootloader_hold_s - 0.1)
        timed = opens + CLOCK_MARGIN_S
        self.guard.check_mode_hold(latest, in_bootloader=True)
        self.guard.check_mode_press()
        self.guard.check_not_applying("RESET")  # refused before MODE moves
        self.mode.press()
        try:
            self.tap_reset(cancel)
            started = self.clock.now()  # the bootloader measures MODE from RESET release
            by = "clock"
            if self.led is not None and self.led.available:
                seen = self.led.wait_for_colour(
                    STAGE_COLOURS[stage], not_before=started + opens, confirm_s=STAGE_CONFIRM_S,
                    deadline=started + latest, cancel=cancel,
                )  # fmt: skip
                by = "led" if seen else "led-not-seen"
            else:
                self.clock.sleep(timed, cancel)
            held = self.clock.now() - started
        finally:
            self.mode.release()
            self.guard.mode_released()
        return StageResult(stage, held, by)


class PowerSwitch:
    """The slot's power: VBUS through a relay or load switch, and optionally the device's EN line.

    ``vbus`` is an output that turns VBUS on when active; ``en`` (optional) is a :class:`ButtonLine`
    that pulls EN low (Boron-style boards: powers the board down even with a LiPo fitted).
    """

    def __init__(self, vbus: DigitalOutputDevice, clock: Clock, guard: HazardGuard, en: ButtonLine | None = None):
        self.vbus = vbus
        self.en = en
        self.clock = clock
        self.guard = guard

    @property
    def is_on(self) -> bool:
        return bool(self.vbus.value) and not (self.en is not None and self.en.pressed)

    def off(self) -> None:
        self.guard.check_power_off()
        if self.en is not None:
            self.en.press()
        self.vbus.off()
        self.guard.powered_off()

    def on(self) -> None:
        self.guard.check_power_on()
        if self.en is not None:
            self.en.release()
        self.vbus.on()
        self.guard.powered_on()

    def cold_boot(self, cancel: ClockEvent | None = None) -> float:
        """Power off, wait the drain time, power on. Returns the seconds power was off.

        If cancelled during the drain, power stays off until the drain time has passed, then comes
        back: a slot is never left unpowered, and never repowered early.
        """
        self.off()
        started = self.clock.now()
        try:
            self.clock.sleep(self.guard.limits.drain_s, cancel)
        except Cancelled:
            self.clock.sleep(self.guard.power_off_wait_needed())
            self.on()
            raise
        self.on()
        return self.clock.now() - started


class SampleRing:
    """The last ``capacity`` LED samples, 9 bytes each: a time (clock seconds) and the lit channels as bits.

    A minute of samples at 50 Hz for four slots is 12,000 readings; kept as tuples they took over a MiB
    of a kiosk that runs for weeks. Times must not go backwards (they come from one clock).

        >>> ring = SampleRing(2); ring.append(0.0, True, False, False); ring.append(0.02, False, True, False)
        >>> ring.append(0.04, False, False, True); ring.since(0.0)[0]
        LedSample(t=0.02, r=False, g=True, b=False)
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("a sample ring holds at least one sample")
        self._t = array("d", bytes(8 * capacity))
        self._bits = bytearray(capacity)
        self._next = 0  # where the next sample goes
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, t: float, r: bool, g: bool, b: bool) -> None:
        self._t[self._next] = t
        self._bits[self._next] = (r << 2) | (g << 1) | b
        self._next = (self._next + 1) % len(self._bits)
        self._count = min(self._count + 1, len(self._bits))

    def since(self, t: float) -> list[LedSample]:
        """The samples taken at ``t`` or later, oldest first."""
        size = len(self._bits)
        newest_first = []
        for back in range(1, self._count + 1):
            i = (self._next - back) % size
            if self._t[i] < t:
                break
            newest_first.append(i)
        times, bits = self._t, self._bits
        return [LedSample(times[i], bool(bits[i] & 4), bool(bits[i] & 2), bool(bits[i] & 1))
                for i in reversed(newest_first)]  # fmt: skip


class LedSensor:
    """The LED sensor: three digital inputs (red, green, blue) sampled at ``rate_hz`` in a thread.

    Samples carry the clock's time in seconds. ``watch(seconds)`` collects that long and classifies.

        >>> led = LedSensor(("GPIO5", "GPIO6", "GPIO13"), clock)    # doctest: +SKIP
        >>> led.start(); led.watch(11.0).describe()                   # doctest: +SKIP
        'blinking red: SOS 1 (hard fault) ...'
    """

    available = True

    def __init__(self, pins: tuple[int | str, int | str, int | str], clock: Clock, *, active_high: bool = True,
                 rate_hz: float = 50.0, pin_factory: Factory | None = None, history_s: float = 60.0):  # fmt: skip
        if rate_hz < 40:
            raise ValueError("the LED must be sampled at 40 Hz or more (the LED changes every 25 ms)")
        self.clock = clock
        self.period = 1.0 / rate_hz
        self._inputs = [
            DigitalInputDevice(p, pull_up=None, active_state=active_high, pin_factory=pin_factory) for p in pins
        ]
        self._samples = SampleRing(int(history_s * rate_hz))
        self._lock = threading.Lock()
        self._stop = clock.event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="led-sampler", daemon=True)
        self._thread.start()
        started.wait(5.0)  # the sampler registers with the clock before anyone relies on its samples

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        thread, self._thread = self._thread, None
        self.clock.wait_for(lambda: not thread.is_alive(), timeout=5.0)

    def close(self) -> None:
        self.stop()
        for device in self._inputs:
            device.close()

    def _run(self, started: threading.Event) -> None:
        with self.clock.actor():
            started.set()
            while not self._stop.is_set():
                r, g, b = (bool(d.value) for d in self._inputs)
                with self._lock:
                    self._samples.append(self.clock.now(), r, g, b)
                try:
                    self.clock.sleep(self.period, self._stop)
                except Cancelled:
                    break

    def samples_since(self, t: float) -> list[LedSample]:
        with self._lock:
            return self._samples.since(t)

    def watch(self, seconds: float, cancel: ClockEvent | None = None) -> LedReading:
        """Classify what the LED shows over the next ``seconds``."""
        self.start()
        since = self.clock.now()
        self.clock.sleep(seconds, cancel)
        return classify(self.samples_since(since))

    def wait_for_colour(self, colour: str, *, not_before: float, confirm_s: float, deadline: float,
                        cancel: ClockEvent | None = None) -> bool:  # fmt: skip
        """Wait until ``colour`` has been lit (on at least twice) within the last ``confirm_s``, no earlier
        than ``not_before``; give up at ``deadline``. True when seen."""
        self.start()
        want = tuple(COLOURS[colour])

        def seen() -> bool:
            now = self.clock.now()
            if now < not_before:
                return False
            lit = [(s.r, s.g, s.b) == want for s in self.samples_since(now - confirm_s)]
            return sum(lit) >= 3  # lit in at least three samples: not a glitch

        return self.clock.wait_for(seen, max(0.0, deadline - self.clock.now()), cancel, poll=self.period)


class EdgeLedSensor(LedSensor):
    """The LED sensor of a pin factory that reports each pin's changes with the clock's time (the simulated
    bench's ``SimPinFactory.listen``): the very samples the sampler thread would take, every ``period`` s from
    ``start()``, computed from the edges when someone reads them. No thread, no clock event per sample: a
    steady LED costs nothing, and a blinking one only its edges.

        >>> led = EdgeLedSensor(("GPIO5", "GPIO6", "GPIO13"), clock, pin_factory=sim_factory)  # doctest: +SKIP
    """

    def __init__(self, pins: tuple[int | str, int | str, int | str], clock: Clock, *, active_high: bool = True,
                 rate_hz: float = 50.0, pin_factory: Factory | None = None, history_s: float = 60.0):  # fmt: skip
        super().__init__(pins, clock, active_high=active_high, rate_hz=rate_hz, pin_factory=pin_factory,
                         history_s=history_s)  # fmt: skip
        self._history_s = history_s
        self._origin: float | None = None  # the time of the first sample; None until started
        self._edges: list[tuple[float, bool, bool, bool]] = []  # (time, r, g, b) at each change, oldest first
        self._closed = False  # closing the inputs changes the pins' functions: those are no LED edges
        for device in self._inputs:
            pin_factory.listen(device.pin.info.name, self._changed)

    def _lit(self) -> tuple[bool, bool, bool]:
        r, g, b = (bool(d.value) for d in self._inputs)
        return r, g, b

    def _changed(self, _pin, t: float, _state: bool) -> None:
        # An input closing (close(), or gpiozero's __del__ of a sensor nobody closed) resets its pin's function:
        # that is no LED edge, and the closed input can no longer be read.
        if self._origin is None or self._closed or any(d.closed for d in self._inputs):
            return
        lit = self._lit()
        with self._lock:
            if self._edges and self._edges[-1][1:] == lit:
                return
            self._edges.append((t, *lit))
            cut = t - self._history_s
            if len(self._edges) > 2 and self._edges[1][0] < cut:
                keep = bisect.bisect_left(self._edges, (cut,)) - 1  # the edge in force at the cut stays
                del self._edges[:max(0, keep)]

    def start(self) -> None:
        with self._lock:
            if self._origin is not None:
                return
            self._origin = self.clock.now()
            self._edges = [(self._origin, *self._lit())]

    def stop(self) -> None:
        with self._lock:
            self._origin = None
            self._edges = []

    def close(self) -> None:
        self._closed = True
        super().close()

    def samples_since(self, t: float) -> list[LedSample]:
        with self._lock:
            if self._origin is None:
                return []
            origin, edges, period = self._origin, self._edges, self.period
            now = self.clock.now()
            first = max(t, origin, now - self._history_s)
            k = max(0, math.ceil((first - origin) / period - 1e-9))
            last = math.floor((now - origin) / period + 1e-9)
            out = []
            at = bisect.bisect_right(edges, (origin + k * period, True, True, True)) - 1
            for n in range(k, last + 1):
                when = origin + n * period
                while at + 1 < len(edges) and edges[at + 1][0] <= when:
                    at += 1
                _, r, g, b = edges[max(at, 0)]
                out.append(LedSample(when, r, g, b))
            return out


class NoLedSensor:
    """A slot without an LED sensor: every reading says so."""

    available = False

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...

    def watch(self, seconds: float, cancel: ClockEvent | None = None) -> LedReading:
        raise LedUnavailable("no LED sensor on this slot: the kiosk judges by USB and control requests")


class LedUnavailable(Exception):
    """The slot has no LED sensor."""


__all__ = [
    "ButtonLine",
    "Buttons",
    "EdgeLedSensor",
    "HazardRefused",
    "LedSensor",
    "LedUnavailable",
    "NoLedSensor",
    "PowerSwitch",
    "StageResult",
]
