"""gpiozero mock pins on the simulator's clock: the seam between the real GPIO drivers and the sim.

``SimPinFactory`` is a gpiozero ``MockFactory`` whose pins timestamp their recorded states with the
injected clock (device seconds, not host time), so tests can check button timings with gpiozero's own
``pin.states``, and which tells listeners (the simulated device) about every change of an output.

    >>> from hw.clock import VirtualClock
    >>> factory = SimPinFactory(VirtualClock())
    >>> pin = factory.pin(17)
    >>> pin.function = "output"; pin.state = 1
    >>> pin.history[-1]
    (0.0, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from gpiozero.pins.mock import MockFactory, MockPin, PinState

from hw.clock import Clock

Listener = Callable[["SimPin", float, bool], None]
#: Changes a pin remembers (in ``states`` and ``history``). A demo kiosk's LED pins change several times a
#: second for days; unbounded lists grew by megabytes an hour. Tests read only the last few hundred.
PIN_HISTORY = 512


class SimPin(MockPin):
    """A MockPin whose state history is in clock seconds; ``history`` holds (time, state) pairs."""

    def _now(self) -> float:
        return self.factory.clock.now()

    def clear_states(self) -> None:
        self._last_change = self._now()
        self.states = deque([PinState(0.0, self._state)], maxlen=PIN_HISTORY)
        self.history = deque([(self._last_change, self._state)], maxlen=PIN_HISTORY)

    def _change_state(self, value: bool) -> bool:
        if self._state == value:
            return False
        t = self._now()
        self._state = value
        self.states.append(PinState(t - self._last_change, value))
        self.history.append((t, value))
        self._last_change = t
        for listener in list(self.factory.listeners.get(self.info.name, ())):
            listener(self, t, value)
        return True

    def _set_function(self, value: str) -> None:
        super()._set_function(value)
        # A pin switched to input with no pull floats: the device's pull-up decides the line.
        for listener in list(self.factory.listeners.get(self.info.name, ())):
            listener(self, self._now(), self._state)


class SimPinFactory(MockFactory):
    """MockFactory for the simulated bench: clocked pins, and listeners per pin name (e.g. ``GPIO17``)."""

    def __init__(self, clock: Clock):
        super().__init__(pin_class=SimPin)
        self.clock = clock
        self.listeners: dict[str, list[Listener]] = {}

    def listen(self, pin: int | str, listener: Listener) -> None:
        """Call ``listener(pin, time, state)`` on every change of ``pin``."""
        name = self.pin(pin).info.name
        self.listeners.setdefault(name, []).append(listener)
