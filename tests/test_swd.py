"""hw.swd: the SWD restore through the SwdPort protocol, on the simulated probe and (without hardware) on pyOCD.

The simulated probe runs on a VirtualClock, so erase and program times cost no real time and ``clock.now()``
is the device time a restore took. The pyOCD driver is exercised as far as it goes without a probe: its
discovery is mocked at pyOCD's own probe classes, and a fake session and flash loader stand in for a target.
"""

from __future__ import annotations

import builtins
import inspect
import re
import threading
from types import SimpleNamespace

import pytest
from pyocd.core import exceptions as pyocd_errors
from pyocd.probe import aggregator
from pyocd.probe.debug_probe import DebugProbe

import hw.swd as swd
from firmware.builder import build_module
from firmware.intelhex import format_hex, parse_hex
from firmware.platforms import Function as F
from firmware.platforms import platform_by_name
from hw.clock import Cancelled, RealClock, VirtualClock
from hw.sim.swd_probe import CONNECT_S, FAULTS, GEOMETRY, SWD_BYTES_PER_S, SimSwdProbe
from hw.swd import (
    ImageError,
    NoProbe,
    NoTarget,
    NoTargetPower,
    PackMissing,
    ProbeInfo,
    ProbeNotFound,
    PyocdSwd,
    SeveralProbes,
    SwdPort,
    SwdTransferError,
    TargetLocked,
    VerifyError,
    choose_probe,
    restore,
    target_support,
)

# --- restore images, built as Particle's restore .hex files are laid out ------------------------------


def boron_like_image(platform: str = "boron") -> str:
    """A Gen3 restore .hex: MBR, SoftDevice, system part, Tinker, bootloader and UICR words."""
    pid = platform_by_name(platform).id
    mbr = bytes(range(256)) * 16  # 0x0-0xFFF: the Nordic MBR, which no module carries
    uicr = [(0x10001014, (0x000F4000).to_bytes(4, "little")), (0x10001200, (0x12).to_bytes(4, "little") * 2)]
    parts = [
        (0x0, mbr),
        (0x1000, build_module(platform_id=pid, function=F.RADIO_STACK, version=202, body_size=40_000)),
        (0x28000, build_module(platform_id=pid, function=F.SYSTEM_PART, version=6103, body_size=60_000)),
        (0xB4000, build_module(platform_id=pid, function=F.USER_PART, version=6, body_size=9_000)),
        (0xF4000, build_module(platform_id=pid, function=F.BOOTLOADER, version=3000, body_size=20_000)),
        *uicr,
    ]
    return format_hex(parts)


def electron_image() -> str:
    """A Gen2 restore .hex: bootloader, three system parts, Tinker; it skips the DCT/EEPROM hole."""
    parts = [(0x08000000, build_module(platform_id=10, function=F.BOOTLOADER, version=1100, body_size=12_000))]
    for index in (1, 2, 3):
        parts.append(
            (
                platform_by_name("electron").slots_for(F.SYSTEM_PART, index)[0].start,
                build_module(platform_id=10, function=F.SYSTEM_PART, index=index, version=3300, body_size=30_000),
            )
        )
    parts.append((0x08080000, build_module(platform_id=10, function=F.USER_PART, version=6, body_size=5_000)))
    return format_hex(parts)


class Recorder:
    """Progress and device callbacks, for assertions."""

    def __init__(self) -> None:
        self.progress: list[tuple[int, int, str]] = []
        self.programmed: list[tuple[tuple[int, bytes], ...]] = []
        self.erased: list[tuple[tuple[int, int], ...]] = []
        self.resets = 0

    def __call__(self, done: int, total: int, phase: str) -> None:
        self.progress.append((done, total, phase))

    def probe(self, clock, **kw) -> SimSwdProbe:
        return SimSwdProbe(
            clock,
            on_programmed=self.programmed.append,
            on_erased=self.erased.append,
            on_reset=self._reset,
            **kw,
        )

    def _reset(self) -> None:
        self.resets += 1

    def phases(self) -> list[str]:
        out: list[str] = []
        for _d, _t, phase in self.progress:
            if not out or out[-1] != phase:
                out.append(phase)
        return out


