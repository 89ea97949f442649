"""QEMU's JSON message streamer: bytes from a QMP client in, whole values out.

QEMU's monitor does not wait for a newline: it counts braces and brackets
(outside strings) and parses a value as soon as its outermost one closes, so
``{"execute":"stop"}{"execute":"cont"}`` is two commands and a command may span
lines.  Malformed input becomes a ``GenericError`` whose ``desc`` starts with
"JSON parse error, ", and the stream goes on with the next value, as QEMU's
``json-streamer.c`` does.  Its limits are QEMU's too: 64 MiB per value, a
nesting depth of 1024.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_NESTING", "MAX_TOKEN_SIZE", "JsonStreamer"]

MAX_TOKEN_SIZE = 64 << 20
MAX_NESTING = 1 << 10
_SPACE = frozenset(b" \t\r\n")
#: characters that end a bare token (a number, true/false/null) at the top level
_DELIMS = frozenset(b" \t\r\n{}[]:,\"'")
#: the bytes that end a run of plain string content
_STRING_STOP = re.compile(rb"[\"'\\\x00-\x1f]")


class JsonStreamer:
    """Feed bytes with :meth:`feed`; it returns the values completed, each as
    ``(value, None)`` or ``(None, error_text)``."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._depth_brace = 0
        self._depth_bracket = 0
        self._quote = 0            # the open string's quote byte, 0 outside strings
        self._escape = False
        self._recovering = False   # skipping after a stray byte, as QEMU's lexer does
        self._overflow = False     # the value passed MAX_TOKEN_SIZE: dropped, then reported

    def feed(self, data: bytes) -> list[tuple[Any, str | None]]:
        out: list[tuple[Any, str | None]] = []
        i, n = 0, len(data)
        while i < n:
            if self._quote and not self._escape:
                # inside a string: copy up to the next byte that matters in one go
                m = _STRING_STOP.search(data, i)
                end = m.start() if m else n
                if end > i:
                    self._extend(data[i:end])
                    i = end
                    continue
            self._byte(data[i], out)
            i += 1
        return out

    def _reset(self) -> None:
        self._buf.clear()
        self._overflow = False
        self._depth_brace = self._depth_bracket = 0
        self._quote = 0
        self._escape = False

    def _emit(self, out: list[tuple[Any, str | None]]) -> None:
        text, overflow = bytes(self._buf), self._overflow
        self._reset()
        out.append((None, "JSON token size limit exceeded") if overflow else _parse(text))

    def _append(self, byte: int) -> None:
        if self._overflow:
            return
        self._buf.append(byte)
        if len(self._buf) > MAX_TOKEN_SIZE:
            self._overflow = True     # the rest of the value is only followed, not kept
            self._buf.clear()

    def _extend(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buf += chunk
        if len(self._buf) > MAX_TOKEN_SIZE:
            self._overflow = True
            self._buf.clear()

    def _started(self) -> bool:
        return bool(self._buf) or self._overflow

    def _byte(self, byte: int, out: list[tuple[Any, str | None]]) -> None:
        if self._recovering:
            # QEMU resynchronises on structural characters and control characters
            if byte < 0x20 or byte >= 0xFE or byte in b"[]{}:,":
                self._recovering = False
                if byte < 0x20 or byte >= 0xFE:
                    return
            else:
                return
        if self._quote:
            self._append(byte)
            if self._escape:
                self._escape = False
            elif byte == 0x5C:                       # backslash
                self._escape = True
            elif byte == self._quote:
                self._quote = 0
                if self._top_level():
                    self._emit(out)
            elif byte < 0x20:                        # a control byte inside a string
                self._reset()
                out.append((None, "JSON parse error, invalid string"))
            return
        if byte in _SPACE:
            if self._started() and self._top_level():  # the end of a bare top-level token
                self._emit(out)
            return
        if byte < 0x20 or byte >= 0x80:               # outside strings: stray
            stray = bytes([byte]).decode("utf-8", errors="replace")
            self._reset()
            self._recovering = True
            out.append((None, f"JSON parse error, stray '{stray}'"))
            return
        if self._started() and self._top_level() and byte in _DELIMS:
            self._emit(out)                          # "1{" : the bare token ends first
        self._append(byte)
        if byte in b"\"'":
            self._quote = byte
        elif byte == 0x7B:
            self._depth_brace += 1
        elif byte == 0x7D:
            self._depth_brace -= 1
        elif byte == 0x5B:
            self._depth_bracket += 1
        elif byte == 0x5D:
            self._depth_bracket -= 1
        if self._depth_brace + self._depth_bracket > MAX_NESTING:
            self._reset()
            out.append((None, "JSON nesting depth limit exceeded"))
            return
        closed = self._depth_brace <= 0 and self._depth_bracket <= 0
        unbalanced = self._depth_brace < 0 or self._depth_bracket < 0
        if byte in b"}]" and (closed or unbalanced):
            self._emit(out)

    def _top_level(self) -> bool:
        return self._depth_brace == 0 and self._depth_bracket == 0


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid keyword '{name}'")


def _parse(text: bytes) -> tuple[Any, str | None]:
    """One complete value; QEMU's single-quoted strings are taken too."""
    try:
        source = text.decode("utf-8")
    except UnicodeDecodeError:
        return None, "JSON parse error, invalid UTF-8 sequence in string"
    if "'" in source:
        source = _single_quotes(source)
    try:
        return json.loads(source, object_pairs_hook=_no_duplicates,
                          parse_constant=_no_constant), None
    except json.JSONDecodeError as exc:
        return None, f"JSON parse error, {_lower_first(exc.msg)}"
    except (ValueError, RecursionError) as exc:
        return None, f"JSON parse error, {exc}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _single_quotes(source: str) -> str:
    """QEMU's extension: 'abc' is a string as "abc" is (\\' and " inside it)."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == '"':                       # copy a double-quoted string as it is
            j = i + 1
            while j < n and source[j] != '"':
                j += 2 if source[j] == "\\" else 1
            out.append(source[i:j + 1])
            i = j + 1
        elif ch == "'":
            j = i + 1
            part: list[str] = []
            while j < n and source[j] != "'":
                if source[j] == "\\" and j + 1 < n:
                    part.append("'" if source[j + 1] == "'" else source[j:j + 2])
                    j += 2
                    continue
                part.append('\\"' if source[j] == '"' else source[j])
                j += 1
            out.append('"' + "".join(part) + ('"' if j < n else ""))
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)
