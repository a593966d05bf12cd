"""What a Particle module binary is: parse it into an immutable value, check it, and re-encode it.

A module file is ``[vector table or image header][prefix][prefix extensions][body][suffix][CRC]``:

- the 24-byte ``module_info_t`` prefix (little-endian) at an offset that depends on the MCU
  family and module function, found the way the device finds it (a Cortex-M vector table's
  initial stack pointer, the Realtek image header) with a scored search as the fallback;
- the suffix, read backwards from the end: ``[extensions][product id, version][reserved]
  [SHA-256][suffix size]``;
- a CRC-32 over everything before it, stored big-endian.

Facts and sources: ../shared/reference/module-format.md. Bad bytes never raise anything but
:class:`NotAModuleError` (for a file that is no module at all); everything else that is wrong is
reported as data in :attr:`Module.problems`.

    >>> from firmware.builder import build_module
    >>> m = parse_module(build_module(platform_id=13, function=Function.USER_PART, version=6))
    >>> m.platform_name, m.function_name, m.crc_ok, m.problems
    ('boron', 'user-part', True, ())
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, NamedTuple

from firmware.platforms import (
    FUNCTION_NAMES,
    MCUS,
    RTL_IMAGE_SIGNATURE,
    Function,
    function_name,
    platform_by_id,
    platform_label,
)

PREFIX_SIZE = 24
CRC_SIZE = 4
SUFFIX_BASE_SIZE = 36  # reserved u16 + SHA-256 + size u16
SUFFIX_PRODUCT_SIZE = 40  # the base plus product id and version
SHA_OFFSET_FROM_END = 38  # the SHA-256 starts 38 bytes before the end of the file
MIN_MODULE_SIZE = PREFIX_SIZE + SUFFIX_BASE_SIZE + CRC_SIZE
EXTENSION_HEADER_SIZE = 4
COMPRESSION_HEADER_SIZE = 8

PREFIX_STRUCT = struct.Struct("<IIBBHHBB4s4s")  # module_info_t
_DEPENDENCY = struct.Struct("<BBH")
_NO_DEPENDENCY = bytes(_DEPENDENCY.size)
_EXT_HEADER = struct.Struct("<HH")
_COMPRESSION = struct.Struct("<HBBI")


class ModuleFlag(IntFlag):
    """module_info_flags_t, the byte at +9 of the prefix."""

    DROP_MODULE_INFO = 0x01
    COMPRESSED = 0x02
    COMBINED = 0x04
    ENCRYPTED = 0x08
    PREFIX_EXTENSIONS = 0x10


# Plain int keys and constants: ``int & IntFlag`` builds an enum member each time, which the parser (run on every
# file the library imports, and on every flipped bit of the property tests) paid for millions of times.
FLAG_NAMES: dict[int, str] = {
    int(flag): name
    for flag, name in (
        (ModuleFlag.DROP_MODULE_INFO, "drop-module-info"),
        (ModuleFlag.COMPRESSED, "compressed"),
        (ModuleFlag.COMBINED, "combined"),
        (ModuleFlag.ENCRYPTED, "encrypted"),
        (ModuleFlag.PREFIX_EXTENSIONS, "prefix-extensions"),
    )
}
KNOWN_FLAGS = sum(FLAG_NAMES)
_COMPRESSED = int(ModuleFlag.COMPRESSED)
_COMBINED = int(ModuleFlag.COMBINED)
_PREFIX_EXTENSIONS = int(ModuleFlag.PREFIX_EXTENSIONS)


class ExtensionType(IntEnum):
    """module_info_extension_type_t: the type of a TLV in the prefix or suffix."""

    END = 0x0000
    PRODUCT_DATA = 0x0001
    DYNAMIC_LOCATION = 0x0002
    DEPENDENCY = 0x0003
    HASH = 0x0010
    NAME = 0x0011
    ASSET_DEPENDENCY = 0x0012
    SECURITY_MODE = 0x0013
    ASSET_TYPE = 0x0014
    INVALID = 0xFFFF


class NotAModuleError(ValueError):
    """The bytes are not a Particle module at all (too short, or no plausible module header)."""


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dependency:
    """A module this one needs: function, index, and at least this module version."""

    function: int
    index: int
    version: int

    @property
    def is_empty(self) -> bool:
        return self.function == 0 and self.index == 0 and self.version == 0

    def encode(self) -> bytes:
        return _DEPENDENCY.pack(self.function, self.index, self.version)

    def to_json(self) -> dict[str, Any]:
        return {"function": function_name(self.function), "index": self.index, "version": self.version}

    def __str__(self) -> str:
        return f"{function_name(self.function)} {self.index} >= {self.version}"


EMPTY_DEPENDENCY = Dependency(0, 0, 0)


def _u16(payload: bytes, offset: int) -> int:
    return struct.unpack_from("<H", payload, offset)[0]


def _decode_product_data(p: bytes) -> dict[str, Any]:
    # Real files carry FFFF, then product id u16, then product version u16 (module-format.md 2.2).
    return {"product_id": _u16(p, 2), "product_version": _u16(p, 4)}


def _decode_dynamic_location(p: bytes) -> dict[str, Any]:
    start, load, dyn = struct.unpack_from("<III", p)
    return {"module_start_address": start, "dynalib_load_address": load, "dynalib_start_address": dyn}


def _decode_dependency(p: bytes) -> dict[str, Any]:
    function, index, version, target = struct.unpack_from("<BBHI", p)
    return {"function": function_name(function), "index": index, "version": version, "target_id": target}


def _decode_hash(p: bytes) -> dict[str, Any]:
    hash_type, length = p[0], p[1]
    if len(p) < 2 + length:
        raise ValueError("hash runs past the extension")
    return {"hash_type": hash_type, "hash": p[2 : 2 + length].hex()}


def _decode_asset_dependency(p: bytes) -> dict[str, Any]:
    fields = _decode_hash(p)
    fields["name"] = p[2 + p[1] :].decode("utf-8", "replace")
    return fields


def _decode_security_mode(p: bytes) -> dict[str, Any]:
    mode = p[0]
    return {"mode": {0: "none", 1: "protected"}.get(mode, f"mode-{mode}"), "certificate_length": len(p) - 1}


_EXTENSION_NAMES: dict[int, str] = {int(t): t.name.lower().replace("_", "-") for t in ExtensionType}

_DECODERS: dict[int, tuple[int, Callable[[bytes], dict[str, Any]]]] = {
    # type: (minimum payload size, decoder)
    ExtensionType.END: (0, lambda p: {"padding": len(p)}),
    ExtensionType.PRODUCT_DATA: (6, _decode_product_data),
    ExtensionType.DYNAMIC_LOCATION: (12, _decode_dynamic_location),
    ExtensionType.DEPENDENCY: (8, _decode_dependency),
    ExtensionType.HASH: (2, _decode_hash),
    ExtensionType.NAME: (0, lambda p: {"name": p.decode("utf-8", "replace")}),
    ExtensionType.ASSET_DEPENDENCY: (2, _decode_asset_dependency),
    ExtensionType.SECURITY_MODE: (1, _decode_security_mode),
    ExtensionType.ASSET_TYPE: (2, lambda p: {"asset_type": p[0]}),
}


@dataclass(frozen=True)
class Extension:
    """A TLV extension of the prefix or suffix; ``payload`` is what follows the 4-byte header."""

    type: int
    payload: bytes = b""
    offset: int = field(default=-1, compare=False)  # file offset of its header; -1 when built

    @property
    def length(self) -> int:
        return EXTENSION_HEADER_SIZE + len(self.payload)

    @property
    def name(self) -> str:
        return _EXTENSION_NAMES.get(self.type) or f"type-0x{self.type:04x}"

    def decode_problem(self) -> str | None:
        """Why the payload does not fit its type, or None."""
        try:
            self.fields()
        except ValueError as exc:
            return f"{self.name} extension at offset {self.offset}: {exc}"
        return None

    def fields(self) -> dict[str, Any]:
        """The payload decoded for its type; raises ValueError when it is too short."""
        minimum, decoder = _DECODERS.get(self.type, (0, lambda p: {"raw": p.hex()}))
        if len(self.payload) < minimum:
            raise ValueError(f"payload of {len(self.payload)} bytes, needs at least {minimum}")
        try:
            return decoder(self.payload)
        except (struct.error, IndexError) as exc:
            raise ValueError(str(exc)) from None

    def encode(self) -> bytes:
        return _EXT_HEADER.pack(self.type, self.length) + self.payload

    def to_json(self) -> dict[str, Any]:
        try:
            decoded = self.fields()
        except ValueError as exc:
            decoded = {"error": str(exc)}
        return {"type": self.name, "length": self.length, "offset": self.offset, **decoded}


@dataclass(frozen=True)
class Compression:
    """compressed_module_header: how the body of a COMPRESSED module was deflated."""

    header_size: int
    method: int  # 0 = raw Deflate, the only one defined
    window_bits: int  # 0 = the default 15
    original_size: int


@dataclass(frozen=True)
class Module:
    """A parsed module: every header and suffix field, and what was found wrong with it.

    Addresses are flash addresses in bytes; ``size`` is this module's length in the file. The
    raw bytes are kept (``data``) so the module can be re-encoded or flashed; they take no part
    in equality or repr.
    """

    prefix_offset: int
    start_address: int
    end_address: int
    reserved: int  # mcu_target on Gen3; the NCP id on NCP modules
    flags: int
    version: int
    platform_id: int
    function: int
    index: int
    dependencies: tuple[Dependency, Dependency]
    prefix_extensions: tuple[Extension, ...]
    suffix_size: int
    suffix_extensions: tuple[Extension, ...]
    product_id: int | None
    product_version: int | None
    suffix_reserved: int
    raw_product_data: bool  # product id/version stand on their own, not inside PRODUCT_DATA
    sha256: bytes
    crc32: int
    crc_computed: int
    sha_ok: bool
    sha_range: str | None  # "module" [0, L-38) or "payload" (create_module.py wrappers)
    compression: Compression | None
    prefix_found_by: str  # "vector-table", "image-header", "start" or "search"
    size: int
    problems: tuple[str, ...]
    data: bytes = field(repr=False, compare=False)

    # -- derived facts --
    @property
    def crc_ok(self) -> bool:
        return self.crc32 == self.crc_computed

    @property
    def sound(self) -> bool:
        """Nothing wrong was found: integrity holds and every field makes sense."""
        return not self.problems

    @property
    def prefix_size(self) -> int:
        return PREFIX_SIZE + sum(e.length for e in self.prefix_extensions)

    @property
    def body_start(self) -> int:
        return self.prefix_offset + self.prefix_size

    @property
    def suffix_start(self) -> int:
        return self.size - CRC_SIZE - self.suffix_size

    @property
    def platform_name(self) -> str:
        return platform_label(self.platform_id)

    @property
    def function_name(self) -> str:
        return function_name(self.function)

    @property
    def flag_names(self) -> list[str]:
        names = [name for bit, name in FLAG_NAMES.items() if self.flags & bit]
        unknown = self.flags & ~KNOWN_FLAGS
        names += [f"unknown-0x{bit:02x}" for bit in (1 << i for i in range(8)) if unknown & bit]
        return names

    @property
    def real_dependencies(self) -> tuple[Dependency, ...]:
        return tuple(d for d in self.dependencies if not d.is_empty)

    @property
    def extensions(self) -> Iterator[Extension]:
        yield from self.prefix_extensions
        yield from self.suffix_extensions

    def extension_fields(self, ext_type: int) -> list[dict[str, Any]]:
        out = []
        for ext in self.extensions:
            if ext.type == ext_type and ext.decode_problem() is None:
                out.append(ext.fields())
        return out

    @property
    def name(self) -> str | None:
        names = self.extension_fields(ExtensionType.NAME)
        return names[0]["name"] if names else None

    @property
    def security_mode(self) -> str | None:
        modes = self.extension_fields(ExtensionType.SECURITY_MODE)
        return modes[0]["mode"] if modes else None

    @property
    def asset_dependencies(self) -> list[dict[str, Any]]:
        return self.extension_fields(ExtensionType.ASSET_DEPENDENCY)

    def to_json(self) -> dict[str, Any]:
        """The fields `kiosk firmware show --json` prints for one module."""
        return {
            "is_module": True,
            "platform_id": self.platform_id,
            "platform": self.platform_name,
            "function": self.function_name,
            "index": self.index,
            "version": self.version,
            "start_address": self.start_address,
            "end_address": self.end_address,
            "size": self.size,
            "prefix_offset": self.prefix_offset,
            "prefix_size": self.prefix_size,
            "prefix_found_by": self.prefix_found_by,
            "mcu_target": self.reserved,
            "flags": self.flag_names,
            "dependencies": [d.to_json() for d in self.real_dependencies],
            "suffix_size": self.suffix_size,
            "product_id": self.product_id,
            "product_version": self.product_version,
            "sha256": self.sha256.hex(),
            "sha_ok": self.sha_ok,
            "sha_range": self.sha_range,
            "crc32": f"{self.crc32:08x}",
            "crc_computed": f"{self.crc_computed:08x}",
            "crc_ok": self.crc_ok,
            "compression": None if self.compression is None else vars(self.compression),
            "security_mode": self.security_mode,
            "prefix_extensions": [e.to_json() for e in self.prefix_extensions],
            "suffix_extensions": [e.to_json() for e in self.suffix_extensions],
            "problems": list(self.problems),
        }


# --- finding the prefix ------------------------------------------------------------------------

_FULL_SCORE = 7
_KNOWN_OFFSETS = (0, 0x200, 0x184, 0xC0, 0x10C, 0x20)
_SEARCH_LIMIT = 8192


MAX_MODULE_SIZE = 16 * 1024 * 1024  # larger than any Particle flash region


class _Candidate(NamedTuple):  # a tuple: one is made for every offset tried, up to thousands per file
    offset: int
    score: int  # 7 = every check holds
    plausible: bool  # addresses ordered, a sane length, dependencies zeroed where empty
    known: bool  # plausible, with a known platform and a known function
    fits: bool  # the declared length matches the file


def _score(data: bytes, offset: int) -> _Candidate:
    """How much a 24-byte window at ``offset`` looks like module_info_t (Particle's 7 checks)."""
    if offset < 0 or offset + PREFIX_SIZE > len(data):
        return _Candidate(offset, -1, False, False, False)
    start, end, _res, flags, _ver, platform, function, _idx, dep1, dep2 = PREFIX_STRUCT.unpack_from(data, offset)
    length = end - start + CRC_SIZE
    fits = length <= len(data) if flags & _COMBINED else length == len(data)
    # dep1/dep2 are the raw 4 bytes of a dependency: its function is the first, and one without a function
    # must be all zeros (Dependency.is_empty), read here without building a Dependency per offset tried
    plausible = (
        end > start
        and max(MIN_MODULE_SIZE, offset + PREFIX_SIZE) <= length <= MAX_MODULE_SIZE
        and function != 0
        and (dep1[0] != 0 or dep1 == _NO_DEPENDENCY)
        and (dep2[0] != 0 or dep2 == _NO_DEPENDENCY)
    )
    known_platform = platform_by_id(platform) is not None
    known_function = function in FUNCTION_NAMES
    checks = (
        plausible,
        known_platform,
        known_function,
        dep1[0] in FUNCTION_NAMES,
        dep2[0] in FUNCTION_NAMES,
        fits,
        not flags & ~KNOWN_FLAGS,
    )
    return _Candidate(offset, sum(checks), plausible, plausible and known_platform and known_function, fits)


def _device_offsets(data: bytes) -> tuple[str, tuple[int, ...]]:
    """Where the device itself would look for the prefix, judging by the first bytes."""
    if data[: len(RTL_IMAGE_SIGNATURE)] == RTL_IMAGE_SIGNATURE:
        return "image-header", (MCUS["rtl872x"].prefix_offset(Function.BOOTLOADER),)
    first_word = struct.unpack_from("<I", data)[0]
    # A Cortex-M vector table opens with the initial stack pointer, an address in SRAM.
    if first_word & 0xFFF00000 == 0x20000000:
        return "vector-table", (0x184, 0x200, 0x10C, 0xC0)
    return "start", (0,)


def find_prefix(data: bytes) -> tuple[int, str, int]:
    """(offset, how it was found, score) of the module prefix; raises NotAModuleError."""
    how, offsets = _device_offsets(data)
    # Of the places a device looks, the best-scoring known header wins (the first on a tie). A size
    # mismatch alone is reported by the parser, not a reason to look elsewhere; but bytes further in
    # (a vector-table offset of another MCU family falls inside a small module's body) may look like
    # a known header by chance, and must not shadow the real one that also fits the file.
    known = [cand for cand in (_score(data, offset) for offset in offsets) if cand.known]
    if known:
        best = max(known, key=lambda cand: cand.score)
        return best.offset, how, best.score
    # Scored search, as Particle's own parser does: known offsets first, then every word.
    search_end = min(_SEARCH_LIMIT, len(data) - MIN_MODULE_SIZE)
    best: _Candidate | None = None
    for offset in dict.fromkeys((*_KNOWN_OFFSETS, *range(4, search_end + 1, 4))):
        cand = _score(data, offset)
        if not cand.plausible:
            continue
        if cand.score == _FULL_SCORE:
            return offset, "search", _FULL_SCORE
        if best is None or cand.score > best.score:
            best = cand
    # Without the exact size or a known platform and function, a plausible window is chance.
    if best is None or not (best.fits or best.known):
        raise NotAModuleError("no Particle module header found: this file is not a Particle module binary")
    return best.offset, "search", best.score


# --- parsing ---------------------------------------------------------------------------------


def _parse_extensions(
    data: bytes, start: int, limit: int, problems: list[str], where: str, need_end: bool
) -> tuple[tuple[Extension, ...], int, bool]:
    """TLVs from ``start`` up to ``limit``: (extensions, where they stopped, END seen)."""
    exts: list[Extension] = []
    pos = start
    while pos + EXTENSION_HEADER_SIZE <= limit:
        ext_type, length = _EXT_HEADER.unpack_from(data, pos)
        if ext_type == ExtensionType.INVALID:
            problems.append(f"{where} extension at offset {pos} has the INVALID type 0xffff")
            return tuple(exts), pos, False
        if length < EXTENSION_HEADER_SIZE or pos + length > limit:
            problems.append(f"{where} extension at offset {pos} claims {length} bytes, which do not fit")
            return tuple(exts), pos, False
        ext = Extension(ext_type, bytes(data[pos + EXTENSION_HEADER_SIZE : pos + length]), pos)
        exts.append(ext)
        pos += length
        if (problem := ext.decode_problem()) is not None:
            problems.append(problem)
        if ext_type == ExtensionType.END:
            return tuple(exts), pos, True
        if not need_end and pos == limit:
            break
    if need_end:
        problems.append(f"{where} extensions are not terminated by an END extension")
    return tuple(exts), pos, False


def _parse_suffix(data: bytes, body_start: int, problems: list[str]) -> dict[str, Any]:
    size = len(data)
    suffix_size = _u16(data, size - 6)
    out: dict[str, Any] = {
        "suffix_size": suffix_size,
        "suffix_extensions": (),
        "product_id": None,
        "product_version": None,
        "raw_product_data": False,
        "suffix_reserved": _u16(data, size - 40),
    }
    room = size - CRC_SIZE - body_start
    if suffix_size >= SUFFIX_PRODUCT_SIZE:
        out["product_id"], out["product_version"] = struct.unpack_from("<HH", data, size - 44)
    if suffix_size < SUFFIX_BASE_SIZE or suffix_size > room:
        problems.append(
            f"suffix size {suffix_size} is impossible (must be {SUFFIX_BASE_SIZE} to {room} here): "
            "the end of the file is not a module suffix"
        )
        return out
    limit = size - CRC_SIZE - SUFFIX_BASE_SIZE  # extensions end where `reserved` starts
    pos = size - CRC_SIZE - suffix_size
    if suffix_size == SUFFIX_PRODUCT_SIZE:
        out["raw_product_data"] = True
    elif suffix_size > SUFFIX_PRODUCT_SIZE:
        exts, pos, saw_end = _parse_extensions(data, pos, limit, problems, "suffix", need_end=False)
        out["suffix_extensions"] = exts
        left = limit - pos
        if left == 4 and (saw_end or not exts):
            out["raw_product_data"] = True  # nRF52 style: END, then product id and version
        elif left and not problems:
            problems.append(f"suffix extensions leave {left} unexplained bytes before the SHA-256")
    elif suffix_size != SUFFIX_BASE_SIZE:
        problems.append(f"suffix size {suffix_size} leaves {suffix_size - SUFFIX_BASE_SIZE} stray bytes")
    return out


def _check_sha(data: bytes, stored: bytes, payload: tuple[int, int]) -> tuple[bool, str | None]:
    if hashlib.sha256(data[: len(data) - SHA_OFFSET_FROM_END]).digest() == stored:
        return True, "module"
    # build/create_module.py (NCP and radio-stack wrappers) hashes the raw payload only.
    lo, hi = payload
    if lo < hi and hashlib.sha256(data[lo:hi]).digest() == stored:
        return True, "payload"
    return False, None


def _header_problems(platform_id: int, function: int, flags: int, deps: list[Dependency]) -> list[str]:
    problems = []
    if platform_by_id(platform_id) is None:
        problems.append(f"unknown platform id {platform_id}")
    if function not in FUNCTION_NAMES:
        problems.append(f"unknown module function {function}")
    if flags & ~KNOWN_FLAGS:
        problems.append(f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:02x}")
    for n, dep in enumerate(deps, 1):
        if dep.function == 0 and not dep.is_empty:
            problems.append(f"dependency {n} has no function but a non-zero index or version")
        elif dep.function not in FUNCTION_NAMES:
            problems.append(f"dependency {n} names unknown module function {dep.function}")
    return problems


def _expected_offset_problem(platform_id: int, function: int, offset: int) -> str | None:
    platform = platform_by_id(platform_id)
    if platform is None or function not in FUNCTION_NAMES or function == Function.ASSET:
        return None
    expected = platform.mcu.prefix_offset(function)
    if platform.mcu.name == "other" or expected == offset:
        return None
    return (
        f"module header at offset {offset}, but a {platform.name} {function_name(function)} keeps it "
        f"at {expected}: the device would not find it"
    )


def parse_module(data: bytes) -> Module:
    """Parse one module (the first, for a COMBINED file). Raise NotAModuleError for non-modules."""
    data = bytes(data)
    if len(data) < MIN_MODULE_SIZE:
        raise NotAModuleError(f"{len(data)} bytes is too short for a Particle module (at least {MIN_MODULE_SIZE})")
    offset, found_by, score = find_prefix(data)
    start, end, reserved, flags, version, platform_id, function, index, d1, d2 = PREFIX_STRUCT.unpack_from(data, offset)
    deps = [Dependency(*_DEPENDENCY.unpack(d1)), Dependency(*_DEPENDENCY.unpack(d2))]
    problems: list[str] = []
    if found_by == "search" and score < _FULL_SCORE:
        problems.append(f"module header found only by searching (at offset {offset}), not where a device looks")
    problems += _header_problems(platform_id, function, flags, deps)
    if (problem := _expected_offset_problem(platform_id, function, offset)) is not None:
        problems.append(problem)

    declared = end - start + CRC_SIZE
    if flags & _COMBINED and declared < len(data):
        data = data[:declared]  # another module follows; see split_modules()
    elif declared != len(data):
        kind = "truncated" if declared > len(data) else "padded or followed by other data"
        problems.append(f"file is {len(data)} bytes but the header says {declared} (end - start + 4): {kind}")

    prefix_exts: tuple[Extension, ...] = ()
    body_start = offset + PREFIX_SIZE
    if flags & _PREFIX_EXTENSIONS:
        limit = len(data) - CRC_SIZE - SUFFIX_BASE_SIZE
        prefix_exts, body_start, _ = _parse_extensions(data, body_start, limit, problems, "prefix", True)

    suffix = _parse_suffix(data, body_start, problems)
    compression = None
    if flags & _COMPRESSED:
        compression = _parse_compression(data, body_start, problems)

    size = len(data)
    stored_crc = int.from_bytes(data[size - CRC_SIZE :], "big")
    computed_crc = zlib.crc32(data[: size - CRC_SIZE])
    if stored_crc != computed_crc:
        problems.append(
            f"CRC-32 does not match: stored {stored_crc:08x}, computed {computed_crc:08x} "
            "(the file is corrupt, truncated or was altered)"
        )
    stored_sha = data[size - SHA_OFFSET_FROM_END : size - 6]
    payload_end = size - CRC_SIZE - suffix["suffix_size"]
    sha_ok, sha_range = _check_sha(data, stored_sha, (body_start, payload_end))
    if not sha_ok:
        problems.append("SHA-256 in the suffix does not match the module's contents")

    return Module(
        prefix_offset=offset,
        start_address=start,
        end_address=end,
        reserved=reserved,
        flags=flags,
        version=version,
        platform_id=platform_id,
        function=function,
        index=index,
        dependencies=(deps[0], deps[1]),
        prefix_extensions=prefix_exts,
        sha256=stored_sha,
        crc32=stored_crc,
        crc_computed=computed_crc,
        sha_ok=sha_ok,
        sha_range=sha_range,
        compression=compression,
        prefix_found_by=found_by,
        size=size,
        problems=tuple(problems),
        data=data,
        **suffix,
    )


def _parse_compression(data: bytes, at: int, problems: list[str]) -> Compression | None:
    if at + COMPRESSION_HEADER_SIZE > len(data):
        problems.append("compressed module has no room for its compression header")
        return None
    header_size, method, window_bits, original_size = _COMPRESSION.unpack_from(data, at)
    if header_size < COMPRESSION_HEADER_SIZE:
        problems.append(f"compression header claims {header_size} bytes (at least 8)")
    if method != 0:
        problems.append(f"unknown compression method {method} (only 0, raw Deflate, exists)")
    if window_bits and not 8 <= window_bits <= 15:
        problems.append(f"compression window bits {window_bits} out of range (8..15)")
    return Compression(header_size, method, window_bits, original_size)


def decompress_body(module: Module) -> bytes:
    """The original body of a COMPRESSED module; raises ValueError when it does not inflate."""
    if module.compression is None:
        raise ValueError("module is not compressed")
    c = module.compression
    # The header is data from the file: check it before zlib sees it (zlib's own errors do not say what is wrong),
    # and never inflate more than any module can hold (the size is the file's claim, up to 4 GiB).
    if c.method != 0:
        raise ValueError(f"compressed with unknown method {c.method} (only 0, raw Deflate, exists): cannot inflate")
    if not 8 <= (c.window_bits or 15) <= 15:
        raise ValueError(f"compression window bits {c.window_bits} out of range (8..15): cannot inflate")
    if c.original_size > MAX_MODULE_SIZE:
        raise ValueError(
            f"compressed body claims {c.original_size} bytes inflated, larger than any module ({MAX_MODULE_SIZE})"
        )
    start = module.body_start + c.header_size
    stream = module.data[start : module.suffix_start]
    try:
        inflater = zlib.decompressobj(-(c.window_bits or 15))
        body = inflater.decompress(stream, c.original_size + 1) + inflater.flush()
    except zlib.error as exc:
        raise ValueError(f"compressed body does not inflate: {exc}") from None
    if len(body) != c.original_size:
        raise ValueError(f"compressed body inflates to {len(body)} bytes, header says {c.original_size}")
    return body


def split_modules(data: bytes) -> list[Module]:
    """Every module in a file: one, or several for COMBINED files (each but the last flagged)."""
    modules = [parse_module(data)]
    offset = modules[0].size
    while modules[-1].flags & _COMBINED and not modules[-1].problems and offset < len(data):
        modules.append(parse_module(data[offset:]))
        offset += modules[-1].size
    return modules


# --- encoding --------------------------------------------------------------------------------


def encode_prefix(module: Module) -> bytes:
    """The 24-byte module_info_t and its prefix extensions, from the module's fields."""
    d1, d2 = module.dependencies
    prefix = PREFIX_STRUCT.pack(
        module.start_address,
        module.end_address,
        module.reserved,
        module.flags,
        module.version,
        module.platform_id,
        module.function,
        module.index,
        d1.encode(),
        d2.encode(),
    )
    return prefix + b"".join(e.encode() for e in module.prefix_extensions)


def encode_suffix(module: Module, sha256: bytes | None = None) -> bytes:
    """Suffix bytes (without the CRC) from the module's fields."""
    parts = [_with_product(e, module).encode() for e in module.suffix_extensions]
    if module.raw_product_data:
        parts.append(struct.pack("<HH", module.product_id or 0, module.product_version or 0))
    body = b"".join(parts) + struct.pack("<H", module.suffix_reserved)
    size = len(body) + 32 + 2
    return body + (module.sha256 if sha256 is None else sha256) + struct.pack("<H", size)


def _with_product(ext: Extension, module: Module) -> Extension:
    """A PRODUCT_DATA extension carrying the module's product id and version fields (rtl872x style)."""
    if ext.type != ExtensionType.PRODUCT_DATA or len(ext.payload) < 6 or module.product_id is None:
        return ext
    fields = struct.pack("<HH", module.product_id, module.product_version or 0)
    return Extension(ext.type, ext.payload[:2] + fields + ext.payload[6:], ext.offset)


def encode_module(module: Module, *, seal: bool = False) -> bytes:
    """Re-encode a parsed module from its fields.

    The bytes before the prefix and the body come from the original data; the prefix, its
    extensions and the suffix are written from the fields. ``seal`` recomputes SHA-256 and CRC-32
    (as the Device OS build does); otherwise the stored ones are kept, so a sound file re-encodes
    to its own bytes.
    """
    head = module.data[: module.prefix_offset]
    body = module.data[module.body_start : module.suffix_start]
    front = head + encode_prefix(module) + body
    return seal_module(front, module, recompute=seal)


def seal_module(front: bytes, module: Module, *, recompute: bool = True) -> bytes:
    """``front`` (everything before the suffix) + the module's suffix + CRC-32.

    With ``recompute``, the SHA-256 is taken over the range the module was hashed over: the whole
    module before the hash (the Device OS build), or only the payload between prefix and suffix
    (``sha_range == "payload"``: create_module.py wrappers such as NCP firmware).
    """
    if not recompute:
        image = front + encode_suffix(module)
        return image + module.crc32.to_bytes(4, "big")
    if module.sha_range == "payload":
        digest = hashlib.sha256(front[module.body_start :]).digest()
    else:
        provisional = front + encode_suffix(module, sha256=bytes(32))
        digest = hashlib.sha256(provisional[: len(provisional) - 34]).digest()
    image = front + encode_suffix(module, sha256=digest)
    return image + zlib.crc32(image).to_bytes(4, "big")


#: How many bytes at the end of an rtl872x user part's slot hold its suffix (the part grows down from the end).
SUFFIX_TAIL_SIZE = 512


def dynamic_location(tail: bytes) -> int | None:
    """The start address a module's DYNAMIC_LOCATION suffix extension gives, from ``tail``: the last bytes of
    the module, its CRC included (an rtl872x user part ends at its slot's end, so its start is found this way).
    None when the tail holds no such suffix."""
    if len(tail) < CRC_SIZE + 6:
        return None
    size = int.from_bytes(tail[-6:-4], "little")  # the suffix's own size, just before the CRC
    if not SUFFIX_PRODUCT_SIZE < size < len(tail) - CRC_SIZE:
        return None
    pos, limit = len(tail) - CRC_SIZE - size, len(tail) - CRC_SIZE - 36
    while pos + 4 <= limit:
        ext_type, length = struct.unpack_from("<HH", tail, pos)
        if length < 4:
            return None
        if ext_type == ExtensionType.DYNAMIC_LOCATION and length >= 8:
            return int.from_bytes(tail[pos + 4 : pos + 8], "little")
        pos += length
    return None