def assert_monotonic(progress: list[tuple[int, int, str]]) -> None:
    last: dict[str, int] = {}
    for done, total, phase in progress:
        assert 0 <= done <= total
        assert done >= last.get(phase, 0), f"{phase} went back to {done}"
        last[phase] = done


# --- the simulated probe, through the port ----------------------------------------------------------


@pytest.mark.parametrize("driver", [SimSwdProbe, PyocdSwd])
def test_both_drivers_have_the_ports_methods_and_parameters(driver):
    for name in ("list_probes", "open", "mass_erase", "program", "verify", "reset_and_run", "close"):
        want = list(inspect.signature(getattr(SwdPort, name)).parameters)
        assert list(inspect.signature(getattr(driver, name)).parameters) == want, name


def test_gen3_restore_mass_erases_programs_verifies_and_resets():
    clock = VirtualClock()
    rec = Recorder()
    probe = rec.probe(clock)
    image = parse_hex(boron_like_image())
    result = restore(probe, "boron", image, progress=rec)

    assert result.mass_erased and result.target.target == "nrf52840"
    assert "wipes its whole flash" in result.notes[0]
    assert result.bytes_written == image.size
    for seg in image.segments:  # the MBR and the UICR words too, which no module carries
        assert probe.memory.read(seg.address, len(seg.data)) == seg.data
    assert rec.programmed == [tuple((s.address, s.data) for s in image.segments)]
    assert rec.erased == [GEOMETRY["nrf52840"].regions]
    assert rec.resets == 1
    assert rec.phases() == ["mass-erase", "erase", "program", "verify"]
    assert_monotonic(rec.progress)
    assert rec.progress[-1] == (image.size, image.size, "verify")
    # device time: connect, ERASEALL, then the image over SWD twice (program, verify); SWD is the slower part
    expected = CONNECT_S + GEOMETRY["nrf52840"].mass_erase_s + 2 * image.size / SWD_BYTES_PER_S
    assert clock.now() == pytest.approx(expected, rel=0.03)


def test_gen2_restore_keeps_the_dct_and_erases_only_the_sectors_it_writes():
    clock = VirtualClock()
    rec = Recorder()
    probe = rec.probe(clock)
    probe.open("electron")
    keys = b"device keys live in the DCT" * 100
    probe.memory.load([(0x08004000, keys), (0x08020000, b"\x00" * 4096), (0x080A0000, b"\x55" * 64)])
    image = parse_hex(electron_image())
    result = restore(probe, "electron", image, progress=rec)

    assert not result.mass_erased and result.target.target == "stm32f205rgtx"
    assert probe.memory.read(0x08004000, len(keys)) == keys  # the hole the .hex leaves stays as it was
    assert probe.memory.read(0x080A0000, 64) == b"\x55" * 64  # a sector the image does not touch
    for seg in image.segments:
        assert probe.memory.read(seg.address, len(seg.data)) == seg.data
    # only the one non-blank sector the image writes was erased: 128 KB at 0x08020000, 1 s
    assert rec.erased == [((0x08020000, 0x08040000),)]
    assert clock.now() >= CONNECT_S + 1.0 + 2 * image.size / SWD_BYTES_PER_S
    assert rec.phases() == ["erase", "program", "verify"]
    assert_monotonic(rec.progress)


def test_bytes_of_an_erased_sector_outside_the_image_are_kept():
    # pyOCD is asked for keep_unwritten: UICR words the image does not write (APPROTECT = HwDisabled, which
    # pyOCD's unlock leaves) survive the UICR erase
    rec = Recorder()
    probe = rec.probe(VirtualClock())
    probe.open("boron")
    probe.memory.load([(0x10001208, b"\x5a\x00\x00\x00"), (0x10001014, b"\x00\x00\x00\x00")])
    probe.program([(0x10001014, (0x000F4000).to_bytes(4, "little"))])
    assert probe.memory.read(0x10001208, 4) == b"\x5a\x00\x00\x00"
    assert probe.memory.read(0x10001014, 4) == (0x000F4000).to_bytes(4, "little")
    assert rec.erased == [((0x10001000, 0x10001400),)]
    assert (0x10001208, b"\x5a\x00\x00\x00") in rec.programmed[0]


