"""hw.dfu end to end: DfuDevice -> pyusb -> SimUsbBackend -> a small peer -> SimDfuDevice -> SimFlash.

Every wait runs on a VirtualClock, so flash times cost no real time and ``clock.now()`` is the
device time a write took. The peer here is the smallest DFU-mode device: the platform's DFU
descriptor (with the alt strings the SimDfuDevice reports) and every control transfer handed to it.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

import pytest
import usb.core
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.memory_map import parse_memory_map
from firmware.platforms import Platform, platform_by_name
from hw.clock import Cancelled, VirtualClock
from hw.dfu import (
    DEVICE_BLOCK_SIZE,
    STALL_RETRY_DELAY_S,
    DfuAddressError,
    DfuDevice,
    DfuDisconnected,
    DfuError,
    DfuGetStatus,
    DfuProtected,
    DfuseCommand,
    DfuState,
    DfuStatus,
    DfuUnsupported,
    DfuVerifyError,
    plan_write,
)
from hw.sim.dfu_device import (
    PROTECTED_MODE_ERROR,
    RESET_AFTER_MANIFEST_S,
    VENDOR_ERROR_STRING_INDEX,
    SimDfuDevice,
    protected_alt_string,
)
from hw.sim.flash import FLASH_TIMINGS, FlashError, SimFlash
from hw.sim.usb_backend import SimUsbBackend, SimUsbBus, SimUsbStall, dfu_interface, particle_descriptor

DEVICE_ID = "e00fce68ab2c5d1f0e4a7b93"
KIB = 1024
# Where each platform's system part 1 goes (firmware.platforms layouts), alt 0.
SYSTEM_PART_1 = {"photon": 0x08020000, "boron": 0x00030000, "p2": 0x08060000}


@dataclass(frozen=True)
class Transfer:
    time: float
    bm: int
    request: int
    value: int
    data: bytes | int  # the OUT data stage, or wLength for IN
    reply: bytes | int | None


class StringsBackend(SimUsbBackend):
    """The simulator's backend, letting the peer serve strings its descriptor does not list (0xFA,
    the bootloader's error text), as the Particle bootloaders do."""

    def _standard(self, handle, bm, request, value, index, length):
        if request == 6 and bm == 0x80 and value >> 8 == 3:
            serve = getattr(handle.enumeration.peer, "usb_string", None)
            text = serve(value & 0xFF) if serve is not None else None
            if text is not None:
                body = text.encode("utf-16-le")
                return bytes([2 + len(body), 3]) + body
        return super()._standard(handle, bm, request, value, index, length)


class DfuPeer:
    """A Particle device in DFU mode: its descriptor, a SimDfuDevice over a SimFlash, a transfer log."""

    def __init__(
        self,
        platform: Platform,
        clock: VirtualClock,
        *,
        transfer_size: int = 4096,
        alt_strings: tuple[str, ...] | None = None,
        **device_kw,
    ):
        self.platform = platform
        self.clock = clock
        self.flash = SimFlash(platform)
        self.transfer_size = transfer_size
        self.alt_strings_override = alt_strings
        self.attached = True
        self.resets: list[tuple[float, str]] = []
        self.log: list[Transfer] = []
        device_kw.setdefault("on_manifest", lambda: self._reset("manifest"))
        device_kw.setdefault("on_safe_mode", lambda: self._reset("safe-mode"))
        self.device = SimDfuDevice(platform, clock, self.flash, **device_kw)

    def _reset(self, why: str) -> None:
        self.resets.append((self.clock.now(), why))
        self.attached = False  # it boots Device OS: gone from the bus as a DFU device

    def usb_attached(self) -> bool:
        return self.attached

    def usb_descriptor(self):
        alts = self.alt_strings_override or self.device.alt_strings()
        descriptor = particle_descriptor(self.platform, "dfu", DEVICE_ID, "1-1.4")
        return dataclasses.replace(descriptor, interfaces=(dfu_interface(alts, self.transfer_size),))

    def usb_control(self, bm: int, request: int, value: int, index: int, data_or_length: bytes | int):
        reply = None
        try:
            reply = self.device.usb_control(bm, request, value, index, data_or_length)
            return reply
        finally:
            self.log.append(Transfer(self.clock.now(), bm, request, value, data_or_length, reply))

    def usb_string(self, index: int) -> str | None:
        return self.device.string_descriptor(index)

    # -- reading the log --
    def dnloads(self) -> list[Transfer]:
        return [t for t in self.log if (t.bm, t.request) == (0x21, 1)]

    def commands(self, command: int) -> list[int]:
        """Addresses of the DfuSe commands ``command`` the device was sent."""
        return [
            struct.unpack_from("<I", t.data, 1)[0]
            for t in self.dnloads()
            if t.value == 0 and len(t.data) == 5 and t.data[0] == command
        ]

    def data_blocks(self) -> list[Transfer]:
        return [t for t in self.dnloads() if t.value >= 2 and t.data]

    def statuses(self) -> list[DfuGetStatus]:
        return [DfuGetStatus.parse(t.reply) for t in self.log if (t.bm, t.request) == (0xA1, 3) and t.reply]


@dataclass
class Rig:
    clock: VirtualClock
    bus: SimUsbBus
    peer: DfuPeer
    dfu: DfuDevice

    @property
    def device(self) -> SimDfuDevice:
        return self.peer.device


