"""kiosk.bench: the real bench from its config (on gpiozero's mock factory), and direct open-drain wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from hypothesis import given
from hypothesis import strategies as st

from hw.clock import VirtualClock
from hw.gpio import ButtonLine, NoLedSensor, SampleRing
from hw.led_classifier import LedSample
from hw.sim.device import Mode
from hw.sim.pins import SimPinFactory
from hw.sim.scenarios import build_device
from hw.sim.usb_backend import SimUsbBus
from hw.sim.wiring import attach
from kiosk.bench import hardware_bench, simulated_bench
from kiosk.config import SlotConfig, parse_config

CONFIG = """
[[slots]]
name = "left"
usb_port = "1-1.2"
reset_pin = 17
mode_pin = 27
vbus_pin = 22
led_pins = [5, 6, 13]

[[slots]]
name = "right"
reset_pin = 2
mode_pin = 3
button_wiring = "direct"
"""


@pytest.fixture
def mock_gpio():
    previous = Device.pin_factory
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = previous


def test_hardware_bench_follows_the_config(mock_gpio):
    with hardware_bench(parse_config(CONFIG)) as bench:
        left, right = bench.slots
        assert (left.index, left.name, left.usb_port) == (1, "left", "1-1.2")
        assert left.buttons.reset.pin.info.name == "GPIO17" and left.buttons.mode.pin.info.name == "GPIO27"
        assert left.power is not None and left.led.available
        assert right.power is None and isinstance(right.led, NoLedSensor)
        assert not bench.simulated
        left.buttons.reset.press()
        assert mock_gpio.pin(17).state == 1  # transistor wiring, active high
        left.buttons.reset.release()
        assert mock_gpio.pin(17).state == 0
    assert mock_gpio.pin(17).state == 0  # closing leaves every button released


def test_direct_wiring_only_ever_pulls_low_or_lets_go():
    clock = VirtualClock()
    factory = SimPinFactory(clock)
    device = build_device("healthy", "boron", clock)
    cfg = SlotConfig(0, "slot", "1-1.1", reset_pin=4, mode_pin=5, button_wiring="direct")
    with clock.lock:
        attach(device, factory, cfg, SimUsbBus(clock))
    reset = ButtonLine(4, wiring="direct", pin_factory=factory)
    clock.sleep(2.0)
    assert device.mode == Mode.NORMAL
    reset.press()
    assert device.mode == Mode.IN_RESET
    clock.sleep(0.15)
    reset.release()
    assert reset.pin.function == "input" and reset.pin.pull == "floating"
    clock.sleep(2.0)
    assert device.mode == Mode.NORMAL
    driven_high = [state for _, state in reset.pin.history if state and reset.pin.function == "output"]
    assert driven_high == []


def test_simulated_bench_has_one_device_per_slot_on_its_own_port():
    with simulated_bench("healthy,app-crash@p2,corrupt-system@photon") as bench:
        ports = [s.usb_port for s in bench.slots]
        assert ports == ["1-1.1", "1-1.2", "1-1.3"]
        assert [s.device.platform.name for s in bench.slots] == ["boron", "p2", "photon"]
        assert len({s.device.device_id for s in bench.slots}) == 3
    with pytest.raises(ValueError, match="at most 8 slots"):
        simulated_bench(",".join(["healthy"] * 9))


def test_eight_simulated_slots_each_have_their_own_pins_and_device():
    with simulated_bench(",".join(["healthy"] * 8)) as bench:
        assert len({s.device.device_id for s in bench.slots}) == 8
        lines = {(id(s.buttons.reset.pin.factory), s.buttons.reset.pin.info.name) for s in bench.slots}
        assert len(lines) == 8  # no two slots share a RESET line


def test_drivers_satisfy_their_ports():
    from hw.control import ControlChannel
    from hw.gpio import Buttons, LedSensor, PowerSwitch
    from hw.ports import ButtonsPort, ControlPort, LedPort, PowerPort

    with simulated_bench("healthy") as bench:
        slot = bench.slot(1)
        assert isinstance(slot.buttons, Buttons) and isinstance(slot.buttons, ButtonsPort)
        assert isinstance(slot.power, PowerSwitch) and isinstance(slot.power, PowerPort)
        assert isinstance(slot.led, LedSensor) and isinstance(slot.led, LedPort)
    assert isinstance(NoLedSensor(), LedPort)
    assert issubclass(ControlChannel, ControlPort)


def test_a_gpio_line_held_by_another_program_says_who_to_stop(monkeypatch):
    """lgpio raises its own error for a line the running kiosk service holds: one clear line, no traceback."""
    from gpiozero.exc import GPIOPinInUse

    from kiosk import bench as bench_module
    from kiosk.bench import HardwareNotFound, hardware_bench
    from kiosk.config import parse_config

    def busy(*args, **kwargs):
        raise GPIOPinInUse("pin GPIO17 is already in use by another gpiozero object: GPIO busy")

    monkeypatch.setattr(bench_module, "_slot_drivers", busy)
    config = parse_config((Path(__file__).parents[1] / "deploy" / "kiosk.example.toml").read_text(), "kiosk.toml")
    with pytest.raises(HardwareNotFound, match=r"in use by another program.*systemctl stop particle-kiosk"):
        hardware_bench(config)


def test_a_blinking_pin_remembers_a_bounded_history():
    """A demo kiosk's LED pins change for days: what a pin remembers must not grow with them."""
    from hw.sim.pins import PIN_HISTORY

    clock = VirtualClock()
    pin = SimPinFactory(clock).pin(21)
    pin.function = "output"
    for n in range(PIN_HISTORY * 3):
        pin.state = n % 2
        clock.sleep(0.01)
    assert len(pin.history) == PIN_HISTORY and len(pin.states) == PIN_HISTORY
    assert pin.history[-1] == (pytest.approx(clock.now() - 0.01), True)  # the newest change is kept
    assert pin.history[0][0] == pytest.approx(PIN_HISTORY * 2 * 0.01)  # the oldest are let go


@given(capacity=st.integers(1, 40),
       steps=st.lists(st.tuples(st.floats(0, 1), st.booleans(), st.booleans(), st.booleans()), max_size=120),
       since=st.floats(0, 130))  # fmt: skip
def test_the_sample_ring_gives_the_newest_samples_since_a_time_in_order(capacity, steps, since):
    ring, kept, t = SampleRing(capacity), [], 0.0
    for gap, r, g, b in steps:
        t += gap
        ring.append(t, r, g, b)
        kept.append(LedSample(t, r, g, b))
    expected = [s for s in kept[-capacity:] if s.t >= since]
    assert ring.since(since) == expected
    assert len(ring) == min(capacity, len(steps))
