"""Module info (request 90) from the simulated device, checked against the proto definitions and device-os.

The wire is walked with a decoder of its own (field numbers and wire types from device-os
``proto_defs/src/cloud/describe.pb.h`` ``particle_cloud_FirmwareModule_FIELDLIST`` and, for the legacy reply,
``proto_defs/src/control/storage.pb.h@v5.5.0`` ``GetModuleInfoReply_Module_FIELDLIST``), and decoded with the
kiosk's own protobuf types; every field is compared with what Device OS puts there, worked out here from the bytes
in the device's flash: ``EncodeFirmwareModules`` (system/src/system_info_encoding.cpp) for 5.6.0 on,
``getModuleInfo`` (system/src/control/storage.cpp@v5.5.0) before.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import pytest

from firmware.builder import build_module
from firmware.module import parse_module
from firmware.platforms import STM32F1, Function
from hw.clock import VirtualClock
from hw.control import (
    FirmwareModule,
    FirmwareModuleDependency,
    GetModuleInfoReply,
    LegacyModule,
    RequestType,
    Result,
    decode,
    module_info_hash,
    parse_module_info,
)
from hw.sim.device_control import MODULE_INFO_FORMATS, control_handler, module_info_format, module_info_reply
from hw.sim.scenarios import build_device
from tests.fixture_paths import fixture_bytes

F = Function
VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
#: particle_cloud_FirmwareModule_FIELDLIST: field -> (name, wire type)
FIRMWARE_MODULE = {
    1: ("type", VARINT), 2: ("index", VARINT), 3: ("version", VARINT), 4: ("store", VARINT),
    5: ("max_size", VARINT), 6: ("checked_flags", FIXED32), 7: ("passed_flags", FIXED32), 8: ("hash", LEN),
    9: ("dependencies", LEN), 10: ("asset_dependencies", LEN), 11: ("size", VARINT), 12: ("security", LEN),
}  # fmt: skip
DEPENDENCY = {1: ("type", VARINT), 2: ("index", VARINT), 3: ("version", VARINT)}
#: particle_ctrl_GetModuleInfoReply_Module_FIELDLIST (v5.5.0)
LEGACY_MODULE = {
    1: ("type", VARINT), 2: ("index", VARINT), 3: ("version", VARINT), 4: ("size", VARINT), 5: ("validity", VARINT),
    6: ("dependencies", LEN),
}  # fmt: skip
#: module function -> particle_ctrl_FirmwareModuleType (storage.pb.h@v5.5.0)
LEGACY_TYPE = {F.BOOTLOADER: 1, F.SYSTEM_PART: 2, F.USER_PART: 3, F.MONO_FIRMWARE: 4, F.NCP_FIRMWARE: 5,
               F.RADIO_STACK: 6}  # fmt: skip
#: module_bounds_t.maximum_size by (function, index), hal/src/nRF52840/ota_module_bounds.c@v6.1.1 and
#: hal/src/rtl872x/ota_module_bounds.c@v6.2.0, read again for this test
MAX_SIZE = {
    ("nrf52840", 6101): {(2, 0): 0x0000C000, (4, 1): 0x000A4000, (5, 2): 0x00040000, (5, 1): 0x00020000,
                         (7, 0): 1500 * 1024, (8, 0): 0x30000 - 0x1000},
    ("nrf52840", 6200): {(2, 0): 0x0000C000, (4, 1): 0x0008C000, (5, 2): 0x00040000, (8, 0): 0x27000 - 0x1000},
    ("rtl872x", 6200): {(2, 0): 0x10000, (2, 1): 0x2000, (2, 2): 0x4A000, (4, 1): 0x180000, (5, 1): 0x180000},
}  # fmt: skip
ALL_CHECKS = 0x02 | 0x04 | 0x08 | 0x10  # MODULE_VALIDATION_INTEGRITY | DEPENDENCIES | RANGE | PLATFORM


# --- an independent protobuf wire reader ---------------------------------------------------------------------------


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def records(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field, wire type, value) of every record, in wire order."""
    out, at = [], 0
    while at < len(data):
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        if wire == VARINT:
            value, at = _varint(data, at)
        elif wire == FIXED32:
            (value,) = struct.unpack_from("<I", data, at)
            at += 4
        elif wire == FIXED64:
            (value,) = struct.unpack_from("<Q", data, at)
            at += 8
        elif wire == LEN:
            length, at = _varint(data, at)
            value, at = data[at : at + length], at + length
        else:
            raise AssertionError(f"wire type {wire} in {data.hex()}")
        out.append((field, wire, value))
    assert at == len(data)
    return out


