"""The PVH loader: the Xen PHYS32_ENTRY note, ELF32/ELF64 kernels, hvm_start_info,
its module list and memory map, and hostile images."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from vmforge.loader import (
    EM_386,
    PT_NOTE,
    LoaderError,
    load_elf,
    program_headers,
    read_elf_header,
)
from vmforge.loader.e820 import E820_RAM, E820_RESERVED, E820Entry
from vmforge.loader.pvh import (
    XEN_ELFNOTE_PHYS32_ENTRY,
    hvm_start_info,
    load_pvh,
    memmap_bytes,
    modlist_entry,
    pvh_entry,
    write_start_info,
)
from vmforge.memory import GuestMemory
from vmforge.testing.x86_elf import build_elf, pvh_source

E820 = [E820Entry(0, 0x9FC00, E820_RAM), E820Entry(0x9FC00, 0x400, E820_RESERVED),
        E820Entry(0xF0000, 0x10000, E820_RESERVED), E820Entry(0x100000, 0x300000, E820_RAM)]


def ram(size: int = 0x400000) -> GuestMemory:
    mem = GuestMemory()
    mem.add_ram(0, size)
    return mem


def u32(b: bytes, off: int) -> int:
    return int.from_bytes(b[off:off + 4], "little")


def u64(b: bytes, off: int) -> int:
    return int.from_bytes(b[off:off + 8], "little")


def note_at(path: Path) -> int:
    """File offset of the first note (the PT_NOTE segment's start)."""
    data = path.read_bytes()
    hdr = read_elf_header(str(path), data)
    (ph,) = [p for p in program_headers(str(path), data, hdr) if p.type == PT_NOTE]
    return ph.offset


def test_note_type_is_xens() -> None:
    # xen/include/public/elfnote.h: #define XEN_ELFNOTE_PHYS32_ENTRY 18
    assert XEN_ELFNOTE_PHYS32_ENTRY == 18


def test_entry_from_elf64_quad_and_elf32_long(tmp_path: Path) -> None:
    # Linux widens the value with _ASM_PTR (8 bytes); Xen's own example uses .long
    elf64 = build_elf(tmp_path, pvh_source(".quad _start + 0x10"), name="k64")
    elf32 = build_elf(tmp_path, pvh_source(".long _start + 0x20"), bits=32, name="k32")
    assert pvh_entry(str(elf64)) == 0x100010
    assert pvh_entry(str(elf32)) == 0x100020
    assert read_elf_header(str(elf32), elf32.read_bytes()).elfclass == 1


def test_other_notes_are_skipped_and_absence_is_none(tmp_path: Path) -> None:
    src = (pvh_source(".long 0x1111", name="GNU", type_=18, body="")
           + pvh_source(".long 0x2222", type_=17, body="")
           + pvh_source(".long _start + 4"))
    assert pvh_entry(str(build_elf(tmp_path, src, name="many"))) == 0x100004
    plain = build_elf(tmp_path, pvh_source(".long 1", type_=17), name="none")
    assert pvh_entry(str(plain)) is None
    with pytest.raises(LoaderError, match=r"none\.elf: no PVH entry: .*XEN_ELFNOTE_PHYS32_ENTRY"):
        load_pvh(ram(), str(plain), e820=E820, cmdline="")


def test_entry_from_a_note_section_without_pt_note(tmp_path: Path) -> None:
    elf = build_elf(tmp_path, pvh_source(".quad _start + 8", flags=""), name="sec")
    data = elf.read_bytes()
    hdr = read_elf_header(str(elf), data)
    assert not [p for p in program_headers(str(elf), data, hdr) if p.type == PT_NOTE]
    assert pvh_entry(str(elf)) == 0x100008


def test_malformed_notes_name_file_and_offset(tmp_path: Path) -> None:
    elf = build_elf(tmp_path, pvh_source(".short 0x1234"), name="short")
    off = note_at(elf)
    with pytest.raises(LoaderError, match=rf"short\.elf at offset {off:#x}: "
                       r"XEN_ELFNOTE_PHYS32_ENTRY has 2 bytes \(4 or 8 expected\)"):
        pvh_entry(str(elf))

    good = build_elf(tmp_path, pvh_source(), name="good")
    data = bytearray(good.read_bytes())
    off = note_at(good)
    data[off:off + 4] = struct.pack("<I", 0x1000)            # namesz past the segment
    bad = tmp_path / "namesz.elf"
    bad.write_bytes(data)
    with pytest.raises(LoaderError, match=rf"namesz\.elf at offset {off:#x}: note name "
                       r"\(4096 bytes\) and description \(8 bytes\) run past the end of the "
                       r"note segment 1"):
        pvh_entry(str(bad))

    data = bytearray(good.read_bytes())
    hdr = read_elf_header(str(good), bytes(data))
    (ph,) = [p for p in program_headers(str(good), bytes(data), hdr) if p.type == PT_NOTE]
    struct.pack_into("<Q", data, ph.at + 32, 0x100000)       # p_filesz of the PT_NOTE
    bad = tmp_path / "filesz.elf"
    bad.write_bytes(data)
    with pytest.raises(LoaderError, match=rf"filesz\.elf at offset {ph.at:#x}: note segment 1 "
                       r"\[0x[0-9a-f]+, 0x[0-9a-f]+\) runs past the end of the file"):
        pvh_entry(str(bad))

    trunc = tmp_path / "trunc.elf"
    trunc.write_bytes(good.read_bytes()[:100])
    with pytest.raises(LoaderError, match=r"trunc\.elf at offset 0x[0-9a-f]+: program header "
                       r"\d runs past the end of the file \(100 bytes\)"):
        pvh_entry(str(trunc))
    notelf = tmp_path / "text.elf"
    notelf.write_bytes(b"hello world" * 10)
    with pytest.raises(LoaderError, match=r"text\.elf at offset 0x0: not an ELF file"):
        pvh_entry(str(notelf))


def test_elf32_i386_segments_load(tmp_path: Path) -> None:
    elf = build_elf(tmp_path, pvh_source(".long _start"), bits=32, name="k32")
    mem = ram()
    mem.write(0x100000, b"\xAA" * 0x2000)
    image = load_elf(mem, str(elf), machine=EM_386)
    assert image.machine == EM_386 and image.entry == 0x100000
    ((addr, size),) = image.segments
    assert addr == 0x100000 and size > 4096
    code = mem.read(0x100000, 6)
    assert code == bytes.fromhex("89d8e710f4") + code[5:]   # mov %ebx,%eax; out; hlt
    assert b"pvh data" in mem.read(0x100000, size)
    assert mem.read(addr + size - 4096, 4096) == bytes(4096)   # .bss cleared
    assert image.symbols["_start"] == 0x100000


def test_layouts_match_start_info_h() -> None:
    info = hvm_start_info(nr_modules=1, modlist_paddr=0x6040, cmdline_paddr=0x20000,
                          memmap_paddr=0x6060, memmap_entries=3, rsdp_paddr=0xE0000)
    assert len(info) == 56
    assert info[0:4] == bytes.fromhex("78c56e33")          # "xEn3" with 0x80 set in 'E'
    assert (u32(info, 4), u32(info, 8), u32(info, 12)) == (1, 0, 1)
    assert (u64(info, 16), u64(info, 24), u64(info, 32)) == (0x6040, 0x20000, 0xE0000)
    assert (u64(info, 40), u32(info, 48), u32(info, 52)) == (0x6060, 3, 0)
    mod = modlist_entry(0x3FE000, 0x1234)
    assert len(mod) == 32 and (u64(mod, 0), u64(mod, 8), u64(mod, 16), u64(mod, 24)) == (
        0x3FE000, 0x1234, 0, 0)
    mm = memmap_bytes([E820Entry(0x100000, 0x300000, E820_RAM),
                       E820Entry(0x9FC00, 0x400, E820_RESERVED)])
    assert len(mm) == 48
    assert (u64(mm, 0), u64(mm, 8), u32(mm, 16), u32(mm, 20)) == (0x100000, 0x300000, 1, 0)
    assert (u64(mm, 24), u64(mm, 32), u32(mm, 40), u32(mm, 44)) == (0x9FC00, 0x400, 2, 0)


def test_load_pvh_writes_everything(tmp_path: Path) -> None:
    elf = build_elf(tmp_path, pvh_source(".quad _start"), name="kernel")
    initrd = tmp_path / "initrd.img"
    blob = bytes(range(256)) * 20 + b"end"              # 5123 bytes
    initrd.write_bytes(blob)
    mem = ram()
    boot = load_pvh(mem, str(elf), e820=E820, cmdline="console=ttyS0 quiet",
                    initrd=str(initrd))
    expected_initrd = ((0x400000 - 1) - len(blob)) & ~4095
    assert expected_initrd == 0x3FE000
    assert (boot.entry, boot.start_info) == (0x100000, 0x6000)
    assert boot.kernel_low == 0x100000 and boot.kernel_high > 0x101000
    assert boot.initrd == (expected_initrd, len(blob))
    info = mem.read(0x6000, 56)
    assert (u32(info, 0), u32(info, 4), u32(info, 8), u32(info, 12)) == (0x336EC578, 1, 0, 1)
    assert (u64(info, 16), u64(info, 24), u64(info, 32)) == (0x6040, 0x20000, 0)
    assert (u64(info, 40), u32(info, 48)) == (0x6060, len(E820))
    assert mem.read(0x6040, 32) == struct.pack("<QQQQ", expected_initrd, len(blob), 0, 0)
    for i, e in enumerate(E820):
        assert mem.read(0x6060 + 24 * i, 24) == struct.pack("<QQII", e.addr, e.size, e.type, 0)
    assert mem.read(0x20000, 20) == b"console=ttyS0 quiet\0"
    assert mem.read(expected_initrd, len(blob)) == blob
    assert mem.read(0x100000, 5) == bytes.fromhex("89d8e710f4")


def test_load_pvh_without_initrd_and_elf32(tmp_path: Path) -> None:
    elf = build_elf(tmp_path, pvh_source(".long _start"), bits=32, name="k32")
    mem = ram()
    boot = load_pvh(mem, str(elf), e820=E820[:1], cmdline="", start_info_addr=0x8000,
                    cmdline_addr=0x9000)
    assert boot.initrd is None and boot.start_info == 0x8000
    info = mem.read(0x8000, 56)
    assert (u32(info, 12), u64(info, 16), u64(info, 24)) == (0, 0, 0x9000)
    assert (u64(info, 40), u32(info, 48)) == (0x8060, 1)
    assert mem.read(0x9000, 1) == b"\0"


def test_load_pvh_refuses_what_does_not_fit(tmp_path: Path) -> None:
    elf = build_elf(tmp_path, pvh_source(), name="kernel")
    with pytest.raises(LoaderError, match=r"kernel\.elf at offset 0x40: segment 0 "
                       r"\[0x100000, 0x10[0-9a-f]{4}\) is not inside guest RAM"):
        load_pvh(ram(0x100000), str(elf), e820=E820[:1], cmdline="")
    with pytest.raises(LoaderError, match=r"kernel\.elf: the command line \(5 bytes at "
                       r"0xfffff0\) is not inside guest RAM"):
        load_pvh(ram(), str(elf), e820=E820, cmdline="abcd", cmdline_addr=0xFFFFF0)
    with pytest.raises(LoaderError, match=r"kernel\.elf: the start info and memory map "
                       r"\[0x100000, 0x1000c0\) overlaps the kernel segment"):
        load_pvh(ram(), str(elf), e820=E820, cmdline="", start_info_addr=0x100000)
    big = tmp_path / "big.img"
    big.write_bytes(bytes(0x300000))
    with pytest.raises(LoaderError, match=r"big\.img: 3145728 bytes do not fit in a RAM range "
                       r"of the memory map between the kernel's end 0x102000 and 0xffffffff"):
        load_pvh(ram(), str(elf), e820=E820, cmdline="", initrd=str(big))
    with pytest.raises(LoaderError, match=r"missing\.img: No such file"):
        load_pvh(ram(), str(elf), e820=E820, cmdline="", initrd=str(tmp_path / "missing.img"))
    # an e820 claiming RAM the guest does not have is caught before anything is written
    with pytest.raises(LoaderError, match=r"small\.img: the initrd \(16 bytes at 0x7ff000\) "
                       r"is not inside guest RAM"):
        (tmp_path / "small.img").write_bytes(bytes(16))
        load_pvh(ram(), str(elf), e820=[E820Entry(0x100000, 0x700000, E820_RAM)],
                 cmdline="", initrd=str(tmp_path / "small.img"))


def test_write_start_info_for_a_kernel_loaded_otherwise(tmp_path: Path) -> None:
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"R" * 3000)
    mem = ram()
    at = write_start_info(mem, e820=E820, cmdline="quiet", initrd=str(initrd),
                          kernel_start=0x100000, kernel_end=0x180000)
    assert at == 0x6000
    info = mem.read(0x6000, 56)
    assert (u32(info, 0), u32(info, 12), u64(info, 16), u64(info, 24)) == (0x336EC578, 1,
                                                                           0x6040, 0x20000)
    assert (u64(info, 40), u32(info, 48)) == (0x6060, len(E820))
    placed = ((0x400000 - 1) - 3000) & ~4095
    assert mem.read(0x6040, 16) == struct.pack("<QQ", placed, 3000)
    assert mem.read(placed, 3000) == b"R" * 3000 and mem.read(0x20000, 6) == b"quiet\0"
    with pytest.raises(LoaderError, match=r"^flat\.bin: the command line \[0x100000, 0x100001\) "
                       r"overlaps the kernel \[0x100000, 0x180000\)"):
        write_start_info(ram(), e820=E820, cmdline="", kernel_start=0x100000,
                         kernel_end=0x180000, cmdline_addr=0x100000, name="flat.bin")


