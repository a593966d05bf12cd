"""Test isolation: no test reads or writes the user's own kiosk library or config."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_from_the_users_kiosk(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.delenv("PARTICLE_KIOSK_LIBRARY", raising=False)
