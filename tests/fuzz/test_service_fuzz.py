"""The bench service's socket on bad input: random bytes, random JSON, requests with wrong types, half frames,
oversized frames, a client that floods and never reads, one that hangs up mid-call. After each, the service
answers a valid call on a new connection, and a client that was connected all along is unharmed (it still gets
answers and notifications).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.releases import BODY
from kiosk.commands.service_cmd import engine_for
from kiosk.demo_library import demo_library
from kiosk.service.client import BenchClient
from kiosk.service.service import BenchService
from kiosk.service.wire import INVALID_PARAMS, INVALID_REQUEST, MAX_FRAME, METHOD_NOT_FOUND, PARSE_ERROR
from tests.fuzz import fuzz_settings

METHODS = ["hello", "unlock", "subscribe", "unsubscribe", "bench.state", "bench.devices", "slot.recover", "slot.stop",
           "slot.inspect", "slot.restore", "flash.plan", "flash.start", "library.list", "history.runs", "history.run",
           "history.latest", "device.history.get", "device.history.set", "report", "nope", ""]  # fmt: skip
#: Params of the wrong type for every name a method reads: the service must refuse them before acting.
WRONG = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=8), st.lists(st.integers(),
                  max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))  # fmt: skip
NAMES = ["slot", "run_id", "plan_id", "device_id", "modules", "transport", "platform", "limit", "part", "answers",
         "pin", "client", "role", "device_os", "probe"]  # fmt: skip
leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
PING = json.dumps({"jsonrpc": "2.0", "id": "ping", "method": "bench.state"}).encode() + b"\n"


@pytest.fixture(scope="module")
def served():
    folder = Path(tempfile.mkdtemp(prefix="kf-", dir="/tmp"))
    demo_library({"boron"}, root=folder / "library", body_size=BODY)
    args = argparse.Namespace(simulate="healthy@boron", speed=20.0, config=folder / "none.toml",
                              journal=folder / "journal.sqlite", library=folder / "library")  # fmt: skip
    service = BenchService(engine_for(args), folder / "bench.sock", pollers=False)
    service.start()
    heard: list[str] = []
    bystander = BenchClient(service.socket_path, client="bystander", role="touchscreen", subscribe=True,
                            on_notification=lambda method, _params: heard.append(method)).connect()  # fmt: skip
    try:
        yield service, bystander, heard
    finally:
        bystander.close()
        service.close()
        shutil.rmtree(folder, ignore_errors=True)


def raw(service) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10.0)
    sock.connect(str(service.socket_path))
    return sock


def answers(sock: socket.socket, wanted: int, timeout: float = 10.0, stop_at: str | None = None) -> list[dict]:
    """Up to ``wanted`` frames (fewer when the service closes the connection or ``timeout`` passes, or once the
    answer to ``stop_at`` came)."""
    out, buffer = [], b""
    deadline = time.monotonic() + timeout
    while len(out) < wanted and time.monotonic() < deadline:
        if stop_at is not None and out and out[-1].get("id") == stop_at:
            break
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            out.append(json.loads(line))
    return out


def until_ping(sock: socket.socket) -> list[dict]:
    """Send a valid call after the garbage and read up to its answer: what the garbage got, in order."""
    sock.sendall(PING)
    frames = answers(sock, 10_000, timeout=10, stop_at="ping")
    assert frames and frames[-1].get("id") == "ping" and "result" in frames[-1], frames[-3:]
    return frames[:-1]


def still_serving(service, bystander) -> None:
    with BenchClient(service.socket_path, client="after").connect() as fresh:
        assert fresh.call("bench.state", timeout=10)["slots"][0]["index"] == 1
    assert bystander.connected and bystander.call("bench.state", timeout=10)["slots"]


settings = fuzz_settings(60)


@settings
@given(data=st.binary(max_size=2048))
def test_random_bytes(served, data):
    service, bystander, _ = served
    with contextlib.closing(raw(service)) as sock:
        sock.sendall(data + b"\n")
        for frame in until_ping(sock):
            assert frame["jsonrpc"] == "2.0" and "error" in frame  # never a result for garbage
            assert frame["error"]["code"] in (PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS, METHOD_NOT_FOUND)
    still_serving(service, bystander)


@settings
@given(value=json_values)
def test_random_json(served, value):
    service, bystander, _ = served
    with contextlib.closing(raw(service)) as sock:
        sock.sendall(json.dumps(value).encode() + b"\n")
        frames = until_ping(sock)
        if not isinstance(value, dict):
            assert frames and frames[0]["error"]["code"] == INVALID_REQUEST and frames[0]["id"] is None
    still_serving(service, bystander)


@fuzz_settings(80)
@given(
    method=st.sampled_from(METHODS),
    params=st.dictionaries(st.sampled_from(NAMES), WRONG, max_size=3),
    request_id=st.one_of(st.integers(), st.text(max_size=5)),
    role=st.sampled_from(["touchscreen", "remote", None]),
)
def test_requests_with_wrong_types(served, method, params, request_id, role):
    service, bystander, _ = served
    with contextlib.closing(raw(service)) as sock:
        if role is not None:
            sock.sendall(json.dumps({"jsonrpc": "2.0", "id": "h", "method": "hello", "params": {"role": role}}).encode()
                         + b"\n")  # fmt: skip
            assert answers(sock, 1)[0]["id"] == "h"
        sock.sendall(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()
                     + b"\n")  # fmt: skip
        frames = answers(sock, 1, timeout=30)
        assert frames and frames[0]["id"] == request_id
        if "error" in frames[0]:
            assert frames[0]["error"]["code"] != -32603, frames[0]  # refused in words, never a fault of the service
    still_serving(service, bystander)


def test_half_frames_are_joined_and_a_frame_over_the_limit_ends_only_that_connection(served):
    service, bystander, _ = served
    with contextlib.closing(raw(service)) as sock:
        request = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "bench.state"}).encode() + b"\n"
        for byte in request:  # one byte at a time
            sock.sendall(bytes([byte]))
        assert answers(sock, 1)[0]["id"] == 7
    with contextlib.closing(raw(service)) as sock:
        with contextlib.suppress(OSError):  # the service may hang up before it has read it all
            sock.sendall(b"[" * (MAX_FRAME + 10))
        frames = answers(sock, 2)
        assert frames[0]["error"]["code"] == INVALID_REQUEST and "at most" in frames[0]["error"]["message"]
        assert len(frames) == 1 and sock.recv(10) == b""  # closed
    still_serving(service, bystander)


def test_a_client_that_floods_and_never_reads_is_dropped_and_the_others_go_on(served):
    service, bystander, heard = served
    sock = raw(service)
    sock.settimeout(0.5)
    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "bench.state"}).encode() + b"\n"
    dropped = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                sock.sendall(request * 200)
            except TimeoutError:
                continue  # the service reads no faster than it answers; its answers pile up unread
            except OSError:
                dropped = True  # reset: the service dropped this client
                break
    finally:
        sock.close()
    assert dropped, "a client that never reads was never dropped"
    before = len(heard)
    service.board.stopping(1)  # (idle: nothing to tell) then a real change everyone hears
    from kiosk.service.posts import LedSeen

    service.board.post(LedSeen(1, "cyan", None))
    t0 = time.monotonic()
    while len(heard) == before and time.monotonic() - t0 < 10:
        time.sleep(0.02)
    assert len(heard) > before, "the bystander stopped hearing notifications"
    still_serving(service, bystander)


def test_a_client_that_hangs_up_mid_call_harms_nobody(served):
    service, bystander, _ = served
    for method in ("slot.inspect", "history.runs", "report", "flash.plan"):
        with contextlib.closing(raw(service)) as sock:
            hello = {"jsonrpc": "2.0", "id": 1, "method": "hello", "params": {"role": "cli"}}
            call = {"jsonrpc": "2.0", "id": 2, "method": method, "params": {"slot": 1, "run_id": 1, "modules": []}}
            sock.sendall(json.dumps(hello).encode() + b"\n" + json.dumps(call).encode() + b"\n")
    still_serving(service, bystander)
    assert service.server.clients >= 1
