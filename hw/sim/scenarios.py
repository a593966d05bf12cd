"""Scenarios: what is wrong with a simulated device, as data (DESIGN.md's scenario table).

A scenario says which Device OS release and app the device has, which modules are missing or
corrupt, and which faults it shows. ``build_device(name, platform, clock)`` makes the device.
Scenarios exist for every platform that has a synthetic release (Gen2, Gen3, rtl872x), so at
least for Boron, Photon and P2, each on a Device OS release that platform really had
(``firmware.versions.PLATFORM_RELEASES``: a Xenon runs 1.5.2, its last release). Where a scenario
cannot happen on a platform (Device Protection on a Photon, whose last Device OS is 3.3.1) it says
why (:func:`refusal`) and ``parse_simulate``/``build_device`` refuse it. Names are stable: the
demo, the tests and the benchmarks use them.

    >>> from hw.clock import VirtualClock
    >>> device = build_device("app-crash", "boron", VirtualClock())
    >>> device.faults.app_panic, device.platform.name
    (1, 'boron')
    >>> refusal("protected", "photon")[:40]
    'Device Protection needs a bootloader of '
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from firmware.platforms import (
    PLATFORMS,
    REPLACES_OLDER_BOOTLOADER,
    Function,
    Platform,
    bootloader_facts,
    platform_by_name,
)
from firmware.versions import (
    GEN2_RELIABLE_CONTROL_SINCE,
    bootloader_version_for,
    had_release,
    last_release,
    release_had,
    stable_release_before,
    system_version_for,
)

if TYPE_CHECKING:
    from hw.clock import VirtualClock
    from hw.sim.device import SimDevice

# The device model and the module builder are imported where a device is built: the catalogue alone
# (names, what each models) is read at the touchscreen's start, before its first frame.

#: The release each MCU family runs unless a scenario says otherwise, and an old one; a platform that never
#: had it runs the newest release it had before it (:func:`release_for`).
CURRENT_RELEASE = {"stm32f2xx": "2.3.0", "nrf52840": "6.1.1", "rtl872x": "6.2.0"}
OLD_RELEASE = {"stm32f2xx": "1.5.2", "nrf52840": "1.5.2", "rtl872x": "5.0.0"}
#: An earlier release whose bootloader is older than the current system part needs.
PREVIOUS_RELEASE = {"stm32f2xx": "1.5.2", "nrf52840": "5.9.0", "rtl872x": "5.9.0"}
_TABLES = {"current": CURRENT_RELEASE, "old": OLD_RELEASE, "previous": PREVIOUS_RELEASE}


def release_for(kind: str, platform: str | Platform) -> str | None:
    """The Device OS release a simulated ``platform`` runs for a scenario's ``kind`` of release ("current",
    "previous", "old"): the family's, where the platform had it, else the platform's newest release before
    it (for "previous": with a bootloader older than the current release's); None when there is none."""
    p = platform if isinstance(platform, Platform) else platform_by_name(platform)
    family = p.mcu.name
    if family not in CURRENT_RELEASE:
        return None
    wanted = _TABLES[kind][family]
    if kind == "current":
        return release_had(p.name, wanted)
    current = release_for("current", p)
    if current is None:
        return None
    if kind == "previous":
        ceiling = bootloader_version_for(current) or 0

        def older(name: str) -> bool:
            return (bootloader_version_for(name) or 0) < ceiling

        if had_release(p.name, wanted) and older(wanted):
            return wanted
        return stable_release_before(p.name, current, older)
    return release_had(p.name, wanted)


@dataclass(frozen=True)
class Requirement:
    """What a platform (running ``release``) must be for a scenario to happen there: ``holds(platform,
    release)``; ``reason`` (formatted with ``platform``, ``release`` and ``last``, the platform's last
    release) says why not, with its source."""

    holds: Callable[[Platform, str], bool]
    reason: str


def _protection(p: Platform, release: str) -> bool:
    facts = bootloader_facts(p, bootloader_version_for(release))
    return facts is not None and facts.protection


#: Device Protection lives in the bootloader (security mode) from Device OS 6.0.0 (bootloader 3000).
DEVICE_PROTECTION = Requirement(
    _protection,
    "Device Protection needs a bootloader of Device OS 6.0.0 or later (security mode: device-os "
    "bootloader/src/nRF52840/usbd_dfu_mal.cpp, tag v6.0.0); the {platform}'s last Device OS is {last}",
)
#: Particle's CLI distrusts control requests on Gen2 before 2.0.0; Gen3 and Gen4 answer them from 0.9.0 on.
GEN2_CONTROL = Requirement(
    lambda p, release: p.generation == 2,
    "it models Gen2 firmware before 2.0.0 (system " + str(GEN2_RELIABLE_CONTROL_SINCE) + "), whose control "
    "requests for DFU Particle's CLI does not trust (usb-serial-protocols.md 6); a {platform} is not Gen2 "
    "and answers them",
)
#: The Electron's Device OS writes its own bootloader over an older one at boot.
BOOTLOADER_STAYS = Requirement(
    lambda p, release: p.name not in REPLACES_OLDER_BOOTLOADER,
    "the {platform}'s Device OS carries its bootloader and writes it over an older one at boot, then "
    "resets (device-os hal/inc/bootloader_hal.h HAL_REPLACE_BOOTLOADER, hal/src/stm32f2xx/bootloader.cpp, "
    "tag v2.3.1): its bootloader is never older than its system part needs",
)


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
    #: (function, index) the bootloader must refuse: damaged (a write that stopped) where it checks CRCs, erased
    #: (an erase that stopped) where it reads only the header (Gen2: BootloaderFacts.verifies_crc)
    unbootable: tuple[tuple[int, int], ...] = ()
    faults: dict = field(default_factory=dict)  # Faults fields
    requires: tuple[Requirement, ...] = ()  # where it can happen at all


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
                 "update including the bootloader", old_bootloader=True, requires=(BOOTLOADER_STAYS,)),
        Scenario("corrupt-system", "system part 1 fails its CRC: a Gen3/Gen4 bootloader falls into DFU (blinking "
                 "yellow); a Gen2 one checks only the header and starts it, and Device OS, which checks "
                 "system part 2 at boot but not part 1, runs (its module table says part 1 fails)",
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
                 faults={"app_panic": 1, "control_unreliable": True}, requires=(GEN2_CONTROL,)),
        Scenario("protected", "Device Protection on: DFU segments erase-only, control requests answer "
                 "DEVICE_PROTECTED; app crashes", "nothing can be written offline: verdict names service mode "
                 "from the product's owner; nothing written", app="app", faults={"app_panic": 1, "protected": True},
                 requires=(DEVICE_PROTECTION,)),
        # An update that stopped in the system part: nothing the bootloader accepts, so DFU on every family, under
        # a bootloader of an earlier release. From the sources, a system part whose bootloader dependency is
        # unmet still runs: the bootloaders check header, platform and CRC only (BootloaderFacts: dfu_usb.c
        # is_application_valid), Device OS drops to safe mode, and app_setup_and_loop applies a pending update in
        # safe mode too, "to ensure we don't remain in Safe Mode due to bootloader dependency checks" (device-os
        # system/src/main.cpp, v6.2.0). So DFU alone recovers it, without Device OS running first: the system part
        # over DFU, the bootloader into the OTA region with the flag; the new system part applies it at boot.
        Scenario("dfu-only-old-bootloader", "reaches only DFU: an update stopped in its system part (damaged where "
                 "the bootloader checks CRCs, erased on Gen2) and its bootloader is older than the release's system "
                 "part needs", "bootloader over DFU into the OTA region + the pending-update flag, as Device "
                 "Restore USB does", unbootable=(SYSTEM,), old_bootloader=True, requires=(BOOTLOADER_STAYS,)),
        Scenario("missing-bootloader", "no LED, no USB", "SWD restore", missing=(BOOTLOADER,)),
        Scenario("dead", "nothing answers, SWD neither",
                 "verdict: damaged hardware, with the checklist", faults={"dead": True}),
    )
}  # fmt: skip


