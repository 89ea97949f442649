"""The reset ROM at 0x1000: disassembled by binutils, and byte for byte what
QEMU 7.2 puts there."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from vmforge.testing.oracles import oracle_missing
from vmforge_riscv_virt import FwDynamicInfo, reset_rom, reset_vector
from vmforge_riscv_virt import board as virt
from vmforge_riscv_virt.rom import FW_DYNAMIC_INFO_MAGIC, NEXT_MODE_S


def disassemble(code: bytes, tmp_path, arch: str = "riscv:rv64") -> list[str]:
    objdump = shutil.which("riscv64-unknown-elf-objdump")
    if objdump is None:
        oracle_missing("riscv64-unknown-elf-objdump is not installed (gcc-riscv64-unknown-elf)")
    path = tmp_path / "rom.bin"
    path.write_bytes(code)
    out = subprocess.run([objdump, "-D", "-b", "binary", "-m", arch, "-M", "no-aliases",
                          str(path)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    lines = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0].strip().endswith(":"):
            lines.append(" ".join(" ".join(parts[2:]).split()).split(" #")[0])
    return lines


def test_code_disassembles_to_qemus_sequence(tmp_path):
    code = reset_vector(0x8000_0000, 0x8FE0_0000)[:24]
    assert disassemble(code, tmp_path) == [
        "auipc t0,0x0",
        "addi a2,t0,40",
        "csrrs a0,mhartid,zero",
        "ld a1,32(t0)",
        "ld t0,24(t0)",
        "jalr zero,0(t0)",
    ]


def test_rv32_variant_uses_word_loads(tmp_path):
    code = reset_vector(0x8000_0000, 0x8FE0_0000, rv32=True)[:24]
    lines = disassemble(code, tmp_path, "riscv:rv32")
    assert lines[3:5] == ["lw a1,32(t0)", "lw t0,24(t0)"]


def test_data_words_and_fw_dynamic_info():
    rom = reset_rom(0x1_8000_0000, 0x8FE0_0000, 0x8020_0000)
    assert len(rom) == 40 + 48
    start, fdt = struct.unpack_from("<QQ", rom, 24)
    assert (start, fdt) == (0x1_8000_0000, 0x8FE0_0000)
    assert struct.unpack_from("<6Q", rom, 40) == (FW_DYNAMIC_INFO_MAGIC, 2, 0x8020_0000,
                                                 NEXT_MODE_S, 0, 0)
    assert FwDynamicInfo(0x8020_0000).pack(rv32=True) == struct.pack(
        "<6I", FW_DYNAMIC_INFO_MAGIC, 2, 0x8020_0000, 1, 0, 0)
    with pytest.raises(ValueError):
        reset_vector(1 << 32, 0, rv32=True)


@pytest.mark.parametrize("with_kernel", [False, True])
def test_bytes_match_qemus_rom(qemu, tmp_path, with_kernel):
    args: list[str] = []
    kernel_entry = 0
    if with_kernel:  # -bios none -kernel: the kernel runs from the DRAM base
        kernel = tmp_path / "k.bin"
        kernel.write_bytes(bytes(4096))
        args = ["-kernel", str(kernel)]
        kernel_entry = virt.MEMMAP["dram"].base
    size = 88
    words = qemu.xp_words(virt.MEMMAP["mrom"].base, size // 4, *args)
    assert len(words) == size // 4
    theirs = struct.pack(f"<{size // 4}I", *words)
    dtb_size = len(qemu.dumpdtb(1, "256M", "-bios", "none", *args))
    fdt = virt.fdt_load_addr(virt.MEMMAP["dram"].base, 256 << 20, dtb_size)
    ours = reset_rom(virt.MEMMAP["dram"].base, fdt, kernel_entry)
    assert ours == theirs
