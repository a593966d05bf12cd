"""The Particle platform table: ids, names, MCU family, USB identity, DFU layout, module addresses.

Everything here is data. Sources: ../shared/reference/module-format.md section 3 and
../shared/reference/usb-serial-protocols.md sections 1.1-1.2 (Particle's device-constants and the
Device OS linker scripts). Where the reference marks a fact UNVERIFIED the entry says so.

    >>> boron = platform_by_name("boron")
    >>> boron.id, boron.mcu.name, hex(boron.usb_pid_dfu)
    (13, 'nrf52840', '0xd00d')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from firmware.memory_map import MemoryMap, parse_memory_map


class Function(IntEnum):
    """module_function, the byte at +14 of the module prefix."""

    NONE = 0
    RESOURCE = 1
    BOOTLOADER = 2
    MONO_FIRMWARE = 3
    SYSTEM_PART = 4
    USER_PART = 5
    SETTINGS = 6
    NCP_FIRMWARE = 7
    RADIO_STACK = 8
    ASSET = 9


#: The names the kiosk prints and accepts (also the JSON vocabulary).
FUNCTION_NAMES: dict[int, str] = {
    Function.NONE: "none",
    Function.RESOURCE: "resource",
    Function.BOOTLOADER: "bootloader",
    Function.MONO_FIRMWARE: "mono",
    Function.SYSTEM_PART: "system-part",
    Function.USER_PART: "user-part",
    Function.SETTINGS: "settings",
    Function.NCP_FIRMWARE: "ncp",
    Function.RADIO_STACK: "radio-stack",
    Function.ASSET: "asset",
}

#: How `particle binary inspect` words each function, for the human-readable output.
FUNCTION_PHRASES: dict[int, str] = {
    Function.NONE: "an undefined module",
    Function.RESOURCE: "a resource module",
    Function.BOOTLOADER: "a bootloader module",
    Function.MONO_FIRMWARE: "a monolithic firmware module",
    Function.SYSTEM_PART: "a system module",
    Function.USER_PART: "an application module",
    Function.SETTINGS: "a settings module",
    Function.NCP_FIRMWARE: "a network co-processor (NCP) module",
    Function.RADIO_STACK: "a radio stack module",
    Function.ASSET: "an asset module",
}


def function_name(value: int) -> str:
    """The kiosk's name for a module function number, or ``function-N`` for an unknown one."""
    return FUNCTION_NAMES.get(value, f"function-{value}")


class Storage(IntEnum):
    """Where a module lives, which decides whether an address check makes sense."""

    INTERNAL = 0  # the MCU's own flash, at the module's start address
    EXTERNAL_MCU = 1  # another chip (the NCP); its address is in that chip's space
    ANYWHERE = 2  # assets: stored by the device wherever it likes


@dataclass(frozen=True)
class ModuleSlot:
    """Where a platform keeps one kind of module: ``[start, end)`` in bytes of flash address.

    A module fits when its first byte is at or after ``start`` and its CRC ends at or before
    ``end``. ``grows_left`` slots (rtl872x user parts) end at ``end`` and start wherever the
    module's size puts them. ``since`` and ``until`` are the system module versions of the Device OS
    releases that keep it there (``[since, until)``; ``until`` None: to this day), ``source`` where
    that comes from: a layout that moved is one slot per place, newest first.
    """

    function: Function
    index: int
    start: int
    end: int
    storage: Storage = Storage.INTERNAL
    grows_left: bool = False
    encrypted: bool = False
    name: str = ""
    note: str = ""
    since: int = 0
    until: int | None = None
    source: str = ""

    def fits(self, start_address: int, end_address: int) -> bool:
        if self.storage is not Storage.INTERNAL:
            return True
        return self.start <= start_address < end_address and end_address + 4 <= self.end

    def used_by(self, system_version: int) -> bool:
        """Whether Device OS with this system module version keeps the module here."""
        return self.since <= system_version and (self.until is None or system_version < self.until)


@dataclass(frozen=True, eq=False)  # one instance per family: compared and hashed by identity
class Mcu:
    """An MCU family: where its modules keep their prefix, and what a vector table looks like.

    ``prefix_offsets`` maps module function to the byte offset of ``module_info_t`` in the file
    (after the vector table or image header), ``default_prefix_offset`` covers the rest.
    ``initial_stack_pointer`` is a plausible first vector-table word, used by the builder so that
    a built module is found the way the device finds it.
    """

    name: str
    prefix_offsets: dict[int, int] = field(default_factory=dict)
    default_prefix_offset: int = 0
    initial_stack_pointer: int = 0x20000000

    def prefix_offset(self, function: int) -> int:
        return self.prefix_offsets.get(function, self.default_prefix_offset)