def fields(data: bytes, schema: dict) -> dict[str, object]:
    """One message's fields by name (repeated fields as lists), each record's wire type checked against the proto;
    proto3 defaults for the fields absent (nanopb leaves them out; an encoder may also write them)."""
    out: dict[str, object] = {}
    for field, wire, value in records(data):
        assert field in schema, f"field {field} is not in the proto"
        name, expected_wire = schema[field]
        assert wire == expected_wire, f"{name}: wire type {wire}, the proto says {expected_wire}"
        if name in ("dependencies", "asset_dependencies"):
            out.setdefault(name, []).append(value)
        else:
            assert name not in out, f"{name} twice"
            out[name] = value
    for name, wire in schema.values():
        out.setdefault(name, [] if name.endswith("dependencies") else (b"" if wire == LEN else 0))
    return out


def reply_modules(data: bytes, field: int) -> list[bytes]:
    recs = records(data)
    assert {f for f, _, _ in recs} <= {field}, f"the reply carries fields {sorted({f for f, _, _ in recs})}"
    return [value for _, _, value in recs]


# --- what Device OS puts there, worked out from flash --------------------------------------------------------------


def expected_current(device, family_version) -> list[dict[str, object]]:
    """Each installed module as EncodeFirmwareModules encodes it, from the module bytes in flash."""
    out = []
    for (function, index), m in sorted(device.modules.items()):
        if function == F.RADIO_STACK:  # platform_radio_stack_fetch_module_info: SD_UNIQUE_STR at 0x1000+0x2018
            sha, size, deps = device.flash.read(0, 0x3018, 20) + bytes(12), 0, []
        elif function == F.NCP_FIRMWARE:  # platform_ncp_fetch_module_info: the version in each u16 of the sha
            sha, size, deps = struct.pack("<16H", *[m.version] * 16), 0, []
        else:
            data = m.data
            start, end = struct.unpack_from("<II", data, m.module.prefix_offset)
            sha = data[len(data) - 38 : len(data) - 6]  # module_info_suffix_t.sha, just before size and CRC
            size = end - start + 4  # "if (pbModule.size > 0) pbModule.size += sizeof(uint32_t) /* CRC */"
            assert size == len(data)
            deps = []
            for at in (16, 20):
                f, i, v = struct.unpack_from("<BBH", data, m.module.prefix_offset + at)
                if f in (1, 2, 3, 4, 5, 7, 8):  # is_module_function_valid
                    deps.append({"type": f, "index": i, "version": v})
        entry = {"type": function, "index": index, "version": m.version, "store": 0,
                 "max_size": MAX_SIZE[family_version][(function, index)], "checked_flags": ALL_CHECKS,
                 "passed_flags": ALL_CHECKS, "hash": sha, "dependencies": deps, "asset_dependencies": [],
                 "size": size, "security": b""}  # fmt: skip
        out.append(entry)
    return out


def walked(module: bytes) -> dict[str, object]:
    got = fields(module, FIRMWARE_MODULE)
    got["dependencies"] = [fields(d, DEPENDENCY) for d in got["dependencies"]]
    return got


