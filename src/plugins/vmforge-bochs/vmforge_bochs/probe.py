"""The bochs format's probe, in a light module of its own: vmforge asks every
installed format's probe when it guesses an image's format (entry point group
``vmforge.block.probe``), without importing the drivers (start-up time)."""

from __future__ import annotations

import struct

__all__ = ["HEADER_SIZE", "MAGIC", "SUBTYPE", "TYPE", "VERSION", "VERSION_1", "probe"]

MAGIC = b"Bochs Virtual HD Image"
TYPE = b"Redolog"
SUBTYPE = b"Growing"
VERSION = 0x00020000
VERSION_1 = 0x00010000
HEADER_SIZE = 512
# magic, type, subtype, version, header size, catalog entries, bitmap size, extent size
_HEADER = struct.Struct("<32s16s16sIIIII")


def _cstr(field: bytes, want: bytes) -> bool:
    """``field`` holds the NUL-terminated string ``want`` (C's strcmp)."""
    return field[:len(want) + 1] == want + b"\0"


def probe(header: bytes, filename: str) -> int:
    if len(header) < HEADER_SIZE:
        return 0
    magic, typ, sub, version, *_ = _HEADER.unpack_from(header)
    ok = (_cstr(magic, MAGIC) and _cstr(typ, TYPE) and _cstr(sub, SUBTYPE)
          and version in (VERSION, VERSION_1))
    return 100 if ok else 0