def make_rig(platform: str = "boron", *, open_: bool = True, **peer_kw) -> Rig:
    clock = VirtualClock()
    bus = SimUsbBus(clock)
    peer = DfuPeer(platform_by_name(platform), clock, **peer_kw)
    bus.attach(peer)
    found = usb.core.find(backend=StringsBackend(bus), idVendor=0x2B04)
    dfu = DfuDevice(found, clock)
    if open_:
        dfu.open()
    return Rig(clock, bus, peer, dfu)


def module_bytes(size: int, seed: int = 1) -> bytes:
    return bytes((i * 131 + seed * 7 + (i >> 12)) & 0xFF for i in range(size))


def expected_busy_s(flash: SimFlash, address: int, size: int, blank: bool = True) -> float:
    """Device seconds for erasing the sectors a write touches and programming its blocks, by the table."""
    sectors = flash.sectors(0, address, size)
    erase = sum(flash.erase_time_s(s, 0, blank=blank) for s in dict.fromkeys(sectors))
    blocks = [min(DEVICE_BLOCK_SIZE, size - off) for off in range(0, size, DEVICE_BLOCK_SIZE)]
    return erase + sum(flash.write_time_s(b, 0) for b in blocks)


# --- whole writes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["photon", "boron", "p2"])
def test_write_512k_verify_and_leave(platform):
    rig = make_rig(platform)
    address, data = SYSTEM_PART_1[platform], module_bytes(512 * KIB)
    start = rig.clock.now()
    rig.dfu.write(address, data)
    elapsed = rig.clock.now() - start

    assert rig.peer.flash.read(0, address, len(data)) == data
    # Device time: exactly the table's raw flash time, and the client adds nothing to it.
    assert rig.device.stats.busy_s == pytest.approx(expected_busy_s(rig.peer.flash, address, len(data)))
    assert elapsed / rig.device.stats.busy_s <= 1.05
    # One DNLOAD per 4096-byte block, one ERASE per sector, one SET_ADDRESS for the run.
    blocks = len(data) // DEVICE_BLOCK_SIZE
    sectors = rig.peer.flash.sectors(0, address, len(data))
    assert [len(t.data) for t in rig.peer.data_blocks()] == [DEVICE_BLOCK_SIZE] * blocks
    assert [t.value for t in rig.peer.data_blocks()] == list(range(2, 2 + blocks))
    assert rig.peer.commands(DfuseCommand.ERASE) == sorted({s.start for s in sectors})
    assert rig.peer.commands(DfuseCommand.SET_ADDRESS_POINTER) == [address]
    dnloads = len(rig.peer.dnloads())
    assert dnloads == blocks + len(set(sectors)) + 1
    # Two GETSTATUS per DNLOAD (dfuDNBUSY, then the one held until the work is done), one to start.
    assert rig.dfu.stats.transfers["GETSTATUS"] == 2 * dnloads + 1
    assert rig.dfu.stats.transfers["UPLOAD"] == blocks  # the read-back reuses the pointer
    assert rig.dfu.stats.retries == 0
    assert rig.dfu.transfers == rig.device.stats.total_transfers + rig.dfu.stats.transfers["GET_DESCRIPTOR"]
    assert rig.dfu.stats.cpu_s < 2.0  # host CPU: a rounding error beside the flash time

    left_at = rig.clock.now()
    assert rig.dfu.leave() is True
    reported = rig.peer.statuses()[-1].state
    assert reported == (DfuState.DNLOAD_IDLE if platform == "photon" else DfuState.MANIFEST)
    assert rig.peer.attached
    rig.clock.sleep(1.0)
    assert rig.peer.resets == [(pytest.approx(left_at + RESET_AFTER_MANIFEST_S), "manifest")]
    assert not rig.peer.attached


def test_timing_table_drives_device_time():
    """Boron 128 pages: 85 ms erase + 1024 words x 41 us each; Photon 4 x 1 s + 16 us per word;
    P2 skips blank sectors (a read-check), a non-blank one costs 45 ms."""
    boron = SimFlash(platform_by_name("boron"))
    assert expected_busy_s(boron, 0x30000, 512 * KIB) == pytest.approx(128 * (0.085 + 1024 * 41e-6))
    photon = SimFlash(platform_by_name("photon"))
    assert expected_busy_s(photon, 0x08020000, 512 * KIB) == pytest.approx(4 * 1.0 + 128 * 1024 * 16e-6)
    p2 = SimFlash(platform_by_name("p2"))
    page = p2.sector_at(0, 0x08060000)
    assert p2.erase_time_s(page, blank=True) == 0.0
    assert p2.erase_time_s(page) == pytest.approx(0.045)
    assert p2.write_time_s(4096) == pytest.approx(0.008)
    assert all(t.source for t in FLASH_TIMINGS.values())


def test_p2_rewrite_pays_for_erasing_what_is_there():
    rig = make_rig("p2")
    rig.dfu.write(0x08060000, module_bytes(64 * KIB))
    first = rig.device.stats.busy_s
    rig.dfu.write(0x08060000, module_bytes(64 * KIB, seed=2))
    assert first == pytest.approx(16 * 0.008)
    assert rig.device.stats.busy_s - first == pytest.approx(16 * (0.045 + 0.008))
    assert rig.peer.flash.read(0, 0x08060000, 64 * KIB) == module_bytes(64 * KIB, seed=2)