@pytest.mark.parametrize(
    ("platform", "family_version"),
    [("boron", ("nrf52840", 6101)), ("argon", ("nrf52840", 6101)), ("p2", ("rtl872x", 6200))],
)
def test_the_current_reply_field_by_field(platform, family_version):
    device = build_device("healthy", platform, VirtualClock())
    assert device.system_version == family_version[1]
    data = module_info_reply(device)
    expected = expected_current(device, family_version)
    assert [walked(m) for m in reply_modules(data, 2)] == expected  # field 2: modules; no modules_deprecated
    # the kiosk's own types decode the same
    decoded = decode(GetModuleInfoReply, data)
    assert decoded.modules_deprecated == []
    for got, want in zip(decoded.modules, expected, strict=True):
        assert (got.type, got.index, got.version, got.store, got.max_size) == (
            want["type"], want["index"], want["version"], want["store"], want["max_size"]
        )  # fmt: skip
        assert (got.checked_flags, got.passed_flags, got.hash, got.size) == (
            want["checked_flags"], want["passed_flags"], want["hash"], want["size"]
        )  # fmt: skip
        assert got.dependencies == [FirmwareModuleDependency(**d) for d in want["dependencies"]]
        assert got.asset_dependencies == [] and got.security is None
    # and so does the client, with the sizes a module file has
    infos = parse_module_info(data)
    assert [(i.function, i.image_size, i.max_size, i.store, i.hash) for i in infos] == [
        (w["type"], w["size"], w["max_size"], 0, w["hash"]) for w in expected
    ]
    assert all(i.valid and not i.legacy for i in infos)


def test_the_argon_ncp_is_reported_without_size_or_dependencies_and_with_its_version_as_hash():
    device = build_device("healthy", "argon", VirtualClock())
    ncp = next(m for m in parse_module_info(module_info_reply(device)) if m.function == F.NCP_FIRMWARE)
    version = device.modules[(F.NCP_FIRMWARE, 0)].version
    assert (ncp.index, ncp.version, ncp.size, ncp.image_size, ncp.dependencies) == (0, version, 0, 0, ())
    assert ncp.hash == bytes([version & 0xFF, version >> 8]) * 16 and ncp.max_size == 1500 * 1024
    assert ncp.checked_flags == ncp.passed_flags == ALL_CHECKS


def nanopb(**values) -> bytes:
    """A FirmwareModule as nanopb writes it: fields in number order, proto3 defaults left out."""
    out = b""
    for number, (name, wire) in FIRMWARE_MODULE.items():
        value = values.get(name)
        if not value:
            continue
        if wire == VARINT:
            out += _key(number, VARINT) + _uvarint(value)
        elif wire == FIXED32:
            out += _key(number, FIXED32) + struct.pack("<I", value)
        elif name == "dependencies":
            for dep in value:
                body = b"".join(_key(n, VARINT) + _uvarint(dep[k]) for n, (k, _) in DEPENDENCY.items() if dep[k])
                out += _key(number, LEN) + _uvarint(len(body)) + body
        else:
            out += _key(number, LEN) + _uvarint(len(value)) + value
    return out


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _uvarint(number << 3 | wire)


def test_the_reply_decodes_as_the_same_message_nanopb_would_write():
    device = build_device("healthy", "boron", VirtualClock())
    expected = expected_current(device, ("nrf52840", 6101))
    wire = b"".join(_key(2, LEN) + _uvarint(len(m)) + m for m in (nanopb(**e) for e in expected))
    assert decode(GetModuleInfoReply, wire) == decode(GetModuleInfoReply, module_info_reply(device))


