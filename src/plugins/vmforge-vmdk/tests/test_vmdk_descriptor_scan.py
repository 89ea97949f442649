"""The descriptor's extent lines and CIDs are read by string code (no :mod:`re` at
start-up): it answers as the regular expressions it replaces, on lines made to hit
their edges."""

from __future__ import annotations

import random
import re

import pytest

from vmforge_vmdk.layout import DescriptorError, match_extent, read_cid

EXTENT = re.compile(r'^\s*(\S{1,10})\s+([+-]?\d+)\s+(\S{1,10})\s+"([^\n\r"]{1,511})"'
                    r'(?:\s+([+-]?\d+))?')
CID = re.compile(r"\s*([+-]?(?:0[xX])?[0-9a-fA-F]+)")

PIECES = ["RW", "RDONLY", "NOACCESS", "ABCDEFGHIJK", "FLAT", "SPARSE", "VMFSSPARSE",
          "0", "2048", "+5", "-3", "12x", "\u0663\u0664", "x", '"', '"a"', '"a.vmdk"',
          '"with space.vmdk"', '""', '"' + "n" * 511 + '"', '"' + "n" * 512 + '"',
          '"unterminated', " ", "  ", "\t", "\x1c", "\u00a0", "\r", "7", "+", "-", "0x1f",
          "1 2"]


def _lines(n: int) -> list[str]:
    rng = random.Random(13)
    out = ['RW 2048 FLAT "a-flat.vmdk" 0', 'RW 2048 SPARSE "s.vmdk"', '  RDONLY 8 VMFS "v" ',
           'RW 1 FLAT "a" +7x', 'RW 1 FLAT "a"7', 'RW 1 FLAT"a"', 'RW  1\tFLAT \t"a"  -0']
    spaces = [" ", "  ", "\t", "\x1c", "\u00a0", "", "\r"]
    for _ in range(n):
        if rng.random() < 0.3:      # anything
            out.append("".join(rng.choice(PIECES) + rng.choice(["", " ", ""])
                               for _ in range(rng.randrange(1, 9))))
        else:                       # an extent line's shape, each part perhaps wrong
            slots = (["RW", "RDONLY", "ABCDEFGHIJK"], ["2048", "+5", "-3", "\u0663"],
                     ["FLAT", "SPARSE", "VMFSSPARSE"],
                     ['"a.vmdk"', '"with space"', '""', '"' + "n" * 511 + '"'],
                     ["0", "+7", "-1", "12x", "x"])
            parts = [rng.choice(spaces) if rng.random() < 0.1 else ""]
            for slot in slots:
                word = rng.choice(slot) if rng.random() < 0.9 else rng.choice(PIECES)
                parts += [word, " " if rng.random() < 0.8 else rng.choice(spaces)]
            out.append("".join(parts[:rng.randrange(8, 11)]))
    return out


def test_extent_lines_as_the_regular_expression() -> None:
    lines = _lines(20000)
    matched = 0
    for line in lines:
        m = EXTENT.match(line)
        assert match_extent(line) == (m.groups() if m else None), repr(line)
        matched += m is not None
    assert matched > 2000           # the generated lines reach both answers


@pytest.mark.parametrize("rest", ["=1f", "= 0x1F\n", "=0x", "=0xg", "=+ff", "=-0X10", "=\t a",
                                  "=", "=zz", "=\u00a0 7", "=+", "=0x0x1", "= -"])
def test_cid_as_the_regular_expression(rest: str) -> None:
    m = CID.match(rest[1:])
    if m is None:
        with pytest.raises(DescriptorError):
            read_cid("CID" + rest, False)
    else:
        assert read_cid("CID" + rest, False) == int(m.group(1), 16) & 0xFFFFFFFF
