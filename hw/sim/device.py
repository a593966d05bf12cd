"""A simulated Particle device, modelled over device time on the simulator's clock.

It reacts to its RESET, MODE, VBUS and EN lines and to USB control requests the way Device OS and the
bootloader do (../shared/reference/led-buttons-restore.md, timing-model.md, usb-serial-protocols.md):

- power and brown-out (a LiPo keeps it alive without VBUS; EN pulled low powers it down);
- the bootloader's MODE timeline after RESET: magenta at 1 s, yellow at 3 s, factory restore past 6.5 s,
  settings wipe past 10 s (both recorded as hazards; the kiosk's guard must never let them happen);
- module validation at boot as the device's own bootloader and Device OS do it (data in
  ``firmware.platforms``: ``BOOTLOADERS`` for where the bootloader of each version looks for the system
  firmware and whether it checks the CRC, ``BOOT_VALIDATION`` for what Device OS checks before it runs
  the app): no system firmware the bootloader accepts -> DFU; a module Device OS checks fails, or the
  app's dependencies are unmet -> safe mode; no bootloader -> no LED, no USB. So a Gen3/Gen4 device
  with a damaged system part sits in DFU, while a Gen2 bootloader checks the header only and starts it
  (a damaged system-part1 then runs: nothing checks its CRC at boot; a damaged system-part2 means safe
  mode); a monolithic image whose header the bootloader accepts simply runs;
- the LED with real timings (``hw.sim.led_timeline``), including SOS followed by a reboot;
- runtime MODE: listening mode after 3 s, credential wipe at 10 s, double click = soft power off;
- the pending update: when Device OS starts (safe mode too) and the DCT flag says 0xA5, it clears the flag,
  takes the module from its OTA region (``firmware.platforms.OTA_REGIONS``, by the running version), checks
  it, applies it, waits 100 ms and resets (device-os system/src/main.cpp app_setup_and_loop and
  HAL_FLASH_ApplyPendingUpdate, v6.2.0); this is how a bootloader, prebootloader or NCP written over DFU
  reaches its place. A system part whose bootloader dependency is unmet still runs (the bootloader checks no
  dependencies: ``BootloaderFacts``; Device OS drops to safe mode), so it applies a newer bootloader itself;
- USB presence and identity (normal or DFU PID) and the control-request handler.

All of its state is guarded by the clock's lock (``clock.lock``); timer callbacks run under it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from firmware.module import (
    CRC_SIZE,
    PREFIX_SIZE,
    PREFIX_STRUCT,
    SUFFIX_TAIL_SIZE,
    Module,
    ModuleFlag,
    NotAModuleError,
    dynamic_location,
    parse_module,
)
from firmware.platforms import (
    PENDING_UPDATE,
    BootloaderFacts,
    Function,
    ModuleSlot,
    OtaRegion,
    Platform,
    Storage,
    boot_validated,
    bootloader_facts,
    ota_address,
    ota_region,
)
from firmware.versions import release_name
from hw.clock import VirtualClock
from hw.device_timing import (  # the device timings the kiosk prices its figures with
    BOOT_S,
    BOOTLOADER_DFU_S,
    BOOTLOADER_SAFE_S,
    CONTROL_RESET_DELAY_S,
    DFU_ENUMERATE_S,
    LISTEN_HOLD_S,
)
from hw.flash_timing import device_busy_s
from hw.sim import led_timeline as led
from hw.sim.flash import SimFlash
from hw.sim.usb_backend import (
    SimUsbDescriptor,
    SimUsbGone,
    SimUsbIoError,
    SimUsbStall,
    SimUsbTimeout,
    dfu_interface,
    particle_descriptor,
)

Rgb = tuple[bool, bool, bool]


class Mode(StrEnum):
    OFF = "off"  # no power
    IN_RESET = "in-reset"  # RESET held low
    BOOTLOADER = "bootloader"  # MODE held through reset: the bootloader is timing the hold
    DFU = "dfu"
    BOOTING = "booting"
    NORMAL = "normal"
    SAFE = "safe"
    LISTENING = "listening"
    PANIC = "panic"  # red SOS, then a reboot
    FROZEN = "frozen"  # app stuck: LED frozen, USB present, control requests time out
    HUNG = "hung"  # stuck until power is removed (a reset does not help)
    SOFT_OFF = "soft-off"  # powered itself off after a MODE double click
    NO_BOOTLOADER = "no-bootloader"  # nothing runs: no LED, no USB


BOOTLOADER_RESTORE_S, BOOTLOADER_WIPE_S, BOOTLOADER_END_S = 6.5, 10.0, 12.0
CREDENTIAL_WIPE_S = 10.0
UNPLUGGED_S = 2.0  # a cable pulled out mid-flash is plugged back after this long (fault matrix)
#: DFU phases a fault can be injected into, by the DFU request that starts them (hw/sim/dfu_device.py).
DFU_PHASES = ("set-address", "erase", "write", "status", "verify", "leave")
CLICK_MIN_S, CLICK_MAX_S, DOUBLE_CLICK_S = 0.03, 0.5, 1.0
DRAIN_S = 5.0
SOFTDEVICE_VERSION_ADDRESS = 0x300C  # a SoftDevice's firmware id (u16), where create_module.py reads it


def _dfu_phase(bm: int, request: int, value: int, data: bytes | int) -> str | None:
    """Which DFU phase a request belongs to (DfuSe: DNLOAD=1, UPLOAD=2, GETSTATUS=3)."""
    if bm == 0x21 and request == 1 and value == 0 and isinstance(data, bytes) and data[:1] == b"\x21":
        return "set-address"
    if bm == 0x21 and request == 1 and value == 0 and isinstance(data, bytes) and data[:1] == b"\x41":
        return "erase"
    if bm == 0x21 and request == 1 and value >= 2 and isinstance(data, bytes) and data:
        return "write"
    if bm == 0x21 and request == 1 and isinstance(data, bytes) and not data:
        return "leave"
    if bm == 0xA1 and request == 2 and value >= 2:
        return "verify"
    if bm == 0xA1 and request == 3:
        return "status"
    return None


@dataclass
class Faults:
    """What is wrong with the device (scenario data; see ``hw.sim.scenarios``)."""

    # The app's own faults: they go with the customer app (``faulty_app``, its bytes) and leave with it.
    app_panic: int | None = None  # SOS code the user app hits, over and over
    app_panic_after_s: float = 2.0  # seconds after the app starts
    frozen: bool = False  # the app freezes: solid cyan, USB serial present, control requests time out
    hung_until_power_cycle: bool = False  # solid LED until power is removed; resets do not help
    battery: bool = False  # a LiPo keeps it running without VBUS
    en_wired: bool = False  # the bench can pull EN low
    protected: bool = False  # Device Protection: control requests that write answer DEVICE_PROTECTED
    dead: bool = False  # damaged: nothing ever answers
    control_unreliable: bool = False  # old Gen2 firmware: mode-switch control requests are ignored
    # Faults of the flashing paths (the simulated DFU and update, hw/sim/dfu.py):
    drops_dfu_after_writes: int | None = None  # leaves DFU after this many modules written
    needs_tinker_first: bool = False  # a Device OS update only takes once Tinker has been written
    flaky_transfer_every: int | None = None  # one USB transfer in N fails
    # Injected once, for the fault matrix (tests/test_fault_matrix.py): (DFU phase, what happens) with the
    # phase one of DFU_PHASES and what one of "stall" (the request stalls) or "unplug" (the cable is pulled
    # at that moment and plugged back UNPLUGGED_S later: the device loses power and boots again).
    dfu_fault: tuple[str, str] | None = None
    control_silent: bool = False  # no control request is ever answered (a wedged USB stack)
    led_sensor: str | None = None  # the bench's sensor, not the device: "dark" (sees nothing), "stuck" (red)


@dataclass
class Hazard:
    """Something the kiosk must never cause, recorded with its device time."""

    at: float
    what: str


@dataclass
class InstalledModule:
    """A module as the bootloader finds it in flash. ``module`` is None where flash holds no module
    header: the radio stack, written without its header, is known by the SoftDevice's firmware id."""

    function: int
    index: int
    version: int
    data: bytes
    module: Module | None

    @property
    def valid_integrity(self) -> bool:
        if self.module is None:
            return self.function == Function.RADIO_STACK and self.version != 0xFFFF
        return not self.module.problems


