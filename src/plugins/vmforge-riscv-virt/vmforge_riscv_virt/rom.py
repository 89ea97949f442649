"""The reset ROM QEMU's ``virt`` board puts at 0x1000 (``riscv_setup_rom_reset_vec``
and ``riscv_rom_copy_firmware_info`` in ``hw/riscv/boot.c``)::

    1:  auipc  t0, %pcrel_hi(fw_dyn)
        addi   a2, t0, %pcrel_lo(1b)      # a2 = &fw_dynamic_info
        csrr   a0, mhartid                # a0 = hart id
        ld     a1, 32(t0)                 # a1 = fdt address   (lw on RV32)
        ld     t0, 24(t0)                 # t0 = start address (lw on RV32)
        jr     t0
    start:     .dword start_addr
    fdt_laddr: .dword fdt_addr
    fw_dyn:    struct fw_dynamic_info     # OpenSBI's: magic, version, next_addr,
                                          # next_mode, options, boot_hart

The data words are stored as two 32-bit halves, so the layout is the same
for RV32 and RV64 (only the loads and the width of ``fw_dynamic_info``
differ).  Every hart starts here with ``a0 = mhartid``, ``a1 = fdt``,
``a2 = &fw_dynamic_info``.
"""

from __future__ import annotations

import struct

from vmforge.record import FrozenRecord

__all__ = [
    "FW_DYNAMIC_INFO_MAGIC",
    "FwDynamicInfo",
    "reset_rom",
    "reset_vector",
]

FW_DYNAMIC_INFO_MAGIC = 0x4942534F  # "OSBI"
FW_DYNAMIC_INFO_VERSION = 2
NEXT_MODE_U = 0
NEXT_MODE_S = 1
NEXT_MODE_M = 3

# registers
_T0, _A0, _A1, _A2 = 5, 10, 11, 12
_CSR_MHARTID = 0xF14
#: bytes of the code and its two data words (10 x 32 bits)
RESET_VECTOR_SIZE = 40


def _i_type(imm: int, rs1: int, funct3: int, rd: int, opcode: int) -> int:
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _auipc(rd: int, imm20: int) -> int:
    return ((imm20 & 0xFFFFF) << 12) | (rd << 7) | 0x17


def _addi(rd: int, rs1: int, imm: int) -> int:
    return _i_type(imm, rs1, 0, rd, 0x13)


def _csrr(rd: int, csr: int) -> int:  # csrrs rd, csr, x0
    return _i_type(csr, 0, 2, rd, 0x73)


def _load(rd: int, rs1: int, imm: int, rv32: bool) -> int:  # lw / ld
    return _i_type(imm, rs1, 2 if rv32 else 3, rd, 0x03)


def _jr(rs1: int) -> int:  # jalr x0, 0(rs1)
    return _i_type(0, rs1, 0, 0, 0x67)


def reset_vector(start_addr: int, fdt_addr: int, rv32: bool = False) -> bytes:
    """The 40 bytes of code and data words (``fw_dynamic_info`` follows them)."""
    for what, value in (("start_addr", start_addr), ("fdt_addr", fdt_addr)):
        if not 0 <= value < 1 << (32 if rv32 else 64):
            raise ValueError(f"{what} {value:#x} does not fit the hart's XLEN")
    words = [
        _auipc(_T0, 0),
        _addi(_A2, _T0, RESET_VECTOR_SIZE),  # fw_dyn follows the vector
        _csrr(_A0, _CSR_MHARTID),
        _load(_A1, _T0, 32, rv32),  # fdt_laddr
        _load(_T0, _T0, 24, rv32),  # start
        _jr(_T0),
        start_addr & 0xFFFFFFFF, start_addr >> 32,
        fdt_addr & 0xFFFFFFFF, fdt_addr >> 32,
    ]
    return struct.pack("<10I", *words)


class FwDynamicInfo(FrozenRecord):
    """OpenSBI's ``struct fw_dynamic_info`` (what firmware hands the next stage)."""

    __slots__ = __match_args__ = ("next_addr", "next_mode", "options", "boot_hart", "magic",
                                  "version")
    next_addr: int
    next_mode: int
    options: int
    boot_hart: int
    magic: int
    version: int

    def __init__(self, next_addr: int, next_mode: int = NEXT_MODE_S, options: int = 0,
                 boot_hart: int = 0, magic: int = FW_DYNAMIC_INFO_MAGIC,
                 version: int = FW_DYNAMIC_INFO_VERSION) -> None:
        for name, value in (("next_addr", next_addr), ("next_mode", next_mode),
                            ("options", options), ("boot_hart", boot_hart), ("magic", magic),
                            ("version", version)):
            object.__setattr__(self, name, value)

    def pack(self, rv32: bool = False) -> bytes:
        """The fields as XLEN-wide little-endian words."""
        mask = (1 << (32 if rv32 else 64)) - 1
        fields = (self.magic, self.version, self.next_addr, self.next_mode, self.options,
                  self.boot_hart)
        return struct.pack("<6I" if rv32 else "<6Q", *(f & mask for f in fields))


def reset_rom(start_addr: int, fdt_addr: int, kernel_entry: int = 0, *,
              next_mode: int = NEXT_MODE_S, options: int = 0, boot_hart: int = 0,
              rv32: bool = False) -> bytes:
    """The whole ROM image QEMU 7.2 writes at 0x1000: the reset vector then the
    ``fw_dynamic_info`` telling OpenSBI to enter ``kernel_entry`` in ``next_mode``."""
    info = FwDynamicInfo(kernel_entry, next_mode, options, boot_hart)
    return reset_vector(start_addr, fdt_addr, rv32) + info.pack(rv32)
