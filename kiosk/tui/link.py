"""The touchscreen's line to the bench service: a :class:`~kiosk.service.client.BenchClient` that keeps
itself connected and turns what the service says into Textual messages for the app.

Calls (``link.call``) block: the app makes them from its worker threads, never on the UI thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiosk.service.client import BenchClient, ServiceError, ServiceUnavailable
from kiosk.tui.messages import Connected, Disconnected, ServiceNote

__all__ = ["ServiceError", "ServiceLink", "ServiceUnavailable"]

CALL_TIMEOUT_S = 120.0  # a Check talks to the device (it may have to be found on USB first)


class ServiceLink:
    """The app's client; ``post`` is the app's ``post_message``. ``role`` "remote" for a browser's screen."""

    def __init__(self, socket_path: Path, *, role: str = "touchscreen", client: str = "kiosk tui",
                 private: Any = None) -> None:  # fmt: skip
        self.socket_path = Path(socket_path)
        self.role = role
        self.private = private  # the private service this link started (a simulated bench), or None
        self.post: Callable[[Any], Any] = lambda _message: None
        self.client = BenchClient(socket_path, client=client, role=role, subscribe=True,
                                  on_notification=lambda method, params: self.post(ServiceNote(method, params)),
                                  on_connected=lambda hello, snap: self.post(Connected(hello, snap or {})),
                                  on_disconnected=lambda why: self.post(Disconnected(why)))  # fmt: skip
        self._started = False

    def start(self, post: Callable[[Any], Any]) -> None:
        self.post = post
        if not self._started:
            self._started = True
            self.client.start()

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = CALL_TIMEOUT_S) -> Any:
        return self.client.call(method, params, timeout)

    def unlock(self, pin: str) -> dict[str, Any]:
        return self.client.unlock(pin)

    def close(self) -> None:
        self.client.close()
        if self.private is not None:
            self.private.close()
