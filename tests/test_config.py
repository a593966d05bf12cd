"""kiosk.config: the bench config is validated and every error names the key."""

from __future__ import annotations

import pytest

from kiosk.config import ConfigError, load_config, parse_config

GOOD = """
[bench]
drain_s = 6
led_rate_hz = 60

[[slots]]
name = "left"
usb_port = "1-1.2"
reset_pin = 17
mode_pin = 27
vbus_pin = 22
en_pin = 23
led_pins = [5, 6, 13]
button_wiring = "direct"
button_active = "low"
swd_probe = "0240000034544e45"

[[slots]]
reset_pin = 2
mode_pin = 3
"""


def test_a_full_config_parses():
    config = parse_config(GOOD, "kiosk.toml")
    left, second = config.slots
    assert (config.drain_s, config.led_rate_hz) == (6.0, 60.0)
    assert (left.name, left.usb_port, left.led_pins, left.button_wiring, left.button_active_high) == (
        "left", "1-1.2", (5, 6, 13), "direct", False,
    )  # fmt: skip
    assert (second.name, second.vbus_pin, second.led_pins) == ("slot 2", None, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[slots]]\nreset_pin = 17\nmod_pin = 27", "slots[0].mod_pin: unknown key (did you mean 'mode_pin'?)"),
        ("[[slots]]\nreset_pin = 17", "slots[0].mode_pin: missing"),
        ("[[slots]]\nreset_pin = 40\nmode_pin = 2", "slots[0].reset_pin: expected a BCM GPIO number 0-27, got 40"),
        ("[[slots]]\nreset_pin = true\nmode_pin = 2", "slots[0].reset_pin: expected a BCM GPIO number"),
        ("[[slots]]\nreset_pin = 1\nmode_pin = 2\nled_pins = [3, 4]", "slots[0].led_pins: expected three GPIO"),
        ("[[slots]]\nreset_pin = 1\nmode_pin = 2\nbutton_active = 1", 'slots[0].button_active: expected "high"'),
        ("[[slots]]\nreset_pin = 1\nmode_pin = 2\nbutton_wiring = 'relay'", "slots[0].button_wiring"),
        (
            "[bench]\ndrain_s = 2\n[[slots]]\nreset_pin = 1\nmode_pin = 2",
            "bench.drain_s: expected a number from 5 to 120, got 2",
        ),
        ("[bench]\ndrain_s = 500\n[[slots]]\nreset_pin = 1\nmode_pin = 2", "bench.drain_s: expected a number from"),
        ("[bench]\ndrain_s = inf\n[[slots]]\nreset_pin = 1\nmode_pin = 2", "bench.drain_s: expected a number from 5"),
        ("[bench]\nled_rate_hz = 1e5\n[[slots]]\nreset_pin = 1\nmode_pin = 2", "bench.led_rate_hz: expected a number"),
        ("[bench]\nled_rate_hz = 10\n[[slots]]\nreset_pin = 1\nmode_pin = 2", "bench.led_rate_hz"),
        (
            "[bench]\ndrane_s = 6\n[[slots]]\nreset_pin = 1\nmode_pin = 2",
            "bench.drane_s: unknown key (did you mean 'drain_s'?)",
        ),
        ("[[slots]]\nreset_pin = 1\nmode_pin = 1", "slots[0]: GPIO 1 is already used by slots[0]"),
        ("[[slots]]\nreset_pin = 1\nmode_pin = 2\n[[slots]]\nreset_pin = 3\nmode_pin = 2", "slots[1]: GPIO 2"),
        (
            "[[slots]]\nname='a'\nreset_pin = 1\nmode_pin = 2\n[[slots]]\nname='a'\nreset_pin = 3\nmode_pin = 4",
            "slots[1].name: 'a' is also slots[0]'s",
        ),
        ("[bench]\ndrain_s = 6", "slots: at least one [[slots]] table"),
        ("slot = 1", "slot: unknown key (did you mean 'slots'?)"),
        ("[[slots]\n", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_key(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "kiosk.toml")
    assert str(exc.value).startswith("kiosk.toml: ")
    assert message in str(exc.value)


def test_missing_file_says_how_to_try_the_simulator(tmp_path):
    with pytest.raises(ConfigError, match="--simulate SCENARIO"):
        load_config(tmp_path / "kiosk.toml")
    (tmp_path / "kiosk.toml").write_text(GOOD)
    assert len(load_config(tmp_path / "kiosk.toml").slots) == 2
