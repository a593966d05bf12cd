"""`kiosk doctor`: checks a bench and says in words what is wrong and how to fix it.

The checks are a table (:data:`CHECKS`) of functions, each returning one :class:`CheckResult` per thing it
looked at: a name, ``ok``/``warn``/``fail``/``skip``, what was found or is wrong, and how to fix it. They run in
order and share a :class:`Doctor` context, so later checks (the slots) use what earlier ones found (the config,
the pin factory, the bench). A check that raises is reported as a failed check, never as a traceback.

On a real bench the checks look at the machine itself (``/sys``, ``/dev``, ``/proc``, ``/run/udev``, the udev
rules; all under :attr:`DoctorOptions.system_root`, so tests can point them at a made-up tree). On the
simulated bench the same questions are asked of the simulated twins: the simulated USB bus, the devices'
pseudo-terminals, the simulated probes. Checks about the host only (udev rules, ModemManager) are skipped
there, with the reason.

When a bench service runs (``kiosk service``, particle-kiosk-bench.service), it owns the bench: the doctor
asks it for the slots' devices, the journal and the library, and skips what would open the bench (GPIO lines,
serial ports, buttons, power, LED, SWD) rather than reach behind its back. When none runs, it says so and how
to start it, and checks the bench itself.

Nothing here moves a pin unless ``active`` is set; the active test goes through the slot's drivers, so the
hazard guard (MODE hold limits, no double click, the power drain time) applies as everywhere else.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.platforms import PLATFORMS, platform_by_name
from kiosk.config import DEFAULT_CONFIG, BenchConfig, ConfigError, load_config

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STATUSES = (OK, WARN, FAIL, SKIP)

#: What install.sh puts where (deploy/install.sh uses the same names).
UDEV_RULES_FILE = "etc/udev/rules.d/60-particle-kiosk.rules"
UDEV_SLOT_RULES_FILE = "etc/udev/rules.d/61-particle-kiosk-slots.rules"
INSTALL_HINT = "sudo deploy/install.sh (from the kiosk's source folder)"
#: SWD probes the kiosk's udev rules cover: the Particle Debugger (DAPLink) and the Raspberry Pi Debug Probe.
PROBE_IDS = ((0x0D28, 0x0204), (0x2E8A, 0x000C))
DEVICE_GROUP = "plugdev"
SERIAL_GROUP = "dialout"
GPIO_GROUP = "gpio"
#: The LED is watched this long (device seconds) when looking for light: a blink or a breath shows within it.
LED_LOOK_S = 3.0
#: Free disk below this fails the check, below the second it warns (bytes).
DISK_FAIL_BYTES = 100 * 1024 * 1024
DISK_WARN_BYTES = 500 * 1024 * 1024


@dataclass(frozen=True)
class CheckResult:
    """One finding: ``summary`` says what was found (or what is wrong), ``fix`` how to put it right."""

    name: str
    status: str
    summary: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "summary": self.summary, "fix": self.fix}

    def line(self) -> str:
        """One line for the technician: what, and for a problem how to fix it."""
        label = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL", SKIP: "skip"}[self.status]
        if not (self.fix and self.status in (WARN, FAIL)):
            return f"{label}  {self.name}: {self.summary}"
        stop = "" if self.summary.endswith((".", "!", "?")) else "."
        return f"{label}  {self.name}: {self.summary}{stop} Fix: {self.fix}"


@dataclass
class DoctorOptions:
    """What to check: the bench (config or ``--simulate``), whether to move pins, and where things live."""

    config: Path = DEFAULT_CONFIG
    simulate: str | None = None
    speed: float | None = None
    active: bool = False
    journal: Path | None = None
    library: Path | None = None
    platforms: tuple[str, ...] = ()
    system_root: Path = Path("/")
    socket: Path | None = None  # the bench service's (None: $KIOSK_SOCKET, else /run/particle-kiosk/bench.sock)


@dataclass
class Doctor:
    """What the checks share: the options, and what earlier checks found."""

    options: DoctorOptions
    config: BenchConfig | None = None
    config_error: str | None = None
    factory_error: str | None = None
    lines_error: str | None = None
    bench: Any = None  # kiosk.bench.Bench, once built
    bench_error: str | None = None
    devices: list[Any] = field(default_factory=list)  # hw.usb_identity.ParticleUsbDevice seen on USB
    usb_error: str | None = None
    libusb_missing: bool = False
    service: dict[str, Any] | None = None  # a running bench service's hello and bench.state: it owns the bench
    results: list[CheckResult] = field(default_factory=list)

    @property
    def simulated(self) -> bool:
        return self.options.simulate is not None

    def path(self, absolute: str) -> Path:
        """A system path under the system root (``/sys/...`` -> ``<root>/sys/...``)."""
        return self.options.system_root / absolute.lstrip("/")

    def close(self) -> None:
        if self.bench is not None:
            with contextlib.suppress(Exception):
                self.bench.close()
            self.bench = None


CheckFn = Callable[[Doctor], "CheckResult | list[CheckResult]"]


@dataclass(frozen=True)
class Check:
    name: str
    what: str  # what it checks, for `kiosk doctor --help` and the docs
    run: CheckFn


# --- config and GPIO ------------------------------------------------------------------------------------


def check_config(doc: Doctor) -> CheckResult:
    opts = doc.options
    if doc.simulated:
        from kiosk.bench import simulated_bench

        try:
            doc.bench = simulated_bench(opts.simulate, opts.speed)
        except (LookupError, ValueError) as exc:
            doc.config_error = str(exc)
            return CheckResult(
                "config",
                FAIL,
                f"--simulate {opts.simulate}: {exc}",
                "`kiosk scenarios` lists the scenarios; platforms are names such as boron or p2",
            )
        names = ", ".join(f"{s.index}: {s.scenario}@{s.device.platform.name}" for s in doc.bench.slots)
        return CheckResult("config", OK, f"simulated bench, {len(doc.bench.slots)} slot(s) ({names}); no file read")
    try:
        doc.config = load_config(opts.config)
    except ConfigError as exc:
        doc.config_error = str(exc)
        if not Path(opts.config).exists():
            fix = (
                f"install the example with {INSTALL_HINT}, or copy deploy/kiosk.example.toml to {opts.config} "
                "and set the pins and USB ports as wired (deploy/WIRING.md)"
            )
        else:
            fix = f"edit {opts.config} where the message points (deploy/kiosk.example.toml shows every key)"
        return CheckResult("config", FAIL, str(exc), fix)
    slots = ", ".join(f"{s.index + 1}: {s.name}" for s in doc.config.slots)
    return CheckResult("config", OK, f"{opts.config} is valid: {len(doc.config.slots)} slot(s) ({slots})")


SERVICE_UNIT = "particle-kiosk-bench"
SERVICE_OWNS = "the bench service owns the bench"


def _socket_path(doc: Doctor) -> Path:
    from kiosk.service.wire import DEFAULT_SOCKET

    return Path(doc.options.socket or os.environ.get("KIOSK_SOCKET") or DEFAULT_SOCKET)


def check_service(doc: Doctor) -> CheckResult:
    """Whether the bench service answers (hello, bench.state) on its socket: it, not the doctor, owns the bench."""
    if doc.simulated:
        return CheckResult("service", SKIP, "--simulate: the doctor's own simulated bench; the bench service is "
                           "not asked")  # fmt: skip
    from kiosk.commands.through_service import _probe
    from kiosk.service.client import BenchClient, ServiceError, ServiceUnavailable

    path = _socket_path(doc)
    start = f"sudo systemctl start {SERVICE_UNIT} (the touchscreen and `kiosk recover` go through it)"
    found = _probe(path)
    if found == "none":
        why = "its socket does not exist" if not path.exists() else "nobody listens on its socket (it stopped)"
        return CheckResult("service", WARN, f"the bench service is not running: {why} ({path}); the doctor checks "
                           "the bench itself", start)  # fmt: skip
    if found == "denied":
        return CheckResult("service", FAIL, f"{path} is there, but this user may not use it", "join the kiosk's "
                           "group: sudo usermod -aG kiosk $USER, then log in again")  # fmt: skip
    try:
        with BenchClient(path, client="kiosk doctor", role="cli").connect(3.0) as client:
            state = client.call("bench.state", timeout=10)
            hello = client.hello or {}
    except (ServiceError, ServiceUnavailable, TimeoutError, OSError) as exc:
        return CheckResult("service", FAIL, f"something listens on {path} but does not answer as the bench service: "
                           f"{exc}", f"sudo systemctl restart {SERVICE_UNIT}; journalctl -u {SERVICE_UNIT} -b says "
                           "what it did")  # fmt: skip
    doc.service = {"hello": hello, **state}
    busy = [s["index"] for s in state.get("slots", []) if s.get("activity") not in (None, "idle")]
    doing = f"; slot(s) {', '.join(map(str, busy))} busy now" if busy else ""
    return CheckResult("service", OK, f"the bench service runs (pid {hello.get('pid', '?')}, {state.get('bench')}, "
                       f"{len(state.get('slots', []))} slot(s){doing}) on {path}: it owns the bench, so the checks "
                       "that would open the bench are skipped")  # fmt: skip


def _owned(doc: Doctor, name: str, what: str = "") -> CheckResult:
    """A check the running bench service makes moot: the doctor does not open the bench behind its back."""
    extra = f"; {what}" if what else ""
    return CheckResult(name, SKIP, f"{SERVICE_OWNS} (see service): not opened behind its back{extra}")


def _gpio_chips(doc: Doctor) -> list[Path]:
    dev = doc.path("/dev")
    return sorted(dev.glob("gpiochip*")) if dev.is_dir() else []


def check_pin_factory(doc: Doctor) -> CheckResult:
    if doc.simulated:
        if doc.bench is None:
            return CheckResult("pin-factory", SKIP, "no simulated bench (see config)")
        factory = type(doc.bench.slots[0].buttons.reset.pin.factory).__name__
        return CheckResult("pin-factory", OK, f"simulated pins ({factory}); no GPIO hardware needed")
    wanted = os.environ.get("GPIOZERO_PIN_FACTORY")
    if wanted and wanted != "lgpio":
        doc.factory_error = f"GPIOZERO_PIN_FACTORY={wanted}"
        return CheckResult(
            "pin-factory",
            FAIL,
            f"GPIOZERO_PIN_FACTORY is {wanted!r}; only lgpio works on every Pi "
            "(the Pi 5's GPIO is not reachable by the older libraries)",
            "set GPIOZERO_PIN_FACTORY=lgpio (/etc/particle-kiosk/environment does) or unset it",
        )
    try:
        import lgpio  # noqa: F401  (gpiozero's pin factory for the Pi 4 and 5)
    except ImportError as exc:
        doc.factory_error = "lgpio missing"
        return CheckResult(
            "pin-factory",
            FAIL,
            f"the lgpio library is not installed in {sys.prefix} ({exc})",
            f"{sys.prefix}/bin/pip install lgpio (install.sh installs it into /opt/particle-kiosk/venv)",
        )
    chips = _gpio_chips(doc)
    if not chips:
        doc.factory_error = "no gpiochip"
        return CheckResult(
            "pin-factory",
            FAIL,
            "no GPIO chip (/dev/gpiochip*): this machine has no GPIO header",
            "run the kiosk on a Raspberry Pi 4 or 5 with Raspberry Pi OS Bookworm; to try it without "
            "hardware use --simulate SCENARIO",
        )
    denied = [c for c in chips if not os.access(c, os.R_OK | os.W_OK)]
    if len(denied) == len(chips):
        doc.factory_error = "gpiochip permission"
        return CheckResult(
            "pin-factory",
            FAIL,
            f"no permission to open {', '.join(map(str, denied))}",
            f"run the kiosk as the kiosk user, or add this user to group {GPIO_GROUP} "
            f"(sudo usermod -aG {GPIO_GROUP} $USER, then log in again)",
        )
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        factory = LGPIOFactory()
    except Exception as exc:  # lgpio.error, OSError, gpiozero's errors: all mean "not usable here"
        doc.factory_error = str(exc)
        return CheckResult(
            "pin-factory",
            FAIL,
            f"gpiozero's lgpio pin factory cannot start: {exc}",
            f"check that this is a Raspberry Pi and /dev/gpiochip* is readable by this user (group {GPIO_GROUP})",
        )
    chip = factory.chip
    with contextlib.suppress(Exception):
        factory.close()
    return CheckResult("pin-factory", OK, f"lgpio on /dev/gpiochip{chip}")


def _line_users(doc: Doctor, pins: list[int]) -> dict[int, str]:
    """Pins already requested on the GPIO chip, with who holds them (gpiochip line info; nothing is claimed)."""
    import lgpio
    from gpiozero.pins.lgpio import LGPIOFactory

    factory = LGPIOFactory()
    try:
        chip = factory.chip
    finally:
        factory.close()
    handle = lgpio.gpiochip_open(chip)
    try:
        held = {}
        for pin in pins:
            _, _, flags, _, user = lgpio.gpio_get_line_info(handle, pin)
            if flags & 1:  # "in use by the kernel": a driver or another process has requested the line
                held[pin] = user or "an unnamed user"
        return held
    finally:
        lgpio.gpiochip_close(handle)


def check_gpio_lines(doc: Doctor) -> CheckResult:
    if doc.service is not None:
        doc.lines_error = SERVICE_OWNS
        return _owned(doc, "gpio-lines", "its lines are claimed by it")
    if doc.simulated:
        if doc.bench is None:
            return CheckResult("gpio-lines", SKIP, "no simulated bench (see config)")
        pins = [p for s in doc.bench.slots for p in (s.buttons.reset.pin, s.buttons.mode.pin)]
        pressed = [s.index for s in doc.bench.slots if s.buttons.reset.pressed or s.buttons.mode.pressed]
        if pressed:
            return CheckResult(
                "gpio-lines",
                FAIL,
                f"buttons of slot(s) {pressed} are pressed with nobody asking",
                "this is a simulator fault: report it",
            )
        return CheckResult("gpio-lines", OK, f"{len(pins)} button lines claimed once each, all released")
    if doc.config is None or doc.factory_error:
        doc.lines_error = "not checked"
        return CheckResult("gpio-lines", SKIP, "needs a valid config and a usable pin factory (see above)")
    pins = sorted(p for s in doc.config.slots for p in s.pins)
    try:
        held = _line_users(doc, pins)
    except Exception as exc:
        doc.lines_error = str(exc)
        return CheckResult(
            "gpio-lines",
            FAIL,
            f"cannot read the GPIO lines' state: {exc}",
            f"check that this user may open /dev/gpiochip* (group {GPIO_GROUP})",
        )
    if held:
        doc.lines_error = "lines busy"
        who = "; ".join(f"GPIO{p} by {u!r}" for p, u in sorted(held.items()))
        return CheckResult(
            "gpio-lines",
            FAIL,
            f"GPIO lines of the bench are already in use: {who}",
            "stop whatever holds them (the kiosk itself: sudo systemctl stop particle-kiosk; "
            "a device-tree overlay in /boot/firmware/config.txt: remove it), or move the bench to "
            "free pins in the config",
        )
    return CheckResult("gpio-lines", OK, f"GPIO {', '.join(map(str, pins))} are free")


def _bench(doc: Doctor) -> Any:
    """The bench (built once); None with ``bench_error`` saying why when it cannot be had."""
    if doc.bench is not None or doc.bench_error is not None:
        return doc.bench
    if doc.service is not None:
        doc.bench_error = f"{SERVICE_OWNS}; to test it here, stop it first (sudo systemctl stop {SERVICE_UNIT})"
        return None
    if doc.simulated:
        doc.bench_error = doc.config_error or "no simulated bench"
        return None
    if doc.config is None:
        doc.bench_error = "needs a valid config (see config)"
    elif doc.factory_error:
        doc.bench_error = "needs a usable pin factory (see pin-factory)"
    elif doc.lines_error:
        doc.bench_error = "needs the bench's GPIO lines free (see gpio-lines)"
    else:
        from kiosk.bench import HardwareNotFound, hardware_bench

        try:
            doc.bench = hardware_bench(doc.config)
        except HardwareNotFound as exc:
            doc.bench_error = str(exc)
        except Exception as exc:  # a pin that cannot be claimed as wired (fixed pull, busy): say which
            doc.bench_error = f"the bench's pins cannot be set up: {exc}"
    return doc.bench


# --- USB --------------------------------------------------------------------------------------------------


def check_libusb(doc: Doctor) -> CheckResult:
    if doc.simulated:
        backend = doc.bench.slots[0].usb_backend if doc.bench is not None else None
        if backend is None:
            return CheckResult("libusb", SKIP, "no simulated bench (see config)")
        return CheckResult("libusb", OK, f"simulated USB bus ({type(backend).__name__}); libusb is not needed")
    import usb.backend.libusb1

    backend = usb.backend.libusb1.get_backend()
    if backend is None:
        doc.libusb_missing = True
        return CheckResult(
            "libusb",
            FAIL,
            "pyusb finds no libusb-1.0, so the kiosk cannot talk to devices",
            "sudo apt-get install libusb-1.0-0",
        )
    return CheckResult("libusb", OK, "libusb-1.0 found")


def _slot_ports(doc: Doctor) -> dict[str, str]:
    """USB port path -> slot label, from the bench or the config."""
    if doc.bench is not None:
        return {s.usb_port: f"slot {s.index} ({s.name})" for s in doc.bench.slots if s.usb_port}
    if doc.config is not None:
        return {s.usb_port: f"slot {s.index + 1} ({s.name})" for s in doc.config.slots if s.usb_port}
    return {}


def _devices(doc: Doctor, backend: Any) -> list[Any]:
    """Particle devices on USB; with a bench, each slot's device gets the time a booting device needs to show."""
    from hw.usb_identity import find_particle_devices
    from kiosk import modes

    bench = _bench(doc) if doc.simulated or doc.config is not None else None
    if bench is not None:
        for slot in bench.slots:
            modes.wait_for_device(slot, modes.FIND_TIMEOUT_S)
    return find_particle_devices(backend)


