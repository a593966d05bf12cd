"""The SWD restore: a debug probe writes Particle's restore image straight into the MCU's flash.

This is the last rung of the ladder, for a device whose bootloader is gone or broken (no LED, no USB).
:class:`SwdPort` is the port; :class:`PyocdSwd` drives a real CMSIS-DAP probe (the Particle Debugger is
0d28:0204) through pyOCD, and ``hw.sim.swd_probe.SimSwdProbe`` is its simulated twin. :func:`restore` runs
the whole procedure on either: open, check the image, mass erase where needed, program, verify, reset.

Facts (../shared/reference/led-buttons-restore.md section 5): a Gen3 restore needs the Nordic MBR
(0x0-0xFFF) and UICR words, which no module carries, so the image must be Particle's restore ``.hex``,
never something assembled from modules. The nRF52840 target is built into pyOCD; the STM32F205 (Gen2)
needs the Keil STM32F2xx CMSIS pack; pyOCD has no target for the RTL872x (P2, Photon 2, M-SoM). The
device must be powered by its USB or battery: the debugger does not power it.

Progress callbacks get ``(bytes_done, bytes_total, phase)`` with phase ``mass-erase``, ``erase``,
``program`` or ``verify``; ``bytes_done`` never goes down within a phase. Every wait goes through the
injected :class:`hw.clock.Clock`, has a timeout and can be cancelled. Errors are :class:`SwdError`
subclasses whose message says what the technician should do.

    >>> target_support(platform_by_name("boron")).targets
    ('nrf52840',)
    >>> choose_probe([ProbeInfo("0240000034544e45", "ARM", "DAPLink CMSIS-DAP", "Particle Debugger")], None).unique_id
    '0240000034544e45'
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from firmware.intelhex import HexImage, Segment
from firmware.platforms import Platform, platform_by_name
from hw.clock import Cancelled, Clock, ClockEvent, RealClock

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
#: A restore image: a parsed Intel HEX file, or ``(address, bytes)`` segments.
RestoreImage = HexImage | Sequence[tuple[int, bytes]]
Segments = tuple[tuple[int, bytes], ...]

PHASE_MASS_ERASE, PHASE_ERASE, PHASE_PROGRAM, PHASE_VERIFY = "mass-erase", "erase", "program", "verify"

#: The Particle Debugger (DAPLink firmware) on USB (DOCS-DBG); other CMSIS-DAP probes work too.
PARTICLE_DEBUGGER_USB_ID = (0x0D28, 0x0204)
#: The udev rule that lets the kiosk's user open it.
_VID, _PID = PARTICLE_DEBUGGER_USB_ID
PROBE_UDEV_RULE = (
    f'SUBSYSTEM=="usb", ATTR{{idVendor}}=="{_VID:04x}", ATTR{{idProduct}}=="{_PID:04x}", MODE="0660", GROUP="plugdev"'
)
DEFAULT_FREQUENCY_HZ = 1_000_000  # Particle's OpenOCD recipes run SWD at 1000 kHz (DOCS-JTAG)

# Timeouts of the real driver, seconds. pyOCD calls block and take no timeout of their own, so each
# runs on a worker thread that the caller waits for through the clock.
LIST_TIMEOUT_S = 10.0
LOOKUP_TIMEOUT_S = 30.0  # parsing a CMSIS pack (a zip with the device description) takes a few seconds
CONNECT_TIMEOUT_S = 20.0
# pyOCD polls the nRF52 CTRL-AP ERASEALL for at most 15 s; an STM32F2 mass erase is 16 s max at x32
# (timing-model.md 2) and pyOCD falls back to a chip erase there.
MASS_ERASE_TIMEOUT_S = 40.0
STALL_TIMEOUT_S = 30.0  # no progress for this long while programming or verifying: the probe hangs
MIN_PROGRAM_RATE = 1024.0  # bytes/s: the overall cap of a program or verify is 60 s + size at this rate
RESET_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0
CANCEL_GRACE_S = 5.0  # after Stop, how long to let pyOCD reach a safe point before giving up on it
VERIFY_CHUNK = 16 * 1024


# --- errors: each says what the technician should do ------------------------------------------------


class SwdError(Exception):
    """The SWD restore cannot go on; the message says what to do."""


class NoProbe(SwdError):
    """No debug probe is plugged into the kiosk."""

    def __init__(self) -> None:
        super().__init__(
            "no SWD debugger found: plug the Particle Debugger (or another CMSIS-DAP probe) into the kiosk's "
            "USB. If it is plugged in, the kiosk may not open it: add the udev rule "
            f"{PROBE_UDEV_RULE} and plug it in again"
        )


class ProbeNotFound(SwdError):
    """The probe named (by unique id) is not attached."""

    def __init__(self, unique_id: str, attached: Sequence[str] = ()):
        self.unique_id = unique_id
        self.attached = tuple(attached)
        others = ", ".join(self.attached) if self.attached else "none"
        super().__init__(
            f"the SWD debugger {unique_id!r} is not connected (connected: {others}): plug it in, or set "
            "swd_probe in the kiosk config to the id of the debugger wired to this slot"
        )


class SeveralProbes(SwdError):
    """Several probes are attached (or match) and none was named exactly."""

    def __init__(self, unique_ids: Sequence[str], named: str | None = None):
        self.unique_ids = tuple(unique_ids)
        self.named = named
        what = f"match {named!r}" if named else "are connected and none was named"
        super().__init__(
            f"{len(self.unique_ids)} SWD debuggers {what} ({', '.join(self.unique_ids)}): set swd_probe in the "
            "kiosk config to the full id of the one wired to this slot"
        )


class NoTarget(SwdError):
    """pyOCD (so the kiosk) has no target for this device's MCU."""

    def __init__(self, platform: str, reason: str):
        self.platform = platform
        super().__init__(reason)