def test_no_probe():
    probe = SimSwdProbe(VirtualClock(), faults=["no-probe"])
    assert probe.list_probes() == []
    with pytest.raises(NoProbe, match="plug the Particle Debugger"):
        restore(probe, "boron", parse_hex(boron_like_image()))


def test_no_target_power_says_plug_usb_or_battery():
    rec = Recorder()
    probe = rec.probe(VirtualClock(), faults=["no-target-power"])
    with pytest.raises(NoTargetPower, match="the device is not powered: plug its USB or battery"):
        restore(probe, "boron", parse_hex(boron_like_image()))
    assert rec.erased == rec.programmed == []


def test_power_lost_half_way_is_a_transfer_error():
    clock = VirtualClock()
    rec = Recorder()
    powered = [True]
    probe = rec.probe(clock, is_powered=lambda: powered[0])

    def unplug_half_way(done: int, total: int, phase: str) -> None:
        if phase == "program" and done > total // 2:
            powered[0] = False

    with pytest.raises(SwdTransferError, match="No ACK"):
        restore(probe, "boron", parse_hex(boron_like_image()), progress=unplug_half_way)
    written = sum(len(d) for d in dict(rec.programmed[0]).values())
    assert 0 < written < parse_hex(boron_like_image()).size  # the device learns what really got written


def test_locked_nrf52_needs_the_mass_erase_first():
    clock = VirtualClock()
    image = parse_hex(boron_like_image())
    probe = SimSwdProbe(clock, faults=["locked"])
    info = probe.open("boron")
    assert info.locked
    with pytest.raises(TargetLocked, match="only a mass erase opens it"):
        probe.program(image)
    probe.close()

    rec = Recorder()
    refusing = rec.probe(clock, faults=["locked"])
    with pytest.raises(TargetLocked):
        restore(refusing, "boron", image, allow_unlock=False)
    assert rec.erased == rec.programmed == []  # nothing happened to the device

    result = restore(refusing, "boron", image)
    assert result.mass_erased and "locked (APPROTECT)" in result.notes[0]
    assert not refusing.locked
    assert refusing.memory.read(0xF4000, 64) == image.read(0xF4000, 64)


def test_dead_device_fails_its_transfers_and_nothing_is_written():
    rec = Recorder()
    probe = rec.probe(VirtualClock(), faults=["dead"])
    with pytest.raises(SwdTransferError, match="SWD connect failed"):
        restore(probe, "boron", parse_hex(boron_like_image()))
    assert rec.erased == rec.programmed == [] and rec.resets == 0


def test_cancel_mid_program_stops_and_reports_what_was_written():
    clock = VirtualClock()
    rec = Recorder()
    probe = rec.probe(clock)
    cancel = clock.event()
    image = parse_hex(boron_like_image())

    def stop_half_way(done: int, total: int, phase: str) -> None:
        rec(done, total, phase)
        if phase == "program" and done > total // 2:
            cancel.set()

    with pytest.raises(Cancelled):
        restore(probe, "boron", image, progress=stop_half_way, cancel=cancel)
    written = sum(len(d) for _a, d in rec.programmed[0])
    assert image.size // 2 < written < image.size
    assert "verify" not in rec.phases() and rec.resets == 0
    assert_monotonic(rec.progress)
    with pytest.raises(SwdTransferError, match="open it first"):  # restore let go of the probe
        probe.program(image)


def test_an_image_for_another_platform_is_refused_before_anything_is_erased():
    rec = Recorder()
    probe = rec.probe(VirtualClock())
    with pytest.raises(ImageError, match="modules for argon, not for the Boron"):
        restore(probe, "boron", parse_hex(boron_like_image("argon")))
    with pytest.raises(ImageError, match="not flash on the Boron"):
        restore(probe, "boron", [(0x20000000, b"\x00" * 16)])  # RAM, not flash
    assert rec.erased == rec.programmed == []


