"""The demo firmware library: synthetic Device OS releases and Tinker for the simulated bench.

Real Particle binaries are not redistributable, so the simulator's devices are flashed from releases made
by ``firmware.releases`` (the same the simulated devices are built from), imported through the normal,
verifying import. Every module is as large as the real release's (``firmware.release_sizes``), so what the
simulated bench shows in device seconds is what a real bench takes. It lives in the user's data folder and is
made once per release; one an older kiosk made (other sizes, addresses or versions) is made again.

    >>> lib = demo_library(["boron"])   # doctest: +SKIP
    >>> lib.bundle("boron").release     # doctest: +SKIP
    '6.1.1'
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from firmware.intelhex import format_hex
from firmware.library import FirmwareLibrary
from firmware.platforms import platform_by_name
from firmware.releases import synthetic_release, synthetic_restore_image
from firmware.versions import release_had

#: The releases the demo library carries for each MCU family (the simulator's current releases); a platform that
#: never had one gets its newest stable release before it (a Xenon 1.5.2), as the simulated device runs.
DEMO_RELEASES = {"stm32f2xx": ("2.3.0",), "nrf52840": ("6.1.1",), "rtl872x": ("6.2.0",)}


def demo_library_root() -> Path:
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "particle-kiosk" / "demo-library"


#: The file that says a folder is a demo library this module made (and may therefore make again).
MARKER = "DEMO-LIBRARY"


def demo_library(
    platforms: Iterable[str], root: Path | None = None, *, body_size: int | None = None
) -> FirmwareLibrary:
    """The demo library with the releases of ``platforms`` imported (re-importing changes nothing).

    A release already there whose files differ from what ``firmware.releases`` makes now (an older kiosk made it)
    is not mixed with the new one: the library is made again from nothing. That happens only in a folder this
    function made (it holds MARKER) or in the default one; any other folder is refused with ValueError.
    ``body_size`` (tests that need no real sizes): every module with that many bytes of body instead."""
    root = root or demo_library_root()
    lib = FirmwareLibrary(root)
    held: set[str] = set()  # the SHA-256 of every file the library holds
    present: set[tuple[str, str | None]] = set()  # the (platform, release) of each
    if (lib.root / "manifest.json").exists():
        for entry in lib.entries():
            held.add(entry.sha256)
            present.add((entry.platform, entry.release))
    wanted = [(platform, release, synthetic_release(platform, release, body_size=body_size))
              for platform in map(platform_by_name, sorted({platform_by_name(name).name for name in platforms}))
              for release in filter(None, (release_had(platform.name, r)
                                           for r in DEMO_RELEASES.get(platform.mcu.name, ())))]  # fmt: skip
    stale = any(
        (platform.name, release) in present and not {hashlib.sha256(d).hexdigest() for d in files.values()} <= held
        for platform, release, files in wanted
    )
    if stale:
        lib, present = _made_again(lib), set()
    for platform, release, files in wanted:
        if (platform.name, release) in present:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / f"{platform.name}@{release}"
            folder.mkdir()
            for file_name, data in files.items():
                (folder / file_name).write_bytes(data)
            image = format_hex(synthetic_restore_image(platform, release, body_size=body_size))
            (folder / f"{platform.name}-restore@{release}.hex").write_text(image)
            lib.import_path(folder)
        (lib.root / MARKER).write_text("synthetic Device OS releases made by kiosk.demo_library\n")
    return lib


def _made_again(lib: FirmwareLibrary) -> FirmwareLibrary:
    """An empty library in ``lib``'s folder, after checking the folder is a demo library."""
    if not (lib.root / MARKER).exists() and lib.root.resolve() != demo_library_root().resolve():
        raise ValueError(f"{lib.root} holds releases other than the demo library's: give the demo library a folder")
    shutil.rmtree(lib.root)
    return FirmwareLibrary(lib.root)
