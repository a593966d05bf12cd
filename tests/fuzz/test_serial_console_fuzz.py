"""hw.serial_console on garbage replies: only ConsoleError, naming the command; the Device Secret never shows;
no reply (silence, a trickle, a device that never stops printing) holds the console past its timeouts.

The parsers get random text and real replies cut, garbled and joined to garbage; ``s`` gets random JSON shapes.
The console runs against a scripted port on a VirtualClock, so every timing is device time and exact.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hw.clock import VirtualClock
from hw.serial_console import (
    DEFAULT_TIMEOUT_S,
    MAX_REPLY,
    REPLY_TIMEOUT_S,
    SILENCE_S,
    ConsoleError,
    ListeningConsole,
    parse_claimed,
    parse_identify,
    parse_mac,
    parse_system_info,
    parse_version,
)
from tests.fuzz import fuzz_settings
from tests.fuzz.scripted_port import ScriptedPort

DEVICE_ID = "e00fce68ab2c5d1f0e4a7b93"
SECRET = "4FB2AEF1C5D7E93A0B6C8D2E"
PARSERS = {"i": parse_identify, "v": parse_version, "m": parse_mac, "c": parse_claimed, "s": parse_system_info}
GOOD = {
    "i": f"Device ID: {DEVICE_ID}\r\nIMEI: 352753090123456\r\nDevice Secret: {SECRET}\r\nSerial Number: P046AB12\r\n",
    "v": "system firmware version: 5.9.0\r\n",
    "m": "Your device MAC address is\r\na4:cf:12:0b:3d:7e\r\n",
    "c": "Device claimed: yes\r\n",
    "s": json.dumps(
        {
            "p": 13,
            "ms": SECRET,
            "m": [
                {
                    "s": 262144,
                    "l": "m",
                    "vc": 30,
                    "vv": 30,
                    "f": "u",
                    "n": "1",
                    "v": 6,
                    "u": "ab" * 32,
                    "d": [{"f": "s", "n": "1", "v": 5900}],
                },
            ],
        }
    )
    + "\r\n",
}


def parse_checked(letter: str, reply: str, *, secret_safe: bool = True) -> object:
    """The parser's answer, or None for a ConsoleError that names the command; with ``secret_safe``, neither shows
    any of the Device Secret (four characters of it are enough to fail)."""
    try:
        result = PARSERS[letter](reply)
    except ConsoleError as exc:
        assert exc.command == letter and str(exc).startswith(f"listening-mode command {letter!r}")
        if secret_safe:
            assert not leaks(str(exc)), str(exc)
        return None
    if secret_safe:
        assert not leaks(repr(result)), repr(result)
    if letter == "s":
        for module in result.modules:
            module.to_module_info()  # what kiosk.inspect does with each one
    return result


def leaks(text: str) -> bool:
    return any(SECRET[i : i + 4] in text for i in range(len(SECRET) - 3))


# --- the parsers -------------------------------------------------------------------------------------------


@fuzz_settings(150)
@given(st.sampled_from(sorted(PARSERS)), st.text(max_size=400))
def test_random_text(letter, reply):
    parse_checked(letter, reply)


garble = st.one_of(
    st.tuples(st.just("cut"), st.integers(0, 500)),
    st.tuples(st.just("insert"), st.integers(0, 500), st.text(max_size=20)),
    st.tuples(st.just("replace"), st.integers(0, 500), st.characters()),
    st.tuples(st.just("drop"), st.integers(0, 500), st.integers(1, 10)),
    st.tuples(st.just("repeat"), st.integers(1, 3)),
)


def apply(reply: str, op: tuple) -> str:
    if op[0] == "repeat":
        return reply * op[1]
    at = op[1] % (len(reply) + 1)
    if op[0] == "cut":
        return reply[:at]
    if op[0] == "insert":
        return reply[:at] + op[2] + reply[at:]
    if op[0] == "replace":
        return reply[:at] + op[2] + reply[at + 1 :]
    return reply[:at] + reply[at + op[2] :]


@fuzz_settings(300)
@given(st.sampled_from(sorted(PARSERS)), st.lists(garble, min_size=1, max_size=4))
def test_real_replies_garbled(letter, ops):
    """Anything may be garbled, the secret too (then what is left of it may show: only errors are checked)."""
    reply = GOOD[letter]
    for op in ops:
        reply = apply(reply, op)
    parse_checked(letter, reply, secret_safe=False)


#: Where the secret sits in ``i`` and ``s``: (before, label, after); the label's bytes that may be garbled.
SECRET_SPLIT = {letter: GOOD[letter].partition(SECRET) for letter in ("i", "s")}
LABEL_BYTES = {"i": "Device Secret: ", "s": '"ms": "'}
one_byte = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 500), st.characters(exclude_characters="\r\n")),
    st.tuples(st.just("drop"), st.integers(0, 500), st.just(1)),
    st.tuples(st.just("insert"), st.integers(0, 500), st.characters(exclude_characters="\r\n")),
)


@fuzz_settings(300)
@given(
    st.sampled_from(["i", "s"]),
    st.lists(garble, max_size=3),
    st.none() | one_byte,
    st.lists(garble, max_size=3),
)
def test_the_secret_never_shows_when_its_label_survives(letter, before_ops, label_op, after_ops):
    """The contract of ``redact``: garbage around the secret (not in the two bytes either side of it and its label),
    and one byte of its label garbled, lost or added (not into a line end; in the JSON key not the letters "ms"): no
    error and no result shows any four characters of it. (Enough garbling hides which value was the secret.)"""
    before, _, after = SECRET_SPLIT[letter]
    label = LABEL_BYTES[letter]
    assert before.endswith(label)
    before, guard_before = before[: -len(label) - 2], before[-len(label) - 2 : -len(label)]
    for op in before_ops:
        before = apply(before, op)
    before += guard_before  # the two bytes next to the label stay: garbling them too is a second garble there
    if label_op is not None:
        at = label_op[1] % (len(label) + 1)
        if letter == "s" and label_op[0] != "insert":
            at = [0, 3, 4, 5, 6][label_op[1] % 5]  # the quotes, the colon, the space: not "m" or "s"
        elif letter == "s" and at in (2,):
            at = 1  # an insert between "m" and "s" splits the key's letters
        label = apply(label, (label_op[0], at, *label_op[2:]))
    guard_after, after = after[:2], after[2:]
    for op in after_ops:
        after = apply(after, op)
    after = guard_after + after
    parse_checked(letter, before + label + SECRET + after)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)
module_keys = st.sampled_from(["s", "l", "vc", "vv", "f", "n", "v", "u", "d"])


@fuzz_settings(300)
@given(
    st.dictionaries(
        module_keys, json_values | st.sampled_from(["1", "²", "١", "zz", "AB", "u", "m", 5, -1]), max_size=9
    ),
    st.lists(
        st.dictionaries(st.sampled_from(["f", "n", "v"]), json_values | st.sampled_from(["²", "s", 7])), max_size=2
    ),
)
@example({"s": 1, "l": "m", "vc": 1, "vv": 1, "f": "s", "n": "²", "v": 1}, [])
@example({"s": 1, "l": "m", "vc": 1, "vv": 1, "f": "u", "n": "1", "v": 1, "u": "zz"}, [])
def test_system_info_with_random_module_fields(module, deps):
    """``s`` modules whose fields have every JSON type, unicode digits and non-hex hashes."""
    doc = {"p": 13, "m": [{**module, "d": deps} if deps else module]}
    parse_checked("s", json.dumps(doc) + "\r\n")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [("n", "\u00b2", "module index '²', not a number"), ("u", "zz", "hash 'zz' that is not hexadecimal")],
)
def test_system_info_unicode_digits_and_non_hex_hashes_are_console_errors(field, value, problem):
    """Found by fuzzing: "²" passed str.isdigit() and then int() raised ValueError; a non-hex hash passed the parser
    and raised ValueError in to_module_info."""
    module = {"s": 1, "l": "m", "vc": 1, "vv": 1, "f": "u", "n": "1", "v": 1, field: value}
    with pytest.raises(ConsoleError, match=problem):
        parse_system_info(json.dumps({"p": 13, "m": [module]}) + "\r\n")


def test_system_info_nested_deeper_than_the_json_parser_goes_is_a_console_error():
    """Found by fuzzing: 64 KiB of "[" raised RecursionError out of parse_system_info."""
    with pytest.raises(ConsoleError, match="garbled or cut off"):
        parse_system_info("[" * (MAX_REPLY - 2) + "\r\n")


def test_a_long_line_without_a_colon_is_refused_in_linear_time():
    """Found by fuzzing: the lazy key of 'Key: value' made a 64 KiB line of spaces take seconds (quadratic)."""
    reply = "a" + " " * (MAX_REPLY - 4) + "x\r\n"
    start = time.perf_counter()
    with pytest.raises(ConsoleError, match="is not 'Key: value'"):
        parse_identify(reply)
    assert time.perf_counter() - start < 1.0  # the quadratic pattern took about 5 s here; linear takes ~2 ms


# --- the console on a scripted port -----------------------------------------------------------------------

chunk_bytes = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([GOOD[k].encode() for k in sorted(GOOD)]),
    st.sampled_from([b"\r\n", b"\x00", b"\xff" * 8, f"Device Secret: {SECRET}\r\n".encode()]),
)
answer = st.lists(st.tuples(st.floats(0, 30, allow_nan=False), chunk_bytes), max_size=6)


@fuzz_settings(120)
@given(
    st.sampled_from(sorted(PARSERS)),
    answer,
    st.none() | st.tuples(st.sampled_from([0.005, 0.05, 0.2, 0.3, 1.0]), chunk_bytes.filter(bool)),
)
def test_console_commands_end_within_their_timeouts(letter, reply, chatter):
    """Silence, a trickle slower than the silence gap, garbage, a device that prints forever: each command ends
    by its own timeouts (device time) with its result or a ConsoleError."""
    clock = VirtualClock()
    port = ScriptedPort(clock, answers=[sorted(reply)], chatter=chatter)
    console = ListeningConsole(port, clock)
    method = {"i": console.identify, "v": console.version, "m": console.mac, "c": console.claimed,
              "s": console.system_info}[letter]  # fmt: skip
    timeout = REPLY_TIMEOUT_S.get(letter, DEFAULT_TIMEOUT_S)
    start = clock.now()
    try:
        result = method()
    except ConsoleError as exc:
        assert exc.command == letter and SECRET not in str(exc)
    else:
        assert SECRET not in repr(result)
    assert clock.now() - start <= 3 * timeout + SILENCE_S + 0.1
    assert port.written[-1] == letter.encode()


def test_a_value_joined_to_the_secret_line_is_quoted_redacted():
    """Found by fuzzing: a lost line end joined the secret to the IMEI line, and the "malformed value" problem quoted
    the first 40 characters of it (ten of the secret) unredacted. The joined line is now dropped as the secret's;
    a problem text is redacted too."""
    reply = f"Device ID: {DEVICE_ID}\r\nIMEI: 352753090123456Device Secret: {SECRET}\r\n"
    identity = parse_identify(reply)
    assert identity.imei is None and not leaks(repr(identity))
    err = ConsoleError("i", f"the IMEI value '352753090123456Device Secret: {SECRET[:10]}' is malformed")
    assert not leaks(str(err)) and "Device Secret: <redacted>" in err.problem


@pytest.mark.parametrize("key", ['"ms": X', 'ms": "', '"ms: "', '"ms"X "', '"ms":: "', '"ms"": "', '"msX": "'])
def test_a_garbled_json_secret_key_still_hides_the_value(key):
    """Found by fuzzing: one garbled quote, colon or space of ``"ms": "`` and the secret showed in full."""
    reply = '{"p": 13, ' + key + SECRET + '", "m": []}\r\n'
    try:
        info = parse_system_info(reply)
    except ConsoleError as exc:
        assert not leaks(str(exc)), str(exc)
    else:
        assert not leaks(repr(info)), repr(info)