def test_write_spanning_sectors_erases_exactly_those():
    rig = make_rig("photon")
    flash = rig.peer.flash
    flash.load(0, 0x0800C000, b"\x11" * 0x3000)  # in the 16 KB sector at 0x0800C000, before the write
    flash.load(0, 0x08020000, b"\x22" * 16)  # in the next (128 KB) sector: must survive
    data = module_bytes(0x2000)
    rig.dfu.write(0x0800F000, data)  # the last 4 KB of the 16 KB sector and 4 KB of the 64 KB one
    assert rig.peer.commands(DfuseCommand.ERASE) == [0x0800C000, 0x08010000]
    assert flash.read(0, 0x0800F000, len(data)) == data
    assert flash.read(0, 0x0800C000, 0x3000) == b"\xff" * 0x3000  # same sector: erased with it
    assert flash.read(0, 0x08020000, 16) == b"\x22" * 16
    assert rig.device.stats.busy_s == pytest.approx(0.25 + 0.55 + 2 * 1024 * 16e-6)


def test_unaligned_write_counts_blocks_from_its_own_pointer():
    rig = make_rig("boron")
    data = module_bytes(3 * DEVICE_BLOCK_SIZE + 100)
    rig.dfu.write(0x30FFF, data)
    assert rig.peer.commands(DfuseCommand.ERASE) == [0x30000, 0x31000, 0x32000, 0x33000, 0x34000]  # to 0x34062
    assert rig.peer.commands(DfuseCommand.SET_ADDRESS_POINTER) == [0x30FFF]
    assert rig.peer.flash.read(0, 0x30FFF, len(data)) == data
    assert rig.peer.flash.read(0, 0x30000, 0xFFF) == b"\xff" * 0xFFF


def test_transfer_size_other_than_4096_sets_the_pointer_for_every_block():
    rig = make_rig("boron", transfer_size=2048)
    assert rig.dfu.transfer_size == 2048
    data = module_bytes(5 * 2048)
    rig.dfu.write(0x40000, data)
    assert rig.peer.commands(DfuseCommand.SET_ADDRESS_POINTER)[:5] == [0x40000 + i * 2048 for i in range(5)]
    assert [t.value for t in rig.peer.data_blocks()] == [2] * 5
    assert rig.peer.flash.read(0, 0x40000, len(data)) == data


def test_external_flash_and_dct_alts():
    rig = make_rig("boron")
    data = module_bytes(10 * KIB)
    rig.dfu.write(0x80200000, data, alt=2)
    assert rig.peer.flash.read(2, 0x80200000, len(data)) == data
    assert rig.dfu.read(0x80200000, len(data), alt=2) == data
    # The Gen3 DCT ("e": read + write, no erase) is rewritten in place: no ERASE is sent.
    erases = len(rig.peer.commands(DfuseCommand.ERASE))
    rig.dfu.write(0x100, b"kiosk", alt=1)
    rig.dfu.write(0x100, b"bench", alt=1)
    assert len(rig.peer.commands(DfuseCommand.ERASE)) == erases
    assert rig.dfu.read(0x100, 5, alt=1) == b"bench"
    assert [t.value for t in rig.peer.log if (t.bm, t.request) == (0x01, 11)] == [0, 2, 1]


def test_gen2_dct_poll_timeouts_are_honoured():
    """Gen2's DCT alt answers dfuDNBUSY with bwPollTimeout 500 ms after ERASE and 1 ms otherwise. ST's code
    does the work before that GETSTATUS's status stage (EP0_TxSent), so the host's sleep comes on top of it."""
    rig = make_rig("photon")
    start = rig.clock.now()
    rig.dfu.write(0x0, b"\x01" * 100, alt=1)
    polls = [s.poll_timeout_ms for s in rig.peer.statuses() if s.state == DfuState.DNBUSY]
    assert polls == [500, 1, 1]  # ERASE, SET_ADDRESS, the block
    assert rig.device.stats.busy_s == pytest.approx(0.25 + 25 * 16e-6)
    assert rig.clock.now() - start == pytest.approx(rig.device.stats.busy_s + 0.5 + 0.001 + 0.001)


def test_progress_reports_each_phase_in_order():
    rig = make_rig("boron")
    seen: list[tuple[int, int, str]] = []
    rig.dfu.write(0x30000, module_bytes(20 * KIB), progress=lambda *p: seen.append(p))
    phases = [p[2] for p in seen]
    assert phases == sorted(phases, key=["erase", "write", "verify"].index)
    for phase in ("erase", "write", "verify"):
        done = [d for d, _, ph in seen if ph == phase]
        assert done == sorted(done) and done[-1] == next(t for _, t, ph in seen if ph == phase)
    assert seen[-1] == (20 * KIB, 20 * KIB, "verify")


def test_cancel_stops_between_blocks():
    rig = make_rig("boron")
    cancel = rig.clock.event()

    def progress(done: int, total: int, phase: str) -> None:
        if phase == "write" and done >= 8 * KIB:
            cancel.set()

    with pytest.raises(Cancelled):
        rig.dfu.write(0x30000, module_bytes(64 * KIB), progress=progress, cancel=cancel)
    assert len(rig.peer.data_blocks()) == 2


def test_verify_catches_a_device_that_writes_wrong_bytes(monkeypatch):
    rig = make_rig("boron")
    real_write = rig.peer.flash.write
    monkeypatch.setattr(rig.peer.flash, "write", lambda alt, at, data: real_write(alt, at, bytes([0]) + data[1:]))
    with pytest.raises(DfuVerifyError, match="0x30000"):
        rig.dfu.write(0x30000, module_bytes(4 * KIB, seed=3))


# --- refusals ----------------------------------------------------------------------------------------


