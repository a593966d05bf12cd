"""Shared helpers of the interoperability suites: Particle's own node libraries (tests/peers) and the profile.

The peers are pinned in tests/peers/package-lock.json and installed by ``make tools`` (``npm ci``). A suite that
needs them fails, never skips, when they are missing: ``make test`` installs them, so a missing peer is a broken
set-up, not an optional extra.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parents[1] / "peers"
NODE_MODULES = PEERS / "node_modules"
#: ``make test-long`` (KIOSK_LONG=1) runs every case; ``make test`` a short profile.
LONG = os.environ.get("KIOSK_LONG") == "1"
#: Files per node process: one process per batch (node starts in about 100 ms), argv well under ARG_MAX.
BATCH = 400


def pinned_version(package: str) -> str:
    """The exact version tests/peers/package.json pins for ``package``."""
    return json.loads((PEERS / "package.json").read_text())["dependencies"][package]


def require_peer(package: str) -> str:
    """The installed version of a pinned peer; fails (with what to run) when node or the peer is missing or stale."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed: run `make tools` (Debian packages nodejs and npm)", pytrace=False)
    manifest = NODE_MODULES / package / "package.json"
    if not manifest.is_file():
        pytest.fail(f"{package} is not installed in {NODE_MODULES}: run `make tools` (npm ci)", pytrace=False)
    installed = json.loads(manifest.read_text())["version"]
    if installed != pinned_version(package):
        pytest.fail(
            f"{package} {installed} is installed but tests/peers/package.json pins {pinned_version(package)}: "
            "run `make tools` (npm ci)",
            pytrace=False,
        )
    return installed


def run_node_lines(script: str, args: Sequence[str], timeout: float = 120.0) -> list[dict]:
    """Run ``tests/peers/<script>`` with ``args`` (in batches) and return its JSON lines, one per line printed."""
    lines: list[dict] = []
    for start in range(0, max(len(args), 1), BATCH):
        batch = list(args[start : start + BATCH])
        done = subprocess.run(
            ["node", str(PEERS / script), *batch], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"node {script} exited {done.returncode}: {done.stderr.strip()[-2000:]}", pytrace=False)
        lines += [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return lines