class PackMissing(SwdError):
    """The MCU needs a CMSIS pack that is not installed (and the kiosk has no network to fetch it)."""

    def __init__(self, platform: str, support: TargetSupport, detail: str = ""):
        self.platform = platform
        self.pack = support.pack
        found = f" ({detail})" if detail else ""
        super().__init__(
            f"pyOCD needs the CMSIS pack {support.pack} to program the {platform} ({support.mcu}), and it is not "
            f"installed{found}. 'pyocd pack install {support.pack_install}' would fetch it but needs the network, "
            f"which the kiosk does not have: on another computer download {support.pack}.<version>.pack "
            "(keil.arm.com/packs), copy the file to the kiosk and point the kiosk's pack = setting at it "
            "(pyOCD's own tools take --pack <file>)"
        )


class NoTargetPower(SwdError):
    """The probe gets no answer from the device: it is not powered (or not wired)."""

    def __init__(self) -> None:
        super().__init__(
            "the device is not powered: plug its USB or battery (the debugger does not power it). If it is "
            "powered, check the SWD ribbon cable, and put a Gen2 device into DFU mode (blinking yellow) first: "
            "its SWD pins only answer in DFU mode or when it has no bootloader"
        )


class TargetLocked(SwdError):
    """The MCU's debug access is locked (nRF52 APPROTECT); only a mass erase opens it."""

    def __init__(self, target: str):
        self.target = target
        super().__init__(
            f"the {target} is locked (APPROTECT closes its debug port): only a mass erase opens it, and that wipes "
            "its whole flash. A full restore rewrites everything it needs, so run the restore with the mass erase "
            "allowed"
        )


class SwdTransferError(SwdError):
    """SWD transfers failed or the probe stopped answering."""


class VerifyError(SwdTransferError):
    """Flash read back differs from the image after programming."""

    def __init__(self, address: int, expected: int, found: int):
        self.address = address
        super().__init__(
            f"verify failed at 0x{address:08x} (wrote 0x{expected:02x}, read 0x{found:02x}): the flash did not take "
            "the image. Run the restore again; if it fails at the same place again the device is damaged"
        )


class ImageError(SwdError):
    """The restore image does not belong to this device."""


# --- what the kiosk can restore, per MCU family (data, not branches) ---------------------------------


@dataclass(frozen=True)
class TargetSupport:
    """How one MCU family is restored over SWD.

    ``targets`` are pyOCD target type names, best first (the first one pyOCD knows is used); ``pack`` is the
    CMSIS pack that adds them (None: built into pyOCD). ``mass_erase_for_restore`` says a restore starts
    with a mass erase; ``unlock_by_mass_erase`` that a locked part is opened by one.
    """

    mcu: str
    targets: tuple[str, ...] = ()
    pack: str | None = None
    pack_install: str | None = None
    mass_erase_for_restore: bool = False
    unlock_by_mass_erase: bool = False
    hint: str = ""  # what to check when transfers fail, beyond cable and power
    no_target: str = ""  # why there is no SWD restore, and what to do instead


_P2_INSTEAD = (
    "pyOCD has no target for the {name} (Realtek RTL872x), so the kiosk cannot restore it over SWD. Recover it "
    "over USB instead (DFU mode, then a Device OS update); if its bootloader is gone and it shows no LED, restore it "
    "on another computer with Particle's Device Restore JTAG web tool or OpenOCD and a CMSIS-DAP debugger"
)