def test_the_legacy_reply_of_a_photon_on_2_3_0_sends_end_minus_start():
    device = build_device("healthy", "photon", VirtualClock())
    assert device.system_version == 2301
    data = module_info_reply(device)
    legacy = [fields(m, LEGACY_MODULE) for m in reply_modules(data, 1)]  # field 1: modules_deprecated only
    installed = sorted(device.modules.items())
    assert len(legacy) == len(installed)
    for got, ((function, index), m) in zip(legacy, installed, strict=True):
        start, end = struct.unpack_from("<II", m.data, m.module.prefix_offset)
        assert (got["type"], got["index"], got["version"]) == (LEGACY_TYPE[function], index, m.version)
        assert got["size"] == end - start == len(m.data) - 4  # no CRC in the legacy size
        assert got["validity"] == 0
    infos = parse_module_info(data)
    assert [i.image_size for i in infos] == [len(m.data) for _, m in installed]  # the client adds the CRC back
    assert all(i.hash is None and i.max_size is None and i.store is None for i in infos)


# --- the version table ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "version", "current", "system_max"),
    [("nrf52840", 4200, False, None), ("nrf52840", 5501, False, None), ("nrf52840", 5600, True, 0xA4000),
     ("nrf52840", 6101, True, 0xA4000), ("nrf52840", 6102, True, 0x8C000), ("nrf52840", 6200, True, 0x8C000),
     ("rtl872x", 5501, False, None), ("rtl872x", 5600, True, 0x180000), ("stm32f2xx", 2301, False, None)],
)  # fmt: skip
def test_which_format_each_version_answers_in(family, version, current, system_max):
    fmt = module_info_format(family, version)
    assert fmt.current is current and fmt.source
    assert fmt.max_sizes.get((F.SYSTEM_PART, 1)) == system_max


def test_every_row_names_its_source_and_rows_are_in_order():
    for family in {f.family for f in MODULE_INFO_FORMATS}:
        rows = [f for f in MODULE_INFO_FORMATS if f.family == family]
        assert [r.since for r in rows] == sorted({r.since for r in rows}) and rows[0].since == 0
        assert all("device-os" in r.source or ".cpp" in r.source or ".c" in r.source for r in rows)
        assert all(bool(r.max_sizes) == r.current for r in rows)


def _swap_system_part(device, version: int) -> None:
    system = device.modules[(F.SYSTEM_PART, 1)].module
    data = build_module(
        platform_id=device.platform.id,
        function=F.SYSTEM_PART,
        index=1,
        version=version,
        start_address=system.start_address,
        dependencies=list(system.real_dependencies),
        seed=7,
    )
    device.install(data)
    device.rescan()
    assert device.system_version == version


def test_the_same_boron_answers_by_its_own_version():
    device = build_device("healthy", "boron", VirtualClock())
    _swap_system_part(device, 5501)  # 5.5.0: the legacy list
    old = decode(GetModuleInfoReply, module_info_reply(device))
    assert old.modules == [] and [m.type for m in old.modules_deprecated] == [1, 2, 3, 6]
    system = next(m for m in old.modules_deprecated if m.type == 2)
    assert system.size == len(device.modules[(F.SYSTEM_PART, 1)].data) - 4
    _swap_system_part(device, 5600)  # 5.6.0: the new one
    new = decode(GetModuleInfoReply, module_info_reply(device))
    assert new.modules_deprecated == [] and [m.type for m in new.modules] == [2, 4, 5, 8]
    assert all(m.hash is not None and len(m.hash) == 32 and m.max_size > 0 for m in new.modules)


