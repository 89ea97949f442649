"""QEMU's JSON streaming as vmforge.qmp.stream does it: values split by their
braces, not by lines; malformed input answered and skipped."""

from __future__ import annotations

import pytest

from vmforge.qmp import stream
from vmforge.qmp.stream import JsonStreamer


def feed(*chunks: bytes) -> list[tuple[object, str | None]]:
    s = JsonStreamer()
    out = []
    for chunk in chunks:
        out += s.feed(chunk)
    return out


def test_values_split_by_braces_not_lines() -> None:
    assert feed(b'{"a": 1}{"b": [2, {"c": "}"}]}\n') == [({"a": 1}, None),
                                                       ({"b": [2, {"c": "}"}]}, None)]
    assert feed(b'{"a":', b'\n 1', b'}') == [({"a": 1}, None)]
    assert feed(b'{"s": "a\\"}{"}') == [({"s": 'a"}{'}, None)]


def test_top_level_scalars_end_at_a_delimiter() -> None:
    assert feed(b'1 "x" null\n') == [(1, None), ("x", None), (None, None)]
    assert feed(b"12") == []                          # not finished yet


def test_single_quoted_strings_as_qemu() -> None:
    assert feed(b"{'execute': 'it\\'s \"q\"'}") == [({"execute": 'it\'s "q"'}, None)]


@pytest.mark.parametrize("data, desc", [
    (b'{"a":}', "JSON parse error, expecting value"),
    (b'{"a": 1, "a": 2}', "JSON parse error, duplicate key"),
    (b']', "JSON parse error, expecting value"),
    (b'{"a": NaN}', "JSON parse error, invalid keyword 'NaN'"),
    (b'{"a": "\xff"}', "JSON parse error, invalid UTF-8 sequence in string"),
])
def test_malformed_values(data: bytes, desc: str) -> None:
    assert feed(data) == [(None, desc)]


def test_a_stray_byte_is_reported_and_skipped_to_the_next_value() -> None:
    out = feed(b'\xff garbage {"a": 1}')
    assert out == [(None, "JSON parse error, stray '\ufffd'"), ({"a": 1}, None)]


def test_nesting_limit() -> None:
    out = feed(b"[" * (stream.MAX_NESTING + 1))
    assert out == [(None, "JSON nesting depth limit exceeded")]
    assert feed(b"[" * 5 + b"]" * 5) == [([[[[[]]]]], None)]


def test_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "MAX_TOKEN_SIZE", 100)
    s = JsonStreamer()
    assert s.feed(b'{"a": "' + b"{" * 200) == []     # followed, not kept
    assert s.feed(b'"}\n{"b": 2}') == [(None, "JSON token size limit exceeded"),
                                        ({"b": 2}, None)]
