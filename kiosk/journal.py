"""The kiosk's journal: what happened on the bench, on disk, in SQLite, honest after a crash.

A step is written and committed *before* its action runs and completed after it, so a kill -9 or a power
cut leaves either a finished step or an open one, never a step that silently vanished. On the next start,
:meth:`Journal.mark_interrupted` turns runs that were still running into ``interrupted`` ones.

Every text and JSON value passes through :func:`hw.serial_console.redact` before it is written, so a Device
Secret seen in a transcript never reaches the disk.

    >>> j = Journal(":memory:", now=lambda: datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    >>> run_id = j.start_run(slot=1, device_id="E00FCE68AABBCCDDEEFF0011", platform="boron")
    >>> step_id = j.begin_step(run_id, "cold-boot", "VBUS off 5 s, on")
    >>> j.end_step(step_id, "ok", "white LED after power came back", {"off_s": 5.0})
    >>> j.finish_run(run_id, "recovered", "cold-boot", "", elapsed_s=9.8, minimum_s=9.5)
    >>> [s["outcome"] for s in j.run(run_id)["steps"]], j.run(run_id)["device_id"]
    (['ok'], 'e00fce68aabbccddeeff0011')
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hw.serial_console import redact

RUN_STATUSES = ("running", "finished", "interrupted", "stopped")
HISTORY_FIELDS = ("powered_by", "mounted_on", "peripherals", "firmware_notes")
REDACTED = "<redacted>"
#: The media type of a backup's artifact: its facts as JSON (kiosk.backup keeps the bytes in a file beside the journal).
BACKUP_MEDIA_TYPE = "application/vnd.particle-kiosk.user-part-backup+json"
BUSY_TIMEOUT_MS = 10_000  # another process (the CLI's `kiosk report`) may hold the write lock briefly

#: Ordered migrations: entry ``i`` takes the schema from version ``i`` to ``i + 1``. Append, never edit:
#: a journal on a kiosk in the field was made by some prefix of this list.
MIGRATIONS: tuple[str, ...] = (
    # 1: the first journal: runs, their steps and what was observed.
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        slot INTEGER NOT NULL,
        device_id TEXT,
        platform TEXT,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        status TEXT NOT NULL DEFAULT 'running'
            CHECK (status IN ('running', 'finished', 'interrupted', 'stopped')),
        verdict TEXT,
        rung_that_fixed TEXT,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        rung TEXT NOT NULL,
        action TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        outcome TEXT,
        detail TEXT NOT NULL DEFAULT '',
        figures TEXT NOT NULL DEFAULT '{}',
        UNIQUE (run_id, seq)
    );
    CREATE TABLE observations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id INTEGER REFERENCES steps(id) ON DELETE SET NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX observations_by_run ON observations(run_id, id);
    """,
    # 2: device history (the technician's form), artifacts, scenario and device-time figures.
    """
    ALTER TABLE runs ADD COLUMN scenario TEXT;
    ALTER TABLE runs ADD COLUMN elapsed_s REAL;
    ALTER TABLE runs ADD COLUMN minimum_s REAL;
    ALTER TABLE steps ADD COLUMN started_device_s REAL;
    ALTER TABLE steps ADD COLUMN ended_device_s REAL;
    ALTER TABLE observations ADD COLUMN device_s REAL;
    CREATE INDEX runs_by_device ON runs(device_id, id);
    CREATE INDEX runs_by_status ON runs(status);
    CREATE TABLE device_history (
        device_id TEXT PRIMARY KEY,
        powered_by TEXT,
        mounted_on TEXT,
        peripherals TEXT,
        firmware_notes TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE artifacts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        media_type TEXT NOT NULL,
        data BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX artifacts_by_run ON artifacts(run_id, id);
    """,
    # 3: what the verdict asks of the technician, apart from what was found, the USB errors the run met, and
    # what kind of run it was (a recovery, or a flash by hand).
    """
    ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'recovery';
    ALTER TABLE runs ADD COLUMN action TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN again INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN usb_errors INTEGER NOT NULL DEFAULT 0;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
RUN_KINDS = ("recovery", "manual flash")


class JournalError(Exception):
    """The journal cannot do what was asked (a newer schema, a step already ended, ...)."""


class UnknownRecordError(JournalError, LookupError):
    """No run, step or artifact with that id."""


def utc_now() -> datetime:
    """The wall clock in UTC (the default ``now`` of a :class:`Journal`)."""
    return datetime.now(UTC)


# --- redaction ----------------------------------------------------------------------------------------------


def _is_secret_key(key: str) -> bool:
    # redact() is the one authority on what is secret; ask it about the key as a one-entry JSON document.
    probe = json.dumps({key: "x"})
    return redact(probe) != probe


def redacted(value: Any) -> Any:
    """A JSON-ready copy of ``value`` with every string through ``redact`` and secret-keyed values replaced.

    Objects with ``to_json()`` are converted; tuples become lists; NaN and infinities become None (the JSON
    must stay valid); bytes become text.

        >>> redacted({"transcript": "Device ID: e00f\\nDevice Secret: ABCDEF", "ms": "xyz", "n": 1.5})
        {'transcript': 'Device ID: e00f\\nDevice Secret: <redacted>', 'ms': '<redacted>', 'n': 1.5}
    """
    if hasattr(value, "to_json") and callable(value.to_json):
        value = value.to_json()
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "backslashreplace"))
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)
            if _is_secret_key(key) and not (item is None or isinstance(item, bool | int | float)):
                out[key] = REDACTED  # numbers under a secret-looking key ("ms" in figures) are durations
            else:
                out[redact(key)] = redacted(item)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [redacted(item) for item in value]
    return redact(str(value))


def _json(value: Any) -> str:
    return json.dumps(redacted(value), allow_nan=False, separators=(",", ":"))


def _text(value: str | None) -> str:
    return redact(value or "")


def _split_statements(script: str) -> Iterator[str]:
    # executescript() would COMMIT first and break the migration's atomicity; feed statements one by one.
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in a migration: {buffer.strip()[:60]!r}")


# --- the journal --------------------------------------------------------------------------------------------


class Journal:
    """The journal at ``path`` (``":memory:"`` for tests): created or migrated on open; thread-safe.

    ``now`` gives the wall-clock time written into every record (default: UTC now). One connection is
    shared under a lock: writes are a few per second per slot, so slots in parallel threads never wait long.

        >>> Journal(":memory:").schema_version() == SCHEMA_VERSION
        True
    """

    def __init__(
        self,
        path: str | Path,
        *,
        now: Callable[[], datetime] = utc_now,
        migrations: tuple[str, ...] = MIGRATIONS,
    ) -> None:
        self.path = str(path)
        self._now = now
        self._lock = threading.RLock()
        self._live: set[int] = set()  # runs this instance started: mark_interrupted() must not touch them
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), never implicit.
        self._db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._configure()
            self._migrate(migrations)
        except BaseException:
            self._db.close()
            raise

    def _configure(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() not in ("wal", "memory"):  # ":memory:" databases cannot use WAL
            raise JournalError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); is the file on a network share?")
        # FULL: the WAL is synced at every commit, so a completed step survives a power cut, not just a kill.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")

    def _migrate(self, migrations: tuple[str, ...]) -> None:
        with self._write() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            if current > len(migrations):
                raise JournalError(
                    f"{self.path}: journal schema version {current} is newer than this kiosk knows "
                    f"({len(migrations)}); update the kiosk software or open another journal file"
                )
            for version in range(current + 1, len(migrations) + 1):
                for statement in _split_statements(migrations[version - 1]):
                    db.execute(statement)
                db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, self._stamp()))

    def _stamp(self) -> str:
        return self._now().isoformat()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: no deadlock upgrading a read lock against another process.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the database (a WAL checkpoint happens when the last connection closes)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        """The schema version of the open database."""
        return self._read("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0]

    # --- runs -----------------------------------------------------------------------------------------------

    def start_run(self, slot: int, device_id: str | None, platform: str | None, scenario: str | None = None,
                  *, kind: str = "recovery") -> int:  # fmt: skip
        """Record a run starting on ``slot`` (device id and platform None while unknown); returns its id.
        ``kind``: ``recovery`` (the ladder) or ``manual flash`` (modules the technician chose)."""
        if kind not in RUN_KINDS:
            raise ValueError(f"a run is one of {', '.join(RUN_KINDS)}, not {kind!r}")
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (slot, device_id, platform, scenario, started_at, status, kind) "
                "VALUES (?, ?, ?, ?, ?, 'running', ?)",
                (slot, _device_key(device_id), _opt(platform), _opt(scenario), self._stamp(), kind),
            )
        run_id = int(cursor.lastrowid or 0)
        self._live.add(run_id)
        return run_id

    def identify_run(self, run_id: int, device_id: str | None = None, platform: str | None = None) -> None:
        """Fill in the device id and/or platform of a run once a rung has found them (None: leave as is)."""
        with self._write() as db:
            self._run_row(db, run_id)
            db.execute(
                "UPDATE runs SET device_id = COALESCE(?, device_id), platform = COALESCE(?, platform) WHERE id = ?",
                (_device_key(device_id), _opt(platform), run_id),
            )

    def finish_run(
        self,
        run_id: int,
        verdict: str,
        rung: str | None,
        detail: str = "",
        elapsed_s: float | None = None,
        minimum_s: float | None = None,
        status: str = "finished",
        *,
        action: str = "",
        again: bool = False,
        usb_errors: int = 0,
    ) -> None:
        """Close a running run with its verdict, the rung that fixed it (None: none did) and device seconds.

        ``status`` is ``finished`` or ``stopped`` (the technician pressed Stop). Steps still open are closed
        with the outcome ``stopped`` or ``abandoned`` so the record never shows a step running for ever.
        ``action`` is what the technician is to do (then recover it again, when ``again``); ``usb_errors`` the
        USB transfers that failed on the wire and were retried.
        """
        if status not in ("finished", "stopped", "interrupted"):
            raise ValueError(f"a run ends as finished, stopped or interrupted, not {status!r}")
        with self._write() as db:
            row = self._run_row(db, run_id)
            if row["status"] != "running":
                raise JournalError(f"run {run_id} already ended ({row['status']})")
            stamp = self._stamp()
            db.execute(
                "UPDATE runs SET status = ?, ended_at = ?, verdict = ?, rung_that_fixed = ?, detail = ?, "
                "elapsed_s = ?, minimum_s = ?, action = ?, again = ?, usb_errors = ? WHERE id = ?",
                (status, stamp, _text(verdict), _opt(rung), _text(detail), _num(elapsed_s), _num(minimum_s),
                 _text(action), int(bool(again)), max(0, int(usb_errors)), run_id),
            )
            open_outcome = "abandoned" if status == "finished" else status
            db.execute(
                "UPDATE steps SET outcome = ?, ended_at = ? WHERE run_id = ? AND outcome IS NULL",
                (open_outcome, stamp, run_id),
            )
        self._live.discard(run_id)

    def mark_interrupted(self) -> list[int]:
        """Mark runs left ``running`` by a crash as ``interrupted`` (and their open steps); returns their ids.

        Call it once at start, in the process that runs ladders. Runs this instance started are left alone.
        """
        with self._write() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM runs WHERE status = 'running' ORDER BY id")]
            ids = [i for i in ids if i not in self._live]
            stamp = self._stamp()
            for run_id in ids:
                db.execute(
                    "UPDATE runs SET status = 'interrupted', ended_at = ?, "
                    "detail = CASE WHEN detail = '' THEN ? ELSE detail END WHERE id = ?",
                    (stamp, "the kiosk stopped while this run was in progress", run_id),
                )
                db.execute(
                    "UPDATE steps SET outcome = 'interrupted', ended_at = ? WHERE run_id = ? AND outcome IS NULL",
                    (stamp, run_id),
                )
        return ids

    # --- steps and observations -----------------------------------------------------------------------------

    def begin_step(self, run_id: int, rung: str, action: str, *, device_s: float | None = None) -> int:
        """Record (and commit) a step about to run; returns its id. ``device_s``: device-clock seconds."""
        with self._write() as db:
            if self._run_row(db, run_id)["status"] != "running":
                raise JournalError(f"run {run_id} has ended; no new steps")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id = ?", (run_id,)).fetchone()[0]
            cursor = db.execute(
                "INSERT INTO steps (run_id, seq, rung, action, started_at, started_device_s) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, seq, _text(rung), _text(action), self._stamp(), _num(device_s)),
            )
        return int(cursor.lastrowid or 0)

    def end_step(
        self,
        step_id: int,
        outcome: str,
        detail: str = "",
        figures: Mapping[str, Any] | None = None,
        *,
        device_s: float | None = None,
    ) -> None:
        """Complete a step with its outcome (``ok``, ``failed``, ``skipped``, ...), detail and figures."""
        if not outcome:
            raise ValueError("a step ends with an outcome")
        with self._write() as db:
            row = db.execute("SELECT outcome FROM steps WHERE id = ?", (step_id,)).fetchone()
            if row is None:
                raise UnknownRecordError(f"no step {step_id}")
            if row["outcome"] is not None:
                raise JournalError(f"step {step_id} already ended ({row['outcome']})")
            db.execute(
                "UPDATE steps SET outcome = ?, ended_at = ?, detail = ?, figures = ?, ended_device_s = ? WHERE id = ?",
                (_text(outcome), self._stamp(), _text(detail), _json(figures or {}), _num(device_s), step_id),
            )

    def observe(
        self, run_id: int, kind: str, data: Any, step_id: int | None = None, *, device_s: float | None = None
    ) -> int:
        """Record what was seen (``kind``: led, usb, modules, transcript, ...; ``data``: JSON-able); its id.

        Without ``step_id`` it belongs to the run's open step, if one is open: steps of a run never overlap.
        """
        with self._write() as db:
            self._run_row(db, run_id)
            if step_id is None:
                row = db.execute(
                    "SELECT id FROM steps WHERE run_id = ? AND outcome IS NULL ORDER BY seq DESC LIMIT 1", (run_id,)
                ).fetchone()
                step_id = row[0] if row else None
            cursor = db.execute(
                "INSERT INTO observations (run_id, step_id, at, kind, data, device_s) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, step_id, self._stamp(), _text(kind), _json(data), _num(device_s)),
            )
        return int(cursor.lastrowid or 0)

    # --- artifacts ------------------------------------------------------------------------------------------

    def add_artifact(
        self, run_id: int, name: str, data: bytes | str, media_type: str = "application/octet-stream"
    ) -> int:
        """Attach a file to a run (a transcript, a flash dump); returns its id.

        Text (a ``str``, or bytes of a ``text/*`` or JSON media type) is redacted; other bytes are kept as
        they are (binary images carry no Device Secret: that lives in the device's own configuration).
        """
        if isinstance(data, str):
            blob = redact(data).encode("utf-8")
            media_type = media_type if media_type != "application/octet-stream" else "text/plain"
        elif _is_text_type(media_type):
            blob = redact(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        else:
            blob = bytes(data)
        with self._write() as db:
            self._run_row(db, run_id)
            cursor = db.execute(
                "INSERT INTO artifacts (run_id, name, media_type, data, created_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, _text(name), media_type, blob, self._stamp()),
            )
        return int(cursor.lastrowid or 0)

    def artifact(self, artifact_id: int) -> tuple[str, str, bytes]:
        """An artifact's (name, media type, bytes)."""
        rows = self._read("SELECT name, media_type, data FROM artifacts WHERE id = ?", (artifact_id,))
        if not rows:
            raise UnknownRecordError(f"no artifact {artifact_id}")
        return rows[0]["name"], rows[0]["media_type"], bytes(rows[0]["data"])

    def backups(self, run_id: int | None = None, device_id: str | None = None) -> list[dict[str, Any]]:
        """The user-part backups kept (of one run, of one device), newest first: each artifact's facts (file,
        sha256, size, platform, version, ...) with ``artifact_id``, ``run_id``, ``created_at`` and the run's slot."""
        clauses, params = ["a.media_type = ?"], [BACKUP_MEDIA_TYPE]
        if run_id is not None:
            clauses.append("a.run_id = ?")
            params.append(run_id)
        if device_id is not None:
            clauses.append("r.device_id = ?")
            params.append(_device_key(device_id))
        rows = self._read(
            "SELECT a.id, a.run_id, a.data, a.created_at, r.slot, r.device_id AS run_device_id FROM artifacts a "
            f"JOIN runs r ON r.id = a.run_id WHERE {' AND '.join(clauses)} ORDER BY a.id DESC",
            tuple(params),
        )
        out = []
        for row in rows:
            try:
                facts = json.loads(bytes(row["data"]).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                facts = {"problems": ["the journal's record of this backup does not read"]}
            if not isinstance(facts, dict):
                facts = {"problems": ["the journal's record of this backup does not read"]}
            facts.setdefault("device_id", row["run_device_id"])
            out.append({**facts, "artifact_id": row["id"], "run_id": row["run_id"], "created_at": row["created_at"],
                        "slot": row["slot"]})  # fmt: skip
        return out

    # --- device history -------------------------------------------------------------------------------------

    def set_device_history(self, device_id: str, **fields: str | None) -> None:
        """Set some of the technician's answers about a device (``powered_by``, ``mounted_on``, ``peripherals``,
        ``firmware_notes``); fields not given keep their value, None clears one."""
        unknown = sorted(set(fields) - set(HISTORY_FIELDS))
        if unknown:
            raise TypeError(f"unknown device history field(s) {unknown}; known: {list(HISTORY_FIELDS)}")
        key = _device_key(device_id)
        if not key:
            raise ValueError("device history needs a device id")
        with self._write() as db:
            db.execute(
                "INSERT INTO device_history (device_id, updated_at) VALUES (?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET updated_at = excluded.updated_at",
                (key, self._stamp()),
            )
            for name, value in fields.items():  # names checked above: safe to place in the SQL
                db.execute(
                    f"UPDATE device_history SET {name} = ? WHERE device_id = ?",
                    (None if value is None else redact(str(value)), key),
                )

    def device_history(self, device_id: str) -> dict[str, Any] | None:
        """The technician's answers about a device, or None when none were given."""
        rows = self._read("SELECT * FROM device_history WHERE device_id = ?", (_device_key(device_id),))
        return dict(rows[0]) if rows else None

    # --- reading --------------------------------------------------------------------------------------------

    def run(self, run_id: int) -> dict[str, Any]:
        """One run with its ``steps`` (in order), ``observations`` (in order, data decoded) and ``artifacts``
        (name, media type and size; the bytes through :meth:`artifact`)."""
        with self._lock:
            out = dict(self._run_row(self._db, run_id))
            steps = self._db.execute("SELECT * FROM steps WHERE run_id = ? ORDER BY seq", (run_id,))
            out["steps"] = [_step(r) for r in steps]
            out["observations"] = [
                {**dict(r), "data": json.loads(r["data"])}
                for r in self._db.execute("SELECT * FROM observations WHERE run_id = ? ORDER BY id", (run_id,))
            ]
            out["artifacts"] = [
                dict(r)
                for r in self._db.execute(
                    "SELECT id, name, media_type, length(data) AS size, created_at FROM artifacts "
                    "WHERE run_id = ? ORDER BY id",
                    (run_id,),
                )
            ]
        return out

    def runs(self, device_id: str | None = None, limit: int | None = 50) -> list[dict[str, Any]]:
        """Runs newest first (of one device when ``device_id`` is given), each with its ``step_count``.

        ``limit``: at most this many (None: all of them)."""
        where, params = ("WHERE device_id = ?", (_device_key(device_id),)) if device_id else ("", ())
        rows = self._read(
            f"SELECT runs.*, (SELECT COUNT(*) FROM steps WHERE steps.run_id = runs.id) AS step_count "
            f"FROM runs {where} ORDER BY id DESC LIMIT ?",
            (*params, -1 if limit is None else limit),  # SQLite: a negative LIMIT is no limit
        )
        return [dict(r) for r in rows]

    def count_runs(self, device_id: str | None = None) -> int:
        """How many runs there are (of one device when ``device_id`` is given)."""
        where, params = ("WHERE device_id = ?", (_device_key(device_id),)) if device_id else ("", ())
        return int(self._read(f"SELECT COUNT(*) FROM runs {where}", params)[0][0])

    def latest_run_id(self, *, slot: int | None = None, device_id: str | None = None) -> int | None:
        """The id of the newest run (of ``slot`` and/or ``device_id`` when given), or None when there is none.

        Newest is the last started: run ids only grow (AUTOINCREMENT), whatever the wall clock did.

            >>> j = Journal(":memory:")
            >>> first, second = j.start_run(1, "E00FCE68AABBCCDDEEFF0011", "boron"), j.start_run(2, None, None)
            >>> j.latest_run_id(), j.latest_run_id(slot=1), j.latest_run_id(device_id="e00fce68aabbccddeeff0011")
            (2, 1, 1)
            >>> j.latest_run_id(slot=3) is None
            True
        """
        clauses, params = [], []
        if slot is not None:
            clauses.append("slot = ?")
            params.append(slot)
        if device_id is not None:
            clauses.append("device_id = ?")
            params.append(_device_key(device_id))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT id FROM runs {where} ORDER BY id DESC LIMIT 1", tuple(params))
        return int(rows[0][0]) if rows else None

    def _run_row(self, db: sqlite3.Connection, run_id: int) -> sqlite3.Row:
        row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRecordError(f"no run {run_id}")
        return row


def _step(row: sqlite3.Row) -> dict[str, Any]:
    return {**dict(row), "figures": json.loads(row["figures"])}


def _device_key(device_id: str | None) -> str | None:
    # USB serial strings and `particle` output differ in case; one spelling keeps a device's history together.
    return redact(device_id.strip().lower()) if device_id else None


def _opt(text: str | None) -> str | None:
    return None if text is None else redact(text)


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _is_text_type(media_type: str) -> bool:
    kind = media_type.split(";", 1)[0].strip().lower()
    return kind.startswith("text/") or kind.endswith(("/json", "+json"))