def _service_devices(doc: Doctor) -> CheckResult:
    """The slots' devices as the bench service sees them (its USB poller looks at every idle slot)."""
    doc.usb_error = SERVICE_OWNS
    slots = doc.service.get("slots", [])
    seen = [f"slot {s['index']}: {s.get('platform') or '?'} {s['device_id']} ({s.get('usb_mode') or '?'} mode)"
            for s in slots if s.get("device_id") and s.get("present") is not False]  # fmt: skip
    if not seen:
        return CheckResult("usb-devices", WARN, "the bench service sees no Particle device in any slot",
                           "plug a device into a slot (one with no LED at all needs SWD: see swd-probe)")
    return CheckResult("usb-devices", OK, "; ".join(seen) + " (as the bench service sees them)")


def check_usb_devices(doc: Doctor) -> CheckResult:
    from hw.usb_identity import UsbAccessError

    if doc.service is not None:
        return _service_devices(doc)

    backend = doc.bench.slots[0].usb_backend if doc.simulated and doc.bench is not None else None
    if doc.simulated and backend is None:
        return CheckResult("usb-devices", SKIP, "no simulated bench (see config)")
    if doc.libusb_missing:
        doc.usb_error = "no libusb"
        return CheckResult("usb-devices", SKIP, "needs libusb (see libusb)")
    try:
        doc.devices = _devices(doc, backend)
    except UsbAccessError as exc:
        doc.usb_error = str(exc)
        first = str(exc).splitlines()[0]
        return CheckResult(
            "usb-devices",
            FAIL,
            f"USB devices cannot be listed: {first}",
            f"install the udev rules ({INSTALL_HINT}) and make sure libusb-1.0 is installed",
        )
    except Exception as exc:  # pyusb on a machine with no USB at all
        doc.usb_error = str(exc)
        return CheckResult("usb-devices", FAIL, f"USB devices cannot be listed: {exc}", "check libusb (see libusb)")
    ports = _slot_ports(doc)
    if not doc.devices:
        return CheckResult(
            "usb-devices",
            WARN,
            "no Particle device on USB",
            "plug a device into a slot (a device with no LED at all needs SWD: see swd-probe)",
        )
    strays = [d for d in doc.devices if ports and d.port_path not in ports]
    seen = "; ".join(f"{d.label}{' = ' + ports[d.port_path] if d.port_path in ports else ''}" for d in doc.devices)
    if strays:
        where = ", ".join(f"{d.platform.display_name} at {d.port_path}" for d in strays)
        return CheckResult(
            "usb-devices",
            WARN,
            f"{where}: on a USB port no slot names (seen: {seen})",
            "set that slot's usb_port in the config to the port shown, or plug the device into a slot's port",
        )
    return CheckResult("usb-devices", OK, seen)


