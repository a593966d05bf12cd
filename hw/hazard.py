"""The hazard guard: button and power requests that could harm a device are refused before any pin moves.

Facts (../shared/reference/led-buttons-restore.md 3.1, 3.2, 4 and its "Kiosk-relevant hazards"):

- in the bootloader, MODE held past 6.5 s restores the factory image and past 10 s wipes settings and
  credentials: the kiosk releases MODE before 6.0 s after RESET is released;
- at runtime, MODE held 10 s in listening mode clears credentials (and 3-8 s releases are racy): the kiosk
  never holds MODE past 5 s;
- two MODE clicks within about 1 s power cellular and Gen4 devices off: the kiosk leaves at least 1.2 s
  between releasing MODE and pressing it again;
- a power cycle needs the capacitors drained: power stays off at least the drain time (5 s by default);
- while the device applies an update (a bootloader, prebootloader or NCP it copies into place itself, from the
  OTA region at boot or after a control-request update), a power cut or RESET can leave it with half a
  bootloader: a brick (device-os PR #2151). The kiosk refuses both, and leaving DFU, until the update is seen
  applied or the time it may take has passed (the caller's estimate: the flash time of the module by
  hw.flash_timing plus boots, with margin, since the reference has no measured apply time: UNVERIFIED).

All times are in seconds, on the slot's clock. The guard keeps the history it needs per slot; it lives
in ``hw`` so no caller can get around it.

    >>> from hw.clock import VirtualClock
    >>> guard = HazardGuard(VirtualClock())
    >>> guard.check_mode_hold(6.0, in_bootloader=True)
    Traceback (most recent call last):
    ...
    hw.hazard.HazardRefused: refused: MODE held 6.0 s after RESET would reach the bootloader's factory-restore ...
"""

from __future__ import annotations

from dataclasses import dataclass

from hw.clock import Clock

#: The bootloader restores the factory image past 6.5 s and wipes settings past 10 s (bootloader main.c).
BOOTLOADER_RESTORE_S = 6.5
BOOTLOADER_WIPE_S = 10.0
#: The kiosk's own limits, with margin.
BOOTLOADER_HOLD_LIMIT_S = 6.0
RUNTIME_HOLD_LIMIT_S = 5.0
RUNTIME_WIPE_S = 10.0
MODE_CLICK_GAP_S = 1.2  # the device counts clicks within 1 s; 0.2 s of margin
DEFAULT_DRAIN_S = 5.0  # "let all of its capacitors drain (5 seconds)" (Particle's guide)
#: Stages the bootloader reaches while MODE is held (seconds after RESET is released).
BOOTLOADER_SAFE_MODE_S = 1.0
BOOTLOADER_DFU_S = 3.0


class HazardRefused(Exception):
    """A button or power request that would put the device at risk; nothing was done."""

    def __init__(self, message: str):
        super().__init__(f"refused: {message}")


@dataclass(frozen=True)
class GuardLimits:
    """The guard's numbers, in seconds. ``drain_s`` comes from the bench config (never below 5 s)."""

    drain_s: float = DEFAULT_DRAIN_S
    bootloader_hold_s: float = BOOTLOADER_HOLD_LIMIT_S
    runtime_hold_s: float = RUNTIME_HOLD_LIMIT_S
    mode_gap_s: float = MODE_CLICK_GAP_S

    def __post_init__(self) -> None:
        # The config may make the kiosk more careful, never less.
        if self.drain_s < DEFAULT_DRAIN_S:
            raise ValueError(f"drain time {self.drain_s} s is below the {DEFAULT_DRAIN_S} s Particle asks for")
        if not 0 < self.bootloader_hold_s <= BOOTLOADER_HOLD_LIMIT_S:
            raise ValueError(f"bootloader MODE hold limit must be in (0, {BOOTLOADER_HOLD_LIMIT_S}] s")
        if not 0 < self.runtime_hold_s <= RUNTIME_HOLD_LIMIT_S:
            raise ValueError(f"runtime MODE hold limit must be in (0, {RUNTIME_HOLD_LIMIT_S}] s")
        if self.mode_gap_s < MODE_CLICK_GAP_S:
            raise ValueError(f"MODE click gap must be at least {MODE_CLICK_GAP_S} s")


