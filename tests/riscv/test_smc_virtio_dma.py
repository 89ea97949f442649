"""Code read from a disk by virtio-blk (DMA, not the hart's stores) over code the
hart has run hot, then fence.i, then run: the new code runs.

A bare-metal program on the virt board (``-bios none -kernel``) drives the
virtio-blk device of a virtio-mmio slot itself (modern interface: one queue,
one read request of sector 0 into the page of a hot function), as Linux does
when it pages in an executable, then executes fence.i and calls the function.
The same program and disk on QEMU 7.2 (``qemu-system-riscv64 -M virt``, its
virtio-mmio slots made modern as vmforge's are: ``force-legacy=false``) pass.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from test_smc_invalidation import EPILOGUE  # tests/riscv is on sys.path (conftest)

from vmforge.chardev import BufferChar
from vmforge.config import DeviceSpec, DriveSpec, MachineConfig
from vmforge.testing.oracles import require_program
from vmforge_riscv_virt.machine import RiscvVirt

QEMU = "qemu-system-riscv64"

# gp: which check failed (exit (gp << 16) | 0x3333)
PROGRAM = r"""
    .option norvc
    la s7, g
    li s2, 100
1:  jalr ra, 0(s7)              # g hot: decoded and compiled
    addi s2, s2, -1
    bnez s2, 1b
    li gp, 1
    li t6, 11
    bne a0, t6, fail

    li s0, 0x10001000           # the virtio-mmio slot with a block device (id 2)
    li s1, 0x10009000
2:  lw t0, 8(s0)
    li t1, 2
    beq t0, t1, 3f
    li t1, 0x1000
    add s0, s0, t1
    blt s0, s1, 2b
    li gp, 2
    j fail
3:  lw t0, 4(s0)                # Version 2: the modern interface
    li t1, 2
    li gp, 6
    bne t0, t1, fail
    sw zero, 0x70(s0)           # reset; ACKNOWLEDGE | DRIVER
    li t0, 3
    sw t0, 0x70(s0)
    li t0, 1                    # features: VIRTIO_F_VERSION_1 only
    sw t0, 0x24(s0)
    sw t0, 0x20(s0)
    sw zero, 0x24(s0)
    sw zero, 0x20(s0)
    li t0, 11                   # FEATURES_OK
    sw t0, 0x70(s0)
    lw t0, 0x70(s0)
    andi t0, t0, 8
    li gp, 3
    beqz t0, fail
    sw zero, 0x30(s0)           # queue 0: 8 entries, the rings below
    li t0, 8
    sw t0, 0x38(s0)
    la t0, desc
    sw t0, 0x80(s0)
    srli t0, t0, 32
    sw t0, 0x84(s0)
    la t0, avail
    sw t0, 0x90(s0)
    srli t0, t0, 32
    sw t0, 0x94(s0)
    la t0, used
    sw t0, 0xa0(s0)
    srli t0, t0, 32
    sw t0, 0xa4(s0)
    li t0, 1
    sw t0, 0x44(s0)             # QueueReady
    li t0, 15
    sw t0, 0x70(s0)             # DRIVER_OK

    la t0, req                  # VIRTIO_BLK_T_IN of sector 0
    sd zero, 0(t0)
    sd zero, 8(t0)
    la t1, desc
    sd t0, 0(t1)                # header: 16 bytes, NEXT -> 1
    li t2, 16
    sw t2, 8(t1)
    li t2, 1
    sh t2, 12(t1)
    sh t2, 14(t1)
    sd s7, 16(t1)               # data: 512 bytes over g, WRITE | NEXT -> 2
    li t2, 512
    sw t2, 24(t1)
    li t2, 3
    sh t2, 28(t1)
    li t2, 2
    sh t2, 30(t1)
    la t2, status               # status byte, WRITE
    sd t2, 32(t1)
    li t2, 1
    sw t2, 40(t1)
    li t2, 2
    sh t2, 44(t1)
    sh zero, 46(t1)
    la t1, avail
    sh zero, 0(t1)
    sh zero, 4(t1)              # ring[0] = descriptor 0
    fence
    li t2, 1
    sh t2, 2(t1)                # idx = 1
    fence
    sw zero, 0x50(s0)           # QueueNotify
    la t1, used
4:  lhu t2, 2(t1)
    beqz t2, 4b
    fence
    la t2, status
    lbu t2, 0(t2)
    li gp, 4
    bnez t2, fail

    fence.i
    jalr ra, 0(s7)
    li gp, 5
    li t6, 22
    bne a0, t6, fail
    j pass
""" + EPILOGUE + r"""
new: li a0, 22                  # sector 0 of the disk
    ret
    .balign 16
desc:   .space 128
avail:  .space 32
used:   .space 128
req:    .space 16
status: .space 8
    .balign 4096
g:  li a0, 11
    ret
    .space 1024
"""


def _files(rv_asm, tmp_path: Path) -> tuple[Path, Path]:
    image, syms = rv_asm(PROGRAM)
    new = syms["new"] - syms["_start"]
    kernel = tmp_path / "prog.bin"
    kernel.write_bytes(image)
    disk = tmp_path / "disk.img"
    disk.write_bytes(image[new:new + 8].ljust(4096, b"\0"))
    return kernel, disk


def test_code_read_by_virtio_blk_runs_after_fence_i(rv_asm, tmp_path):
    kernel, disk = _files(rv_asm, tmp_path)
    m = RiscvVirt(MachineConfig(
        machine="riscv-virt", bios="none", kernel=str(kernel), serial=[BufferChar()],
        drives=[DriveSpec(str(disk), "raw", interface="none", id="d0")],
        devices=[DeviceSpec("virtio-blk-device", {"drive": "d0"})]))
    m.start()
    try:
        status = m.wait(60)
    finally:
        m.stop()
    assert status == 0, f"check {status} failed"


def test_qemu_runs_the_same_program(rv_asm, tmp_path):
    qemu = require_program(QEMU, "qemu-system-misc")
    kernel, disk = _files(rv_asm, tmp_path)
    done = subprocess.run([qemu, "-M", "virt", "-bios", "none", "-kernel", str(kernel),
                           "-drive", f"file={disk},if=none,format=raw,id=d0",
                           "-device", "virtio-blk-device,drive=d0",
                           "-global", "virtio-mmio.force-legacy=false", "-nographic",
                           "-monitor", "none", "-serial", "none"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert done.returncode == 0, f"QEMU: check {done.returncode} failed"