@dataclass(frozen=True)
class UdevRule:
    """One udev rule line: its match keys and its assignments, as written."""

    matches: dict[str, str]
    assigns: dict[str, str]
    text: str


_UDEV_PAIR = re.compile(r'\s*([A-Za-z_]+(?:\{[^}]*\})?)\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_udev_rules(text: str) -> list[UdevRule]:
    """The rules in a udev rules file (continuation lines joined); ValueError names a line that does not parse."""
    rules = []
    logical = []
    buffer = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append((number, buffer + line))
        buffer = ""
    for number, line in logical:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        matches: dict[str, str] = {}
        assigns: dict[str, str] = {}
        pos = 0
        while pos < len(stripped):
            m = _UDEV_PAIR.match(stripped, pos)
            if m is None:
                raise ValueError(f'line {number}: cannot read {stripped[pos:]!r} (expected KEY=="value", ...)')
            key, op, value = m.group(1), m.group(2), m.group(3)
            (matches if op in ("==", "!=") else assigns)[key if op != "!=" else f"{key}!"] = value
            pos = m.end()
        rules.append(UdevRule(matches, assigns, stripped))
    return rules


def udev_pattern_matches(pattern: str, value: str) -> bool:
    """Whether a udev match value (shell glob, ``|`` alternatives) matches ``value``."""
    return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


def usb_ids_to_cover() -> list[tuple[int, int, str]]:
    """Every USB id the kiosk's rules must give access to: each platform's normal and DFU ids, and the probes."""
    ids = []
    for p in PLATFORMS:
        if p.usb_vid is None:
            continue
        for pid, mode in ((p.usb_pid_normal, "normal"), (p.usb_pid_dfu, "dfu")):
            if pid is not None:
                ids.append((p.usb_vid, pid, f"{p.name} {mode}"))
    ids.extend((vid, pid, "SWD probe") for vid, pid in PROBE_IDS)
    return ids


def rule_for(rules: list[UdevRule], vid: int, pid: int, subsystem: str = "usb") -> UdevRule | None:
    """The last rule that gives the USB device (or its ``tty``) ``vid:pid`` a mode, as udev would apply it."""
    found = None
    for rule in rules:
        m = rule.matches
        if "SUBSYSTEM" in m and not udev_pattern_matches(m["SUBSYSTEM"], subsystem):
            continue
        attrs = ("ATTR", "ATTRS") if subsystem == "usb" else ("ATTRS",)
        vendor = next((m[f"{a}{{idVendor}}"] for a in attrs if f"{a}{{idVendor}}" in m), None)
        product = next((m[f"{a}{{idProduct}}"] for a in attrs if f"{a}{{idProduct}}" in m), None)
        if vendor is None or not udev_pattern_matches(vendor, f"{vid:04x}"):
            continue
        if product is not None and not udev_pattern_matches(product, f"{pid:04x}"):
            continue
        if "MODE" in rule.assigns or "ENV{ID_MM_DEVICE_IGNORE}" in rule.assigns:
            found = rule if "MODE" in rule.assigns or found is None else found
    return found


def udev_rule_problems(text: str) -> list[str]:
    """What is wrong with the kiosk's udev rules text: ids not covered, world-writable modes, ModemManager."""
    try:
        rules = parse_udev_rules(text)
    except ValueError as exc:
        return [f"syntax: {exc}"]
    problems = []
    for vid, pid, what in usb_ids_to_cover():
        rule = rule_for(rules, vid, pid)
        if rule is None or "MODE" not in rule.assigns:
            problems.append(f"{vid:04x}:{pid:04x} ({what}) has no rule giving it a mode")
            continue
        mode, group = rule.assigns.get("MODE", ""), rule.assigns.get("GROUP", "")
        if mode != "0660" or group != DEVICE_GROUP:
            problems.append(
                f'{vid:04x}:{pid:04x} ({what}) gets MODE="{mode}" GROUP="{group}", '
                f'not MODE="0660" GROUP="{DEVICE_GROUP}"'
            )
        ignored = any(
            r.assigns.get("ENV{ID_MM_DEVICE_IGNORE}") == "1"
            for r in rules
            if r is rule or r in _tty_rules(rules, vid, pid)
        )
        if not ignored:
            problems.append(f"{vid:04x}:{pid:04x} ({what}): ModemManager is not told to ignore it")
    return problems


def _tty_rules(rules: list[UdevRule], vid: int, pid: int) -> list[UdevRule]:
    return [
        r
        for r in rules
        if udev_pattern_matches(r.matches.get("SUBSYSTEM", "tty"), "tty")
        and udev_pattern_matches(r.matches.get("ATTRS{idVendor}", "-"), f"{vid:04x}")
        and udev_pattern_matches(r.matches.get("ATTRS{idProduct}", "*"), f"{pid:04x}")
    ]


def check_udev_rules(doc: Doctor) -> CheckResult:
    if doc.simulated:
        return CheckResult("udev-rules", SKIP, "the simulated bench has no udev (see usb-access)")
    path = doc.path("/" + UDEV_RULES_FILE)
    if not path.is_file():
        return CheckResult(
            "udev-rules",
            FAIL,
            f"{'/' + UDEV_RULES_FILE} is missing: only root may open Particle devices and the SWD probe",
            f"install it with {INSTALL_HINT}",
        )
    problems = udev_rule_problems(path.read_text(errors="replace"))
    if problems:
        return CheckResult(
            "udev-rules",
            FAIL,
            f"{'/' + UDEV_RULES_FILE}: "
            + "; ".join(problems[:4])
            + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""),
            f"reinstall the rules with {INSTALL_HINT}",
        )
    stale = _stale_slot_rules(doc)
    if stale:
        return CheckResult(
            "udev-rules", WARN, stale, f"run {INSTALL_HINT} again: it writes the slot names from the config"
        )
    return CheckResult(
        "udev-rules",
        OK,
        f"{'/' + UDEV_RULES_FILE} covers every Particle id and the SWD probes, "
        f'MODE="0660" GROUP="{DEVICE_GROUP}", ModemManager told to keep off',
    )


