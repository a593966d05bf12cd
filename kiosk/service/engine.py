"""The bench engine: the bench, the library, the journal and the runner, driven from workers.

The bench service (:mod:`kiosk.service.server`) calls these methods from its call threads and learns what
happened only through the records ``post`` delivers (:mod:`kiosk.service.posts`, from any thread). Recoveries
go through :class:`kiosk.runner.RecoveryRunner`; manual flashes through the planner and
:class:`kiosk.executor.FlashExecutor`, as ``kiosk flash`` does. Buttons and power are only ever moved by
those, inside the hazard guard.

Importing this module is cheap: the ladder, the runner, the simulator, the drivers (pyusb, pyserial,
pyOCD) and the library are imported by the methods that need them, which run in worker threads once the
first screen is up (``open()`` first). The touchscreen shows its first frame without waiting for them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiosk.service.posts import BenchEvent, DeviceSeen, Notice, SlotBusy, SlotIdle

if TYPE_CHECKING:
    from firmware.library import FirmwareLibrary, LibraryEntry
    from firmware.module import Module
    from firmware.plan import FlashPlan, Refusal, Transport
    from kiosk.bench import Bench
    from kiosk.events import Event, EventBus
    from kiosk.executor import ExecutionReport
    from kiosk.runner import RecoveryRunner

USB_POLL_S = 1.0  # real seconds between looks at each idle slot's USB port
PROGRESS_EVERY_S = 0.1  # real seconds between progress messages per slot (the last one always goes)
MAX_MODULE_BYTES = 32 * 1024 * 1024
RESULTS_KEPT = 256  # recoveries whose whole result document (as `kiosk recover --json` prints it) stays asked for

Post = Callable[[Any], Any]


class SlotBusyError(RuntimeError):
    """The slot is recovering or flashing already."""


class PlanInputError(ValueError):
    """A manual flash the service cannot plan because of what it was given or found: the words for the
    touchscreen, and ``data`` (``reason``: "no-device", "unreadable", "not-a-module"; ``file``: the module's
    label; ``error``: the cause) for a client that words it itself, as `kiosk flash` does alone."""

    def __init__(self, words: str, **data: Any) -> None:
        super().__init__(words)
        self.data = data


@dataclass(frozen=True)
class Source:
    """A module the technician chose for a manual flash: from the library or a file (a USB stick)."""

    label: str
    entry: LibraryEntry | None = None
    path: Path | None = None
    tinker: bool = False  # the library's Tinker for the device's platform and Device OS (`kiosk flash tinker`)


@dataclass
class ManualPlan:
    """A checked plan, or the planner's refusals in plain words; ``facts`` says what the device is."""

    slot: int
    plan: FlashPlan | None
    refusals: list[Refusal]
    device: str  # "Boron e00fce…0011, Device OS 6.1.1, running"
    suggestion: Transport | None = None  # refused: a transport the planner tried with the same modules, and it planned
    platform: str | None = None  # the device's platform name ("boron")
    platform_display: str | None = None  # and its display name ("Boron")
    device_id: str | None = None
    already: list[dict[str, Any]] = field(default_factory=list)  # steps left out: the device has them (JSON)
    update: dict[str, Any] | None = None  # a Device OS update: {"device_os", "skipped", "lacks"}
    backup: dict[str, Any] | None = None  # a backup put back: {"restoring_run", "restoring": [...]}

    @property
    def refused(self) -> bool:
        return self.plan is None