STM32F1 = Mcu("stm32f1xx", {Function.MONO_FIRMWARE: 0x10C, Function.BOOTLOADER: 0x10C}, 0, 0x20005000)
STM32F2 = Mcu(
    "stm32f2xx",
    {Function.BOOTLOADER: 0x184, Function.SYSTEM_PART: 0x184, Function.MONO_FIRMWARE: 0x184},
    0,
    0x20020000,
)
NRF52840 = Mcu(
    "nrf52840",
    {Function.BOOTLOADER: 0x200, Function.SYSTEM_PART: 0x200, Function.MONO_FIRMWARE: 0x200},
    0,
    0x2003F000,
)
# RTL872x bootloaders carry a 32-byte Realtek image header before module_info_t.
RTL872X = Mcu("rtl872x", {Function.BOOTLOADER: 0x20}, 0, 0x20000000)
# Bluz (third-party nRF51): the one fixture keeps its prefix at 0xC0. UNVERIFIED beyond that file.
NRF51 = Mcu("nrf51", {Function.SYSTEM_PART: 0xC0}, 0, 0x20004000)
OTHER = Mcu("other")

MCUS: dict[str, Mcu] = {m.name: m for m in (STM32F1, STM32F2, NRF52840, RTL872X, NRF51, OTHER)}

#: Bytes of the Realtek image header signature that opens an rtl872x bootloader file.
RTL_IMAGE_SIGNATURE = bytes.fromhex("99999696 3fcc66fc".replace(" ", ""))

# --- DFU alt-setting strings (usb-serial-protocols.md 1.2) ----------------------------------
_DCT_GEN2 = "@DCT Flash   /0x00000000/01*016Kg"
_DCT_GEN3 = "@DCT Flash   /0x00000000/1*016Ke"
DFU_ALTS_GEN2 = ("@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg", _DCT_GEN2)
DFU_ALTS_P1 = (*DFU_ALTS_GEN2, "@Serial Flash   /0x00000000/256*004Kg")
_GEN3_INTERNAL = "@Internal Flash   /0x00000000/1*004Ka,47*004Kg,192*004Kg,4*004Kg,4*004Kg,8*004Ka"
DFU_ALTS_GEN3_4MB = (_GEN3_INTERNAL, _DCT_GEN3, "@External Flash   /0x80000000/1024*004Kg")
DFU_ALTS_GEN3_8MB = (_GEN3_INTERNAL, _DCT_GEN3, "@External Flash   /0x80000000/2048*004Kg")
DFU_ALTS_RTL872X = ("@Internal Flash   /0x08000000/2048*004Kg", _DCT_GEN3)
# UNVERIFIED: the Core's own strings are not in the sources read; this is the STM32F10X_CL string
# of the Device OS STM32 USB driver. Alt 1 is the external SPI flash (factory image at 0x20000).
DFU_ALTS_CORE = ("@Internal Flash   /0x08000000/06*002Ka,122*002Kg", "@SPI Flash : SST25x/0x00000000/512*04Kg")

