"""Particle's own USB library, ``particle-usb`` (npm), driving the simulated bench.

particle-usb talks to node's ``usb`` package (libusb bindings). ``tests/peers/particle_usb_standin/`` is a stand-in
for that package which forwards every USB operation, one JSON line each way over a pair of pipes, to this
bridge; the bridge answers from the simulated bench (``kiosk.bench.simulated_bench``) through
:class:`hw.sim.usb_backend.SimUsbBackend`, the same pyusb backend the kiosk's own drivers use there.

Time: node's timers (``setTimeout``, ``Date.now``) run on the bench's virtual clock (``bridge_client.js``). The
bridge thread is a clock actor for the whole session, so device time stands still while node computes; it moves
when node waits for a timer (``sleep_until``: the bridge sleeps on the clock until the timer's deadline), and
inside a transfer where the device itself takes time (flash work, a transfer that times out after its
``timeout`` ms), exactly as a pyusb call on the simulator would.

Errors are node-usb's (see the stand-in's ``index.js``): a libusb call that fails gives its LIBUSB_ERROR_* code
(``errno``: -4 NO_DEVICE, -9 PIPE, -7 TIMEOUT, -1 IO, -3 ACCESS); a submitted control transfer that fails completes
with its libusb_transfer_status (4 STALL, 2 TIMED_OUT, 1 ERROR, 5 NO_DEVICE), and one submitted to a device that
has already gone fails at submission with LIBUSB_ERROR_NO_DEVICE.

Every transfer is logged with its setup fields, payload and answer, per *step* (the driver marks each step of
its plan), so a failed check can show the bytes on the wire. Run by hand::

    .venv/bin/python -m tests.interop.particle_usb_bridge healthy@boron plan.json   # prints the session as JSON
"""

from __future__ import annotations

import array
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import usb.core

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "tests" / "peers"
STANDIN = PEERS / "particle_usb_standin"
DRIVER = STANDIN / "driver.js"
PARTICLE_USB = PEERS / "node_modules" / "particle-usb"

#: libusb_transfer_status (libusb.h) of a submitted transfer that failed, by the LIBUSB_ERROR_* code pyusb's
#: simulated backend raises for it.
_TRANSFER_STATUS = {-1: 1, -7: 2, -9: 4, -4: 5}  # IO -> ERROR, TIMEOUT -> TIMED_OUT, PIPE -> STALL, NO_DEVICE
_ERROR_NAMES = {
    -1: "LIBUSB_ERROR_IO",
    -3: "LIBUSB_ERROR_ACCESS",
    -4: "LIBUSB_ERROR_NO_DEVICE",
    -5: "LIBUSB_ERROR_NOT_FOUND",
    -7: "LIBUSB_ERROR_TIMEOUT",
    -9: "LIBUSB_ERROR_PIPE",
    -99: "LIBUSB_ERROR_OTHER",
}
_STATUS_NAMES = {
    1: "LIBUSB_TRANSFER_ERROR",
    2: "LIBUSB_TRANSFER_TIMED_OUT",
    4: "LIBUSB_TRANSFER_STALL",
    5: "LIBUSB_TRANSFER_NO_DEVICE",
}
NO_DEVICE = -4