class KioskBackend:
    """One bench and what runs on it, for the bench service. ``open()`` and every other call run in threads."""

    def __init__(
        self,
        open_bench: Callable[[], Bench],
        open_library: Callable[[Bench], FirmwareLibrary],
        journal_path: Path | Callable[[], Path] | None,
        post: Post,
        *,
        description: str = "",
        exclusive: bool = False,
    ):
        self._open_bench = open_bench
        self._open_library = open_library
        self.journal_path = journal_path  # a callable gives the path in open(), off the UI thread
        self.post = post
        self.description = description
        self.exclusive = exclusive  # a real bench: one process drives it, or none
        self.bench: Bench | None = None
        self.library: FirmwareLibrary | None = None
        self.journal = None
        self.runner: RecoveryRunner | None = None
        self._bus: EventBus | None = None
        self._bus_lock = threading.Lock()
        self.interrupted: list[int] = []
        self._runner_lock = None
        self._slot_locks: dict[int, threading.Lock] = {}
        self._busy: dict[int, str] = {}
        self._cancels: dict[int, Any] = {}  # per busy slot but a recovery: the clock event its Stop sets
        self._workers: dict[int, threading.Thread] = {}  # per slot: the thread watching a run or writing a flash
        self._last_progress: dict[int, float] = {}
        self._closed = threading.Event()
        self._results: dict[int, dict[str, Any]] = {}  # run id -> the recovery's result document, newest last
        self._flash_results: dict[int, dict[str, Any]] = {}  # run id -> the manual flash's result document
        self._results_lock = threading.Lock()

    # -- life ------------------------------------------------------------------------------------
    def open(self) -> Bench:
        """Open the bench, the journal and the library (slow on a real bench: call it in a worker)."""
        from kiosk.commands.recover_cmd import _runner_lock
        from kiosk.journal import Journal
        from kiosk.runner import RecoveryRunner

        if callable(self.journal_path):
            self.journal_path = self.journal_path()
        if self.journal_path is not None:
            self._runner_lock = _runner_lock(Path(self.journal_path))
            if self._runner_lock is None and self.exclusive:
                raise SlotBusyError(
                    "another kiosk process (the touchscreen, a browser or `kiosk recover`) drives this bench now: "
                    "close it first; two processes must never move the same buttons"
                )
            self.journal = Journal(self.journal_path)
            if self._runner_lock is not None:  # only the process holding the lock may call runs interrupted
                self.interrupted = self.journal.mark_interrupted()
        bench = self._open_bench()
        self.bench = bench
        self.library = self._open_library(bench)
        _release_freed_memory()
        self.runner = RecoveryRunner(bench, self.library, self.journal, self.bus)
        self._slot_locks = {s.index: threading.Lock() for s in bench.slots}
        self.bus.subscribe(self._forward)
        return bench

    def close(self) -> None:
        """Stop every run and release the bench (buttons released, samplers stopped). Not on the UI thread."""
        self._closed.set()
        if self.runner is not None and self.bench is not None:
            self.runner.stop_all()
            for run in (self.runner.run(s.index) for s in self.bench.slots):
                if run is not None:
                    run.thread.join(30.0)
        for cancel in list(self._cancels.values()):
            cancel.set()
        for worker in list(self._workers.values()):  # each posts its slot's verdict and finishes its journal run
            if worker is not threading.current_thread():
                worker.join(30.0)
        if self.bench is not None:
            self.bench.close()
        if self.journal is not None:
            self.journal.close()
        if self._runner_lock is not None:
            self._runner_lock.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for close() to begin (a host-side delay, not a device wait); True if it has."""
        return self._closed.wait(timeout)

    @property
    def bus(self) -> EventBus:
        """The events of every run and flash on this bench (made on first use: kiosk.events is not needed
        for the first frame)."""
        with self._bus_lock:
            if self._bus is None:
                from kiosk.events import EventBus

                self._bus = EventBus()
            return self._bus

    # -- events -> messages -------------------------------------------------------------------------
    def _forward(self, event: Event) -> None:
        """In the publishing worker: post the event, thinning progress to a few per second per slot."""
        from kiosk.events import Progress

        if isinstance(event, Progress) and event.done < event.total:
            now = time.monotonic()
            if now - self._last_progress.get(event.slot, 0.0) < PROGRESS_EVERY_S:
                return
            self._last_progress[event.slot] = now
        at = self.bench.clock.now() if self.bench is not None else 0.0
        self.post(BenchEvent(event, at))

    # -- recovery ----------------------------------------------------------------------------------
    def busy(self, slot: int) -> str | None:
        return self._busy.get(slot)

    def _slot_lock(self, slot: int) -> threading.Lock:
        """The lock that decides who may start something on ``slot``; LookupError for a slot the bench lacks."""
        if slot not in self._slot_locks:
            raise LookupError(f"there is no slot {slot} on this bench")
        return self._slot_locks[slot]

    def _check_free(self, slot: int, advice: str) -> None:
        """Under the slot's lock: refuse while the bench closes or the slot is busy (``advice`` ends the words)."""
        if self.closed:
            raise SlotBusyError("the bench is closing: nothing new starts")
        if self._busy.get(slot):
            raise SlotBusyError(f"slot {slot} is busy with a {self._busy[slot]}{advice}")

    def start_recovery(self, slot: int) -> int:
        """Start the ladder on ``slot``; its run id. A thread waits for the verdict and posts SlotIdle."""
        from kiosk.runner import AlreadyRunning

        lock = self._slot_lock(slot)
        with lock:
            self._check_free(slot, ": press Stop first")
            try:
                run_id = self.runner.start(slot)
            except AlreadyRunning as exc:
                raise SlotBusyError(str(exc)) from None
            self._busy[slot] = "recovery"
            self.post(SlotBusy(slot, "recovery", run_id))
            watcher = threading.Thread(target=self._watch_recovery, args=(slot,), name=f"watch-slot-{slot}",
                                       daemon=True)  # fmt: skip
            self._workers[slot] = watcher
            watcher.start()
        return run_id

    def _watch_recovery(self, slot: int) -> None:
        run = self.runner.run(slot)
        run.thread.join()
        with self._slot_locks[slot]:
            self._busy.pop(slot, None)
            self._workers.pop(slot, None)
        verdict = run.result.verdict if run.result else "error"
        detail = run.result.detail if run.result else (run.error or "the ladder ended without a verdict")
        if run.run_id is not None:  # kept before SlotIdle: a client that hears the verdict may ask for it at once
            document = (
                {"slot": slot, "run_id": run.run_id, **run.result.to_json()}
                if run.result
                else {"slot": slot, "run_id": run.run_id, "verdict": "error", "detail": detail}
            )
            with self._results_lock:
                self._results[run.run_id] = document
                while len(self._results) > RESULTS_KEPT:
                    del self._results[next(iter(self._results))]
        self.post(SlotIdle(slot, verdict, detail, run.run_id))

    def recovery_result(self, run_id: int) -> dict[str, Any]:
        """A finished recovery's whole result, as ``kiosk recover --json`` prints it (the CLI through the
        service prints this); LookupError for a run this service did not finish (or forgot: 256 are kept)."""
        with self._results_lock:
            document = self._results.get(run_id)
        if document is None:
            raise LookupError(f"no finished recovery {run_id} in this service (it keeps the newest {RESULTS_KEPT}); "
                              "`kiosk report` shows any run in the journal")  # fmt: skip
        return document

    def flash_result(self, run_id: int) -> dict[str, Any]:
        """A finished manual flash's whole result, as ``kiosk flash --json`` prints it after the plan (the plan,
        the report, the backups kept); LookupError for a flash this service did not finish (or forgot)."""
        with self._results_lock:
            document = self._flash_results.get(run_id)
        if document is None:
            raise LookupError(f"no finished flash {run_id} in this service (it keeps the newest {RESULTS_KEPT}); "
                              "`kiosk report` shows any run in the journal")  # fmt: skip
        return document

    def recover(self, slot: int) -> None:
        """Start the ladder on ``slot`` and wait (in this thread) until it ends."""
        self.start_recovery(slot)
        worker = self._workers.get(slot)
        if worker is not None:
            worker.join()

    def stop(self, slot: int) -> bool:
        """Stop whatever runs on ``slot`` (the ladder, a manual flash, an SWD restore); it ends promptly, buttons
        released."""
        with self._slot_locks[slot]:
            busy = self._busy.get(slot)
            if busy is not None and busy != "recovery":
                cancel = self._cancels.get(slot)
                if cancel is not None:
                    cancel.set()
                    return True
                return False
            return self.runner.stop(slot) if self.runner is not None else False

    def inspect(self, slot_number: int) -> dict[str, Any]:
        """The device's modules with each check, as ``kiosk inspect --json`` gives them (control request 90, or
        the listening-mode ``s`` table); ValueError says why a device cannot be inspected now."""
        from hw.control import ControlChannel, ControlFailure, DeviceMode
        from kiosk import inspect as inspection
        from kiosk import modes
        from kiosk.commands.common import CommandError
        from kiosk.commands.device_cmd import _modules_by_serial

        if self._busy.get(slot_number):
            raise SlotBusyError(f"slot {slot_number} is busy with a {self._busy[slot_number]}: wait, or press Stop")
        bench = self.bench
        slot = bench.slot(slot_number)
        with bench.clock.actor():
            try:
                device = modes.identify(slot)
            except modes.DeviceNotFound as exc:
                raise ValueError(str(exc)) from None
            if device.mode != "normal":
                raise ValueError(f"the device is in {device.mode} mode: module info needs Device OS running")
            channel = ControlChannel(device.usb_device, bench.clock, device.platform.quirks)
            source = "control request 90"
            try:
                listening = channel.device_mode(timeout_s=3.0) == DeviceMode.LISTENING
            except ControlFailure:
                listening = False
            try:
                if listening:
                    raise ControlFailure("listening: the console answers")
                infos = channel.module_info()
            except ControlFailure as exc:
                if not listening:
                    raise ValueError(f"the device did not report its modules ({exc}); put it in listening mode "
                                     "to read them over serial") from None  # fmt: skip
                source = "serial s (listening mode)"
                try:
                    infos = _modules_by_serial(bench, slot, device)
                except CommandError as failure:
                    raise ValueError(str(failure)) from None
        hashes = inspection.LibraryHashes(self.library, device.platform, {(i.function, i.index) for i in infos})
        modules = inspection.from_control(infos, hashes)
        return {"slot": slot_number, "device_id": device.device_id, "platform": device.platform.name,
                "source": source, "ok": all(m.ok and m.matches_library for m in modules),
                "library": str(self.library.root), "library_problems": hashes.problems,
                "modules": [m.to_json() for m in modules],
                "text": inspection.describe(device.platform, modules, source, str(self.library.root))}  # fmt: skip

    def list_devices(self, known: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
        """``kiosk list``'s rows, one per slot, as the command makes them alone (``device_row``).

        An idle slot is looked at as the command looks: its device waited for on USB and asked its Device OS
        (control request 30). The look holds the slot's lock, so a recovery, flash or mode change pressed on that
        slot meanwhile waits for it (a few seconds at most: the device's enumeration time and one request's
        timeout) instead of starting beside it or being refused. A busy slot (a recovery, a flash, a mode change,
        an SWD restore) is not looked at: no control request may reach a device another operation is writing or
        switching, and even a USB look could catch it mid-way. Its row is what the service last saw of it
        (``known(slot)``: device id, platform, USB mode), ``device_os`` null, and ``busy_with`` says what runs.
        PlanInputError (``reason`` "usb-access") when USB cannot be opened."""
        from hw.usb_identity import UsbAccessError
        from kiosk.commands.device_cmd import device_row

        if self.closed:
            raise SlotBusyError("the bench is closing: nothing new starts")
        bench = self.bench
        rows: list[dict[str, Any]] = []
        for slot in bench.slots:
            with self._slot_lock(slot.index):
                busy = self._busy.get(slot.index)
                if busy is None:
                    try:
                        with bench.clock.actor():
                            rows.append(device_row(bench, slot))
                    except UsbAccessError as exc:
                        raise PlanInputError(str(exc), reason="usb-access") from None
                    continue
            seen = known(slot.index)
            rows.append({"slot": slot.index, "device_id": seen.get("device_id"), "platform": seen.get("platform"),
                         "mode": seen.get("mode"), "device_os": None, "port": slot.usb_port,
                         "busy_with": busy})  # fmt: skip
        return rows

    def change_mode(self, slot_number: int, operation: str) -> dict[str, Any]:
        """``kiosk dfu|safe-mode|listen|reset|cold-boot`` on the slot, in this thread (a clock actor), as the
        command does alone: the ModeResult as JSON. The slot is busy meanwhile ("mode change": a recovery, flash
        or another mode change is refused) and every card shows it (slot.busy, then slot.idle with what came of
        it, no verdict: a mode change is no run). Stop cancels its waits through the clock (hw.clock.Cancelled):
        the buttons are let go in their own ``finally``, power comes back once the drain time is over, and the
        hazard guard checks every press as ever. PlanInputError says why nothing was done ("no-device",
        "stopped"), ValueError when the hazard guard refuses."""
        from hw.clock import Cancelled
        from hw.hazard import HazardRefused
        from hw.usb_identity import UsbAccessError
        from kiosk import modes
        from kiosk.commands.device_cmd import MODE_COMMANDS

        if operation not in MODE_COMMANDS:
            raise ValueError(f"no mode command {operation!r}; they are: {', '.join(MODE_COMMANDS)}")
        change, words = MODE_COMMANDS[operation]
        lock = self._slot_lock(slot_number)
        with lock:
            self._check_free(slot_number, ": wait, or press Stop")
            self._busy[slot_number] = "mode change"
            cancel = self.bench.clock.event()
            self._cancels[slot_number] = cancel
        self.post(SlotBusy(slot_number, "mode change", None, f"{words[:1].upper()}{words[1:]}…"))
        outcome = "the mode change failed"
        try:
            with self.bench.clock.actor():
                result = change(self.bench.slot(slot_number), cancel)
            if result.ok:
                outcome = f"{operation}: {result.reached} reached via {result.via} ({result.elapsed_s:.1f} s)"
            else:
                outcome = f"{operation} FAILED: the device is in {result.reached or 'an unknown state'}"
        except (modes.DeviceNotFound, UsbAccessError) as exc:
            outcome = str(exc)
            raise PlanInputError(str(exc), reason="no-device") from None
        except HazardRefused as exc:
            outcome = f"refused: {exc}"
            raise ValueError(str(exc)) from None
        except Cancelled:
            outcome = f"{operation} stopped; buttons released"
            raise PlanInputError("stopped; buttons released", reason="stopped") from None
        finally:
            with lock:
                self._busy.pop(slot_number, None)
                self._cancels.pop(slot_number, None)
            self.post(SlotIdle(slot_number, None, outcome, None))
        return result.to_json()

    def swd_restore(self, slot_number: int, *, platform: str | None = None, device_os: str | None = None,
                    probe: str | None = None) -> dict[str, Any]:  # fmt: skip
        """``kiosk restore --swd`` on the slot, in this thread (a clock actor), as the command does alone (and, as
        alone, not a journal run): the document ``--json`` prints. The slot is busy meanwhile ("restore over SWD": a
        recovery, flash or mode change on it is refused, and Stop cancels the restore's waits); the cards hear
        slot.busy once the checks passed and the write begins, and slot.idle with "flashed", "flash-failed" or
        "stopped" after it. PlanInputError says why not: ``reason`` as ``kiosk.commands.flash_cmd``'s
        RESTORE_REFUSALS (with ``document`` when the restore itself failed), or "stopped"."""
        from hw.clock import Cancelled
        from hw.usb_identity import UsbAccessError
        from kiosk.commands.flash_cmd import RestoreRefused, restore_words
        from kiosk.commands.flash_cmd import swd_restore as restore_slot
        from kiosk.events import Progress, StepStarted

        lock = self._slot_lock(slot_number)
        bench = self.bench
        with lock:
            self._check_free(slot_number, ": wait, or press Stop")
            self._busy[slot_number] = "restore over SWD"
            cancel = bench.clock.event()
            self._cancels[slot_number] = cancel
        began: list[bool] = []
        verdict, detail = "flash-failed", ""
        phase: list[str] = []

        def begin(size: int) -> None:  # the checks passed: the write begins, and every card shows it
            began.append(True)
            self.post(SlotBusy(slot_number, "restore over SWD", None))
            self.bus.publish(StepStarted(slot_number, 0, 1, "restore image", "swd", size))

        def progress(done: int, total: int, what: str) -> None:
            if phase[-1:] != [what]:  # a new phase always reaches the clients (the CLI tells each one)
                phase.append(what)
                self._last_progress.pop(slot_number, None)
            self.bus.publish(Progress(slot_number, 0, done, total, what))

        try:
            with bench.clock.actor():
                document = restore_slot(bench.slot(slot_number), lambda: self.library, platform_name=platform,
                                        device_os=device_os, probe=probe, progress=progress, begin=begin,
                                        cancel=cancel)  # fmt: skip
            verdict = "flashed" if document["ok"] else "flash-failed"
            detail = restore_words(document).split(": ", 1)[1]
            return document
        except RestoreRefused as exc:
            detail = str(exc)
            raise PlanInputError(str(exc), reason=exc.reason, document=exc.document) from None
        except UsbAccessError as exc:
            detail = str(exc)
            raise PlanInputError(str(exc), reason="no-device") from None
        except Cancelled:
            verdict, detail = "stopped", "stopped; the SWD restore did not finish"
            raise PlanInputError("stopped; the SWD restore did not finish, buttons released",
                                 reason="stopped") from None  # fmt: skip
        finally:
            with lock:
                self._busy.pop(slot_number, None)
                self._cancels.pop(slot_number, None)
            if began:
                self.post(SlotIdle(slot_number, verdict, detail, None))

    def read_led(self, slot_number: int, watch_s: float | None) -> dict[str, Any]:
        """What the slot's status LED shows over ``watch_s`` (None: a whole SOS cycle), as ``kiosk led`` reads
        it: the reading as JSON and its words (``text``). Only looks: it may run beside anything."""
        from hw.gpio import LedUnavailable
        from hw.led_classifier import minimum_watch_s

        slot = self.bench.slot(slot_number)
        with self.bench.clock.actor():
            try:
                reading = slot.led.watch(minimum_watch_s("sos") if watch_s is None else watch_s)
            except LedUnavailable as exc:
                raise PlanInputError(str(exc), reason="no-led") from None
        return {**reading.to_json(), "text": reading.describe()}

    # -- pollers -----------------------------------------------------------------------------------
    def poll_usb(self, stop: threading.Event) -> None:
        """Until ``stop``: look at every idle slot's USB port and post what changed (a device plugged in)."""
        from hw.usb_identity import UsbAccessError
        from kiosk import modes

        seen: dict[int, tuple] = {}
        warned = False
        while not stop.is_set() and not self.closed:
            for slot in self.bench.slots:
                if self._busy.get(slot.index):
                    seen.pop(slot.index, None)  # the ladder reports the mode; look afresh once it is done
                    continue
                try:
                    found = modes.devices_on(slot)
                except UsbAccessError as exc:
                    if not warned:
                        self.post(Notice(str(exc), "error"))
                        warned = True
                    continue
                first = found[0] if found else None
                key = (first.device_id, first.platform.name, first.mode) if first else (None, None, None)
                if seen.get(slot.index) != key:
                    seen[slot.index] = key
                    self.post(DeviceSeen(slot.index, *key))
            stop.wait(USB_POLL_S)

    def poll_led(self, stop: threading.Event) -> None:
        """Until ``stop``: each slot's LED swatch (on change) and a classification now and then
        (kiosk.service.led_watch)."""
        from kiosk.service.led_watch import watch_leds

        watch_leds(self.bench.slots, self.post, stop, lambda: self.closed)

    # -- manual flash ------------------------------------------------------------------------------
    def library_sources(self, platform: str | None) -> list[Source]:
        """The library's modules for ``platform`` (every platform when None), newest release first."""
        entries = [e for e in self.library.entries()
                   if e.kind == "module" and (platform is None or e.platform == platform)]  # fmt: skip
        entries.sort(key=lambda e: (e.platform, e.release or "", e.name), reverse=True)
        return [Source(f"{e.platform} {e.release or ''} {e.name}".replace("  ", " "), entry=e) for e in entries]

    def _load(self, sources: list[Source], facts: Any = None) -> list[tuple[str, Module]]:
        from firmware.library import LibraryError
        from firmware.module import NotAModuleError, parse_module

        wanted = []
        for source in sources:
            if source.tinker:  # LibraryError: the library's own words, a refusal
                entry = self.library.tinker(facts.platform, facts.system_version)
                wanted.append((f"{source.label} ({entry.path})", parse_module(self.library.read(entry))))
                continue
            if source.entry is not None:
                try:
                    data = self.library.read(source.entry)
                except LibraryError as exc:
                    raise ValueError(f"{source.label}: {exc}; nothing was written") from None
                wanted.append((source.label, parse_module(data)))
                continue
            path = source.path
            try:
                if path.stat().st_size > MAX_MODULE_BYTES:
                    raise ValueError(f"{path.name} is {path.stat().st_size} bytes, larger than any module; "
                                     "nothing was written. Choose the module file itself")  # fmt: skip
                data = path.read_bytes()
            except OSError as exc:
                raise PlanInputError(f"cannot read {path}: {exc.strerror or exc}. Is the USB stick still plugged "
                                     "in? Nothing was written", reason="unreadable", file=source.label,
                                     error=str(exc.strerror or exc)) from None  # fmt: skip
            try:
                wanted.append((source.label, parse_module(data)))
            except NotAModuleError as exc:
                raise PlanInputError(f"{path.name} is not a Particle module ({exc}). Nothing was written: choose a "
                                     ".bin made for this device", reason="not-a-module", file=source.label,
                                     error=str(exc)) from None  # fmt: skip
        return wanted

    def plan_manual(
        self,
        slot_number: int,
        sources: list[Source],
        transport: Transport,
        *,
        skip_installed: bool = False,
        update: bool = False,
        release: str | None = None,
        backup_run: int | None = None,
    ) -> ManualPlan:
        """Check a manual flash before anything is written: the plan, or every reason it is refused.

        ``skip_installed``: leave out what the device has already (same version and hash), as `kiosk flash`
        does; ``update``: the modules are the library's Device OS ``release`` (None: the newest) for the
        device's platform, as `kiosk update` takes them (``sources`` is then ignored); ``backup_run``: the
        modules are the apps that run kept in the journal, as `kiosk backup restore` takes them: every file
        checked against its SHA-256 first, and the device in the slot must be the one they came from
        (PlanInputError with ``reason`` as ``kiosk.commands.backup_cmd``'s BACKUP_REFUSALS)."""
        from firmware.plan import PlanRefused, plan_flash
        from hw.usb_identity import UsbAccessError
        from kiosk import modes
        from kiosk.executor import ALREADY_ON_DEVICE
        from kiosk.executor import skip_installed as leave_out_installed
        from kiosk.facts import gather_facts

        if not sources and not update and backup_run is None:
            raise ValueError("choose at least one module first")
        bench = self.bench
        slot = bench.slot(slot_number)
        if self._busy.get(slot_number):
            raise SlotBusyError(f"slot {slot_number} is busy with a {self._busy[slot_number]}: wait, or press Stop")
        backups: list[dict[str, Any]] = []
        kept: list[tuple[str, Module]] = []
        if backup_run is not None:  # the journal first, as the command alone: nothing on the bench is asked yet
            backups, kept = self._backups(backup_run)
        with bench.clock.actor():
            try:
                device = modes.identify(slot)
            except (modes.DeviceNotFound, UsbAccessError) as exc:
                raise PlanInputError(str(exc), reason="no-device") from None
            facts = gather_facts(slot, device)
            if facts.mode == "dfu" and facts.system_version is None and not facts.protected:
                from firmware.plan import DeviceFacts
                from kiosk.commands.flash_cmd import _system_version_in_flash

                version = _system_version_in_flash(slot, device)  # what the bootloader would find, read only
                if version is not None:
                    facts = DeviceFacts(facts.platform, version, facts.modules, facts.mode, facts.protected)
        words_update = words_backup = None
        if update:
            sources, words_update = self._update_sources(facts, release)
        if backup_run is not None:
            from kiosk.commands.backup_cmd import BackupRefused, check_device, restoring

            try:
                check_device(backup_run, backups, slot_number, device.device_id)
            except BackupRefused as exc:
                raise PlanInputError(str(exc), reason=exc.reason) from None
            wanted, words_backup = kept, restoring(backup_run, backups)
        else:
            wanted = self._load(sources, facts)
        version = facts.system_version
        from firmware.versions import describe_system_version

        os_words = f"Device OS {describe_system_version(version)}" if version else "Device OS unknown"
        words = f"{facts.platform.display_name} {device.device_id or ''} · {os_words} · {modes_word(device.mode)}"
        about = {"platform": facts.platform.name, "platform_display": facts.platform.display_name,
                 "device_id": device.device_id, "update": words_update, "backup": words_backup}  # fmt: skip
        try:
            plan = plan_flash(facts, wanted, transport)
        except PlanRefused as refused:
            return ManualPlan(slot_number, None, list(refused.refusals), words, refused.suggestion, **about)
        already: list[dict[str, Any]] = []
        if skip_installed:
            plan, skipped = leave_out_installed(plan, facts.modules)
            already = [{**s.to_json(), "why": ALREADY_ON_DEVICE} for s in skipped]
        return ManualPlan(slot_number, plan, [], words, **about, already=already)

    def _backups(self, run_id: int) -> tuple[list[dict[str, Any]], list[tuple[str, Module]]]:
        """The apps run ``run_id`` kept, from the journal, each file checked (kiosk.commands.backup_cmd)."""
        from kiosk.commands.backup_cmd import BackupRefused, kept_modules

        if self.journal is None:
            raise ValueError("this kiosk keeps no journal, so it kept no app to put back")
        try:
            return kept_modules(self.journal, run_id)
        except BackupRefused as exc:
            raise PlanInputError(str(exc), reason=exc.reason) from None

    def _update_sources(self, facts: Any, release: str | None) -> tuple[list[Source], dict[str, Any]]:
        """The library's Device OS ``release`` for the device, as sources (the encrypted parts left out: the
        device installs them itself), and what `kiosk update` says of it."""
        bundle = self.library.bundle(facts.platform, release)  # LibraryError: its words, a refusal
        sources, skipped = [], []
        for entry in bundle.entries:
            if entry.encrypted:
                skipped.append(f"{entry.name}: encrypted; the device installs it itself")
                continue
            sources.append(Source(entry.path, entry=entry))
        return sources, {"device_os": bundle.release, "skipped": skipped, "lacks": list(bundle.lacks)}

    def start_flash(self, slot_number: int, plan: FlashPlan, device_id: str | None = None, *,
                    command: str | None = None) -> int | None:  # fmt: skip
        """Begin writing a checked plan in a thread of its own; the journal's run id (None: no journal).
        ``command``: the CLI command that asked ("flash", "update"), kept in the journal as it keeps it alone."""
        return self._begin_flash(slot_number, plan, device_id, background=True, command=command)

    def flash(self, slot_number: int, plan: FlashPlan, device_id: str | None = None) -> None:
        """Write a checked plan (in this thread, as a clock actor); events show on the slot's card, and the
        journal keeps it as a run of its own (kind "manual flash"), each step written before and after."""
        self._begin_flash(slot_number, plan, device_id, background=False)

    def _begin_flash(self, slot_number: int, plan: FlashPlan, device_id: str | None, *, background: bool,
                     command: str | None = None) -> int | None:  # fmt: skip
        bench = self.bench
        lock = self._slot_lock(slot_number)
        with lock:
            self._check_free(slot_number, "")
            self._busy[slot_number] = "manual flash"
            cancel = bench.clock.event()
            self._cancels[slot_number] = cancel
        journal = self.journal
        slot = bench.slot(slot_number)
        try:
            run_id = journal.start_run(slot_number, device_id, plan.device.platform.name, slot.scenario,
                                       kind="manual flash") if journal is not None else None  # fmt: skip
            if run_id is not None and command:
                journal.observe(run_id, "command", {"command": command})
        except Exception:
            with lock:
                self._busy.pop(slot_number, None)
                self._cancels.pop(slot_number, None)
            raise
        self.post(SlotBusy(slot_number, "manual flash", run_id))
        if not background:
            self._write(slot_number, plan, device_id, run_id, cancel)
            return run_id
        with lock:
            worker = threading.Thread(target=self._write, args=(slot_number, plan, device_id, run_id, cancel),
                                      name=f"flash-slot-{slot_number}", daemon=True)  # fmt: skip
            self._workers[slot_number] = worker
            worker.start()
        return run_id

    def _write(self, slot_number: int, plan: FlashPlan, device_id: str | None, run_id: int | None, cancel) -> None:
        from kiosk.backup import BackupKeeper
        from kiosk.events import StepFinished, StepStarted
        from kiosk.executor import FlashExecutor

        bench = self.bench
        journal = self.journal
        slot = bench.slot(slot_number)
        lock = self._slot_locks[slot_number]
        steps: dict[int, int] = {}

        def journal_step(event) -> None:  # in this worker: the executor publishes as it goes
            if event.slot != slot_number or run_id is None:
                return
            if isinstance(event, StepStarted):
                steps[event.index] = journal.begin_step(run_id, "manual-flash", f"write {Path(event.name).name} "
                                                        f"by {event.mechanism}, {event.size} bytes")  # fmt: skip
            elif isinstance(event, StepFinished) and event.index in steps:
                journal.end_step(steps.pop(event.index), event.outcome, event.detail, event.figures)

        unsubscribe = self.bus.subscribe(journal_step)
        verdict, detail, report = "flash-failed", "", None
        try:
            # the customer's app is read back and kept (beside the journal) before anything is written over it
            keep = (
                BackupKeeper(journal, run_id, cancel=cancel).callback(device_id, plan.device.platform)
                if journal is not None and run_id is not None
                else None
            )
            with bench.clock.actor():
                report = FlashExecutor(slot, plan, self.bus, cancel, on_user_part_overwrite=keep).run()
            detail = flash_words(report)
            verdict = "stopped" if cancel.is_set() else ("flashed" if report.ok else "flash-failed")
        except Exception as exc:  # the UI must hear of it, whatever it was
            verdict, detail = "flash-failed", f"the flash failed: {type(exc).__name__}: {exc}"
        finally:
            unsubscribe()
            if run_id is not None:
                with contextlib.suppress(Exception):  # the journal's own trouble must not hide the verdict
                    journal.finish_run(run_id, verdict, None, detail, report.elapsed_s if report else None, None,
                                       "stopped" if verdict == "stopped" else "finished",
                                       usb_errors=report.usb_errors if report else 0)  # fmt: skip
            if run_id is not None:  # kept before SlotIdle: a client that hears the end may ask for it at once
                self._keep_flash_result(slot_number, plan, run_id, verdict, detail, report)
            with lock:
                self._busy.pop(slot_number, None)
                self._cancels.pop(slot_number, None)
                self._workers.pop(slot_number, None)
            self.post(SlotIdle(slot_number, verdict, detail, run_id))

    def _keep_flash_result(self, slot_number: int, plan: FlashPlan, run_id: int, verdict: str, detail: str,
                           report: ExecutionReport | None) -> None:  # fmt: skip
        backups: list[dict[str, Any]] = []
        with contextlib.suppress(Exception):
            backups = self.journal.backups(run_id)
        document = {"slot": slot_number, "run_id": run_id, "platform": plan.device.platform.name, "verdict": verdict,
                    "verdict_detail": detail, "plan": plan.to_json(), "backups": backups}  # fmt: skip
        document.update(report.to_json() if report is not None else {"ok": False, "detail": detail})
        with self._results_lock:
            self._flash_results[run_id] = document
            while len(self._flash_results) > RESULTS_KEPT:
                del self._flash_results[next(iter(self._flash_results))]


#: How each mechanism's write was verified, in the words of the result line.
VERIFIED_BY = {  # by FlashStep.mechanism (firmware.plan.Mechanism values)
    "dfu": "written over DFU and read back",
    "dfu-ota": "written over DFU into the OTA region and reported by the device once Device OS applied it",
    "control-request": "sent by control request and reported by the device once applied",
    "ymodem": "sent over YModem and reported by the device once applied",
}


def flash_words(report: ExecutionReport) -> str:
    """What a manual flash did, module by module: how each was written and verified, or where it failed."""
    from kiosk.advice import cable_words
    from kiosk.service.slots import kib

    done = [f"{Path(s.name).name} ({kib(s.bytes)} KiB) {VERIFIED_BY.get(s.mechanism, s.mechanism)}"
            for s in report.steps if s.outcome == "written"]  # fmt: skip
    written = "; ".join(done)
    kept = [s.detail for s in report.steps if s.outcome == "written" and s.detail]  # the app's backup, or none
    if kept:
        written += f" ({'; '.join(kept)})"
    cable = f"; {cable_words(report.usb_errors)}" if report.usb_errors else ""
    if report.ok:
        return f"{written}. The device runs{cable}."
    before = f" Written before that: {written}." if done else " Nothing was written."
    return f"{report.detail}.{before}{cable}"


def modes_word(mode: str | None) -> str:
    return {"normal": "running", "dfu": "in DFU mode", "listening": "listening"}.get(mode or "", "not on USB")


def _release_freed_memory() -> None:
    """Give the heap that opening the bench and its library freed back to the system (glibc's malloc_trim).

    Opening them passes a peak (service_bench: ~90 MiB, its simulated bench and a demo library made and read) that
    glibc keeps as free heap for reuse, so the service, which runs for months, sat at 68-72 MiB instead of 53-56.
    On a C library without malloc_trim this does nothing, which costs only memory.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