# --- Module layouts (module-format.md 3.3) ---------------------------------------------------
F = Function
LAYOUT_CORE = (
    ModuleSlot(F.BOOTLOADER, 0, 0x08000000, 0x08005000, name="bootloader"),
    ModuleSlot(F.MONO_FIRMWARE, 0, 0x08005000, 0x08020000, name="firmware"),
)
_GEN2_BOOTLOADER = ModuleSlot(F.BOOTLOADER, 0, 0x08000000, 0x08004000, name="bootloader")
LAYOUT_PHOTON = (
    _GEN2_BOOTLOADER,
    ModuleSlot(F.SYSTEM_PART, 1, 0x08020000, 0x08060000, name="system-part1"),
    ModuleSlot(F.SYSTEM_PART, 2, 0x08060000, 0x080A0000, name="system-part2"),
    ModuleSlot(F.USER_PART, 1, 0x080A0000, 0x080C0000, name="user-part"),
    # UNVERIFIED end: a monolithic build spans the system and user regions.
    ModuleSlot(F.MONO_FIRMWARE, 0, 0x08020000, 0x080C0000, name="firmware"),
)
# Electron release names do not match indices (module-format.md 3.3): the release file
# "system-part1" builds index 3, "system-part2" index 1, "system-part3" index 2. UNVERIFIED.
LAYOUT_ELECTRON = (
    _GEN2_BOOTLOADER,
    ModuleSlot(F.SYSTEM_PART, 1, 0x08020000, 0x08040000, name="system-part2"),
    ModuleSlot(F.SYSTEM_PART, 2, 0x08040000, 0x08060000, name="system-part3"),
    ModuleSlot(F.SYSTEM_PART, 3, 0x08060000, 0x08080000, name="system-part1"),
    ModuleSlot(F.USER_PART, 1, 0x08080000, 0x080A0000, name="user-part"),
    ModuleSlot(F.MONO_FIRMWARE, 0, 0x08020000, 0x080A0000, name="firmware"),  # UNVERIFIED end
)
#: Device OS 6.1.2 (system 6102) moved APP_CODE_BASE from 0x30000 to 0x28000: system-part1 and a monolithic
#: image start there, and the SoftDevice's room ends at 0x27000 (device-os hal/src/nRF52840/ota_module_bounds.c
#: and platform/MCU/nRF52840/inc/flash_mal.h CORE_FW_ADDRESS, tag v6.1.1: 0x30000, branch test/v6.1.2 at
#: "bump module version to 6.1.2": 0x28000). Not 6.2.0, as this file said before.
NRF_APP_CODE_MOVED = 6102
#: Device OS 3.1.0 gave the user part 256 KB at 0xB4000 (index 2), so system-part1 ends there; before, it
#: ended at the 128 KB user part at 0xD4000 (ota_module_bounds.c, tags v3.0.0 and v3.1.0). 3100 is
#: 3.1.0-alpha.1, the first 3.1 release of the table (UNVERIFIED: no alpha tag read; v3.1.0-rc.1 has it).
NRF_USER_PART_256K = 3100
_NRF_BOUNDS = "device-os hal/src/nRF52840/ota_module_bounds.c"
LAYOUT_NRF52840 = (
    ModuleSlot(F.BOOTLOADER, 0, 0x000F4000, 0x00100000, name="bootloader"),
    ModuleSlot(F.RADIO_STACK, 0, 0x00001000, 0x00027000, name="softdevice", since=NRF_APP_CODE_MOVED,
               source=f"{_NRF_BOUNDS} module_radio_stack, test/v6.1.2"),
    ModuleSlot(F.RADIO_STACK, 0, 0x00001000, 0x00030000, name="softdevice", until=NRF_APP_CODE_MOVED,
               source=f"{_NRF_BOUNDS} module_radio_stack, v6.1.1"),
    ModuleSlot(F.SYSTEM_PART, 1, 0x00028000, 0x000B4000, name="system-part1", since=NRF_APP_CODE_MOVED,
               source=f"{_NRF_BOUNDS} module_system_part1, test/v6.1.2"),
    ModuleSlot(F.SYSTEM_PART, 1, 0x00030000, 0x000B4000, name="system-part1", since=NRF_USER_PART_256K,
               until=NRF_APP_CODE_MOVED, source=f"{_NRF_BOUNDS} module_system_part1, v3.1.0 to v6.1.1"),
    ModuleSlot(F.SYSTEM_PART, 1, 0x00030000, 0x000D4000, name="system-part1", until=NRF_USER_PART_256K,
               source=f"{_NRF_BOUNDS} module_system_part1, v1.5.2 to v3.0.0"),
    ModuleSlot(F.USER_PART, 1, 0x000D4000, 0x000F4000, name="user-part", note="Device OS <= 3.0.x"),
    ModuleSlot(F.USER_PART, 2, 0x000B4000, 0x000F4000, name="user-part", note="Device OS >= 3.1.0"),
    ModuleSlot(F.MONO_FIRMWARE, 0, 0x00028000, 0x000F4000, name="firmware", since=NRF_APP_CODE_MOVED,
               source=f"{_NRF_BOUNDS} module_user_mono, test/v6.1.2"),
    ModuleSlot(F.MONO_FIRMWARE, 0, 0x00030000, 0x000F4000, name="firmware", until=NRF_APP_CODE_MOVED,
               source=f"{_NRF_BOUNDS} module_user_mono, v6.1.1"),
)  # fmt: skip
_NCP_SLOT = ModuleSlot(F.NCP_FIRMWARE, 0, 0, 0, storage=Storage.EXTERNAL_MCU, name="ncp-firmware")
LAYOUT_NRF52840_NCP = (*LAYOUT_NRF52840, _NCP_SLOT)
LAYOUT_RTL872X = (
    ModuleSlot(F.BOOTLOADER, 0, 0x08004000, 0x08014000, name="bootloader"),
    ModuleSlot(F.BOOTLOADER, 1, 0x08000000, 0x08004000, encrypted=True, name="prebootloader-mbr"),
    ModuleSlot(F.BOOTLOADER, 2, 0x08014000, 0x0805E000, name="prebootloader-part1"),
    ModuleSlot(F.SYSTEM_PART, 1, 0x08060000, 0x081E0000, name="system-part1"),
    ModuleSlot(F.USER_PART, 1, 0x08480000, 0x08600000, grows_left=True, name="user-part"),
    ModuleSlot(F.MONO_FIRMWARE, 0, 0x08060000, 0x08600000, name="firmware"),  # UNVERIFIED end
)
del F

# --- Bootloaders by version (device-os sources at the tags named) --------------------------------------


@dataclass(frozen=True)
class BootloaderFacts:
    """What a family's bootloader does from bootloader module version ``since`` on (to the next row's).

    ``dfuse_commands``: its GET_COMMANDS reply. ``protection``: it knows Device Protection (erase-only
    alt strings and errVENDOR while protected). ``protection_string``: it serves string descriptor 0xFA
    (``sm=o``, ``sm=p``, ``sm=s``). ``system_search``: the addresses it looks for the system firmware's
    module header at, in order; it starts the first that passes: a header whose start is that address,
    whose end is at most ``end_limit`` and whose platform is the device's, and where ``verifies_crc``,
    a CRC that matches. The module's function is not checked, so a monolithic image starts as well.
    """

    since: int
    dfuse_commands: bytes
    system_search: tuple[int, ...]
    end_limit: int
    verifies_crc: bool
    protection: bool = False
    protection_string: bool = False
    source: str = ""