class HazardGuard:
    """Per-slot memory of MODE releases and power cuts, and the checks every choreography passes."""

    def __init__(self, clock: Clock, limits: GuardLimits | None = None):
        self.clock = clock
        self.limits = limits or GuardLimits()
        self._mode_released_at: float | None = None
        self._power_off_at: float | None = None
        self._applying: tuple[str, float] | None = None  # (what, until when) while the device applies an update

    # -- MODE --
    def check_mode_hold(self, seconds: float, *, in_bootloader: bool) -> None:
        """Refuse a MODE hold longer than the limit for where the device is."""
        if in_bootloader:
            limit = self.limits.bootloader_hold_s
            if seconds >= limit:  # "stop before 6.0 s"
                raise HazardRefused(
                    f"MODE held {seconds:.1f} s after RESET would reach the bootloader's factory-restore "
                    f"({BOOTLOADER_RESTORE_S} s) or settings-wipe ({BOOTLOADER_WIPE_S} s) stage; "
                    f"the kiosk releases before {limit} s"
                )
            return
        limit = self.limits.runtime_hold_s
        if seconds > limit:
            raise HazardRefused(
                f"MODE held {seconds:.1f} s at runtime risks clearing credentials ({RUNTIME_WIPE_S} s); "
                f"the kiosk never holds past {limit} s"
            )

    def mode_wait_needed(self) -> float:
        """Seconds until MODE may be pressed again (0 when it may be now)."""
        if self._mode_released_at is None:
            return 0.0
        return max(0.0, self._mode_released_at + self.limits.mode_gap_s - self.clock.now())

    def check_mode_press(self) -> None:
        """Refuse a MODE press that a device could count as the second click of a double click."""
        wait = self.mode_wait_needed()
        if wait > 0:
            raise HazardRefused(
                f"MODE was released {self.limits.mode_gap_s - wait:.2f} s ago; a second press within "
                f"{self.limits.mode_gap_s} s could be taken as a double click, which powers cellular and "
                f"Gen4 devices off. Wait {wait:.2f} s"
            )

    def mode_released(self) -> None:
        self._mode_released_at = self.clock.now()

    # -- power --
    def power_off_wait_needed(self) -> float:
        """Seconds power must still stay off before it may come back (0 when it may now)."""
        if self._power_off_at is None:
            return 0.0
        return max(0.0, self._power_off_at + self.limits.drain_s - self.clock.now())

    def check_power_off(self) -> None:
        self.check_not_applying("power cut")

    def check_power_on(self) -> None:
        wait = self.power_off_wait_needed()
        if wait > 0:
            raise HazardRefused(
                f"power has been off {self.limits.drain_s - wait:.2f} s; it stays off {self.limits.drain_s} s so the "
                f"capacitors drain. Wait {wait:.2f} s"
            )

    def powered_off(self) -> None:
        self._power_off_at = self.clock.now()

    def powered_on(self) -> None:
        self._power_off_at = None

    # -- an update being applied --
    def device_applying(self, what: str, seconds: float) -> None:
        """The device applies ``what`` now and may take up to ``seconds``: no power cut, RESET or DFU leave."""
        until = self.clock.now() + max(0.0, seconds)
        if self._applying is not None:
            until = max(until, self._applying[1])
        self._applying = (what, until)

    def device_applied(self) -> None:
        """The update was seen applied (the device reports it): the window closes early."""
        self._applying = None

    def applying_wait_needed(self) -> float:
        """Seconds until the device may be reset or unpowered again (0 when it may now)."""
        if self._applying is None:
            return 0.0
        left = self._applying[1] - self.clock.now()
        if left <= 0:
            self._applying = None
            return 0.0
        return left

    def check_not_applying(self, action: str) -> None:
        """Refuse ``action`` (a power cut, a RESET, a DFU leave) while the device applies an update."""
        wait = self.applying_wait_needed()
        if wait > 0 and self._applying is not None:
            raise HazardRefused(
                f"{action} now: the device is applying {self._applying[0]}, and cut off mid-way it can be left "
                f"without a working bootloader. Wait {wait:.1f} s, until it has applied it"
            )
