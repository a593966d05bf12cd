"""The touchscreen's LED poller: the swatch follows the LED; a classification is posted while the LED changes, and
once for an LED that has stayed the same over a whole window (reading it again would say the same, at a cost)."""

from __future__ import annotations

import threading
import time

from kiosk import bench as bench_module
from kiosk.service import engine as backend_module
from kiosk.service.engine import KioskBackend
from kiosk.service.posts import LedSeen


def test_a_steady_led_is_classified_once_its_window_is_whole_and_a_blinking_one_again_and_again(monkeypatch):
    monkeypatch.setattr(backend_module, "LED_CLASSIFY_S", 0.1)  # real seconds: many classifications in the test
    posted: list[tuple[float, LedSeen]] = []
    # slot 1 shows no LED at all (steady); slot 2 sits in DFU, blinking yellow
    with bench_module.simulated_bench("missing-bootloader@boron,corrupt-system@boron", speed=40.0) as bench:
        backend = KioskBackend(lambda: bench, lambda _bench: None, None,
                               lambda message: posted.append((time.monotonic(), message)))  # fmt: skip
        backend.bench = bench
        stop = threading.Event()
        poller = threading.Thread(target=backend.poll_led, args=(stop,), daemon=True)
        started = time.monotonic()
        poller.start()
        try:
            # 15 device s fill the window at 40x in under half a second; look for 2 s of real time
            time.sleep(2.0)
        finally:
            stop.set()
            poller.join(5)
    assert not poller.is_alive()
    late = started + 1.2  # the window is whole and read by now (0.4 s at 40x, with room for a loaded host)
    off = [m for t, m in posted if m.slot == 1 and m.reading is not None]
    off_late = [m for t, m in posted if m.slot == 1 and m.reading is not None and t > late]
    blink_late = [m for t, m in posted if m.slot == 2 and m.reading is not None and t > late]
    assert off and off[-1].reading["pattern"] == "off"
    assert off_late == []  # not read again: nothing changed
    assert len(blink_late) >= 3 and {m.reading["pattern"] for m in blink_late} == {"blink-normal"}
    swatch = [m.lit for _, m in posted if m.slot == 2]
    assert "yellow" in swatch and "off" in swatch  # the swatch blinks with the LED
