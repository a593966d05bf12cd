"""hw.ymodem against receivers that answer garbage, nothing, or never stop talking.

Every transfer ends within its timeouts (device time on a VirtualClock) with a result or a YModemError; a failure
the sender detects aborts the receiver; a refusal is reported only when the receiver said so.
"""

from __future__ import annotations

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from hw.clock import VirtualClock
from hw.serial_console import MAX_REPLY, SILENCE_S
from hw.ymodem import (
    ACK,
    CA,
    CRC_REQUEST,
    EOT,
    NAK,
    PARTICLE_PROMPT,
    REFUSAL_WINDOW_S,
    REFUSED_TEXT,
    STYLES,
    SUCCESS_TEXT,
    YModemError,
    YModemRefused,
    YModemRejected,
    YModemResult,
    send_ymodem,
)
from tests.fuzz import fuzz_settings
from tests.fuzz.guard import within
from tests.fuzz.scripted_port import ScriptedPort

RESPONSE_S = 2.0
HANDSHAKE_S = 2.0
RETRIES = 2

chunk = st.one_of(
    st.sampled_from(
        [
            bytes([ACK]),
            bytes([NAK]),
            bytes([CRC_REQUEST]),
            bytes([CA]),
            bytes([CA, CA]),
            bytes([ACK, CRC_REQUEST]),
            bytes([EOT]),
            (PARTICLE_PROMPT + "\r\n").encode(),
            bytes([CA] * 4) + REFUSED_TEXT.encode() + b"\r\n",
            bytes([ACK]) + SUCCESS_TEXT.encode() + b"\r\n",
            bytes([CA, CA]) + b"Validation failed: 0x1e\r\n",
            bytes([CA, CA]) + b"Validation failed: 0x" + b"f" * 80 + b"\r\n",
            bytes([CA, CA]) + b"Validation failed: 0xZZ\r\n",
        ]
    ),
    st.binary(max_size=24),
)
answer = st.lists(st.tuples(st.sampled_from([0.0, 0.001, 0.1, 0.3, 1.5, 5.0]), chunk), max_size=3)


def time_bound(size: int, block_size: int) -> float:
    """The longest a transfer may take by its timeouts: handshake, then every packet sent 1 + RETRIES times with a
    full answer wait each (plus a CA's second byte and the closing text), generously."""
    packets = 3 + -(-size // min(block_size, 128))  # header, data blocks (at most as many as 128-byte ones), EOT, close
    per_send = RESPONSE_S + 1.0 + 3 * SILENCE_S
    return HANDSHAKE_S + REFUSAL_WINDOW_S + 3 * SILENCE_S + packets * (RETRIES + 1) * per_send * 2


@fuzz_settings(300)
@given(
    data=st.binary(max_size=2500),
    handshake=st.sampled_from(["particle", "plain"]),
    block_size=st.sampled_from([128, 1024]),
    greeting=answer,
    answers=st.lists(answer, max_size=14),
    chatter=st.none() | st.tuples(st.sampled_from([0.01, 0.2, 0.4]), chunk.filter(bool)),
)
def test_garbage_and_silence_end_in_a_result_or_a_ymodem_error(data, handshake, block_size, greeting, answers, chatter):
    clock = VirtualClock()
    port = ScriptedPort(clock, answers=[sorted(a) for a in answers], chatter=chatter, greeting=sorted(greeting))
    start = clock.now()
    try:
        result = send_ymodem(
            port,
            data,
            "firmware.bin",
            clock,
            handshake=handshake,
            block_size=block_size,
            response_timeout=RESPONSE_S,
            handshake_timeout=HANDSHAKE_S,
            max_retries=RETRIES,
        )
    except YModemRefused:
        event("refused")
        said = [c for _, c in greeting] + [c for a in answers for _, c in a] + ([chatter[1]] if chatter else [])
        assert any(REFUSED_TEXT.encode() in c for c in said), "a refusal the receiver never sent"
    except YModemRejected as exc:
        event("rejected")
        assert exc.flags is None or exc.flags >= 0
    except YModemError as exc:
        event("failed: " + str(exc).split(" ")[0])
        assert str(exc)
        assert port.written[-1] == STYLES[handshake].abort, "a failed transfer left the receiver waiting"
    else:
        event(f"sent ({handshake})")
        assert isinstance(result, YModemResult) and result.bytes == len(data)
        assert result.validated in ((True, False) if handshake == "particle" else (None,))
    assert clock.now() - start <= time_bound(len(data), block_size)


@pytest.mark.parametrize("handshake", ["particle", "plain"])
def test_a_receiver_that_never_stops_sending_noise_gets_no_answer(handshake):
    """Found by fuzzing: waiting for an ACK read noise byte after byte without looking at the deadline, so a
    receiver that never paused (a device printing a log) held the sender forever."""
    clock = VirtualClock()
    greeting = [(0.0, bytes([CRC_REQUEST]))] if handshake == "plain" else []
    answers = [[(0.0, bytes([CRC_REQUEST]))]] if handshake == "particle" else []
    port = ScriptedPort(clock, answers=answers, greeting=greeting, firehose=b"\x00" * 64, firehose_after=len(answers))
    with pytest.raises(YModemError, match="the header block was not acknowledged after 3 sends \\(no answer\\)"):
        within(
            30,
            lambda: send_ymodem(
                port, b"x" * 300, "f.bin", clock, handshake=handshake, response_timeout=RESPONSE_S, max_retries=RETRIES
            ),
        )
    assert clock.now() <= HANDSHAKE_S + 3 * (RESPONSE_S + 1.0) + 1.0
    assert port.written[-1] == STYLES[handshake].abort


def test_a_device_printing_without_end_at_the_handshake_is_not_waiting_for_a_file():
    """Found by fuzzing: the handshake re-read everything pending on every poll, so a device that kept printing made
    each poll slower (quadratic) for the whole 10 s handshake."""
    clock = VirtualClock()
    port = ScriptedPort(clock, firehose=b"log line without end " * 3, byte_time=1e-6)
    with pytest.raises(YModemError, match=f"printed more than {MAX_REPLY} bytes but no YModem prompt"):
        within(30, lambda: send_ymodem(port, b"x" * 300, "f.bin", clock))
    assert port.written[0] == b"f" and port.written[-1] == b"a"  # 'f', then the abort: no block
