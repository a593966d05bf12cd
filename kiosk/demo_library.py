"""The demo firmware library: synthetic Device OS releases and Tinker for the simulated bench.

Real Particle binaries are not redistributable, so the simulator's devices are flashed from releases made
by ``firmware.releases`` (the same the simulated devices are built from), imported through the normal,
verifying import. It lives in the user's data folder and is made once per release.

    >>> lib = demo_library(["boron"])   # doctest: +SKIP
    >>> lib.bundle("boron").release     # doctest: +SKIP
    '6.1.1'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from firmware.intelhex import format_hex
from firmware.library import FirmwareLibrary
from firmware.platforms import platform_by_name
from firmware.releases import synthetic_release, synthetic_restore_image

#: The releases the demo library carries for each MCU family (the simulator's current releases).
DEMO_RELEASES = {"stm32f2xx": ("2.3.0",), "nrf52840": ("6.1.1",), "rtl872x": ("6.2.0",)}


def demo_library_root() -> Path:
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "particle-kiosk" / "demo-library"


def demo_library(platforms: Iterable[str], root: Path | None = None) -> FirmwareLibrary:
    """The demo library with the releases of ``platforms`` imported (re-importing changes nothing)."""
    lib = FirmwareLibrary(root or demo_library_root())
    have = {(e.platform, e.release) for e in lib.entries()} if (lib.root / "manifest.json").exists() else set()
    for name in sorted(set(platforms)):
        platform = platform_by_name(name)
        for release in DEMO_RELEASES.get(platform.mcu.name, ()):
            if (platform.name, release) in have:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / f"{platform.name}@{release}"
                folder.mkdir()
                for file_name, data in synthetic_release(platform, release).items():
                    (folder / file_name).write_bytes(data)
                image = format_hex(synthetic_restore_image(platform, release))
                (folder / f"{platform.name}-restore@{release}.hex").write_text(image)
                lib.import_path(folder)
    return lib
