"""A fault in a screen's handler is shown and logged, and the kiosk carries on.

Textual ends the whole app when a handler raises, and ending the app stops every recovery running on the
bench. The kiosk's screens and its app wrap their handlers (``on_*``, ``pressed_*``, ``action_*`` and
``watch_*`` methods, and whatever is marked :func:`guarded`) so that an exception is logged with its
traceback and shown to the technician as a notice, and the screen stays usable: the handler's message
loop never sees it.

    @guard_handlers
    class KioskApp(App): ...
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("kiosk.tui")

#: The method names Textual (or the kiosk's own dispatch) calls as handlers.
HANDLER_PREFIXES = ("on_", "pressed_", "action_", "watch_", "_show")
#: Textual's own plumbing, which must raise as it does (the app's event entry point re-raises to its loop).
NOT_HANDLERS = frozenset({"on_event"})
C = TypeVar("C", bound=type)


def report_fault(node: Any, where: str, exc: BaseException) -> None:
    """Log ``exc`` with its traceback and tell the technician, in a notice that stays a while."""
    log.error("%s failed", where, exc_info=exc)
    app = getattr(node, "app", node)
    text = (f"{where} failed: {type(exc).__name__}: {exc}. Nothing else was stopped; recoveries carry on. "
            "The kiosk's log has the details.")  # fmt: skip
    try:
        app.notify(text, severity="error", timeout=20)
    except Exception:  # the app may be shutting down: the log has it
        log.debug("could not show the fault", exc_info=True)


def guarded(method: Callable) -> Callable:
    """Wrap one handler (plain or async) so what it raises is reported instead of ending the app."""
    if getattr(method, "__kiosk_guarded__", False):
        return method
    where = method.__qualname__
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_wrapper(self, *args, **kwargs):
            try:
                return await method(self, *args, **kwargs)
            except Exception as exc:
                report_fault(self, where, exc)
                return None

        async_wrapper.__kiosk_guarded__ = True
        return async_wrapper

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            report_fault(self, where, exc)
            return None

    wrapper.__kiosk_guarded__ = True
    return wrapper


def guard_handlers(cls: C) -> C:
    """Guard every handler ``cls`` itself defines (its subclasses call this for theirs)."""
    for name, value in list(vars(cls).items()):
        if name.startswith(HANDLER_PREFIXES) and name not in NOT_HANDLERS and inspect.isfunction(value):
            setattr(cls, name, guarded(value))
    return cls
