"""Test isolation: no test reads or writes the user's own kiosk library or config, and no test talks to a bench
service running on the host (a developer's kiosk, a CI runner's): KIOSK_SOCKET names a socket nobody listens on,
so a command goes through a service only when its test started one and named its socket (``--socket`` or its own
KIOSK_SOCKET, as tests/test_cli_through_service.py does).

Hypothesis runs the "ci" profile unless ``KIOSK_FUZZ_PROFILE=long`` (``make test-long``): "ci" is derandomized (the
same examples every run, so CI cannot fail at random) and has no deadline (a loaded machine is not a failure);
"long" draws new examples each run, and more of them where a test does not fix its own count.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("KIOSK_FUZZ_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _isolated_from_the_users_kiosk(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.delenv("PARTICLE_KIOSK_LIBRARY", raising=False)
    # not /run/particle-kiosk/bench.sock, nor a KIOSK_SOCKET the developer's shell exports: no one listens here
    monkeypatch.setenv("KIOSK_SOCKET", str(home / "no-service" / "bench.sock"))


# Tests that take seconds each, started first: with pytest-xdist handing tests out as workers come free, a long
# one started last would leave the other workers idle while it finishes (the order never changes a result).
LONG_RUNNING = (
    "tests/test_serial_integration.py::test_send_ymodem_command_into_lrzsz",
    "tests/test_module_properties.py",
    "tests/fuzz/",
    "tests/test_ladder.py::test_four_slots",
    "tests/tui/test_startup.py",
    "tests/tui/test_library_history.py",
    "tests/test_recover_cli.py",
    "tests/test_cli_through_service.py",
    "tests/test_durability.py",
    "tests/test_service.py",
)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_RUNNING))