def test_bad_addresses_are_refused_before_anything_is_sent():
    rig = make_rig("boron")
    sent = len(rig.peer.log)
    for address, size in ((0x100000, 16), (0xFFFF0, 0x20), (0x0, 16), (0xF8000, 16)):  # off the map; MBR; bootloader
        with pytest.raises(DfuAddressError):
            rig.dfu.write(address, b"\x00" * size)
    with pytest.raises(DfuAddressError):
        rig.dfu.write(0x30000, b"x", alt=3)
    with pytest.raises(DfuAddressError):
        rig.dfu.read(0x100000, 16)
    assert len(rig.peer.log) == sent


def _map_beyond_the_flash(platform: str) -> tuple[tuple[str, ...], int]:
    alts = list(platform_by_name(platform).dfu_alts)
    alts[0] = alts[0].replace("07*128Kg", "08*128Kg").replace("8*004Ka", "8*004Ka,16*004Kg")
    return tuple(alts), parse_memory_map(alts[0]).segments[-1].start


def test_gen3_reports_an_address_outside_its_flash():
    """A map that claims more than the flash has: a Gen3 bootloader refuses the erase with errUNKNOWN (its
    answer to every flash failure) and the client clears it."""
    alts, beyond = _map_beyond_the_flash("boron")
    rig = make_rig("boron", alt_strings=alts)
    with pytest.raises(DfuError) as raised:
        rig.dfu.write(beyond, b"\x00" * 16)
    assert raised.value.status == DfuStatus.ERR_UNKNOWN and raised.value.state == DfuState.ERROR
    assert rig.device.state == DfuState.IDLE  # cleared for whoever comes next
    rig.dfu.write(SYSTEM_PART_1["boron"], b"still works")


def test_gen2_stalls_the_status_of_a_failed_erase_and_says_nothing_more():
    """ST's EP0_TxSent calls USBD_CtlError when MAL_Erase fails, then goes to dfuDNLOAD_SYNC as after any
    work: the GETSTATUS that carried dfuDNBUSY stalls, the one after it says dfuDNLOAD_IDLE with status OK
    (usbd_dfu_core.c, v2.3.1). The client retries the command and gives up; the device is usable after."""
    alts, beyond = _map_beyond_the_flash("photon")
    rig = make_rig("photon", alt_strings=alts)
    with pytest.raises(DfuError, match="stalled 5 times") as raised:
        rig.dfu.write(beyond, b"\x00" * 16)
    assert raised.value.status == DfuStatus.OK and raised.value.state == DfuState.DNLOAD_IDLE
    dev = rig.device
    dev.usb_control(0x21, 1, 0, 0, bytes([0x41]) + beyond.to_bytes(4, "little"))
    with pytest.raises(SimUsbStall):
        dev.usb_control(0xA1, 3, 0, 0, 6)  # dfuDNBUSY, then the stall
    reply = DfuGetStatus.parse(dev.usb_control(0xA1, 3, 0, 0, 6))
    assert (reply.status, reply.state) == (DfuStatus.OK, DfuState.DNLOAD_IDLE)
    rig.dfu.write(SYSTEM_PART_1["photon"], b"still works")


def test_device_rejects_mass_erase_and_unknown_commands():
    rig = make_rig("boron", open_=False)
    dev = rig.device
    dev.usb_control(0x21, 1, 0, 0, bytes([0x41]))  # ERASE with no address: mass erase
    assert DfuGetStatus.parse(dev.usb_control(0xA1, 3, 0, 0, 6)).state == DfuState.DNBUSY
    reply = DfuGetStatus.parse(dev.usb_control(0xA1, 3, 0, 0, 6))
    assert (reply.status, reply.state) == (DfuStatus.ERR_TARGET, DfuState.ERROR)
    with pytest.raises(SimUsbStall):
        dev.usb_control(0x21, 6, 0, 0, b"")  # ABORT: no transition out of dfuERROR
    dev.usb_control(0x21, 4, 0, 0, b"")  # CLRSTATUS
    assert dev.usb_control(0xA1, 5, 0, 0, 1) == bytes([DfuState.IDLE])
    with pytest.raises(SimUsbStall):
        dev.usb_control(0x21, 4, 0, 0, b"")  # CLRSTATUS in dfuIDLE: stalls and leaves dfuERROR
    assert (dev.state, dev.status) == (DfuState.ERROR, DfuStatus.ERR_UNKNOWN)
    dev.usb_control(0x21, 4, 0, 0, b"")
    dev.usb_control(0x21, 1, 0, 0, bytes([0x77]))
    dev.usb_control(0xA1, 3, 0, 0, 6)
    assert DfuGetStatus.parse(dev.usb_control(0xA1, 3, 0, 0, 6)).status == DfuStatus.ERR_STALLEDPKT


def test_gen2_needs_the_second_getstatus_before_the_next_dnload():
    """Gen2 goes back to dfuDNLOAD_SYNC after the work: a client skipping the GETSTATUS that ends a
    command would stall there (Gen3 would let it through); the client never does."""
    rig = make_rig("photon", open_=False)
    dev = rig.device
    dev.usb_control(0x21, 1, 0, 0, bytes([0x21, 0, 0, 2, 8]))  # SET_ADDRESS 0x08020000
    dev.usb_control(0xA1, 3, 0, 0, 6)  # dfuDNBUSY, then the work
    assert dev.state == DfuState.DNLOAD_SYNC and dev.address_pointer == 0x08020000
    with pytest.raises(SimUsbStall):
        dev.usb_control(0x21, 1, 2, 0, b"\x00" * 16)
    assert make_rig("photon").dfu.write(0x08020000, b"fine") is None


