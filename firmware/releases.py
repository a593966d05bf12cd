"""Synthetic Device OS releases: the modules a real release has, built with real identities.

Real binaries are not redistributable, so the demo library, the simulator and the tests use
releases made here: for each platform family the parts Particle ships (module-format.md section 5:
Gen2 bootloader + 2 or 3 system parts, Gen3 bootloader + SoftDevice + system part (+ NCP),
rtl872x prebootloaders + bootloader + system part), with the version numbers of the release table
and the dependency patterns seen in real files (module-format.md 1.4), plus Tinker.

    >>> files = synthetic_release("boron", "6.1.1")
    >>> sorted(files)[:2]
    ['boron-bootloader@6.1.1.bin', 'boron-softdevice@6.1.1.bin']
"""

from __future__ import annotations

import zlib

from firmware.builder import build_module
from firmware.module import ModuleFlag
from firmware.platforms import NRF_USER_PART_256K, Function, Platform, platform_by_name
from firmware.release_sizes import real_size
from firmware.versions import bootloader_version_for, system_version_for

#: SoftDevice firmware id the Gen3 system parts of the last releases depend on (S140 7.x); the
#: fixture argon-system-part1@4.1.0 depends on radio stack 202.
SOFTDEVICE_VERSION = 202
#: A SoftDevice keeps its firmware id as a u16 at flash 0x300C (create_module.py reads it there), i.e. at
#: 0x200C into a radio-stack module's body, which DFU writes at 0x1000 without the module header.
SOFTDEVICE_VERSION_AT = 0x300C - 0x1000
NCP_VERSION = 7  # the ESP32 NCP firmware a Tracker system part depends on (tracker-system-part1 fixture)
NCP_ESP32 = 0x21  # reserved byte of NCP modules: the NCP id (module-format.md 1.1)
PREBOOTLOADER_VERSION = 7  # the P2 bootloader fixture depends on prebootloader-part1 7
#: Bytes of body a test may ask for (``body_size=BODY``) where it needs no real sizes; by default every module
#: is as large as the real release's (firmware/release_sizes.py), so device-time figures are honest.
BODY = 4096


#: How Device OS makes Gen2 system parts depend on each other and on the bootloader (v2.3.1): the part at
#: index 2 on part 1 and the bootloader (modules/shared/stm32f2xx/part2_build.mk; the bootloader version
#: here is the release's own, where Device OS asks for BOOTLOADER_DEPENDENCY, which lags it); Photon/P1
#: part 1 on part 2 >= 207 from 0.8.0 on (modules/shared/system_module_version.mk); Electron part 1 on
#: part 3 (modules/electron/system-part2/build.mk) and part 3 on part 2 >= 110 (system_module_version.mk).
#: Values: a number, or "system" / "bootloader" for the release's own versions.
GEN2_SYSTEM_DEPENDENCIES: dict[str, dict[int, tuple[tuple[int, int, int | str], ...]]] = {
    "photon": {1: ((Function.SYSTEM_PART, 2, 207),), 2: ((Function.SYSTEM_PART, 1, "system"),
                                                         (Function.BOOTLOADER, 0, "bootloader"))},
    "electron": {1: ((Function.SYSTEM_PART, 3, "system"),),
                 2: ((Function.SYSTEM_PART, 1, "system"), (Function.BOOTLOADER, 0, "bootloader")),
                 3: ((Function.SYSTEM_PART, 2, 110),)},
}  # fmt: skip
GEN2_SYSTEM_DEPENDENCIES["p1"] = GEN2_SYSTEM_DEPENDENCIES["photon"]
#: The release from which Photon/P1 part 1 depends on part 2 >= 207 (0.8.0-rc.1).
GEN2_PART1_DEPENDENCY_SINCE = 300


def _gen2_dependencies(p: Platform, index: int, system: int, bootloader: int) -> list[tuple[int, int, int]]:
    own = {"system": system, "bootloader": bootloader}
    deps = GEN2_SYSTEM_DEPENDENCIES.get(p.name, GEN2_SYSTEM_DEPENDENCIES["photon"]).get(index, ())
    if p.name != "electron" and index == 1 and system < GEN2_PART1_DEPENDENCY_SINCE:
        deps = ()
    return [(f, i, own.get(v, v) if isinstance(v, str) else v) for f, i, v in deps]


def _versions(release: str) -> tuple[int, int]:
    system = system_version_for(release)
    bootloader = bootloader_version_for(release)
    if system is None or bootloader is None:
        raise ValueError(f"Device OS {release} is not in the release table with a bootloader version")
    return system, bootloader