def _stale_slot_rules(doc: Doctor) -> str | None:
    """Why the per-slot names (/dev/particle-kiosk/slotN-*) do not match the config, if they do not."""
    if doc.config is None:
        return None
    path = doc.path("/" + UDEV_SLOT_RULES_FILE)
    text = path.read_text(errors="replace") if path.is_file() else ""
    missing = [
        f"slot {s.index + 1} ({s.usb_port})"
        for s in doc.config.slots
        if s.usb_port and f'KERNELS=="{s.usb_port}"' not in text
    ]
    if missing:
        return f"the per-slot device names in {'/' + UDEV_SLOT_RULES_FILE} miss {', '.join(missing)}"
    return None


def _sysfs_usb_devices(doc: Doctor) -> Iterator[tuple[int, int, Path, str]]:
    """(vid, pid, device node, port) of every USB device in sysfs that the kiosk's rules are about."""
    wanted = {(vid, pid) for vid, pid, _ in usb_ids_to_cover()}
    base = doc.path("/sys/bus/usb/devices")
    if not base.is_dir():
        return
    for dev in sorted(base.iterdir()):
        try:
            vid = int((dev / "idVendor").read_text().strip(), 16)
            pid = int((dev / "idProduct").read_text().strip(), 16)
            bus = int((dev / "busnum").read_text().strip())
            num = int((dev / "devnum").read_text().strip())
        except (OSError, ValueError):
            continue
        if (vid, pid) in wanted:
            yield vid, pid, doc.path(f"/dev/bus/usb/{bus:03d}/{num:03d}"), dev.name


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_usb_access(doc: Doctor) -> CheckResult:
    if doc.simulated:
        if doc.usb_error:
            return CheckResult("usb-access", FAIL, doc.usb_error, "see usb-devices")
        named = [d for d in doc.devices if d.device_id]
        return CheckResult(
            "usb-access",
            OK,
            f"{len(named)} of {len(doc.devices)} simulated device(s) opened and identified by their serial strings",
        )
    found = list(_sysfs_usb_devices(doc))
    if not found:
        return CheckResult(
            "usb-access",
            WARN,
            "no Particle device or SWD probe on USB: permissions not checked",
            "plug in a device (and the probe, if fitted) and run `kiosk doctor` again",
        )
    problems, seen = [], []
    for vid, pid, node, port in found:
        label = f"{vid:04x}:{pid:04x} at {port} ({node})"
        try:
            st = node.stat()
        except OSError:
            problems.append(f"{label}: no device node")
            continue
        mode, group = st.st_mode & 0o777, _group_name(st.st_gid)
        if not os.access(node, os.R_OK | os.W_OK):
            problems.append(f"{label}: this user may not open it (mode {mode:04o}, group {group})")
        elif mode & 0o002:
            problems.append(
                f"{label}: world-writable (mode {mode:04o}); the kiosk's rule gives 0660 group {DEVICE_GROUP}"
            )
        else:
            seen.append(label)
    if problems:
        return CheckResult(
            "usb-access",
            FAIL,
            "; ".join(problems),
            f"install the udev rules ({INSTALL_HINT}), run `sudo udevadm trigger`, replug, and run the "
            f"kiosk as the kiosk user (or add yours to group {DEVICE_GROUP}: sudo usermod -aG "
            f"{DEVICE_GROUP} $USER)",
        )
    return CheckResult("usb-access", OK, "this user may open " + "; ".join(seen))


