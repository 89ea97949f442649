"""The Linux x86 64-bit boot protocol: setup header, zero page, bzImage loading.

Synthetic bzImages are built here byte by byte at the offsets of boot.rst's header
table; the zero page is read back both at bootparam.h's offsets and by a C program
compiled against the kernel's own <asm/bootparam.h> (linux-libc-dev).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from vmforge.loader import LoaderError
from vmforge.loader.e820 import E820_RAM, E820_RESERVED, E820Entry
from vmforge.loader.linux_x86 import (
    build_boot_params,
    load_bzimage,
    read_setup_header,
)
from vmforge.memory import GuestMemory
from vmforge.testing.oracles import oracle_missing, require_program

SETUP_SECTS = 3
PAYLOAD = bytes((i * 7 + 3) & 0xFF for i in range(8192))
MiB = 1 << 20


def bzimage(**over: int) -> bytearray:
    """A bzImage: boot sector + SETUP_SECTS sectors of setup, then PAYLOAD; header
    fields poked at boot.rst's offsets (``over`` replaces them by name)."""
    f = {"setup_sects": SETUP_SECTS, "syssize": len(PAYLOAD) // 16, "boot_flag": 0xAA55,
         "jump_end": 0x6A, "version": 0x020F, "loadflags": 0x01, "code32_start": 0x100000,
         "heap_end_ptr": 0, "initrd_addr_max": 0x7FFFFFFF, "kernel_alignment": 0x200000,
         "relocatable_kernel": 1, "min_alignment": 21, "xloadflags": 0x03,
         "cmdline_size": 2047, "payload_offset": 0x3B4, "payload_length": 0x1000,
         "pref_address": 0x1000000, "init_size": 0x800000, "vid_mode": 0xFFFF}
    f.update(over)
    img = bytearray((SETUP_SECTS + 1) * 512) + PAYLOAD
    img[0:2] = b"MZ"
    for off, fmt, name in ((0x1F1, "B", "setup_sects"), (0x1F4, "I", "syssize"),
                           (0x1FA, "H", "vid_mode"), (0x1FE, "H", "boot_flag"),
                           (0x201, "B", "jump_end"), (0x206, "H", "version"),
                           (0x211, "B", "loadflags"), (0x214, "I", "code32_start"),
                           (0x224, "H", "heap_end_ptr"), (0x22C, "I", "initrd_addr_max"),
                           (0x230, "I", "kernel_alignment"), (0x234, "B", "relocatable_kernel"),
                           (0x235, "B", "min_alignment"), (0x236, "H", "xloadflags"),
                           (0x238, "I", "cmdline_size"), (0x248, "I", "payload_offset"),
                           (0x24C, "I", "payload_length"), (0x258, "Q", "pref_address"),
                           (0x260, "I", "init_size")):
        struct.pack_into("<" + fmt, img, off, f[name])
    img[0x200] = 0xEB                                   # jmp short
    img[0x202:0x206] = b"HdrS"
    img[0x26C:0x270] = b"TAIL"                          # past the header: never copied
    return img


def write(tmp_path: Path, img: bytes | bytearray, name: str = "bzImage") -> Path:
    p = tmp_path / name
    p.write_bytes(img)
    return p


def u(b: bytes, off: int, size: int) -> int:
    return int.from_bytes(b[off:off + size], "little")