def synthetic_release(
    platform: str | Platform, release: str, *, tinker: bool = True, seed: int = 0, body_size: int | None = None
) -> dict[str, bytes]:
    """``{file name: bytes}`` of a Device OS release for the platform, named as Particle names them: each module as
    large as the real one (``firmware.release_sizes``), or with ``body_size`` bytes of body when given."""
    p = platform if isinstance(platform, Platform) else platform_by_name(platform)
    system, bootloader = _versions(release)
    F = Function

    def sized(name: str, **kw) -> int:
        """Bytes of body that make ``name`` as large as the real module (or ``body_size`` when given)."""
        if body_size is not None:
            return body_size
        overhead = len(build_module(platform_id=p.id, **{**kw, "body": b""}))
        return real_size(p, release, name).size - overhead

    def module(name: str, function: int, version: int, index: int, deps=(), **kw) -> tuple[str, bytes]:
        if "body" not in kw:
            kw.setdefault("body_size", sized(name, function=function, version=version, index=index, **kw))
        data = build_module(
            platform_id=p.id,
            function=function,
            version=version,
            index=index,
            dependencies=deps,
            seed=seed + zlib.crc32(name.encode()),  # deterministic: the same release, the same bytes
            **kw,
        )
        return f"{p.name}-{name}@{release}.bin", data

    parts: list[tuple[str, bytes]] = []
    family = p.mcu.name
    if family == "stm32f2xx":
        parts.append(module("bootloader", F.BOOTLOADER, bootloader, 0))
        indices = p.system_parts
        for index in indices:
            slot = p.slots_for(F.SYSTEM_PART, index)[0]
            deps = _gen2_dependencies(p, index, system, bootloader)
            parts.append(module(slot.name, F.SYSTEM_PART, system, index, deps))
        app_dep = (F.SYSTEM_PART, 2, system)
        app_index = 1
    elif family == "nrf52840":
        parts.append(module("bootloader", F.BOOTLOADER, bootloader, 0))
        sd = sized("softdevice", function=F.RADIO_STACK, version=SOFTDEVICE_VERSION, index=0,
                   flags=ModuleFlag.DROP_MODULE_INFO, suffix="base")  # fmt: skip
        softdevice_body = bytearray(max(sd, SOFTDEVICE_VERSION_AT + 0x100))
        softdevice_body[SOFTDEVICE_VERSION_AT : SOFTDEVICE_VERSION_AT + 2] = SOFTDEVICE_VERSION.to_bytes(2, "little")
        parts.append(
            module(
                "softdevice",
                F.RADIO_STACK,
                SOFTDEVICE_VERSION,
                0,
                [(F.SYSTEM_PART, 1, 1321), (F.BOOTLOADER, 0, 501)],
                flags=ModuleFlag.DROP_MODULE_INFO,
                suffix="base",
                body=bytes(softdevice_body),
            )
        )
        deps = [(F.BOOTLOADER, 0, bootloader), (F.RADIO_STACK, 0, SOFTDEVICE_VERSION)]
        if p.has_ncp:
            parts.append(module("ncp-firmware", F.NCP_FIRMWARE, NCP_VERSION, 0, reserved=NCP_ESP32, suffix="base"))
        # where this release keeps system-part1: 0x30000 up to 6.1.1, 0x28000 from 6.1.2
        start = p.slots_for(F.SYSTEM_PART, 1, system)[0].start
        parts.append(module("system-part1", F.SYSTEM_PART, system, 1, deps, start_address=start))
        app_dep = (F.SYSTEM_PART, 1, system)
        app_index = 2 if system >= NRF_USER_PART_256K else 1
    elif family == "rtl872x":
        parts.append(
            module(
                "prebootloader-mbr",
                F.BOOTLOADER,
                PREBOOTLOADER_VERSION,
                1,
                flags=ModuleFlag.ENCRYPTED | ModuleFlag.DROP_MODULE_INFO,
            )
        )
        parts.append(
            module("prebootloader-part1", F.BOOTLOADER, PREBOOTLOADER_VERSION, 2, flags=ModuleFlag.DROP_MODULE_INFO)
        )
        parts.append(module("bootloader", F.BOOTLOADER, bootloader, 0, [(F.BOOTLOADER, 2, PREBOOTLOADER_VERSION)]))
        parts.append(module("system-part1", F.SYSTEM_PART, system, 1, [(F.BOOTLOADER, 0, bootloader)]))
        app_dep = (F.SYSTEM_PART, 1, system)
        app_index = 1
    else:
        raise ValueError(f"no synthetic Device OS release for {p.name} ({family})")
    files = dict(parts)
    if tinker:
        files[f"{p.name}-tinker@{release}.bin"] = build_module(
            platform_id=p.id,
            function=F.USER_PART,
            version=6,
            index=app_index,
            dependencies=[app_dep],
            body_size=sized("tinker", function=F.USER_PART, version=6, index=app_index),
            seed=seed + 7,
        )
    return files


#: Nordic's MBR occupies 0x0-0xFFF on nRF52840 devices; no module carries it (a restore image does).
NRF_MBR = (0x0, 0x1000)


def synthetic_restore_image(
    platform: str | Platform, release: str, *, body_size: int | None = None
) -> list[tuple[int, bytes]]:
    """The flash image a restore .hex carries: every module of the release at its address (the radio
    stack without its header), and on Gen3 a stand-in for the Nordic MBR. NCP firmware, which lives on
    another chip, is not in it."""
    from firmware.module import parse_module

    p = platform if isinstance(platform, Platform) else platform_by_name(platform)
    segments = []
    for data in synthetic_release(p, release, body_size=body_size).values():
        module = parse_module(data)
        if module.function == Function.NCP_FIRMWARE:
            continue
        payload = (
            data[module.prefix_size :]
            if module.flags & ModuleFlag.DROP_MODULE_INFO
            and module.prefix_offset == 0
            and module.function == Function.RADIO_STACK
            else data
        )
        segments.append((module.start_address, payload))
    if p.mcu.name == "nrf52840":
        start, end = NRF_MBR
        segments.append((start, bytes([0x20]) * (end - start)))  # synthetic: not Nordic's MBR
    return sorted(segments)
