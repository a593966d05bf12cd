"""The recovery ladder: Particle's procedure for a device blinking red, yellow, frozen or dark, run alone.

Rungs, in Particle's order: identify -> cold boot -> safe mode (then Tinker: the app was at fault) ->
DFU + Device OS update + Tinker -> one more try in the other order (Tinker, then the update) -> SWD
restore -> verdict. What the kiosk observes steers it (an SOS code, module validity, the USB mode): a
device in DFU goes straight to the update, a dependency failure in the module table goes straight to the
update, a healthy device is left alone. The device's state is re-detected after every rung, never
assumed. "Recovered" means: normal mode on USB, every module valid, no SOS for a full observation window.

Every rung publishes events, and records the device seconds its own timings demanded (``minimum_s``:
boot, mode switches, flash time, and the shortest observation that tells what the rung needs to know),
so elapsed / minimum says how much the kiosk itself cost. A Stop (``cancel``) ends it between and inside
waits; teardown always releases the buttons and leaves power on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware.intelhex import HexError
from firmware.library import FirmwareLibrary, LibraryError
from firmware.module import parse_module
from firmware.plan import DeviceFacts, PlanRefused, Transport, plan_flash
from firmware.platforms import Platform
from hw.clock import Cancelled, ClockEvent
from hw.control import ControlChannel, ControlError, ControlFailure, Result
from hw.device_timing import BOOTLOADER_SAFE_S, CONTROL_RESET_DELAY_S, DFU_ENUMERATE_S, boot_s
from hw.flash_timing import swd_restore_floor_s
from hw.hazard import DEFAULT_DRAIN_S, HazardRefused
from hw.led_classifier import LedReading, classify, minimum_watch_s
from hw.swd import (
    NoProbe,
    NoTarget,
    NoTargetPower,
    PackMissing,
    ProbeNotFound,
    SwdError,
    TargetLocked,
    image_segments,
    restore,
)
from hw.usb_identity import ParticleUsbDevice
from kiosk import inspect as inspection
from kiosk import modes
from kiosk.backup import BackupKeeper
from kiosk.bench import Slot
from kiosk.events import Event, EventBus
from kiosk.executor import ALREADY_ON_DEVICE, FlashExecutor, skip_installed
from kiosk.facts import gather_facts

DRAIN_S = DEFAULT_DRAIN_S  # Particle's guide: let the capacitors drain for 5 s
#: How long "no SOS" must hold to call a device recovered: an app that crashes does so within a few
#: seconds of boot in every case the guide describes (the simulator's crash comes 2 s after boot).
HEALTHY_WINDOW_S = 3.0
#: A running Device OS answers a control request within tens of milliseconds; one that has not answered
#: in this long is not responding (its app blocks the system thread, or it hangs).
MODULE_INFO_TIMEOUT_S = 2.0
#: How much longer than its boot a device may take to show on USB: host enumeration takes 0.1-0.5 s,
#: about 1 s on some hosts (timing-model.md 3, UNVERIFIED), so this is generous.
ENUMERATE_ALLOWANCE_S = 1.0
DFU_LED_WINDOW_S = 1.0  # blinking yellow (5 Hz) is sure after 0.81 s (hw.led_classifier.minimum_watch_s)
LED_REREAD_S = 0.25  # while reading an SOS code, classify again this often (device seconds)

#: What a running Device OS shows in normal mode (led-buttons-restore.md): network and cloud states.
RUNNING_LED = frozenset({
    ("cyan", "breathing"), ("cyan", "blink-normal"), ("cyan", "blink-fast"),
    ("green", "blink-normal"), ("green", "blink-fast"), ("green", "breathing"),
    ("white", "breathing"), ("blue", "blink-normal"), ("blue", "breathing"),
})  # fmt: skip
#: What a verdict asks of the technician is kept apart from what the kiosk found (``detail``), so every front
#: end can show the whole instruction, and say in its own words how to start again (``again``): the
#: touchscreen "press RECOVER", the CLI its own command, the report "recover it again".
SENSOR_FOUND = (
    "the device answers on USB with every module valid, but the LED sensor shows {led}. A running Device OS "
    "always drives its LED; nothing was written"
)
SENSOR_ACTION = "Check the LED sensor and its wires (kiosk doctor --active)"
PROTECTED_FOUND = "Device Protection is on: nothing can be written offline"
PROTECTED_ACTION = "Ask the product's owner to put it in service mode"
CHECKLIST_ACTION = "Check EN pin, 3V3 rail, shorts, heat: the report has the checklist"
CHECKLIST = (
    "EN pin: not held low by the carrier board or a wire",
    "3V3 rail: measure it; a short pulls it down",
    "shorts: look for solder bridges and metal debris, especially near the USB connector",
    "heat: a part that gets hot within seconds of power-on is damaged",
    "back-powering: a peripheral powered from elsewhere can hold the MCU up through its pins",
)


@dataclass(frozen=True)
class RunStarted(Event):
    device_id: str | None
    platform: str | None


@dataclass(frozen=True)
class RungStarted(Event):
    rung: str


@dataclass(frozen=True)
class Observation(Event):
    what: str
    data: dict | list


@dataclass(frozen=True)
class RungFinished(Event):
    rung: str
    outcome: str
    detail: str = ""


@dataclass(frozen=True)
class Verdict(Event):
    verdict: str
    rung: str | None  # the rung that fixed it; None when none did
    detail: str  # what the kiosk found
    elapsed_s: float
    minimum_s: float
    action: str = ""  # what the technician is to do ("" : the verdict's own words say it)
    again: bool = False  # ... and then recover it again
    usb_errors: int = 0  # USB transfers that failed on the wire and were retried (the cable, most often)


@dataclass
class Seen:
    """What the kiosk found when it last looked."""

    usb: ParticleUsbDevice | None
    led: LedReading | None
    modules_ok: bool | None  # None: the device did not say
    deps_failed: bool = False
    responsive: bool = False
    protected: bool = False
    led_from: float = 0.0  # device time the LED reading starts at
    demanded_s: float = 0.0  # device seconds this look needed: the device showing up, then the LED window

    @property
    def sos(self) -> int | None:
        return self.led.sos_code if self.led is not None else None

    @property
    def panicking(self) -> bool:
        """A red SOS, its code read or not: Device OS runs and crashes (USB and requests die with it)."""
        return self.led is not None and (self.led.sos_code is not None or self.led.pattern == "sos")

    @property
    def _runs_by_usb(self) -> bool:
        return bool(self.usb and self.usb.mode == "normal" and self.responsive and self.modules_ok)

    @property
    def healthy(self) -> bool:
        led_ok = self.led is None or (self.led.colour, self.led.pattern) in RUNNING_LED
        return self._runs_by_usb and led_ok

    @property
    def led_suspect(self) -> bool:
        """USB, requests and modules all say it runs, yet the sensor shows no running Device OS (and no
        SOS): the sensor (or an app that drives the LED itself) is to be checked, not the device."""
        led = self.led
        return self._runs_by_usb and led is not None and led.sure and not self.panicking and (
            (led.colour, led.pattern) not in RUNNING_LED
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "usb_mode": self.usb.mode if self.usb else None,
            "led": self.led.to_json() if self.led else None,
            "modules_ok": self.modules_ok,
            "dependencies_failed": self.deps_failed,
            "responsive": self.responsive,
            "protected": self.protected,
        }


@dataclass
class LadderResult:
    verdict: str  # healthy, recovered, recovered-by-swd, needs-technician, needs-owner, damaged-hardware, stopped
    rung: str | None  # the rung that fixed it
    detail: str
    elapsed_s: float
    minimum_s: float
    steps: list[dict] = field(default_factory=list)
    action: str = ""  # what the technician is to do next ("": nothing beyond the verdict's own words)
    again: bool = False  # then recover it again
    usb_errors: int = 0  # USB transfers that failed on the wire and were retried

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "rung": self.rung,
            "detail": self.detail,
            "action": self.action,
            "again": self.again,
            "usb_errors": self.usb_errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "minimum_s": round(self.minimum_s, 3),
            "steps": self.steps,
        }


class _RunEnds(Exception):
    """Something seen ends the run with a verdict, whatever rung the ladder is on: what was found, and what
    the technician is to do before recovering it again."""

    verdict = "needs-technician"

    def __init__(self, detail: str, action: str, demanded_s: float = 0.0):
        super().__init__(detail)
        self.detail = detail
        self.action = action
        self.demanded_s = demanded_s  # device seconds the step that saw it had needed so far


class _Protected(_RunEnds):
    """Device Protection: nothing may be written offline."""

    verdict = "needs-owner"

    def __init__(self, demanded_s: float = 0.0):
        super().__init__(PROTECTED_FOUND, PROTECTED_ACTION, demanded_s)


class _SensorSuspect(_RunEnds):
    """Everything says the device runs, but the LED sensor does not show a running Device OS."""


class Ladder:
    """One recovery of the device in ``slot``; ``run()`` returns the verdict."""

    def __init__(
        self,
        slot: Slot,
        library: FirmwareLibrary,
        bus: EventBus | None = None,
        cancel: ClockEvent | None = None,
        journal=None,
        run_id: int | None = None,
        *,
        shortcuts: bool = True,
    ):
        self.slot = slot
        self.library = library
        self.bus = bus or EventBus()
        self.cancel = cancel
        self.clock = slot.clock
        self.journal = journal
        self.run_id = run_id
        self.minimum_s = 0.0
        self.steps: list[dict] = []
        #: False walks the guide's fixed order (every rung in turn, the LED watched for the longest SOS,
        #: safe mode by the buttons): the comparison for the kiosk's figures, not for the bench
        self.shortcuts = shortcuts
        #: the platform to assume when the device shows nothing on USB (the slot's label, or the technician)
        self.platform_hint: Platform | None = None
        self._known_platform: Platform | None = None
        self._battery = False  # a cold boot found the LED lit with VBUS off
        self.usb_errors = 0  # USB transfers of this run that failed on the wire and were retried
        self._started = 0.0
        #: the customer's app, kept before the first write over it (a journal with a folder keeps it)
        self.backups = BackupKeeper(journal, run_id, cancel=cancel) if journal is not None and run_id is not None \
            else None

    # -- bookkeeping ---------------------------------------------------------------------------
    def _publish(self, event: Event) -> None:
        self.bus.publish(event)

    def _step(self, rung: str, action: str, fn: Callable[[], tuple[str, str, float]]) -> tuple[str, str]:
        """Run one action: journal it before and after, count the device time it demanded."""
        wait = self.slot.buttons.guard.applying_wait_needed()
        if wait > 0:  # the device applies an update: no action may reset or unpower it until it is done (hw.hazard)
            self.clock.sleep(wait, self.cancel)
        step_id = self.journal.begin_step(self.run_id, rung, action) if self.journal else None
        started = self.clock.now()
        outcome, detail, demanded = "failed", "", 0.0
        try:
            outcome, detail, demanded = fn()
            return outcome, detail
        except _RunEnds as exc:
            outcome, detail, demanded = exc.verdict, exc.detail, exc.demanded_s
            # the run ends in this rung: the card's rung shows what the journal's step says
            self._publish(RungFinished(self.slot.index, rung, exc.verdict, exc.detail))
            raise
        finally:
            elapsed = self.clock.now() - started
            self.minimum_s += demanded
            record = {"rung": rung, "action": action, "outcome": outcome, "detail": detail,
                      "elapsed_s": round(elapsed, 3), "minimum_s": round(demanded, 3)}  # fmt: skip
            self.steps.append(record)
            if self.journal and step_id is not None:
                self.journal.end_step(step_id, outcome, detail, {"elapsed_s": elapsed, "minimum_s": demanded})

    def _observe(self, what: str, data: dict | list) -> None:
        self._publish(Observation(self.slot.index, what, data))
        if self.journal:
            self.journal.observe(self.run_id, what, data)

    def _boot_s(self) -> float:
        return boot_s(self._known_platform or self.platform_hint)

    # -- looking -------------------------------------------------------------------------------
    def look(self, led_s: float | None = None) -> Seen:
        """USB mode, module table and (where there is a sensor) the LED, re-detected from scratch.

        The LED window runs while the kiosk waits for USB and asks for the module table, so a look
        takes the window (or the device's boot, when it is coming up), not their sum.
        """
        led = self.slot.led
        window = (HEALTHY_WINDOW_S if led_s is None else led_s) if led.available else 0.0
        started = self.clock.now()
        if led.available:
            led.start()
        booting_s = self._boot_s()
        usb = modes.wait_for_device(self.slot, max(window, booting_s + ENUMERATE_ALLOWANCE_S), None, self.cancel)
        if usb is None and self._led_lit_since(started):  # something runs: it may still be coming up
            usb = modes.wait_for_device(self.slot, max(0.0, started + modes.FIND_TIMEOUT_S - self.clock.now()),
                                        None, self.cancel)  # fmt: skip
        if usb is None and not led.available:
            usb = modes.wait_for_device(self.slot, max(0.0, started + modes.FIND_TIMEOUT_S - self.clock.now()),
                                        None, self.cancel)  # fmt: skip
        self._refuse_if_crowded(usb, started)
        seen = Seen(usb, None, None)
        if usb is not None:
            if usb.mode == "dfu":  # the bootloader's yellow blink reads in under a second, and shows no SOS
                window = min(window, DFU_LED_WINDOW_S)
            seen.led_from = self.clock.now()  # the window is of the device as it runs, not as it boots
            seen.demanded_s = (seen.led_from - started) + window  # the device's own time to show up, then the window
            self._known_platform = usb.platform
        else:
            seen.led_from = started
            seen.demanded_s = max(window, booting_s + DFU_ENUMERATE_S)
        if usb is not None and self.journal is not None and self.run_id is not None:
            self.journal.identify_run(self.run_id, usb.device_id, usb.platform.name)
        if usb is not None and usb.mode == "normal":
            channel = ControlChannel(usb.usb_device, self.clock, usb.platform.quirks)
            for attempt in range(2):
                try:
                    infos = channel.module_info(timeout_s=MODULE_INFO_TIMEOUT_S, cancel=self.cancel)
                    seen.responsive = True
                    seen.modules_ok = all(i.valid for i in infos)
                    seen.deps_failed = any("dependencies" in i.failed for i in infos)
                    self._observe("modules", [m.to_json() for m in inspection.from_control(infos)])
                except ControlError as exc:
                    if exc.result == Result.IO_ERROR and attempt == 0:  # the cable garbled the reply: it only
                        self.usb_errors += 1  # reads, so ask once more rather than call the device unwell
                        continue
                    seen.responsive = True
                    seen.protected = exc.protected
                except ControlFailure:
                    seen.responsive = False
                break
        if led.available:  # also when protected: the ticket wants the LED
            self.clock.sleep(max(0.0, seen.led_from + window - self.clock.now()), self.cancel)
            seen.led = classify(led.samples_since(seen.led_from))
            self._observe("led", seen.led.to_json())
        # Again at the end: a second device that was still booting when the first one answered has come up
        # since (a P2 takes seconds longer than a Boron), and the module table or LED read may be the other's.
        self._refuse_if_crowded(usb, started)
        self._observe("usb", seen.to_json())
        if seen.protected:
            raise _Protected(seen.demanded_s)
        if seen.led_suspect:
            raise _SensorSuspect(SENSOR_FOUND.format(led=seen.led.describe()), SENSOR_ACTION, seen.demanded_s)
        return seen

    def _refuse_if_crowded(self, usb: ParticleUsbDevice | None, started: float) -> None:
        """End the run (needs-technician) when another device is on this slot's port beside ``usb``."""
        others = [d for d in modes.devices_on(self.slot) if usb is not None and d.device_id != usb.device_id]
        if others:  # which one is the broken one? Only the technician can tell
            ids = ", ".join(sorted({usb.device_id or "?", *(d.device_id or "?" for d in others)}))
            where = "this slot's USB port" if self.slot.usb_port else (
                "USB, and this slot names no usb_port in the bench config to tell them apart (kiosk list shows "
                "each device's port)")  # fmt: skip
            raise _RunEnds(f"more than one device on {where} ({ids}); nothing was done",
                           "Unplug all but the one to recover", self.clock.now() - started)  # fmt: skip

    def _look_after(self, demanded_s: float) -> Seen:
        """look(), within a step that already demanded ``demanded_s`` device seconds (counted if the look
        finds Device Protection and ends the run)."""
        try:
            return self.look()
        except _RunEnds as exc:
            exc.demanded_s += demanded_s
            raise

    def _led_lit_since(self, t: float) -> bool:
        return self.slot.led.available and any(s.r or s.g or s.b for s in self.slot.led.samples_since(t))

    # -- the rungs -----------------------------------------------------------------------------
    def run(self) -> LadderResult:
        self._started = self.clock.now()
        first = modes.wait_for_device(self.slot, 0.0, None, self.cancel)  # what is on USB this instant
        platform = first.platform if first is not None else self.platform_hint
        self._publish(RunStarted(self.slot.index, first.device_id if first else None,
                                 platform.name if platform else None))  # fmt: skip
        try:
            return self._run()
        except _RunEnds as ended:
            return self._verdict(ended.verdict, None, ended.detail, ended.action, again=True)
        except Cancelled:
            return self._verdict("stopped", None, "stopped by the technician; buttons released, power on")
        finally:
            self.slot.buttons.release_all()
            if self.slot.power is not None and not self.slot.power.is_on:
                with contextlib.suppress(HazardRefused):
                    self.clock.sleep(self.slot.power.guard.power_off_wait_needed())
                    self.slot.power.on()

    def _run(self) -> LadderResult:
        seen = self._identify()
        if seen.healthy:
            return self._verdict("healthy", None, "normal mode, every module valid, no SOS: nothing was done")
        # A hang (on USB, no answer, no SOS) or nothing at all: power off and on. A crash loop is no hang.
        hung = seen.usb is not None and seen.usb.mode == "normal" and not seen.responsive and not seen.panicking
        if not self.shortcuts or seen.usb is None or hung:
            seen = self._cold_boot()
            if seen.healthy:
                return self._verdict("recovered", "cold-boot", "a cold boot was enough")
            if self._battery:
                return self._verdict("needs-technician", None, "power did not go: a battery keeps the device "
                                     "running", "Unplug its battery", again=True)  # fmt: skip
        if seen.usb is None:
            return self._swd_rung()
        if not self.shortcuts or (seen.usb.mode == "normal" and not seen.deps_failed):
            outcome = self._safe_mode_then_tinker(ask=seen.responsive and not seen.panicking and self.shortcuts)
            if outcome is not None:
                return outcome
        for order, rung in (("dependencies", "update"), ("apps-first", "second-try")):
            seen = self._update(order, rung)
            if seen is not None and seen.healthy:
                return self._verdict("recovered", rung, f"Device OS update and Tinker ({order} order)")
        return self._swd_rung()

    def _identify(self) -> Seen:
        self._publish(RungStarted(self.slot.index, "identify"))
        result: list[Seen] = []

        def act() -> tuple[str, str, float]:
            # The same window that later decides "recovered"; longer only when the LED gives reason to be.
            seen = self.look()
            started = seen.led_from
            result.append(seen)
            if not self.shortcuts and seen.led is not None:  # the guide: watch long enough for any SOS code
                self.clock.sleep(max(0.0, started + minimum_watch_s("sos") - self.clock.now()), self.cancel)
                seen.led = classify(self.slot.led.samples_since(started))
                self._observe("led", seen.led.to_json())
            elif seen.led is not None and not self._settled(seen.led):
                # Watch on, re-reading as it goes, until the LED says what it is; at most long enough for
                # any SOS code (what is seen by then is what there is).
                limit = started + minimum_watch_s("sos") + 5.0

                not_before = [started]

                def settled() -> bool:
                    if self.clock.now() < not_before[0]:
                        return False  # no SOS cycle can have been watched whole yet: a reading now reads no code
                    samples = self.slot.led.samples_since(started)
                    seen.led = classify(samples)
                    if seen.led.sos_whole_in_s is not None and samples:
                        not_before[0] = samples[-1].t + seen.led.sos_whole_in_s
                    return self._settled(seen.led)

                self.clock.wait_for(settled, max(0.0, limit - self.clock.now()), self.cancel, poll=LED_REREAD_S)
                self._observe("led", seen.led.to_json())
            # Reading an SOS code takes what the code's own blink cycle takes; otherwise the window is enough.
            demanded = seen.demanded_s
            if seen.sos and seen.led is not None:
                demanded += max(0.0, seen.led.watched_s - HEALTHY_WINDOW_S)
            return "observed", self._describe(seen), demanded

        self._step("identify", "look at USB, module table and LED", act)
        self._publish(RungFinished(self.slot.index, "identify", "observed"))
        return result[0]

    @staticmethod
    def _settled(led: LedReading) -> bool:
        """Whether a reading is enough to act on: an SOS code read, or a sure reading that shows no red."""
        if led.sos_code is not None:
            return True
        alarming = led.colour == "red" or "red" in led.colours_seen or led.pattern in ("sos", "unknown")
        return led.sure and not alarming

    @staticmethod
    def _describe(seen: Seen) -> str:
        parts = [f"USB {seen.usb.mode}" if seen.usb else "not on USB"]
        if seen.led is not None:
            parts.append(seen.led.describe())
        if seen.modules_ok is not None:
            parts.append("modules valid" if seen.modules_ok else "a module fails its checks")
        return "; ".join(parts)

    def _cold_boot(self) -> Seen:
        self._publish(RungStarted(self.slot.index, "cold-boot"))
        result: list[Seen] = []

        def act() -> tuple[str, str, float]:
            if self.slot.power is None:
                return "skipped", "no power switch on this slot", 0.0
            outcome = modes.cold_boot(self.slot, self.cancel, find_timeout_s=0.0)  # look() waits for it
            self._battery = any("battery" in a.outcome for a in outcome.attempts)
            seen = self._look_after(DRAIN_S)
            result.append(seen)
            done = seen.usb is not None and not self._battery
            detail = "; ".join(a.outcome for a in outcome.attempts)
            return ("done" if done else "failed"), detail, DRAIN_S + seen.demanded_s

        outcome, detail = self._step("cold-boot", "power off for the drain time, then on", act)
        self._publish(RungFinished(self.slot.index, "cold-boot", outcome, detail))
        return result[0] if result else self.look()

    def _safe_mode_then_tinker(self, ask: bool) -> LadderResult | None:
        """``ask``: try the control request first (a device that answers and shows no SOS)."""
        self._publish(RungStarted(self.slot.index, "safe-mode"))
        outcome, detail = self._step("safe-mode", "restart in safe mode", lambda: self._enter_safe_mode(ask))
        if outcome != "done":
            self._publish(RungFinished(self.slot.index, "safe-mode", outcome, detail))
            return None
        seen = self._flash_tinker("safe-mode")  # the same rung: "safe mode, then Tinker" is done when it runs
        healthy = seen is not None and seen.healthy
        self._publish(RungFinished(self.slot.index, "safe-mode", "healthy" if healthy else "not yet"))
        if healthy:
            return self._verdict("recovered", "safe-mode", "Device OS runs without the app, so the app was at "
                                 "fault: Tinker written in its place")  # fmt: skip
        return None

    def _enter_safe_mode(self, ask: bool) -> tuple[str, str, float]:
        result = modes.enter_safe_mode(self.slot, self.cancel, ask=ask)
        held = BOOTLOADER_SAFE_S + 0.3  # RESET tapped, then MODE held until the bootloader shows magenta
        demanded = (CONTROL_RESET_DELAY_S if result.via == "control-request" else held) + self._boot_s()
        return ("done" if result.ok else "failed"), "; ".join(a.outcome for a in result.attempts), demanded

    def _flash(self, rung: str, action: str, wanted: list, order: str = "dependencies") -> Seen | None:
        result: list[Seen] = []

        def act() -> tuple[str, str, float]:
            usb = modes.wait_for_device(self.slot, modes.FIND_TIMEOUT_S, None, self.cancel)
            if usb is None:
                return "failed", "the device is not on USB", 0.0
            facts = gather_facts(self.slot, usb)
            if facts.protected:
                raise _Protected()
            installed = facts.modules  # with their hashes (5.6.0 on): what the device already has is left out
            facts = DeviceFacts(facts.platform, facts.system_version, None, facts.mode, facts.protected)
            try:
                plan = plan_flash(facts, wanted, Transport.AUTO, order)
            except PlanRefused as refused:
                return "refused", str(refused), 0.0
            plan, skipped = skip_installed(plan, installed)
            notes = [f"{s.name}: {ALREADY_ON_DEVICE}, skipped" for s in skipped]
            if skipped:
                self._observe("skipped", {"steps": [s.to_json() for s in skipped], "why": ALREADY_ON_DEVICE})
            keep = self.backups.callback(usb.device_id, usb.platform) if self.backups is not None else None
            report = FlashExecutor(self.slot, plan, self.bus, self.cancel, on_user_part_overwrite=keep).run()
            self.usb_errors += report.usb_errors
            if report.protected:
                raise _Protected(report.device_demanded_s)
            result.append(self._look_after(report.device_demanded_s))
            demanded = report.device_demanded_s + HEALTHY_WINDOW_S
            notes += [n for s in report.steps if s.outcome == "written" and s.detail for n in [s.detail]]
            detail = "; ".join([report.detail or f"{len(plan.steps)} step(s) written", *notes])
            return ("done" if report.ok else "failed"), detail, demanded

        self._step(rung, action, act)
        return result[0] if result else None

    def _flash_tinker(self, rung: str) -> Seen | None:
        usb = modes.wait_for_device(self.slot, modes.FIND_TIMEOUT_S, None, self.cancel)
        if usb is None:
            return None
        try:
            entry = self.library.tinker(usb.platform)
            tinker = [(entry.path, parse_module(self.library.read(entry)))]
        except LibraryError as exc:
            self._observe("library", {"problem": str(exc)})
            return None
        return self._flash(rung, "write Tinker over DFU", tinker)

    def _update(self, order: str, rung: str) -> Seen | None:
        self._publish(RungStarted(self.slot.index, rung))
        usb = modes.wait_for_device(self.slot, modes.FIND_TIMEOUT_S, None, self.cancel)
        if usb is None:
            return None
        try:
            bundle = self.library.bundle(usb.platform)
            wanted = [(e.path, parse_module(self.library.read(e))) for e in bundle.entries if not e.encrypted]
            tinker_entry = self.library.tinker(usb.platform)
            wanted.append((tinker_entry.path, parse_module(self.library.read(tinker_entry))))
        except LibraryError as exc:
            self._observe("library", {"problem": str(exc)})
            return None
        seen = self._flash(rung, f"Device OS {bundle.release} and Tinker ({order} order)", wanted, order)
        self._publish(RungFinished(self.slot.index, rung, "healthy" if seen and seen.healthy else "not yet"))
        return seen

    def _swd_rung(self) -> LadderResult:
        """The last rung: program the restore image over SWD, judged by what the probe and the device say."""
        self._publish(RungStarted(self.slot.index, "swd-restore"))
        if self.slot.swd is None:
            return self._verdict("needs-technician", None, "nothing else reached it, and this slot has no SWD "
                                 "debugger", "Connect an SWD debugger to the device", again=True)  # fmt: skip
        platform = self._platform()
        if platform is None:
            return self._verdict("needs-technician", None, "the device shows nothing on USB, so the kiosk cannot "
                                 "tell its platform for the SWD restore",
                                 "Restore it with `kiosk restore --swd --platform P` (P: its platform)")  # fmt: skip
        outcome: list[str] = []

        def act() -> tuple[str, str, float]:
            try:
                source, image = self.library.swd_image(platform)
                result = restore(self.slot.swd, platform, image, unique_id=self.slot.swd_probe_id,
                                 allow_unlock=False, cancel=self.cancel)  # fmt: skip
            except (LibraryError, HexError) as exc:
                outcome.append("no-image")
                return "failed", str(exc), 0.0
            except (NoProbe, ProbeNotFound, NoTarget, PackMissing, TargetLocked) as exc:
                outcome.append("technician")
                return "failed", str(exc), 0.0
            except NoTargetPower:  # the slot powers the device, so its own advice ("plug its USB") is not it
                outcome.append("damaged")
                return "failed", "the SWD debugger sees no target voltage, though the slot powers the device", 0.0
            except SwdError as exc:  # transfers failing: nothing answers
                outcome.append("damaged")
                return "failed", str(exc), 0.0
            outcome.append("written")
            busy = swd_restore_floor_s(platform, image_segments(image), result.mass_erased)
            seen = self._look_after(busy)  # the probe resets the target: it boots, and the look waits for that
            after.append(seen)
            return "done", f"{result.bytes_written} bytes from {source}", busy + seen.demanded_s

        after: list[Seen] = []
        _, detail = self._step("swd-restore", "program the restore image over SWD", act)
        self._publish(RungFinished(self.slot.index, "swd-restore", outcome[0] if outcome else "failed"))
        if outcome and outcome[0] == "written":
            seen = after[0]
            if seen.healthy:
                return self._verdict("recovered-by-swd", "swd-restore", detail)
            return self._verdict("damaged-hardware", None, "restored over SWD, yet it does not run; check: "
                                 + "; ".join(CHECKLIST), CHECKLIST_ACTION)  # fmt: skip
        if outcome and outcome[0] == "damaged":
            return self._verdict("damaged-hardware", None, f"nothing answers over USB or SWD: {detail}; check: "
                                 + "; ".join(CHECKLIST), CHECKLIST_ACTION)  # fmt: skip
        return self._verdict("needs-technician", None, detail, "Do what the line above says", again=True)

    def _platform(self) -> Platform | None:
        usb = modes.wait_for_device(self.slot, 0.0, None, self.cancel)  # just looked: no need to wait again
        if usb is not None:
            return usb.platform
        return self.platform_hint

    def _verdict(self, verdict: str, rung: str | None, detail: str, action: str = "", *,
                 again: bool = False) -> LadderResult:  # fmt: skip
        elapsed = self.clock.now() - self._started
        result = LadderResult(verdict, rung, detail, elapsed, self.minimum_s, self.steps, action, again,
                              self.usb_errors)  # fmt: skip
        self._publish(Verdict(self.slot.index, verdict, rung, detail, elapsed, self.minimum_s, action, again,
                              self.usb_errors))  # fmt: skip
        return result