TARGETS: dict[str, TargetSupport] = {
    # Built into pyOCD. A restore rewrites the SoftDevice (and the MBR), which pyOCD can only do after a mass
    # erase (target_family_notes.md); Particle's own recipe is `nrf5 mass_erase` then the .hex too.
    "nrf52840": TargetSupport("nRF52840", ("nrf52840",), mass_erase_for_restore=True, unlock_by_mass_erase=True),
    # Pack target names carry the package and an "x" (pyOCD PR #915): RGT = LQFP64 (Electron), RGY = WLCSP
    # (Photon, P1). Which names the pack really has is UNVERIFIED; every STM32F205xG has the same 1 MB flash and
    # flash algorithm, so any of them programs any of these boards. No mass erase: the DCT (device keys) and
    # the EEPROM live in the same flash, in the hole the restore .hex leaves.
    "stm32f2xx": TargetSupport(
        "STM32F205",
        ("stm32f205rgtx", "stm32f205rgyx", "stm32f205rg"),
        pack="Keil.STM32F2xx_DFP",
        pack_install="stm32f205rg",
        hint=(
            "Device OS write-protects the bootloader and system sectors and pyOCD may not clear that (UNVERIFIED); "
            "a 'Device Security Bit' (read protection) needs OpenOCD's 'stm32f2x unlock 0', then the restore and "
            "'particle keys doctor'"
        ),
    ),
    "rtl872x": TargetSupport("RTL872x", no_target=_P2_INSTEAD),
}


def as_platform(platform: Platform | str) -> Platform:
    """A Platform from a Platform or its name (``"boron"``)."""
    return platform if isinstance(platform, Platform) else platform_by_name(platform)


def target_support(platform: Platform | str) -> TargetSupport:
    """How the platform's MCU is restored over SWD; raises NoTarget when it cannot be."""
    plat = as_platform(platform)
    support = TARGETS.get(plat.mcu.name)
    if support is None:
        raise NoTarget(plat.name, f"the kiosk has no SWD restore for the {plat.display_name} ({plat.mcu.name})")
    if not support.targets:
        raise NoTarget(plat.name, support.no_target.format(name=plat.display_name))
    return support


# --- probes and targets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeInfo:
    """One attached debug probe, as pyOCD names it."""

    unique_id: str
    vendor: str
    product: str
    description: str


@dataclass(frozen=True)
class TargetInfo:
    """What :meth:`SwdPort.open` connected to. ``flash`` holds ``[start, end)`` byte ranges."""

    probe: ProbeInfo
    platform: str
    target: str
    locked: bool
    flash: tuple[tuple[int, int], ...] = ()

    @property
    def flash_bytes(self) -> int:
        return sum(end - start for start, end in self.flash)