def _modem_manager_running(doc: Doctor) -> bool:
    proc = doc.path("/proc")
    if not proc.is_dir():
        return False
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "ModemManager":
                    return True
    return False


def _particle_ttys(doc: Doctor) -> list[tuple[str, str]]:
    """(tty name, "major:minor") of the Particle devices' serial ports, from sysfs."""
    base = doc.path("/sys/class/tty")
    found = []
    if not base.is_dir():
        return found
    for tty in sorted(base.iterdir()):
        if not tty.name.startswith("ttyACM"):
            continue
        usb = (tty / "device").resolve().parent if (tty / "device").exists() else None
        try:
            vid = int((usb / "idVendor").read_text().strip(), 16) if usb else None
            number = (tty / "dev").read_text().strip()
        except (OSError, ValueError):
            continue
        if vid in (0x2B04, 0x1D50):
            found.append((tty.name, number))
    return found


def _serial_ports_open(doc: Doctor) -> CheckResult:
    """Each normal-mode device's serial port is listed and opens (the simulated devices' ptys, or real ttys)."""
    from hw.serial_console import SerialError, find_port, open_port

    listers = {s.usb_port: s.serial_lister for s in doc.bench.slots} if doc.bench is not None else {}
    opened, problems = [], []
    for device in doc.devices:
        if device.mode != "normal" or not device.device_id:
            continue
        path = find_port(device.device_id, listers.get(device.port_path))
        if path is None:
            problems.append(f"{device.label}: no serial port listed")
            continue
        try:
            open_port(path).close()
            opened.append(path)
        except SerialError as exc:
            problems.append(f"{device.label}: {str(exc).splitlines()[0]}")
    if problems:
        return CheckResult(
            "serial-ports",
            FAIL,
            "; ".join(problems),
            f"install the udev rules ({INSTALL_HINT}); the kiosk user must be in group {SERIAL_GROUP}",
        )
    if not opened:
        return CheckResult(
            "serial-ports",
            OK if doc.simulated else WARN,
            "no device in normal mode: no serial port to open",
            "run `kiosk doctor` again with a running device plugged in",
        )
    return CheckResult("serial-ports", OK, f"opened {', '.join(opened)}")


