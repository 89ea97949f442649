"""Loading guest images into guest memory: ELF, raw binaries, Linux ``Image``.

Every field read from a file is checked before use: a truncated or hostile
image raises :class:`LoaderError` naming the file and the offset at fault,
and nothing is written outside the guest's RAM (segments are checked against
the RAM map before any byte is copied).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from vmforge.errors import VmforgeError
from vmforge.memory import GuestMemory

__all__ = ["ElfImage", "LinuxImageHeader", "LoaderError", "load_elf", "load_raw",
           "read_linux_image_header"]

#: the largest file a loader reads (a guard against reading a disk image by mistake)
MAX_IMAGE_SIZE = 1 << 31

ELF_MAGIC = b"\x7fELF"
PT_LOAD = 1
SHT_SYMTAB = 2
EM_RISCV = 243
EM_X86_64 = 62


class LoaderError(VmforgeError):
    """An image could not be loaded; names the file and, where known, the offset."""

    def __init__(self, path: str, message: str, offset: int | None = None) -> None:
        self.path, self.offset = path, offset
        where = f" at offset {offset:#x}" if offset is not None else ""
        super().__init__(f"{path}{where}: {message}")


@dataclass(frozen=True)
class ElfSymbol:
    """One entry of an ELF symbol table, in file order."""

    name: str
    value: int
    size: int
    type: int       #: ``st_info & 0xf`` (2 is ``STT_FUNC``)
    shndx: int      #: the section index (0 undefined, 0xff00 and up reserved)


@dataclass
class ElfImage:
    """What :func:`load_elf` loaded."""

    path: str
    entry: int
    machine: int
    segments: list[tuple[int, int]] = field(default_factory=list)  # (paddr, memsz)
    symbols: dict[str, int] = field(default_factory=dict)   # name -> value (first wins)
    symbol_table: list[ElfSymbol] = field(default_factory=list)  # every named entry

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


def load_elf(memory: GuestMemory, path: str, machine: int | None = None,
             want_symbols: bool = True) -> ElfImage:
    """Load the PT_LOAD segments of a little-endian ELF64 file at their physical
    addresses; the image says where to start and which symbols it has."""
    data = _read_file(path)
    if data[:4] != ELF_MAGIC:
        raise LoaderError(path, "not an ELF file", 0)
    ei_class, ei_data = _unpack(path, data, "BB", 4, "ELF identification")
    if ei_class != 2 or ei_data != 1:
        raise LoaderError(path, "only little-endian 64-bit ELF files are supported", 4)
    (e_type, e_machine, _ver, e_entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize,
     e_phnum, e_shentsize, e_shnum, _shstrndx) = _unpack(path, data, "<HHIQQQIHHHHHH", 16,
                                                        "ELF header")
    if machine is not None and e_machine != machine:
        raise LoaderError(path, f"ELF machine {e_machine} is not {machine}", 18)
    if e_type not in (2, 3):  # EXEC, DYN
        raise LoaderError(path, f"ELF type {e_type} is not an executable", 16)
    if e_phnum and e_phentsize < 56:
        raise LoaderError(path, f"program header size {e_phentsize} is too small", 54)
    image = ElfImage(path, e_entry, e_machine)
    loads: list[tuple[int, int, int, int, int]] = []  # (ph offset, paddr, off, filesz, memsz)
    for i in range(e_phnum):
        ph = e_phoff + i * e_phentsize
        p_type, _pf, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = _unpack(
            path, data, "<IIQQQQQQ", ph, f"program header {i}")
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_filesz > p_memsz:
            raise LoaderError(path, f"segment {i}: file size {p_filesz:#x} exceeds memory "
                              f"size {p_memsz:#x}", ph)
        if p_offset + p_filesz > len(data):
            raise LoaderError(path, f"segment {i}: data runs past the end of the file", ph)
        skip = _header_lead(memory, data, p_paddr, p_offset, p_filesz, p_memsz,
                            e_phoff + e_phnum * e_phentsize)
        if not memory.check_range(p_paddr + skip, p_memsz - skip):
            raise LoaderError(path, f"segment {i} [{p_paddr:#x}, {p_paddr + p_memsz:#x}) is "
                              "not inside guest RAM", ph)
        loads.append((ph, p_paddr + skip, p_offset + skip, p_filesz - skip, p_memsz - skip))
    if not loads:
        raise LoaderError(path, "no loadable segment")
    for _ph, paddr, off, filesz, memsz in loads:  # everything checked: now copy
        memory.load(paddr, memoryview(data)[off:off + filesz])
        if memsz > filesz:
            memory.load(paddr + filesz, bytes(memsz - filesz))
        image.segments.append((paddr, memsz))
    if want_symbols and e_shnum:
        image.symbol_table = _symbols(path, data, e_shoff, e_shentsize, e_shnum)
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


def _symbols(path: str, data: bytes, shoff: int, shentsize: int,
             shnum: int) -> list[ElfSymbol]:
    if shentsize < 64:
        raise LoaderError(path, f"section header size {shentsize} is too small", 58)
    sections = []
    for i in range(shnum):
        sections.append(_unpack(path, data, "<IIQQQQIIQQ", shoff + i * shentsize,
                                f"section header {i}"))
    out: list[ElfSymbol] = []
    for (_name, sh_type, _f, _a, sh_offset, sh_size, sh_link, _i, _al, sh_entsize) in sections:
        if sh_type != SHT_SYMTAB:
            continue
        if sh_link >= len(sections) or sh_entsize < 24:
            raise LoaderError(path, "symbol table with a bad string table or entry size")
        str_off, str_size = sections[sh_link][4], sections[sh_link][5]
        if str_off + str_size > len(data) or sh_offset + sh_size > len(data):
            raise LoaderError(path, "symbol table runs past the end of the file", sh_offset)
        strtab = data[str_off:str_off + str_size]
        for j in range(sh_size // sh_entsize):
            st_name, info, _other, shndx, st_value, st_size = _unpack(
                path, data, "<IBBHQQ", sh_offset + j * sh_entsize, "symbol")
            if st_name == 0 or st_name >= len(strtab):
                continue
            end = strtab.find(b"\0", st_name)
            name = strtab[st_name:end if end >= 0 else len(strtab)].decode("utf-8", "replace")
            out.append(ElfSymbol(name, st_value, st_size, info & 0xF, shndx))
    return out


def load_raw(memory: GuestMemory, path: str, addr: int) -> int:
    """Copy a whole file to ``addr``; returns its size."""
    data = _read_file(path)
    if not memory.check_range(addr, len(data)):
        raise LoaderError(path, f"{len(data)} bytes at {addr:#x} do not fit in guest RAM")
    memory.load(addr, data)
    return len(data)


@dataclass(frozen=True)
class LinuxImageHeader:
    """The header of an arm64/riscv Linux ``Image`` (Documentation/arch/riscv/boot-image-header)."""

    text_offset: int
    image_size: int
    flags: int
    version: int


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