def test_verify_names_the_first_byte_that_differs():
    probe = SimSwdProbe(VirtualClock())
    probe.open("boron")
    probe.program([(0x28000, b"\xaa" * 8192)])
    probe.memory.load([(0x29003, b"\x00")])
    with pytest.raises(VerifyError, match="verify failed at 0x00029003"):
        probe.verify([(0x28000, b"\xaa" * 8192)])


def test_opening_the_device_as_another_mcu_fails_like_hardware():
    probe = SimSwdProbe(VirtualClock(), device_platform="electron")
    with pytest.raises(SwdTransferError, match="not a nRF52840"):
        probe.open("boron")


def test_p2_and_stm32_without_pack_fail_the_same_way_on_the_sim():
    probe = SimSwdProbe(VirtualClock(), faults=["no-pack"])
    with pytest.raises(NoTarget, match="pyOCD has no target for the P2 / Photon 2"):
        probe.open("p2")
    with pytest.raises(PackMissing, match="pyocd pack install stm32f205rg"):
        probe.open("electron")
    assert probe.open("boron").target == "nrf52840"  # the pack only matters to Gen2


def test_fault_names_are_checked():
    assert set(FAULTS) == {"no-probe", "no-target-power", "locked", "dead", "no-pack"}
    with pytest.raises(ValueError, match="unknown SWD fault"):
        SimSwdProbe(VirtualClock(), faults=["melted"])


# --- probe selection and the target table (shared by both drivers) -----------------------------------

A = ProbeInfo("0240000034544e45", "ARM", "DAPLink CMSIS-DAP", "Particle Debugger")
B = ProbeInfo("0240000034544e99", "ARM", "DAPLink CMSIS-DAP", "Particle Debugger")


def test_choose_probe_by_unique_id():
    assert choose_probe([A], None) is A
    assert choose_probe([A, B], "0240000034544E99") is B  # case does not matter
    assert choose_probe([A, B], "4e45") is A  # a unique part of the id, as pyOCD allows
    with pytest.raises(SeveralProbes, match="2 SWD debuggers are connected and none was named"):
        choose_probe([A, B], None)
    with pytest.raises(SeveralProbes, match="match '02400000'"):
        choose_probe([A, B], "02400000")
    with pytest.raises(ProbeNotFound, match=re.escape("'ffff' is not connected (connected: 0240000034544e45)")):
        choose_probe([A], "ffff")
    with pytest.raises(ProbeNotFound, match="connected: none"):
        choose_probe([], "ffff")
    with pytest.raises(NoProbe):
        choose_probe([], None)


@pytest.mark.parametrize(
    ("platform", "target", "mass_erase"),
    [("boron", "nrf52840", True), ("argon", "nrf52840", True), ("tracker", "nrf52840", True), ("photon", None, False)],
)
def test_target_table(platform, target, mass_erase):
    support = target_support(platform)
    assert (support.targets[0] if support.pack is None else None) == target
    assert support.mass_erase_for_restore is mass_erase


@pytest.mark.parametrize("platform", ["p2", "msom", "trackerm"])
def test_rtl872x_has_no_pyocd_target_and_says_what_to_do(platform):
    with pytest.raises(NoTarget) as err:
        target_support(platform)
    assert "pyOCD has no target" in str(err.value) and "Recover it over USB instead" in str(err.value)


def test_an_mcu_outside_the_table_has_no_target():
    with pytest.raises(NoTarget, match="no SWD restore for the Core"):
        target_support("core")


# --- the real driver, without hardware --------------------------------------------------------------


@pytest.fixture
def no_prompt(monkeypatch):
    """The kiosk runs unattended: pyOCD's interactive chooser must never be reached."""

    def refuse(*_a, **_k):
        raise AssertionError("something asked for terminal input")

    monkeypatch.setattr(builtins, "input", refuse)


