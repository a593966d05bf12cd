"""What the Particle status LED says: colours, patterns and their timings, the bootloader's blinking,
the red SOS sequence with its panic codes, and what a technician should read into each sight.

Pure data (with a few one-line look-ups). The kiosk sees the RGB LED through three on/off light
comparators, so a colour is a ``(red, green, blue)`` triple of bools and a pattern is an on/off
schedule. Times are integer milliseconds in the tables (exact); the ``*_s`` properties give seconds.
Sources: ../shared/reference/led-buttons-restore.md sections 1 and 2, timing-model.md section 5
(Device OS ``services/src/led_service.cpp``, ``system/src/system_led_signal.cpp``,
``services/src/panic.c``, ``bootloader/src/main.c``).

    >>> COLOURS["cyan"]
    (False, True, True)
    >>> PATTERNS["blink-normal"].frequency_hz, PATTERNS["blink-normal"].on_s
    (5.0, 0.1)
    >>> SOS_CODES[1].name, sos_cycle_ms(1) / 1000
    ('HardFault', 5.2)
    >>> meaning("yellow", "blink-normal")
    'DFU mode (the bootloader is waiting for firmware over USB)'
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

Rgb = tuple[bool, bool, bool]

#: The colours three digital comparators can tell apart with Device OS's default theme.
COLOURS: dict[str, Rgb] = {
    "off": (False, False, False),
    "red": (True, False, False),
    "green": (False, True, False),
    "blue": (False, False, True),
    "yellow": (True, True, False),
    "cyan": (False, True, True),
    "magenta": (True, False, True),
    "white": (True, True, True),
}
COLOUR_NAMES: dict[Rgb, str] = {rgb: name for name, rgb in COLOURS.items()}

#: Device OS recomputes the LED every 25 ms (SysTick, ``LED_UPDATE_INTERVAL``): every edge is on this grid.
LED_UPDATE_MS = 25
#: Brightness (0..1 of full) at which the comparators are taken to switch; it only shapes breathing.
DEFAULT_THRESHOLD = 0.5
FADE_PERIOD_MS = 4000  # breathing: 2 s linear fade out from full, then 2 s fade in


def breathing_lit_ms(threshold: float = DEFAULT_THRESHOLD) -> tuple[int, int]:
    """When a breathing LED is lit within its 4000 ms cycle, as ``(dark_from_ms, lit_again_ms)``:
    lit on ``[0, dark_from)`` and ``[lit_again, 4000)``. Brightness is sampled on the 25 ms update
    grid and the comparator is lit while brightness >= ``threshold``.

        >>> breathing_lit_ms(0.5)    # lit 2025 ms, dark 1975 ms of every 4 s
        (1025, 3000)
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"a comparator threshold is a brightness strictly between 0 and 1, not {threshold!r}")
    half, step, level = FADE_PERIOD_MS // 2, LED_UPDATE_MS, Fraction(threshold)
    # Fading out, brightness at x ms is (half - x) / half: still lit while x <= half * (1 - level).
    last_lit_out = (half * (1 - level)) // step * step
    # Fading in, brightness is (x - half) / half: lit again from the first tick with x >= half * (1 + level).
    first_lit_in = -(-(half * (1 + level)) // step) * step
    return int(last_lit_out) + step, int(first_lit_in)


@dataclass(frozen=True)
class Pattern:
    """One LED pattern as an on/off schedule: every ``period_ms`` it is lit for ``on_ms`` from the
    period's start; ``period_ms`` 0 is steady (lit when ``lit_always``). A ``fades`` pattern's lit part
    depends on the comparator threshold (``on_ms`` is at the default). ``reported_as`` is the name the
    classifier gives it (the bootloader's toggling looks exactly like the system's blinking).

        >>> PATTERNS["blink-slow"].period_s, PATTERNS["blink-slow"].frequency_hz
        (0.5, 2.0)
    """

    name: str
    period_ms: int
    on_ms: int
    description: str
    reported_as: str = ""
    lit_always: bool = False
    fades: bool = False

    @property
    def period_s(self) -> float:
        return self.period_ms / 1000

    @property
    def on_s(self) -> float:
        return self.on_ms / 1000

    @property
    def frequency_hz(self) -> float | None:
        return 1000 / self.period_ms if self.period_ms else None

    @property
    def reports(self) -> str:
        return self.reported_as or self.name


_BREATH_DARK, _BREATH_LIT = breathing_lit_ms(DEFAULT_THRESHOLD)

#: The system firmware's patterns (led_service.cpp: a blink is lit for the first half of its period).
PATTERNS: dict[str, Pattern] = {
    p.name: p
    for p in (
        Pattern("solid", 0, 0, "lit all the time", lit_always=True),
        Pattern("blink-slow", 500, 250, "250 ms on, 250 ms off (2 Hz)"),
        Pattern("blink-normal", 200, 100, "100 ms on, 100 ms off (5 Hz)"),
        Pattern("blink-fast", 100, 50, "50 ms on, 50 ms off (10 Hz)"),
        Pattern(
            "breathing",
            FADE_PERIOD_MS,
            _BREATH_DARK + FADE_PERIOD_MS - _BREATH_LIT,
            "4 s triangle fade from full brightness; through a 50% comparator about 2 s on, 2 s off",
            fades=True,
        ),
        Pattern("off", 0, 0, "dark"),
    )
}

#: The bootloader's own blinking (bootloader/src/main.c toggles the LED on a 1 ms tick).
BOOTLOADER_PATTERNS: dict[str, Pattern] = {
    p.name: p
    for p in (
        Pattern(
            "bootloader-5hz",
            200,
            100,
            "toggles every 100 ms: safe-mode selection (magenta) and DFU (yellow)",
            "blink-normal",
        ),
        Pattern(
            "bootloader-10hz",
            100,
            50,
            "toggles every 50 ms: factory restore (green), settings reset (white), firmware apply "
            "(magenta), backup reflash (red)",
            "blink-fast",
        ),
    )
}
ALL_PATTERNS: dict[str, Pattern] = {**PATTERNS, **BOOTLOADER_PATTERNS}


def lit_intervals_ms(pattern: Pattern, threshold: float = DEFAULT_THRESHOLD) -> tuple[tuple[int, int], ...]:
    """When a periodic pattern is lit within one period, as ``(from_ms, to_ms)`` pairs in ``[0, period_ms]``.

    >>> lit_intervals_ms(PATTERNS["blink-fast"]), lit_intervals_ms(PATTERNS["breathing"])
    (((0, 50),), ((0, 1025), (3000, 4000)))
    """
    if not pattern.period_ms:
        raise ValueError(f"{pattern.name} is steady: it has no period")
    if not pattern.fades:
        return ((0, pattern.on_ms),)
    dark_from, lit_again = breathing_lit_ms(threshold)
    return ((0, dark_from), (lit_again, pattern.period_ms)) if lit_again < pattern.period_ms else ((0, dark_from),)


# --- the red SOS (services/src/panic.c) -------------------------------------------------------------

SOS_COLOUR = "red"  # the panic handler forces red whatever the theme
SOS_SHORT_ON_MS = 150  # an "S" flash
SOS_LONG_ON_MS = 300  # an "O" flash
SOS_FLASH_OFF_MS = 100  # dark after each S or O flash
SOS_LETTER_EXTRA_MS = 100  # extra dark after the first S and after the O
SOS_PREAMBLE_PAUSE_MS = 900  # extra dark after the second S, before the code
SOS_CODE_ON_MS = 300  # each code flash
SOS_CODE_OFF_MS = 300
SOS_CODE_PAUSE_MS = 800  # extra dark after the last code flash
SOS_CYCLES = 2  # the sequence is played twice, then the device resets (release builds)
SOS_LETTERS: tuple[tuple[int, int, int], ...] = (  # (flashes, lit ms, extra dark ms after the letter)
    (3, SOS_SHORT_ON_MS, SOS_LETTER_EXTRA_MS),
    (3, SOS_LONG_ON_MS, SOS_LETTER_EXTRA_MS),
    (3, SOS_SHORT_ON_MS, SOS_PREAMBLE_PAUSE_MS),
)
SOS_PREAMBLE_MS = sum(n * (on + SOS_FLASH_OFF_MS) + extra for n, on, extra in SOS_LETTERS)  # 3800


def sos_cycle_ms(code: int) -> int:
    """One SOS cycle for panic ``code``, in ms: 3800 of S-O-S, 600 per code flash, 800 of pause.

    >>> sos_cycle_ms(1), sos_cycle_ms(15)
    (5200, 13600)
    """
    return SOS_PREAMBLE_MS + code * (SOS_CODE_ON_MS + SOS_CODE_OFF_MS) + SOS_CODE_PAUSE_MS


def sos_flashes_ms(code: int) -> tuple[tuple[int, int], ...]:
    """The lit flashes of one SOS cycle as ``(on_ms, off_ms)`` from the cycle's start: 9 of S-O-S, then ``code``.

    >>> sos_flashes_ms(1)[:2], sos_flashes_ms(1)[-1]
    (((0, 150), (250, 400)), (3800, 4100))
    """
    flashes, at = [], 0
    for count, lit, extra in SOS_LETTERS:
        for i in range(count):
            flashes.append((at, at + lit))
            at += lit + SOS_FLASH_OFF_MS + (extra if i == count - 1 else 0)
    for _ in range(code):
        flashes.append((at, at + SOS_CODE_ON_MS))
        at += SOS_CODE_ON_MS + SOS_CODE_OFF_MS
    return tuple(flashes)


def sos_readable_ms(code: int) -> int:
    """From the first S flash's start, how long until the code has been shown whole: the preamble, the
    code flashes, and 800 ms of dark after the last one (so it cannot be a longer code).

        >>> sos_readable_ms(1)
        4900
    """
    return sos_flashes_ms(code)[-1][1] + SOS_CODE_PAUSE_MS


@dataclass(frozen=True)
class SosCode:
    """A Device OS panic code (``ePanicCode``): the number of code flashes, the enum name, what it means."""

    code: int
    name: str
    meaning: str


#: services/inc/panic.h numbering; meanings paraphrase the "Red SOS" section of Particle's LED page.
SOS_CODES: dict[int, SosCode] = {
    c.code: c
    for c in (
        SosCode(
            1,
            "HardFault",
            "Hard fault: an invalid pointer, memory corruption (double free, overrun), or Wire used "
            "without Wire.begin()",
        ),
        SosCode(2, "NMIFault", "Non-maskable interrupt fault"),
        SosCode(3, "MemManage", "Memory manager fault"),
        SosCode(4, "BusFault", "Bus fault"),
        SosCode(5, "UsageFault", "Usage fault"),
        SosCode(6, "InvalidLenth", "Invalid length (the enum name is misspelt in Device OS)"),
        SosCode(7, "Exit", "abort() or _exit() was called by the user application or a library"),
        SosCode(8, "OutOfHeap", "Out of heap memory"),
        SosCode(9, "SPIOverRun", "SPI over-run"),
        SosCode(10, "AssertionFailure", "An internal assertion failed (so far only thread or system-thread related)"),
        SosCode(11, "InvalidCase", "Invalid case"),
        SosCode(12, "PureVirtualCall", "A pure virtual function was called"),
        SosCode(
            13,
            "StackOverflow",
            "Stack overflow (main loop thread stack 6144 bytes; software timer callbacks 1024 bytes)",
        ),
        SosCode(
            14,
            "HeapError",
            "Heap error: a semaphore lock timed out (60 s), or memory was allocated in an interrupt handler",
        ),
        SosCode(15, "SecureFault", "ARMv8-M SecureFault (RTL872x: P2, Photon 2, M-SoM; Device OS 5.6.0 and later)"),
    )
}

# --- what a sight means -------------------------------------------------------------------------------

#: (colour, pattern) as the classifier reports them -> what it tells a technician. ``None`` as the
#: colour is the fallback for any colour. The bootloader's 5 Hz and 10 Hz toggling read as
#: blink-normal and blink-fast; the colour tells which mode it is.
MEANINGS: dict[tuple[str | None, str], str] = {
    ("white", "breathing"): "network off (Wi-Fi or cellular module switched off by the application)",
    ("blue", "breathing"): "network module on but not connected to a network",
    ("green", "blink-normal"): "connecting to the network (Wi-Fi or cellular)",
    ("green", "blink-fast"): (
        "getting an IP address (DHCP), or the bootloader restoring the factory image (MODE held past 6.5 s)"
    ),
    ("green", "breathing"): "connected to the network but not to the cloud (or the application blocks loop())",
    ("cyan", "blink-normal"): "connecting to the Particle cloud",
    ("cyan", "blink-fast"): "cloud handshake in progress",
    ("cyan", "breathing"): "connected to the Particle cloud: the healthy normal state",
    ("magenta", "breathing"): "safe mode: the system runs but the user application does not",
    ("magenta", "blink-normal"): "bootloader safe-mode selection (MODE held 1 s after RESET): release MODE now",
    ("magenta", "blink-fast"): "firmware update in progress (OTA or USB): do not remove power",
    ("magenta", "solid"): "YModem serial firmware load in progress, or frozen firmware",
    ("blue", "blink-slow"): "listening mode: waiting for set-up over USB serial or BLE",
    ("blue", "blink-fast"): "credentials being cleared, or a Gen3 network reset (MODE held in listening mode)",
    ("yellow", "blink-normal"): "DFU mode (the bootloader is waiting for firmware over USB)",
    ("white", "blink-fast"): "bootloader resetting settings (MODE held past 10 s): network credentials are wiped",
    ("red", "blink-fast"): "bootloader reflashing the backup image",
    ("red", "blink-slow"): "cloud connection error blinks (count them: 1 red = handshake error)",
    ("yellow", "blink-slow"): "cloud connection error blinks (orange reads as yellow or red on the sensors)",
    ("white", "solid"): "booting (white for about 1 s), or frozen firmware / soft power-off pending",
    ("red", "sos"): "a panic (SOS): the device shows the code twice, then resets",
    (None, "solid"): "frozen firmware: the LED stopped on its last colour (a cold boot may help)",
    (None, "off"): "no LED: no power, asleep, or a missing or corrupt bootloader (try RESET, then SWD restore)",
}


def meaning(colour: str | None, pattern: str) -> str | None:
    """What ``colour`` showing ``pattern`` means, or None when the table has nothing to say.

    >>> meaning("green", "solid")
    'frozen firmware: the LED stopped on its last colour (a cold boot may help)'
    """
    return MEANINGS.get((colour, pattern)) or MEANINGS.get((None, pattern))