def particle_usb_version() -> str | None:
    """The installed particle-usb's version, or None when it is not installed (``npm ci --prefix tests/peers``)."""
    try:
        return json.loads((PARTICLE_USB / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def node_binary() -> str | None:
    return shutil.which("node")


# --- the wire log -----------------------------------------------------------------------------------------------------


@dataclass
class Transfer:
    """One USB operation as the bridge served it. Times are device milliseconds."""

    t_ms: float
    op: str  # "control", "open", "claim", "release", "set_alt", "close"
    bm: int | None = None
    request: int | None = None
    value: int | None = None
    index: int | None = None
    length: int | None = None  # wLength
    out: bytes = b""  # the OUT data stage
    reply: bytes | None = None  # the IN data (None: OUT, or failed)
    error: str | None = None  # libusb's name for the failure
    detail: str = ""  # anything else (the alt setting, the interface)

    def __str__(self) -> str:
        if self.op != "control":
            return f"{self.t_ms:10.1f} ms  {self.op} {self.detail}" + (f" -> {self.error}" if self.error else "")
        direction = "IN " if self.bm & 0x80 else "OUT"
        setup = (
            f"{direction} bmRequestType={self.bm:#04x} bRequest={self.request:#04x} "
            f"wValue={self.value:#06x} wIndex={self.index:#06x} wLength={self.length}"
        )
        payload = f" data={_hex(self.out)}" if self.out else ""
        if self.error:
            answer = self.error
        elif self.reply is not None:
            answer = _hex(self.reply) or "(0 bytes)"
        else:
            answer = "ok"
        return f"{self.t_ms:10.1f} ms  {setup}{payload} -> {answer}"


def _hex(data: bytes, limit: int = 160) -> str:
    text = data[:limit].hex(" ")
    return text + (f" ... ({len(data)} bytes)" if len(data) > limit else "")


@dataclass
class Step:
    """One step of the driver's plan: what particle-usb's call gave, the wire during it, the device around it."""

    name: str
    call: str = ""  # the particle-usb call(s), as the driver names them
    ok: bool | None = None  # None: the step never reported (the driver died in it)
    value: Any = None
    error: dict | None = None
    transfers: list[Transfer] = field(default_factory=list)
    before: dict = field(default_factory=dict)  # the simulated device when the step began
    after: dict = field(default_factory=dict)  # ... and when it reported
    events: list[dict] = field(default_factory=list)  # the device's own log meanwhile: {"t_ms", "what"}
    started_ms: float = 0.0
    ended_ms: float = 0.0

    def wire(self, last: int | None = 40, only_control: bool = False) -> str:
        shown = [t for t in self.transfers if t.op == "control" or not only_control]
        if last is not None and len(shown) > last:
            skipped = len(shown) - last
            return f"  ... {skipped} earlier operation(s)\n" + "\n".join(f"  {t}" for t in shown[-last:])
        return "\n".join(f"  {t}" for t in shown) or "  (nothing on the wire)"

    def failed_transfers(self) -> list[Transfer]:
        return [t for t in self.transfers if t.error]

    def controls(self, bm: int | None = None, request: int | None = None, value: int | None = None) -> list[Transfer]:
        return [
            t
            for t in self.transfers
            if t.op == "control"
            and (bm is None or t.bm == bm)
            and (request is None or t.request == request)
            and (value is None or t.value == value)
        ]

    def describe(self) -> str:
        """What went wrong, for an assertion message: the call, its error, the wire."""
        lines = [f"step {self.name!r}: particle-usb {self.call or '(call not reported)'}"]
        if self.ok is None:
            lines.append("  the driver never reported this step (node died in it?)")
        elif self.error:
            lines.append(f"  threw {self.error.get('name')}: {self.error.get('message')}")
            for cause in self.error.get("causes", []):
                lines.append(f"    caused by {cause}")
        else:
            lines.append(f"  returned {json.dumps(self.value)[:600]}")
        bad = self.failed_transfers()
        if bad:
            lines.append("  failed transfer(s):")
            lines.extend(f"    {t}" for t in bad[-5:])
        lines.append(f"  wire during the step ({len(self.transfers)} operations):")
        lines.append(self.wire())
        if self.events:
            lines.append(
                "  the simulated device meanwhile (device ms): "
                + " / ".join(f"{e['t_ms']:.0f} {e['what']}" for e in self.events[-12:])
            )
        lines.append(f"  simulated device before: {summary(self.before)}")
        lines.append(f"  simulated device after:  {summary(self.after)}")
        return "\n".join(lines)


@dataclass
class Session:
    """What one node run did: its steps in order, node's exit status and output."""

    spec: str
    steps: dict[str, Step]
    returncode: int | None
    stdout: str
    stderr: str
    real_s: float
    device_s: float
    fatal: str | None = None

    def step(self, name: str) -> Step:
        if name not in self.steps:
            raise AssertionError(
                f"the driver never reached step {name!r} (node exit {self.returncode}; {self.fatal or ''})\n"
                f"stderr:\n{self.stderr[-3000:]}"
            )
        return self.steps[name]


# --- the bridge -----------------------------------------------------------------------------------------------------


def device_state(device) -> dict:
    """The simulated device as a test compares it with what particle-usb reported."""
    from firmware.platforms import Function

    modules = []
    for (function, index), m in sorted(device.modules.items()):
        entry = {"function": int(function), "name": Function(function).name, "index": index, "version": m.version}
        if m.module is not None:
            entry |= {
                "start": m.module.start_address,
                "end": m.module.end_address,
                "sha256": m.module.sha256.hex(),
                "bytes": len(m.data),
            }
        modules.append(entry)
    return {
        "mode": str(device.mode),
        "usb": device.usb_mode,
        "system_version": device.system_version_string,
        "modules": modules,
        "log": [f"{t:.3f} {what}" for t, what in device.log[-6:]],
    }


def summary(state: dict) -> str:
    """One line of a :func:`device_state`: mode, USB, Device OS, modules, the last log lines."""
    if "devices" in state:
        return " | ".join(summary(s) for s in state["devices"])
    if not state:
        return "(not recorded)"
    modules = ", ".join(f"{m['name'].lower()} {m['index']} v{m['version']}" for m in state["modules"])
    return (
        f"mode {state['mode']}, usb {state['usb']}, Device OS {state['system_version']}; {modules}; "
        f"log: {' / '.join(state['log'][-3:])}"
    )


class Bridge:
    """Serves one node process from one simulated bench (see the module docstring)."""

    def __init__(self, bench):
        self.bench = bench
        self.clock = bench.clock
        self.backend = bench.slots[0].usb_backend
        self.bus = self.backend.bus
        self._keys: dict[int, tuple[int, Any]] = {}  # id(enumeration) -> (key, enumeration)
        self._by_key: dict[int, Any] = {}
        self._handles: dict[int, Any] = {}
        self._next = 1
        self.steps: dict[str, Step] = {}
        self._current = Step("(before the first step)")

    def now_ms(self) -> float:
        return self.clock.now() * 1000.0

    def _log(self, transfer: Transfer) -> None:
        self._current.transfers.append(transfer)

    def _devices(self) -> list:
        return [s.device for s in self.bench.slots if s.device is not None]

    def _state(self) -> dict:
        devices = self._devices()
        return device_state(devices[0]) if len(devices) == 1 else {"devices": [device_state(d) for d in devices]}

    def _log_length(self) -> list[int]:
        return [len(d.log) for d in self._devices()]

    # -- requests --
    def handle(self, msg: dict) -> dict:
        op = msg.get("op")
        method = getattr(self, f"_op_{op}", None)
        if method is None:
            return {"fatal": f"unknown op {op!r}"}
        return method(msg)

    def _op_list(self, msg: dict) -> dict:
        devices = []
        for e in self.backend.enumerate_devices():
            known = self._keys.get(id(e))
            if known is None or known[1] is not e:
                known = (self._next, e)
                self._next += 1
                self._keys[id(e)] = known
                self._by_key[known[0]] = e
            d = e.descriptor
            devices.append(
                {
                    "key": known[0],
                    "bus": d.bus,
                    "address": e.address,
                    "ports": list(d.port_numbers),
                    "device": e.image.device.hex(),
                    "config": e.image.config.hex(),
                }
            )
        return {"devices": devices}

    def _op_open(self, msg: dict) -> dict:
        e = self._by_key.get(msg["key"])
        transfer = Transfer(self.now_ms(), "open", detail=f"device {msg['key']}")
        self._log(transfer)
        try:
            if e is None:
                raise usb.core.USBError("unknown device", NO_DEVICE)
            handle = self.backend.open_device(e)
        except usb.core.USBError as exc:
            return self._sync_error(transfer, exc)
        key = self._next
        self._next += 1
        self._handles[key] = handle
        return {"handle": key}

    def _op_close(self, msg: dict) -> dict:
        handle = self._handles.pop(msg["handle"], None)
        self._log(Transfer(self.now_ms(), "close", detail=f"handle {msg['handle']}"))
        if handle is not None:
            self.backend.close_device(handle)
        return {}

    def _op_claim(self, msg: dict) -> dict:
        return self._sync(
            "claim", msg, lambda h: self.backend.claim_interface(h, msg["interface"]), f"interface {msg['interface']}"
        )

    def _op_release(self, msg: dict) -> dict:
        return self._sync(
            "release",
            msg,
            lambda h: self.backend.release_interface(h, msg["interface"]),
            f"interface {msg['interface']}",
        )

    def _op_set_alt(self, msg: dict) -> dict:
        return self._sync(
            "set_alt",
            msg,
            lambda h: self.backend.set_interface_altsetting(h, msg["interface"], msg["alt"]),
            f"interface {msg['interface']} alt {msg['alt']}",
        )

    def _sync(self, op: str, msg: dict, fn, detail: str) -> dict:
        transfer = Transfer(self.now_ms(), op, detail=detail)
        self._log(transfer)
        handle = self._handles.get(msg["handle"])
        try:
            if handle is None:
                raise usb.core.USBError("not open", NO_DEVICE)
            fn(handle)
        except usb.core.USBError as exc:
            return self._sync_error(transfer, exc)
        return {}

    def _sync_error(self, transfer: Transfer, exc: usb.core.USBError) -> dict:
        code = exc.backend_error_code if exc.backend_error_code is not None else -99
        transfer.error = _ERROR_NAMES.get(code, f"libusb error {code}")
        return {"error": {"errno": code, "message": transfer.error}}

    def _op_control(self, msg: dict) -> dict:
        bm, request, value, index = msg["bm"], msg["request"], msg["value"], msg["index"]
        device_to_host = bool(bm & 0x80)
        out = b"" if device_to_host else bytes.fromhex(msg.get("data", ""))
        length = int(msg["length"]) if device_to_host else len(out)
        transfer = Transfer(self.now_ms(), "control", bm, request, value, index, length, out)
        self._log(transfer)
        handle = self._handles.get(msg["handle"])
        if handle is None or not self._alive(handle):
            # libusb_submit_transfer on a device that has gone: LIBUSB_ERROR_NO_DEVICE, nothing on the wire
            transfer.error = "LIBUSB_ERROR_NO_DEVICE (at submission)"
            return {"error": {"errno": NO_DEVICE, "message": "LIBUSB_ERROR_NO_DEVICE"}}
        buffer = array.array("B", bytes(length) if device_to_host else out)
        try:
            n = self.backend.ctrl_transfer(handle, bm, request, value, index, buffer, int(msg.get("timeout", 1000)))
        except usb.core.USBError as exc:
            code = exc.backend_error_code if exc.backend_error_code is not None else -1
            status = _TRANSFER_STATUS.get(code, 1)
            transfer.error = _STATUS_NAMES[status]
            return {"error": {"transfer_status": status, "message": transfer.error}}
        if device_to_host:
            transfer.reply = buffer[:n].tobytes()
            return {"data": transfer.reply.hex()}
        return {"actual": n}

    def _alive(self, handle) -> bool:
        with self.bus.lock:
            self.bus.refresh()
            return handle.enumeration.alive

    def _op_sleep_until(self, msg: dict) -> dict:
        left = float(msg["t"]) / 1000.0 - self.clock.now()
        if left > 0:
            self.clock.sleep(left)
        return {}

    def _op_now(self, msg: dict) -> dict:
        return {}

    def _op_mark(self, msg: dict) -> dict:
        step = Step(msg["step"], call=msg.get("call", ""), before=self._state(), started_ms=self.now_ms())
        self.steps[step.name] = step
        self._current = step
        self._log_at_mark = self._log_length()
        return {}

    def _op_result(self, msg: dict) -> dict:
        step = self.steps.get(msg["step"]) or self._current
        step.ok = bool(msg.get("ok"))
        step.value = msg.get("value")
        step.error = msg.get("error")
        step.call = msg.get("call") or step.call
        step.after = self._state()
        step.ended_ms = self.now_ms()
        marks = getattr(self, "_log_at_mark", [0] * len(self._devices()))
        step.events = [
            {"t_ms": t * 1000.0, "what": what}
            for device, start in zip(self._devices(), marks, strict=True)
            for t, what in device.log[start:]
        ]
        return {}

    # -- the session --
    def serve(self, requests, replies) -> str | None:
        """Answer every line from ``requests`` on ``replies`` until node closes its end; a fatal error's text."""
        fatal = None
        for line in requests:
            try:
                msg = json.loads(line)
                reply = self.handle(msg)
            except Exception as exc:  # a bridge bug: tell node (it throws) and keep the traceback
                import traceback

                fatal = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                reply = {"fatal": f"{type(exc).__name__}: {exc}"}
            reply["now"] = self.now_ms()
            replies.write(json.dumps(reply) + "\n")
            replies.flush()
        return fatal


def run_particle_usb(
    spec: str,
    plan: dict | Callable[[Any], dict],
    *,
    timeout_s: float = 120.0,
    node: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Session:
    """Run ``driver.js`` with ``plan`` against a new ``simulated_bench(spec)``; return what happened.

    ``plan`` is the driver's JSON plan (its steps and their arguments; see driver.js), or a function of the bench
    that makes it. A ``bytes`` value among a step's arguments is written to a file, passed as ``file``. The node
    process is killed after ``timeout_s`` real seconds.
    """
    from kiosk.bench import simulated_bench

    node = node or node_binary()
    if node is None:
        raise FileNotFoundError("node is not installed")
    started = time.monotonic()
    bench = simulated_bench(spec)
    bridge = Bridge(bench)
    try:
        # an actor from here on: device time moves only when the bridge waits (see the module docstring)
        with bench.clock.actor(), tempfile.TemporaryDirectory(prefix="pusb-") as tmp:
            with bench.clock.lock:
                plan = plan(bench) if callable(plan) else plan
            plan_path = _write_plan(plan, Path(tmp))
            to_node_r, to_node_w = os.pipe()
            from_node_r, from_node_w = os.pipe()
            env = dict(
                os.environ,
                PUSB_BRIDGE_RFD=str(to_node_r),
                PUSB_BRIDGE_WFD=str(from_node_w),
                PUSB_PARTICLE_USB=str(PARTICLE_USB),
                **(extra_env or {}),
            )
            out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
            with out_path.open("w") as out, err_path.open("w") as err:
                proc = subprocess.Popen(
                    [node, str(DRIVER), str(plan_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=env,
                    pass_fds=(to_node_r, from_node_w),
                    cwd=str(STANDIN),
                )
                os.close(to_node_r)
                os.close(from_node_w)
                watchdog = threading.Timer(timeout_s, proc.kill)
                watchdog.daemon = True
                watchdog.start()
                try:
                    with os.fdopen(from_node_r, "r") as requests, os.fdopen(to_node_w, "w") as replies:
                        try:
                            fatal = bridge.serve(requests, replies)
                        except BrokenPipeError:
                            fatal = "node closed its end of the pipe"
                    returncode = proc.wait(timeout=30)
                finally:
                    watchdog.cancel()
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            if time.monotonic() - started >= timeout_s:
                fatal = (fatal or "") + f" killed after {timeout_s} s of real time"
            return Session(
                spec,
                bridge.steps,
                returncode,
                out_path.read_text(),
                err_path.read_text(),
                time.monotonic() - started,
                bench.clock.now(),
                fatal,
            )
    finally:
        bench.close()


def _write_plan(plan: dict, folder: Path) -> Path:
    """The plan as driver.js reads it: ``bytes`` arguments become files (``file``)."""
    plan = json.loads(json.dumps(plan, default=lambda v: {"__bytes__": v.hex()}))
    for step, args in plan.get("args", {}).items():
        for key, value in list(args.items()):
            if isinstance(value, dict) and "__bytes__" in value:
                path = folder / f"{step}-{key}.bin"
                path.write_bytes(bytes.fromhex(value["__bytes__"]))
                del args[key]
                args["file"] = str(path)
    path = folder / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m tests.interop.particle_usb_bridge SCENARIO@PLATFORM PLAN.json", file=sys.stderr)
        return 2
    session = run_particle_usb(args[0], json.loads(Path(args[1]).read_text()))
    for step in session.steps.values():
        print(("ok  " if step.ok else "FAIL") + " " + step.name)
        if not step.ok:
            print(step.describe())
    print(f"node exit {session.returncode}; {session.real_s:.2f} s real, {session.device_s:.1f} s device")
    if session.stderr.strip():
        print("stderr:\n" + session.stderr[-4000:])
    return 0 if session.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
