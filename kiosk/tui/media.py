"""USB sticks, as the touchscreen browses them: the service and the screen run on the same machine, so the
screen lists a stick's files itself and hands the service the path of the one chosen."""

from __future__ import annotations

import contextlib
from pathlib import Path

#: Where a USB stick shows up on Raspberry Pi OS and other Linux desktops.
MEDIA_ROOTS = (Path("/media"), Path("/run/media"), Path("/mnt"))


def removable_media(roots: tuple[Path, ...] = MEDIA_ROOTS) -> list[Path]:
    """Mounted USB sticks: folders one or two levels under /media, /run/media and /mnt (user/label)."""
    found: list[Path] = []
    for root in roots:
        with contextlib.suppress(OSError):
            for first in sorted(p for p in root.iterdir() if p.is_dir()):
                with contextlib.suppress(OSError):
                    inner = sorted(p for p in first.iterdir() if p.is_dir() and not p.name.startswith("."))
                    if root.name == "mnt" or not inner:
                        found.append(first)
                    else:
                        found.extend(inner)
    return found


def firmware_files(folder: Path, limit: int = 200) -> list[Path]:
    """Module files (.bin) in a folder and its subfolders, for choosing from a USB stick."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder that exists: plug the USB stick in, or check the path")
    files = sorted(p for p in folder.rglob("*.bin") if p.is_file())
    return files[:limit]
