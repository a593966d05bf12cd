"""Running a flash plan on a slot: mode switches, writes, verification, retries, and honest figures.

For each step of a ``firmware.plan.FlashPlan`` the executor brings the device into the mode the step
needs (control request first, then the buttons, then the 14400-baud trick for DFU), writes the module
by the step's mechanism, and verifies it: DFU reads back what it wrote; a control-request or YModem
update is confirmed by the module table once the device has applied it and restarted. A module for the
OTA region (``Mechanism.DFU_OTA``: bootloader, prebootloader, NCP) is written over DFU with the pending-update
flag, the device leaves DFU, Device OS applies it at boot and restarts, and the module table (control request
90) must then report it: one such module per pass. A device that drops out mid-step is found again, put
back in the mode, and the step is repeated (bounded). The run ends with the device running (DFU leave,
or the reset the update does). Everything it does goes out as events on a bus. Times are device seconds
on the slot's clock.

Two seams: ``on_applying`` is called (and ``applying`` set) at the one moment the kiosk knows the device is
applying a module and for how long (a guard must keep power cuts, RESET and DFU leave away until then);
``on_user_part_overwrite`` is called just before a DFU write over a user part (a backup of the app goes there).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from firmware.module import Module
from firmware.plan import FlashPlan, FlashStep, InstalledModule, Mechanism
from firmware.platforms import PENDING_UPDATE, Function, Storage
from hw.clock import Cancelled, ClockEvent
from hw.control import ControlChannel, ControlError, ControlFailure, ModuleInfo, Result, module_info_hash
from hw.device_timing import DFU_ENUMERATE_S, DFU_LEAVE_S, SWITCH_S, YMODEM_APPLY_DELAY_S, boot_s
from hw.dfu import DfuDevice, DfuDisconnected, DfuError, DfuProtected, FlashOp
from hw.flash_timing import device_busy_s, dfu_work_s, memory_kind, timing_for, write_busy_s
from hw.hazard import HazardRefused
from hw.serial_console import SerialError, find_port, trigger_dfu
from hw.usb_identity import ParticleUsbDevice
from hw.ymodem import YModemError, send_ymodem
from kiosk import modes
from kiosk.backup import BackupError
from kiosk.bench import Slot
from kiosk.events import EventBus, ModeSwitch, PlanFinished, PlanStarted, Progress, Retry, StepFinished, StepStarted

#: Control-request results that say the transfer failed, not that the device refused: worth another try.
TRANSIENT_RESULTS = frozenset({Result.IO_ERROR, Result.PROTOCOL_ERROR, Result.BUSY, Result.TIMEOUT, Result.ABORTED})
MAX_ATTEMPTS = 4  # one write and up to three re-entries after the device dropped out
APPLY_TIMEOUT_S = 240.0  # a control-request or YModem update: apply and restart (NCP firmware is slow)
BOOT_TIMEOUT_S = 15.0
BAUD_TRICK_WINDOW_S = 40.0  # long enough for a crash loop's SOS (up to 27 s) and the reboot
#: Gen2 on Device OS below 2.0.0 acknowledges the DFU request and may not obey it (usb-serial-protocols.md,
#: "Put the device in DFU mode and try again"): the 14400-baud trick and the buttons go first.
UNRELIABLE_DFU_REQUEST_BELOW = 2000  # system module version of 2.0.0 is 2008: anything below 2000 is 1.x
OLD_GEN2_TRICK_WINDOW_S = 2.0  # a running Device OS hears the trick at once; a crashing one gets the buttons


#: Beyond the device's own times (leave, two boots, the apply), how long to wait for an OTA module to show in
#: the module table before saying it was not applied: a host's USB enumeration and a slow NCP (UNVERIFIED).
OTA_APPLY_MARGIN_S = 15.0


@dataclass(frozen=True)
class Applying:
    """The device is applying ``module`` (no power cut, RESET or DFU leave now): it began at ``since`` (device
    seconds) and takes ``expected_s`` by the device's own timings; ``deadline`` is when the kiosk gives up."""

    module: Module
    mechanism: str
    since: float
    expected_s: float
    deadline: float


class StepFailed(Exception):
    """A step that cannot complete; ``retry`` says whether finding the device again may help."""

    def __init__(self, message: str, *, retry: bool = False):
        super().__init__(message)
        self.retry = retry


