"""The customer's app, kept before anything overwrites it: read back over DFU, stored on disk, journaled.

Device Restore USB and Device Doctor offer a backup of the user firmware (a DFU upload) before Tinker replaces
it; the kiosk takes one every time. :class:`BackupKeeper` is the executor's ``on_user_part_overwrite`` seam:
before the first DFU write of a run that overlaps a user part, it reads each of the platform's user-part slots
(the size from the module header at the slot's start, or, on the rtl872x where the app grows down from the
slot's end, from its suffix's DYNAMIC_LOCATION, as the device's own code finds it), writes the bytes to
``backups/<run>-<platform>-user-part<index>.bin`` beside the journal (fsynced, and read back, before the write
goes on) and records them as a journal artifact of the run: file SHA-256, the module's version, platform and
UUID. A slot with no valid header, or a blank one, is "no readable app": said in the step and the report, and
the recovery carries on (a broken device must still be recovered). An app read but not kept stops the write:
the kiosk never overwrites what it could not keep.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.module import (
    CRC_SIZE,
    PREFIX_SIZE,
    PREFIX_STRUCT,
    SUFFIX_TAIL_SIZE,
    NotAModuleError,
    dynamic_location,
    parse_module,
)
from firmware.plan import FlashStep
from firmware.platforms import Function, ModuleSlot, Platform, Storage
from hw.clock import ClockEvent
from hw.dfu import DfuAddressError, DfuDevice
from kiosk.journal import BACKUP_MEDIA_TYPE, Journal

BACKUP_DIR_NAME = "backups"
NO_APP = "no readable app"


class BackupError(Exception):
    """A backup could not be kept or used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Found:
    """What one user-part slot holds: the app's bytes, or why there is no readable app."""

    slot: ModuleSlot
    data: bytes | None
    why_not: str = ""


def backup_dir(journal: Journal) -> Path | None:
    """Where the journal keeps backups (``backups/`` beside its SQLite file); None for an in-memory journal."""
    if journal.path in ("", ":memory:") or journal.path.startswith("file::memory:"):
        return None
    return _home(journal) / BACKUP_DIR_NAME


def _home(journal: Journal) -> Path:
    """The journal's folder: backups live there, and are recorded relative to it (the two move together)."""
    return Path(journal.path).resolve().parent


def user_slots(platform: Platform) -> list[ModuleSlot]:
    """The platform's user-part slots in internal flash (where DFU alt 0 reaches them)."""
    return [s for s in platform.layout if s.function == Function.USER_PART and s.storage is Storage.INTERNAL]


def read_user_part(dfu: DfuDevice, platform: Platform, slot: ModuleSlot, cancel: ClockEvent | None = None) -> Found:
    """The module in ``slot``, read over DFU alt 0: its whole image (header to CRC), or why there is none."""
    start = _grows_left_start(dfu, slot, cancel) if slot.grows_left else slot.start
    if start is None:
        return Found(slot, None, f"{NO_APP} in {slot.name} {slot.index}: no module suffix at the slot's end")
    offset = platform.mcu.prefix_offset(Function.USER_PART)
    head = dfu.read(start + offset, PREFIX_SIZE, 0, cancel=cancel)
    if head.count(0xFF) == len(head):
        return Found(slot, None, f"{NO_APP} in {slot.name} {slot.index} at 0x{start:x}: the region is blank")
    first, end, _r, _flags, _version, platform_id, function, index = PREFIX_STRUCT.unpack(head)[:8]
    if (first, function, index, platform_id) != (start, Function.USER_PART, slot.index, platform.id) or not (
        start < end <= slot.end - CRC_SIZE
    ):
        return Found(slot, None, f"{NO_APP} in {slot.name} {slot.index} at 0x{start:x}: no valid module header")
    return Found(slot, dfu.read(start, end - start + CRC_SIZE, 0, cancel=cancel))


def _grows_left_start(dfu: DfuDevice, slot: ModuleSlot, cancel: ClockEvent | None) -> int | None:
    """An rtl872x user part ends at its slot's end; its suffix's DYNAMIC_LOCATION extension says where it starts."""
    start = dynamic_location(dfu.read(slot.end - SUFFIX_TAIL_SIZE, SUFFIX_TAIL_SIZE, 0, cancel=cancel))
    return start if start is not None and slot.start <= start < slot.end else None