def check_serial_ports(doc: Doctor) -> CheckResult:
    if doc.service is not None:
        return _owned(doc, "serial-ports", "it opens them")
    if doc.usb_error:
        return CheckResult("serial-ports", SKIP, "USB devices could not be listed (see usb-devices)")
    return _serial_ports_open(doc)


def check_modem_manager(doc: Doctor) -> CheckResult:
    if doc.simulated:
        return CheckResult("modemmanager", SKIP, "the simulated bench has no ModemManager (see serial-ports)")
    if not _modem_manager_running(doc):
        return CheckResult("modemmanager", OK, "ModemManager is not running: nothing probes the serial ports")
    ttys = _particle_ttys(doc)
    grabbed = []
    for name, number in ttys:
        data = doc.path(f"/run/udev/data/c{number}")
        text = data.read_text(errors="replace") if data.is_file() else ""
        if "E:ID_MM_DEVICE_IGNORE=1" not in text.splitlines():
            grabbed.append(f"/dev/{name}")
    if grabbed:
        return CheckResult(
            "modemmanager",
            FAIL,
            f"ModemManager may probe {', '.join(grabbed)} (no "
            "ID_MM_DEVICE_IGNORE on them): its AT commands disturb the device's console",
            f"install the udev rules ({INSTALL_HINT}) and run `sudo udevadm trigger`, or, if no modem "
            "is used: sudo systemctl disable --now ModemManager",
        )
    rules = doc.path("/" + UDEV_RULES_FILE)
    if not ttys and not (rules.is_file() and "ID_MM_DEVICE_IGNORE" in rules.read_text(errors="replace")):
        return CheckResult(
            "modemmanager",
            WARN,
            "ModemManager runs and nothing tells it to leave Particle ports alone",
            f"install the udev rules ({INSTALL_HINT}), or: sudo systemctl disable --now ModemManager",
        )
    return CheckResult("modemmanager", OK, f"ModemManager runs but ignores the Particle ports ({len(ttys)} now)")


# --- the slots ----------------------------------------------------------------------------------------------


def _slot_device(doc: Doctor, slot: Any) -> Any:
    from kiosk import modes

    try:
        found = modes.devices_on(slot)
    except Exception:
        return None
    return found[0] if found else None


def _pin_label(line: Any) -> str:
    pin = line.pin
    info = getattr(pin, "info", None)
    return getattr(info, "name", None) or str(getattr(pin, "number", pin))


def _buttons_passive(slot: Any) -> CheckResult:
    name = f"slot-{slot.index}-buttons"
    lines = (slot.buttons.reset, slot.buttons.mode)
    pressed = [line.name for line in lines if line.pressed]
    if pressed:
        return CheckResult(
            name,
            FAIL,
            f"{' and '.join(pressed)} read as pressed with nobody asking",
            "check the transistor on that line and button_active in the config",
        )
    wired = ", ".join(f"{line.name} on {_pin_label(line)} ({line.wiring})" for line in lines)
    return CheckResult(name, OK, f"{wired}: released (`kiosk doctor --active` presses them to test the wiring)")


def _buttons_active(doc: Doctor, slot: Any) -> CheckResult:
    """RESET: the device must leave USB and come back. MODE: through RESET, the safe-mode colour must show."""
    from kiosk import modes

    name = f"slot-{slot.index}-buttons"
    before = _slot_device(doc, slot)
    if before is None:
        return CheckResult(
            name,
            WARN,
            "no device on the slot's USB port: RESET and MODE cannot be tested",
            "put a working device in the slot and run `kiosk doctor --active` again",
        )
    slot.buttons.tap_reset()
    back = modes.wait_for_device(slot, modes.SWITCH_TIMEOUT_S, None, not_address=before.address)
    if back is None:
        return CheckResult(
            name,
            FAIL,
            f"RESET pressed on {_pin_label(slot.buttons.reset)}: the device did not restart (it never left USB)",
            "check the RESET wiring (transistor, pull-down on its "
            "gate, common ground) and button_active in the config (deploy/WIRING.md)",
        )
    if not slot.led.available:
        return CheckResult(
            name,
            WARN,
            "RESET restarts the device; MODE not tested: without an LED sensor the kiosk cannot see safe mode",
            "fit the LED sensor (deploy/WIRING.md) to test MODE",
        )
    stage = slot.buttons.enter_bootloader_stage("safe-mode")
    slot.buttons.tap_reset()  # leave safe mode: the device runs its app again
    modes.wait_for_device(slot, modes.SWITCH_TIMEOUT_S, None)
    if stage.by != "led":
        return CheckResult(
            name,
            FAIL,
            f"RESET works, but holding MODE on {_pin_label(slot.buttons.mode)} through "
            "RESET did not show safe mode's magenta",
            "check the MODE wiring (transistor, pull-down on "
            "its gate) and button_active in the config (deploy/WIRING.md)",
        )
    return CheckResult(
        name, OK, f"RESET restarts the device; MODE through RESET reached safe mode ({stage.held_s:.1f} s)"
    )


def _power_passive(slot: Any) -> CheckResult:
    name = f"slot-{slot.index}-power"
    if slot.power is None:
        return CheckResult(
            name,
            WARN,
            "no VBUS switch (vbus_pin): a cold boot needs a person to unplug the device",
            "wire a load switch or relay on VBUS (deploy/WIRING.md) and set vbus_pin",
        )
    en = " and EN" if getattr(slot.power, "en", None) is not None else ""
    if not slot.power.is_on:
        return CheckResult(
            name,
            WARN,
            f"VBUS{en} switched off: the slot's device has no USB power",
            "it comes back with the next cold boot; if it stays off, check vbus_active in the config",
        )
    return CheckResult(name, OK, f"VBUS{en} switched on (`kiosk doctor --active` cold-boots to test the switch)")