def test_protected_device_refuses_before_data_is_sent():
    rig = make_rig("boron", protected=True)
    assert rig.dfu.protection_state() == "protected"
    assert rig.dfu.alt_names[0] == protected_alt_string(rig.peer.platform.dfu_alts[0])
    assert rig.dfu.memory_map(0).protected
    with pytest.raises(DfuProtected):
        rig.dfu.write(0x30000, module_bytes(8 * KIB))
    with pytest.raises(DfuProtected):
        rig.dfu.read(0x30000, 16)
    assert rig.peer.dnloads() == []
    assert rig.peer.flash.allocated_bytes() == 0


def test_protected_device_answers_errvendor_with_its_reason():
    """What the bootloader does if a client sends anyway: errVENDOR, iString -> the reason."""
    rig = make_rig("boron", protected=True, open_=False)
    dev = rig.device
    dev.usb_control(0x21, 1, 0, 0, bytes([0x41, 0, 0, 3, 0]))  # ERASE: refused too
    reply = DfuGetStatus.parse(dev.usb_control(0xA1, 3, 0, 0, 6))
    assert (reply.status, reply.state, reply.i_string) == (DfuStatus.ERR_VENDOR, DfuState.ERROR, 8)
    assert dev.string_descriptor(VENDOR_ERROR_STRING_INDEX) == PROTECTED_MODE_ERROR
    dev.usb_control(0x21, 4, 0, 0, b"")
    assert dev.usb_control(0xA1, 2, 2, 0, 4096) == b""  # UPLOAD: empty reply, then dfuERROR
    assert (dev.state, dev.status) == (DfuState.ERROR, DfuStatus.ERR_VENDOR)
    assert rig.peer.flash.allocated_bytes() == 0


def test_protection_states():
    assert make_rig("boron").dfu.protection_state() == "open"
    assert make_rig("p2", protected=True, service_mode=True).dfu.protection_state() == "service"
    # a 6.1.1 bootloader (3001) serves no string 0xFA (it came with 6.2.0): the client reads the map instead
    old = make_rig("boron", protected=True, bootloader_version=3001)
    assert old.device.string_descriptor(0xFA) is None
    assert old.dfu.protection_state() == "protected"
    assert make_rig("boron", bootloader_version=3001).dfu.protection_state() is None  # open: the map says nothing
    assert make_rig("photon").dfu.protection_state() is None  # Gen2: no Device Protection at all
    with pytest.raises(ValueError, match="Device Protection"):
        SimDfuDevice(platform_by_name("photon"), VirtualClock(), SimFlash(platform_by_name("photon")), protected=True)
    with pytest.raises(ValueError, match="Device Protection"):  # security mode came with 6.0.0 (bootloader 3000)
        make_rig("boron", protected=True, bootloader_version=2700)
    assert make_rig("boron", protected=True, bootloader_version=3000).dfu.protection_state() == "protected"


def test_service_mode_writes_and_0xfb_ends_it():
    rig = make_rig("boron", protected=True, service_mode=True)
    rig.dfu.write(0x30000, module_bytes(8 * KIB))
    assert rig.peer.flash.read(0, 0x30000, 8 * KIB) == module_bytes(8 * KIB)
    rig.device.usb_control(0x21, 6, 0, 0, b"")
    rig.device.usb_control(0x21, 1, 0, 0, bytes([DfuseCommand.CLEAR_SECURITY_MODE_OVERRIDE]))
    rig.device.usb_control(0xA1, 3, 0, 0, 6)
    assert rig.device.protection_string() == "sm=p"


# --- faults and recovery -------------------------------------------------------------------------------


def stall_dnloads(times: int):
    left = times

    def fault(name: str) -> str | None:
        nonlocal left
        if name == "DNLOAD" and left > 0:
            left -= 1
            return "stall"
        return None

    return fault


def test_stalled_dnload_is_retried_a_second_later():
    rig = make_rig("boron", fault=stall_dnloads(2))
    start = rig.clock.now()
    data = module_bytes(16 * KIB)
    rig.dfu.write(0x30000, data)
    assert rig.peer.flash.read(0, 0x30000, len(data)) == data
    assert rig.dfu.stats.retries == 2
    assert rig.clock.now() - start == pytest.approx(rig.device.stats.busy_s + 2 * STALL_RETRY_DELAY_S)


def test_a_stall_that_persists_fails_after_four_retries():
    rig = make_rig("boron", fault=stall_dnloads(100))
    start = rig.clock.now()
    with pytest.raises(DfuError, match="stalled 5 times"):
        rig.dfu.write(0x30000, module_bytes(4 * KIB))
    assert rig.clock.now() - start == pytest.approx(4 * STALL_RETRY_DELAY_S)


def every_nth(n: int, fault: str):
    count = 0

    def hook(name: str) -> str | None:
        nonlocal count
        count += 1
        return fault if count % n == 0 else None

    return hook


@pytest.mark.parametrize(("fault", "n"), [("io", 7), ("lost", 5), ("stall", 9), ("timeout", 50)])
def test_flaky_transfers_are_recovered(fault, n):
    rig = make_rig("boron", fault=every_nth(n, fault))
    data = module_bytes(64 * KIB, seed=n)
    rig.dfu.write(0x30000, data)
    assert rig.peer.flash.read(0, 0x30000, len(data)) == data
    assert rig.dfu.stats.retries >= 1
    assert rig.device.stats.faults[fault] >= 1


def test_device_gone_mid_write():
    rig = make_rig("boron")
    count = 0

    def drop(name: str) -> str | None:
        nonlocal count
        count += 1
        if count == 40:
            rig.peer.attached = False  # out of DFU for good
            return "gone"
        return None

    rig.device.fault = drop
    with pytest.raises(DfuDisconnected):
        rig.dfu.write(0x30000, module_bytes(64 * KIB))


