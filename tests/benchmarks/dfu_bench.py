"""Figures for the DFU client: a system part as large as the real one written to a simulated Boron, Photon and P2.

Run with ``python -m tests.benchmarks.dfu_bench``. Each run goes through the real client, pyusb,
the simulator's pyusb backend and the simulated bootloader (tests/test_dfu.py's rig) on a virtual
clock, so device seconds are the device's own flash times (hw/sim/flash.py) and the host CPU is
measured with ``time.process_time``. It prints figures; it asserts nothing. Each platform writes a module as
large as its demo release's real system-part1 (firmware/release_sizes.py: Boron 6.1.1 538,948 bytes, Photon
2.3.0 241,496, P2 6.2.0 1,219,048).

- transfers/KiB: USB control transfers the client made per KiB written (write + verify + leave);
- DNLOAD/block: data DNLOADs per 4096-byte block (1 means no block was split or repeated);
- elapsed/busy: device time the write took over the time the device was busy erasing and
  programming (1.00 means the client never made the device wait for it);
- host CPU/MiB: the client's process time per MiB, with the simulated device's share taken out
  (the simulator runs in the same process, inside the client's USB calls).
"""

from __future__ import annotations

import time

from firmware.builder import build_module
from firmware.module import parse_module
from firmware.platforms import Function, platform_by_name
from firmware.release_sizes import real_size
from hw.dfu import DEVICE_BLOCK_SIZE
from kiosk.demo_library import DEMO_RELEASES
from tests.test_dfu import make_rig

PLATFORMS = ("boron", "photon", "p2")
FLAKY_EVERY = 50  # one transfer in N fails with an I/O error, for the flaky-cable line


def real_system_part_size(platform: str) -> int:
    """Bytes of the real system-part1 of the platform's demo release (firmware/release_sizes.py)."""
    p = platform_by_name(platform)
    return real_size(p, DEMO_RELEASES[p.mcu.name][0], "system-part1").size


def system_part(platform: str, size: int | None = None) -> tuple[int, bytes]:
    """A sound system-part 1 module of exactly ``size`` bytes (default: the real one's) and the address DFU writes it
    to."""
    size = real_system_part_size(platform) if size is None else size
    platform_id = platform_by_name(platform).id
    overhead = len(build_module(platform_id=platform_id, function=Function.SYSTEM_PART, index=1, version=6101,
                                body_size=0))  # fmt: skip
    data = build_module(
        platform_id=platform_id, function=Function.SYSTEM_PART, index=1, version=6101, body_size=size - overhead
    )
    return parse_module(data).start_address, data


def run(platform: str, *, flaky: bool = False) -> dict[str, float]:
    address, data = system_part(platform)
    fault = None
    if flaky:
        count = 0

        def fault(name: str) -> str | None:
            nonlocal count
            count += 1
            return "io" if count % FLAKY_EVERY == 0 else None

    rig = make_rig(platform, fault=fault)
    wall = time.perf_counter()
    start = rig.clock.now()
    rig.dfu.write(address, data)
    elapsed = rig.clock.now() - start
    rig.dfu.leave()
    wall = time.perf_counter() - wall
    client, device = rig.dfu.stats, rig.device.stats
    blocks = -(-len(data) // DEVICE_BLOCK_SIZE)
    mib = len(data) / (1024 * 1024)
    return {
        "bytes": len(data),
        "transfers": client.total_transfers,
        "transfers_per_kib": client.total_transfers / (len(data) / 1024),
        "dnload_per_block": sum(1 for t in rig.peer.data_blocks()) / blocks,
        "set_address": client.commands["SET_ADDRESS_POINTER"],
        "erases": client.commands["ERASE"],
        "getstatus": client.transfers["GETSTATUS"],
        "retries": client.retries,
        "busy_s": device.busy_s,
        "erase_s": device.erase_s,
        "write_s": device.write_s,
        "elapsed_s": elapsed,
        "ratio": elapsed / device.busy_s if device.busy_s else float("nan"),
        "cpu_per_mib": (client.cpu_s - device.cpu_s) / mib,
        "cpu_with_sim_per_mib": client.cpu_s / mib,
        "flash_s_per_mib": device.busy_s / mib,
        "wall_s": wall,
    }


def main() -> None:
    print("DFU: each platform's real-size system-part1, write + read-back verify + leave, on the simulated bus")
    header = (
        f"{'platform':<16}{'bytes':>9}{'xfers':>7}{'xfers/KiB':>10}{'DNLOAD/blk':>11}{'SET_ADDR':>9}{'ERASE':>7}"
        f"{'busy s':>9}{'elapsed s':>10}{'el/busy':>8}{'CPU s/MiB':>10}{'+sim':>8}{'flash s/MiB':>12}{'wall s':>8}"
    )
    print(header)
    for platform in PLATFORMS:
        for flaky in (False, True):
            r = run(platform, flaky=flaky)
            label = platform + (f" 1/{FLAKY_EVERY} io" if flaky else "")
            print(
                f"{label:<16}{r['bytes']:>9}{r['transfers']:>7}{r['transfers_per_kib']:>10.2f}{r['dnload_per_block']:>11.2f}"
                f"{r['set_address']:>9}{r['erases']:>7}{r['busy_s']:>9.3f}{r['elapsed_s']:>10.3f}{r['ratio']:>8.3f}"
                f"{r['cpu_per_mib']:>10.4f}{r['cpu_with_sim_per_mib']:>8.4f}{r['flash_s_per_mib']:>12.2f}"
                f"{r['wall_s']:>8.3f}"
            )
    print("busy s: device erase + program time by hw/sim/flash.py's table; el/busy: elapsed device time / busy")
    print("CPU s/MiB: host CPU of the client + pyusb + backend; +sim: with the simulated device's share")


if __name__ == "__main__":
    main()
