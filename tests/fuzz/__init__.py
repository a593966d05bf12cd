"""Bad-input fuzzing (issue 8): every parser and decoder that reads bytes from a file, a device or a config.

Each target gets garbage and near-misses (mutated real binaries, traversal names, garbled replies) and must answer
with its own error type and a message saying what was wrong, never another exception, a hang, or a write.

The examples per test scale with the Hypothesis profile (``tests/conftest.py``; ``KIOSK_FUZZ_PROFILE``): "ci"
(``make test``) runs the counts given here, derandomized; "long" (``make test-long``) runs :data:`LONG_FACTOR` times
as many, drawn anew each run.
"""

from __future__ import annotations

import os

from hypothesis import settings

PROFILE = os.environ.get("KIOSK_FUZZ_PROFILE", "ci")
LONG_FACTOR = 20


def fuzz_settings(examples: int) -> settings:
    """Settings for one fuzz test: ``examples`` in the ci profile, LONG_FACTOR x that in the long one."""
    return settings(max_examples=examples * (LONG_FACTOR if PROFILE == "long" else 1))
