"""The manual flash's result names how each module got there, for every mechanism the planner can choose."""

from __future__ import annotations

from firmware.plan import Mechanism
from kiosk.service.engine import VERIFIED_BY


def test_every_mechanism_has_its_words():
    assert set(VERIFIED_BY) == {m.value for m in Mechanism}
    assert "OTA region" in VERIFIED_BY[Mechanism.DFU_OTA.value]