_DFUSE = bytes([0x00, 0x21, 0x41])  # GET_COMMANDS, SET_ADDRESS_POINTER, ERASE
_SAFE = bytes([0xFA])  # Particle's ENTER_SAFE_MODE
_OVERRIDE = bytes([0xFB])  # Particle's CLEAR_SECURITY_MODE_OVERRIDE
_NRF_BL = "device-os bootloader/src/nRF52840"
_RTL_BL = "device-os bootloader/src/rtl872x"
#: By MCU family (Mcu.name), oldest first. Bootloader versions: 3000 = 6.0.0, 3001 = 6.1.1, 3002 = 6.1.2,
#: 3100 = 6.2.0 (build/version.mk BOOTLOADER_VERSION at those tags). The reference files give 0xFA/0xFB
#: and string 0xFA for every Gen3 bootloader, and the protection-string fallback as "Device OS < 6.1.2"
#: (particle-usb's comment): the sources put the command 0xFA in 6.1.1, 0xFB and the string in 6.2.0.
BOOTLOADERS: dict[str, tuple[BootloaderFacts, ...]] = {
    "nrf52840": (
        BootloaderFacts(0, _DFUSE, (0x30000,), 0x100000, True,
                        source=f"{_NRF_BL}/usbd_dfu.cpp handleDfuUpload (3 commands); dfu_usb.c is_application_valid "
                               "(FLASH_isUserModuleInfoValid + FLASH_VerifyCRC32 at CORE_FW_ADDRESS 0x30000, "
                               "platform/MCU/nRF52840/inc/flash_mal.h); tags v1.5.2 to v5.9.0"),
        BootloaderFacts(3000, _DFUSE, (0x30000,), 0x100000, True, protection=True,
                        source=f"{_NRF_BL}/usbd_dfu_mal.cpp INTERNAL_FLASH_IF_STRING_PROT, security_mode_get; "
                               "v6.0.0 (none in v5.9.0)"),
        BootloaderFacts(3001, _DFUSE + _SAFE, (0x30000,), 0x100000, True, protection=True,
                        source=f"{_NRF_BL}/usbd_dfu.cpp transferBuf_[3] = DFUSE_COMMAND_ENTER_SAFE_MODE; "
                               "v6.1.1 (not in v6.1.0)"),
        BootloaderFacts(3002, _DFUSE + _SAFE, (0x28000, 0x30000), 0x100000, True, protection=True,
                        source=f"{_NRF_BL}/dfu_usb.c: CORE_FW_ADDRESS 0x28000 first, then SYSTEM_PART_LEGACY_ADDRESS "
                               "0x30000; branch test/v6.1.2 (v6.1.1 looks at 0x30000 only)"),
        BootloaderFacts(3100, _DFUSE + _SAFE + _OVERRIDE, (0x28000, 0x30000), 0x100000, True, protection=True,
                        protection_string=True,
                        source=f"{_NRF_BL}/usbd_dfu.cpp transferBuf_[4] = CLEAR_SECURITY_MODE_OVERRIDE; "
                               "usbd_device.cpp STRING_IDX_DEVICE_STATE 0xfa, device_state_as_string; v6.2.0"),
    ),
    "rtl872x": (
        BootloaderFacts(0, _DFUSE, (0x08060000,), 0x08600000, True,
                        source=f"{_RTL_BL}/usbd_dfu.cpp (3 commands); dfu_usb.c is_application_valid (header + CRC "
                               "at CORE_FW_ADDRESS 0x08060000, platform/MCU/rtl872x/inc/flash_mal.h); v5.x"),
        BootloaderFacts(3000, _DFUSE, (0x08060000,), 0x08600000, True, protection=True,
                        source=f"{_RTL_BL}/usbd_dfu_mal.cpp INTERNAL_FLASH_IF_STRING_PROT; v6.0.0"),
        BootloaderFacts(3001, _DFUSE + _SAFE, (0x08060000,), 0x08600000, True, protection=True,
                        source=f"{_RTL_BL}/usbd_dfu.cpp ENTER_SAFE_MODE in GET_COMMANDS; v6.1.1"),
        BootloaderFacts(3100, _DFUSE + _SAFE + _OVERRIDE, (0x08060000,), 0x08600000, True, protection=True,
                        protection_string=True,
                        source=f"{_RTL_BL}/usbd_dfu.cpp CLEAR_SECURITY_MODE_OVERRIDE; hal/src/rtl872x/usbd_device.cpp "
                               "STRING_IDX_DEVICE_STATE 0xfa; v6.2.0"),
    ),
    "stm32f2xx": (
        # ST's DfuSe code: the header only, no CRC ("ToDo add CRC check" in bootloader/src/main.c).
        BootloaderFacts(0, _DFUSE, (0x08020000,), 0x08100000, False,
                        source="device-os platform/MCU/STM32F2xx/STM32_USB_Device_Driver/src/usbd_dfu_core.c "
                               "DFU_Req_UPLOAD (3 commands); bootloader/src/stm32f2xx/dfu_usb.c is_application_valid "
                               "= FLASH_isUserModuleInfoValid (start, end <= 0x8100000, platform: "
                               "SPARK_Firmware_Driver/src/flash_mal.c); bootloader/src/main.c; v2.3.1"),
    ),
}  # fmt: skip


def bootloader_facts(platform: Platform, version: int | None = None) -> BootloaderFacts | None:
    """What the platform's bootloader of module version ``version`` does (None: the newest known);
    None for a family whose bootloader is not described."""
    rows = BOOTLOADERS.get(platform.mcu.name)
    if not rows:
        return None
    if version is None:
        return rows[-1]
    return next((row for row in reversed(rows) if row.since <= version), rows[0])


