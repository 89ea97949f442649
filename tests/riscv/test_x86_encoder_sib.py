"""``op_rx`` of the x86-64 encoder (``src/_fast/x86_enc.pxi``): an operand
``[rax + index + disp]``, which compiled loads and stores through a cached base
register use (the TLB entry's addend in rax, the guest register as the index),
against objdump's disassembly, for every index register but rsp; and ``op_sib``,
the same with any base (a load through the addend kept in rbx), rbp and r13
included (as a SIB base with no displacement they mean none: a disp8 of 0)."""

from __future__ import annotations

from test_x86_encoder import DISPS, R8, R16, R32, R64, _disassemble, _h

from vmforge._fast.riscv import _x86_encode

RX_0F, RX_BYTE, RX_WORD = 1, 2, 4


def _m(index: int, disp: int) -> str:
    sign = "+" if disp >= 0 else ""
    return f"[rax+{R64[index]}*1{sign + _h(disp) if disp else ''}]"


def _forms():
    for reg in range(16):
        for index in (i for i in range(16) if i != 4):
            for disp in DISPS if reg in (0, 6, 9) or index in (5, 12, 13) else [8]:
                m = _m(index, disp)
                yield (1, 0x8B, reg, index, disp, 0), f"mov {R64[reg]},QWORD PTR {m}"
                yield (0, 0x8B, reg, index, disp, 0), f"mov {R32[reg]},DWORD PTR {m}"
                yield (1, 0x63, reg, index, disp, 0), f"movsxd {R64[reg]},DWORD PTR {m}"
                yield (1, 0x8D, reg, index, disp, 0), f"lea {R64[reg]},{m}"
                yield (0, 0xB6, reg, index, disp, RX_0F), f"movzx {R32[reg]},BYTE PTR {m}"
                yield (1, 0xBF, reg, index, disp, RX_0F), f"movsx {R64[reg]},WORD PTR {m}"
                yield (1, 0x89, reg, index, disp, 0), f"mov QWORD PTR {m},{R64[reg]}"
                yield (0, 0x89, reg, index, disp, 0), f"mov DWORD PTR {m},{R32[reg]}"
                yield (0, 0x89, reg, index, disp, RX_WORD), f"mov WORD PTR {m},{R16[reg]}"
                yield (0, 0x88, reg, index, disp, RX_BYTE), f"mov BYTE PTR {m},{R8[reg]}"


def _check(name: str, forms: list, tmp_path) -> None:
    """Encode every form with ``name`` and compare objdump's reading of each."""
    code = bytearray()
    where = []
    for args, _ in forms:
        where.append(len(code))
        code += _x86_encode(name, *args)
    listing = _disassemble(bytes(code), tmp_path)
    bad = [f"{name}{args}: {listing.get(at, ('', '(no instruction)'))} != {want!r}"
           for at, (args, want) in zip(where, forms, strict=True)
           if listing.get(at, ("", ""))[1] != want]
    assert not bad, f"{len(bad)} of {len(forms)} forms wrong:\n" + "\n".join(bad[:40])
    assert len(listing) == len(forms)


def test_op_rx_disassembles_as_named(tmp_path):
    _check("op_rx", list(_forms()), tmp_path)


def _sib_forms():
    for base in range(16):
        for index in (i for i in range(16) if i != 4):
            for disp in (0, 8, -8, 0x1234) if base in (3, 5, 13) else (0,):
                sign = "+" if disp >= 0 else ""
                shown = sign + _h(disp) if disp or base in (5, 13) else ""   # objdump: +0x0
                m = f"[{R64[base]}+{R64[index]}*1{shown}]"
                yield (1, 0x8B, 2, base, index, disp, 0), f"mov rdx,QWORD PTR {m}"
                yield (0, 0xB6, 10, base, index, disp, RX_0F), f"movzx r10d,BYTE PTR {m}"
                yield (1, 0x63, 0, base, index, disp, 0), f"movsxd rax,DWORD PTR {m}"


def test_op_sib_disassembles_as_named(tmp_path):
    _check("op_sib", list(_sib_forms()), tmp_path)