class UnknownScenarioError(LookupError):
    pass


class ScenarioRefused(UnknownScenarioError):
    """The scenario cannot happen on that platform (the message says why)."""


def simulator_refusal(platform: str | Platform) -> str | None:
    """Why the simulator has no device of this platform at all, or None."""
    p = platform if isinstance(platform, Platform) else platform_by_name(platform)
    if p.mcu.name not in CURRENT_RELEASE:
        return f"the simulator has no {p.name} ({p.mcu.name}); try boron, photon or p2"
    if release_for("current", p) is None:
        return (f"no Device OS release of the kiosk's table was made for the {p.name} (device-os .buildpackrc "
                f"to v6.2.0), so the simulator has none to run")  # fmt: skip
    return None


def _refusal(name: str, p: Platform) -> str | None:
    """Why scenario ``name`` cannot happen on ``p``, with ``{platform}`` where its name goes."""
    whole = simulator_refusal(p)
    if whole is not None:
        return whole.replace(p.name, "{platform}")
    scenario = SCENARIOS[name]
    release = release_for(scenario.release, p)
    for requirement in scenario.requires:
        if not requirement.holds(p, release or release_for("current", p)):
            return requirement.reason.format(platform="{platform}", release=release, last=last_release(p.name))
    if release is None or (scenario.old_bootloader and release_for("previous", p) is None):
        return "the {platform} had no earlier Device OS release with an older bootloader to start from"
    return None


