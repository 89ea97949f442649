"""vmforge.debug.disasm without QEMU: the tables hang together and the API keeps its
promises (test_disasm_qemu.py compares the text itself with QEMU)."""

from __future__ import annotations

from typing import Any

import pytest

from vmforge.debug.disasm import (
    CODECS,
    DISAGREE,
    FIELDS,
    disassemble,
    format_in_asm,
    format_insn,
    insn_length,
)
from vmforge.debug.disasm_ops import OPS, PSEUDO
from vmforge.debug.disasm_symbols import STT_FUNC, ElfSymbol, SymbolTable, lookup_symbol
from vmforge.debug.disasm_tables import DECODE_TREE

# addi a0,a0,1 (4 bytes), c.li a0,0 (2), ret (2), a 48-bit encoding (6)
CODE = bytes.fromhex("13051500" "0145" "8280" "1f0034127856")


def leaves(node: Any) -> set[str]:
    """Every op name the decode tree can reach."""
    if node is None:
        return set()
    if isinstance(node, str):
        return {node}
    if isinstance(node, dict):
        return set().union(*(leaves(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(leaves(n) for n in node))
    _fields, cases, default = node
    return leaves(default).union(*(leaves(v) for v in cases.values()))


def test_every_decoded_op_has_an_entry_a_codec_and_known_format_letters() -> None:
    reachable = leaves(DECODE_TREE)
    assert len(reachable) > 600
    assert reachable <= set(OPS)
    for op, entry in OPS.items():
        assert entry[1] in CODECS, op
        for letter in entry[2]:
            assert letter in "\to" or letter in FIELDS, (op, letter)
        assert "o" not in entry[2][:-1], op        # the target comment ends the line
        for expanded in entry[4:7]:
            assert expanded is None or expanded in OPS, op


def test_pseudo_instructions_name_real_ops() -> None:
    for base, choices in PSEUDO.items():
        assert base in OPS
        for op, _constraints in choices:
            assert op in OPS


def test_disassemble_walks_mixed_lengths() -> None:
    insns = disassemble(CODE, 0x8000_0000)
    assert [(i.address, i.length) for i in insns] == [
        (0x8000_0000, 4), (0x8000_0004, 2), (0x8000_0006, 2), (0x8000_0008, 6)]
    assert [i.raw for i in insns] == [0x00150513, 0x4501, 0x8082, 0x56781234001F]
    assert insns[1].line().startswith("0x0000000080000004:  4501              ")
    assert insns[0].line(32).startswith("0x80000000:  00150513          ")
    assert insns[3].line().startswith("0x0000000080000008:  56781234001f      ")


def test_instruction_cut_by_the_end_of_code_is_decoded_from_what_is_there() -> None:
    (insn,) = disassemble(CODE[:2], 0x1000)
    assert (insn.length, insn.raw) == (4, 0x0513)
    assert disassemble(b"\x13", 0) == []


def test_format_in_asm_layout() -> None:
    text = format_in_asm(0x8000_0000, CODE[:8], "entry", priv=1, virt=0)
    lines = text.split("\n")
    assert lines[:3] == ["----------------", "IN: entry", "Priv: 1; Virt: 0"]
    assert len(lines) == 3 + 3 + 2 and lines[-2:] == ["", ""]
    user = format_in_asm(0x1000, CODE[:4], priv=None)
    assert user.split("\n")[:2] == ["----------------", "IN: "]
    assert "Priv" not in user


def test_format_in_asm_complains_as_qemu_when_the_block_is_shorter() -> None:
    text = format_in_asm(0x8000_0000, CODE, size=len(CODE) - 2)
    assert text.endswith(DISAGREE + "\n\n")
    assert format_in_asm(0x8000_0000, CODE).count("\n0x") == 4


def test_lengths_and_bad_width() -> None:
    assert [insn_length(v) for v in (0x0001, 0x0013, 0x001F, 0x003F, 0x007F)] == [2, 4, 6, 8, 0]
    with pytest.raises(ValueError, match="xlen"):
        format_insn(0x13, 0, xlen=16)


def test_symbol_lookup_follows_qemus_rules() -> None:
    table = SymbolTable([
        ElfSymbol("a", 0x100, 0, STT_FUNC, 1), ElfSymbol("data", 0x180, 4, 1, 1),
        ElfSymbol("c", 0x200, 0x10, STT_FUNC, 1), ElfSymbol("undef", 0x250, 0, STT_FUNC, 0),
        ElfSymbol("abs", 0x260, 0, STT_FUNC, 0xFFF1), ElfSymbol("last", 0x300, 0, STT_FUNC, 2)])
    # a has no size: it runs to the next function; c has its own; the last one, sizeless,
    # holds nothing; objects, undefined and absolute symbols are not kept
    assert [table.lookup(a) for a in (0xFF, 0x100, 0x1FF, 0x200, 0x20F, 0x210, 0x250, 0x300)] \
        == ["", "a", "a", "c", "c", "", "", ""]
    newer = SymbolTable([ElfSymbol("n", 0x1F0, 0x20, STT_FUNC, 1)])
    assert lookup_symbol([table, newer], 0x200) == "n"
    assert lookup_symbol([table, newer], 0x100) == "a"
    assert lookup_symbol([], 0x100) == ""