class FakeProbe:
    def __init__(self, unique_id: str, broken: bool = False):
        self._id = unique_id
        self._broken = broken
        self.vendor_name = "ARM"
        self.product_name = "DAPLink CMSIS-DAP"
        self.description = "Particle Debugger"

    @property
    def unique_id(self) -> str:
        if self._broken:
            raise pyocd_errors.ProbeError("cannot read the serial number")
        return self._id


def attach(monkeypatch, *probes) -> None:
    monkeypatch.setattr(
        aggregator.DebugProbeAggregator, "get_all_connected_probes", staticmethod(lambda unique_id=None: list(probes))
    )


def test_pyocd_listing_with_no_probe_attached_is_empty(monkeypatch, no_prompt):
    # Mock at pyOCD's own probe classes, so its aggregator runs for real.
    for cls in set(aggregator.PROBE_CLASSES.values()):
        monkeypatch.setattr(
            cls, "get_all_connected_probes", classmethod(lambda cls, unique_id=None, is_explicit=False: [])
        )
    assert PyocdSwd().list_probes() == []
    with pytest.raises(NoProbe):
        PyocdSwd().open("boron")


def test_pyocd_listing_names_each_probe_and_skips_a_broken_one(monkeypatch, no_prompt):
    attach(monkeypatch, FakeProbe("0240000034544e45"), FakeProbe("x", broken=True))
    assert PyocdSwd().list_probes() == [A]


def test_pyocd_open_by_a_missing_unique_id(monkeypatch, no_prompt):
    attach(monkeypatch, FakeProbe("0240000034544e45"))
    with pytest.raises(ProbeNotFound, match="'0240000034544e99' is not connected"):
        PyocdSwd().open("boron", "0240000034544e99")
    attach(monkeypatch, FakeProbe("0240000034544e45"), FakeProbe("0240000034544e99"))
    with pytest.raises(SeveralProbes):
        PyocdSwd().open("boron")


def test_pyocd_targets_p2_and_a_missing_stm32_pack(tmp_path):
    port = PyocdSwd()
    assert port.resolve_target("boron") == "nrf52840"
    with pytest.raises(NoTarget, match="P2 / Photon 2"):
        port.resolve_target("p2")
    # HOME is a fresh folder in tests, so cmsis-pack-manager has no packs
    with pytest.raises(PackMissing) as err:
        port.resolve_target("electron")
    message = str(err.value)
    for words in ("Keil.STM32F2xx_DFP", "pyocd pack install stm32f205rg", "needs the network", "--pack <file>"):
        assert words in message
    bad = tmp_path / "Keil.STM32F2xx_DFP.2.9.0.pack"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PackMissing, match="cannot be read"):
        PyocdSwd(packs=[bad]).resolve_target("photon")


# A fake pyOCD session: just what PyocdSwd touches.


class FakeTarget:
    def __init__(self, memory: dict[int, int], *, dp_answers: bool = True, locked: bool = False):
        self.memory = memory
        self.locked = locked
        self.mass_erases = 0
        self.resets = 0
        self.dp = SimpleNamespace(dpidr=SimpleNamespace(idr=0x2BA01477 if dp_answers else 0))
        self.ctrl_ap = object()
        flash = SimpleNamespace(start=0, length=0x100000, is_flash=True)
        ram = SimpleNamespace(start=0x20000000, length=0x40000, is_flash=False)
        self.memory_map = SimpleNamespace(regions=[flash, ram])

    def is_locked(self) -> bool:
        return self.locked

    def mass_erase(self) -> bool:
        self.mass_erases += 1
        self.locked = False
        self.memory.clear()
        return True

    def read_memory_block8(self, address: int, size: int) -> list[int]:
        return [self.memory.get(address + i, 0xFF) for i in range(size)]

    def reset(self) -> None:
        self.resets += 1