def test_leave_counts_a_disconnect_as_success():
    rig = make_rig("boron")
    rig.dfu.write(0x30000, module_bytes(4 * KIB))
    rig.device.fault = lambda name: "gone" if name == "GETSTATUS" else None
    assert rig.dfu.leave() is False  # unconfirmed, but not an error
    assert rig.device.stats.transfers["DNLOAD"] > 0


def test_dfu_error_left_by_an_earlier_session_is_cleared():
    rig = make_rig("boron")
    rig.device.inject_error(DfuStatus.ERR_WRITE)
    rig.dfu.write(0x30000, b"after an error")
    names = [(t.bm, t.request) for t in rig.peer.log if t.bm in (0x21, 0xA1)]
    assert names[:3] == [(0xA1, 3), (0x21, 4), (0xA1, 3)]  # GETSTATUS, CLRSTATUS, GETSTATUS
    assert rig.peer.flash.read(0, 0x30000, 14) == b"after an error"


def test_stray_state_is_aborted():
    rig = make_rig("boron")
    rig.device.usb_control(0xA1, 2, 0, 0, 16)  # someone else's GET_COMMANDS ...
    rig.device.usb_control(0x21, 1, 0, 0, bytes([0x21, 0, 0, 4, 0]))  # ... and a SET_ADDRESS left unfinished
    assert rig.device.state == DfuState.DNLOAD_SYNC
    rig.dfu.write(0x30000, b"ok")
    assert rig.peer.flash.read(0, 0x30000, 2) == b"ok"


# --- safe mode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protected", [False, True])
def test_enter_safe_mode(protected):
    rig = make_rig("boron", protected=protected)
    assert rig.dfu.get_commands() == bytes([0x00, 0x21, 0x41, 0xFA, 0xFB])
    at = rig.clock.now()
    assert rig.dfu.enter_safe_mode() is True
    rig.clock.sleep(1.0)
    assert rig.peer.resets == [(pytest.approx(at + RESET_AFTER_MANIFEST_S), "safe-mode")]


def test_safe_mode_request_whose_reply_is_lost_still_counts():
    rig = make_rig("boron")
    rig.dfu.get_commands()
    rig.device.fault = lambda name: "lost" if name == "DNLOAD" else None
    assert rig.dfu.enter_safe_mode() is True
    rig.clock.sleep(1.0)
    assert [why for _, why in rig.peer.resets] == ["safe-mode"]


def test_gen2_has_no_safe_mode_command():
    rig = make_rig("photon")
    with pytest.raises(DfuUnsupported):
        rig.dfu.enter_safe_mode()
    assert not any(t.value == 0 and t.data[:1] == b"\xfa" for t in rig.peer.dnloads())


# --- the flash itself --------------------------------------------------------------------------------


def test_flash_is_sparse():
    tracker = platform_by_name("tracker")  # 8 MB external flash
    flash = SimFlash(tracker)
    assert flash.memory_map(2).segments[-1].end - 0x80000000 == 8 * 1024 * KIB
    assert flash.allocated_bytes() == 0
    assert flash.read(2, 0x80000000, 16) == b"\xff" * 16
    flash.write(2, 0x807FF000, b"\x00")
    flash.write(2, 0x80001000, b"\xff" * 4096)  # erased bytes over erased bytes cost nothing
    assert flash.allocated_bytes() == 4096
    flash.erase(2, 0x807FF800)
    assert flash.allocated_bytes() == 0


def test_flash_nor_rules():
    flash = SimFlash(platform_by_name("boron"))
    flash.write(0, 0x30000, b"\xf0\x0f")
    flash.write(0, 0x30000, b"\xf0\x0f\x55")  # the same bytes again, and an erased one: fine
    with pytest.raises(FlashError) as verify:
        flash.write(0, 0x30000, b"\xff")  # 0xF0 -> 0xFF needs bits to rise
    assert verify.value.status == DfuStatus.ERR_VERIFY
    with pytest.raises(FlashError) as write:
        flash.write(0, 0x30001, b"\x0e")  # only clears bits, but over programmed flash
    assert write.value.status == DfuStatus.ERR_WRITE
    assert flash.read(0, 0x30000, 3) == b"\xf0\x0e\x55"  # bits were cleared anyway, as NOR does
    with pytest.raises(FlashError) as outside:
        flash.write(0, 0xFFFFF, b"\x00\x00")
    assert outside.value.status == DfuStatus.ERR_ADDRESS
    assert flash.read(0, 0xFFFFF, 1) == b"\xff"  # nothing of a refused write lands
    assert flash.erase(0, 0x30FFF).start == 0x30000
    assert flash.is_erased(0, 0x30000, 4096)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["write", "erase"]), st.integers(0, 5 * 4096), st.binary(min_size=1, max_size=300)),
        max_size=12,
    )
)
def test_flash_matches_a_plain_model(ops):
    """Whatever happens, the flash holds what a byte-array NOR model holds."""
    flash = SimFlash(platform_by_name("boron"))
    base, model = 0x40000, bytearray(b"\xff" * 6 * 4096)
    for op, offset, data in ops:
        if op == "erase":
            start = offset // 4096 * 4096
            model[start : start + 4096] = b"\xff" * 4096
            flash.erase(0, base + offset)
            continue
        old = model[offset : offset + len(data)]
        ok = all(o in (0xFF, n) for o, n in zip(old, data, strict=True))
        model[offset : offset + len(data)] = bytes(o & n for o, n in zip(old, data, strict=True))
        try:
            flash.write(0, base + offset, data)
            assert ok
        except FlashError:
            assert not ok
    assert flash.read(0, base, len(model)) == bytes(model)