def choose_probe(probes: Sequence[ProbeInfo], unique_id: str | None) -> ProbeInfo:
    """The probe to use: the one named (exact id, else the only one containing it), or the only one attached."""
    ids = [p.unique_id for p in probes]
    if unique_id is None:
        if not probes:
            raise NoProbe()
        if len(probes) > 1:
            raise SeveralProbes(ids)
        return probes[0]
    wanted = unique_id.strip().lower()
    exact = [p for p in probes if p.unique_id.lower() == wanted]
    if exact:
        return exact[0]
    # pyOCD matches a part of the id; the kiosk does too, but never guesses between several
    partial = [p for p in probes if wanted and wanted in p.unique_id.lower()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        raise SeveralProbes([p.unique_id for p in partial], named=unique_id)
    raise ProbeNotFound(unique_id, ids)


# --- images ---------------------------------------------------------------------------------------


def restore_hex_image(image: RestoreImage) -> HexImage:
    """The image as a HexImage with sorted, merged segments; raises ImageError if empty or overlapping."""
    if isinstance(image, HexImage):
        raw = [(s.address, s.data) for s in image.segments]
    else:
        raw = sorted((int(address), bytes(data)) for address, data in image if data)
    runs: list[tuple[int, list[bytes]]] = []  # (start, pieces): joined once, not copied per piece
    end = -1
    for address, data in raw:
        if address < end:
            raise ImageError(f"the restore image writes 0x{address:08x} twice: it is damaged; import it again")
        if address == end:
            runs[-1][1].append(data)
        else:
            runs.append((address, [data]))
        end = address + len(data)
    if not runs:
        raise ImageError("the restore image is empty: import Particle's restore .hex for this platform")
    segments = tuple(Segment(address, b"".join(pieces)) for address, pieces in runs)
    return HexImage(segments, image.start_address if isinstance(image, HexImage) else None)


def image_segments(image: RestoreImage) -> Segments:
    """``(address, bytes)`` segments of a restore image, address-ordered and merged."""
    return tuple((s.address, s.data) for s in restore_hex_image(image).segments)


def check_image(platform: Platform | str, image: RestoreImage, flash: Sequence[tuple[int, int]] = ()) -> None:
    """Refuse an image made for another platform, or one that writes outside the target's flash."""
    # Imported here: firmware.library pulls in the whole library machinery, only needed for this check.
    from firmware.library import modules_in_image

    plat = as_platform(platform)
    hex_image = restore_hex_image(image)
    found = {p.name for p, _module in modules_in_image(hex_image)}
    if found and found != {plat.name}:
        raise ImageError(
            f"the restore image holds modules for {', '.join(sorted(found))}, not for the {plat.display_name}: "
            "use the restore image for this platform"
        )
    for seg in hex_image.segments if flash else ():
        if not any(start <= seg.address and seg.end <= end for start, end in flash):
            raise ImageError(
                f"the restore image writes 0x{seg.address:08x}-0x{seg.end - 1:08x}, which is not flash on the "
                f"{plat.display_name}: it is not the restore image for this device"
            )


# --- the port ---------------------------------------------------------------------------------------


class SwdPort(Protocol):
    """A debug probe wired to one slot's device; one target open at a time."""

    def list_probes(self) -> list[ProbeInfo]:
        """Attached probes (empty when none); never prompts."""
        ...

    def open(
        self, platform: Platform | str, unique_id: str | None = None, cancel: ClockEvent | None = None
    ) -> TargetInfo:
        """Connect to the device through the probe; a locked target opens with ``locked`` True."""
        ...

    def mass_erase(self, progress: ProgressFn | None = None, cancel: ClockEvent | None = None) -> None:
        """Erase the whole chip (unlocking a locked nRF52). Destructive."""
        ...

    def program(
        self, image: RestoreImage, progress: ProgressFn | None = None, cancel: ClockEvent | None = None
    ) -> None:
        """Erase the sectors the image touches and write it."""
        ...

    def verify(self, image: RestoreImage, progress: ProgressFn | None = None, cancel: ClockEvent | None = None) -> None:
        """Read the image's ranges back; raise VerifyError at the first difference."""
        ...

    def reset_and_run(self, cancel: ClockEvent | None = None) -> None:
        """Reset the device and let it run."""
        ...

    def close(self) -> None:
        """Let go of the probe (safe to call twice)."""
        ...


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore` did."""

    target: TargetInfo
    bytes_written: int
    mass_erased: bool
    notes: tuple[str, ...] = field(default=())


def restore(
    port: SwdPort,
    platform: Platform | str,
    image: RestoreImage,
    *,
    unique_id: str | None = None,
    allow_unlock: bool = True,
    progress: ProgressFn | None = None,
    cancel: ClockEvent | None = None,
) -> RestoreResult:
    """Restore a device over SWD: open, check the image, mass erase where needed, program, verify, reset.

    ``allow_unlock`` False refuses (TargetLocked) to mass-erase a locked device open.

        >>> restore(SimSwdProbe(clock), "boron", parse_hex(text), progress=print)  # doctest: +SKIP
    """
    plat = as_platform(platform)
    support = target_support(plat)
    segments = image_segments(image)
    check_image(plat, segments)  # before touching the device: a wrong image must not cost a mass erase
    info = port.open(plat, unique_id, cancel)
    notes: list[str] = []
    try:
        check_image(plat, segments, info.flash)
        if info.locked and not (allow_unlock and support.unlock_by_mass_erase):
            raise TargetLocked(info.target)
        mass_erase = info.locked or support.mass_erase_for_restore
        if mass_erase:
            why = "it is locked (APPROTECT)" if info.locked else "a restore rewrites the SoftDevice and MBR"
            note = f"mass erase of the {info.target}: {why}; this wipes its whole flash, which the restore rewrites"
            log.warning("%s", note)
            notes.append(note)
            port.mass_erase(progress, cancel)
        port.program(segments, progress, cancel)
        port.verify(segments, progress, cancel)
        port.reset_and_run(cancel)
    finally:
        port.close()
    return RestoreResult(info, sum(len(data) for _a, data in segments), mass_erase, tuple(notes))


# --- the real driver on pyOCD -----------------------------------------------------------------------

T = TypeVar("T")


class _Aborted(Exception):
    """Raised inside pyOCD's progress hook to unwind a cancelled or timed-out operation."""


class _Job:
    """One pyOCD call on a worker thread: its result, and the progress it reports.

    Progress waits in ``pending`` for the caller's thread, the latest report per phase, so the caller sees
    every phase even when a short one starts and ends between two of its looks.
    """

    def __init__(self) -> None:
        self.done = threading.Event()
        self.abort = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.moves = 0  # reports so far: the caller's stall timer restarts when this changes
        self._pending: list[tuple[int, int, str]] = []
        self._lock = threading.Lock()

    def report(self, done: int, total: int, phase: str) -> None:
        if self.abort:
            raise _Aborted()
        with self._lock:
            if self._pending and self._pending[-1][2] == phase:
                self._pending[-1] = (done, total, phase)
            else:
                self._pending.append((done, total, phase))
            self.moves += 1

    def take(self) -> list[tuple[int, int, str]]:
        with self._lock:
            taken, self._pending = self._pending, []
        return taken


class _Progress:
    """Delivers progress to the caller: each phase's bytes never go down, repeats are dropped."""

    def __init__(self, fn: ProgressFn | None):
        self._fn = fn
        self._last: tuple[int, int, str] | None = None

    def __call__(self, done: int, total: int, phase: str) -> None:
        last = self._last
        if last is not None and last[2] == phase:
            done = max(done, last[0])
        now = (min(done, total), total, phase)
        if now != last:
            self._last = now
            if self._fn is not None:
                self._fn(*now)


class PyocdSwd:
    """The swd port on pyOCD, for a CMSIS-DAP probe (the Particle Debugger) or any probe pyOCD drives.

    ``packs`` are CMSIS ``.pack`` files (the STM32F2xx pack for Gen2); ``frequency_hz`` the SWD clock.
    ``session_factory`` and ``loader_factory`` stand in for pyOCD's Session and MemoryLoader in tests.

        >>> swd = PyocdSwd()
        >>> swd.list_probes()                     # doctest: +SKIP
        [ProbeInfo(unique_id='0240000034544e45', vendor='ARM', product='DAPLink CMSIS-DAP', ...)]
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        packs: Sequence[str] = (),
        frequency_hz: int = DEFAULT_FREQUENCY_HZ,
        connect_mode: str = "halt",
        session_factory: Callable[..., Any] | None = None,
        loader_factory: Callable[..., Any] | None = None,
    ):
        self.clock = clock or RealClock()
        self.packs = tuple(str(p) for p in packs)
        self.frequency_hz = frequency_hz
        self.connect_mode = connect_mode
        self._session_factory = session_factory
        self._loader_factory = loader_factory
        self._session: Any = None
        self._info: TargetInfo | None = None
        self._support: TargetSupport | None = None
        self._stuck: threading.Thread | None = None

    # -- the port --
    def list_probes(self) -> list[ProbeInfo]:
        return [info for _probe, info in self._discover(None)]

    def open(
        self, platform: Platform | str, unique_id: str | None = None, cancel: ClockEvent | None = None
    ) -> TargetInfo:
        plat = as_platform(platform)
        support = target_support(plat)
        self.close()
        target = self._call("target lookup", lambda job: self.resolve_target(plat), LOOKUP_TIMEOUT_S, cancel)
        found = self._discover(cancel)
        chosen = choose_probe([info for _p, info in found], unique_id)
        probe = next(p for p, info in found if info is chosen)
        self._support = support
        locked = self._connect(probe, target, cancel)
        flash = self._flash_regions()
        self._info = TargetInfo(chosen, plat.name, target, locked, flash)
        return self._info

    def mass_erase(self, progress: ProgressFn | None = None, cancel: ClockEvent | None = None) -> None:
        session, info = self._require()
        support = self._support
        report = _Progress(progress)
        report(0, info.flash_bytes, PHASE_MASS_ERASE)
        if not info.locked:
            # A mass erase cannot be stopped half way on the chip: on Stop, wait for it to finish.
            ok = self._call(
                "mass erase",
                lambda job: session.target.mass_erase(),
                MASS_ERASE_TIMEOUT_S,
                cancel,
                grace=MASS_ERASE_TIMEOUT_S,
            )
            if ok is False:  # pyOCD's nRF52 mass_erase returns False when ERASEALL never completed
                raise SwdTransferError(
                    f"the mass erase of the {info.target} did not complete: check the cable and that the device "
                    "stays powered, then run the restore again"
                )
        # Reconnect with pyOCD's auto_unlock: a locked nRF52 gets its CTRL-AP ERASEALL right there (pyOCD's own,
        # tested path), and a chip just erased is found blank. Either way pyOCD then writes UICR.APPROTECT =
        # HwDisabled on hardened-APPROTECT silicon, so the erased chip does not lock itself again at its next reset.
        self._reconnect(cancel, auto_unlock=bool(support and support.unlock_by_mass_erase))
        report(info.flash_bytes, info.flash_bytes, PHASE_MASS_ERASE)

    def program(
        self, image: RestoreImage, progress: ProgressFn | None = None, cancel: ClockEvent | None = None
    ) -> None:
        session, info = self._require()
        if info.locked:
            raise TargetLocked(info.target)
        segments = image_segments(image)
        total = sum(len(data) for _a, data in segments)
        loader_factory = self._loader_factory or _pyocd_memory_loader()

        def work(job: _Job) -> None:
            state = {"phase": PHASE_ERASE, "last": 0.0}

            def hook(fraction: float) -> None:
                # MemoryLoader reports erase 0..1 and then program 0..1 through this one callback; the
                # drop back marks the start of programming.
                if state["phase"] == PHASE_ERASE and fraction < state["last"]:
                    state["phase"] = PHASE_PROGRAM
                state["last"] = fraction
                job.report(int(fraction * total), total, str(state["phase"]))

            # Sector erase: sectors the image does not touch (the Gen2 DCT and EEPROM) are not erased at all.
            # keep_unwritten: the rest of an erased sector keeps its bytes, chiefly the UICR, where pyOCD's
            # unlock wrote APPROTECT = HwDisabled and the restore image writes other words (UNVERIFIED on
            # hardware whether Particle's .hex sets APPROTECT itself).
            loader = loader_factory(session, progress=hook, chip_erase="sector", smart_flash=True, keep_unwritten=True)
            try:
                for address, data in segments:
                    loader.add_data(address, data)
            except ValueError as exc:  # pyOCD: no (writable) memory region at an address
                raise ImageError(f"the restore image does not fit the {info.target}: {exc}") from None
            loader.commit()
            job.report(total, total, PHASE_PROGRAM)

        self._call("programming", work, STALL_TIMEOUT_S, cancel, progress, limit=_limit(total))

    def verify(self, image: RestoreImage, progress: ProgressFn | None = None, cancel: ClockEvent | None = None) -> None:
        session, info = self._require()
        if info.locked:
            raise TargetLocked(info.target)
        segments = image_segments(image)
        total = sum(len(data) for _a, data in segments)

        def work(job: _Job) -> None:
            done = 0
            job.report(0, total, PHASE_VERIFY)
            for address, data in segments:
                for offset in range(0, len(data), VERIFY_CHUNK):
                    want = data[offset : offset + VERIFY_CHUNK]
                    got = bytes(session.target.read_memory_block8(address + offset, len(want)))
                    if got != want:
                        at = next(i for i, (a, b) in enumerate(zip(want, got, strict=True)) if a != b)
                        raise VerifyError(address + offset + at, want[at], got[at])
                    done += len(want)
                    job.report(done, total, PHASE_VERIFY)

        self._call("verify", work, STALL_TIMEOUT_S, cancel, progress, limit=_limit(total))

    def reset_and_run(self, cancel: ClockEvent | None = None) -> None:
        session, _info = self._require()
        self._call("reset", lambda job: session.target.reset(), RESET_TIMEOUT_S, cancel)

    def close(self) -> None:
        session, self._session, self._info = self._session, None, None
        if session is None:
            return
        try:
            self._call("close", lambda job: session.close(), CLOSE_TIMEOUT_S)
        except SwdError as exc:  # closing must not hide the error that led here
            log.warning("closing the SWD session: %s", exc)

    # -- targets --
    def resolve_target(self, platform: Platform | str) -> str:
        """The pyOCD target type for the platform; raises NoTarget or PackMissing (blocking: pack files are read)."""
        from pyocd.target import TARGET
        from pyocd.target.pack import pack_target

        plat = as_platform(platform)
        support = target_support(plat)
        if support.pack is None:
            return support.targets[0]
        detail = ""
        if self.packs:
            try:
                pack_target.PackTargets.populate_targets_from_pack(list(self.packs))
            except Exception as exc:  # any failure to read a pack file means the same to the technician
                raise PackMissing(plat.display_name, support, f"the pack file cannot be read: {exc}") from None
            detail = f"{', '.join(self.packs)} has no {support.mcu}"
        for name in support.targets:
            if name not in TARGET:
                # packs installed with `pyocd pack install` live in cmsis-pack-manager's cache
                pack_target.ManagedPacks.populate_target(name)
            if name in TARGET:
                return name
        raise PackMissing(plat.display_name, support, detail)

    # -- internals --
    def _require(self) -> tuple[Any, TargetInfo]:
        if self._session is None or self._info is None:
            raise SwdTransferError("no device is open on the SWD debugger: open it first")
        return self._session, self._info

    def _discover(self, cancel: ClockEvent | None) -> list[tuple[Any, ProbeInfo]]:
        def work(job: _Job) -> list[tuple[Any, ProbeInfo]]:
            from pyocd.probe import aggregator

            # Never pyOCD's ConnectHelper: it prompts on a terminal when several probes are attached.
            found = []
            for probe in aggregator.DebugProbeAggregator.get_all_connected_probes(unique_id=None):
                info = _probe_info(probe)
                if info is not None:
                    found.append((probe, info))
            return sorted(found, key=lambda pair: pair[1].unique_id)

        return self._call("probe search", work, LIST_TIMEOUT_S, cancel)

    def _options(self, target: str, auto_unlock: bool = False) -> dict[str, Any]:
        return {
            # pyOCD chdirs to its project dir (PYOCD_PROJECT_DIR in the environment); the kiosk's own stays put
            "project_dir": os.getcwd(),
            "target_override": target,
            "frequency": self.frequency_hz,
            "connect_mode": self.connect_mode,
            # The kiosk decides about unlocking (it is a mass erase), not pyOCD behind its back: the first
            # connect never unlocks, only the one after a mass erase the restore chose to do.
            "auto_unlock": auto_unlock,
            "hide_programming_progress": True,
            "no_config": True,  # a pyocd.yaml in the working directory must not change what the kiosk does
            "resume_on_disconnect": True,
        }

    def _connect(
        self,
        probe: Any,
        target: str,
        cancel: ClockEvent | None,
        auto_unlock: bool = False,
        timeout: float | None = None,
    ) -> bool:
        """Open a session; True when it stopped at a locked nRF52 (kept open, so the port can report it)."""
        factory = self._session_factory or _pyocd_session()
        try:
            session = factory(probe, auto_open=False, options=self._options(target, auto_unlock))
        except Exception as exc:
            raise self._translate(exc, "connect") from None
        self._session = session
        try:
            wait = CONNECT_TIMEOUT_S if timeout is None else timeout
            self._call("connect", lambda job: session.open(), wait, cancel, raw_errors=True, grace=wait)
            return False
        except (Cancelled, SwdError):
            self.close()
            raise
        except Exception as exc:
            if self._is_locked(session):
                return True
            error = self._open_error(session, exc)
            self.close()
            raise error from None

    def _reconnect(self, cancel: ClockEvent | None, auto_unlock: bool) -> None:
        info = self._info
        assert info is not None
        self.close()
        found = self._discover(cancel)
        probe = next((p for p, i in found if i.unique_id == info.probe.unique_id), None)
        if probe is None:
            raise ProbeNotFound(info.probe.unique_id, [i.unique_id for _p, i in found])
        # the connect may include pyOCD's unlock, itself a mass erase of up to 15 s
        if self._connect(probe, info.target, cancel, auto_unlock, MASS_ERASE_TIMEOUT_S):
            self.close()
            raise SwdTransferError(
                f"the {info.target} is still locked after the mass erase: power it off and on (unplug USB and "
                "battery), then run the restore again"
            )
        self._info = TargetInfo(info.probe, info.platform, info.target, False, info.flash)

    def _is_locked(self, session: Any) -> bool:
        target = getattr(session, "target", None)
        is_locked = getattr(target, "is_locked", None)
        # pyOCD's nRF52 reads APPROTECTSTATUS through the CTRL-AP, which it found before giving up on the cores
        if not callable(is_locked) or getattr(target, "ctrl_ap", None) is None:
            return False
        try:
            return bool(self._call("lock check", lambda job: is_locked(), CONNECT_TIMEOUT_S))
        except Exception:
            return False

    def _open_error(self, session: Any, exc: BaseException) -> SwdError:
        from pyocd.core import exceptions

        chain = []
        cause: BaseException | None = exc
        while cause is not None and len(chain) < 10:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        if any(isinstance(e, exceptions.ProbeError) for e in chain):
            return SwdTransferError(
                f"the SWD debugger could not be opened ({exc}): unplug it and plug it in again; if that does not "
                f"help, check that the kiosk may open it (udev rule {PROBE_UDEV_RULE})"
            )
        dp = getattr(getattr(session, "target", None), "dp", None)
        dpidr = getattr(getattr(dp, "dpidr", None), "idr", None)
        # The DP ID register is the very first SWD read, and pyOCD leaves it 0 until that read succeeds: a
        # transfer that failed before it (no ACK) means the device does not answer at all, unpowered or unwired.
        if dp is not None and not dpidr and any(isinstance(e, exceptions.TransferError) for e in chain):
            return NoTargetPower()
        return self._translate(exc, "connect")

    def _translate(self, exc: BaseException, what: str) -> SwdError:
        if isinstance(exc, SwdError):
            return exc
        from pyocd.core import exceptions

        support = self._support
        if isinstance(exc, exceptions.TargetSupportError) and support is not None and support.pack:
            return PackMissing(support.mcu, support, str(exc))
        hint = f" {support.hint}" if support is not None and support.hint else ""
        return SwdTransferError(
            f"SWD {what} failed ({_describe(exc)}): check the SWD ribbon cable and that the device stays powered, "
            f"then try again.{hint}"
        )

    def _flash_regions(self) -> tuple[tuple[int, int], ...]:
        memory_map = getattr(getattr(self._session, "target", None), "memory_map", None)
        regions = getattr(memory_map, "regions", ())
        return tuple(sorted((r.start, r.start + r.length) for r in regions if getattr(r, "is_flash", False)))

    def _call(
        self,
        what: str,
        fn: Callable[[_Job], T],
        timeout: float,
        cancel: ClockEvent | None = None,
        progress: ProgressFn | None = None,
        *,
        limit: float | None = None,
        grace: float = CANCEL_GRACE_S,
        raw_errors: bool = False,
    ) -> T:
        """Run ``fn`` on a worker thread and wait for it through the clock.

        ``timeout`` is the longest wait without progress, ``limit`` the longest in all. On Stop the worker
        is asked to abort and given ``grace`` seconds; on a timeout it is abandoned and the port refuses work
        until it ends (a hung USB transfer cannot be interrupted from Python). pyOCD's errors become
        SwdTransferError unless ``raw_errors`` (the caller classifies them).
        """
        if self._stuck is not None and self._stuck.is_alive():
            raise SwdTransferError(
                "the SWD debugger is still stuck in an earlier operation: unplug it, plug it in again and retry"
            )
        job = _Job()

        def run() -> None:
            # an actor of a simulated clock (the simulated probe's work takes device time); nothing on a real one
            with self.clock.actor():
                try:
                    job.result = fn(job)
                except BaseException as exc:
                    job.error = exc
                finally:
                    job.done.set()

        worker = threading.Thread(target=run, name=f"swd-{what}", daemon=True)
        worker.start()
        report = _Progress(progress)
        start = last_move = self.clock.now()
        seen = 0
        while not job.done.is_set():
            now = self.clock.now()
            left = timeout - (now - last_move)
            if limit is not None:
                left = min(left, limit - (now - start))
            if left <= 0:
                job.abort = True
                self._stuck = worker
                self._abandon()
                raise SwdTransferError(
                    f"the SWD debugger did not finish the {what} within {timeout:g} s: unplug it, plug it in again "
                    "and retry; if it happens again check the cable and lower the SWD clock"
                )
            try:
                if cancel is not None and cancel.is_set():  # wait_for looks at cancel only when it has to wait
                    raise Cancelled()
                self.clock.wait_for(lambda s=seen: job.done.is_set() or job.moves != s, left, cancel, poll=0.02)
            except Cancelled:
                job.abort = True
                if not self.clock.wait_for(job.done.is_set, grace, poll=0.02):
                    self._stuck = worker
                    self._abandon()
                raise
            if job.moves != seen:
                seen = job.moves
                last_move = self.clock.now()
                for item in job.take():
                    report(*item)
        for item in job.take():
            report(*item)
        if job.error is not None:
            if isinstance(job.error, _Aborted):
                raise Cancelled()
            if isinstance(job.error, SwdError | Cancelled) or raw_errors:
                raise job.error
            raise self._translate(job.error, what) from job.error
        return job.result

    def _abandon(self) -> None:
        """Let go of a session whose worker hangs: close it on a thread nobody waits for."""
        session, self._session, self._info = self._session, None, None
        if session is not None:
            threading.Thread(target=_close_quietly, args=(session,), name="swd-abandon", daemon=True).start()


def _describe(exc: BaseException) -> str:
    """An error and the causes pyOCD chained under it, outermost first: 'Target not detected ...: No ACK'."""
    texts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(texts) < 4:
        text = str(cause) or type(cause).__name__
        if text not in texts:
            texts.append(text)
        cause = cause.__cause__ or cause.__context__
    return ": ".join(texts)


def _limit(total_bytes: int) -> float:
    return 60.0 + total_bytes / MIN_PROGRAM_RATE


def _close_quietly(session: Any) -> None:
    try:
        session.close()
    except Exception as exc:  # nothing is waiting for this: log it and let go
        log.debug("closing an abandoned SWD session: %s", exc)


def _probe_info(probe: Any) -> ProbeInfo | None:
    """ProbeInfo for a pyOCD DebugProbe; None for one that cannot even say its id (it is in a bad state)."""
    try:
        unique_id = str(probe.unique_id)
    except Exception as exc:
        log.warning("a debug probe cannot be read and is skipped: %s", exc)
        return None
    values = []
    for attribute in ("vendor_name", "product_name", "description"):
        try:
            values.append(str(getattr(probe, attribute)))
        except Exception:
            values.append("")
    return ProbeInfo(unique_id, *values)


def _pyocd_session() -> Callable[..., Any]:
    from pyocd.core.session import Session

    return Session


def _pyocd_memory_loader() -> Callable[..., Any]:
    from pyocd.flash.loader import MemoryLoader

    return MemoryLoader
