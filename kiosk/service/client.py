"""A client of the bench service, in plain Python (threads, no asyncio, nothing of Textual or the drivers).

The touchscreen, the browsers' screens and the CLI use it::

    from kiosk.service.client import BenchClient, ServiceError, is_running

    if is_running("/run/particle-kiosk/bench.sock"):
        with BenchClient("/run/particle-kiosk/bench.sock", client="kiosk recover", role="cli").connect() as bench:
            run = bench.call("slot.recover", {"slot": 2})          # {"run_id": 41}
            print(bench.call("bench.state")["slots"][1]["activity"])

Two ways to use it. ``connect()`` connects once, now (ServiceUnavailable when nobody answers), and a lost
connection stays lost: for a command that does one thing. ``start()`` connects in a thread of its own and
keeps connecting (backing off from 50 ms to 2 s) for as long as the client lives: for a screen. Either way,
with ``subscribe=True`` every notification reaches ``on_notification(method, params)`` and each (re)connect
reaches ``on_connected(hello, snapshot)`` first, with the state of every slot at that moment, all in the
order the service sent them, from the client's reader thread (keep the callbacks short; post to a UI).

``call()`` waits at most ``timeout`` seconds; it raises :class:`ServiceError` (the service's error, with its
JSON-RPC code) or :class:`ServiceUnavailable` (no connection, or it broke before the answer came).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiosk.service import wire
from kiosk.service.wire import DEFAULT_SOCKET

log = logging.getLogger(__name__)

MAX_ANSWER = 64 << 20  # bytes in one frame from the service (a long history is a big answer)
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0
CONNECT_TIMEOUT_S = 2.0
DEFAULT_TIMEOUT_S = 30.0

Notification = Callable[[str, dict[str, Any]], None]
Connected = Callable[[dict[str, Any], dict[str, Any] | None], None]
Disconnected = Callable[[str], None]

__all__ = ["DEFAULT_SOCKET", "BenchClient", "ServiceError", "ServiceUnavailable", "is_running"]


class ServiceError(Exception):
    """The service answered with an error: ``code`` (see kiosk.service.wire), its words and data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class ServiceUnavailable(ConnectionError):
    """No bench service answers (none runs, or the connection broke)."""


class _Pending:
    __slots__ = ("done", "error", "in_reader", "value")

    def __init__(self, in_reader: Callable[[Any], None] | None) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.in_reader = in_reader