def test_plan_write_names_the_sectors():
    boron = platform_by_name("boron").memory_map(0)
    assert [s.start for s in plan_write(boron, 0x30FFF, 2)] == [0x30000, 0x31000]
    with pytest.raises(DfuAddressError):
        plan_write(boron, 0xFFFFF, 2)
    protected = parse_memory_map(protected_alt_string(platform_by_name("p2").dfu_alts[0]))
    with pytest.raises(DfuProtected):
        plan_write(protected, 0x08060000, 16)


# --- bootloaders by version (firmware.platforms.BOOTLOADERS) ---------------------------------------------


@pytest.mark.parametrize(
    ("platform", "bootloader", "commands", "string"),
    [
        ("boron", 2700, "00 21 41", None),  # 5.9.0
        ("boron", 3000, "00 21 41", None),  # 6.0.0 and 6.1.0: security mode, no 0xFA yet
        ("boron", 3001, "00 21 41 fa", None),  # 6.1.1: ENTER_SAFE_MODE
        ("boron", 3002, "00 21 41 fa", None),  # 6.1.2
        ("boron", 3100, "00 21 41 fa fb", "sm=o"),  # 6.2.0: CLEAR_SECURITY_MODE_OVERRIDE and string 0xFA
        ("p2", 3001, "00 21 41 fa", None),
        ("p2", 3100, "00 21 41 fa fb", "sm=o"),
        ("photon", 1006, "00 21 41", None),  # ST's DfuSe set, whatever the version
    ],
)
def test_get_commands_and_string_0xfa_follow_the_bootloader_version(platform, bootloader, commands, string):
    rig = make_rig(platform, bootloader_version=bootloader)
    assert rig.dfu.get_commands().hex(" ") == commands
    assert rig.device.string_descriptor(0xFA) == string


def test_a_6_1_1_bootloader_refuses_the_0xfb_command():
    """0xFB is not among a 6.1.1 bootloader's commands: it answers errSTALLEDPKT, as to any unknown one."""
    rig = make_rig("boron", bootloader_version=3001, open_=False)
    dev = rig.device
    dev.usb_control(0x21, 1, 0, 0, bytes([DfuseCommand.CLEAR_SECURITY_MODE_OVERRIDE]))
    dev.usb_control(0xA1, 3, 0, 0, 6)
    reply = DfuGetStatus.parse(dev.usb_control(0xA1, 3, 0, 0, 6))
    assert (reply.status, reply.state) == (DfuStatus.ERR_STALLEDPKT, DfuState.ERROR)


def test_a_6_1_0_bootloader_has_no_safe_mode_command():
    rig = make_rig("boron", bootloader_version=3000)
    with pytest.raises(DfuUnsupported):
        rig.dfu.enter_safe_mode()
    assert rig.dfu.write(0x30000, b"still a DFU device") is None


# --- Gen2: ST's DfuSe state machine (usbd_dfu_core.c, v2.3.1) ---------------------------------------------


def test_gen2_clrstatus_outside_the_error_state_does_not_stall():
    """DFU_Req_CLRSTATUS outside dfuERROR: dfuERROR with errUNKNOWN, and the request completes."""
    dev = make_rig("photon", open_=False).device
    assert dev.usb_control(0x21, 4, 0, 0, b"") == 0
    assert (dev.state, dev.status) == (DfuState.ERROR, DfuStatus.ERR_UNKNOWN)
    dev.usb_control(0x21, 4, 0, 0, b"")  # and out of it again
    assert (dev.state, dev.status) == (DfuState.IDLE, DfuStatus.OK)


def test_gen2_abort_in_the_error_state_is_ignored():
    """DFU_Req_ABORT outside its five states does nothing: no stall, still dfuERROR."""
    dev = make_rig("photon", open_=False).device
    dev.usb_control(0x21, 4, 0, 0, b"")
    assert dev.usb_control(0x21, 6, 0, 0, b"") == 0
    assert dev.state == DfuState.ERROR
    assert dev.usb_control(0xA1, 5, 0, 0, 1) == bytes([DfuState.ERROR])  # GETSTATE answers in every state


def test_gen3_stalls_both():
    """The Particle bootloaders stall the same two requests (nRF52840 usbd_dfu.cpp setError)."""
    dev = make_rig("boron", open_=False).device
    with pytest.raises(SimUsbStall):
        dev.usb_control(0x21, 4, 0, 0, b"")
    with pytest.raises(SimUsbStall):
        dev.usb_control(0x21, 6, 0, 0, b"")


def test_gen2_dnload_in_the_wrong_state_stalls_and_changes_nothing():
    rig = make_rig("photon", open_=False)
    dev = rig.device
    dev.usb_control(0xA1, 2, 2, 0, 16)  # an UPLOAD: dfuUPLOAD_IDLE
    with pytest.raises(SimUsbStall):
        dev.usb_control(0x21, 1, 2, 0, b"\x00" * 16)
    assert (dev.state, dev.status) == (DfuState.UPLOAD_IDLE, DfuStatus.OK)  # Gen3 would be in dfuERROR


