"""Intel HEX images (Particle's restore ``.hex`` files): parsed strictly into address-ordered segments.

Every record's checksum is checked, addresses may not overlap, and the file must end with an
end-of-file record; anything else raises :class:`HexError` naming the line.

    >>> image = parse_hex(":0400000001020304F2\\n:00000001FF\\n")
    >>> image.segments[0].address, image.segments[0].data.hex()
    (0, '01020304')
"""

from __future__ import annotations

from dataclasses import dataclass

_DATA, _EOF, _EXT_SEGMENT, _START_SEGMENT, _EXT_LINEAR, _START_LINEAR = range(6)
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class HexError(ValueError):
    """An Intel HEX file that is malformed, truncated or corrupt."""


@dataclass(frozen=True)
class Segment:
    """Contiguous bytes at a flash address."""

    address: int
    data: bytes

    @property
    def end(self) -> int:
        return self.address + len(self.data)


@dataclass(frozen=True)
class HexImage:
    """The data of an Intel HEX file, as address-ordered contiguous segments."""

    segments: tuple[Segment, ...]
    start_address: int | None = None

    @property
    def size(self) -> int:
        return sum(len(s.data) for s in self.segments)

    def read(self, address: int, length: int) -> bytes | None:
        """``length`` bytes at ``address`` if one segment holds them all, else None."""
        for seg in self.segments:
            if seg.address <= address and address + length <= seg.end:
                return seg.data[address - seg.address : address - seg.address + length]
        return None

    def contains(self, address: int) -> bool:
        return any(seg.address <= address < seg.end for seg in self.segments)


def parse_hex(text: str | bytes) -> HexImage:
    """Parse Intel HEX text; raise HexError with the line number of the first fault."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise HexError("not an Intel HEX file: it contains non-ASCII bytes") from None
    base = 0
    start: int | None = None
    chunks: list[tuple[int, bytes]] = []
    total = 0
    ended = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if ended:
            raise HexError(f"line {number}: data after the end-of-file record")
        if not line.startswith(":"):
            raise HexError(f"line {number}: an Intel HEX record starts with ':'")
        try:
            record = bytes.fromhex(line[1:])
        except ValueError:
            raise HexError(f"line {number}: not hexadecimal") from None
        if len(record) < 5 or len(record) != 5 + record[0]:
            raise HexError(f"line {number}: record length does not match its byte count")
        if sum(record) & 0xFF:
            raise HexError(f"line {number}: checksum mismatch (the file is corrupt)")
        count, offset, kind, payload = record[0], record[1] << 8 | record[2], record[3], record[4:-1]
        if kind == _DATA:
            chunks.append((base + offset, payload))
            total += count
            if total > MAX_IMAGE_BYTES:
                raise HexError(f"line {number}: image larger than {MAX_IMAGE_BYTES} bytes")
        elif kind == _EOF:
            ended = True
        elif kind == _EXT_SEGMENT and count == 2:
            base = int.from_bytes(payload, "big") << 4
        elif kind == _EXT_LINEAR and count == 2:
            base = int.from_bytes(payload, "big") << 16
        elif kind in (_START_SEGMENT, _START_LINEAR) and count == 4:
            start = int.from_bytes(payload, "big")
        else:
            raise HexError(f"line {number}: unknown or malformed record type {kind}")
    if not ended:
        raise HexError("no end-of-file record: the file is truncated")
    return HexImage(_merge(chunks), start)


def _merge(chunks: list[tuple[int, bytes]]) -> tuple[Segment, ...]:
    # Joined once per run of touching chunks: appending to a bytes object chunk by chunk copies the whole
    # segment each time, which made a 1 MB restore image take seconds to read.
    segments: list[Segment] = []
    run: list[bytes] = []
    run_start = run_end = 0
    for address, data in sorted(chunks):
        if run and address < run_end:
            raise HexError(f"data at 0x{address:08x} overlaps earlier data")
        if run and address > run_end:
            segments.append(Segment(run_start, b"".join(run)))
            run = []
        if not run:
            run_start = run_end = address
        run.append(data)
        run_end += len(data)
    if run:
        segments.append(Segment(run_start, b"".join(run)))
    return tuple(segments)


def format_hex(segments: list[tuple[int, bytes]], record_size: int = 16) -> str:
    """Intel HEX text for ``(address, data)`` segments (for tests, the simulator and the demo)."""
    lines = []
    upper = None
    for address, data in segments:
        pos = 0
        while pos < len(data):
            addr = address + pos
            if addr >> 16 != upper:
                upper = addr >> 16
                lines.append(_record(_EXT_LINEAR, 0, upper.to_bytes(2, "big")))
            # a record never crosses a 64 KiB boundary: its offset is 16 bits
            size = min(record_size, len(data) - pos, 0x10000 - (addr & 0xFFFF))
            lines.append(_record(_DATA, addr & 0xFFFF, data[pos : pos + size]))
            pos += size
    lines.append(_record(_EOF, 0, b""))
    return "\n".join(lines) + "\n"


def _record(kind: int, offset: int, payload: bytes) -> str:
    body = bytes([len(payload)]) + offset.to_bytes(2, "big") + bytes([kind]) + payload
    return ":" + (body + bytes([-sum(body) & 0xFF])).hex().upper()
