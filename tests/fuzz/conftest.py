"""The fuzz suite's header line: which Hypothesis profile ran, so a closing note can quote its case counts."""

from __future__ import annotations

from hypothesis import settings

from tests.fuzz import LONG_FACTOR, PROFILE


def pytest_report_header() -> str:
    scale = f"x{LONG_FACTOR} examples, randomized" if PROFILE == "long" else "x1 examples, derandomized"
    current = settings.get_current_profile_name()
    return f"fuzz: KIOSK_FUZZ_PROFILE={PROFILE} (hypothesis profile {current!r}; {scale})"
