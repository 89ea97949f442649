"""Which encodings around Zba/Zbb/Zbc/Zbs are instructions, against QEMU 7.2.

Every funct7/funct3 of OP and OP-32 (rs2 = x0 and x11: zext.h needs x0) and
every imm[11:0]/funct3 of OP-IMM and OP-IMM-32's shift group (funct3 1 and 5)
runs once under an M-mode handler that notes the trap cause (0: none, 2:
illegal instruction); the causes go to the UART.  vmforge (interpreter and
compiled tier) must note the same as ``qemu-system-riscv64 -M virt -bios none``.
"""

from __future__ import annotations

import pytest
from rv_uart import UART, attach_uart, qemu_uart_output

A0, A1, A2 = 10, 11, 12


def words() -> list[int]:
    out = []
    for opc in (0x33, 0x3B):
        for f7 in range(128):
            for f3 in range(8):
                for rs2 in (0, A1):
                    out.append(f7 << 25 | rs2 << 20 | A0 << 15 | f3 << 12 | A2 << 7 | opc)
    for opc in (0x13, 0x1B):
        for f3 in (1, 5):
            for imm in range(4096):
                out.append(imm << 20 | A0 << 15 | f3 << 12 | A2 << 7 | opc)
    return out


def program() -> str:
    lines = ["    .option norvc", "    la t0, trap", "    csrw mtvec, t0", "    la s1, out",
             "    li a0, 0x0123456789abcdef", "    li a1, 0x13579bdf2468ace0"]
    for w in words():
        lines += ["    li s11, 0", f"    .word {w:#010x}", "    sb s11, 0(s1)",
                  "    addi s1, s1, 1"]
    lines += ["    la s0, out", f"    li s2, {UART:#x}",
              "dump: lbu t0, 0(s0)", "    sb t0, 0(s2)", "    addi s0, s0, 1",
              "    bne s0, s1, dump",
              "    li t0, 0x100000", "    li t1, 0x5555", "    sw t1, 0(t0)", "spin: j spin",
              "trap: csrr s11, mcause", "    csrr t3, mepc", "    addi t3, t3, 4",
              "    csrw mepc, t3", "    mret",
              "    .balign 8", "out:"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def image(rv_asm) -> bytes:
    return rv_asm(program())[0]


@pytest.fixture(scope="module")
def qemu_causes(image, tmp_path_factory) -> bytes:
    return qemu_uart_output(image, tmp_path_factory.mktemp("zbenc"))


@pytest.mark.parametrize("jit", [True, False], ids=["compiled", "interpreter"])
def test_zb_encodings_legal_as_on_qemu(rv_env, image, qemu_causes, jit):
    space, hart = rv_env.make_machine(image)
    uart = attach_uart(space)
    hart.jit = jit
    with pytest.raises(rv_env.ProgramExit):
        hart.run(100_000_000)
    mine = bytes(uart.out)
    ws = words()
    assert len(qemu_causes) == len(ws) == len(mine) and set(qemu_causes) <= {0, 2}
    diff = [f"{w:#010x}: {m} (QEMU {q})"
            for w, m, q in zip(ws, mine, qemu_causes, strict=True) if m != q]
    assert not diff, f"{len(diff)} differ: {diff[:10]}"
