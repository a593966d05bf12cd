"""The bench service's wire: JSON-RPC 2.0, one JSON object per line (UTF-8, ``\\n``-terminated), at most
:data:`MAX_FRAME` bytes a line. ``docs/api.md`` describes every method; this module only frames and checks.

Both ends use it: the server to read requests and write responses and notifications, the client
(:mod:`kiosk.service.client`) to write requests and read the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PROTOCOL = 1  # the API's version, in hello's answer: a client may refuse a service it does not know
MAX_FRAME = 1 << 20  # bytes in one line, newline excluded: a frame over it ends the connection
DEFAULT_SOCKET = "/run/particle-kiosk/bench.sock"

# JSON-RPC 2.0's own codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# the service's (the range JSON-RPC leaves to applications)
BUSY = -32001  # the slot runs something already, or the bench is closing
REFUSED = -32002  # the bench says no: no device, a bad module, nothing to do (message says why)
NOT_ALLOWED = -32003  # this connection may look, not act (a remote view; a PIN unlocks it where configured)
NOT_FOUND = -32004  # no such slot, run, plan or device
OVERLOADED = -32005  # this connection has too many calls in flight


@dataclass
class RpcError(Exception):
    """An error response: its code, the words for the technician, and optional data."""

    code: int
    message: str
    data: Any = None

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


def encode(message: dict[str, Any]) -> bytes:
    """One frame: compact JSON and a newline (anything JSON cannot hold is sent as its text)."""
    return (json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str) + "\n").encode()


def request(method: str, params: dict[str, Any] | None, request_id: int | str | None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if request_id is not None:
        message["id"] = request_id
    return encode(message)


def notification(method: str, params: dict[str, Any]) -> bytes:
    return encode({"jsonrpc": "2.0", "method": method, "params": params})


def result(request_id: Any, value: Any) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "result": value})


def error(request_id: Any, err: RpcError) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "error": err.to_json()})


@dataclass(frozen=True)
class Request:
    method: str
    params: dict[str, Any]
    id: int | str | None
    notification: bool  # no "id": no answer is sent, not even an error


def parse_request(line: bytes) -> Request:
    """A request from one frame; RpcError (with the request's id where it had a usable one) otherwise."""
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RpcError(PARSE_ERROR, "not JSON: send one JSON-RPC 2.0 request per line, in UTF-8") from None
    if isinstance(message, list):
        raise RpcError(INVALID_REQUEST, "batches are not supported: send one request per line")
    if not isinstance(message, dict):
        raise RpcError(INVALID_REQUEST, "a request is a JSON object")
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str | type(None)):
        raise RpcError(INVALID_REQUEST, "id must be a string, an integer or null")
    bad = _BadId(request_id)
    if message.get("jsonrpc") != "2.0":
        raise bad.error(INVALID_REQUEST, 'jsonrpc must be "2.0"')
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise bad.error(INVALID_REQUEST, "method must be a non-empty string")
    params = message.get("params", {})
    if isinstance(params, list):
        raise bad.error(INVALID_PARAMS, "params must be an object (by name): positional params are not used")
    if not isinstance(params, dict):
        raise bad.error(INVALID_PARAMS, "params must be an object")
    return Request(method, params, request_id, "id" not in message)


@dataclass(frozen=True)
class _BadId:
    request_id: Any

    def error(self, code: int, message: str) -> RpcError:
        return RpcError(code, message, {"id": self.request_id})


def error_id(err: RpcError) -> Any:
    """The id an error response answers: the request's when it was readable, else null."""
    return err.data.get("id") if isinstance(err.data, dict) and set(err.data) == {"id"} else None


# -- params ------------------------------------------------------------------------------------------------
def param(params: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True,
          default: Any = None) -> Any:  # fmt: skip
    """``params[name]`` when it is of ``kind`` (bools are not ints); INVALID_PARAMS saying what was wrong."""
    if name not in params or params[name] is None:
        if required:
            raise RpcError(INVALID_PARAMS, f"missing param {name!r}")
        return default
    value = params[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise RpcError(INVALID_PARAMS, f"param {name!r} must be {_kind_words(kinds)}, not a boolean")
    if not isinstance(value, kinds):
        raise RpcError(INVALID_PARAMS, f"param {name!r} must be {_kind_words(kinds)}, not {type(value).__name__}")
    return value


def _kind_words(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", bool: "a boolean", dict: "an object", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
