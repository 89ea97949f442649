"""Loading guest images into guest memory: ELF, raw binaries, Linux ``Image``.

The x86 boot paths live beside this module: :mod:`vmforge.loader.e820` (the
memory map), :mod:`vmforge.loader.pvh` (the PVH/HVM direct boot ABI) and
:mod:`vmforge.loader.linux_x86` (the Linux x86 boot protocol, bzImage).

Every field read from a file is checked before use: a truncated or hostile
image raises :class:`LoaderError` naming the file and the offset at fault,
and nothing is written outside the guest's RAM (segments are checked against
the RAM map before any byte is copied).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection

from vmforge.errors import GuestMemoryError, VmforgeError
from vmforge.memory import GuestMemory
from vmforge.record import FrozenRecord, Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from vmforge.typing_runtime import NamedTuple

__all__ = ["ElfHeader", "ElfImage", "LinuxImageHeader", "LoaderError", "ProgramHeader",
           "SectionHeader", "load_elf", "load_raw", "program_headers", "read_elf_header",
           "read_linux_image_header", "section_headers"]

#: the largest file a loader reads (a guard against reading a disk image by mistake)
MAX_IMAGE_SIZE = 1 << 31

ELF_MAGIC = b"\x7fELF"
PT_LOAD = 1
SHT_SYMTAB = 2
SHT_NOTE = 7
PT_NOTE = 4
EM_386 = 3
EM_RISCV = 243
EM_X86_64 = 62


class LoaderError(VmforgeError):
    """An image could not be loaded; names the file and, where known, the offset."""

    def __init__(self, path: str, message: str, offset: int | None = None) -> None:
        self.path, self.offset = path, offset
        where = f" at offset {offset:#x}" if offset is not None else ""
        super().__init__(f"{path}{where}: {message}")


class ElfSymbol(FrozenRecord):
    """One entry of an ELF symbol table, in file order."""

    __slots__ = __match_args__ = ("name", "value", "size", "type", "shndx")
    name: str
    value: int
    size: int
    type: int       #: ``st_info & 0xf`` (2 is ``STT_FUNC``)
    shndx: int      #: the section index (0 undefined, 0xff00 and up reserved)

    def __init__(self, name: str, value: int, size: int, type: int, shndx: int) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "shndx", shndx)


class ElfImage(Record):
    """What :func:`load_elf` loaded."""

    __slots__ = __match_args__ = ("path", "entry", "machine", "segments", "symbols",
                                  "symbol_table")
    path: str
    entry: int
    machine: int
    segments: list[tuple[int, int]]         # (paddr, memsz)
    symbols: dict[str, int]                 # name -> value (first wins)
    symbol_table: list[ElfSymbol]           # every named entry

    def __init__(self, path: str, entry: int, machine: int,
                 segments: list[tuple[int, int]] | None = None,
                 symbols: dict[str, int] | None = None,
                 symbol_table: list[ElfSymbol] | None = None) -> None:
        self.path = path
        self.entry = entry
        self.machine = machine
        self.segments = [] if segments is None else segments
        self.symbols = {} if symbols is None else symbols
        self.symbol_table = [] if symbol_table is None else symbol_table

    @property
    def low(self) -> int:
        return min(a for a, _ in self.segments)

    @property
    def high(self) -> int:
        return max(a + n for a, n in self.segments)


def _read_file(path: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > MAX_IMAGE_SIZE:
            raise LoaderError(path, f"{size} bytes is larger than a loadable image")
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise LoaderError(path, exc.strerror or str(exc)) from exc


def _unpack(path: str, data: bytes, fmt: str, offset: int, what: str) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    if offset < 0 or offset + size > len(data):
        raise LoaderError(path, f"{what} runs past the end of the file ({len(data)} bytes)",
                          offset)
    return struct.unpack_from(fmt, data, offset)


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


class ElfHeader(NamedTuple):
    """The fields of an ELF file header the loaders use (either class)."""

    elfclass: int       #: 1 ELFCLASS32, 2 ELFCLASS64
    type: int
    machine: int
    entry: int
    phoff: int
    shoff: int
    phentsize: int
    phnum: int
    shentsize: int
    shnum: int


class ProgramHeader(NamedTuple):
    """One program header; ``at`` is where it lies in the file."""

    num: int           #: its index in the table
    at: int
    type: int
    offset: int
    paddr: int
    filesz: int
    memsz: int
    align: int


class SectionHeader(NamedTuple):
    """One section header; ``at`` is where it lies in the file."""

    num: int           #: its index in the table
    at: int
    type: int
    offset: int
    size: int
    link: int
    addralign: int
    entsize: int


# struct layouts by ELF class (the System V gABI, "ELF Header", "Program Header",
# "Section Header", "Symbol Table"): file header after e_ident, program header,
# section header, symbol; their sizes; where e_phentsize / e_shentsize lie
_EHDR = {1: "<HHIIIIIHHHHHH", 2: "<HHIQQQIHHHHHH"}
_PHDR = {1: "<IIIIIIII", 2: "<IIQQQQQQ"}
_SHDR = {1: "<IIIIIIIIII", 2: "<IIQQQQIIQQ"}
_PHENTSIZE_AT = {1: 42, 2: 54}
_SHENTSIZE_AT = {1: 46, 2: 58}


def read_elf_header(path: str, data: bytes) -> ElfHeader:
    """The header of a little-endian ELF32 or ELF64 file (already read into ``data``)."""
    if data[:4] != ELF_MAGIC:
        raise LoaderError(path, "not an ELF file", 0)
    ei_class, ei_data = _unpack(path, data, "BB", 4, "ELF identification")
    if ei_class not in (1, 2) or ei_data != 1:
        raise LoaderError(path, "only little-endian 32- and 64-bit ELF files are supported", 4)
    (e_type, e_machine, _ver, e_entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize,
     e_phnum, e_shentsize, e_shnum, _shstrndx) = _unpack(path, data, _EHDR[ei_class], 16,
                                                        "ELF header")
    if e_phnum and e_phentsize < struct.calcsize(_PHDR[ei_class]):
        raise LoaderError(path, f"program header size {e_phentsize} is too small",
                          _PHENTSIZE_AT[ei_class])
    return ElfHeader(ei_class, e_type, e_machine, e_entry, e_phoff, e_shoff, e_phentsize,
                     e_phnum, e_shentsize, e_shnum)


def program_headers(path: str, data: bytes, hdr: ElfHeader) -> list[ProgramHeader]:
    out = []
    for i in range(hdr.phnum):
        at = hdr.phoff + i * hdr.phentsize
        fields = _unpack(path, data, _PHDR[hdr.elfclass], at, f"program header {i}")
        if hdr.elfclass == 1:
            p_type, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _pf, p_align = fields
        else:
            p_type, _pf, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, p_align = fields
        out.append(ProgramHeader(i, at, p_type, p_offset, p_paddr, p_filesz, p_memsz, p_align))
    return out


def section_headers(path: str, data: bytes, hdr: ElfHeader) -> list[SectionHeader]:
    if not hdr.shnum:
        return []
    if hdr.shentsize < struct.calcsize(_SHDR[hdr.elfclass]):
        raise LoaderError(path, f"section header size {hdr.shentsize} is too small",
                          _SHENTSIZE_AT[hdr.elfclass])
    out = []
    for i in range(hdr.shnum):
        at = hdr.shoff + i * hdr.shentsize
        (_name, sh_type, _f, _a, sh_offset, sh_size, sh_link, _i, sh_addralign,
         sh_entsize) = _unpack(path, data, _SHDR[hdr.elfclass], at, f"section header {i}")
        out.append(SectionHeader(i, at, sh_type, sh_offset, sh_size, sh_link, sh_addralign,
                                 sh_entsize))
    return out


def load_elf(memory: GuestMemory, path: str, machine: int | Collection[int] | None = None,
             want_symbols: bool = True) -> ElfImage:
    """Load the PT_LOAD segments of a little-endian ELF32 or ELF64 file at their
    physical addresses; the image says where to start and which symbols it has.
    ``machine`` is the ``e_machine`` wanted (or several: x86 takes EM_X86_64 and
    EM_386)."""
    data = _read_file(path)
    hdr = read_elf_header(path, data)
    wanted = (machine,) if isinstance(machine, int) else machine
    if wanted is not None and hdr.machine not in wanted:
        names = " or ".join(str(m) for m in wanted)
        raise LoaderError(path, f"ELF machine {hdr.machine} is not {names}", 18)
    if hdr.type not in (2, 3):  # EXEC, DYN
        raise LoaderError(path, f"ELF type {hdr.type} is not an executable", 16)
    image = ElfImage(path, hdr.entry, hdr.machine)
    loads: list[tuple[int, int, int, int, int]] = []  # (ph offset, paddr, off, filesz, memsz)
    headers_end = hdr.phoff + hdr.phnum * hdr.phentsize
    for ph in program_headers(path, data, hdr):
        i = ph.num
        if ph.type != PT_LOAD or ph.memsz == 0:
            continue
        if ph.filesz > ph.memsz:
            raise LoaderError(path, f"segment {i}: file size {ph.filesz:#x} exceeds memory "
                              f"size {ph.memsz:#x}", ph.at)
        if ph.offset + ph.filesz > len(data):
            raise LoaderError(path, f"segment {i}: data runs past the end of the file", ph.at)
        skip = _header_lead(memory, data, ph.paddr, ph.offset, ph.filesz, ph.memsz,
                            headers_end)
        if not memory.check_range(ph.paddr + skip, ph.memsz - skip):
            raise LoaderError(path, f"segment {i} [{ph.paddr:#x}, {ph.paddr + ph.memsz:#x}) "
                              "is not inside guest RAM", ph.at)
        loads.append((ph.at, ph.paddr + skip, ph.offset + skip, ph.filesz - skip,
                      ph.memsz - skip))
    if not loads:
        raise LoaderError(path, "no loadable segment")
    for _ph, paddr, off, filesz, memsz in loads:  # everything checked: now copy
        memory.load(paddr, memoryview(data)[off:off + filesz])
        if memsz > filesz:
            memory.load(paddr + filesz, bytes(memsz - filesz))
        image.segments.append((paddr, memsz))
    if want_symbols and hdr.shnum:
        image.symbol_table = _symbols(path, data, hdr)
        for sym in image.symbol_table:
            image.symbols.setdefault(sym.name, sym.value)
    return image


def _header_lead(memory: GuestMemory, data: bytes, paddr: int, offset: int, filesz: int,
                 memsz: int, headers_end: int) -> int:
    """How many leading bytes of a segment to leave out: ld's default layout puts
    the ELF and program headers (and zero padding) in the page before the code,
    which may be below RAM (``-Ttext=0x80000000``); QEMU's ROM loading drops
    what falls outside RAM there.  0 for every other segment."""
    if offset != 0 or memory.check_range(paddr, memsz):
        return 0
    lead = (-paddr) & 0xFFF or 0x1000            # up to the next page boundary
    if headers_end <= lead <= filesz and not any(data[headers_end:lead]) \
            and memory.check_range(paddr + lead, memsz - lead):
        return lead
    return 0


_SYM = {1: ("<IIIBBH", 16), 2: ("<IBBHQQ", 24)}


def _symbols(path: str, data: bytes, hdr: ElfHeader) -> list[ElfSymbol]:
    sections = section_headers(path, data, hdr)
    fmt, min_entsize = _SYM[hdr.elfclass]
    out: list[ElfSymbol] = []
    for sec in sections:
        if sec.type != SHT_SYMTAB:
            continue
        if sec.link >= len(sections) or sec.entsize < min_entsize:
            raise LoaderError(path, "symbol table with a bad string table or entry size")
        str_off, str_size = sections[sec.link].offset, sections[sec.link].size
        if str_off + str_size > len(data) or sec.offset + sec.size > len(data):
            raise LoaderError(path, "symbol table runs past the end of the file", sec.offset)
        strtab = data[str_off:str_off + str_size]
        for j in range(sec.size // sec.entsize):
            fields = _unpack(path, data, fmt, sec.offset + j * sec.entsize, "symbol")
            if hdr.elfclass == 1:
                st_name, st_value, st_size, info, _other, shndx = fields
            else:
                st_name, info, _other, shndx, st_value, st_size = fields
            if st_name == 0 or st_name >= len(strtab):
                continue
            end = strtab.find(b"\0", st_name)
            name = strtab[st_name:end if end >= 0 else len(strtab)].decode("utf-8", "replace")
            out.append(ElfSymbol(name, st_value, st_size, info & 0xF, shndx))
    return out


def load_raw(memory: GuestMemory, path: str, addr: int) -> int:
    """Copy a whole file to ``addr``; returns its size.

    Read straight into guest RAM where it is writable RAM and no dirty log is kept
    (a kernel's megabytes are then not read into a ``bytes`` first and copied again:
    start-up time); a ROM, or a log to mark, takes the copy."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_IMAGE_SIZE:
                raise LoaderError(path, f"{size} bytes is larger than a loadable image")
            if not memory.check_range(addr, size):
                raise LoaderError(path, f"{size} bytes at {addr:#x} do not fit in guest RAM")
            views = _ram_views(memory, addr, size)
            if views is None:
                data = f.read()
                if not memory.check_range(addr, len(data)):     # the file grew meanwhile
                    raise LoaderError(path, f"{len(data)} bytes at {addr:#x} do not fit "
                                      "in guest RAM")
                memory.load(addr, data)
                return len(data)
            done = 0
            for view in views:
                while view:
                    n = f.readinto(view)
                    if not n:                       # the file shrank meanwhile
                        return done
                    done += n
                    view = view[n:]
            return done
    except OSError as exc:
        raise LoaderError(path, exc.strerror or str(exc)) from exc