@dataclass
class StepReport:
    """One step's outcome and figures (device seconds, host CPU seconds, USB control transfers)."""

    index: int
    name: str
    function: str | None
    mechanism: str
    bytes: int
    outcome: str = "pending"
    detail: str = ""
    attempts: int = 0
    usb_transfers: int = 0
    host_cpu_s: float = 0.0
    device_busy_s: float = 0.0
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


@dataclass
class ExecutionReport:
    ok: bool
    steps: list[StepReport] = field(default_factory=list)
    detail: str = ""
    elapsed_s: float = 0.0
    final_mode: str | None = None
    #: device seconds the device's own timings demanded on the path taken: flash time of every attempt
    #: (as far as it got), every mode switch and restart (hw.device_timing, hw.flash_timing)
    device_demanded_s: float = 0.0
    protected: bool = False  # the device refused a write because Device Protection is on
    #: USB transfers that failed on the wire (I/O errors) and were retried: a cable or hub to check
    usb_errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "detail": self.detail,
            "final_usb_mode": self.final_mode,
            "elapsed_s": round(self.elapsed_s, 4),
            "steps": [s.to_json() for s in self.steps],
            "figures": {
                "usb_transfers": sum(s.usb_transfers for s in self.steps),
                "host_cpu_s": round(sum(s.host_cpu_s for s in self.steps), 4),
                "device_busy_s": round(sum(s.device_busy_s for s in self.steps), 4),
                "device_demanded_s": round(self.device_demanded_s, 4),
                "usb_errors": self.usb_errors,
                "elapsed_s": round(self.elapsed_s, 4),
            },
        }


ALREADY_ON_DEVICE = "already on the device (same version and hash)"


def skip_installed(plan: FlashPlan, installed: Sequence[InstalledModule] | None) -> tuple[FlashPlan, list[FlashStep]]:
    """The plan without the modules the device already has (``DeviceFacts.modules``), as Device Restore skips
    them: same function, index and version, and the same hash (Device OS 5.6.0 and later report it, and
    kiosk.facts keeps it only when every check passed; without one nothing is skipped). A generated step (the
    former user part's invalidation) goes when no user part is left to write. Returns the plan to run and the
    steps left out."""
    if not installed:
        return plan, []
    have = {(i.function, i.index, i.version): i.hash for i in installed if i.hash}
    skipped = [s for s in plan.steps if s.module is not None and have.get(_key(s.module)) == module_info_hash(s.module)]
    if not skipped:
        return plan, []
    gone = {id(s) for s in skipped}
    kept = [s for s in plan.steps if id(s) not in gone]
    if not any(s.module is not None and s.module.function == Function.USER_PART for s in kept):
        kept = [s for s in kept if s.module is not None]
    return replace(plan, steps=tuple(kept)), skipped


def _key(m: Module) -> tuple[int, int, int]:
    return (m.function, m.index, m.version)


def _reported(infos: Sequence[ModuleInfo], m: Module) -> bool:
    """Whether a module table (control request 90) has ``m`` at its version and intact."""
    return any((i.function, i.index, i.version) == _key(m) and "integrity" not in i.failed for i in infos)


