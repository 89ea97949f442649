"""Plain values to bytes and back, for device state (no pickle: a stream from a
file or a socket is data, never code).

Values: None, bool, int (any size), float, bytes, str, list, dict (str or int
keys).  Each value is a tag byte and its body; lengths are unsigned LEB128.
:func:`decode` refuses anything malformed with :class:`StateError`.
"""

from __future__ import annotations

import struct
from typing import Any

from vmforge.migration.record import StateError

__all__ = ["decode", "encode"]

_NONE, _FALSE, _TRUE, _INT, _NEG, _BYTES, _STR, _LIST, _DICT, _FLOAT = b"NFTI-BSLDR"
_DOUBLE = struct.Struct("<d")
MAX_DEPTH = 64


def _uleb(n: int, out: bytearray) -> None:
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _enc(v: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise StateError("state record nests too deep to encode")
    if v is None:
        out.append(_NONE)
    elif v is True:
        out.append(_TRUE)
    elif v is False:
        out.append(_FALSE)
    elif type(v) is int:
        out.append(_INT if v >= 0 else _NEG)
        _uleb(v if v >= 0 else -v, out)
    elif type(v) is float:
        out.append(_FLOAT)
        out += _DOUBLE.pack(v)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        data = bytes(v)
        out.append(_BYTES)
        _uleb(len(data), out)
        out += data
    elif type(v) is str:
        data = v.encode()
        out.append(_STR)
        _uleb(len(data), out)
        out += data
    elif isinstance(v, (list, tuple)):
        out.append(_LIST)
        _uleb(len(v), out)
        for item in v:
            _enc(item, out, depth + 1)
    elif type(v) is dict:
        out.append(_DICT)
        _uleb(len(v), out)
        for key, item in v.items():
            if type(key) not in (str, int):
                raise StateError(f"state record key {key!r} is not a str or int")
            _enc(key, out, depth + 1)
            _enc(item, out, depth + 1)
    else:
        raise StateError(f"state record value {v!r} is not a plain value")


def encode(value: Any) -> bytes:
    """``value`` (plain values only) as bytes."""
    out = bytearray()
    _enc(value, out, 0)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data).cast("B")
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise StateError("state record is truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self) -> int:
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 7 * 1024:
                raise StateError("state record has an integer of more than 1024 bytes")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise StateError("state record is truncated")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise StateError("state record nests too deep")
        tag = self.byte()
        if tag == _NONE:
            return None
        if tag == _TRUE:
            return True
        if tag == _FALSE:
            return False
        if tag == _INT:
            return self.uleb()
        if tag == _NEG:
            return -self.uleb()
        if tag == _FLOAT:
            return _DOUBLE.unpack(self.take(8))[0]
        if tag == _BYTES:
            return self.take(self.uleb())
        if tag == _STR:
            try:
                return self.take(self.uleb()).decode()
            except UnicodeDecodeError as exc:
                raise StateError(f"state record has a bad string: {exc}") from None
        if tag == _LIST:
            n = self.uleb()
            if n > len(self.data) - self.pos:
                raise StateError("state record is truncated")
            return [self.value(depth + 1) for _ in range(n)]
        if tag == _DICT:
            n = self.uleb()
            if n > len(self.data) - self.pos:
                raise StateError("state record is truncated")
            out: dict[Any, Any] = {}
            for _ in range(n):
                key = self.value(depth + 1)
                if type(key) not in (str, int):
                    raise StateError(f"state record key {key!r} is not a str or int")
                out[key] = self.value(depth + 1)
            return out
        raise StateError(f"state record has an unknown tag {tag:#x} at byte {self.pos - 1}")


def decode(data: bytes | memoryview) -> Any:
    """The value :func:`encode` gave ``data`` for; :class:`StateError` when malformed."""
    reader = _Reader(data)
    value = reader.value(0)
    if reader.pos != len(reader.data):
        raise StateError(f"state record has {len(reader.data) - reader.pos} bytes after "
                         "its end")
    return value