# --- What Device OS checks at boot -----------------------------------------------------------------------

#: The modules Device OS validates at boot before it runs the user app (range, platform, dependencies and
#: CRC: HAL_Core_Validate_Modules(1)); if one fails it runs in safe mode. The user part is validated as
#: well (CRC and dependencies, HAL_Core_Validate_User_Module). By MCU family, with platform overrides.
BOOT_VALIDATION: dict[str, tuple[tuple[int, int], ...]] = {
    # modules/shared/{nRF52840,rtl872x}/inc/system_part1_loader.c, hal/src/nRF52840/core_hal.c (v6.1.1):
    # the bootloader and system-part1
    "nrf52840": ((Function.BOOTLOADER, 0), (Function.SYSTEM_PART, 1)),
    "rtl872x": ((Function.BOOTLOADER, 0), (Function.SYSTEM_PART, 1)),
    # modules/shared/stm32f2xx/inc/system_part2_loader.c, hal/src/stm32f2xx/core_hal_stm32f2xx.c (v2.3.1):
    # the bootloader and system-part2 ("the system-part that depends on bootloader"); system-part1's CRC
    # is checked by nobody at boot, so a damaged one runs
    "stm32f2xx": ((Function.BOOTLOADER, 0), (Function.SYSTEM_PART, 2)),
}
BOOT_VALIDATION_BY_PLATFORM: dict[str, tuple[tuple[int, int], ...]] = {
    # system_part2_loader.c: on PLATFORM_ELECTRON_PRODUCTION "bootloader_validated = true" (v2.3.1)
    "electron": (),
}
#: Platforms whose Device OS carries its bootloader and writes it over an older one at boot, then resets
#: (hal/inc/bootloader_hal.h HAL_REPLACE_BOOTLOADER for PLATFORM_ELECTRON_PRODUCTION, hal/src/stm32f2xx/
#: bootloader.cpp bootloader_update_if_needed from HAL_Core_Setup; v2.3.1).
REPLACES_OLDER_BOOTLOADER = frozenset({"electron"})


def boot_validated(platform: Platform) -> tuple[tuple[int, int], ...]:
    """(function, index) of the modules Device OS checks at boot on this platform."""
    if platform.name in BOOT_VALIDATION_BY_PLATFORM:
        return BOOT_VALIDATION_BY_PLATFORM[platform.name]
    return BOOT_VALIDATION.get(platform.mcu.name, ())


#: USB quirk of rtl872x devices in normal mode: a control OUT transfer needs a 1-byte data stage.
QUIRK_CONTROL_OUT_DATA_STAGE = "control-out-requires-data-stage"
QUIRK_NO_CONTROL_REQUESTS = "control-requests-not-supported"


@dataclass(frozen=True)
class Platform:
    """One Particle platform.

    ``usb_vid`` with ``usb_pid_normal`` (CDC serial + control requests) or ``usb_pid_dfu`` (the
    DFU bootloader) identify it on USB. ``dfu_alts`` are the DfuSe strings of alt settings 0, 1,
    ... and ``layout`` where each kind of module lives. ``system_parts`` is how many system parts
    a Device OS release has for it. ``supported`` says the kiosk knows enough to flash it.
    """

    id: int
    name: str
    display_name: str
    generation: int | None
    mcu: Mcu
    usb_vid: int | None = None
    usb_pid_normal: int | None = None
    usb_pid_dfu: int | None = None
    dfu_alts: tuple[str, ...] = ()
    layout: tuple[ModuleSlot, ...] = ()
    quirks: frozenset[str] = frozenset()
    note: str = ""

    @property
    def supported(self) -> bool:
        return bool(self.layout) and self.usb_pid_dfu is not None

    @property
    def system_parts(self) -> tuple[int, ...]:
        return tuple(sorted({s.index for s in self.layout if s.function == Function.SYSTEM_PART}))

    @property
    def has_ncp(self) -> bool:
        return any(s.function == Function.NCP_FIRMWARE for s in self.layout)

    def memory_map(self, alt: int) -> MemoryMap | None:
        return parse_memory_map(self.dfu_alts[alt]) if alt < len(self.dfu_alts) else None

    def layout_at(self, system_version: int) -> tuple[ModuleSlot, ...]:
        """The slots Device OS with this system module version uses."""
        return tuple(s for s in self.layout if s.used_by(system_version))

    def slots_for(self, function: int, index: int, system_version: int | None = None) -> tuple[ModuleSlot, ...]:
        """Where a module of this function and index lives: in any release, newest first, or in the
        release with ``system_version``."""
        return tuple(
            s
            for s in self.layout
            if s.function == function and s.index == index and (system_version is None or s.used_by(system_version))
        )

    def slot_for_module(self, function: int, index: int, start: int, end: int) -> ModuleSlot | None:
        """The slot a module with this identity and address range fits into, in any release, if any: a
        module is written where its own header says, so a 6.1.1 system part (0x30000) fits a Boron as
        well as a 6.1.2 one (0x28000)."""
        for slot in self.slots_for(function, index):
            if slot.fits(start, end):
                return slot
        return None