def test_setup_header_fields(tmp_path: Path) -> None:
    img = bzimage()
    for hdr in (read_setup_header(write(tmp_path, img)), read_setup_header(bytes(img))):
        assert hdr.raw == bytes(img[0x1F1:0x26C]) and len(hdr.raw) == 123
        assert (hdr.setup_sects, hdr.syssize, hdr.boot_flag) == (3, 512, 0xAA55)
        assert hdr.jump == 0x6AEB and hdr.header == b"HdrS" and hdr.version == 0x020F
        assert (hdr.loadflags, hdr.code32_start, hdr.initrd_addr_max) == (1, 0x100000,
                                                                         0x7FFFFFFF)
        assert (hdr.kernel_alignment, hdr.relocatable_kernel, hdr.min_alignment) == (
            0x200000, 1, 21)
        assert (hdr.xloadflags, hdr.cmdline_size, hdr.payload_offset, hdr.payload_length) == (
            3, 2047, 0x3B4, 0x1000)
        assert (hdr.pref_address, hdr.init_size, hdr.vid_mode) == (0x1000000, 0x800000, 0xFFFF)
        assert (hdr.ramdisk_image, hdr.cmd_line_ptr, hdr.heap_end_ptr) == (0, 0, 0)
        assert hdr.setup_size == 4 * 512
    assert read_setup_header(bytes(bzimage(setup_sects=0))).setup_size == 5 * 512
    short = bzimage(jump_end=0x66)                     # a 2.12 header ending after init_size
    assert read_setup_header(bytes(short)).raw == bytes(short[0x1F1:0x268])


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b[:0x100], r"at offset 0x1f1: setup header runs past the end of the file "
                          r"\(256 bytes\)"),
    (lambda b: b[:0x230], r"at offset 0x1f1: setup header \(to 0x26c\) runs past the end of "
                          r"the file \(560 bytes\)"),
    (lambda b: b[:0x202] + b"HdrZ" + b[0x206:], r'at offset 0x202: not a bzImage: no "HdrS"'),
    (lambda b: bzimage(version=0x020B), r"at offset 0x206: boot protocol 2.11 is older than "
                                        r"2.12: no 64-bit entry point"),
    (lambda b: bzimage(xloadflags=2), r"at offset 0x236: the kernel has no 64-bit entry point "
                                      r"\(XLF_KERNEL_64 is clear in xloadflags\)"),
    (lambda b: bzimage(loadflags=0), r"at offset 0x211: not a bzImage: LOADED_HIGH is clear"),
    (lambda b: bzimage(jump_end=0x40), r"at offset 0x201: setup header ends at 0x242, before "
                                       r"the end of init_size"),
    (lambda b: bzimage(jump_end=0x90), r"at offset 0x201: setup header ends at 0x292, past "
                                       r"0x290"),
])
def test_setup_header_refusals(tmp_path: Path, change, message: str) -> None:
    path = write(tmp_path, change(bzimage()), "bad.bin")
    with pytest.raises(LoaderError, match=r"^" + str(path).replace(".", r"\.") + " " + message):
        read_setup_header(path)
    with pytest.raises(LoaderError, match=message):
        load_bzimage(ram(), str(path), e820=E820, cmdline="")


E820 = [E820Entry(0, 0x9FC00, E820_RAM), E820Entry(0x9FC00, 0x400, E820_RESERVED),
        E820Entry(0x100000, 63 * MiB, E820_RAM)]


def ram(size: int = 64 * MiB) -> GuestMemory:
    mem = GuestMemory()
    mem.add_ram(0, size)
    return mem


def test_zero_page_offsets() -> None:
    hdr = read_setup_header(bytes(bzimage()))
    e820 = [*E820, E820Entry(0x1_0000_0000, 0x4000_0000, E820_RAM)]
    bp = build_boot_params(hdr, e820=e820, cmdline_addr=0x1_2345_6000, cmdline_size=100,
                           initrd=(0x2_0000_3000, 0x1_0000_0010))
    assert len(bp) == 4096
    expected = bytearray(4096)
    expected[0x1F1:0x26C] = hdr.raw
    expected[0x210] = 0xFF                                       # type_of_loader
    expected[0x211] = 0x81                                       # LOADED_HIGH | CAN_USE_HEAP
    expected[0x224:0x226] = (0xFE00).to_bytes(2, "little")       # heap_end_ptr
    expected[0x228:0x22C] = (0x2345_6000).to_bytes(4, "little")  # cmd_line_ptr
    expected[0x0C8:0x0CC] = (1).to_bytes(4, "little")            # ext_cmd_line_ptr
    expected[0x218:0x21C] = (0x3000).to_bytes(4, "little")       # ramdisk_image
    expected[0x21C:0x220] = (0x10).to_bytes(4, "little")         # ramdisk_size
    expected[0x0C0:0x0C4] = (2).to_bytes(4, "little")            # ext_ramdisk_image
    expected[0x0C4:0x0C8] = (1).to_bytes(4, "little")            # ext_ramdisk_size
    expected[0x1E8] = 4                                          # e820_entries
    for i, e in enumerate(e820):                                 # e820_table at 0x2d0
        at = 0x2D0 + 20 * i
        expected[at:at + 20] = (e.addr.to_bytes(8, "little") + e.size.to_bytes(8, "little")
                                + e.type.to_bytes(4, "little"))
    assert bp == bytes(expected)
    assert bp[0x26C:0x270] == bytes(4)                           # the file's TAIL not copied