def _power_active(doc: Doctor, slot: Any) -> CheckResult:
    from kiosk import modes

    name = f"slot-{slot.index}-power"
    if slot.power is None:
        return _power_passive(slot)
    before = _slot_device(doc, slot)
    result = modes.cold_boot(slot)
    note = result.attempts[-1].outcome if result.attempts else ""
    if "stayed lit" in note:
        return CheckResult(
            name,
            FAIL,
            f"VBUS switched off, but the LED stayed lit: {note}",
            "unplug the device's battery or wire EN (en_pin); if there is no battery, check the load "
            "switch or relay and vbus_active (deploy/WIRING.md)",
        )
    if before is not None and result.reached is None:
        return CheckResult(
            name,
            FAIL,
            f"after the cold boot the device did not come back on USB ({note})",
            "check that VBUS comes back on (vbus_active in the config, the relay's NC contact)",
        )
    if not slot.led.available:
        return CheckResult(
            name,
            WARN,
            f"{note}; without an LED sensor the kiosk cannot tell the power really went",
            "fit the LED sensor (deploy/WIRING.md)",
        )
    return CheckResult(name, OK, f"cold boot: {note}; the LED went dark and the device came back")


def _led(doc: Doctor, slot: Any) -> CheckResult:
    name = f"slot-{slot.index}-led"
    if not slot.led.available:
        return CheckResult(
            name,
            WARN,
            "no LED sensor: the kiosk judges the device by USB and control requests only",
            "wire photodiodes or the RGB pads to three GPIOs and set led_pins (deploy/WIRING.md)",
        )
    device = _slot_device(doc, slot)
    powered = slot.power is None or slot.power.is_on
    reading = slot.led.watch(LED_LOOK_S)
    lit = reading.pattern != "off" or bool(reading.colours_seen)
    if lit:
        unknown = reading.pattern == "unknown" and reading.colours_seen
        shown = f"colours seen: {', '.join(reading.colours_seen)}" if unknown else reading.describe()
        return CheckResult(name, OK, f"the sensor sees the LED ({shown})")
    if device is not None and powered:
        return CheckResult(
            name,
            FAIL,
            f"the device is on USB but the sensor saw no light in {LED_LOOK_S:.0f} s",
            "check that the sensor sits over the RGB LED, its supply and ground, and led_active in the "
            "config (deploy/WIRING.md)",
        )
    return CheckResult(
        name,
        WARN,
        f"no light in {LED_LOOK_S:.0f} s and no device on USB: the sensor is not tested",
        "put a running device in the slot and run `kiosk doctor` again",
    )


def _slot_checks(doc: Doctor, kind: str) -> list[CheckResult]:
    bench = _bench(doc)
    if bench is None:
        return [
            CheckResult(
                f"slots-{kind}",
                SKIP if (doc.config is None and not doc.simulated) or doc.service is not None else FAIL,
                f"no bench to check: {doc.bench_error}",
                "fix the problems above first",
            )
        ]
    results = []
    for slot in bench.slots:
        try:
            if kind == "buttons":
                results.append(_buttons_active(doc, slot) if doc.options.active else _buttons_passive(slot))
            elif kind == "power":
                results.append(_power_active(doc, slot) if doc.options.active else _power_passive(slot))
            else:
                results.append(_led(doc, slot))
        except Exception as exc:  # HazardRefused, a USB error: one slot's trouble, said in words
            results.append(
                CheckResult(
                    f"slot-{slot.index}-{kind}",
                    FAIL,
                    f"{type(exc).__name__}: {exc}",
                    "see the message; `kiosk doctor` again once it is fixed",
                )
            )
    return results


def check_buttons(doc: Doctor) -> list[CheckResult]:
    return _slot_checks(doc, "buttons")


def check_power(doc: Doctor) -> list[CheckResult]:
    return _slot_checks(doc, "power")


def check_led(doc: Doctor) -> list[CheckResult]:
    return _slot_checks(doc, "led")


def check_swd_probe(doc: Doctor) -> CheckResult:
    bench = _bench(doc)
    if bench is None:
        return CheckResult("swd-probe", SKIP, f"no bench to check: {doc.bench_error}")
    wanted = [(s, s.swd_probe_id) for s in bench.slots if s.swd_probe_id]
    if not wanted:
        return CheckResult("swd-probe", SKIP, "no slot names an SWD probe (optional: swd_probe in the config)")
    missing, found = [], []
    for slot, probe_id in wanted:
        try:
            attached = [p.unique_id for p in slot.swd.list_probes()]
        except Exception as exc:
            missing.append(f"slot {slot.index}: probes cannot be listed ({exc})")
            continue
        if probe_id in attached:
            found.append(f"slot {slot.index}: {probe_id}")
        else:
            missing.append(f"slot {slot.index}: probe {probe_id} not found (attached: {', '.join(attached) or 'none'})")
    if missing:
        return CheckResult(
            "swd-probe",
            FAIL,
            "; ".join(missing),
            "plug the probe in (udev rules installed, see usb-access), or set swd_probe to an id "
            "that `pyocd list` shows",
        )
    return CheckResult("swd-probe", OK, "; ".join(found))


# --- files --------------------------------------------------------------------------------------------------


def _library(doc: Doctor) -> tuple[Any, str]:
    from firmware.library import FirmwareLibrary

    if doc.options.library is not None:
        return FirmwareLibrary(doc.options.library), str(doc.options.library)
    if doc.service is not None and doc.service.get("library"):  # the library the bench service recovers with
        root = doc.service["library"]
        return FirmwareLibrary(Path(root)), f"{root} (the bench service's)"
    if doc.simulated and doc.bench is not None:
        from kiosk.demo_library import demo_library

        lib = demo_library({s.device.platform.name for s in doc.bench.slots})
        return lib, f"the demo library ({lib.root})"
    from kiosk.commands.firmware_cmd import default_library

    return FirmwareLibrary(default_library()), str(default_library())


