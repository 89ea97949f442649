"""The PVH (x86/HVM direct boot) ABI: an ELF kernel entered in 32-bit protected
mode at the address of its ``XEN_ELFNOTE_PHYS32_ENTRY`` note, with ``%ebx``
holding the physical address of a ``struct hvm_start_info``.

Layouts from Xen's xen/include/public/arch-x86/hvm/start_info.h (QEMU's copy:
include/hw/xen/start_info.h), all little endian:

``hvm_start_info`` (56 bytes)::

    0 magic (u32, 0x336ec578)   4 version (u32, 1)   8 flags (u32)
   12 nr_modules (u32)          16 modlist_paddr (u64)
   24 cmdline_paddr (u64)       32 rsdp_paddr (u64)
   40 memmap_paddr (u64)        48 memmap_entries (u32)   52 reserved (u32)

``hvm_modlist_entry`` (32 bytes): 0 paddr, 8 size, 16 cmdline_paddr, 24 reserved (u64 each).
``hvm_memmap_table_entry`` (24 bytes): 0 addr (u64), 8 size (u64), 16 type (u32),
20 reserved (u32).

Where things go (QEMU's microvm hands the same values to its firmware through
fw_cfg; the firmware writes the structure): the structure at ``start_info_addr``,
the module list at ``start_info_addr + 0x40``, the memory map at
``start_info_addr + 0x60`` (Firecracker's layout puts the structure at 0x6000 and
the module list at 0x6040 too); the command line at ``cmdline_addr``; the initrd
page-aligned as high as QEMU puts it (hw/i386/x86.c, x86_load_linux's PVH branch:
``(below_4g_mem_size - 1 - size) & ~4095``), above the kernel.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from vmforge.loader import (
    EM_386,
    EM_X86_64,
    PT_NOTE,
    SHT_NOTE,
    LoaderError,
    _read_file,
    _unpack,
    load_elf,
    program_headers,
    read_elf_header,
    section_headers,
)
from vmforge.loader.e820 import E820Entry
from vmforge.loader.placement import Placement
from vmforge.memory import GuestMemory

__all__ = ["XEN_ELFNOTE_PHYS32_ENTRY", "XEN_HVM_START_MAGIC_VALUE", "NoPvhEntry", "PvhBoot",
           "hvm_start_info", "load_pvh", "memmap_bytes", "modlist_entry", "pvh_entry",
           "write_start_info"]

#: xen/include/public/elfnote.h: "Physical entry point into the kernel ... 32-bit
#: protected mode with paging disabled"
XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_HVM_START_MAGIC_VALUE = 0x336EC578


class NoPvhEntry(LoaderError):
    """``load_pvh`` of an ELF without a XEN_ELFNOTE_PHYS32_ENTRY note (a caller that
    boots other ELFs some other way tells it apart from a broken image)."""

_START_INFO = struct.Struct("<IIIIQQQQII")     # 56 bytes, offsets as in the table above
_MODLIST = struct.Struct("<QQQQ")              # 32 bytes
_MEMMAP = struct.Struct("<QQII")               # 24 bytes
MODLIST_OFFSET = 0x40                          #: from start_info_addr
MEMMAP_OFFSET = 0x60                           #: after the one module list entry
_NOTE_HEADER = struct.Struct("<III")           # Elf{32,64}_Nhdr: namesz, descsz, type


def hvm_start_info(*, cmdline_paddr: int, memmap_paddr: int, memmap_entries: int,
                   nr_modules: int = 0, modlist_paddr: int = 0, rsdp_paddr: int = 0,
                   flags: int = 0) -> bytes:
    """``struct hvm_start_info``, version 1."""
    return _START_INFO.pack(XEN_HVM_START_MAGIC_VALUE, 1, flags, nr_modules, modlist_paddr,
                            cmdline_paddr, rsdp_paddr, memmap_paddr, memmap_entries, 0)


def modlist_entry(paddr: int, size: int, cmdline_paddr: int = 0) -> bytes:
    """One ``struct hvm_modlist_entry``."""
    return _MODLIST.pack(paddr, size, cmdline_paddr, 0)


def memmap_bytes(entries: Sequence[E820Entry]) -> bytes:
    """The ``hvm_memmap_table_entry`` array for ``entries``."""
    return b"".join(_MEMMAP.pack(e.addr, e.size, e.type, 0) for e in entries)


def pvh_entry(path: str) -> int | None:
    """The 32-bit entry of ``path``'s ``Xen`` note of type
    :data:`XEN_ELFNOTE_PHYS32_ENTRY` (in its PT_NOTE segments or, without any,
    its SHT_NOTE sections); None when it has none.  The value may be 4 bytes
    (Xen's ``.long``) or 8 (Linux's ``_ASM_PTR`` in arch/x86/platform/pvh/head.S)."""
    return _pvh_entry(path, _read_file(path))


def _pvh_entry(path: str, data: bytes) -> int | None:
    hdr = read_elf_header(path, data)
    areas = [(p.offset, p.filesz, p.align, p.at, f"note segment {p.num}")
             for p in program_headers(path, data, hdr) if p.type == PT_NOTE]
    if not areas:
        areas = [(s.offset, s.size, s.addralign, s.at, f"note section {s.num}")
                 for s in section_headers(path, data, hdr) if s.type == SHT_NOTE]
    for offset, size, align, at, what in areas:
        if offset + size > len(data):
            raise LoaderError(path, f"{what} [{offset:#x}, {offset + size:#x}) runs past the "
                              f"end of the file ({len(data)} bytes)", at)
        entry = _scan_notes(path, data, offset, offset + size, 8 if align == 8 else 4, what)
        if entry is not None:
            return entry
    return None


def _scan_notes(path: str, data: bytes, pos: int, end: int, align: int,
                what: str) -> int | None:
    """Walk the notes in ``data[pos:end]`` (the gABI's note layout: header, name and
    description each padded to ``align``, 4 or 8 as binutils reads them)."""
    def up(n: int) -> int:
        return (n + align - 1) & ~(align - 1)

    while pos < end:
        if pos + _NOTE_HEADER.size > end:
            raise LoaderError(path, f"note header runs past the end of the {what} "
                              f"(ends at {end:#x})", pos)
        namesz, descsz, ntype = _NOTE_HEADER.unpack_from(data, pos)
        name_at = pos + _NOTE_HEADER.size
        desc_at = name_at + up(namesz)
        if desc_at + descsz > end:
            raise LoaderError(path, f"note name ({namesz} bytes) and description ({descsz} "
                              f"bytes) run past the end of the {what} (ends at {end:#x})",
                              pos)
        name = data[name_at:name_at + namesz].rstrip(b"\0")
        if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
            if descsz not in (4, 8):
                raise LoaderError(path, f"XEN_ELFNOTE_PHYS32_ENTRY has {descsz} bytes "
                                  "(4 or 8 expected)", pos)
            (value,) = _unpack(path, data, "<I" if descsz == 4 else "<Q", desc_at,
                               "PVH entry")
            if value > 0xFFFFFFFF:
                raise LoaderError(path, f"PVH entry {value:#x} is not a 32-bit address",
                                  desc_at)
            return int(value)
        pos = desc_at + up(descsz)
    return None


@dataclass
class PvhBoot:
    """What :func:`load_pvh` loaded: enter at ``entry`` with ``ebx = start_info``."""

    entry: int
    start_info: int
    kernel_low: int
    kernel_high: int
    initrd: tuple[int, int] | None      #: (address, size)


def load_pvh(mem: GuestMemory, path: str, *, e820: Sequence[E820Entry], cmdline: str,
             initrd: str | None = None, start_info_addr: int = 0x6000,
             cmdline_addr: int = 0x20000) -> PvhBoot:
    """Load the PVH ELF kernel ``path`` (ELF64 x86-64 or ELF32 i386) at its
    physical addresses and write the start info, module list (the initrd, if
    any), memory map (``e820``) and command line; everything is checked against
    guest RAM before it is written."""
    data = _read_file(path)
    entry = _pvh_entry(path, data)
    if entry is None:
        raise NoPvhEntry(path, "no PVH entry: the ELF has no Xen note of type "
                          f"XEN_ELFNOTE_PHYS32_ENTRY ({XEN_ELFNOTE_PHYS32_ENTRY})")
    image = load_elf(mem, path, machine=(EM_X86_64, EM_386), want_symbols=False)
    if not any(a <= entry < a + n for a, n in image.segments):
        raise LoaderError(path, f"PVH entry {entry:#x} is outside the loaded segments")
    placed = Placement(mem)
    for addr, size in image.segments:
        placed.reserve("the kernel segment", addr, size)
    module = _start_info(mem, placed, path, e820=e820, cmdline=cmdline, initrd=initrd,
                         start_info_addr=start_info_addr, cmdline_addr=cmdline_addr,
                         kernel_end=image.high)
    return PvhBoot(entry, start_info_addr, image.low, image.high, module)


def write_start_info(mem: GuestMemory, *, e820: Sequence[E820Entry], cmdline: str,
                     kernel_end: int, kernel_start: int | None = None,
                     initrd: str | None = None, start_info_addr: int = 0x6000,
                     cmdline_addr: int = 0x20000, name: str = "PVH start info") -> int:
    """What :func:`load_pvh` writes besides the kernel (start info, module list,
    memory map, command line, initrd above ``kernel_end``), for a kernel loaded
    some other way (a flat binary at ``[kernel_start, kernel_end)``); returns the
    start info's address.  Errors name ``name`` (or the initrd's file)."""
    placed = Placement(mem)
    if kernel_start is not None:
        placed.reserve("the kernel", kernel_start, kernel_end - kernel_start)
    _start_info(mem, placed, name, e820=e820, cmdline=cmdline, initrd=initrd,
                start_info_addr=start_info_addr, cmdline_addr=cmdline_addr,
                kernel_end=kernel_end)
    return start_info_addr


def _start_info(mem: GuestMemory, placed: Placement, name: str, *, e820: Sequence[E820Entry],
                cmdline: str, initrd: str | None, start_info_addr: int, cmdline_addr: int,
                kernel_end: int) -> tuple[int, int] | None:
    """Check, then write, the command line, start info, module list, memory map and
    initrd; returns the initrd's (address, size) or None."""
    line = cmdline.encode() + b"\0"
    placed.add(name, "the command line", cmdline_addr, len(line))
    memmap = memmap_bytes(e820)
    placed.add(name, "the start info and memory map", start_info_addr,
               MEMMAP_OFFSET + len(memmap))
    module: tuple[int, int] | None = None
    blob = b""
    if initrd is not None:
        at, blob = placed.add_initrd(initrd, e820, last_byte=0xFFFFFFFF, above=kernel_end)
        module = (at, len(blob))
    if module is not None:                                 # everything checked: now write
        mem.load(module[0], blob)
    mem.load(cmdline_addr, line)
    info = hvm_start_info(nr_modules=1 if module else 0,
                          modlist_paddr=start_info_addr + MODLIST_OFFSET if module else 0,
                          cmdline_paddr=cmdline_addr,
                          memmap_paddr=start_info_addr + MEMMAP_OFFSET,
                          memmap_entries=len(e820))
    mods = modlist_entry(*module) if module else bytes(_MODLIST.size)
    mem.load(start_info_addr, info.ljust(MODLIST_OFFSET, b"\0") + mods + memmap)
    return module