class FlashExecutor:
    """Runs one plan on one slot. ``cancel`` (a clock event) stops it between and inside waits."""

    def __init__(
        self,
        slot: Slot,
        plan: FlashPlan,
        bus: EventBus | None = None,
        cancel: ClockEvent | None = None,
        *,
        on_applying: Callable[[Applying | None], None] | None = None,
        on_user_part_overwrite: Callable[[FlashStep, DfuDevice], str | None] | None = None,
    ):
        self.slot = slot
        self.on_applying = on_applying
        self.on_user_part_overwrite = on_user_part_overwrite
        self.applying: Applying | None = None  # set while the device applies an update (see on_applying)
        self.plan = plan
        self.bus = bus or EventBus()
        self.cancel = cancel
        self.clock = slot.clock
        self._dfu: DfuDevice | None = None  # open while consecutive DFU steps run
        self._demanded = 0.0  # device seconds demanded so far (ExecutionReport.device_demanded_s)
        self._dfu_request_ignored = False
        self._protected = False
        self._dfu_work: list[FlashOp] = []  # this attempt's DFU erases and writes (hw.dfu.DfuStats.flash_ops)
        self._blank: dict[tuple[int, int], int] = {}  # sectors this run erased and has not written since
        self._usb_errors = 0  # I/O errors on the wire, over every DFU session and control channel
        self._boot_s = boot_s(plan.device.platform)
        self._notes: list[str] = []  # what the seams said during the current step (a backup taken, no app)

    def run(self) -> ExecutionReport:
        started = self.clock.now()
        report = ExecutionReport(ok=False)
        self.bus.publish(PlanStarted(self.slot.index, len(self.plan.steps), self.plan.transport.value))
        try:
            for index, step in enumerate(self.plan.steps):
                step_report = self._run_step(index, step)
                report.steps.append(step_report)
                if step_report.outcome != "written":
                    report.detail = f"step {index + 1} ({step.name}) failed: {step_report.detail}"
                    return self._finish(report, started, "failed")
            report.final_mode = self._end_running()
            report.ok = report.final_mode == "normal"
            if not report.ok:
                report.detail = f"every module was written, but the device ended in {report.final_mode or 'no mode'}"
            else:
                missing = self._not_reported()
                if missing:
                    report.ok = False
                    report.detail = (
                        "every module was written and verified, but after the restart the device does not report "
                        + ", ".join(missing)
                    )
            return self._finish(report, started, "done" if report.ok else "failed")
        except Cancelled:
            report.detail = "stopped by the technician; buttons released"
            return self._finish(report, started, "stopped")
        finally:
            self.slot.buttons.release_all()

    def _finish(self, report: ExecutionReport, started: float, outcome: str) -> ExecutionReport:
        report.device_demanded_s = self._demanded
        report.protected = self._protected
        report.usb_errors = self._usb_errors
        report.elapsed_s = self.clock.now() - started
        self.bus.publish(PlanFinished(self.slot.index, outcome, report.detail))
        return report

    # -- one step --------------------------------------------------------------------------------
    def _run_step(self, index: int, step: FlashStep) -> StepReport:
        m = step.module
        report = StepReport(index, step.name, m.function_name if m else None, step.mechanism.value, len(step.payload))
        self.bus.publish(
            StepStarted(
                self.slot.index, index, len(self.plan.steps), step.name, step.mechanism.value, len(step.payload)
            )
        )
        started, cpu = self.clock.now(), time.process_time()
        platform = self.plan.device.platform
        if step.mechanism is Mechanism.DFU_OTA:  # the write into the OTA region, then Device OS applies it
            report.device_busy_s = write_busy_s(platform, step.address, len(step.payload), step.alt_setting or 0)
            report.device_busy_s += self._apply_s(step)
        else:
            report.device_busy_s = device_busy_s(
                platform,
                step.mechanism.value,
                len(step.payload),
                step.address if step.address is not None else (m.start_address if m else None),
                m.function_name if m else None,
            )
        self._notes = []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            report.attempts = attempt
            self._dfu_work = []
            try:
                device = self._ensure_mode(index, step.device_mode)
                report.usb_transfers += self._perform(index, step, device)
                report.outcome = "written"
                break
            except StepFailed as exc:
                self._dfu = None
                report.detail = str(exc)
                if not exc.retry or attempt == MAX_ATTEMPTS:
                    report.outcome = "failed"
                    break
                self.bus.publish(Retry(self.slot.index, index, attempt, str(exc)))
            finally:
                self._demanded += self._attempt_s(step, report)
        if self._notes:  # a backup taken before the write (or no app to take) belongs in the step's record
            report.detail = "; ".join([*([report.detail] if report.detail else []), *self._notes])
        report.elapsed_s = self.clock.now() - started
        report.host_cpu_s = time.process_time() - cpu
        figures = {"elapsed_s": report.elapsed_s, "device_busy_s": report.device_busy_s}
        self.bus.publish(StepFinished(self.slot.index, index, step.name, report.outcome, report.detail, figures))
        return report

    def _perform(self, index: int, step: FlashStep, device: ParticleUsbDevice) -> int:
        progress = self._progress(index)
        if step.mechanism is Mechanism.DFU:
            return self._write_dfu(step, device, progress)
        if step.mechanism is Mechanism.DFU_OTA:
            return self._write_ota(step, device, progress)
        self._dfu = None
        if step.mechanism is Mechanism.CONTROL:
            return self._update_by_control(step, device, progress)
        return self._update_by_ymodem(step, device, progress)

    def _progress(self, index: int) -> Callable[..., None]:
        def report(done: int, total: int, phase: str = "write") -> None:
            self.bus.publish(Progress(self.slot.index, index, done, total, phase))

        return report

    def _attempt_s(self, step: FlashStep, report: StepReport) -> float:
        """Device seconds one attempt made the device spend on flash: for DFU, every erase and block it
        was given (retries included); otherwise the step's flash time once the device took the module."""
        if step.mechanism in (Mechanism.DFU, Mechanism.DFU_OTA):  # the apply is counted where it is waited for
            return dfu_work_s(self.plan.device.platform, self._dfu_work, self._blank)
        return report.device_busy_s if report.outcome == "written" else 0.0

    # -- DFU -------------------------------------------------------------------------------------
    def _session(self, device: ParticleUsbDevice) -> DfuDevice:
        if self._dfu is None:
            self._dfu = DfuDevice(device.usb_device, self.clock)
            self._dfu.open()
        return self._dfu

    def _write_dfu(self, step: FlashStep, device: ParticleUsbDevice, progress: Callable[..., None]) -> int:
        try:
            dfu = self._session(device)
            before, ops = dfu.transfers, len(dfu.stats.flash_ops)
            errors = dfu.stats.io_errors
            if self.on_user_part_overwrite is not None and self._overwrites_user_part(step):
                try:  # the seam for a backup of the app about to go; its words go into the step's detail
                    note = self.on_user_part_overwrite(step, dfu)
                except BackupError as exc:  # the app could not be kept: it is not written over
                    raise StepFailed(str(exc)) from None
                if note:
                    self._notes.append(note)
            try:
                dfu.write(step.address, step.payload, alt=step.alt_setting or 0, verify=True, progress=progress,
                          cancel=self.cancel)  # fmt: skip
            finally:
                self._dfu_work += dfu.stats.flash_ops[ops:]
                self._usb_errors += dfu.stats.io_errors - errors
            return dfu.transfers - before
        except DfuProtected as exc:
            self._protected = True
            raise StepFailed(f"the device is protected: {exc}") from None
        except DfuDisconnected as exc:
            raise StepFailed(f"the device left DFU mode during the write ({exc})", retry=True) from None
        except DfuError as exc:
            raise StepFailed(f"DFU error: {exc}", retry=True) from None

    def _overwrites_user_part(self, step: FlashStep) -> bool:
        """Whether a DFU step writes over a user part's place (Tinker, or the former slot's invalidation)."""
        if step.address is None or (step.alt_setting or 0) != 0:
            return False
        end = step.address + len(step.payload)
        return any(s.function == Function.USER_PART and s.storage is Storage.INTERNAL and s.start < end
                   and step.address < s.end for s in self.plan.device.platform.layout)  # fmt: skip

    # -- the OTA region (bootloader, prebootloader, NCP over DFU) ---------------------------------------
    def _write_ota(self, step: FlashStep, device: ParticleUsbDevice, progress: Callable[..., None]) -> int:
        """The module into the OTA region, the pending-update flag into the DCT (both read back), the leave;
        then Device OS applies it at boot and restarts, and its module table must report it."""
        assert step.pending_flag is not None and step.address is not None
        flag_alt, flag_address, flag = step.pending_flag
        self._learn_blank(device, step.alt_setting or 0, step.address, len(step.payload))
        transfers = self._write_dfu(step, device, progress)
        transfers += self._write_dfu(replace(step, address=flag_address, alt_setting=flag_alt, payload=flag),
                                     device, lambda *_: None)  # fmt: skip
        # priced now: the leave forgets which sectors were blank
        self._demanded += dfu_work_s(self.plan.device.platform, self._dfu_work, self._blank)
        self._dfu_work = []
        self._leave_dfu()
        self._await_applied(step, device)
        return transfers

    def _learn_blank(self, device: ParticleUsbDevice, alt: int, address: int, size: int) -> None:
        """Where erasing a blank sector is only a read-check (rtl872x exflash_hal), read the OTA region's sectors
        first, so the figures price the erases the device really does (the region is often blank)."""
        platform = self.plan.device.platform
        memory = platform.memory_map(alt)
        timing = timing_for(platform, memory_kind(memory)) if memory is not None else None
        if memory is None or timing is None or not timing.skip_blank_erase:
            return
        sectors = memory.sectors_touching(address, size)
        if not sectors:
            return
        with contextlib.suppress(DfuError):  # only the figures depend on it; the write says what is wrong
            start = sectors[0].start
            data = self._session(device).read(start, sectors[-1].end - start, alt, cancel=self.cancel)
            for sector in sectors:
                chunk = data[sector.start - start : sector.end - start]
                if chunk.count(0xFF) == len(chunk):
                    self._blank[(alt, sector.start)] = sector.end

    def _apply_s(self, step: FlashStep) -> float:
        """Device seconds Device OS needs to apply the module (the kiosk's own timing table), then its 100 ms."""
        m = step.module
        assert m is not None
        busy = device_busy_s(self.plan.device.platform, "control-request", m.size, m.start_address, m.function_name)
        return busy + PENDING_UPDATE.reset_delay_s

    def _device_applying(self, applying: Applying | None, *, applied: bool = False) -> None:
        """The device is applying ``applying.module`` now (None: it is done, or it is over). The slot's hazard
        guard refuses a power cut, RESET or DFU leave until the deadline, or until it was seen ``applied``: a
        wait that failed or was stopped ends here, and the device goes on applying all the same."""
        guard = self.slot.buttons.guard
        if applying is not None:
            m = applying.module
            guard.device_applying(f"{m.function_name} {m.index} v{m.version}", applying.deadline - self.clock.now())
        elif applied:
            guard.device_applied()
        self.applying = applying
        if self.on_applying is not None:
            self.on_applying(applying)

    def _await_applied(self, step: FlashStep, before: ParticleUsbDevice) -> None:
        """After the leave: the bootloader resets, Device OS boots and applies the module, resets, boots again.
        Done when the module table reports the module intact at its version."""
        m = step.module
        assert m is not None
        expected = DFU_LEAVE_S + self._boot_s + self._apply_s(step) + self._boot_s
        now = self.clock.now()
        deadline = now + expected + OTA_APPLY_MARGIN_S
        self._device_applying(Applying(m, step.mechanism.value, now, expected, deadline))
        try:
            last: tuple | None = before.address
            while True:
                left = deadline - self.clock.now()
                back = modes.wait_for_device(self.slot, max(0.0, left), None, self.cancel, not_address=last)
                if back is None:
                    raise StepFailed(f"the device did not come back in {expected + OTA_APPLY_MARGIN_S:.0f} s after "
                                     f"the DFU leave, so {m.function_name} {m.index} v{m.version} was not seen applied")
                if back.mode == "dfu":
                    self._device_applying(None, applied=True)  # in its bootloader: nothing is being applied
                    raise StepFailed(
                        f"the device went back into DFU mode after the leave: its Device OS does not run, so nothing "
                        f"applied the {m.function_name} from the OTA region; write a system part it can run first "
                        "(kiosk update)"
                    )
                if self._reports(back, m):
                    self._demanded += expected
                    self._device_applying(None, applied=True)
                    return
                if self.clock.now() >= deadline:
                    raise StepFailed(f"Device OS runs but did not apply {m.function_name} {m.index} v{m.version} "
                                     "from the OTA region (its module table does not report it)")  # fmt: skip
                last = back.address  # it may still be about to restart with it: wait for the next enumeration
        finally:
            self._device_applying(None)

    def _reports(self, device: ParticleUsbDevice, m: Module) -> bool:
        """Whether the device's module table (control request 90) reports ``m`` intact at its version."""
        try:
            infos = ControlChannel(device.usb_device, self.clock, device.platform.quirks).module_info(timeout_s=5.0)
        except ControlFailure:
            return False
        return _reported(infos, m)

    def _leave_dfu(self, device: ParticleUsbDevice | None = None) -> None:
        """Leave DFU (the zero-length DNLOAD) with the open session, or a new one on ``device``."""
        self.slot.buttons.guard.check_not_applying("leaving DFU")
        dfu, self._dfu = self._dfu, None
        self._blank.clear()  # Device OS runs next and may write flash: what this run left blank is unknown again
        if dfu is None and device is not None and device.mode == "dfu":
            dfu = DfuDevice(device.usb_device, self.clock)
            with contextlib.suppress(DfuError, DfuDisconnected):
                dfu.open()
        if dfu is None:
            return
        with contextlib.suppress(DfuError, DfuDisconnected):
            dfu.leave()  # the device resets during the leave; the data was already verified

    # -- control request / YModem updates ---------------------------------------------------------
    def _update_by_control(self, step: FlashStep, device: ParticleUsbDevice, progress: Callable[..., None]) -> int:
        channel = ControlChannel(device.usb_device, self.clock, device.platform.quirks)
        try:
            requests = channel.update_firmware(step.payload, progress=lambda d, t: progress(d, t, "send"),
                                               cancel=self.cancel)  # fmt: skip
        except ControlError as exc:
            if exc.result in TRANSIENT_RESULTS:
                raise StepFailed(f"control request failed on the wire: {exc}", retry=True) from None
            raise StepFailed(f"the device refused the update: {exc}", retry=False) from None
        except ControlFailure as exc:
            raise StepFailed(f"control request failed: {exc}", retry=True) from None
        finally:
            self._usb_errors += channel.io_errors
        self._confirm_applied(step, device)
        return requests * 4  # INIT + SEND + CHECK + RECV per request at the least

    def _update_by_ymodem(self, step: FlashStep, device: ParticleUsbDevice, progress: Callable[..., None]) -> int:
        port = find_port(device.device_id or "", self.slot.serial_lister)
        if port is None:
            raise StepFailed("the device's serial port was not found", retry=True)
        try:
            send_ymodem(port, step.payload, "binary", self.clock, handshake="particle",
                        progress=lambda d, t: progress(d, t, "send"), cancel=self.cancel)  # fmt: skip
        except YModemError as exc:
            raise StepFailed(f"YModem: {exc}", retry=False) from None
        except SerialError as exc:
            raise StepFailed(f"serial: {exc}", retry=True) from None
        self._demanded += YMODEM_APPLY_DELAY_S
        self._confirm_applied(step, device)
        return 0

    def _confirm_applied(self, step: FlashStep, before: ParticleUsbDevice) -> None:
        """The device applies the module and restarts: wait for it, then read its module table. Until it is
        back (or the time an apply may take has passed) the hazard guard keeps power cuts and RESET away."""
        m = step.module
        if m is not None:
            now = self.clock.now()
            expected = self._apply_s(step) + self._boot_s
            # the guard holds for what the apply may take (UNVERIFIED: flash time and a boot, with margin); the
            # wait below allows longer, for a device that is slow to come back
            self._device_applying(Applying(m, step.mechanism.value, now, expected, now + expected + OTA_APPLY_MARGIN_S))
        try:
            back = modes.wait_for_device(self.slot, APPLY_TIMEOUT_S, "normal", self.cancel,
                                         not_address=before.address)  # fmt: skip
            if back is None:
                raise StepFailed("the device did not come back after applying the update")
            self._demanded += self._boot_s  # it applied the module, restarted and booted
            try:
                modules = ControlChannel(back.usb_device, self.clock, back.platform.quirks).module_info()
            except ControlFailure:
                self._device_applying(None, applied=True)  # it runs again: whatever it applied, it is over
                return  # old firmware without module info: the device's own validation answered already
            if m is not None and not _reported(modules, m):
                raise StepFailed(f"after the update the device does not report {m.function_name} {m.index} "
                                 f"v{m.version}")  # fmt: skip
            self._device_applying(None, applied=True)
        finally:
            if self.applying is not None:
                self._device_applying(None)

    # -- modes -------------------------------------------------------------------------------------
    def _ensure_mode(self, index: int, wanted: str) -> ParticleUsbDevice:
        looked = self.clock.now()
        device = modes.wait_for_device(self.slot, modes.FIND_TIMEOUT_S, None, self.cancel)
        if device is not None:  # a device restarting (it dropped out, or applied an update) takes its time
            self._demanded += min(self.clock.now() - looked, self._boot_s + DFU_ENUMERATE_S)
        if device is not None and device.mode == wanted == "dfu":
            return device
        if wanted != "dfu" and device is not None and device.mode == "dfu":
            self._leave_dfu(device)
            # the bootloader resets 500 ms after the leave; Device OS then needs its boot time
            modes.wait_for_device(self.slot, BOOT_TIMEOUT_S, "normal", self.cancel)
            self._demanded += DFU_LEAVE_S + self._boot_s
        via = None
        try:
            if wanted == "dfu" and self._dfu_request_unreliable():
                via = self._baud_trick(OLD_GEN2_TRICK_WINDOW_S)
                if via is None:
                    result = modes.enter_dfu(self.slot, self.cancel, ask=False)
                    via = result.via if result.ok else None
            elif wanted == "dfu":
                result = modes.enter_dfu(self.slot, self.cancel)
                via = result.via
                if any(a.outcome == modes.DFU_REQUEST_IGNORED for a in result.attempts):
                    self._dfu_request_ignored = True  # this firmware acknowledges and does not obey: not again
                    self._demanded += SWITCH_S[("dfu", "control-request")]  # the reset it promised, waited for
                if not result.ok:
                    via = self._baud_trick()
            elif wanted == "listening":
                result = modes.enter_listening(self.slot, self.cancel)
                via = result.via if result.ok else None
            else:
                device = modes.wait_for_device(self.slot, BOOT_TIMEOUT_S, "normal", self.cancel)
                via = "already" if device is not None else None
        except (modes.DeviceNotFound, HazardRefused) as exc:
            raise StepFailed(str(exc), retry=isinstance(exc, modes.DeviceNotFound)) from None
        usb_mode = "dfu" if wanted == "dfu" else "normal"
        device = modes.wait_for_device(self.slot, modes.FIND_TIMEOUT_S, usb_mode, self.cancel) if via else None
        self.bus.publish(ModeSwitch(self.slot.index, index, wanted, wanted if device else None, via))
        if device is None:
            raise StepFailed(f"could not bring the device into {wanted} mode", retry=True)
        self._demanded += SWITCH_S.get((wanted, via or ""), 0.0)
        return device

    def _dfu_request_unreliable(self) -> bool:
        if self._dfu_request_ignored:
            return True
        facts = self.plan.device
        version = facts.system_version
        return facts.platform.generation == 2 and version is not None and version < UNRELIABLE_DFU_REQUEST_BELOW

    def _baud_trick(self, window_s: float = BAUD_TRICK_WINDOW_S) -> str | None:
        """Open the serial port at 14400 baud: Device OS resets into DFU (the last resort).

        Only a running Device OS hears it (not one showing an SOS, when USB is dead), so it is tried
        again as a crash-looping device comes back, for up to ``BAUD_TRICK_WINDOW_S``.
        """
        deadline = self.clock.now() + window_s
        while self.clock.now() < deadline:
            device = modes.wait_for_device(self.slot, max(0.0, deadline - self.clock.now()), "normal", self.cancel)
            if device is None or device.device_id is None:
                return None
            port = find_port(device.device_id, self.slot.serial_lister)
            if port is not None:
                with contextlib.suppress(SerialError):
                    trigger_dfu(port, clock=self.clock, cancel=self.cancel)
                if modes.wait_for_device(self.slot, 2.0, "dfu", self.cancel) is not None:
                    return "14400-baud"
            # not heard (the app crashed, or the port is not there yet): wait for the next boot
            modes.wait_for_device(self.slot, max(0.0, deadline - self.clock.now()), None, self.cancel,
                                  not_address=device.address)  # fmt: skip
        return None

    def _not_reported(self) -> list[str]:
        """Modules this plan wrote that the running device does not report as present and intact.
        (Empty when the device does not answer module info: old firmware; nothing to compare with.)"""
        device = modes.wait_for_device(self.slot, 2.0, "normal", self.cancel)
        if device is None:
            return []
        try:
            infos = ControlChannel(device.usb_device, self.clock, device.platform.quirks).module_info(timeout_s=5.0)
        except ControlFailure:
            return []
        wanted = [s.module for s in self.plan.steps if s.module is not None]
        return [f"{m.function_name} {m.index} v{m.version}" for m in wanted if not _reported(infos, m)]

    def _end_running(self) -> str | None:
        """Leave DFU if the last step left the device there, and wait for it to run."""
        device = modes.wait_for_device(self.slot, BOOT_TIMEOUT_S, None, self.cancel)
        if device is None or device.mode != "dfu":
            return device.mode if device else None
        self._leave_dfu(device)
        self._demanded += DFU_LEAVE_S + self._boot_s
        if modes.wait_for_device(self.slot, BOOT_TIMEOUT_S, "normal", self.cancel) is not None:
            return "normal"
        # the bootloader stays in DFU when the system firmware is still not valid
        return "dfu" if modes.wait_for_device(self.slot, 1.0, "dfu", self.cancel) else None