def _particle(
    pid: int,
    name: str,
    display: str,
    gen: int | None,
    mcu: Mcu,
    alts: tuple[str, ...] = (),
    layout: tuple[ModuleSlot, ...] = (),
    quirks: frozenset[str] = frozenset(),
    note: str = "",
) -> Platform:
    """A platform on Particle's VID 0x2B04: normal PID 0xC0xx and DFU PID 0xD0xx, xx = id."""
    return Platform(pid, name, display, gen, mcu, 0x2B04, 0xC000 | pid, 0xD000 | pid, alts, layout, quirks, note)


_RTL_QUIRKS = frozenset({QUIRK_CONTROL_OUT_DATA_STAGE})

PLATFORMS: tuple[Platform, ...] = (
    Platform(0, "core", "Core", 1, STM32F1, 0x1D50, 0x607D, 0x607F, DFU_ALTS_CORE, LAYOUT_CORE),
    Platform(3, "gcc", "GCC", None, OTHER, note="virtual host platform"),
    Platform(4, "dev-photon", "Photon (development)", 2, STM32F2, note="pre-release; Device OS v1.5.2 only"),
    Platform(5, "dev-teacup-bm14", "Teacup BM-14 (development)", 2, STM32F2, note="pre-release"),
    _particle(6, "photon", "Photon", 2, STM32F2, DFU_ALTS_GEN2, LAYOUT_PHOTON),
    Platform(7, "teacup-bm14", "Teacup BM-14", 2, STM32F2, note="pre-release"),
    _particle(8, "p1", "P1", 2, STM32F2, DFU_ALTS_P1, LAYOUT_PHOTON),
    Platform(9, "ethernet", "Ethernet", 2, STM32F2, 0x2B04, 0xC009, 0xD009, note="pre-release"),
    _particle(10, "electron", "Electron / E-Series", 2, STM32F2, DFU_ALTS_GEN2, LAYOUT_ELECTRON),
    Platform(11, "esp32", "ESP32", None, OTHER, note="not public"),
    _particle(12, "argon", "Argon", 3, NRF52840, DFU_ALTS_GEN3_4MB, LAYOUT_NRF52840_NCP, note="NCP: ESP32"),
    _particle(13, "boron", "Boron", 3, NRF52840, DFU_ALTS_GEN3_4MB, LAYOUT_NRF52840),
    _particle(14, "xenon", "Xenon", 3, NRF52840, DFU_ALTS_GEN3_4MB, LAYOUT_NRF52840, note="removed after 1.5.x"),
    _particle(15, "esomx", "E-SoM-X", 3, NRF52840, DFU_ALTS_GEN3_8MB, LAYOUT_NRF52840),
    Platform(20, "mesh-virtual", "Mesh virtual", None, OTHER, note="Device OS v1.5.2 only"),
    _particle(22, "asom", "A-SoM", 3, NRF52840, DFU_ALTS_GEN3_4MB, LAYOUT_NRF52840_NCP, note="not public"),
    _particle(23, "bsom", "B-SoM", 3, NRF52840, DFU_ALTS_GEN3_4MB, LAYOUT_NRF52840),
    _particle(24, "xsom", "X-SoM", 3, NRF52840, DFU_ALTS_GEN3_4MB, LAYOUT_NRF52840, note="not public"),
    _particle(25, "b5som", "B5-SoM", 3, NRF52840, DFU_ALTS_GEN3_8MB, LAYOUT_NRF52840),
    _particle(26, "tracker", "Asset Tracker / Monitor One", 3, NRF52840, DFU_ALTS_GEN3_8MB, LAYOUT_NRF52840_NCP),
    _particle(28, "trackerm", "Tracker M", 3, RTL872X, DFU_ALTS_RTL872X, LAYOUT_RTL872X, _RTL_QUIRKS),
    Platform(31, "raspi", "Raspberry Pi", None, OTHER),
    # device-constants says generation 4, Device OS' platform-id.mk says PLATFORM_GEN=3.
    _particle(32, "p2", "P2 / Photon 2", 4, RTL872X, DFU_ALTS_RTL872X, LAYOUT_RTL872X, _RTL_QUIRKS),
    _particle(35, "msom", "M-SoM", 4, RTL872X, DFU_ALTS_RTL872X, LAYOUT_RTL872X, _RTL_QUIRKS),
    # Electron 2 and Sulu are only in device-constants: layouts by MCU family, UNVERIFIED.
    _particle(37, "electron2", "Electron 2", 3, NRF52840, DFU_ALTS_GEN3_4MB, LAYOUT_NRF52840),
    _particle(38, "sulu", "Sulu", 4, RTL872X, DFU_ALTS_RTL872X, LAYOUT_RTL872X, _RTL_QUIRKS),
    Platform(
        42,
        "tachyon",
        "Tachyon",
        None,
        OTHER,
        0x2B04,
        0xC02A,
        None,
        quirks=frozenset({QUIRK_NO_CONTROL_REQUESTS}),
        note="Linux SBC; not flashed by the kiosk",
    ),
    Platform(43, "linux", "Linux", None, OTHER),
    Platform(82, "oak", "Oak (third party)", None, OTHER),
    Platform(88, "duo", "RedBear Duo (third party)", None, STM32F2),
    Platform(103, "bluz", "Bluz (third party)", None, NRF51),
    Platform(60000, "newhal", "newhal (Device OS test)", 0, OTHER, 0x2B04, 0x607D, 0x607F),
)