def refusal(name: str, platform: str | Platform) -> str | None:
    """Why scenario ``name`` cannot happen on ``platform`` (None: it can)."""
    p = platform if isinstance(platform, Platform) else platform_by_name(platform)
    reason = _refusal(name, p)
    return reason.format(platform=p.name) if reason is not None else None


def simulated_platforms() -> tuple[Platform, ...]:
    """The platforms the simulator has devices of."""
    return tuple(p for p in PLATFORMS if p.supported and simulator_refusal(p) is None)


def refusals(name: str) -> dict[str, tuple[str, ...]]:
    """For ``kiosk scenarios``: each reason scenario ``name`` cannot happen, with the simulated platforms
    it applies to."""
    out: dict[str, list[str]] = {}
    for p in simulated_platforms():
        reason = _refusal(name, p)
        if reason is not None:
            out.setdefault(reason, []).append(p.name)
    return {reason: tuple(names) for reason, names in out.items()}


def parse_simulate(spec: str) -> list[tuple[str, str]]:
    """``app-crash@p2,healthy`` -> [("app-crash", "p2"), ("healthy", "boron")]; raises with the known names,
    or ScenarioRefused where the scenario cannot happen on that platform."""
    slots = []
    for part in spec.split(","):
        name, _, platform = part.strip().partition("@")
        if name not in SCENARIOS:
            raise UnknownScenarioError(
                f"unknown scenario {name!r}; `kiosk scenarios` lists them: {', '.join(SCENARIOS)}"
            )
        platform = platform or "boron"
        platform_by_name(platform)  # raises UnknownPlatformError with the known names
        reason = refusal(name, platform)
        if reason is not None:
            raise ScenarioRefused(f"{name}@{platform} cannot happen: {reason}")
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
    from firmware.platforms import NRF_USER_PART_256K
    from firmware.releases import synthetic_release
    from hw.sim.device import Faults, SimDevice
    from hw.sim.flash import SimFlash

    scenario = SCENARIOS[name]
    p = platform if isinstance(platform, Platform) else platform_by_name(platform)
    family = p.mcu.name
    reason = refusal(name, p)
    if reason is not None:
        raise ScenarioRefused(f"{name}@{p.name} cannot happen: {reason}")
    release = release_for(scenario.release, p)
    files = synthetic_release(p, release, tinker=scenario.app == "tinker")
    if scenario.old_bootloader:
        earlier = release_for("previous", p)
        previous = synthetic_release(p, earlier, tinker=False)
        files[f"{p.name}-bootloader@{release}.bin"] = previous[f"{p.name}-bootloader@{earlier}.bin"]
    system = system_version_for(release) or 0
    if scenario.app in ("app", "needs-newer"):
        # "needs-newer": built for the current release, which this device (on an earlier one) lacks
        needs = system_version_for(release_for("current", p)) if scenario.app == "needs-newer" else system
        app_dep = (Function.SYSTEM_PART, 2 if family == "stm32f2xx" else 1, needs)
        app_index = 2 if family == "nrf52840" and system >= NRF_USER_PART_256K else 1
        files[f"{p.name}-customer-app.bin"] = build_module(
            platform_id=p.id, function=Function.USER_PART, version=6, index=app_index,
            dependencies=[app_dep], body_size=6000, seed=42,
        )  # fmt: skip
    flash = SimFlash(p)
    device = SimDevice(p, clock, device_id_for(name, p.name, slot), flash, Faults(**scenario.faults))
    boot = parse_module(next(d for n, d in files.items() if n.startswith(f"{p.name}-bootloader@")))
    checks_crc = (facts := bootloader_facts(p, boot.version)) is not None and facts.verifies_crc
    corrupt = (*scenario.corrupt, *(scenario.unbootable if checks_crc else ()))
    missing = (*scenario.missing, *(() if checks_crc else scenario.unbootable))
    for data in files.values():
        module = parse_module(data)
        key = (module.function, module.index)
        if key in missing:
            continue
        device.install(_damage(data) if key in corrupt else data)
    device.rescan()
    device.faulty_app = files.get(f"{p.name}-customer-app.bin")
    return device