def test_debian_vmlinux(tmp_path: Path) -> None:
    """Debian's vmlinux: the entry note as binutils reads it, then loaded whole."""
    import re
    import subprocess

    from .debian_kernel import debian_kernel_file

    vmlinux = debian_kernel_file("vmlinux")
    notes = subprocess.run(["readelf", "-nW", str(vmlinux)], capture_output=True, text=True,
                           check=True).stdout
    (desc,) = re.findall(r"^\s*Xen\s+0x0+[48]\s+Unknown note type: \(0x00000012\)\s+"
                         r"description data: ([0-9a-f ]+)$", notes, re.M)
    expected = int.from_bytes(bytes.fromhex(desc.replace(" ", "")), "little")
    assert pvh_entry(str(vmlinux)) == expected
    mem = ram(512 << 20)
    e820 = [E820Entry(0, 0x9FC00, E820_RAM), E820Entry(0x9FC00, 0x400, E820_RESERVED),
            E820Entry(0x100000, (512 << 20) - 0x100000, E820_RAM)]
    boot = load_pvh(mem, str(vmlinux), e820=e820, cmdline="console=ttyS0")
    assert boot.entry == expected and boot.kernel_low == 0x1000000
    data = vmlinux.read_bytes()
    hdr = read_elf_header(str(vmlinux), data)
    for ph in program_headers(str(vmlinux), data, hdr):
        if ph.type == 1:
            assert mem.read(ph.paddr, min(ph.filesz, 4096)) == data[ph.offset:ph.offset
                                                                    + min(ph.filesz, 4096)]