_BY_ID = {p.id: p for p in PLATFORMS}
_BY_NAME = {p.name: p for p in PLATFORMS}
# Names technicians type for the same board.
_ALIASES = {"photon2": "p2", "photon-2": "p2", "e-series": "electron", "assettracker": "tracker", "m-som": "msom"}


class UnknownPlatformError(LookupError):
    """A platform id or name that is not in the table."""


def platform_by_id(platform_id: int) -> Platform | None:
    return _BY_ID.get(platform_id)


def platform_by_name(name: str) -> Platform:
    """Look a platform up by its name or number (``boron``, ``13``); raise UnknownPlatformError."""
    key = name.strip().lower()
    if key.isdigit() and int(key) in _BY_ID:
        return _BY_ID[int(key)]
    key = _ALIASES.get(key, key)
    if key in _BY_NAME:
        return _BY_NAME[key]
    known = ", ".join(p.name for p in PLATFORMS if p.supported)
    raise UnknownPlatformError(f"unknown platform {name!r}; the kiosk knows: {known}")


def platform_by_usb(vid: int, pid: int) -> tuple[Platform, str] | None:
    """The platform and mode (``normal`` or ``dfu``) a USB VID:PID belongs to, if any."""
    for p in PLATFORMS:
        if p.usb_vid != vid:
            continue
        if p.usb_pid_normal == pid:
            return p, "normal"
        if p.usb_pid_dfu == pid:
            return p, "dfu"
    return None


def platform_label(platform_id: int) -> str:
    p = _BY_ID.get(platform_id)
    return p.name if p else f"unknown platform {platform_id}"


# --- The OTA region and the pending-update flag (bootloader, prebootloader and NCP over DFU) ---------------------


@dataclass(frozen=True)
class OtaRegion:
    """Where Device OS of system version ``since`` on (to the next row's) looks for a pending update: the
    module at ``address`` of DFU alt ``alt``, at most ``size`` bytes. ``address`` None: the region starts
    after system-part1 (its end plus CRC rounded down to 4 KB, plus 4 KB), so it depends on the system part."""

    since: int
    alt: int
    address: int | None
    size: int
    source: str


@dataclass(frozen=True)
class PendingUpdateFlag:
    """The DCT byte that makes Device OS apply the module in its OTA region at boot (HAL_FLASH_ApplyPendingUpdate
    from ``system/src/main.cpp`` app_setup_and_loop, safe mode included): ``value`` at ``offset`` of DFU alt
    ``alt``; Device OS writes ``clear`` there before it applies, then waits ``reset_delay_s`` and resets."""

    alt: int
    offset: int
    value: int
    clear: int
    since: int  # the first system version that looks at it
    reset_delay_s: float
    source: str


#: device-os PR #1788 "allow the bootloader to be flashed over DFU" (merge 55fdc1148, first in tag v1.2.1-rc.3;
#: 1213 = 1.2.1, the first final release that has it). dct.h STATIC_ASSERT_DCT_OFFSET(ota_update_flag, 1753) and
#: DCT_OTA_UPDATE_FLAG_SET 0xA5 / CLEAR 0xFF (platform/MCU/{nRF52840,rtl872x}/inc/dct.h v6.2.0,
#: STM32F2xx/SPARK_Firmware_Driver/inc/dct.h v2.3.1); the DFU alt 1 maps DCT app data by offset (the Gen2
#: DCT_If_Write calls dct_write_app_data(offset), usbd_dct_if.c v2.3.1); HAL_Delay_Milliseconds(100) then
#: HAL_Core_System_Reset_Ex (main.cpp v6.2.0). Device Restore USB writes the same byte (device-restore-dfu.js).
PENDING_UPDATE = PendingUpdateFlag(
    alt=1, offset=1753, value=0xA5, clear=0xFF, since=1213, reset_delay_s=0.1,
    source="device-os PR #1788; dct.h ota_update_flag; system/src/main.cpp app_setup_and_loop",
)  # fmt: skip