def test_zero_page_refusals() -> None:
    hdr = read_setup_header(bytes(bzimage(xloadflags=1)))
    kw = {"cmdline_addr": 0x20000, "cmdline_size": 10, "initrd": None}
    build_boot_params(hdr, e820=[E820[0]] * 128, **kw)
    with pytest.raises(ValueError, match="129 e820 entries: the zero page holds at most 128"):
        build_boot_params(hdr, e820=[E820[0]] * 129, **kw)
    with pytest.raises(ValueError, match="initrd at 0x100000000 is above 4 GiB"):
        build_boot_params(hdr, e820=E820, cmdline_addr=0x20000, cmdline_size=10,
                          initrd=(1 << 32, 5))
    with pytest.raises(ValueError, match="command line at 0xfffffff0 is above 4 GiB"):
        build_boot_params(hdr, e820=E820, cmdline_addr=0xFFFFFFF0, cmdline_size=20,
                          initrd=None)
    with pytest.raises(ValueError, match=r"command line has 2048 bytes, the kernel takes at "
                       r"most 2047 \(cmdline_size\)"):
        build_boot_params(hdr, e820=E820, cmdline_addr=0x20000, cmdline_size=2048,
                          initrd=None)


C_READER = r"""
#include <stdio.h>
#include <stddef.h>
#include <asm/bootparam.h>

int main(int argc, char **argv) {
    static struct boot_params bp;
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(&bp, 1, sizeof bp, f) != sizeof bp) return 2;
    printf("%zu %zu %zu %zu\n", sizeof bp, offsetof(struct boot_params, hdr),
           offsetof(struct boot_params, e820_table), sizeof(struct setup_header));
    printf("%u %u %#x %#x %#x %#x %#x\n", bp.hdr.setup_sects, bp.hdr.syssize,
           bp.hdr.boot_flag, bp.hdr.header, bp.hdr.version, bp.hdr.type_of_loader,
           bp.hdr.loadflags);
    printf("%#x %#x %#x %#x %#x %#x %#x\n", bp.hdr.heap_end_ptr, bp.hdr.cmd_line_ptr,
           bp.ext_cmd_line_ptr, bp.hdr.ramdisk_image, bp.ext_ramdisk_image,
           bp.hdr.ramdisk_size, bp.ext_ramdisk_size);
    printf("%#x %u %#llx %#x %#x\n", bp.hdr.xloadflags, bp.hdr.cmdline_size,
           (unsigned long long)bp.hdr.pref_address, bp.hdr.init_size, bp.sentinel);
    printf("%u\n", bp.e820_entries);
    for (int i = 0; i < bp.e820_entries; i++)
        printf("%#llx %#llx %u\n", (unsigned long long)bp.e820_table[i].addr,
               (unsigned long long)bp.e820_table[i].size, bp.e820_table[i].type);
    return 0;
}
"""


