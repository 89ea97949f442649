"""The devices wired to vmforge's software hart (when it is built): an M-mode
guest takes a PLIC interrupt and a CLINT timer interrupt, then reports through
the test finisher.  Checks the interface the devices assume of the hart
(``set_irq_line(bit, level)``)."""

from __future__ import annotations

import shutil
import subprocess

from vmforge.testing.oracles import oracle_missing, require_module
from vmforge_riscv_devices import Clint, Plic, SifiveTest
from vmforge_riscv_devices.hart import MIP_MEIP
from vmforge_riscv_virt import board as virt

interp = require_module("vmforge.accel.interp", "the software hart is not built (make setup)")

DRAM = virt.MEMMAP["dram"].base

GUEST = r"""
    .option norvc
    .globl _start
_start:
    la      t0, trap
    csrw    mtvec, t0
    li      s0, 0x0c000000          # PLIC
    li      t1, 1
    sw      t1, 4*10(s0)            # priority[10] = 1
    li      t0, 0x0c002000
    li      t1, 1 << 10
    sw      t1, 0(t0)               # context 0 (hart 0, M) enables source 10
    li      t0, 0x0c200000
    sw      zero, 0(t0)             # threshold 0
    li      s1, 0x02000000          # CLINT
    li      t0, 0xbff8
    add     t0, s1, t0
    ld      t1, 0(t0)               # mtime
    addi    t1, t1, 50
    li      t0, 0x4000
    add     t0, s1, t0
    sd      t1, 0(t0)               # mtimecmp = mtime + 50 (5 us)
    li      s2, 0                   # s2: events seen, one per nibble
    li      t0, (1 << 11) | (1 << 7)
    csrw    mie, t0                 # MEIE, MTIE
    csrsi   mstatus, 8              # MIE
1:  wfi
    j       1b

trap:
    csrr    t0, mcause
    bgez    t0, fail                # not an interrupt
    slli    t0, t0, 1
    srli    t0, t0, 1
    li      t1, 11
    beq     t0, t1, external
    li      t1, 7
    beq     t0, t1, timer
    j       fail
external:
    li      t0, 0x0c200004
    lw      t1, 0(t0)               # claim
    slli    s2, s2, 8
    or      s2, s2, t1
    li      t2, 0x10000000
    lw      t2, 0(t2)               # service the device: it lowers its line
    sw      t1, 0(t0)               # complete
    mret
timer:
    li      t0, -1
    li      t1, 0x4000
    add     t1, s1, t1
    sd      t0, 0(t1)               # mtimecmp = never: MTIP drops
    slli    s2, s2, 8
    ori     s2, s2, 0x77
    li      t0, 0x3333
    slli    s2, s2, 16
    or      t0, t0, s2
    li      t1, 0x100000
    sw      t0, 0(t1)               # finisher: FAIL with code = events
1:  j       1b
fail:
    li      t0, 0x3333 | (0xbad << 16)
    li      t1, 0x100000
    sw      t0, 0(t1)
1:  j       1b
"""


def assemble(tmp_path) -> bytes:
    tools = {t: shutil.which(f"riscv64-unknown-elf-{t}") for t in ("as", "ld", "objcopy")}
    if not all(tools.values()):
        oracle_missing("the riscv64-unknown-elf toolchain is not installed "
                       "(Debian package gcc-riscv64-unknown-elf)")
    src, obj, elf, raw = (tmp_path / n for n in ("g.S", "g.o", "g.elf", "g.bin"))
    src.write_text(GUEST)
    subprocess.run([tools["as"], "-march=rv64imac_zicsr", "-o", str(obj), str(src)],
                   check=True, timeout=60)
    subprocess.run([tools["ld"], "-Ttext", hex(DRAM), "-o", str(elf), str(obj)],
                   check=True, timeout=60)
    subprocess.run([tools["objcopy"], "-O", "binary", str(elf), str(raw)], check=True,
                   timeout=60)
    return raw.read_bytes()


def test_guest_takes_plic_and_clint_interrupts(board, tmp_path):
    code = assemble(tmp_path)
    board.add_ram(DRAM, 1 << 20)
    board.space.memory.load(DRAM, code)
    plic = board.add_device(Plic(), virt.MEMMAP["plic"].base)
    clint = board.add_device(Clint(), virt.MEMMAP["clint"].base)
    board.add_device(SifiveTest(), virt.MEMMAP["test"].base)
    hart = interp.RiscvHart(board.space, 0, pc=DRAM)
    plic.connect_hart(0, hart)
    clint.connect_hart(0, hart)
    uart_line = plic.line(virt.UART0_IRQ)

    class Device:  # reading it services it, as reading a UART's RBR does
        reads = 0

        def read(self, offset: int, size: int) -> int:
            Device.reads += 1
            uart_line.lower()
            return 0x42

        def write(self, offset: int, size: int, value: int) -> None:
            pass

    board.space.add_mmio(virt.MEMMAP["uart0"].base, Device(), 0x100, "serviced")

    def run_until_wfi() -> None:
        for _ in range(100):
            res = hart.run(100_000)
            if res.reason == interp.StopReason.WFI or board.stopped:
                return
        raise AssertionError(f"the guest did not reach wfi: {res}")

    run_until_wfi()  # set up, waiting
    assert not board.stopped and hart.csr("mip") == 0
    uart_line.raise_()  # the device wants attention
    assert hart.csr("mip") >> MIP_MEIP & 1
    run_until_wfi()  # the handler claimed 10, serviced the device, completed
    assert Device.reads == 1 and not uart_line.level
    assert plic.claimed == 0 and plic.pending == 0 and hart.csr("mip") == 0
    assert not board.stopped
    board.clock.advance(4_900)
    assert board.timers.run_due() == 0
    board.clock.advance(100)  # mtime += 50: the deadline
    assert board.timers.run_due() == 1
    run_until_wfi()
    assert board.stopped and board.shutdown_reason == "fail"
    assert board.exit_status == 0x0A77  # source 10, then the timer (7)