_NRF_FLASH = "device-os platform/MCU/nRF52840/inc/flash_mal.h EXTERNAL_FLASH_OTA_ADDRESS"
#: By MCU family (Mcu.name), oldest first; OTA_REGIONS_BY_PLATFORM overrides per platform.
OTA_REGIONS: dict[str, tuple[OtaRegion, ...]] = {
    # INTERNAL_FLASH_OTA_ADDRESS = the user part's location + 128 KB: 0x080C0000 on the Photon/P1 (user at
    # 0x080A0000) and on the Electron (user at 0x08080000, + 2 x 128 KB) (SPARK_Firmware_Driver/inc/flash_mal.h,
    # v2.3.1); Device Restore USB writes a Gen2 bootloader there (device-restore-dfu.js "Gen 2").
    "stm32f2xx": (
        OtaRegion(1213, 0, 0x080C0000, 0x20000, "device-os STM32F2xx flash_mal.h INTERNAL_FLASH_OTA_ADDRESS, v2.3.1"),
    ),
    # 4 MB external flash: FAC at 0x200000 + 128 KB + 420 KB reserved (v1.2.1 to v2.3.1) or + 256 KB + 292 KB
    # (v3.3.1 to v5.4.1): 0x289000 either way (alt 2 adds 0x80000000: Device Restore's 0x80289000). From
    # v5.5.0-rc.1 (5500) the reserved part is 48 KB: 0x24C000. fetchModules reads the module at
    # module_ota.start_address (hal/src/nRF52840/ota_flash_hal.cpp, ota_module_bounds.c), so the address is
    # that of the Device OS that applies it (Device Restore writes 0x80289000 whatever the version).
    "nrf52840": (
        OtaRegion(1213, 2, 0x80289000, 1500 * 1024, f"{_NRF_FLASH}, v1.2.1 to v5.4.1"),
        OtaRegion(5500, 2, 0x8024C000, 1500 * 1024, f"{_NRF_FLASH}, v5.5.0-rc.1 to v6.2.0 (RESERVED 48 KB)"),
    ),
    # RTL872x (internal QSPI, alt 0): up to v5.4.1 module_ota starts after system-part1 ((crc end & ~0xFFF) +
    # 0x1000); from v5.5.0-rc.1, at system-part1's start + 1.5 MB (its maximum) + 1.125 MB (asset fs):
    # 0x08060000 + 0x180000 + 0x120000 = 0x08300000, 1.5 MB (hal/src/rtl872x/core_hal.c, v5.0.0 to v6.2.0).
    # Device Restore USB appends the bootloader to system-part1 (the older layout) and writes
    # prebootloader-part1 after the device's system-part1. Device OS does not apply before 1213 either.
    "rtl872x": (
        OtaRegion(1213, 0, None, 0x180000, "device-os hal/src/rtl872x/core_hal.c module_ota, v5.0.0 to v5.4.1"),
        OtaRegion(5500, 0, 0x08300000, 0x180000, "device-os hal/src/rtl872x/core_hal.c module_ota, v5.5.0-rc.1 on"),
    ),
}
#: 8 MB Gen3 (Tracker, B5-SoM, E-SoM-X): 4 MB filesystem + 2 MB reserved + FAC 128 KB + 420 KB (v2.3.1) or
#: 256 KB + 292 KB (v4.2.0 to v6.2.0): 0x689000 (Device Restore's Tracker 0x80689000). flash_mal.h names
#: Tracker and B5-SoM from v1.5.4-rc.1, E-SoM-X from v4.0.0 (none of them had an earlier release).
_NRF_8MB = (OtaRegion(1213, 2, 0x80689000, 1500 * 1024, f"{_NRF_FLASH}, 8 MB platforms, v1.5.4-rc.1 to v6.2.0"),)
OTA_REGIONS_BY_PLATFORM: dict[str, tuple[OtaRegion, ...]] = {"tracker": _NRF_8MB, "b5som": _NRF_8MB,
                                                            "esomx": _NRF_8MB}  # fmt: skip

#: Platforms whose Device OS updates the NCP from a module it received (HAL_PLATFORM_NCP_UPDATABLE 1 in
#: hal/src/{argon,tracker}/hal_platform_config.h, v5.9.0 and v6.2.0; hal_platform.h defaults it to 0).
NCP_UPDATABLE = frozenset({"argon", "tracker"})

#: (function, index) of the modules that reach their place only through Device OS (the OTA region or a
#: control-request update): the bootloader and the RTL872x prebootloader-part1 (its DFU sectors hold the running
#: bootloader, or are read-only in the alt 0 layout), and the NCP, which lives on another chip.
OTA_MODULES = frozenset({(Function.BOOTLOADER, 0), (Function.BOOTLOADER, 2), (Function.NCP_FIRMWARE, 0)})


def ota_regions(platform: Platform) -> tuple[OtaRegion, ...]:
    return OTA_REGIONS_BY_PLATFORM.get(platform.name) or OTA_REGIONS.get(platform.mcu.name, ())


def ota_region(platform: Platform, system_version: int) -> OtaRegion | None:
    """Where Device OS with this system module version looks for a pending update (None: it does not)."""
    if system_version < PENDING_UPDATE.since:
        return None
    rows = [r for r in ota_regions(platform) if r.since <= system_version]
    return rows[-1] if rows else None


def ota_address(region: OtaRegion, system_part_end: int | None) -> int | None:
    """The region's first byte; for a region after system-part1, from that part's ``module_end_address`` (None
    when it is not known)."""
    if region.address is not None:
        return region.address
    if system_part_end is None:
        return None
    return ((system_part_end + 4) & ~0xFFF) + 0x1000  # link_module_info_crc_end aligned down, + 4 KB


def ota_carries(platform: Platform, function: int, index: int) -> bool:
    """Whether the platform's Device OS takes this kind of module from its OTA region."""
    if (function, index) not in OTA_MODULES:
        return False
    if function == Function.NCP_FIRMWARE:
        return platform.name in NCP_UPDATABLE
    return any(s.function == function and s.index == index for s in platform.layout)
