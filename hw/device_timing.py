"""The device's own timings around flashing: boot, mode switches, DFU leave. Shared by the kiosk's
``minimum_s`` figures and the simulator, so both price a path the same way (flash times themselves are in
:mod:`hw.flash_timing`). Sources: ../shared/reference/timing-model.md sections 0 and 3; UNVERIFIED rows
say so.

    >>> from firmware.platforms import platform_by_name
    >>> boot_s(platform_by_name("p2")), SWITCH_S[("dfu", "control-request")]
    (2.4, 1.2)
"""

from __future__ import annotations

from firmware.platforms import Platform

#: Seconds from reset release until Device OS runs and USB CDC enumerates (HAL_USB_Init comes just
#: before setup(); the white boot LED hands over then). timing-model.md 3: Photon ~1 s in the default
#: mode (white ~1 s per DOCS-LED); P2's KM0 validates the image for ~2.3-2.65 s; Gen3 is an estimate
#: (UNVERIFIED: 0.3-1 s), taken as 1 s.
BOOT_S = {"stm32f1xx": 1.0, "stm32f2xx": 1.0, "nrf52840": 1.0, "rtl872x": 2.4}
DFU_ENUMERATE_S = 0.2  # bootloader to DFU enumerated (timing-model.md 3: tens of ms + host; UNVERIFIED)
CONTROL_RESET_DELAY_S = 1.0  # requests 40/50/60: reply, wait 1 s, reset (timing-model.md 0 #6)
DFU_LEAVE_S = 0.5  # the bootloader resets 500 ms after the leave request (timing-model.md 0 #5)
#: MODE held through reset: safe mode from 1 s, DFU from 3 s (bootloader main.c, timing-model.md 3).
BOOTLOADER_SAFE_S, BOOTLOADER_DFU_S = 1.0, 3.0
LISTEN_HOLD_S = 3.0  # MODE held while running: listening mode
#: YModem success: the device prints its lines, waits 1 s, then applies the update (usb-serial-protocols.md 4)
YMODEM_APPLY_DELAY_S = 1.0

#: (mode wanted, how it was reached) -> device seconds the switch itself demands.
SWITCH_S: dict[tuple[str, str], float] = {
    ("dfu", "control-request"): CONTROL_RESET_DELAY_S + DFU_ENUMERATE_S,
    ("dfu", "buttons"): BOOTLOADER_DFU_S + DFU_ENUMERATE_S,
    ("dfu", "14400-baud"): DFU_ENUMERATE_S,  # no 1 s delay (timing-model.md 3)
    ("listening", "control-request"): 0.0,
    ("listening", "buttons"): LISTEN_HOLD_S,
}


def boot_s(platform: Platform | None) -> float:
    """Reset to Device OS running on USB, for ``platform`` (1 s when it is not known)."""
    return BOOT_S.get(platform.mcu.name, 1.0) if platform is not None else 1.0
