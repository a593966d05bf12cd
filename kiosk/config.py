"""The kiosk's bench config: ``/etc/particle-kiosk/kiosk.toml``, validated with errors that name the key.

Example (every key; ``deploy/kiosk.example.toml`` has the commented version)::

    [bench]
    drain_s = 5.0          # seconds power stays off in a cold boot (5 to 120)
    led_rate_hz = 50       # LED sampling rate (40 to 1000)

    [[slots]]
    name = "left"
    usb_port = "1-1.2"     # physical USB port path of this slot (lsusb -t / sysfs name)
    reset_pin = 17         # BCM GPIO numbers
    mode_pin = 27
    vbus_pin = 22          # optional: relay or load switch on VBUS
    en_pin = 23            # optional: pulls the device's EN low (Boron-style boards)
    led_pins = [5, 6, 13]  # optional: red, green, blue sensor inputs
    button_wiring = "transistor"   # or "direct" (GPIO on the line, open drain)
    button_active = "high"         # GPIO level that presses (transistor wiring)
    vbus_active = "high"
    led_active = "high"
    swd_probe = ""         # optional: the SWD probe's unique id

    [remote]               # who may press on a remote screen (a browser on `kiosk serve`)
    control = "view"       # "view" (default: look only), "pin" (the PIN below unlocks a screen), "everyone"
    pin = "4711"           # with control = "pin": 4 to 12 digits
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hw.hazard import DEFAULT_DRAIN_S

DEFAULT_CONFIG = Path("/etc/particle-kiosk/kiosk.toml")
MAX_BCM_PIN = 27


class ConfigError(ValueError):
    """The config is missing or wrong; the message names the file and the key."""


@dataclass(frozen=True)
class SlotConfig:
    """One slot: where its device is (USB port), and which GPIOs press, power and watch it."""

    index: int
    name: str
    usb_port: str | None
    reset_pin: int
    mode_pin: int
    vbus_pin: int | None = None
    en_pin: int | None = None
    led_pins: tuple[int, int, int] | None = None
    button_wiring: str = "transistor"
    button_active_high: bool = True
    vbus_active_high: bool = True
    led_active_high: bool = True
    swd_probe: str | None = None

    @property
    def pins(self) -> list[int]:
        return [
            p
            for p in (self.reset_pin, self.mode_pin, self.vbus_pin, self.en_pin, *(self.led_pins or ()))
            if p is not None
        ]


REMOTE_CONTROLS = ("view", "pin", "everyone")


@dataclass(frozen=True)
class RemoteConfig:
    """Who may press on a remote screen: nobody ("view"), whoever enters ``pin`` ("pin"), or "everyone"."""

    control: str = "view"
    pin: str | None = None


@dataclass(frozen=True)
class BenchConfig:
    slots: tuple[SlotConfig, ...]
    drain_s: float = DEFAULT_DRAIN_S
    led_rate_hz: float = 50.0
    source: str = "<memory>"
    remote: RemoteConfig = RemoteConfig()


def _pin(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BCM_PIN:
        raise ConfigError(f"{where}: expected a BCM GPIO number 0-{MAX_BCM_PIN}, got {value!r}")
    return value


def _optional_pin(where: str, value: Any) -> int | None:
    return None if value is None else _pin(where, value)


def _level(where: str, value: Any) -> bool:
    if value not in ("high", "low"):
        raise ConfigError(f'{where}: expected "high" or "low", got {value!r}')
    return value == "high"


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


def _led_pins(where: str, value: Any) -> tuple[int, int, int]:
    if not isinstance(value, list) or len(value) != 3:
        raise ConfigError(f"{where}: expected three GPIO numbers [red, green, blue], got {value!r}")
    r, g, b = (_pin(f"{where}[{n}]", v) for n, v in enumerate(value))
    return r, g, b


def _wiring(where: str, value: Any) -> str:
    if value not in ("transistor", "direct"):
        raise ConfigError(f'{where}: expected "transistor" or "direct", got {value!r}')
    return value


def _number(low: float, high: float) -> Callable[[str, Any], float]:
    def check(where: str, value: Any) -> float:
        # TOML has nan and inf: NaN passes every "< low" test, and an infinite drain holds power off forever
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ConfigError(f"{where}: expected a number from {low:g} to {high:g}, got {value!r}")
        return float(value)

    return check


#: Above these a value is a typo, not a bench: a cold boot of 500 s (milliseconds typed as seconds?) leaves the
#: slot dark for minutes at every rung; a sampler asked for 10 kHz spins a core without seeing more of the LED.
MAX_DRAIN_S = 120.0
MAX_LED_RATE_HZ = 1000.0

# key -> (field name, converter, required)
_SLOT_KEYS: dict[str, tuple[str, Callable[[str, Any], Any], bool]] = {
    "name": ("name", _text, False),
    "usb_port": ("usb_port", _text, False),
    "reset_pin": ("reset_pin", _pin, True),
    "mode_pin": ("mode_pin", _pin, True),
    "vbus_pin": ("vbus_pin", _optional_pin, False),
    "en_pin": ("en_pin", _optional_pin, False),
    "led_pins": ("led_pins", _led_pins, False),
    "button_wiring": ("button_wiring", _wiring, False),
    "button_active": ("button_active_high", _level, False),
    "vbus_active": ("vbus_active_high", _level, False),
    "led_active": ("led_active_high", _level, False),
    "swd_probe": ("swd_probe", _text, False),
}
_BENCH_KEYS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "drain_s": ("drain_s", _number(DEFAULT_DRAIN_S, MAX_DRAIN_S)),
    "led_rate_hz": ("led_rate_hz", _number(40, MAX_LED_RATE_HZ)),
}


def _unknown(where: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(f"{where}{key}: unknown key{hint}")


def parse_config(text: str, source: str = "<memory>") -> BenchConfig:
    """Parse and validate config text; every error names ``source`` and the offending key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return _build(raw, source)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _remote(raw: Any) -> RemoteConfig:
    """The [remote] table: ``control`` one of REMOTE_CONTROLS; ``pin`` (4-12 digits) needed by "pin"."""
    if not isinstance(raw, dict):
        raise ConfigError("remote: expected a table [remote]")
    for key in raw:
        if key not in ("control", "pin"):
            raise _unknown("remote.", key, ["control", "pin"])
    control = raw.get("control", "view")
    if control not in REMOTE_CONTROLS:
        raise ConfigError(f"remote.control: expected one of {', '.join(map(repr, REMOTE_CONTROLS))}, got {control!r}")
    pin = raw.get("pin")
    if pin is not None and (not isinstance(pin, str) or not pin.isdigit() or not 4 <= len(pin) <= 12):
        raise ConfigError(f'remote.pin: expected 4 to 12 digits in quotes (pin = "4711"), got {pin!r}')
    if control == "pin" and pin is None:
        raise ConfigError('remote.pin: missing (control = "pin" needs the PIN that unlocks a remote screen)')
    return RemoteConfig(control, pin)