class FakeBench:
    """Session and loader factories over one fake target; ``hang`` makes session.open block."""

    def __init__(self, **target_kw):
        self.memory: dict[int, int] = {}
        self.target = FakeTarget(self.memory, **target_kw)
        self.unlocks: list[bool] = []  # auto_unlock of each session opened
        self.hang: threading.Event | None = None
        self.step = threading.Event()  # paces the fake loader
        self.gate: threading.Event | None = None  # the loader waits for it half way through programming

    def session(self, probe, auto_open, options):
        assert options["target_override"] == "nrf52840" and options["no_config"]
        bench = self
        bench.unlocks.append(options["auto_unlock"])

        class Session:
            target = bench.target

            def open(self) -> None:
                if bench.hang is not None:
                    bench.hang.wait()
                if not bench.target.dp.dpidr.idr:
                    no_ack = pyocd_errors.TransferError("SWD/JTAG communication failure (No ACK)")
                    raise pyocd_errors.Error("Target not detected. Check connection to target.") from no_ack
                if bench.target.locked:
                    if not options["auto_unlock"]:
                        raise pyocd_errors.DebugError("No cores were discovered!")
                    bench.target.mass_erase()  # what pyOCD's nRF52 does while connecting

            def close(self) -> None:
                pass

        return Session()

    def loader(self, session, progress, **kw):
        assert kw["chip_erase"] == "sector"
        bench = self

        class Loader:
            def __init__(self) -> None:
                self.data: list[tuple[int, bytes]] = []

            def add_data(self, address: int, data: bytes) -> None:
                self.data.append((address, data))

            def commit(self) -> None:
                for fraction in (0.0, 0.5, 1.0):  # erase
                    progress(fraction)
                for i in range(11):  # program
                    bench.step.wait(0.005)
                    progress(i / 10)
                    if i == 5 and bench.gate is not None:
                        bench.gate.wait(5)  # hold still until the test has pressed Stop
                for address, data in self.data:
                    for offset, byte in enumerate(data):
                        bench.memory[address + offset] = byte

        return Loader()


def pyocd_port(monkeypatch, bench: FakeBench) -> PyocdSwd:
    attach(monkeypatch, FakeProbe("0240000034544e45"))
    return PyocdSwd(RealClock(), session_factory=bench.session, loader_factory=bench.loader)


def test_pyocd_no_answer_on_the_debug_port_is_no_target_power(monkeypatch, no_prompt):
    port = pyocd_port(monkeypatch, FakeBench(dp_answers=False))
    with pytest.raises(NoTargetPower, match="the device is not powered: plug its USB or battery"):
        port.open("boron")


class SilentProbe(DebugProbe):
    """A pyOCD debug probe whose target never answers (no ACK), driven by pyOCD's real Session and nRF52840."""

    def __init__(self, protocols=(DebugProbe.Protocol.DEFAULT, DebugProbe.Protocol.SWD)):
        super().__init__()
        self._protocols = list(protocols)
        self._wire = None
        self._open = False

    unique_id = "0240000034544e45"
    description = vendor_name = product_name = "silent probe"
    capabilities = frozenset({DebugProbe.Capability.SWJ_SEQUENCE})

    @property
    def supported_wire_protocols(self):
        return self._protocols

    @property
    def wire_protocol(self):
        return self._wire

    @property
    def is_open(self) -> bool:
        return self._open

    def create_associated_board(self):
        return None

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def connect(self, protocol=None) -> None:
        self._wire = DebugProbe.Protocol.SWD

    def disconnect(self) -> None:
        self._wire = None

    def set_clock(self, frequency) -> None:
        pass

    def swj_sequence(self, length, bits) -> None:
        pass

    def flush(self) -> None:
        pass

    def read_dp(self, addr, now=True):
        raise pyocd_errors.TransferError("SWD/JTAG communication failure (No ACK)")

    def write_dp(self, addr, data):
        raise pyocd_errors.TransferError("SWD/JTAG communication failure (No ACK)")


def test_pyocd_session_on_a_silent_target_is_no_target_power(monkeypatch, no_prompt):
    attach(monkeypatch, SilentProbe())
    with pytest.raises(NoTargetPower, match="plug its USB or battery"):
        PyocdSwd(RealClock()).open("boron")
    # a failure before the first SWD read is not a power problem
    attach(monkeypatch, SilentProbe(protocols=[DebugProbe.Protocol.JTAG]))
    with pytest.raises(
        SwdTransferError,
        match=r"SWD connect failed \(Target not detected.*: requested wire protocol DEFAULT not",
    ):
        PyocdSwd(RealClock()).open("boron")