def test_gen2_get_commands_lists_three_and_leaves_idle_for_a_long_read():
    dev = make_rig("photon", open_=False).device
    assert dev.usb_control(0xA1, 2, 0, 0, 16).hex(" ") == "00 21 41"
    assert dev.state == DfuState.IDLE  # wLength > 3
    assert dev.usb_control(0xA1, 2, 0, 0, 3).hex(" ") == "00 21 41"
    assert dev.state == DfuState.UPLOAD_IDLE


def test_gen2_upload_block_1_leaves_a_state_no_dfu_state_has():
    """ST's DFU_Req_UPLOAD stores STATUS_ERRSTALLEDPKT (15) as the state for block 1, and stalls; CLRSTATUS
    (twice) gets it back."""
    dev = make_rig("photon", open_=False).device
    with pytest.raises(SimUsbStall):
        dev.usb_control(0xA1, 2, 1, 0, 16)
    assert DfuGetStatus.parse(dev.usb_control(0xA1, 3, 0, 0, 6)).state == 15
    dev.usb_control(0x21, 4, 0, 0, b"")
    dev.usb_control(0x21, 4, 0, 0, b"")
    assert dev.state == DfuState.IDLE


def _particle_usb_read_back(dev: SimDfuDevice, address: int, length: int) -> bytes:
    """particle-usb's doUpload after a write, request by request (src/dfu.js 4.2.0): state not dfuIDLE ->
    CLRSTATUS then abortToIdle (ABORT, GETSTATUS, CLRSTATUS if dfuERROR, GETSTATUS must say dfuIDLE);
    SET_ADDRESS_POINTER (DNLOAD, GETSTATUS until not dfuDNBUSY); abortToIdle; UPLOAD from block 2."""

    def status() -> DfuGetStatus:
        return DfuGetStatus.parse(dev.usb_control(0xA1, 3, 0, 0, 6))

    def abort_to_idle() -> None:
        dev.usb_control(0x21, 6, 0, 0, b"")
        if status().state == DfuState.ERROR:
            dev.usb_control(0x21, 4, 0, 0, b"")
        assert status().state == DfuState.IDLE, "Failed to return to idle state after abort"

    if status().state != DfuState.IDLE:
        dev.usb_control(0x21, 4, 0, 0, b"")
        abort_to_idle()
    dev.usb_control(0x21, 1, 0, 0, bytes([0x21]) + address.to_bytes(4, "little"))
    while (reply := status()).state == DfuState.DNBUSY:
        pass
    assert reply.status == DfuStatus.OK
    abort_to_idle()
    return dev.usb_control(0xA1, 2, 2, 0, length)


def test_particle_usb_reads_back_what_it_wrote_on_a_photon():
    """The sequence the issue found failing on the simulated Photon (its CLRSTATUS stalled)."""
    rig = make_rig("photon")
    rig.dfu.write(0x08020000, b"written by the kiosk", verify=False)
    assert rig.device.state == DfuState.DNLOAD_IDLE
    assert _particle_usb_read_back(rig.device, 0x08020000, 20) == b"written by the kiosk"


def test_gen2_work_holds_the_getstatus_that_announced_it():
    """ST does the erase in EP0_TxSent, before the status stage of the GETSTATUS answering dfuDNBUSY: that
    GETSTATUS takes the erase time, the next one none (Gen3 holds the next request instead)."""
    for platform, first, second in (("photon", 1.0, 0.0), ("boron", 0.0, 0.085)):
        rig = make_rig(platform, open_=False)
        dev, clock = rig.device, rig.clock
        address = SYSTEM_PART_1[platform]
        dev.usb_control(0x21, 1, 0, 0, bytes([0x41]) + address.to_bytes(4, "little"))
        at = clock.now()
        dev.usb_control(0xA1, 3, 0, 0, 6)
        took = clock.now() - at
        dev.usb_control(0xA1, 3, 0, 0, 6)
        assert (took, clock.now() - at - took) == (pytest.approx(first), pytest.approx(second)), platform


@pytest.mark.parametrize("platform", ["photon", "boron"])
def test_a_leave_lost_on_the_wire_is_sent_again(platform):
    """The zero-length DNLOAD garbled before the device saw it: the device is still in dfuDNLOAD_IDLE, which a
    Gen2 bootloader also reports while it manifests. The client asks GETSTATE (ST answers the real state) and
    sends the leave again; the device then resets."""
    rig = make_rig(platform)
    rig.dfu.write(SYSTEM_PART_1[platform], b"data")
    lost = iter([True])

    def fault(name: str) -> str | None:
        return "io" if name == "DNLOAD" and next(lost, False) else None

    rig.device.fault = fault
    rig.dfu.leave()
    rig.clock.sleep(1.0)
    assert [why for _, why in rig.peer.resets] == ["manifest"]
    assert rig.device.stats.commands["leave"] == 1


@pytest.mark.parametrize("platform", ["photon", "boron"])
def test_the_status_after_a_leave_lost_on_the_wire_is_asked_again(platform):
    """The device manifests only once the GETSTATUS after the leave arrives (dfuMANIFEST_SYNC until then): a
    garbled one is asked again, or the device would sit in DFU for good."""
    rig = make_rig(platform)
    rig.dfu.write(SYSTEM_PART_1[platform], b"data")
    state = {"left": False, "lost": False}

    def fault(name: str) -> str | None:
        if name == "DNLOAD":
            state["left"] = True
        elif name == "GETSTATUS" and state["left"] and not state["lost"]:
            state["lost"] = True
            return "io"
        return None

    rig.device.fault = fault
    assert rig.dfu.leave() is True
    rig.clock.sleep(1.0)
    assert [why for _, why in rig.peer.resets] == ["manifest"]
