"""Scenarios: what is wrong with a simulated device, as data (DESIGN.md's scenario table).

A scenario says which Device OS release and app the device has, which modules are missing or
corrupt, and which faults it shows. ``build_device(name, platform, clock)`` makes the device.
Every scenario exists for every platform that has a synthetic release (Gen2, Gen3, rtl872x), so at
least for Boron, Photon and P2. Names are stable: the demo, the tests and the benchmarks use them.

    >>> from hw.clock import VirtualClock
    >>> device = build_device("app-crash", "boron", VirtualClock())
    >>> device.faults.app_panic, device.platform.name
    (1, 'boron')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from firmware.platforms import Function, Platform, platform_by_name

if TYPE_CHECKING:
    from hw.clock import VirtualClock
    from hw.sim.device import SimDevice

# The device model and the module builder are imported where a device is built: the catalogue alone
# (names, what each models) is read at the touchscreen's start, before its first frame.

#: The release each MCU family runs unless a scenario says otherwise, and an old one.
CURRENT_RELEASE = {"stm32f2xx": "2.3.0", "nrf52840": "6.1.1", "rtl872x": "6.2.0"}
OLD_RELEASE = {"stm32f2xx": "1.5.2", "nrf52840": "1.5.2", "rtl872x": "5.0.0"}
#: An earlier release whose bootloader is older than the current system part needs.
PREVIOUS_RELEASE = {"stm32f2xx": "1.5.2", "nrf52840": "5.9.0", "rtl872x": "5.9.0"}


@dataclass(frozen=True)
class Scenario:
    """One way a device can be broken, and what should fix it."""

    name: str
    models: str  # what the simulated device does
    fix: str  # what should fix it (the verdict the recovery ladder should reach)
    release: str = "current"  # "current", "previous" or "old"
    app: str = "tinker"  # "tinker", "app" (a customer app), "needs-newer" (an app built for the current Device OS)
    corrupt: tuple[tuple[int, int], ...] = ()  # (function, index) whose bytes are damaged
    missing: tuple[tuple[int, int], ...] = ()
    old_bootloader: bool = False  # a bootloader older than the system part needs
    faults: dict = field(default_factory=dict)  # Faults fields


SYSTEM = (Function.SYSTEM_PART, 1)
BOOTLOADER = (Function.BOOTLOADER, 0)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("healthy", "runs Tinker; white, then blinking green for ever (the bench has no network)",
                 "nothing: verdict healthy, nothing written"),
        Scenario("cold-boot-fixes", "hung with a solid LED until power is removed", "cold boot",
                 faults={"hung_until_power_cycle": True}),
        Scenario("app-crash", "user app hard-faults (SOS 1) two seconds after boot, over and over",
                 "safe mode works, so Tinker", app="app", faults={"app_panic": 1}),
        Scenario("app-heap", "user app panics with SOS 8 (out of heap)", "safe mode works, so Tinker",
                 app="app", faults={"app_panic": 8}),
        Scenario("frozen", "solid cyan, USB serial present, control requests time out", "safe mode, Tinker",
                 app="app", faults={"frozen": True}),
        Scenario("deps-mismatch", "user app needs a newer Device OS: the device sits in safe mode",
                 "Device OS update", release="previous", app="needs-newer"),
        Scenario("old-bootloader", "system part needs a newer bootloader: safe mode",
                 "update including the bootloader", old_bootloader=True),
        Scenario("corrupt-system", "system part fails its CRC: the bootloader falls into DFU (blinking yellow)",
                 "update", corrupt=(SYSTEM,)),
        Scenario("drops-dfu", "leaves DFU after the first module written", "re-enter DFU, carry on",
                 corrupt=(SYSTEM,), faults={"drops_dfu_after_writes": 1}),
        Scenario("tinker-first", "update only takes after Tinker was written first", "the second try, other order",
                 release="previous", app="needs-newer", faults={"needs_tinker_first": True}),
        Scenario("flaky-cable", "one USB transfer in N fails", "retries; the report names the cable",
                 corrupt=(SYSTEM,), faults={"flaky_transfer_every": 7}),
        Scenario("battery-fitted", "a LiPo keeps it running when VBUS is cut; otherwise like cold-boot-fixes",
                 "notice that cold boot did not cut power; EN pin where wired, else ask the technician to unplug "
                 "the battery", faults={"hung_until_power_cycle": True, "battery": True}),
        Scenario("gen2-old", "old Device OS (1.5 on a Photon): control requests for DFU unreliable; app crashes",
                 "buttons or the 14400 baud trick", release="old", app="app",
                 faults={"app_panic": 1, "control_unreliable": True}),
        Scenario("protected", "Device Protection on: DFU segments erase-only, control requests answer "
                 "DEVICE_PROTECTED; app crashes", "nothing can be written offline: verdict names service mode "
                 "from the product's owner; nothing written", app="app", faults={"app_panic": 1, "protected": True}),
        Scenario("missing-bootloader", "no LED, no USB", "SWD restore", missing=(BOOTLOADER,)),
        Scenario("dead", "nothing answers, SWD neither",
                 "verdict: damaged hardware, with the checklist", faults={"dead": True}),
    )
}  # fmt: skip


class UnknownScenarioError(LookupError):
    pass


def parse_simulate(spec: str) -> list[tuple[str, str]]:
    """``app-crash@p2,healthy`` -> [("app-crash", "p2"), ("healthy", "boron")]; raises with the known names."""
    slots = []
    for part in spec.split(","):
        name, _, platform = part.strip().partition("@")
        if name not in SCENARIOS:
            raise UnknownScenarioError(
                f"unknown scenario {name!r}; `kiosk scenarios` lists them: {', '.join(SCENARIOS)}"
            )
        platform = platform or "boron"
        platform_by_name(platform)  # raises UnknownPlatformError with the known names
        slots.append((name, platform))
    return slots


def device_id_for(scenario: str, platform: str, slot: int) -> str:
    """A stable 24-hex device id, different per slot."""
    import hashlib

    return hashlib.sha256(f"{scenario}@{platform}#{slot}".encode()).hexdigest()[:24]


def _damage(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    return bytes(damaged)


def build_device(name: str, platform: str | Platform, clock: VirtualClock, slot: int = 0) -> SimDevice:
    """A simulated device in the state the scenario describes (not yet powered)."""
    from firmware.builder import build_module
    from firmware.module import parse_module
    from firmware.releases import synthetic_release
    from firmware.versions import system_version_for
    from hw.sim.device import Faults, SimDevice
    from hw.sim.flash import SimFlash

    scenario = SCENARIOS[name]
    p = platform if isinstance(platform, Platform) else platform_by_name(platform)
    family = p.mcu.name
    if family not in CURRENT_RELEASE:
        raise UnknownScenarioError(f"the simulator has no {p.name} ({family}); try boron, photon or p2")
    release = {"old": OLD_RELEASE, "previous": PREVIOUS_RELEASE}.get(scenario.release, CURRENT_RELEASE)[family]
    files = synthetic_release(p, release, tinker=scenario.app == "tinker")
    if scenario.old_bootloader:
        previous = synthetic_release(p, PREVIOUS_RELEASE[family], tinker=False)
        files[f"{p.name}-bootloader@{release}.bin"] = previous[f"{p.name}-bootloader@{PREVIOUS_RELEASE[family]}.bin"]
    system = system_version_for(release) or 0
    if scenario.app in ("app", "needs-newer"):
        # "needs-newer": built for the current release, which this device (on an earlier one) lacks
        needs = system_version_for(CURRENT_RELEASE[family]) if scenario.app == "needs-newer" else system
        app_dep = (Function.SYSTEM_PART, 2 if family == "stm32f2xx" else 1, needs)
        app_index = 2 if family == "nrf52840" and system >= 3100 else 1
        files[f"{p.name}-customer-app.bin"] = build_module(
            platform_id=p.id, function=Function.USER_PART, version=6, index=app_index,
            dependencies=[app_dep], body_size=6000, seed=42,
        )  # fmt: skip
    flash = SimFlash(p)
    device = SimDevice(p, clock, device_id_for(name, p.name, slot), flash, Faults(**scenario.faults))
    for data in files.values():
        module = parse_module(data)
        key = (module.function, module.index)
        if key in scenario.missing:
            continue
        device.install(_damage(data) if key in scenario.corrupt else data)
    device.rescan()
    device.faulty_app = files.get(f"{p.name}-customer-app.bin")
    return device
