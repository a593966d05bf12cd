"""Build valid Particle modules: any platform, function, index, version, dependencies, extensions.

Real Device OS binaries are not redistributable, so the simulator, the demo library and the
tests flash modules made here. A built module has the layout a Device OS build gives it: the
vector table or Realtek image header before the prefix where the MCU family has one, the suffix
style of its platform (extensions on rtl872x, product id and version elsewhere), SHA-256 over
``[0, L-38)`` and a big-endian CRC-32.

    >>> from firmware.module import parse_module
    >>> data = build_module(platform_id=6, function=Function.SYSTEM_PART, index=2, version=2301,
    ...                     dependencies=[(Function.SYSTEM_PART, 1, 2301)])
    >>> m = parse_module(data)
    >>> hex(m.start_address), m.prefix_offset, m.sound
    ('0x8060000', 388, True)
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from collections.abc import Iterable, Sequence

from firmware.module import (
    COMPRESSION_HEADER_SIZE,
    CRC_SIZE,
    PREFIX_SIZE,
    SUFFIX_BASE_SIZE,
    Compression,
    Dependency,
    Extension,
    ExtensionType,
    Module,
    ModuleFlag,
    encode_prefix,
    seal_module,
)
from firmware.platforms import (
    MCUS,
    RTL_IMAGE_SIGNATURE,
    Function,
    Platform,
    platform_by_id,
)

DependencyLike = Dependency | tuple[int, int, int]
NO_PRODUCT = 0xFFFF


def _default_index(platform: Platform | None, function: int) -> int:
    if function == Function.SYSTEM_PART:
        return 1
    if function == Function.USER_PART and platform is not None:
        # The newest user-part slot of the platform (index 2 on Gen3 from Device OS 3.1.0).
        indices = [s.index for s in platform.layout if s.function == Function.USER_PART]
        return max(indices, default=1)
    return 0


def _fill(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _head(platform: Platform | None, prefix_offset: int, start: int, total: int, seed: int) -> bytes:
    """What precedes the prefix: a Realtek image header or a Cortex-M vector table."""
    if prefix_offset == 0:
        return b""
    if platform is not None and platform.mcu is MCUS["rtl872x"] and prefix_offset == 32:
        header = RTL_IMAGE_SIGNATURE + struct.pack("<III", total - 32, start + 32, 0)
        return header + bytes(32 - len(header))
    stack = platform.mcu.initial_stack_pointer if platform is not None else 0x20000000
    # Initial stack pointer, then a reset vector into the module (Thumb bit set), then filler.
    vectors = struct.pack("<II", stack, (start + prefix_offset + PREFIX_SIZE) | 1)
    return (vectors + _fill(prefix_offset, seed))[:prefix_offset]


def _dependencies(deps: Iterable[DependencyLike]) -> tuple[Dependency, Dependency]:
    items = [d if isinstance(d, Dependency) else Dependency(*d) for d in deps]
    if len(items) > 2:
        raise ValueError("a module prefix holds at most two dependencies")
    items += [Dependency(0, 0, 0)] * (2 - len(items))
    return items[0], items[1]


def _with_end(exts: Sequence[Extension]) -> tuple[Extension, ...]:
    if exts and exts[-1].type == ExtensionType.END:
        return tuple(exts)
    return (*exts, Extension(ExtensionType.END))


def product_data_extension(product_id: int, product_version: int) -> Extension:
    return Extension(ExtensionType.PRODUCT_DATA, struct.pack("<HHH", 0xFFFF, product_id, product_version))


def dynamic_location_extension(start: int, dynalib_load: int = 0, dynalib_start: int = 0) -> Extension:
    return Extension(ExtensionType.DYNAMIC_LOCATION, struct.pack("<III", start, dynalib_load, dynalib_start))


def name_extension(name: str) -> Extension:
    return Extension(ExtensionType.NAME, name.encode())


def hash_extension(digest: bytes) -> Extension:
    return Extension(ExtensionType.HASH, bytes([0, len(digest)]) + digest)


def security_mode_extension(protected: bool, certificate: bytes = b"") -> Extension:
    return Extension(ExtensionType.SECURITY_MODE, bytes([1 if protected else 0]) + certificate)


def asset_dependency_extension(name: str, digest: bytes) -> Extension:
    return Extension(ExtensionType.ASSET_DEPENDENCY, bytes([0, len(digest)]) + digest + name.encode())


def build_module(
    *,
    platform_id: int,
    function: int,
    version: int,
    index: int | None = None,
    start_address: int | None = None,
    body: bytes | None = None,
    body_size: int = 2048,
    dependencies: Iterable[DependencyLike] = (),
    flags: int = 0,
    reserved: int = 0,
    prefix_offset: int | None = None,
    prefix_extensions: Sequence[Extension] = (),
    suffix_extensions: Sequence[Extension] = (),
    product_id: int = NO_PRODUCT,
    product_version: int = NO_PRODUCT,
    suffix: str = "auto",
    dynamic_location: bool | None = None,
    compress: bool = False,
    seed: int = 0,
) -> bytes:
    """Make the bytes of a sound module.

    ``suffix`` is ``auto`` (the platform's style), ``base`` (36 bytes, no product data, as Device
    OS 0.4.x and create_module.py wrappers), ``product`` (40 bytes; any ``suffix_extensions`` end
    with END, then the raw product data, as nRF52) or ``extensions`` (TLVs ending in PRODUCT_DATA,
    with DYNAMIC_LOCATION before it when ``dynamic_location``, the rtl872x default). ``body``
    defaults to ``body_size`` deterministic pseudo-random
    bytes from ``seed``; addresses default to the platform's slot for the function and index.
    """
    platform = platform_by_id(platform_id)
    if index is None:
        index = _default_index(platform, function)
    if prefix_offset is None:
        prefix_offset = platform.mcu.prefix_offset(function) if platform else 0
        if function == Function.ASSET:
            prefix_offset = 0
    slot = next(iter(platform.slots_for(function, index)), None) if platform else None
    raw_body = _fill(body_size, seed + 1) if body is None else bytes(body)

    prefix_exts = _with_end(prefix_extensions) if prefix_extensions else ()
    if prefix_exts:
        flags |= ModuleFlag.PREFIX_EXTENSIONS
    compression = None
    stored_body = raw_body
    if compress:
        flags |= ModuleFlag.COMPRESSED
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        stream = deflater.compress(raw_body) + deflater.flush()
        compression = Compression(COMPRESSION_HEADER_SIZE, 0, 0, len(raw_body))
        stored_body = struct.pack("<HBBI", COMPRESSION_HEADER_SIZE, 0, 0, len(raw_body)) + stream

    is_rtl = platform is not None and platform.mcu is MCUS["rtl872x"]
    if suffix == "auto":
        suffix = "extensions" if is_rtl else "product"
    if dynamic_location is None:
        dynamic_location = is_rtl
    suffix_exts = tuple(suffix_extensions)
    raw_product = suffix == "product"
    location: tuple[Extension, ...] = ()
    if suffix == "extensions":
        # the dynamic location needs the start address, fixed below; its room is reserved now
        given = any(e.type == ExtensionType.DYNAMIC_LOCATION for e in suffix_exts)
        location = (dynamic_location_extension(0),) if dynamic_location and not given else ()
        suffix_exts = (*suffix_exts, *location, product_data_extension(product_id, product_version))
    elif suffix == "product" and suffix_exts:
        suffix_exts = _with_end(suffix_exts)
    elif suffix == "base":
        if suffix_exts:
            raise ValueError("a base (36-byte) suffix has no room for extensions")
    elif suffix != "product":
        raise ValueError(f"unknown suffix style {suffix!r}: auto, base, product or extensions")

    suffix_size = SUFFIX_BASE_SIZE + sum(e.length for e in suffix_exts) + (4 if raw_product else 0)
    prefix_size = PREFIX_SIZE + sum(e.length for e in prefix_exts)
    total = prefix_offset + prefix_size + len(stored_body) + suffix_size + CRC_SIZE
    if start_address is None:
        if slot is None:
            start_address = 0
        elif slot.grows_left:
            start_address = (slot.end - total) & ~0x7  # aligned down; the body absorbs nothing
            total = slot.end - start_address
        else:
            start_address = slot.start
    if location:  # the one the builder added: now that the start address is known
        suffix_exts = tuple(
            e if e is not location[0] else dynamic_location_extension(start_address) for e in suffix_exts
        )
    # rtl872x user parts end exactly at their slot's end: pad the body to make it so
    pad = total - (prefix_offset + prefix_size + len(stored_body) + suffix_size + CRC_SIZE)
    stored_body += bytes(pad)

    module = Module(
        prefix_offset=prefix_offset,
        start_address=start_address,
        end_address=start_address + total - CRC_SIZE,
        reserved=reserved,
        flags=flags,
        version=version,
        platform_id=platform_id,
        function=function,
        index=index,
        dependencies=_dependencies(dependencies),
        prefix_extensions=prefix_exts,
        suffix_size=suffix_size,
        suffix_extensions=suffix_exts,
        product_id=product_id if suffix_size >= 40 else None,
        product_version=product_version if suffix_size >= 40 else None,
        suffix_reserved=0,
        raw_product_data=raw_product,
        sha256=bytes(32),
        crc32=0,
        crc_computed=0,
        sha_ok=False,
        sha_range=None,
        compression=compression,
        prefix_found_by="built",
        size=total,
        problems=(),
        data=b"",
    )
    head = _head(platform, prefix_offset, start_address, total, seed)
    front = head + encode_prefix(module) + stored_body
    return seal_module(front, module)


def asset_module(name: str, content: bytes) -> bytes:
    """An asset module as Particle's tools make one: start 0, DROP_MODULE_INFO, HASH and NAME."""
    digest = hashlib.sha256(content).digest()
    return build_module(
        platform_id=0,
        function=Function.ASSET,
        version=0,
        index=0,
        start_address=0,
        body=content,
        flags=ModuleFlag.DROP_MODULE_INFO,
        prefix_offset=0,
        suffix="extensions",
        dynamic_location=False,
        suffix_extensions=[hash_extension(digest), name_extension(name)],
    )
