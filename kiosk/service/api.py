"""The bench service's methods: what a client may ask, checked, and answered from the engine, the journal
and the library. ``docs/api.md`` is the reference; the server (:mod:`kiosk.service.server`) does the wire.

Who may act is decided per connection (a :class:`Session`): the touchscreen and the CLI (local users, let in
by the socket's group) may; a remote view (a browser's ``kiosk tui --remote``) may only look, unless the
config's ``[remote] control`` says ``"everyone"``, or says ``"pin"`` and the connection sent the PIN.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiosk.service import wire
from kiosk.service.board import Board
from kiosk.service.engine import KioskBackend, ManualPlan, SlotBusyError, Source
from kiosk.service.wire import RpcError, param

log = logging.getLogger(__name__)

ROLES = ("touchscreen", "cli", "remote")
CONTROLS = ("view", "pin", "everyone")
PLANS_KEPT = 32  # checked plans waiting for their Flash, oldest forgotten first
MAX_RUNS = 1000  # runs in one history.runs answer
MAX_SCAN = 5000  # the newest runs a partial device id is looked for in
WRONG_PIN_DELAY_S = 1.0  # a wrong PIN waits this long before it is answered (guessing takes its time)
TRANSPORTS = ("auto", "usb", "serial")
MODES = ("dfu", "safe-mode", "listen", "reset", "cold-boot")  # slot.mode: as kiosk.commands.device_cmd's
MAX_LED_WATCH_S = 300.0


@dataclass(frozen=True)
class RemotePolicy:
    """Who on a remote view may press: nobody ("view"), whoever sends the PIN ("pin"), or everyone."""

    control: str = "view"
    pin: str | None = None


@dataclass
class Session:
    """One connection: who it says it is and what it may do."""

    client: str = "?"
    role: str | None = None  # None until hello
    unlocked: bool = False
    subscribed: Callable[[], None] | None = None  # how to stop its notifications

    def may_act(self, policy: RemotePolicy) -> bool:
        if self.role in ("touchscreen", "cli"):
            return True
        if self.role == "remote":
            return policy.control == "everyone" or (policy.control == "pin" and self.unlocked)
        return False


@dataclass
class Method:
    run: Callable[[Session, dict[str, Any]], Any]
    acts: bool  # needs a connection that may act
    doc: str = ""


@dataclass
class Api:
    """The methods over one engine and its board."""

    engine: KioskBackend
    board: Board
    policy: RemotePolicy = field(default_factory=RemotePolicy)
    subscribe_hook: Callable[[Session], Callable[[str, dict[str, Any], bytes], None]] | None = None

    def __post_init__(self) -> None:
        self._plans: OrderedDict[str, ManualPlan] = OrderedDict()
        self._plan_ids = itertools.count(1)
        self._plans_lock = threading.Lock()
        self.methods: dict[str, Method] = {
            "hello": Method(self.hello, False),
            "unlock": Method(self.unlock, False),
            "subscribe": Method(self.subscribe, False),
            "unsubscribe": Method(self.unsubscribe, False),
            "bench.state": Method(self.bench_state, False),
            "bench.devices": Method(self.devices, True),
            "slot.recover": Method(self.recover, True),
            "slot.stop": Method(self.stop, True),
            "recovery.result": Method(self.recovery_result, False),
            "slot.inspect": Method(self.inspect, True),
            "slot.mode": Method(self.mode, True),
            "slot.led": Method(self.led, False),
            "slot.restore": Method(self.restore, True),
            "flash.plan": Method(self.flash_plan, True),
            "flash.start": Method(self.flash_start, True),
            "flash.result": Method(self.flash_result, False),
            "library.list": Method(self.library_list, False),
            "library.import": Method(self.library_import, True),
            "history.runs": Method(self.history_runs, False),
            "history.run": Method(self.history_run, False),
            "history.latest": Method(self.history_latest, False),
            "device.history.get": Method(self.device_history_get, False),
            "device.history.set": Method(self.device_history_set, True),
            "report": Method(self.report, False),
        }

    # -- dispatch -------------------------------------------------------------------------------------
    def call(self, session: Session, method: str, params: dict[str, Any]) -> Any:
        """Answer one call; RpcError for every refusal (a fault becomes wire.INTERNAL_ERROR, logged)."""
        found = self.methods.get(method)
        if found is None:
            raise RpcError(wire.METHOD_NOT_FOUND, f"no method {method!r}; the methods are: {', '.join(self.methods)}")
        if found.acts and not session.may_act(self.policy):
            raise RpcError(wire.NOT_ALLOWED, self._not_allowed_words(session), {"control": self.policy.control})
        try:
            return found.run(session, params)
        except RpcError:
            raise
        except SlotBusyError as exc:
            raise RpcError(wire.BUSY, str(exc)) from None
        except LookupError as exc:  # no such slot, run, plan, entry (UnknownRecordError is one)
            raise RpcError(wire.NOT_FOUND, str(exc.args[0]) if exc.args else str(exc)) from None
        except OSError as exc:
            words = f"{getattr(exc, 'filename', None) or ''} {exc.strerror or exc}".strip()
            raise RpcError(wire.REFUSED, words) from None
        except ValueError as exc:  # a PlanInputError's data says which input and why
            raise RpcError(wire.REFUSED, str(exc), getattr(exc, "data", None) or None) from None
        except Exception as exc:
            if _is_refusal(exc):
                raise RpcError(wire.REFUSED, str(exc)) from None
            log.exception("bench service: %s failed", method)
            words = f"{method} failed in the service: {type(exc).__name__}: {exc}"
            raise RpcError(wire.INTERNAL_ERROR, words) from None

    def _not_allowed_words(self, session: Session) -> str:
        if session.role is None:
            return "say hello first (with your role): this connection may not act yet"
        if self.policy.control == "pin":
            return "this is a view-only screen: enter the kiosk's PIN to press buttons from here"
        return ("this is a view-only screen: the kiosk's config ([remote] control) lets remote screens look, "
                "not press; use the bench's touchscreen")  # fmt: skip

    def close_session(self, session: Session) -> None:
        if session.subscribed is not None:
            session.subscribed()
            session.subscribed = None

    # -- who is asking ----------------------------------------------------------------------------------
    def hello(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        client = param(params, "client", str, required=False, default="?")[:80]
        role = param(params, "role", str, required=False, default="cli")
        if role not in ROLES:
            raise RpcError(wire.INVALID_PARAMS, f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if session.role is not None and session.role != role:
            raise RpcError(wire.NOT_ALLOWED, f"this connection said hello as {session.role!r} already")
        session.client, session.role = client, role
        pin = param(params, "pin", str, required=False)
        if pin is not None:
            self._check_pin(session, pin)
        return {"service": "particle-kiosk-bench", "protocol": wire.PROTOCOL, "pid": os.getpid(),
                "bench": self.engine.description, **self._rights(session)}  # fmt: skip

    def unlock(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        self._check_pin(session, param(params, "pin", str))
        return self._rights(session)

    def _check_pin(self, session: Session, pin: str) -> None:
        if self.policy.control != "pin" or not self.policy.pin:
            raise RpcError(wire.REFUSED, "this kiosk takes no PIN: its config sets [remote] control to "
                           f"{self.policy.control!r}")  # fmt: skip
        if not hmac.compare_digest(pin.encode(), self.policy.pin.encode()):
            self.engine.wait_closed(WRONG_PIN_DELAY_S)  # a stopping service answers at once
            raise RpcError(wire.NOT_ALLOWED, "wrong PIN: this screen stays view-only")
        session.unlocked = True

    def _rights(self, session: Session) -> dict[str, Any]:
        return {"role": session.role, "may_act": session.may_act(self.policy), "control": self.policy.control}

    # -- state and notifications -------------------------------------------------------------------------
    def subscribe(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        if self.subscribe_hook is None:
            raise RpcError(wire.REFUSED, "this service sends no notifications")
        if session.subscribed is not None:
            session.subscribed()
        seq, states, remove = self.board.listen(self.subscribe_hook(session))
        session.subscribed = remove
        return {**self.bench_state(session, {}), "seq": seq, "slots": states}

    def unsubscribe(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        self.close_session(session)
        return {}

    def bench_state(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        engine = self.engine
        seq, states = self.board.snapshot()
        library = engine.library
        return {"bench": engine.description, "simulated": bool(engine.bench and engine.bench.simulated),
                "seq": seq, "slots": states, "interrupted": list(engine.interrupted),
                "journal": str(engine.journal_path) if engine.journal_path else None,
                "library": str(library.root) if library is not None else None, **self._rights(session)}  # fmt: skip

    # -- acting on slots -----------------------------------------------------------------------------------
    def _slot(self, params: dict[str, Any]) -> int:
        slot = param(params, "slot", int)
        if self.board.state(slot) is None:
            raise RpcError(wire.NOT_FOUND, f"there is no slot {slot} on this bench")
        return slot

    def devices(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        def known(slot: int) -> dict[str, Any]:  # a busy slot's device as its run's events last showed it
            state = self.board.state(slot)
            if state is None:
                return {}
            return {"device_id": state.device_id, "platform": state.platform, "mode": state.usb_mode}

        return {"slots": self.engine.list_devices(known)}

    def recover(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        return {"run_id": self.engine.start_recovery(self._slot(params))}

    def stop(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        slot = self._slot(params)
        self.board.stopping(slot)
        return {"stopping": bool(self.engine.stop(slot))}

    def recovery_result(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        return self.engine.recovery_result(param(params, "run_id", int))

    def inspect(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        return self.engine.inspect(self._slot(params))

    def mode(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        slot = self._slot(params)
        operation = param(params, "mode", str)
        if operation not in MODES:
            raise RpcError(wire.INVALID_PARAMS, f"mode must be one of {', '.join(MODES)}")
        return {"slot": slot, **self.engine.change_mode(slot, operation)}

    def restore(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        slot = self._slot(params)
        options = {name: param(params, name, str, required=False) for name in ("platform", "device_os", "probe")}
        return self.engine.swd_restore(slot, **options)

    def led(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        slot = self._slot(params)
        watch = param(params, "watch_s", (int, float), required=False)
        if watch is not None and not 0 < watch <= MAX_LED_WATCH_S:
            raise RpcError(wire.INVALID_PARAMS, f"watch_s is more than 0 and at most {MAX_LED_WATCH_S:g} seconds")
        return {"slot": slot, **self.engine.read_led(slot, watch)}

    def flash_plan(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        from firmware.plan import Transport

        slot = self._slot(params)
        transport = param(params, "transport", str, required=False, default="auto")
        if transport not in TRANSPORTS:
            raise RpcError(wire.INVALID_PARAMS, f"transport must be one of {', '.join(TRANSPORTS)}")
        skip = param(params, "skip_installed", bool, required=False, default=False)
        update = param(params, "update", dict, required=False)
        backup = param(params, "backup", dict, required=False)
        if backup is not None:  # the apps a run kept, put back (`kiosk backup restore`)
            run_id = backup.get("run_id")
            if not isinstance(run_id, int) or isinstance(run_id, bool):
                raise RpcError(wire.INVALID_PARAMS, 'backup is {"run_id": 41}: the run that kept the app')
            manual = self.engine.plan_manual(slot, [], Transport(transport), skip_installed=skip, backup_run=run_id)
        elif update is not None:  # a Device OS update: the library's release for the device's platform
            release = update.get("device_os")
            if release is not None and not isinstance(release, str):
                raise RpcError(wire.INVALID_PARAMS, 'update is {"device_os": "6.1.1"} or {"device_os": null}')
            manual = self.engine.plan_manual(slot, [], Transport(transport), skip_installed=skip, update=True,
                                             release=release)  # fmt: skip
        else:
            sources = [self._source(m) for m in param(params, "modules", list)]
            manual = self.engine.plan_manual(slot, sources, Transport(transport), skip_installed=skip)
        plan_id = None
        if not manual.refused:
            with self._plans_lock:
                plan_id = f"plan-{next(self._plan_ids)}"
                self._plans[plan_id] = manual
                while len(self._plans) > PLANS_KEPT:
                    self._plans.popitem(last=False)
        return {"plan_id": plan_id, **describe(manual)}

    def _source(self, module: Any) -> Source:
        if not isinstance(module, dict):
            raise RpcError(wire.INVALID_PARAMS, 'each module is {"library": path} or {"file": path}')
        if isinstance(module.get("library"), str):
            wanted = module["library"]
            entry = next((e for e in self.engine.library.entries() if e.path == wanted), None)
            if entry is None:
                raise RpcError(wire.NOT_FOUND, f"the library has no {wanted}")
            return Source(module.get("label") or entry.name, entry=entry)
        if module.get("tinker") is True:
            return Source(str(module.get("label") or "tinker"), tinker=True)
        if isinstance(module.get("file"), str):
            path = Path(module["file"])
            return Source(str(module.get("label") or path.name), path=path)
        raise RpcError(wire.INVALID_PARAMS, 'each module is {"library": path} or {"file": path}')

    def flash_start(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        plan_id = param(params, "plan_id", str)
        with self._plans_lock:
            manual = self._plans.pop(plan_id, None)  # a plan is written once; the next flash is checked again
        if manual is None:
            raise RpcError(wire.NOT_FOUND, f"no checked plan {plan_id!r} (each is written once): tap CHECK again")
        command = param(params, "command", str, required=False)
        state = self.board.state(manual.slot)
        device_id = (state.device_id if state is not None else None) or manual.device_id
        run_id = self.engine.start_flash(manual.slot, manual.plan, device_id, command=command and command[:40])
        return {"run_id": run_id, "slot": manual.slot}

    def flash_result(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        return self.engine.flash_result(param(params, "run_id", int))

    # -- the library ------------------------------------------------------------------------------------------
    def library_list(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import asdict

        platform = param(params, "platform", str, required=False)
        library = self.engine.library
        entries = [e for e in library.entries() if platform is None or e.platform == platform]
        quarantined = library.quarantined() if platform is None else []
        return {"root": str(library.root), "entries": [{**e.to_json(), "label": _label(e)} for e in entries],
                "quarantined": [asdict(q) for q in quarantined]}  # fmt: skip

    def library_import(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        path = Path(param(params, "path", str)).expanduser()
        if not path.exists():
            raise RpcError(wire.NOT_FOUND, f"{path} does not exist: check the path, or plug the USB stick in")
        return self.engine.library.import_path(path).to_json()

    # -- the journal -------------------------------------------------------------------------------------------
    def _journal(self):
        if self.engine.journal is None:
            raise RpcError(wire.REFUSED, "this kiosk keeps no journal")
        return self.engine.journal

    def history_runs(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        journal = self._journal()
        limit = min(max(param(params, "limit", int, required=False, default=200), 1), MAX_RUNS)
        exact = param(params, "device_id", str, required=False)
        part = (param(params, "part", str, required=False) or "").lower()
        head = (param(params, "head", str, required=False) or "").lower()
        tail = (param(params, "tail", str, required=False) or "").lower()
        if exact or not (part or head or tail):
            return {"runs": journal.runs(device_id=exact, limit=limit), "capped": False,
                    "total": journal.count_runs(device_id=exact)}  # fmt: skip
        newest = journal.runs(limit=MAX_SCAN)

        def matches(device: str | None) -> bool:
            device = (device or "").lower()
            if not device:
                return False
            return part in device if part else device.startswith(head) and device.endswith(tail)

        runs = [r for r in newest if matches(r.get("device_id"))]
        return {"runs": runs[:limit], "capped": len(newest) >= MAX_SCAN}

    def history_run(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        return self._journal().run(param(params, "run_id", int))

    def history_latest(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        slot = param(params, "slot", int, required=False)
        device_id = param(params, "device_id", str, required=False)
        return {"run_id": self._journal().latest_run_id(slot=slot, device_id=device_id)}

    def device_history_get(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        return {"history": self._journal().device_history(param(params, "device_id", str)) or {}}

    def device_history_set(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        from kiosk.journal import HISTORY_FIELDS

        device_id = param(params, "device_id", str)
        answers = param(params, "answers", dict)
        unknown = sorted(set(answers) - set(HISTORY_FIELDS))
        if unknown:
            known = ", ".join(HISTORY_FIELDS)
            raise RpcError(wire.INVALID_PARAMS, f"unknown answers {unknown}; the fields are {known}")
        if any(v is not None and not isinstance(v, str) for v in answers.values()):
            raise RpcError(wire.INVALID_PARAMS, "each answer is a string or null")
        self._journal().set_device_history(device_id, **answers)
        return {"history": self._journal().device_history(device_id) or {}}

    def report(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        from kiosk.journal import HISTORY_FIELDS
        from kiosk.report import HISTORY_LABELS, build_report, render_json, render_markdown

        journal = self._journal()
        run_id = param(params, "run_id", int)
        report = build_report(journal, run_id)
        device_id = report["device"].get("device_id")
        history = journal.device_history(device_id) if device_id else None
        return {"run_id": run_id, "report": report, "history": history or {},
                "fields": [[name, HISTORY_LABELS[name]] for name in HISTORY_FIELDS],
                "markdown": render_markdown(report), "json": render_json(report)}  # fmt: skip


def _label(entry: Any) -> str:
    return f"{entry.platform} {entry.release or ''} {entry.name}".replace("  ", " ")


def _is_refusal(exc: Exception) -> bool:
    """The journal's and the library's own errors are refusals in words, not faults of the service."""
    return type(exc).__name__ in ("JournalError", "LibraryError", "PlanRefused", "NotAModuleError")


def describe(manual: ManualPlan) -> dict[str, Any]:
    """A checked plan (or its refusal) as JSON the Flash screen shows; the plan itself stays in the service."""
    plan = manual.plan
    return {"slot": manual.slot, "refused": manual.refused, "device": manual.device,
            "steps": [{"name": Path(s.name).name, "mechanism": s.mechanism.value, "size": len(s.payload),
                       "device_mode": s.device_mode} for s in plan.steps] if plan is not None else [],
            "warnings": list(plan.warnings) if plan is not None else [],
            "refusals": [{"name": Path(r.name).name, "reason": r.reason, "file": r.name} for r in manual.refusals],
            "suggestion": manual.suggestion.value if manual.suggestion is not None else None,
            "platform": manual.platform, "platform_display": manual.platform_display,
            "device_id": manual.device_id, "already_on_device": list(manual.already),
            "update": manual.update, "backup": manual.backup}  # fmt: skip