class BenchClient:
    """One connection to the bench service (re-made by itself after ``start()``)."""

    def __init__(self, socket_path: str | os.PathLike[str] = DEFAULT_SOCKET, *, client: str = "kiosk",
                 role: str = "cli", pin: str | None = None, subscribe: bool = False,
                 on_notification: Notification | None = None, on_connected: Connected | None = None,
                 on_disconnected: Disconnected | None = None) -> None:  # fmt: skip
        self.socket_path = Path(socket_path)
        self.client = client
        self.role = role
        self.pin = pin  # sent with every hello once it unlocked this client (a reconnect stays unlocked)
        self.subscribe = subscribe
        self.on_notification = on_notification
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.hello: dict[str, Any] | None = None
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = threading.Event()
        self._up = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.last_problem: str | None = None

    # -- life -----------------------------------------------------------------------------------------------
    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> BenchClient:
        """Connect once, now, and say hello (and subscribe); ServiceUnavailable when no service answers."""
        self._open(timeout)
        self._handshake(timeout)
        return self

    def start(self) -> BenchClient:
        """Connect in a thread, and again whenever the connection is lost, until ``close()``."""
        self._supervisor = threading.Thread(target=self._keep_connected, name="bench-client", daemon=True)
        self._supervisor.start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self._up.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def close(self) -> None:
        self._closed.set()
        self._drop("the client closed")
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(5.0)

    def __enter__(self) -> BenchClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT_S,
             *, _in_reader: Callable[[Any], None] | None = None) -> Any:  # fmt: skip
        """The result of ``method``; ServiceError, ServiceUnavailable, or TimeoutError after ``timeout`` s."""
        sock = self._sock
        if sock is None:
            raise ServiceUnavailable(self.last_problem or f"not connected to the bench service at {self.socket_path}")
        request_id = next(self._ids)
        pending = _Pending(_in_reader)
        with self._pending_lock:
            self._pending[request_id] = pending
        try:
            try:
                with self._send_lock:
                    sock.sendall(wire.request(method, params, request_id))
            except OSError as exc:
                self._drop(f"the bench service went away ({exc.strerror or exc})")
                raise ServiceUnavailable(f"the bench service at {self.socket_path} is not answering") from None
            if not pending.done.wait(timeout):
                raise TimeoutError(f"the bench service did not answer {method} within {timeout:g} s")
        finally:
            with self._pending_lock:
                self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error
        return pending.value

    def unlock(self, pin: str, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """Send the PIN; the connection's rights (kept across reconnects: the PIN goes with each hello)."""
        rights = self.call("unlock", {"pin": pin}, timeout)
        self.pin = pin
        return rights

    # -- inside ------------------------------------------------------------------------------------------------
    def _open(self, timeout: float) -> threading.Thread:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError as exc:
            sock.close()
            self.last_problem = _why_not(self.socket_path, exc)
            raise ServiceUnavailable(self.last_problem) from None
        sock.settimeout(None)
        self._sock = sock
        reader = threading.Thread(target=self._read, args=(sock,), name="bench-client-read", daemon=True)
        reader.start()
        return reader

    def _handshake(self, timeout: float) -> None:
        params: dict[str, Any] = {"client": self.client, "role": self.role}
        if self.pin:
            params["pin"] = self.pin
        try:
            self.hello = self.call("hello", params, timeout)
            if self.subscribe:
                # the snapshot reaches on_connected in the reader, before any notification that follows it
                self.call("subscribe", {}, timeout, _in_reader=self._connected)
            else:
                self._connected(None)
        except (ServiceError, TimeoutError, ServiceUnavailable) as exc:
            self._drop(f"the bench service did not accept this client: {exc}")
            raise ServiceUnavailable(self.last_problem) from None

    def _connected(self, snapshot: dict[str, Any] | None) -> None:
        self.last_problem = None
        self._up.set()
        if self.on_connected is not None:
            self.on_connected(self.hello or {}, snapshot)

    def _keep_connected(self) -> None:
        backoff = BACKOFF_FIRST_S
        told: str | None = None
        while not self._closed.is_set():
            try:
                reader = self._open(CONNECT_TIMEOUT_S)
                self._handshake(CONNECT_TIMEOUT_S)
            except ServiceUnavailable as exc:
                if str(exc) != told and self.on_disconnected is not None:
                    told = str(exc)
                    self.on_disconnected(told)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff, told = BACKOFF_FIRST_S, None
            while reader.is_alive() and not self._closed.is_set():
                reader.join(1.0)
            if not self._closed.is_set() and self.on_disconnected is not None:
                told = self.last_problem or "the connection to the bench service was lost"
                self.on_disconnected(told)

    def _read(self, sock: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                try:
                    chunk = sock.recv(1 << 16)
                except OSError:
                    break
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._dispatch(line)
                if len(buffer) > MAX_ANSWER:
                    log.warning("bench client: a frame over %d bytes; dropping the connection", MAX_ANSWER)
                    break
        finally:
            if self._sock is sock:
                self._drop("the connection to the bench service was lost")

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("bench client: the service sent a frame that is not JSON")
            return
        if not isinstance(message, dict):
            return
        if "method" in message and "id" not in message:
            if self.on_notification is not None:
                try:
                    self.on_notification(message["method"], message.get("params") or {})
                except Exception:
                    log.exception("bench client: the notification handler failed on %s", message["method"])
            return
        with self._pending_lock:
            pending = self._pending.get(message.get("id"))
        if pending is None:
            return  # an answer nobody waits for any more (its call timed out)
        if "error" in message:
            err = message["error"] if isinstance(message["error"], dict) else {}
            pending.error = ServiceError(int(err.get("code", wire.INTERNAL_ERROR)), str(err.get("message", "")),
                                         err.get("data"))  # fmt: skip
        else:
            pending.value = message.get("result")
            if pending.in_reader is not None:
                try:
                    pending.in_reader(pending.value)
                except Exception:
                    log.exception("bench client: the connected handler failed")
        pending.done.set()

    def _drop(self, why: str) -> None:
        """Forget the connection; every call waiting on it fails at once."""
        sock, self._sock = self._sock, None
        was_up = self._up.is_set()
        self._up.clear()
        if sock is not None:
            if was_up or self.last_problem is None:
                self.last_problem = why
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._pending_lock:
            waiting = list(self._pending.values())
        for pending in waiting:
            pending.error = ServiceUnavailable(why)
            pending.done.set()


def _why_not(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no bench service: {path} does not exist"
    if isinstance(exc, ConnectionRefusedError):
        return f"no bench service listens on {path}"
    if isinstance(exc, PermissionError):
        return f"not allowed to use {path}: the user must be in the kiosk's group"
    return f"cannot reach the bench service at {path}: {exc.strerror or exc}"


def is_running(socket_path: str | os.PathLike[str] = DEFAULT_SOCKET, timeout: float = 1.0) -> bool:
    """Whether a bench service answers on ``socket_path`` (a hello within ``timeout`` s): the CLI asks this
    to choose between going through the service and opening the bench itself."""
    try:
        with BenchClient(socket_path, client="is_running", role="cli").connect(timeout) as probe:
            return bool(probe.hello and probe.hello.get("service") == "particle-kiosk-bench")
    except (ServiceUnavailable, OSError):
        return False
