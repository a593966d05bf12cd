"""kiosk.config on bad documents: only ConfigError, naming the file and the key; what it accepts is within bounds.

Documents are random text, and TOML built from the real keys with random values of every TOML type (NaN and the
infinities included), typos of the keys, unknown keys, and tables where values belong (and the other way round).
"""

from __future__ import annotations

import datetime
import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kiosk.config import MAX_BCM_PIN, ConfigError, load_config, parse_config
from tests.fuzz import fuzz_settings

SOURCE = "kiosk.toml"
SLOT_KEYS = [
    "name", "usb_port", "reset_pin", "mode_pin", "vbus_pin", "en_pin", "led_pins", "button_wiring", "button_active",
    "vbus_active", "led_active", "swd_probe",
]  # fmt: skip
BENCH_KEYS = ["drain_s", "led_rate_hz"]


# --- TOML values and documents ----------------------------------------------------------------------------

scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 4.999, 5.0, 39.9, 40.0, 1e308]),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["high", "low", "transistor", "direct", "", "   ", "1-1.2"]),
    st.dates(),
    st.datetimes(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's (strings here hold no surrogates)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def typo(key: str, draw) -> str:
    kind = draw(st.sampled_from(["same", "same", "same", "drop", "swap", "upper", "other"]))
    at = draw(st.integers(0, len(key) - 1))
    if kind == "drop":
        return key[:at] + key[at + 1 :] or key
    if kind == "swap" and at + 1 < len(key):
        return key[:at] + key[at + 1] + key[at] + key[at + 2 :]
    if kind == "upper":
        return key.upper()
    if kind == "other":
        return draw(st.from_regex(r"[a-z_]{1,10}", fullmatch=True))
    return key


@st.composite
def documents(draw) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append("[bench]" if draw(st.integers(0, 9)) else "[[bench]]")
        for key in draw(st.lists(st.sampled_from(BENCH_KEYS), max_size=3, unique=True)):
            lines.append(f"{typo(key, draw)} = {toml_value(draw(values))}")
    if draw(st.integers(0, 9)) == 0:
        lines.append(f"{typo('slots', draw)} = {toml_value(draw(values))}")
    else:
        for _ in range(draw(st.integers(0, 3))):
            lines.append("[[slots]]")
            # a valid core most of the time, so the checks further in are reached
            pins = draw(st.lists(st.integers(0, MAX_BCM_PIN), min_size=2, max_size=2, unique=True))
            given_keys = draw(st.lists(st.sampled_from(SLOT_KEYS), max_size=6, unique=True))
            for key in given_keys:
                lines.append(f"{typo(key, draw)} = {toml_value(draw(values))}")
            for key, pin in zip(("reset_pin", "mode_pin"), pins, strict=True):
                if key not in given_keys and draw(st.integers(0, 9)):
                    lines.append(f"{key} = {pin}")
    return "\n".join(lines) + "\n"


# --- what an answer must look like ------------------------------------------------------------------------

#: The start of every message about a key: the key path, then ":" (e.g. ``slots[1].led_pins[2]: expected ...``).
_KEY_PATH = re.compile(r"(?P<path>[^\s:]+): \S")


def check_answer(text: str, source: str = SOURCE) -> None:
    """parse_config either gives a config within bounds or raises ConfigError naming the file and the key."""
    try:
        config = parse_config(text, source)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{source}: "), message
        rest = message[len(source) + 2 :]
        if rest.startswith("not valid TOML"):
            return
        match = _KEY_PATH.match(rest)
        assert match, f"no key named in {message!r}"
        top = re.split(r"[.\[]", match.group("path"))[0]
        # a key the document lacks is named only when it is required (slots, and each slot's two pins)
        assert top in text or top == "slots", f"{message!r} names {top!r}, which the document does not have"
        return
    assert config.drain_s >= 5 and math.isfinite(config.drain_s), config.drain_s
    assert config.led_rate_hz >= 40 and math.isfinite(config.led_rate_hz), config.led_rate_hz
    pins = [p for slot in config.slots for p in slot.pins]
    assert len(pins) == len(set(pins)) and all(type(p) is int and 0 <= p <= MAX_BCM_PIN for p in pins)
    for slot in config.slots:
        assert slot.name.strip() and slot.button_wiring in ("transistor", "direct")


@fuzz_settings(300)
@given(st.text(max_size=300))
def test_random_text(text):
    check_answer(text)


@fuzz_settings(400)
@given(documents())
@example("[bench]\ndrain_s = nan\n[[slots]]\nreset_pin = 1\nmode_pin = 2\n")
@example("[bench]\nled_rate_hz = inf\n[[slots]]\nreset_pin = 1\nmode_pin = 2\n")
def test_documents_from_the_real_keys_with_random_values(text):
    check_answer(text)


@pytest.mark.parametrize(
    ("value", "key"), [("nan", "drain_s"), ("inf", "drain_s"), ("nan", "led_rate_hz"), ("inf", "led_rate_hz")]
)
def test_nan_and_infinity_are_refused_naming_the_key(value, key):
    """Found by fuzzing: NaN passed "at least 5" (every comparison with NaN is false) and inf held power off forever."""
    with pytest.raises(
        ConfigError, match=rf"^kiosk.toml: bench.{key}: expected a number from .* to .*, got (nan|inf)$"
    ):
        parse_config(f"[bench]\n{key} = {value}\n[[slots]]\nreset_pin = 1\nmode_pin = 2\n", SOURCE)


@fuzz_settings(100)
@given(st.binary(max_size=200))
def test_any_file_bytes_load_or_fail_with_config_error(data):
    """load_config on what a file may hold: bytes that are no UTF-8 included."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kiosk.toml"
        path.write_bytes(data)
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(f"{path}: "), str(exc)


def test_a_file_that_is_not_utf8_says_so(tmp_path):
    """Found by fuzzing: UnicodeDecodeError escaped load_config."""
    path = tmp_path / "kiosk.toml"
    path.write_bytes(b"[[slots]]\nname = '\xff'\nreset_pin = 1\nmode_pin = 2\n")
    with pytest.raises(ConfigError, match=r"kiosk.toml: not UTF-8 text \(byte 0xff at offset 18\)"):
        load_config(path)


def test_a_folder_in_place_of_the_file_says_it_cannot_be_read(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)