def store(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``directory/name`` durably and never over another file: a temporary file, fsynced, then
    hard-linked into place (fails rather than replaces) and the folder fsynced; then read back and compared."""
    directory.mkdir(parents=True, exist_ok=True)
    stem, suffix = os.path.splitext(name)
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        for n in range(100):  # a journal started afresh beside old backups reuses run ids: keep both
            target = directory / (name if n == 0 else f"{stem}.{n}{suffix}")
            try:
                os.link(tmp, target)
                break
            except FileExistsError:
                continue
        else:
            raise BackupError(f"{directory} holds 100 backups named {name}: move old ones away, then try again")
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    if target.read_bytes() != data:
        raise BackupError(f"{target} does not read back as written: check the disk")
    return target


class BackupKeeper:
    """One run's backups. ``callback(device_id, platform)`` is the executor's ``on_user_part_overwrite``: the
    first call of the run reads and keeps every user part; later ones (a retry, Tinker written again by a later
    rung, which would only back up Tinker) do nothing. ``notes`` says what happened, for the step and report."""

    def __init__(self, journal: Journal, run_id: int, *, directory: Path | None = None,
                 cancel: ClockEvent | None = None):  # fmt: skip
        self.journal = journal
        self.run_id = run_id
        self.directory = directory if directory is not None else backup_dir(journal)
        self.cancel = cancel
        self.decided = False
        self.backups: list[dict[str, Any]] = []  # the facts of every backup this run kept
        self.notes: list[str] = []

    def callback(self, device_id: str | None, platform: Platform) -> Callable[[FlashStep, DfuDevice], str | None]:
        def before_overwrite(step: FlashStep, dfu: DfuDevice) -> str | None:
            return self.keep(step, dfu, device_id, platform)

        return before_overwrite

    def keep(self, step: FlashStep, dfu: DfuDevice, device_id: str | None, platform: Platform) -> str | None:
        """Read and keep the device's apps before ``step`` writes; the words for the step (None: already done).
        DFU errors go to the caller (the executor retries the step); a kept app that cannot be stored raises
        :class:`BackupError`, so the write does not happen."""
        if self.decided:
            return None
        found = []
        for slot in user_slots(platform):
            try:
                found.append(read_user_part(dfu, platform, slot, self.cancel))
            except DfuAddressError as exc:  # the bootloader does not let it be read there: nothing to keep
                found.append(Found(slot, None, f"{NO_APP} in {slot.name} {slot.index}: {exc}"))
        apps = [f for f in found if f.data is not None]
        words: list[str] = []
        if apps and self.directory is None:
            raise BackupError("the app on the device could not be kept: the journal is in memory, so there is no "
                              "folder for backups; run with --journal PATH")  # fmt: skip
        for item in apps:
            assert item.data is not None and self.directory is not None
            facts = self._keep_one(item, device_id, platform)
            self.backups.append(facts)
            words.append(f"the app (user part {facts['index']} v{facts['version']}, {facts['size']} bytes, SHA-256 "
                         f"{facts['sha256'][:12]}) was backed up to {facts['file']} first")  # fmt: skip
        if not apps:
            reasons = "; ".join(f.why_not for f in found) or f"a {platform.name} has no user-part slot"
            words.append(f"{NO_APP} to back up ({reasons}); carried on")
            self.journal.observe(self.run_id, "backup", {"kept": False, "detail": words[-1], "platform": platform.name,
                                                         "device_id": device_id, "before": step.name})  # fmt: skip
        self.decided = True
        self.notes += words
        return "; ".join(words)

    def _keep_one(self, item: Found, device_id: str | None, platform: Platform) -> dict[str, Any]:
        data = item.data
        assert data is not None and self.directory is not None
        try:
            module = parse_module(data)
            version, problems, uuid = module.version, list(module.problems), module.sha256.hex()
        except NotAModuleError as exc:  # the header said so, the bytes do not: kept all the same, as they were
            version, problems, uuid = None, [str(exc)], None
        name = f"{self.run_id}-{platform.name}-user-part{item.slot.index}.bin"
        try:
            path = store(self.directory, name, data)
        except OSError as exc:
            raise BackupError(f"the app on the device could not be kept in {self.directory} ({exc.strerror or exc}); "
                              "nothing was written over it. Free space or fix the folder, then try again") from None
        facts = {
            "kept": True,
            "file": _relative(path, self.journal),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "device_id": device_id.lower() if device_id else None,
            "platform": platform.name,
            "platform_id": platform.id,
            "function": "user-part",
            "index": item.slot.index,
            "version": version,
            "module_sha256": uuid,
            "address": f"0x{_start_of(data, platform):x}",
            "problems": problems,
        }
        artifact = self.journal.add_artifact(self.run_id, path.name, _json(facts), BACKUP_MEDIA_TYPE)
        facts["artifact_id"] = artifact
        self.journal.observe(self.run_id, "backup", facts)
        return facts


def _relative(path: Path, journal: Journal) -> str:
    """The file as the journal records it: relative to the journal's folder (the two move together) when inside."""
    try:
        return str(path.resolve().relative_to(_home(journal)))
    except ValueError:
        return str(path.resolve())


def backup_path(journal: Journal, file: str) -> Path:
    """Where a backup's ``file`` (as recorded) is on disk."""
    return _home(journal) / file


def _start_of(data: bytes, platform: Platform) -> int:
    offset = platform.mcu.prefix_offset(Function.USER_PART)
    return int(PREFIX_STRUCT.unpack_from(data, offset)[0])


def _json(facts: dict[str, Any]) -> str:
    return json.dumps(facts, separators=(",", ":"), sort_keys=True)