def test_zero_page_read_by_linuxs_own_header(tmp_path: Path) -> None:
    gcc = require_program("gcc", "gcc")
    if not Path("/usr/include/x86_64-linux-gnu/asm/bootparam.h").exists() and \
            not Path("/usr/include/asm/bootparam.h").exists():
        oracle_missing("asm/bootparam.h is not installed (Debian package linux-libc-dev)")
    src = tmp_path / "reader.c"
    src.write_text(C_READER)
    exe = tmp_path / "reader"
    subprocess.run([gcc, "-O0", "-o", str(exe), str(src)], check=True)
    hdr = read_setup_header(bytes(bzimage()))
    zp = tmp_path / "zeropage.bin"
    zp.write_bytes(build_boot_params(hdr, e820=E820, cmdline_addr=0x1_0002_0000,
                                     cmdline_size=12, initrd=(0x3FFD000, 0x2345)))
    out = subprocess.run([str(exe), str(zp)], check=True, capture_output=True,
                         text=True).stdout.splitlines()
    assert out[0] == "4096 497 720 123"            # 0x1f1, 0x2d0
    assert out[1] == "3 512 0xaa55 0x53726448 0x20f 0xff 0x81"
    assert out[2] == "0xfe00 0x20000 0x1 0x3ffd000 0 0x2345 0"
    assert out[3] == "0x3 2047 0x1000000 0x800000 0"
    assert out[4] == "3"
    assert out[5:] == ["0 0x9fc00 1", "0x9fc00 0x400 2", "0x100000 0x3f00000 1"]


def test_load_bzimage(tmp_path: Path) -> None:
    path = write(tmp_path, bzimage())
    initrd = write(tmp_path, b"initrd!" * 1000, "initrd.img")       # 7000 bytes
    mem = ram()
    boot = load_bzimage(mem, str(path), e820=E820, cmdline="console=ttyS0 panic=-1",
                        initrd=str(initrd))
    # QEMU: initrd_max = min(UINT32_MAX (XLF_CAN_BE_LOADED_ABOVE_4G), below_4g - 1)
    expected_initrd = ((64 * MiB - 1) - 7000) & ~4095
    assert expected_initrd == 0x3FFE000
    assert (boot.entry64, boot.boot_params, boot.kernel_addr) == (0x100200, 0x7000, 0x100000)
    assert boot.kernel_end == 0x100000 + len(PAYLOAD)
    assert boot.initrd == (expected_initrd, 7000)
    assert mem.read(0x100000, len(PAYLOAD)) == PAYLOAD
    assert mem.read(0x20000, 24) == b"console=ttyS0 panic=-1\0\0"
    assert mem.read(expected_initrd, 7000) == b"initrd!" * 1000
    hdr = read_setup_header(path)
    assert mem.read(0x7000, 4096) == build_boot_params(
        hdr, e820=E820, cmdline_addr=0x20000, cmdline_size=22, initrd=(expected_initrd, 7000))
    zp = mem.read(0x7000, 4096)
    assert (u(zp, 0x218, 4), u(zp, 0x21C, 4), u(zp, 0x228, 4)) == (expected_initrd, 7000,
                                                                   0x20000)


def test_initrd_below_initrd_addr_max(tmp_path: Path) -> None:
    path = write(tmp_path, bzimage(xloadflags=1, initrd_addr_max=0x37FFFFFF))
    initrd = write(tmp_path, bytes(5000), "initrd.img")
    e820 = [E820Entry(0, 0x9FC00, E820_RAM), E820Entry(0x100000, 1024 * MiB - 0x100000,
                                                       E820_RAM)]
    boot = load_bzimage(ram(1024 * MiB), str(path), e820=e820, cmdline="", initrd=str(initrd),
                        boot_params_addr=0x8000, cmdline_addr=0x30000)
    assert boot.initrd == ((0x37FFFFFF - 5000) & ~4095, 5000) == (0x37FFE000, 5000)
    assert boot.boot_params == 0x8000