def _corrupt_app(device) -> bytes:
    app = device.modules[next(k for k in device.modules if k[0] == F.USER_PART)]
    start = app.module.start_address
    damaged = bytearray(app.data)
    damaged[len(damaged) // 2] ^= 0xFF  # the CRC no longer matches
    device.flash.load(0, start, bytes(damaged))
    device.rescan()
    return bytes(damaged)


@pytest.mark.parametrize("platform", ["boron", "p2"])
def test_an_app_that_fails_its_crc_is_left_out_on_gen3_and_gen4(platform):
    """HAL_System_Info zeroes an invalid user part (nRF52840 from 3.2.0, rtl872x always)."""
    device = build_device("healthy", platform, VirtualClock())
    _corrupt_app(device)
    assert F.USER_PART not in {m.function for m in parse_module_info(module_info_reply(device))}


def test_an_app_that_fails_its_crc_is_reported_so_on_a_photon():
    device = build_device("healthy", "photon", VirtualClock())
    _corrupt_app(device)
    app = next(m for m in parse_module_info(module_info_reply(device)) if m.function == F.USER_PART)
    assert app.failed == {"integrity"} and app.validity == 0x01


def test_integrity_is_the_crc_only():
    """FLASH_VerifyCRC32: a module whose suffix SHA-256 is wrong but whose CRC is right passes integrity, and its
    stored SHA-256 is what the device reports."""
    device = build_device("healthy", "boron", VirtualClock())
    system = device.modules[(F.SYSTEM_PART, 1)]
    data = bytearray(system.data)
    data[-38:-6] = bytes(range(32))
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "big")
    assert parse_module(bytes(data)).crc_ok, "the CRC is stored big-endian (module-format.md 2.3)"
    device.flash.load(0, system.module.start_address, bytes(data))
    device.rescan()
    info = next(m for m in parse_module_info(module_info_reply(device)) if m.function == F.SYSTEM_PART)
    assert info.valid and info.hash == bytes(range(32))


def test_the_radio_stack_hash_is_the_softdevice_unique_string_of_a_real_softdevice():
    """argon-softdevice-6.1.1.bin holds SD_UNIQUE_STR at flash 0x3018; the device and the client agree on it."""
    real = fixture_bytes("argon-softdevice-6.1.1.bin")
    device = build_device("healthy", "argon", VirtualClock())
    device.install(real)
    device.rescan()
    module = parse_module(real)
    unique = real[module.prefix_size + 0x2018 : module.prefix_size + 0x2018 + 20]
    assert unique.hex() == "935ffeeda0843c73f87462145e06c0cb72f21360"
    radio = next(m for m in parse_module_info(module_info_reply(device)) if m.function == F.RADIO_STACK)
    assert radio.version == module.version == 182 and radio.hash == unique + bytes(12)
    assert module_info_hash(module) == radio.hash


@pytest.mark.parametrize("platform", ["boron", "argon", "p2"])
def test_the_client_works_out_the_hash_each_module_file_will_be_reported_with(platform):
    """hw.control.module_info_hash on the files the device was built from agrees with what the device reports."""
    from firmware.releases import synthetic_release

    device = build_device("healthy", platform, VirtualClock())
    release = {"p2": "6.2.0"}.get(platform, "6.1.1")
    files = [parse_module(d) for d in synthetic_release(platform, release).values()]
    by_identity = {(m.function, m.index): module_info_hash(m) for m in files}
    for info in parse_module_info(module_info_reply(device)):
        if info.function == F.USER_PART:
            continue  # the device runs Tinker, which synthetic_release builds too; checked by identity below
        assert info.hash == by_identity[(info.function, info.index)], (info.function, info.index)


def test_a_legacy_module_of_size_0_stays_0():
    info = parse_module_info(bytes(GetModuleInfoReply(modules_deprecated=[LegacyModule(type=6, version=202)])))
    assert info[0].image_size == 0
    info = parse_module_info(bytes(GetModuleInfoReply(modules=[FirmwareModule(type=8, version=202)])))
    assert info[0].image_size == 0


def test_a_family_without_a_row_answers_not_supported():
    """The Core (stm32f1xx) never had request 90: no row, so the handler says NOT_SUPPORTED rather than crash."""
    with pytest.raises(LookupError):
        module_info_format("stm32f1xx", 1400)
    device = build_device("healthy", "boron", VirtualClock())
    device.platform = dataclasses.replace(device.platform, mcu=STM32F1)
    assert control_handler(device)(RequestType.GET_MODULE_INFO, b"")[0] == Result.NOT_SUPPORTED
