"""Run a call that a regression could make block or loop forever, so the test fails instead of hanging CI."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """fn() on a daemon thread: its result (or its exception, raised here), or an AssertionError when it is still
    running after ``seconds`` of real time (the thread is left behind; it dies with the test process)."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(("value", fn()))
        except BaseException as exc:  # handed to the test thread
            box.append(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"still running after {seconds} s: it blocked, or loops without end"
    kind, value = box[0]
    if kind == "error":
        raise value
    return value
