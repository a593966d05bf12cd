"""The bench service's socket: a Unix stream socket, never a network address, and one connection per client.

Each connection has a reader thread (frames in, calls started), a writer thread (frames out) and a bounded
queue between what the service says and the socket. Whatever a client does, the bench does not wait for it:
notifications are queued without blocking, and a client whose queue is full (it stopped reading, or floods
the service with calls and never reads the answers) is dropped. Calls run in threads of their own, a few at
a time per connection (a Check that talks to a device for seconds must not hold up a Stop). A frame that
is not JSON-RPC gets an error answer; one over :data:`~kiosk.service.wire.MAX_FRAME` bytes ends the
connection (nothing after it can be trusted to be framed). Nothing a client sends can stop the service.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import socket
import threading
from pathlib import Path
from typing import Any

from kiosk.service import wire
from kiosk.service.api import Api, Session
from kiosk.service.wire import INVALID_REQUEST, OVERLOADED, RpcError

log = logging.getLogger(__name__)

QUEUE_FRAMES = 2048  # frames waiting for one client; beyond it the client is dropped
CALLS_IN_FLIGHT = 8  # calls one connection may have running at once
SEND_TIMEOUT_S = 10.0  # a client that takes no bytes for this long is dropped
READ_CHUNK = 64 * 1024
SOCKET_MODE = 0o660  # the owner and the kiosk's group (the touchscreen's user is in it), nobody else


class SocketInUse(RuntimeError):
    """Another bench service answers on the socket."""


def claim_socket(path: Path) -> None:
    """Make ``path`` free for a new service: a stale file (nobody listening) is removed; a live one refused."""
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a service that died: nobody listens on it
        return
    except OSError as exc:
        if exc.errno in (errno.ENOTSOCK, errno.ECONNREFUSED):
            words = f"{path} exists and is not a bench service's socket: remove it or choose --socket"
            raise SocketInUse(words) from None
        raise
    finally:
        probe.close()
    raise SocketInUse(f"another bench service already listens on {path}: only one may own the bench "
                      "(stop it first: sudo systemctl stop particle-kiosk-bench)")  # fmt: skip


class BenchServer:
    """Listens on ``path`` and serves ``api`` to every client that connects."""

    def __init__(self, path: Path, api: Api, *, max_frame: int = wire.MAX_FRAME, queue_frames: int = QUEUE_FRAMES,
                 calls_in_flight: int = CALLS_IN_FLIGHT) -> None:  # fmt: skip
        self.path = Path(path)
        self.api = api
        self.max_frame = max_frame
        self.queue_frames = queue_frames
        self.calls_in_flight = calls_in_flight
        self._listener: socket.socket | None = None
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        api.subscribe_hook = self._subscriber

    def start(self) -> None:
        """Bind (mode 0660) and accept in a thread; SocketInUse when another service has the socket."""
        claim_socket(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # the socket is born 0660: never a moment when others may connect
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, SOCKET_MODE)
        listener.listen(16)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, name="service-accept", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                continue
            connection = Connection(self, sock)
            with self._lock:
                if self._closed.is_set():
                    sock.close()
                    return
                self._connections.add(connection)
            connection.start()

    def forget(self, connection: Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._connections)

    def _subscriber(self, session: Session):
        connection = next((c for c in list(self._connections) if c.session is session), None)
        if connection is None:
            raise RpcError(INVALID_REQUEST, "this connection is closing")
        return lambda _method, _params, frame: connection.send(frame)

    def close(self) -> None:
        """Stop listening, drop every client and remove the socket file (when it is still ours)."""
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        if self._thread is not None:
            self._thread.join(5.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Connection:
    """One client: its session, a reader, a writer and the bounded queue of frames for it."""

    def __init__(self, server: BenchServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.session = Session()
        self._out: queue.Queue[bytes | None] = queue.Queue(maxsize=server.queue_frames)
        self._calls = threading.BoundedSemaphore(server.calls_in_flight)
        self._closed = threading.Event()

    def start(self) -> None:
        self.sock.settimeout(SEND_TIMEOUT_S)  # (for sendall; the reader waits without it, see _read)
        self._writer = threading.Thread(target=self._write, name="service-write", daemon=True)
        self._writer.start()
        threading.Thread(target=self._read, name="service-read", daemon=True).start()

    # -- out ----------------------------------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        """Queue a frame without waiting; a client that lets its queue fill is dropped."""
        if self._closed.is_set():
            return
        try:
            self._out.put_nowait(frame)
        except queue.Full:
            log.warning("bench service: dropping client %s: it does not read what it is sent", self.session.client)
            self.close()

    def _write(self) -> None:
        while True:
            frame = self._out.get()
            if frame is None or self._closed.is_set():
                return
            try:
                self.sock.sendall(frame)
            except OSError:  # gone, or took no bytes for SEND_TIMEOUT_S
                self.close()
                return

    # -- in -----------------------------------------------------------------------------------------------
    def _read(self) -> None:
        buffer = b""
        try:
            while not self._closed.is_set():
                try:
                    chunk = self.sock.recv(READ_CHUNK)
                except TimeoutError:
                    continue  # only sends time out; a quiet client is fine
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if len(line) > self.server.max_frame:
                        self._too_long()
                        return
                    if line.strip():
                        self._handle(line)
                if len(buffer) > self.server.max_frame:
                    self._too_long()
                    return
        except OSError:
            return
        finally:
            self.close()

    def _too_long(self) -> None:
        limit = self.server.max_frame
        err = RpcError(INVALID_REQUEST, f"a frame is at most {limit} bytes (one JSON object per line): closing")
        self.send(wire.error(None, err))
        with contextlib.suppress(queue.Full):
            self._out.put_nowait(None)  # the writer sends what is queued, then stops
        self._writer.join(SEND_TIMEOUT_S)  # then the reader closes the connection

    def _handle(self, line: bytes) -> None:
        try:
            request = wire.parse_request(line)
        except RpcError as err:
            self.send(wire.error(wire.error_id(err), err))
            return
        if not self._calls.acquire(blocking=False):
            if not request.notification:
                err = RpcError(OVERLOADED, f"at most {self.server.calls_in_flight} calls at once per connection")
                self.send(wire.error(request.id, err))
            return
        threading.Thread(target=self._call, args=(request,), name=f"service-call-{request.method[:20]}",
                         daemon=True).start()  # fmt: skip

    def _call(self, request: wire.Request) -> None:
        try:
            try:
                value: Any = self.server.api.call(self.session, request.method, request.params)
                frame = wire.result(request.id, value)
            except RpcError as err:
                frame = wire.error(request.id, err)
            if not request.notification:
                self.send(frame)
        except Exception:  # (encoding the answer failed): the connection goes on
            log.exception("bench service: answering %s failed", request.method)
        finally:
            self._calls.release()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.server.api.close_session(self.session)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(queue.Full):
            self._out.put_nowait(None)
        self.sock.close()
        self.server.forget(self)
