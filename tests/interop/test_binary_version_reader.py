"""binary-version-reader, Particle's own module parser, agrees with `kiosk firmware show --json` (issue 14, 4b).

The peer is binary-version-reader's ``HalModuleParser.parseFile`` (the version pinned in tests/peers/package.json),
run by ``tests/peers/bvr_parse.js`` once per batch of files. It reads every real binary in
``../shared/fixtures/particle-binaries`` (and its ``corpus/``) and what ``firmware.builder.build_module`` and
``firmware.releases.synthetic_release`` make for every platform family; each file is compared field by field with
the kiosk's JSON (and, for the one field that JSON leaves out, the Python API behind it, ``firmware.module``).

A mismatch names the peer's call, the file, the field on both sides, the bytes the field comes from and the source
fact that says what those bytes mean. Where the two legitimately differ (a field one of them does not report, a
different way to write the same fact), the test asserts that difference explicitly, with the source, instead of
leaving the field out.

Sources: device-os ``dynalib/inc/module_info.h`` at v6.1.1 (module_info_t, module_info_suffix_t, the extension
TLVs, module_info_crc_t); binary-version-reader 3.1.3 ``lib/HalModuleParser.js`` (what the peer reads and how).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firmware.builder import (
    asset_dependency_extension,
    asset_module,
    build_module,
    hash_extension,
    name_extension,
    security_mode_extension,
)
from firmware.module import FLAG_NAMES, ExtensionType, ModuleFlag, NotAModuleError, parse_module
from firmware.platforms import FUNCTION_NAMES, PLATFORMS, Function
from firmware.releases import synthetic_release
from kiosk.cli import main
from tests.fixture_paths import CORPUS, FIXTURES
from tests.interop.conftest import LONG, require_peer, run_node_lines

PEER = "binary-version-reader"
SCRIPT = "bvr_parse.js"
REAL = sorted(FIXTURES.glob("*.bin")) + sorted(CORPUS.glob("*.bin"))

# --- the facts each field rests on -----------------------------------------------------------------------------

MODULE_INFO_H = "device-os dynalib/inc/module_info.h@v6.1.1"
PREFIX_FACT = (
    f"module_info_t ({MODULE_INFO_H}: start +0, end +4, reserved +8, flags +9, module_version +10, platform_id +12, "
    "module_function +14, module_index +15, dependency +16, dependency2 +20; little-endian) at the module's "
    "prefix offset"
)
SUFFIX_FACT = (
    f"module_info_suffix_t ({MODULE_INFO_H}): ... reserved u16, sha[32], size u16, just before the CRC; product id "
    "and version (u16 each) right above reserved when size >= 40 (binary-version-reader lib/HalModuleParser.js "
    "_readSuffix, which reports -1 for both when size < 40)"
)
CRC_FACT = f"module_info_crc_t ({MODULE_INFO_H}): CRC-32 of every byte before it, stored big-endian"
EXT_FACT = (
    f"module_info_extension_t TLVs {{u16 type, u16 length (header included)}} ({MODULE_INFO_H}): in the prefix "
    "after module_info_t when MODULE_INFO_FLAG_PREFIX_EXTENSIONS (0x10) is set, ended by END; in the suffix from "
    "len - 4 - suffix size up to module_info_suffix_base_t"
)
PREFIX_FIELDS: tuple[tuple[str, str, int, int], ...] = (
    # (peer's prefixInfo key, kiosk key, offset in module_info_t, size)
    ("moduleStartAddy", "start_address", 0, 4),
    ("moduleEndAddy", "end_address", 4, 4),
    ("reserved", "mcu_target", 8, 1),
    ("moduleFlags", "flags", 9, 1),
    ("moduleVersion", "version", 10, 2),
    ("platformID", "platform_id", 12, 2),
    ("moduleFunction", "function", 14, 1),
    ("moduleIndex", "index", 15, 1),
)
PREFIX_KEYS = (
    {key for key, *_ in PREFIX_FIELDS}
    | {f"{d}Module{f}" for d in ("dep", "dep2") for f in ("Function", "Index", "Version")}
    | {"prefixSize", "prefixOffset", "extensions"}
)
SUFFIX_KEYS = {"productId", "productVersion", "fwUniqueId", "reserved", "suffixSize", "crcBlock", "extensions"}
FUNCTION_NUMBERS = {name: number for number, name in FUNCTION_NAMES.items()}
FLAG_NUMBERS = {name: int(bit) for bit, name in FLAG_NAMES.items()}


# --- running both sides ----------------------------------------------------------------------------------------


def peer_parse(paths: list[Path]) -> tuple[dict[str, Any], dict[str, dict]]:
    """(the peer's constants, {path: its JSON line}) from one node run per batch."""
    require_peer(PEER)
    lines = run_node_lines(SCRIPT, ["--constants", *map(str, paths)])
    constants = lines[0]["constants"]
    by_file = {line["file"]: line for line in lines[1:]}
    assert sorted(by_file) == sorted(map(str, paths)), "bvr_parse.js must print one line per file"
    return constants, by_file


def kiosk_show(paths: list[Path]) -> dict[str, dict]:
    """`kiosk firmware show --json PATH...`, in process: {path: its JSON object}."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["firmware", "show", "--json", *map(str, paths)])
    assert status in (0, 1), f"kiosk firmware show exited {status}"
    return {doc["file"]: doc for doc in json.loads(out.getvalue())}


# --- comparing one file ----------------------------------------------------------------------------------------


class Report:
    """Collects the disagreements about one file, each worded with the call, the bytes and the source fact."""

    def __init__(self, path: str, data: bytes, version: str):
        self.path, self.data, self.call = path, data, f"{PEER} {version} HalModuleParser.parseFile({path!r})"
        self.lines: list[str] = []

    def bytes_at(self, offset: int, size: int) -> str:
        if offset < 0:
            return "(no such bytes)"
        return f"file bytes [{offset}:{offset + size}] = {self.data[offset : offset + size].hex() or '(none)'}"

    def check(self, peer_field: str, peer: Any, kiosk_field: str, kiosk: Any, where: str, fact: str) -> None:
        if peer != kiosk:
            self.lines.append(
                f"{self.call}: {peer_field} = {peer!r}, but `kiosk firmware show --json` {kiosk_field} = {kiosk!r}; "
                f"{where}; source: {fact}"
            )


def _flags_value(names: list[str]) -> int:
    value = 0
    for name in names:
        value |= FLAG_NUMBERS[name] if name in FLAG_NUMBERS else int(name.removeprefix("unknown-"), 16)
    return value


def _function_number(name: str) -> int:
    """The kiosk's function name (``system-part``, or ``function-129`` for an unknown one) as its number."""
    return FUNCTION_NUMBERS[name] if name in FUNCTION_NUMBERS else int(name.removeprefix("function-"))


def _ext_type(name: str) -> int:
    if name.startswith("type-0x"):
        return int(name.removeprefix("type-"), 16)
    return int(ExtensionType[name.upper().replace("-", "_")])


#: Decoded fields of each extension type: (peer key, kiosk key, how the kiosk's value reads in the peer's words).
_EXT_FIELDS: dict[int, tuple[tuple[str, str, Callable[[Any], Any]], ...]] = {
    ExtensionType.PRODUCT_DATA: (("productId", "product_id", int), ("productVersion", "product_version", int)),
    ExtensionType.DYNAMIC_LOCATION: (
        # the peer prints addresses as hex without 0x (HalModuleParser._readExtension)
        ("moduleStartAddress", "module_start_address", lambda v: f"{v:x}"),
        ("dynalibLoadAddress", "dynalib_load_address", lambda v: f"{v:x}"),
        ("dynalibStartAddress", "dynalib_start_address", lambda v: f"{v:x}"),
    ),
    ExtensionType.DEPENDENCY: (
        ("moduleFunction", "function", _function_number),
        ("moduleIndex", "index", int),
        ("moduleVersion", "version", int),
        ("targetId", "target_id", int),
    ),
    ExtensionType.HASH: (("hashType", "hash_type", int), ("hash", "hash", str)),
    ExtensionType.NAME: (("name", "name", str),),
    ExtensionType.ASSET_DEPENDENCY: (("hashType", "hash_type", int), ("hash", "hash", str), ("name", "name", str)),
    ExtensionType.SECURITY_MODE: (("securityMode", "mode", lambda v: {"none": 0, "protected": 1}.get(v, v)),),
    ExtensionType.ASSET_TYPE: (("assetType", "asset_type", int),),
}


def _compare_extensions(r: Report, where: str, peer: list[dict], kiosk: list[dict], base: int) -> None:
    """``base``: what to add to the peer's offsets to make them file offsets."""
    r.check(
        f"{where}Info.extensions (type, length)",
        [(e["type"], e["length"]) for e in peer],
        f"{where}_extensions (type, length)",
        [(_ext_type(e["type"]), e["length"]) for e in kiosk],
        r.bytes_at(kiosk[0]["offset"], 4) if kiosk else "no extensions on the kiosk's side",
        EXT_FACT,
    )
    for p, k in zip(peer, kiosk, strict=False):
        ext = f"{where} extension {k['type']} at file offset {k['offset']}"
        # binary-version-reader gives prefix extension offsets relative to module_info_t: _readPrefix hands
        # _parsePrefix fileBuffer.slice(prefixOffset), and _readExtension reports offsets into that slice. The kiosk
        # gives file offsets. The same bytes, then, when peer offset + prefix offset == kiosk offset.
        r.check(
            f"{ext}: offset (+{base})", p["offset"] + base, "offset", k["offset"], r.bytes_at(k["offset"], 4), EXT_FACT
        )
        # the raw TLV the peer kept (header included) is the file's bytes at the kiosk's offset
        r.check(
            f"{ext}: data",
            p.get("data"),
            "the file at its offset and length",
            r.data[k["offset"] : k["offset"] + k["length"]].hex(),
            r.bytes_at(k["offset"], k["length"]),
            EXT_FACT,
        )
        for peer_key, kiosk_key, as_peer in _EXT_FIELDS.get(p["type"], ()):
            kiosk_value = as_peer(k[kiosk_key]) if kiosk_key in k else None
            fact = f"{EXT_FACT}; payload of {k['type']} per {MODULE_INFO_H}"
            r.check(
                f"{ext}: {peer_key}",
                p.get(peer_key),
                kiosk_key,
                kiosk_value,
                r.bytes_at(k["offset"], k["length"]),
                fact,
            )
        if p["type"] == ExtensionType.SECURITY_MODE:
            certificate = p.get("certificate", "")  # the peer leaves it out when empty
            r.check(
                f"{ext}: certificate bytes",
                len(certificate) // 2,
                "certificate_length",
                k.get("certificate_length"),
                r.bytes_at(k["offset"], k["length"]),
                EXT_FACT,
            )


def disagreements(path: str, data: bytes, line: dict, doc: dict, constants: dict) -> list[str]:
    """Every field where the peer and the kiosk disagree about one sound-or-not module file."""
    r = Report(path, data, constants["version"])
    assert "error" not in line, f"{r.call} threw {line['error']!r}; the kiosk parsed the file: {doc['problems']}"
    assert doc["is_module"], f"`kiosk firmware show` says {path} is no module: {doc['problems']}; the peer read it"
    info = line["fileInfo"]
    prefix, suffix, crc = info["prefixInfo"], info["suffixInfo"], info["crc"]
    module = parse_module(data)  # for the one field the JSON leaves out (suffix reserved)
    size = len(data)

    # -- where module_info_t is, and how big the prefix is --
    r.check(
        "prefixInfo.prefixOffset",
        prefix["prefixOffset"],
        "prefix_offset",
        doc["prefix_offset"],
        r.bytes_at(doc["prefix_offset"], 24),
        f"{PREFIX_FACT}; found by searching the known offsets 0, 0x200 "
        "(nRF52840 vector table), 0x184 (STM32F2), 0xC0, 0x10C, then every word (HalModuleParser."
        "_findModulePrefixOffset)",
    )
    at = doc["prefix_offset"]
    kiosk_values = {
        "start_address": f"{doc['start_address']:x}",  # the peer prints addresses as hex without 0x
        "end_address": f"{doc['end_address']:x}",
        "mcu_target": doc["mcu_target"],
        "flags": _flags_value(doc["flags"]),
        "version": doc["version"],
        "platform_id": doc["platform_id"],
        "function": _function_number(doc["function"]),
        "index": doc["index"],
    }
    for peer_key, kiosk_key, offset, width in PREFIX_FIELDS:
        r.check(
            f"prefixInfo.{peer_key}",
            prefix[peer_key],
            kiosk_key,
            kiosk_values[kiosk_key],
            r.bytes_at(at + offset, width),
            PREFIX_FACT,
        )
    peer_deps = [
        (prefix[f"{d}ModuleFunction"], prefix[f"{d}ModuleIndex"], prefix[f"{d}ModuleVersion"]) for d in ("dep", "dep2")
    ]
    r.check(
        "prefixInfo.dep*/dep2* (non-empty)",
        [d for d in peer_deps if d != (0, 0, 0)],
        "dependencies",
        [(_function_number(d["function"]), d["index"], d["version"]) for d in doc["dependencies"]],
        r.bytes_at(at + 16, 8),
        f"{PREFIX_FACT}; module_dependency_t {{u8 function, u8 index, u16 version}}, empty when all zero",
    )
    r.check(
        "prefixInfo.prefixSize",
        prefix["prefixSize"],
        "prefix_size",
        doc["prefix_size"],
        r.bytes_at(at + 24, max(0, doc["prefix_size"] - 24)),
        EXT_FACT,
    )
    _compare_extensions(r, "prefix", prefix.get("extensions", []), doc["prefix_extensions"], base=at)

    # -- the suffix --
    r.check(
        "suffixInfo.suffixSize",
        suffix["suffixSize"],
        "suffix_size",
        doc["suffix_size"],
        r.bytes_at(size - 6, 2),
        SUFFIX_FACT,
    )
    r.check(
        "suffixInfo.fwUniqueId", suffix["fwUniqueId"], "sha256", doc["sha256"], r.bytes_at(size - 38, 32), SUFFIX_FACT
    )
    r.check(
        "suffixInfo.reserved",
        suffix["reserved"],
        "firmware.module.Module.suffix_reserved (not in the JSON)",
        module.suffix_reserved,
        r.bytes_at(size - 40, 2),
        SUFFIX_FACT,
    )
    # Absent product data: the peer says -1 (HalModuleParser._readSuffix, suffix size < 40), the kiosk null.
    for peer_key, kiosk_key, offset in (
        ("productId", "product_id", size - 44),
        ("productVersion", "product_version", size - 42),
    ):
        kiosk_value = -1 if doc[kiosk_key] is None else doc[kiosk_key]
        r.check(
            f"suffixInfo.{peer_key}",
            suffix[peer_key],
            f"{kiosk_key} (null read as -1)",
            kiosk_value,
            r.bytes_at(offset, 2),
            SUFFIX_FACT,
        )
    _compare_extensions(r, "suffix", suffix.get("extensions", []), doc["suffix_extensions"], base=0)

    # -- the CRC --
    r.check("crc.ok", crc["ok"], "crc_ok", doc["crc_ok"], r.bytes_at(size - 4, 4), CRC_FACT)
    r.check("crc.storedCrc", crc["storedCrc"], "crc32", doc["crc32"], r.bytes_at(size - 4, 4), CRC_FACT)
    r.check("suffixInfo.crcBlock", suffix["crcBlock"], "crc32", doc["crc32"], r.bytes_at(size - 4, 4), CRC_FACT)
    r.check(
        "crc.actualCrc",
        crc["actualCrc"],
        "crc_computed",
        doc["crc_computed"],
        f"CRC-32 of bytes [0:{size - 4}]",
        CRC_FACT,
    )

    # -- what parseBuffer derives from the extensions --
    kiosk_assets = [
        {"hashType": e["hash_type"], "hash": e["hash"], "name": e["name"]}
        for e in doc["prefix_extensions"] + doc["suffix_extensions"]
        if e["type"] == "asset-dependency"
    ]
    r.check(
        "assets",
        info.get("assets", []),
        "asset-dependency extensions",
        kiosk_assets,
        "the ASSET_DEPENDENCY TLVs above",
        f"{EXT_FACT}; HalModuleParser.parseBuffer collects them as assets",
    )
    peer_security = info.get("security", {}).get("mode")
    kiosk_security = {"none": 0, "protected": 1}.get(doc["security_mode"], doc["security_mode"])
    r.check(
        "security.mode",
        peer_security,
        "security_mode",
        kiosk_security,
        "the SECURITY_MODE TLV above",
        f"{EXT_FACT}; HalModuleParser.parseBuffer reports the first as `security`",
    )

    # -- names, by the peer's own tables --
    names = {number: name for name, number in constants["Platform"].items() if name != "ASSETTRACKER"}
    if doc["platform_id"] in names:  # device-constants platforms with a generation (ModuleInfo.Platform)
        r.check(
            "ModuleInfo.Platform name",
            names[doc["platform_id"]].lower(),
            "platform",
            doc["platform"],
            r.bytes_at(at + 12, 2),
            "@particle/device-constants platform names (binary-version-reader lib/ModuleInfo.js ModuleInfoPlatform)",
        )

    # -- what only the kiosk reports: asserted as such, not left out --
    # binary-version-reader never hashes the module: fwUniqueId is the stored SHA-256, unchecked (HalModuleParser.js
    # has no SHA-256 at all), so `sha_ok`/`sha_range` have no counterpart. The kiosk checks it over [0, len-38), or the
    # payload for create_module.py wrappers (module-format.md).
    # Every field the peer reports is one compared above; a new one (a SHA-256 check, say) fails here until it is.
    assert set(info) <= {"crc", "prefixInfo", "suffixInfo", "assets", "security"}, f"{r.call}: new fields {set(info)}"
    assert set(suffix) <= SUFFIX_KEYS, f"{r.call}: new suffixInfo fields {set(suffix) - SUFFIX_KEYS}"
    assert set(prefix) <= PREFIX_KEYS, f"{r.call}: new prefixInfo fields {set(prefix) - PREFIX_KEYS}"
    expected_sha = hashlib.sha256(data[: size - 38]).hexdigest() == doc["sha256"]
    assert doc["sha_ok"] == (expected_sha or doc["sha_range"] == "payload"), f"{path}: sha_ok {doc['sha_ok']}"
    # Compression: parseBuffer does not read the compressed_module_header; the kiosk does, exactly when the peer's
    # flags say COMPRESSED (device-os dynalib/inc/module_info.h MODULE_INFO_FLAG_COMPRESSED).
    assert "compression" not in info, f"{r.call} now decodes compression: compare it"
    r.check(
        "moduleFlags & COMPRESSED",
        bool(prefix["moduleFlags"] & constants["Flags"]["COMPRESSED"]),
        "compression is not null",
        doc["compression"] is not None,
        r.bytes_at(at + 9, 1),
        PREFIX_FACT,
    )
    # Size: the peer does not report it; the kiosk's is the file's length (or the first module's, if COMBINED).
    if not prefix["moduleFlags"] & ModuleFlag.COMBINED:
        assert doc["size"] == size, f"{path}: kiosk size {doc['size']} for a {size}-byte file"
    return r.lines


# --- the real binaries ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> tuple[dict, dict[str, dict], dict[str, dict]]:
    constants, peer = peer_parse(REAL)
    return constants, peer, kiosk_show(REAL)


def test_every_real_fixture_is_read_by_both():
    assert len(REAL) >= 71, f"expected the 13 documented files and the corpus, found {len(REAL)} in {FIXTURES}"


#: Files the peer cannot read at all, though the kiosk parses them and reports what is wrong.
PEER_THROWS = {
    # RC2_bootloader.bin is a malformed legacy file (corpus/README.md): its suffix size points at a TLV whose length
    # is 0. HalModuleParser._readSuffix throws 'Invalid extension length' there; the kiosk reports the same TLV as a
    # problem ("claims 0 bytes") and goes on.
    "RC2_bootloader.bin": "Invalid extension length",
}


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_binary_version_reader_agrees_with_firmware_show(real, path):
    constants, peer, kiosk = real
    line, doc, data = peer[str(path)], kiosk[str(path)], path.read_bytes()
    if path.name in PEER_THROWS:
        assert line.get("error") == PEER_THROWS[path.name], f"{PEER} on {path.name}: {line}"
        suffix_at = len(data) - 4 - int.from_bytes(data[-6:-4], "little")
        assert int.from_bytes(data[suffix_at + 2 : suffix_at + 4], "little") == 0, "the TLV at the suffix is not empty"
        assert any(f"extension at offset {suffix_at} claims 0 bytes" in p for p in doc["problems"]), doc["problems"]
        return
    found = disagreements(str(path), data, line, doc, constants)
    assert not found, "\n".join(found)


def test_the_peer_and_the_kiosk_flag_the_same_broken_fixtures(real):
    """The peer's only verdict is crc.ok; the kiosk's problems go further (size, suffix, SHA-256). Each file with a
    bad CRC for one has it for the other, and the files the kiosk finds sound all pass the peer's CRC."""
    _, peer, kiosk = real
    for path in REAL:
        line, doc = peer[str(path)], kiosk[str(path)]
        if "error" in line:
            continue  # PEER_THROWS, asserted above
        assert line["fileInfo"]["crc"]["ok"] == doc["crc_ok"], path.name
        if not doc["problems"]:
            assert line["fileInfo"]["crc"]["ok"], path.name


# --- what the kiosk's builder makes --------------------------------------------------------------------------------

#: Releases per MCU family, for synthetic_release (each in the release table with its bootloader version).
RELEASES = {
    "stm32f2xx": ("1.5.2", "2.3.0"),
    "nrf52840": ("1.5.2", "4.1.0", "5.3.1", "6.1.1", "6.2.0"),
    "rtl872x": ("5.0.0", "5.3.1", "6.2.0"),
}
#: The short profile: one platform of each family (and the Argon for its NCP), and platforms only the kiosk knows.
SHORT_PLATFORMS = {"photon", "boron", "argon", "p2", "core", "duo"}


def built_modules() -> dict[str, bytes]:
    """{name: bytes} of synthetic releases and of build_module over every slot of the platforms, in many shapes."""
    files: dict[str, bytes] = {}
    digest = hashlib.sha256(b"asset").digest()
    for p in PLATFORMS:
        if not LONG and p.name not in SHORT_PLATFORMS:
            continue
        for release in RELEASES.get(p.mcu.name, ()) if p.supported else ():
            for name, data in synthetic_release(p, release).items():
                files[f"release-{name}"] = data
            if not LONG:
                break
        slots = p.layout or ()
        shapes = [(slot.function, slot.index) for slot in slots] or [(Function.USER_PART, 1)]
        for function, index in dict.fromkeys(shapes):
            for suffix in ("auto", "base", "product", "extensions"):
                for variant in ("plain", "compressed", "prefix-extensions", "drop-module-info"):
                    kw: dict[str, Any] = {}
                    if variant == "compressed":
                        kw["compress"] = True
                    elif variant == "prefix-extensions":
                        kw["prefix_extensions"] = [asset_dependency_extension("asset.bin", digest)]
                    elif variant == "drop-module-info":
                        kw["flags"] = ModuleFlag.DROP_MODULE_INFO
                    if suffix in ("product", "extensions"):
                        kw["suffix_extensions"] = [name_extension("kiosk"), hash_extension(digest)]
                    if function == Function.BOOTLOADER and suffix == "extensions":
                        kw["suffix_extensions"] = [security_mode_extension(True, b"cert"), *kw["suffix_extensions"]]
                    data = build_module(
                        platform_id=p.id,
                        function=function,
                        index=index,
                        version=1234,
                        suffix=suffix,
                        dependencies=[(Function.SYSTEM_PART, 1, 4100), (Function.BOOTLOADER, 0, 1200)],
                        product_id=8178,
                        product_version=13,
                        reserved=0x21 if function == Function.NCP_FIRMWARE else 0,
                        body_size=700,
                        seed=len(files),
                        **kw,
                    )
                    files[f"build-{p.name}-{function}-{index}-{suffix}-{variant}.bin"] = data
    files["build-asset.bin"] = asset_module("cat.txt", b"meow" * 200)
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[dict, dict[str, dict], dict[str, dict], list[Path]]:
    folder = tmp_path_factory.mktemp("built-modules")
    paths = []
    for name, data in built_modules().items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    constants, peer = peer_parse(paths)
    return constants, peer, kiosk_show(paths), paths


def test_binary_version_reader_agrees_on_what_the_builder_makes(built):
    constants, peer, kiosk, paths = built
    families = {parse_module(p.read_bytes()).platform_id for p in paths}
    assert {6, 13, 12, 32} <= families, "the builder corpus covers the Gen2, Gen3 (with NCP) and rtl872x families"
    found: list[str] = []
    for path in paths:
        line, doc, data = peer[str(path)], kiosk[str(path)], path.read_bytes()
        assert doc["is_module"] and not doc["problems"], f"the builder made an unsound {path.name}: {doc['problems']}"
        found += disagreements(str(path), data, line, doc, constants)
    assert not found, f"{len(found)} disagreements over {len(paths)} built modules:\n" + "\n".join(found[:40])


def test_prefix_extension_offsets_differ_only_by_the_prefix_offset(built):
    """The one difference in how the two write the same fact, shown on a module with its prefix at 0x200: the peer's
    prefix extension offsets count from module_info_t (HalModuleParser._readPrefix parses fileBuffer.slice(
    prefixOffset)), the kiosk's from the start of the file."""
    _, peer, kiosk, paths = built
    path = next(p for p in paths if p.name == "build-boron-4-1-auto-prefix-extensions.bin")
    prefix = peer[str(path)]["fileInfo"]["prefixInfo"]
    doc = kiosk[str(path)]
    assert prefix["prefixOffset"] == doc["prefix_offset"] == 0x200
    assert [e["offset"] for e in prefix["extensions"]] == [24, 24 + prefix["extensions"][0]["length"]]
    assert [e["offset"] for e in doc["prefix_extensions"]] == [0x200 + e["offset"] for e in prefix["extensions"]]


def test_what_the_peer_reads_from_a_non_module_is_no_module_to_the_kiosk(tmp_path):
    """A file that is no module: the peer still returns a prefix (HalModuleParser._findModulePrefixOffset falls back
    to offset 0, its best-scoring guess) and only crc.ok says something is wrong; the kiosk says it is no module."""
    path = tmp_path / "notes.bin"
    path.write_bytes(b"This is a text file, not a Particle module.\n" * 40)
    constants, peer = peer_parse([path])
    line = peer[str(path)]
    assert line["fileInfo"]["prefixInfo"]["prefixOffset"] == 0 and line["fileInfo"]["crc"]["ok"] is False
    with pytest.raises(NotAModuleError):
        parse_module(path.read_bytes())
    doc = kiosk_show([path])[str(path)]
    assert doc["is_module"] is False and doc["problems"]
    assert constants["version"] == require_peer(PEER)