def check_library(doc: Doctor) -> CheckResult:
    from firmware.library import LibraryError
    from firmware.platforms import UnknownPlatformError

    try:
        wanted = {platform_by_name(p).name for p in doc.options.platforms}
    except UnknownPlatformError as exc:
        return CheckResult("library", FAIL, str(exc), "name platforms as `kiosk firmware list` does (e.g. boron, p2)")
    wanted |= {d.platform.name for d in doc.devices if d.platform.supported}
    lib, where = _library(doc)
    try:
        entries = lib.entries()
    except LibraryError as exc:
        return CheckResult("library", FAIL, str(exc), "see the message")
    if not entries:
        return CheckResult(
            "library",
            FAIL,
            f"the firmware library at {where} is empty: the kiosk cannot update or restore anything",
            "import Device OS releases (and Tinker, restore .hex files) with "
            "`kiosk firmware import FILE` as the kiosk user",
        )
    have = sorted({e.platform for e in entries if e.platform})
    problems, bundles = [], []
    for name in sorted(wanted) or have:
        try:
            bundles.append(f"{name} {lib.bundle(name).release}")
        except (LibraryError, UnknownPlatformError) as exc:
            (problems if name in wanted else []).append(str(exc))
    problems.extend(lib.verify())
    if problems:
        return CheckResult(
            "library",
            FAIL,
            f"{where}: " + "; ".join(problems),
            "import what is missing with `kiosk firmware import FILE` (changed files: import the original again)",
        )
    if not bundles:
        return CheckResult(
            "library",
            FAIL,
            f"{where} has no complete Device OS release for any platform",
            "import a whole release (every system part) with `kiosk firmware import`",
        )
    scope = "" if wanted else " (no device attached and no --platform: every platform with firmware)"
    return CheckResult("library", OK, f"{where}: Device OS {', '.join(bundles)}{scope}; every file verified")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _journal_path(doc: Doctor) -> Path:
    if doc.options.journal is not None:
        return doc.options.journal
    from kiosk.commands.recover_cmd import default_journal

    return default_journal()


def check_journal(doc: Doctor) -> CheckResult:
    if doc.options.journal is None and doc.service is not None:
        path = doc.service.get("journal")
        if path is None:
            return CheckResult("journal", FAIL, "the bench service keeps no journal", f"journalctl -u {SERVICE_UNIT} "
                               "-b says why; sudo systemctl restart it")  # fmt: skip
        interrupted = doc.service.get("interrupted") or []
        note = f"; runs {', '.join(map(str, interrupted))} were interrupted by a previous service" * bool(interrupted)
        return CheckResult("journal", OK, f"the bench service writes {path} (it has it open){note}")
    path = _journal_path(doc)
    if path.exists():
        try:
            db = sqlite3.connect(str(path), timeout=2.0)
            try:
                db.execute("BEGIN IMMEDIATE")  # takes the write lock, as writing a step does; nothing is written
                db.execute("ROLLBACK")
            finally:
                db.close()
        except sqlite3.Error as exc:
            return CheckResult(
                "journal",
                FAIL,
                f"the journal {path} cannot be written ({exc})",
                f"run the kiosk as the user that owns it (sudo -u kiosk kiosk ...), or: sudo chown -R "
                f"kiosk:kiosk {path.parent}",
            )
        return CheckResult("journal", OK, f"{path} is writable")
    base = _existing_ancestor(path.parent)
    if not os.access(base, os.W_OK | os.X_OK):
        return CheckResult(
            "journal",
            FAIL,
            f"the journal {path} does not exist and {base} is not writable by this user, so it cannot be made",
            f"run as the kiosk user (sudo -u kiosk kiosk doctor), or "
            f"create {path.parent} owned by that user ({INSTALL_HINT} does)",
        )
    return CheckResult("journal", OK, f"{path} will be made at the first run ({base} is writable)")


def check_disk(doc: Doctor) -> CheckResult:
    where = _existing_ancestor(_journal_path(doc).parent)
    usage = shutil.disk_usage(where)
    free = f"{usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.1f} GiB on {where}"
    if usage.free < DISK_FAIL_BYTES:
        return CheckResult(
            "disk",
            FAIL,
            free + ": the journal and firmware imports will fail",
            "free space (old demo libraries, logs: sudo journalctl --vacuum-size=100M)",
        )
    if usage.free < DISK_WARN_BYTES:
        return CheckResult(
            "disk", WARN, free + ": little room for Device OS releases", "free space or use a larger SD card"
        )
    return CheckResult("disk", OK, free)


CHECKS: tuple[Check, ...] = (
    Check("config", "the bench config is valid (or the simulated bench can be built)", check_config),
    Check("service", "whether the bench service runs (then it owns the bench, and the doctor asks it)", check_service),
    Check(
        "pin-factory", "gpiozero's lgpio pin factory works here (the only one that works on a Pi 5)", check_pin_factory
    ),
    Check("gpio-lines", "the bench's GPIO lines are free (not held by another process or overlay)", check_gpio_lines),
    Check("libusb", "pyusb has libusb-1.0", check_libusb),
    Check("usb-devices", "Particle devices on USB, each on a slot's port", check_usb_devices),
    Check("udev-rules", "the udev rules cover every Particle id and the probes, 0660 group plugdev", check_udev_rules),
    Check("usb-access", "this user may open the devices and probes on USB", check_usb_access),
    Check("serial-ports", "the devices' serial ports open", check_serial_ports),
    Check("modemmanager", "ModemManager leaves the Particle serial ports alone", check_modem_manager),
    Check("buttons", "each slot's RESET and MODE (--active: pressed, through the hazard guard)", check_buttons),
    Check("power", "each slot's VBUS switch (--active: a cold boot with the drain time)", check_power),
    Check("led", "each slot's LED sensor sees light while the device is on", check_led),
    Check("swd-probe", "each slot's SWD probe is plugged in", check_swd_probe),
    Check("library", "the firmware library has a Device OS bundle for each platform", check_library),
    Check("journal", "the journal can be written", check_journal),
    Check("disk", "enough free disk for the journal and firmware", check_disk),
)


def run_checks(options: DoctorOptions, checks: tuple[Check, ...] = CHECKS) -> list[CheckResult]:
    """Every check in order; a check that raises becomes a failed result naming the error."""
    doc = Doctor(options)
    with contextlib.ExitStack() as stack:
        stack.callback(doc.close)
        acting = False
        for check in checks:
            if doc.bench is not None and not acting:
                # The simulated clock only moves when every actor waits: from here on this thread is one.
                stack.enter_context(doc.bench.clock.actor())
                acting = True
            try:
                found = check.run(doc)
            except Exception as exc:
                found = CheckResult(
                    check.name,
                    FAIL,
                    f"the check itself failed: {type(exc).__name__}: {exc}",
                    "this is a kiosk bug: report it with this line",
                )
            doc.results.extend(found if isinstance(found, list) else [found])
    return doc.results


def summary(results: list[CheckResult]) -> dict[str, int]:
    return {status: sum(r.status == status for r in results) for status in STATUSES}