@dataclass
class SimDevice:
    """One simulated Particle device in one bench slot."""

    platform: Platform
    clock: VirtualClock
    device_id: str
    flash: SimFlash
    faults: Faults = field(default_factory=Faults)
    led_out: Callable[[Rgb], None] = lambda rgb: None
    ncp: bytes | None = None  # NCP firmware lives on the NCP (an ESP32), not in the MCU's flash
    faulty_app: bytes | None = None  # the customer app the app faults belong to (None: any app)

    def __post_init__(self) -> None:
        self.modules: dict[tuple[int, int], InstalledModule] = {}
        self.rescan()
        self.mode = Mode.OFF
        self.hazards: list[Hazard] = []
        self.usb_mode: str | None = None  # "normal", "dfu" or None (not on the bus)
        self.usb_responsive = False
        self.usb_generation = 0  # bumps on every (re-)enumeration, so the bus gives a new address
        self._usb_descriptor_cache: tuple[tuple, SimUsbDescriptor] | None = None
        self.log: list[tuple[float, str]] = []
        self._vbus = False
        self._en_low = False
        self._on = False  # whether the board has power (what _power_changed last saw)
        self._reset_low = False
        self._mode_low = False
        self._mode_pressed_at: float | None = None
        self._last_click_at: float | None = None
        self._power_off_at: float | None = None
        self._power_cycled = False
        self._flags: set[str] = set()  # one-shot boot requests: "dfu", "safe"
        self._epoch = 0  # invalidates timers of an earlier mode
        self._boot = 0  # invalidates what an earlier boot scheduled (a requested reset)
        self._bootloader_started = 0.0
        self._program: led.LedProgram = led.off()
        self._led_timer = None
        self._rgb: Rgb = (False, False, False)
        self._credentials_cleared = False
        # USB request handlers per mode ("normal": control requests, "dfu": DfuSe), installed by the bench
        self.usb_handlers: dict[str, Callable[[int, int, int, int, bytes | int], bytes | int]] = {}
        self.dfu = None  # the simulated bootloader's DFU side (hw.sim.dfu_device.SimDfuDevice)
        self.serial = None  # the USB serial port (hw.sim.serial_device.SimSerialPort), when attached
        self._dfu_transfers = 0
        self._dfu_wrote = False
        self._dfu_modules = 0
        #: (module, device time it is done) while Device OS applies an update; None otherwise
        self.applying: tuple[Module, float] | None = None

    # --- the lines -------------------------------------------------------------------------
    @property
    def powered(self) -> bool:
        return (self._vbus or self.faults.battery) and not self._en_low

    def set_vbus(self, on: bool) -> None:
        with self.clock.lock:
            self._vbus = on
            self._power_changed()
            self._usb_update()

    def set_en_low(self, low: bool) -> None:
        with self.clock.lock:
            self._en_low = low
            self._power_changed()

    def _power_changed(self) -> None:
        now = self.clock.now()
        was, self._on = self._on, self.powered
        if was and not self.powered:
            self._interrupted("power cut")
            self._boot += 1
            self._power_off_at = now
            self._enter(Mode.OFF, led.off())
            self._usb_set(None)
        elif not was and self.powered:
            # 1 µs of tolerance: off + 5.0 - off can come out a hair under 5.0 in floating point
            if self._power_off_at is not None and now - self._power_off_at < DRAIN_S - 1e-6:
                self._hazard(f"power restored after {now - self._power_off_at:.2f} s, before the {DRAIN_S} s drain")
            self._power_cycled = self._power_off_at is not None
            self._credentials_cleared = False
            self._start("power")

    def set_reset_low(self, low: bool) -> None:
        with self.clock.lock:
            if low == self._reset_low:
                return
            self._reset_low = low
            if not self.powered:
                return
            if low:
                self._interrupted("RESET")
                self._boot += 1
                self._enter(Mode.IN_RESET, led.off())
                self._usb_set(None)
            else:
                self._start("reset")

    def set_mode_low(self, low: bool) -> None:
        with self.clock.lock:
            if low == self._mode_low:
                return
            self._mode_low = low
            now = self.clock.now()
            if low:
                self._mode_pressed_at = now
                if self.mode in (Mode.NORMAL, Mode.SAFE, Mode.LISTENING):
                    # each timer belongs to this press: a later press must be held its own 3 s or 10 s
                    self._after(LISTEN_HOLD_S, lambda: self._runtime_hold_3s(now))
                    self._after(CREDENTIAL_WIPE_S, lambda: self._runtime_hold_10s(now))
                return
            held = now - (self._mode_pressed_at or now)
            self._mode_pressed_at = None
            if self.mode == Mode.BOOTLOADER:
                self._bootloader_release(now - self._bootloader_started)
            elif self.mode in (Mode.NORMAL, Mode.SAFE, Mode.LISTENING) and CLICK_MIN_S <= held < CLICK_MAX_S:
                if self._last_click_at is not None and now - self._last_click_at <= DOUBLE_CLICK_S:
                    self._hazard("MODE double click: the device powers itself off")
                    self._last_click_at = None
                    self._enter(Mode.SOFT_OFF, led.off())
                    self._usb_set(None)
                else:
                    self._last_click_at = now

    # --- boot ------------------------------------------------------------------------------
    def _start(self, reason: str) -> None:
        """The bootloader starts (power-on or reset release)."""
        self._epoch += 1
        self._boot += 1
        self._log(f"start ({reason})")
        self.rescan()  # the bootloader and Device OS look at what is in flash now
        self._usb_set(None)
        if self.faults.dead or not self._bootloader_ok():
            self._enter(Mode.NO_BOOTLOADER, led.off())
            return
        if self._mode_low:
            self._bootloader_started = self.clock.now()
            self._enter(Mode.BOOTLOADER, led.off())
            for at, step in (
                (BOOTLOADER_SAFE_S, lambda: self._set_led(led.steady("magenta", "bootloader-5hz", self.clock.now()))),
                (BOOTLOADER_DFU_S, lambda: self._set_led(led.steady("yellow", "bootloader-5hz", self.clock.now()))),
                (
                    BOOTLOADER_RESTORE_S,
                    lambda: self._hazard("MODE held past 6.5 s in the bootloader (factory restore)"),
                ),
                (BOOTLOADER_WIPE_S, self._bootloader_wipe),
                (BOOTLOADER_END_S, lambda: self._bootloader_release(BOOTLOADER_END_S)),
            ):
                self._after(at, step, when_mode=Mode.BOOTLOADER)
            return
        self._after_bootloader(None)

    def _bootloader_wipe(self) -> None:
        self._hazard("MODE held past 10 s in the bootloader (settings and credentials wiped)")
        self._credentials_cleared = True
        self._set_led(led.steady("white", "bootloader-10hz", self.clock.now()))

    def _bootloader_release(self, held: float) -> None:
        if self.mode != Mode.BOOTLOADER:
            return
        stage = None
        if BOOTLOADER_SAFE_S <= held < BOOTLOADER_DFU_S:
            stage = "safe"
        elif BOOTLOADER_DFU_S <= held < BOOTLOADER_WIPE_S:
            stage = "dfu"  # no factory image on the sim: the 6.5 s stage stays yellow, i.e. DFU
        self._log(f"bootloader: MODE released after {held:.2f} s -> {stage or 'boot'}")
        self._after_bootloader(stage)

    def _after_bootloader(self, stage: str | None) -> None:
        requested = self._flags
        self._flags = set()
        if stage == "dfu" or "dfu" in requested or not self._system_ok():
            self._dfu_wrote = False
            self._dfu_snapshot = {
                (s.start, s.end): self.flash.read(0, s.start, s.end - s.start)
                for s in self.platform.layout
                if s.function == Function.SYSTEM_PART
            } if self.faults.needs_tinker_first else {}  # fmt: skip
            if self.dfu is not None:
                self.dfu.set_bootloader_version(self.bootloader_version)  # what this bootloader offers
                self.dfu.usb_reset()
            self._enter(Mode.DFU, led.steady("yellow", "bootloader-5hz", self.clock.now()))
            self._after(DFU_ENUMERATE_S, lambda: self._usb_set("dfu"), when_mode=Mode.DFU)
            return
        self._enter(Mode.BOOTING, led.steady("white", "solid", self.clock.now()))
        safe = stage == "safe" or "safe" in requested
        self._after(BOOT_S.get(self.platform.mcu.name, 1.0), lambda: self._run(safe), when_mode=Mode.BOOTING)

    def _run(self, safe: bool) -> None:
        if self.faults.hung_until_power_cycle and not self._power_cycled:
            self._enter(Mode.HUNG, led.steady("green", "solid", self.clock.now()))
            self._usb_set("normal", responsive=False)
            return
        if self._apply_pending():  # before the system and application threads start, in safe mode too
            return
        image = self._boot_image()
        monolithic = image is not None and image.function == Function.MONO_FIRMWARE  # system and app in one
        if safe or not (monolithic or (self._boot_checks_ok() and self._app_ok())):
            self._enter(Mode.SAFE, led.steady("green", "blink-normal", self.clock.now()))  # no network on the bench
            self._usb_set("normal")
            return
        faulty = self._faulty_app_running()
        if self.faults.frozen and faulty:
            self._enter(Mode.FROZEN, led.steady("cyan", "solid", self.clock.now()))
            self._usb_set("normal", responsive=False)
            return
        self._enter(Mode.NORMAL, led.steady("green", "blink-normal", self.clock.now()))
        self._usb_set("normal")
        if self.faults.app_panic is not None and faulty:
            self._after(self.faults.app_panic_after_s, self._panic, when_mode=Mode.NORMAL)

    def _panic(self) -> None:
        code = self.faults.app_panic or 1
        program = led.sos(code, self.clock.now())
        self._enter(Mode.PANIC, program)
        self._usb_set("normal", responsive=False)  # interrupts off: USB stops answering
        self._after(program.duration_s, lambda: self._start("panic"), when_mode=Mode.PANIC)

    # --- runtime MODE -----------------------------------------------------------------------
    def _held_since(self, pressed: float) -> bool:
        """Whether MODE is still down in the press that began at ``pressed``."""
        return self._mode_low and self._mode_pressed_at == pressed

    def _runtime_hold_3s(self, pressed: float) -> None:
        if self._held_since(pressed) and self.mode in (Mode.NORMAL, Mode.SAFE):
            self._enter_listening()

    def _runtime_hold_10s(self, pressed: float) -> None:
        if self._held_since(pressed) and self.mode == Mode.LISTENING:
            self._hazard("MODE held 10 s in listening mode (credentials cleared)")
            self._credentials_cleared = True

    def _enter_listening(self) -> None:
        self._resume_mode = self.mode if self.mode != Mode.LISTENING else Mode.NORMAL
        self._enter(Mode.LISTENING, led.steady("blue", "blink-slow", self.clock.now()), keep_timers=True)

    # --- modules -------------------------------------------------------------------------------
    def _installed(self, function: int, index: int) -> InstalledModule | None:
        return self.modules.get((function, index))

    def _bootloader_ok(self) -> bool:
        boot = self._installed(Function.BOOTLOADER, 0)
        return boot is not None and boot.valid_integrity

    @property
    def bootloader_version(self) -> int | None:
        boot = self._installed(Function.BOOTLOADER, 0)
        return boot.version if boot is not None else None

    def _bootloader_accepts(self, entry: InstalledModule, address: int, facts: BootloaderFacts | None) -> bool:
        """What the bootloader checks at ``address`` before it jumps there (is_application_valid): the
        header's start, end and platform, and the CRC where its version checks it."""
        m = entry.module
        if facts is None or m is None or m.start_address != address:
            return False
        if m.end_address > facts.end_limit or m.platform_id != self.platform.id:
            return False
        return m.crc_ok or not facts.verifies_crc

    def _boot_image(self) -> InstalledModule | None:
        """The system firmware the bootloader starts: the first of its search addresses (by its version:
        a 6.1.2+ nRF52840 bootloader tries 0x28000, then 0x30000) holding a module it accepts."""
        facts = bootloader_facts(self.platform, self.bootloader_version)
        for address in facts.system_search if facts is not None else ():
            for entry in self.modules.values():
                if entry.function in (Function.SYSTEM_PART, Function.MONO_FIRMWARE) and self._bootloader_accepts(
                    entry, address, facts
                ):
                    return entry
        return None

    def _system_ok(self) -> bool:
        """Whether the bootloader starts Device OS (else it stays in DFU)."""
        image = self._boot_image()
        if image is None:
            return False
        if image.function == Function.MONO_FIRMWARE:
            return True
        # The system part hands over to the others (Gen2: part1's reset handler jumps into part2's). With one
        # of them not there at all the device cannot start; the bootloader's IWDG retries (bootloader/src/
        # main.c FIRST_RETRY .. THIRD_RETRY, about 5 s each) end in DFU, which the simulator enters at once.
        return all(self._installed(Function.SYSTEM_PART, i) is not None for i in self.platform.system_parts)

    def _dependency_there(self, dep) -> bool:
        """validate_module_dependencies (ota_flash_hal): the module a dependency names is where its bounds say
        and is at least that version. Not transitive, and the dependency's own CRC is not checked."""
        have = self._installed(dep.function, dep.index)
        return have is not None and have.version != 0xFFFF and have.version >= dep.version

    def dependencies_met(self, module: Module) -> bool:
        return all(self._dependency_there(dep) for dep in module.real_dependencies)

    def _boot_checks_ok(self) -> bool:
        """HAL_Core_Validate_Modules(1) at boot: the modules ``firmware.platforms.boot_validated`` names
        (the bootloader and the system part that depends on it; none on the Electron), each in range, for
        this platform, with its dependencies there and a CRC that matches. Else Device OS runs in safe mode."""
        for function, index in boot_validated(self.platform):
            entry = self._installed(function, index)
            if entry is None or entry.module is None or not entry.module.crc_ok:
                return False
            if entry.module.platform_id != self.platform.id or not self.dependencies_met(entry.module):
                return False
        return True

    def _faulty_app_running(self) -> bool:
        if self.faulty_app is None:
            return True
        return any(m.data == self.faulty_app for (f, _), m in self.modules.items() if f == Function.USER_PART)

    def _app_ok(self) -> bool:
        """HAL_Core_Validate_User_Module: a user part whose header, CRC and dependencies are right."""
        apps = [m for (f, _), m in self.modules.items() if f == Function.USER_PART]
        return bool(apps) and all(
            a.module.crc_ok and a.module.platform_id == self.platform.id and self.dependencies_met(a.module)
            for a in apps
        )

    @property
    def system_version(self) -> int | None:
        part = self._installed(Function.SYSTEM_PART, 1) or self._installed(Function.MONO_FIRMWARE, 0)
        return part.version if part is not None and part.module is not None else None

    @property
    def system_version_string(self) -> str:
        version = self.system_version
        return (release_name(version) if version is not None else None) or "unknown"

    def install(self, data: bytes) -> None:
        """Put a module where it belongs, as the factory or an applied update does (no flash rules).

        The radio stack goes without its module header, as DFU writes it; NCP firmware goes to the NCP.
        """
        try:
            module = parse_module(data)
        except NotAModuleError:
            return  # a device stores what it can validate; garbage never reaches flash
        with self.clock.lock:
            if module.function == Function.NCP_FIRMWARE:
                self.ncp = bytes(data)
            elif module.flags & ModuleFlag.DROP_MODULE_INFO and module.function == Function.RADIO_STACK:
                self.flash.load(0, module.start_address, data[module.prefix_size :])
            else:
                self.flash.load(0, module.start_address, data)

    def write_module(self, data: bytes) -> None:
        """Install a module received in normal mode (control request or YModem) and look again."""
        self.install(data)
        self.rescan()

    def rescan(self) -> None:
        """Find the modules in flash the way the bootloader does: a module header at each slot's place, in
        every release's layout (a 6.1.1 system part at 0x30000, a 6.1.2 one at 0x28000). Where more than
        one place holds one, the one the bootloader would start counts, else the first found."""
        with self.clock.lock:
            candidates: dict[tuple[int, int], list[InstalledModule]] = {}
            for slot in self.platform.layout:
                if slot.storage is not Storage.INTERNAL:
                    continue
                entry = self._read_slot(slot)
                if entry is None:
                    continue
                same = candidates.setdefault((entry.function, entry.index), [])
                if not any(e.data == entry.data for e in same):
                    same.append(entry)
            boot = candidates.get((Function.BOOTLOADER, 0))
            facts = bootloader_facts(self.platform, boot[0].version if boot else None)
            found = {key: self._preferred(entries, facts) for key, entries in candidates.items()}
            if self.ncp is not None:
                try:
                    module = parse_module(self.ncp)
                    found[(Function.NCP_FIRMWARE, 0)] = InstalledModule(
                        Function.NCP_FIRMWARE, 0, module.version, self.ncp, module
                    )
                except NotAModuleError:
                    pass
            self.modules = found

    def _preferred(self, entries: list[InstalledModule], facts: BootloaderFacts | None) -> InstalledModule:
        for address in facts.system_search if facts is not None and len(entries) > 1 else ():
            for entry in entries:
                if self._bootloader_accepts(entry, address, facts):
                    return entry
        return entries[0]

    def _read_slot(self, slot: ModuleSlot) -> InstalledModule | None:
        read = self.flash.read
        if slot.function == Function.RADIO_STACK:
            version = int.from_bytes(read(0, SOFTDEVICE_VERSION_ADDRESS, 2), "little")
            if version == 0xFFFF:
                return None
            return InstalledModule(Function.RADIO_STACK, slot.index, version, b"", None)
        start = self._grows_left_start(slot) if slot.grows_left else slot.start
        if start is None:
            return None
        offset = self.platform.mcu.prefix_offset(slot.function)
        fields = PREFIX_STRUCT.unpack(read(0, start + offset, PREFIX_SIZE))
        first, end, _r, _f, _v, _platform_id, function, index = fields[:8]
        if (first, function, index) != (start, slot.function, slot.index) or not start < end <= slot.end:
            return None
        data = read(0, start, min(end - start + CRC_SIZE, slot.end - start))
        try:
            module = parse_module(data)
        except NotAModuleError:
            return None
        return InstalledModule(function, index, module.version, data, module)

    def _grows_left_start(self, slot: ModuleSlot) -> int | None:
        """An rtl872x user part ends at its slot's end; its suffix's DYNAMIC_LOCATION says where it starts."""
        return dynamic_location(self.flash.read(0, slot.end - SUFFIX_TAIL_SIZE, SUFFIX_TAIL_SIZE))

    # --- control requests (device side) -------------------------------------------------------
    def request_reset(self, into: str | None = None, delay_s: float = CONTROL_RESET_DELAY_S) -> bool:
        """What requests 40 (reset), 50 (DFU) and 60 (safe mode) do once they have ended: reset 1 s later
        (``delay_s`` 0: the raw 0x50 reset, at once).

        Returns False when old firmware ignores the request (the ``control_unreliable`` fault).
        """
        with self.clock.lock:
            if self.faults.control_unreliable and into is not None:
                return False
            boot = self._boot

            def go() -> None:
                if self._boot == boot and self.powered:
                    if into:
                        self._flags.add(into)
                    self._start(f"control request ({into or 'reset'})")

            self.clock.call_later(delay_s, go)
            return True

    def apply_update(self, data: bytes) -> None:
        """A module received by control request (or YModem) passed validation: apply it, then reset.

        Device OS shows magenta fast blinking while it applies a firmware update. Applying takes the
        flash time of the module; NCP firmware goes to the ESP32 over a UART and takes far longer.
        """
        with self.clock.lock:
            module = parse_module(data)
            seconds = self.apply_time_s(module)
            self._log(f"applying {module.function_name} {module.index} v{module.version} ({seconds:.1f} s)")
            self._begin_applying(data, module, seconds, "update applied")

    def _apply_pending(self) -> bool:
        """HAL_FLASH_ApplyPendingUpdate at boot: True when Device OS is now applying the OTA region's module.

        The flag is cleared before anything else (dct_write_app_data), so a module that fails its checks is
        simply left there and Device OS boots on (HAL_FLASH_End's error is not acted on: main.cpp resets only
        on HAL_UPDATE_APPLIED[_PENDING_RESTART]). USB stays quiet meanwhile (UNVERIFIED: HAL_USB_Init comes just
        before the check, so a real host may see the CDC port for that long)."""
        flag = PENDING_UPDATE
        version = self.system_version
        region = ota_region(self.platform, version) if version is not None else None
        if region is None or self.flash.read(flag.alt, flag.offset, 1)[0] != flag.value:
            return False
        self.flash.write(flag.alt, flag.offset, bytes([flag.clear]))
        data = self._ota_module(region)
        if data is None or not self._pending_valid(data):
            self._log("pending update flag set, but the OTA region holds no module Device OS accepts")
            return False
        module = parse_module(data)
        seconds = self.apply_time_s(module) + flag.reset_delay_s
        self._log(f"applying the pending {module.function_name} {module.index} v{module.version} ({seconds:.1f} s)")
        self._begin_applying(data, module, seconds, "pending update applied")
        return True

    def _ota_module(self, region: OtaRegion) -> bytes | None:
        """The module in the OTA region, found as fetch_module finds it: its header at the region's start (after
        a vector table or image header where its kind has one), CRC included."""
        part1 = self._installed(Function.SYSTEM_PART, 1) or self._installed(Function.MONO_FIRMWARE, 0)
        address = ota_address(region, part1.module.end_address if part1 is not None and part1.module else None)
        if address is None:
            return None
        for offset in sorted({0, *self.platform.mcu.prefix_offsets.values()}):
            first, end = struct.unpack("<II", self.flash.read(region.alt, address + offset, 8))
            if not 0 < end - first <= region.size - CRC_SIZE:
                continue
            data = self.flash.read(region.alt, address, end - first + CRC_SIZE)
            try:
                if parse_module(data).prefix_offset == offset:
                    return data
            except NotAModuleError:
                continue
        return None

    def _pending_valid(self, data: bytes) -> bool:
        """HAL_FLASH_End's checks (ota_flash_hal.cpp fetchModules/validateModules): integrity, platform, a place
        for it, and its own dependencies there (validate_module_dependencies; the RTL bootloader's on
        prebootloader-part1); an NCP module only where the platform updates its NCP."""
        from firmware.platforms import NCP_UPDATABLE

        module = parse_module(data)
        if module.problems or module.platform_id != self.platform.id:
            return False
        if module.function == Function.NCP_FIRMWARE:
            return self.platform.name in NCP_UPDATABLE
        place = self.platform.slot_for_module(module.function, module.index, module.start_address, module.end_address)
        return place is not None and self.dependencies_met(module)

    def _begin_applying(self, data: bytes, module: Module, seconds: float, reason: str) -> None:
        """Device OS writes ``module`` for ``seconds`` (magenta fast blinking), then the device restarts."""
        now = self.clock.now()
        self.applying = (module, now + seconds)
        self._set_led(led.steady("magenta", "blink-fast", now))
        boot = self._boot

        def done() -> None:
            if self._boot == boot and self.powered:
                self.applying = None
                self.write_module(data)
                self._start(reason)

        self.clock.call_later(seconds, done)

    def _interrupted(self, what: str) -> None:
        """A reset or power cut while Device OS applies an update: on a Gen3 device a bootloader half written
        can brick it (device-os PR #2151). Recorded as a hazard; the simulated flash keeps the old module."""
        if self.applying is not None:
            module, _ = self.applying
            self._hazard(f"{what} while Device OS applied {module.function_name} {module.index} v{module.version}")
            self.applying = None

    def apply_time_s(self, module: Module) -> float:
        """Device seconds to apply a module received in normal mode (the kiosk's own timing table)."""
        return device_busy_s(self.platform, "control-request", module.size, module.start_address,
                             module.function_name)  # fmt: skip

    def serial_dfu(self) -> None:
        """The serial port was opened at 14400 baud: Device OS resets into DFU at once (no 1 s delay)."""
        with self.clock.lock:
            self._flags.add("dfu")
            self._start("14400 baud")

    def start_listening(self) -> None:
        with self.clock.lock:
            if self.mode in (Mode.NORMAL, Mode.SAFE):
                self._enter_listening()

    def stop_listening(self) -> None:
        with self.clock.lock:
            if self.mode == Mode.LISTENING:
                resume = getattr(self, "_resume_mode", Mode.NORMAL)
                self._enter(resume, led.steady("green", "blink-normal", self.clock.now()))

    # --- SWD (a debugger on the device's SWD pins; hw/sim/swd_probe.py serves the port) ---------------
    def swd_powered(self) -> bool:
        return self.powered and not self.faults.dead

    def _internal_flash(self) -> tuple[int, int]:
        memory = self.platform.memory_map(0)
        return memory.segments[0].start, memory.segments[-1].end

    def swd_erased(self, ranges: tuple[tuple[int, int], ...]) -> None:
        """A mass erase (or page erases) through the debugger: those bytes of flash are blank now.
        (UICR and other non-flash registers it also clears are outside the simulated flash.)"""
        low, high = self._internal_flash()
        with self.clock.lock:
            for start, end in ranges:
                start, end = max(start, low), min(end, high)
                if start < end:
                    self.flash.load(0, start, b"\xff" * (end - start))
            self._log(f"SWD erase of {len(ranges)} range(s)")

    def swd_programmed(self, segments: tuple[tuple[int, bytes], ...]) -> None:
        low, high = self._internal_flash()
        with self.clock.lock:
            for address, data in segments:
                if low <= address and address + len(data) <= high:
                    self.flash.load(0, address, data)
            self._log(f"SWD programmed {sum(len(d) for _, d in segments)} bytes")

    def swd_reset(self) -> None:
        """The debugger resets the target and lets it run."""
        with self.clock.lock:
            if self.powered:
                self._start("SWD reset")

    # --- DFU (the bootloader's side; hw/sim/dfu_device.py serves the protocol) -----------------------
    def dfu_left(self) -> None:
        """The DFU leave (manifest) resets the device into whatever is in flash now."""
        with self.clock.lock:
            if self.mode == Mode.DFU:
                self._tinker_first_rule()
                self._start("DFU leave")

    def _note_dfu_target(self, address: int) -> None:
        slot = next((s for s in self.platform.layout if s.storage is Storage.INTERNAL and s.start <= address < s.end
                     and s.function in (Function.SYSTEM_PART, Function.USER_PART)), None)  # fmt: skip
        if slot is None:
            return
        if slot.function == Function.USER_PART:
            self._user_part_rewritten = True  # remembered across DFU sessions
        elif not hasattr(self, "_system_update_takes"):
            self._system_update_takes = getattr(self, "_user_part_rewritten", False)

    def _tinker_first_rule(self) -> None:
        """The ``needs_tinker_first`` fault: a system-part update only takes when the user part was rewritten
        before the system part was written (earlier in this DFU session or in an earlier one); otherwise the
        old system part is back after the reset."""
        takes = getattr(self, "_system_update_takes", None)
        if hasattr(self, "_system_update_takes"):
            del self._system_update_takes
        if not self.faults.needs_tinker_first or takes is None or takes:
            return
        for (start, _end), data in self._dfu_snapshot.items():
            self.flash.load(0, start, data)
        self._log("the Device OS update did not take: Tinker was not written first")

    def dfu_safe_mode(self) -> None:
        with self.clock.lock:
            if self.mode == Mode.DFU:
                self._flags.add("safe")
                self._start("DFU safe-mode command")

    def dfu_transfer(self, handler: Callable[..., bytes | int]) -> Callable[..., bytes | int]:
        """Wrap the DFU handler with this device's faults: a flaky cable, dropping out of DFU."""

        def transfer(bm: int, request: int, value: int, index: int, data: bytes | int) -> bytes | int:
            with self.clock.lock:
                self._dfu_transfers += 1
                every = self.faults.flaky_transfer_every
                if every and self._dfu_transfers % every == 0:
                    raise SimUsbIoError()  # the cable garbles one transfer in N
                self._inject_dfu_fault(bm, request, value, data)
                writing = bm == 0x21 and request == 1 and value >= 2 and bool(data)  # DNLOAD of data
                # A module is complete when the host reads it back, or moves on (new address or erase).
                next_command = bm == 0x21 and request == 1 and value == 0 and isinstance(data, bytes)
                reading_back = bm == 0xA1 and request == 2 and value >= 2  # UPLOAD
                if next_command and data[:1] in (b"\x21", b"\x41") and len(data) >= 5:
                    self._note_dfu_target(int.from_bytes(data[1:5], "little"))
                if writing:
                    self._dfu_wrote = True
                elif self._dfu_wrote and (reading_back or (next_command and data[:1] in (b"\x21", b"\x41"))):
                    self._dfu_wrote = False
                    self._dfu_modules += 1
                    drop = self.faults.drops_dfu_after_writes
                    if drop is not None and self._dfu_modules == drop:
                        self._log(f"drops out of DFU after {drop} module(s) written")
                        self._start("dropped out of DFU")
                        raise SimUsbGone()
            return handler(bm, request, value, index, data)

        return transfer

    def _inject_dfu_fault(self, bm: int, request: int, value: int, data: bytes | int) -> None:
        """The fault matrix's one injected DFU fault, at the first request of its phase."""
        if self.faults.dfu_fault is None:
            return
        phase, what = self.faults.dfu_fault
        if _dfu_phase(bm, request, value, data) != phase:
            return
        self.faults = replace(self.faults, dfu_fault=None)  # once
        self._log(f"fault: {what} during DFU {phase}")
        if what == "stall":
            raise SimUsbStall()
        self._unplug()
        raise SimUsbGone()

    def _unplug(self) -> None:
        """The cable is pulled: no power, no USB; plugged back UNPLUGGED_S later, the device boots."""
        self._interrupted("cable pulled")
        self._boot += 1
        self._enter(Mode.OFF, led.off())
        self._usb_set(None)
        self.clock.call_later(UNPLUGGED_S, lambda: self._start("plugged back in"))

    # --- USB (the peer the simulated bus talks to) ---------------------------------------------
    usb_port_path: str = "1-1.1"

    def usb_attached(self) -> bool:
        return self.usb_mode is not None

    def usb_session(self) -> int:
        return self.usb_generation

    def usb_descriptor(self) -> SimUsbDescriptor:
        dfu = self.usb_mode == "dfu" and self.dfu is not None
        alts = self.dfu.alt_strings() if dfu else None
        key = (self.platform.name, self.usb_mode, self.device_id, self.usb_port_path, alts)
        cached = self._usb_descriptor_cache
        if cached is not None and cached[0] == key:
            return cached[1]  # the same object: the bus sees at a glance that nothing changed
        descriptor = particle_descriptor(self.platform, self.usb_mode or "normal", self.device_id, self.usb_port_path)
        if dfu:
            # a protected bootloader reports its segments erase-only
            descriptor = replace(descriptor, interfaces=(dfu_interface(key[-1]),))
        self._usb_descriptor_cache = (key, descriptor)
        return descriptor

    def usb_string(self, index: int) -> str | None:
        if self.usb_mode == "dfu" and self.dfu is not None:
            return self.dfu.string_descriptor(index)
        return None

    def usb_control(
        self, bm_request_type: int, b_request: int, w_value: int, w_index: int, data_or_length: bytes | int
    ) -> bytes | int:
        with self.clock.lock:
            if self.usb_mode is None:
                raise SimUsbGone()
            if not self.usb_responsive:
                raise SimUsbTimeout()  # panicking or frozen: the device never answers
            handler = self.usb_handlers.get(self.usb_mode)
            if handler is None:
                raise SimUsbStall()
            return handler(bm_request_type, b_request, w_value, w_index, data_or_length)

    def _usb_set(self, mode: str | None, responsive: bool = True) -> None:
        """What the device's USB stack presents; the host sees it only while VBUS is there."""
        self._usb_intent = (mode, responsive)
        self._usb_update()

    def _usb_update(self) -> None:
        mode, responsive = getattr(self, "_usb_intent", (None, False))
        if not self._vbus:
            mode = None  # no VBUS, no USB (the device may still run on its LiPo)
        if mode != self.usb_mode:
            self.usb_generation += 1
            self._log(f"usb: {mode or 'gone'}")
        self.usb_mode = mode
        self.usb_responsive = responsive and mode is not None

    # --- LED ---------------------------------------------------------------------------------
    @property
    def rgb(self) -> Rgb:
        return self._rgb

    def _set_led(self, program: led.LedProgram) -> None:
        self._program = program
        if self._led_timer is not None:
            self._led_timer.cancel()
            self._led_timer = None
        self._apply_led()

    def _apply_led(self) -> None:
        now = self.clock.now()
        self._output(self._program.state_at(now))
        upcoming = self._program.next_edge(now + 1e-9, 30.0)
        if upcoming:
            at, _ = upcoming
            self._led_timer = self.clock.call_later(max(0.0, at - now), self._apply_led)

    def _output(self, rgb: Rgb) -> None:
        rgb = tuple(bool(c) for c in rgb)
        if rgb != self._rgb:
            self._rgb = rgb
            self.led_out(rgb)

    # --- helpers -----------------------------------------------------------------------------
    def _enter(self, mode: Mode, program: led.LedProgram, keep_timers: bool = False) -> None:
        if not keep_timers:
            self._epoch += 1
        if mode != self.mode:
            self._log(f"mode: {mode.value}")
        self.mode = mode
        if self.serial is not None:
            self.serial.listening = mode == Mode.LISTENING  # the console runs only in listening mode
        self._set_led(program)

    def _after(self, delay: float, fn: Callable[[], None], when_mode: Mode | None = None) -> None:
        epoch = self._epoch

        def fire() -> None:
            if self._epoch == epoch and (when_mode is None or self.mode == when_mode):
                fn()

        self.clock.call_later(delay, fire)

    def _hazard(self, what: str) -> None:
        self.hazards.append(Hazard(self.clock.now(), what))
        self._log(f"HAZARD: {what}")

    def _log(self, what: str) -> None:
        self.log.append((self.clock.now(), what))