def test_pyocd_restore_of_a_locked_nrf52_unlocks_programs_and_verifies(monkeypatch, no_prompt):
    bench = FakeBench(locked=True)
    port = pyocd_port(monkeypatch, bench)
    rec = Recorder()
    image = [(0x1000, bytes(range(256)) * 8), (0xF4000, b"\x5a" * 1024)]
    result = restore(port, "boron", image, progress=rec)
    assert result.target.locked and result.mass_erased
    # the first connect never unlocks; the restore chose the mass erase, pyOCD did it on the second connect
    assert bench.unlocks == [False, True] and bench.target.mass_erases == 1
    assert bytes(bench.memory[0x1000 + i] for i in range(2048)) == image[0][1]
    assert rec.phases() == ["mass-erase", "erase", "program", "verify"]
    assert_monotonic(rec.progress)
    assert rec.progress[-1] == (3072, 3072, "verify")
    assert bench.target.resets == 1


def test_pyocd_restore_of_an_open_nrf52_mass_erases_then_reconnects(monkeypatch, no_prompt):
    bench = FakeBench()
    bench.memory.update({0x30000: 0x00})  # an old system part
    port = pyocd_port(monkeypatch, bench)
    result = restore(port, "boron", [(0x1000, b"\x01" * 512)])
    assert not result.target.locked and result.mass_erased
    assert bench.target.mass_erases == 1 and bench.unlocks == [False, True]
    assert 0x30000 not in bench.memory


def test_pyocd_a_probe_that_cannot_be_opened_is_not_a_power_problem(monkeypatch, no_prompt):
    bench = FakeBench(dp_answers=False)

    def broken_probe(probe, auto_open, options):
        session = bench.session(probe, auto_open, options)

        def fail() -> None:
            raise pyocd_errors.ProbeError("Unable to open device")

        session.open = fail
        return session

    attach(monkeypatch, FakeProbe("0240000034544e45"))
    port = PyocdSwd(RealClock(), session_factory=broken_probe)
    with pytest.raises(SwdTransferError, match=r"could not be opened .*plug it in again"):
        port.open("boron")


def test_pyocd_verify_reads_back(monkeypatch, no_prompt):
    bench = FakeBench()
    port = pyocd_port(monkeypatch, bench)
    port.open("boron")
    port.program([(0x28000, b"\x11" * 100)])
    bench.memory[0x28000 + 42] = 0x10
    with pytest.raises(VerifyError, match=re.escape("0x0002802a (wrote 0x11, read 0x10)")):
        port.verify([(0x28000, b"\x11" * 100)])


def test_pyocd_cancel_mid_program_unwinds_pyocd(monkeypatch, no_prompt):
    bench = FakeBench()
    port = pyocd_port(monkeypatch, bench)
    port.open("boron")
    cancel = threading.Event()
    bench.gate = cancel
    seen = []

    def stop_half_way(done: int, total: int, phase: str) -> None:
        seen.append((done, total, phase))
        if phase == "program" and done >= total // 2:
            cancel.set()

    with pytest.raises(Cancelled):
        port.program([(0x28000, b"\x11" * 1000)], progress=stop_half_way, cancel=cancel)
    assert bench.memory == {}  # pyOCD was stopped inside its commit, before the last page
    assert_monotonic(seen)


def test_pyocd_a_hung_call_times_out_and_the_port_says_so(monkeypatch, no_prompt):
    bench = FakeBench()
    bench.hang = threading.Event()
    port = pyocd_port(monkeypatch, bench)
    monkeypatch.setattr(swd, "CONNECT_TIMEOUT_S", 0.2)
    try:
        with pytest.raises(SwdTransferError, match=re.escape("did not finish the connect within 0.2 s: unplug it")):
            port.open("boron")
        with pytest.raises(SwdTransferError, match="still stuck"):
            port.open("boron")
    finally:
        bench.hang.set()  # let the abandoned worker end