def load_remote(path: Path | str = DEFAULT_CONFIG) -> RemoteConfig:
    """Only the [remote] table of the config (a simulated bench has no slots in it); the default (view only)
    when there is no config file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return RemoteConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return _remote(raw.get("remote", {}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _build(raw: dict[str, Any], source: str) -> BenchConfig:
    for key in raw:
        if key not in ("bench", "slots", "remote"):
            raise _unknown("", key, ["bench", "slots", "remote"])
    bench = raw.get("bench", {})
    if not isinstance(bench, dict):
        raise ConfigError("bench: expected a table [bench]")
    settings: dict[str, Any] = {}
    for key, value in bench.items():
        if key not in _BENCH_KEYS:
            raise _unknown("bench.", key, list(_BENCH_KEYS))
        name, convert = _BENCH_KEYS[key]
        settings[name] = convert(f"bench.{key}", value)
    slots_raw = raw.get("slots")
    if not isinstance(slots_raw, list) or not slots_raw:
        raise ConfigError("slots: at least one [[slots]] table is needed")
    slots = tuple(_slot(n, s) for n, s in enumerate(slots_raw))
    _check_unique(slots)
    return BenchConfig(slots, source=source, remote=_remote(raw.get("remote", {})), **settings)


def _slot(n: int, raw: Any) -> SlotConfig:
    where = f"slots[{n}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    values: dict[str, Any] = {"index": n, "name": f"slot {n + 1}", "usb_port": None}
    for key, value in raw.items():
        if key not in _SLOT_KEYS:
            raise _unknown(f"{where}.", key, list(_SLOT_KEYS))
        name, convert, _ = _SLOT_KEYS[key]
        values[name] = convert(f"{where}.{key}", value)
    for key, (_, _, required) in _SLOT_KEYS.items():
        if required and key not in raw:
            raise ConfigError(f"{where}.{key}: missing (every slot needs its RESET and MODE GPIOs)")
    return SlotConfig(**values)


def _check_unique(slots: tuple[SlotConfig, ...]) -> None:
    used: dict[int, str] = {}
    for slot in slots:
        for pin in slot.pins:
            if pin in used:
                raise ConfigError(f"slots[{slot.index}]: GPIO {pin} is already used by {used[pin]}")
            used[pin] = f"slots[{slot.index}] ({slot.name})"
    for attr in ("name", "usb_port"):
        seen: dict[str, int] = {}
        for slot in slots:
            value = getattr(slot, attr)
            if value is not None and value in seen:
                raise ConfigError(f"slots[{slot.index}].{attr}: {value!r} is also slots[{seen[value]}]'s")
            if value is not None:
                seen[value] = slot.index


def load_config(path: Path | str = DEFAULT_CONFIG) -> BenchConfig:
    """Read and validate the config file; ConfigError says what is missing or wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"no bench config at {path}: this machine is not set up as a kiosk (see deploy/). "
            "To try the kiosk without hardware, add --simulate SCENARIO (`kiosk scenarios` lists them)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
    return parse_config(text, str(path))