def test_load_bzimage_refusals(tmp_path: Path) -> None:
    path = write(tmp_path, bzimage())
    with pytest.raises(LoaderError, match=r"bzImage at offset 0x238: the command line has "
                       r"2048 bytes, the kernel takes at most 2047 \(cmdline_size\)"):
        load_bzimage(ram(), str(path), e820=E820, cmdline="x" * 2048)
    with pytest.raises(LoaderError, match=r"bzImage: the protected-mode kernel \(8192 bytes "
                       r"at 0x100000\) is not inside guest RAM"):
        load_bzimage(ram(0x101000), str(path), e820=E820, cmdline="")
    with pytest.raises(LoaderError, match=r"bzImage at offset 0x260: the kernel needs 0x800000 "
                       r"bytes of RAM from 0x1000000 to start \(init_size\)"):
        load_bzimage(ram(20 * MiB), str(path), e820=E820, cmdline="")
    with pytest.raises(LoaderError, match=r"bzImage: the zero page \[0x20000, 0x21000\) "
                       r"overlaps the command line"):
        load_bzimage(ram(), str(path), e820=E820, cmdline="", boot_params_addr=0x20000)
    trunc = write(tmp_path, bzimage()[:-1], "trunc")
    with pytest.raises(LoaderError, match=r"trunc at offset 0x1f4: the protected-mode kernel "
                       r"has 8191 bytes, syssize says 8192: the file is truncated"):
        load_bzimage(ram(), str(trunc), e820=E820, cmdline="")
    sects = write(tmp_path, bzimage(setup_sects=200), "sects")
    with pytest.raises(LoaderError, match=r"sects at offset 0x1f1: the setup code \(102912 "
                       r"bytes by setup_sects\) runs past the end of the file \(10240 bytes\)"):
        load_bzimage(ram(), str(sects), e820=E820, cmdline="")
    big = write(tmp_path, bytes(60 * MiB), "big.img")
    with pytest.raises(LoaderError, match=r"big\.img: 62914560 bytes do not fit in a RAM range "
                       r"of the memory map between the kernel's end 0x1800000 and "
                       r"0xffffffff"):
        load_bzimage(ram(), str(path), e820=E820, cmdline="", initrd=str(big))
    mem = ram()
    with pytest.raises(LoaderError):
        load_bzimage(mem, str(path), e820=E820, cmdline="", boot_params_addr=0x20000)
    assert mem.read(0x100000, 16) == bytes(16)            # nothing written on refusal


def test_debian_vmlinuz() -> None:
    """Debian's bzImage: its header read, its xz payload where payload_offset says,
    and loaded into a 512 MiB guest as microvm lays it out."""
    from .debian_kernel import debian_kernel_file

    vmlinuz = debian_kernel_file("vmlinuz")
    data = vmlinuz.read_bytes()
    hdr = read_setup_header(vmlinuz)
    assert hdr.header == b"HdrS" and hdr.version >= 0x020F and hdr.boot_flag == 0xAA55
    assert hdr.xloadflags & 1 and hdr.loadflags & 1 and hdr.relocatable_kernel == 1
    assert len(hdr.raw) == data[0x201] + 0x202 - 0x1F1
    assert hdr.setup_size + hdr.syssize * 16 <= len(data)
    payload = hdr.setup_size + hdr.payload_offset
    assert data[payload:payload + 6] == b"\xfd7zXZ\x00"      # boot.rst: XZ magic FD 37
    assert hdr.payload_offset + hdr.payload_length <= hdr.syssize * 16
    mem = ram(512 * MiB)
    e820 = [E820Entry(0, 0x9FC00, E820_RAM), E820Entry(0x9FC00, 0x400, E820_RESERVED),
            E820Entry(0x100000, 511 * MiB, E820_RAM)]
    boot = load_bzimage(mem, str(vmlinuz), e820=e820, cmdline="console=ttyS0")
    assert boot.entry64 == 0x100200 and boot.kernel_end == 0x100000 + len(data) - hdr.setup_size
    assert mem.read(0x100000, 4096) == data[hdr.setup_size:hdr.setup_size + 4096]
    zp = mem.read(0x7000, 4096)                 # the header from initrd_addr_max (0x22c) on
    assert zp[0x22C:0x1F1 + len(hdr.raw)] == hdr.raw[0x22C - 0x1F1:]
    assert (zp[0x210], u(zp, 0x228, 4), zp[0x1E8]) == (0xFF, 0x20000, 3)