def _ram_views(memory: GuestMemory, addr: int, size: int) -> list[memoryview] | None:
    """Writable views of ``[addr, addr+size)``, or None when the bytes must go through
    :meth:`GuestMemory.load` (a ROM on the way, or the dirty log on: it marks pages)."""
    if memory.logging:
        return None
    try:
        return memory.views(addr, size, writable=True)
    except GuestMemoryError:
        return None


class LinuxImageHeader(FrozenRecord):
    """The header of an arm64/riscv Linux ``Image`` (Documentation/arch/riscv/boot-image-header)."""

    __slots__ = __match_args__ = ("text_offset", "image_size", "flags", "version")
    text_offset: int
    image_size: int
    flags: int
    version: int

    def __init__(self, text_offset: int, image_size: int, flags: int, version: int) -> None:
        object.__setattr__(self, "text_offset", text_offset)
        object.__setattr__(self, "image_size", image_size)
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "version", version)


RISCV_IMAGE_MAGIC2 = b"RSC\x05"


def read_linux_image_header(path: str) -> LinuxImageHeader | None:
    """The RISC-V ``Image`` header, or None when the file has none."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise LoaderError(path, exc.strerror or str(exc)) from exc
    if len(head) < 64 or head[56:60] != RISCV_IMAGE_MAGIC2:
        return None
    _code0, _code1, text_offset, image_size, flags, version = struct.unpack_from(
        "<IIQQQI", head, 0)
    return LinuxImageHeader(text_offset, image_size, flags, version)
