"""The Linux x86 boot protocol, 64-bit entry (Documentation/arch/x86/boot.rst).

A bzImage starts with the real-mode setup: ``setup_sects`` 512-byte sectors after
the boot sector (0 means 4), then the protected-mode kernel.  The setup header
lies at 0x1f1 and ends at ``0x202 + byte at 0x201`` (the ``jump`` field, boot.rst
"32-bit Boot Protocol").  For the 64-bit protocol the loader copies that header
into a zeroed ``struct boot_params`` (the "zero page",
arch/x86/include/uapi/asm/bootparam.h and Documentation/arch/x86/zero-page.rst),
fills in what it loaded, loads the protected-mode kernel and jumps to its load
address + 0x200 in 64-bit mode with ``%rsi`` = the zero page.

Where things go: the protected-mode kernel at 0x100000 (boot.rst "Loading The Rest
of The Kernel": ``load_address = is_bzImage ? 0x100000 : 0x10000``; QEMU's
``prot_addr`` and Firecracker's ``HIMEM_START`` too; a relocatable kernel
relocates itself from there to ``pref_address`` or its alignment, a fixed one
moves itself to ``pref_address``), the command line at 0x20000 (QEMU's
``cmdline_addr``), the zero page at 0x7000 (Firecracker's ``ZERO_PAGE_START``) and
the initrd page-aligned as high as QEMU puts it below ``initrd_addr_max``
(hw/i386/x86.c, x86_load_linux).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from vmforge.loader import LoaderError, _read_file
from vmforge.loader.e820 import E820Entry, e820_bytes
from vmforge.loader.placement import Placement
from vmforge.memory import GuestMemory

__all__ = ["BOOT_PARAMS_SIZE", "CAN_USE_HEAP", "E820_MAX_ENTRIES_ZEROPAGE", "LOADED_HIGH",
           "XLF_CAN_BE_LOADED_ABOVE_4G", "XLF_KERNEL_64", "LinuxBoot", "SetupHeader",
           "build_boot_params", "is_bzimage", "load_bzimage", "read_setup_header"]

# bootparam.h: loadflags, xloadflags
LOADED_HIGH = 1 << 0
CAN_USE_HEAP = 1 << 7
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1

HDRS = b"HdrS"                      #: 0x202/4 "header": 0x53726448
SETUP_HEADER_AT = 0x1F1
SETUP_HEADER_HOLE_END = 0x290       #: boot_params: _pad7 ends where edd_mbr_sig_buffer starts
BOOT_PARAMS_SIZE = 4096
E820_MAX_ENTRIES_ZEROPAGE = 128
MIN_PROTOCOL = 0x020C               #: 2.12: xloadflags (XLF_KERNEL_64) exists
KERNEL_ADDR = 0x100000
#: boot.rst "Sample Boot Configuration": heap_end_ptr = heap_end - 0x200; QEMU writes
#: cmdline_addr - real_addr - 0x200 = 0x20000 - 0x10000 - 0x200 for its layout
HEAP_END_PTR = 0xFE00
TYPE_OF_LOADER = 0xFF               #: boot.rst type_of_loader: "Otherwise, enter 0xFF here"
ENTRY64_OFFSET = 0x200              #: boot.rst "64-bit Boot Protocol"

# struct setup_header (bootparam.h), packed, from 0x1f1; (name, format) in order,
# each comment the offset boot.rst's table gives
_FIELDS = (
    ("setup_sects", "B"),            # 0x1f1
    ("root_flags", "H"),             # 0x1f2
    ("syssize", "I"),                # 0x1f4
    ("ram_size", "H"),               # 0x1f8
    ("vid_mode", "H"),               # 0x1fa
    ("root_dev", "H"),               # 0x1fc
    ("boot_flag", "H"),              # 0x1fe
    ("jump", "H"),                   # 0x200
    ("header", "4s"),                # 0x202
    ("version", "H"),                # 0x206
    ("realmode_swtch", "I"),         # 0x208
    ("start_sys_seg", "H"),          # 0x20c
    ("kernel_version", "H"),         # 0x20e
    ("type_of_loader", "B"),         # 0x210
    ("loadflags", "B"),              # 0x211
    ("setup_move_size", "H"),        # 0x212
    ("code32_start", "I"),           # 0x214
    ("ramdisk_image", "I"),          # 0x218
    ("ramdisk_size", "I"),           # 0x21c
    ("bootsect_kludge", "I"),        # 0x220
    ("heap_end_ptr", "H"),           # 0x224
    ("ext_loader_ver", "B"),         # 0x226
    ("ext_loader_type", "B"),        # 0x227
    ("cmd_line_ptr", "I"),           # 0x228
    ("initrd_addr_max", "I"),        # 0x22c
    ("kernel_alignment", "I"),       # 0x230
    ("relocatable_kernel", "B"),     # 0x234
    ("min_alignment", "B"),          # 0x235
    ("xloadflags", "H"),             # 0x236
    ("cmdline_size", "I"),           # 0x238
    ("hardware_subarch", "I"),       # 0x23c
    ("hardware_subarch_data", "Q"),  # 0x240
    ("payload_offset", "I"),         # 0x248
    ("payload_length", "I"),         # 0x24c
    ("setup_data", "Q"),             # 0x250
    ("pref_address", "Q"),           # 0x258
    ("init_size", "I"),              # 0x260
    ("handover_offset", "I"),        # 0x264
    ("kernel_info_offset", "I"),     # 0x268
)
_HEADER = struct.Struct("<" + "".join(f for _, f in _FIELDS))   # 0x7b bytes: up to 0x26c
_INIT_SIZE_END = 0x264              #: a 2.12 header reaches at least past init_size


@dataclass
class SetupHeader:
    """``struct setup_header`` as read from a bzImage; ``raw`` is the header as in
    the file, from 0x1f1 to ``0x202 + jump's offset byte``."""

    setup_sects: int
    root_flags: int
    syssize: int
    ram_size: int
    vid_mode: int
    root_dev: int
    boot_flag: int
    jump: int
    header: bytes
    version: int
    realmode_swtch: int
    start_sys_seg: int
    kernel_version: int
    type_of_loader: int
    loadflags: int
    setup_move_size: int
    code32_start: int
    ramdisk_image: int
    ramdisk_size: int
    bootsect_kludge: int
    heap_end_ptr: int
    ext_loader_ver: int
    ext_loader_type: int
    cmd_line_ptr: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable_kernel: int
    min_alignment: int
    xloadflags: int
    cmdline_size: int
    hardware_subarch: int
    hardware_subarch_data: int
    payload_offset: int
    payload_length: int
    setup_data: int
    pref_address: int
    init_size: int
    handover_offset: int
    kernel_info_offset: int
    raw: bytes

    @property
    def setup_size(self) -> int:
        """Bytes before the protected-mode kernel: ``(setup_sects + 1) * 512``, 0 sectors
        meaning 4 (boot.rst, setup_sects)."""
        return ((self.setup_sects or 4) + 1) * 512


def is_bzimage(path: str) -> bool:
    """Whether ``path`` is a Linux boot-protocol image: :data:`HDRS` at 0x202."""
    with open(path, "rb") as f:
        f.seek(0x202)
        return f.read(4) == HDRS


def read_setup_header(source: str | os.PathLike[str] | bytes) -> SetupHeader:
    """The setup header of a bzImage (a path or its bytes), refused unless it
    offers the 64-bit boot protocol (protocol 2.12+, LOADED_HIGH, XLF_KERNEL_64)."""
    if isinstance(source, bytes):
        return _parse(source, "<bzImage bytes>")
    path = os.fspath(source)
    try:
        with open(path, "rb") as f:
            head = f.read(SETUP_HEADER_HOLE_END)
    except OSError as exc:
        raise LoaderError(path, exc.strerror or str(exc)) from exc
    return _parse(head, path)


def _parse(data: bytes, name: str) -> SetupHeader:
    if len(data) < 0x206:
        raise LoaderError(name, f"setup header runs past the end of the file ({len(data)} "
                          "bytes)", SETUP_HEADER_AT)
    if data[0x202:0x206] != HDRS:
        raise LoaderError(name, 'not a bzImage: no "HdrS" magic in the setup header', 0x202)
    end = 0x202 + data[0x201]
    if end > SETUP_HEADER_HOLE_END:
        raise LoaderError(name, f"setup header ends at {end:#x}, past {SETUP_HEADER_HOLE_END:#x}"
                          " where boot_params has room for it", 0x201)
    if end > len(data):
        raise LoaderError(name, f"setup header (to {end:#x}) runs past the end of the file "
                          f"({len(data)} bytes)", SETUP_HEADER_AT)
    raw = data[SETUP_HEADER_AT:end]
    values = _HEADER.unpack(raw.ljust(_HEADER.size, b"\0")[:_HEADER.size])
    hdr = SetupHeader(**dict(zip((n for n, _ in _FIELDS), values, strict=True)), raw=raw)
    if hdr.version < MIN_PROTOCOL:
        raise LoaderError(name, f"boot protocol {hdr.version >> 8}.{hdr.version & 0xFF:02d} "
                          "is older than 2.12: no 64-bit entry point", 0x206)
    if end < _INIT_SIZE_END:
        raise LoaderError(name, f"setup header ends at {end:#x}, before the end of init_size "
                          f"({_INIT_SIZE_END:#x}) that protocol 2.12 has", 0x201)
    if not hdr.loadflags & LOADED_HIGH:
        raise LoaderError(name, "not a bzImage: LOADED_HIGH is clear in loadflags (a zImage)",
                          0x211)
    if not hdr.xloadflags & XLF_KERNEL_64:
        raise LoaderError(name, "the kernel has no 64-bit entry point (XLF_KERNEL_64 is clear "
                          "in xloadflags)", 0x236)
    return hdr


def _put(buf: bytearray, offset: int, fmt: str, value: int) -> None:
    struct.pack_into("<" + fmt, buf, offset, value)


def build_boot_params(header: SetupHeader, *, e820: Sequence[E820Entry], cmdline_addr: int,
                      cmdline_size: int, initrd: tuple[int, int] | None) -> bytes:
    """The 4096-byte zero page for the 64-bit entry.  ``cmdline_size`` is the length
    of the command line without its NUL (checked against the kernel's
    ``cmdline_size``); ``initrd`` is (address, size) or None.  Offsets from
    bootparam.h's ``struct boot_params`` and boot.rst's header table."""
    if len(e820) > E820_MAX_ENTRIES_ZEROPAGE:
        raise ValueError(f"{len(e820)} e820 entries: the zero page holds at most "
                         f"{E820_MAX_ENTRIES_ZEROPAGE}")
    if cmdline_size > header.cmdline_size:
        raise ValueError(f"the command line has {cmdline_size} bytes, the kernel takes at "
                         f"most {header.cmdline_size} (cmdline_size)")
    above_4g = header.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G
    for what, (addr, size) in (("command line", (cmdline_addr, cmdline_size + 1)),
                               ("initrd", initrd or (0, 0))):
        if addr + size > 1 << 32 and not above_4g:
            raise ValueError(f"the {what} at {addr:#x} is above 4 GiB and the kernel does "
                             "not set XLF_CAN_BE_LOADED_ABOVE_4G")
    bp = bytearray(BOOT_PARAMS_SIZE)
    bp[SETUP_HEADER_AT:SETUP_HEADER_AT + len(header.raw)] = header.raw
    _put(bp, 0x210, "B", TYPE_OF_LOADER)                     # type_of_loader
    _put(bp, 0x211, "B", header.loadflags | CAN_USE_HEAP)    # loadflags
    _put(bp, 0x224, "H", HEAP_END_PTR)                       # heap_end_ptr
    _put(bp, 0x228, "I", cmdline_addr & 0xFFFFFFFF)          # cmd_line_ptr
    _put(bp, 0x0C8, "I", cmdline_addr >> 32)                 # ext_cmd_line_ptr
    if initrd is not None:
        addr, size = initrd
        _put(bp, 0x218, "I", addr & 0xFFFFFFFF)              # ramdisk_image
        _put(bp, 0x21C, "I", size & 0xFFFFFFFF)              # ramdisk_size
        _put(bp, 0x0C0, "I", addr >> 32)                     # ext_ramdisk_image
        _put(bp, 0x0C4, "I", size >> 32)                     # ext_ramdisk_size
    _put(bp, 0x1E8, "B", len(e820))                          # e820_entries
    table = e820_bytes(e820)
    bp[0x2D0:0x2D0 + len(table)] = table                     # e820_table[128]
    return bytes(bp)


@dataclass
class LinuxBoot:
    """What :func:`load_bzimage` loaded: enter at ``entry64`` in 64-bit mode with
    ``rsi = boot_params``."""

    entry64: int
    boot_params: int
    kernel_addr: int
    kernel_end: int
    initrd: tuple[int, int] | None      #: (address, size)


def _runtime_start(hdr: SetupHeader, load: int) -> int:
    """Where the decompressor runs the kernel from (boot.rst, init_size: aligned load
    address for a relocatable kernel, else pref_address; arch/x86/boot/compressed/
    head_64.S never goes below LOAD_PHYSICAL_ADDR = pref_address)."""
    if not hdr.relocatable_kernel:
        return hdr.pref_address
    align = hdr.kernel_alignment or 1
    return max((load + align - 1) // align * align, hdr.pref_address)


def load_bzimage(mem: GuestMemory, path: str, *, e820: Sequence[E820Entry], cmdline: str,
                 initrd: str | None = None, boot_params_addr: int = 0x7000,
                 cmdline_addr: int = 0x20000) -> LinuxBoot:
    """Load a bzImage for the 64-bit boot protocol: the protected-mode kernel at
    0x100000, the command line, the initrd and the zero page; every range is
    checked against RAM (and the others) before anything is written."""
    data = _read_file(path)
    hdr = _parse(data[:SETUP_HEADER_HOLE_END], path)
    if hdr.setup_size > len(data):
        raise LoaderError(path, f"the setup code ({hdr.setup_size} bytes by setup_sects) runs "
                          f"past the end of the file ({len(data)} bytes)", SETUP_HEADER_AT)
    kernel = memoryview(data)[hdr.setup_size:]
    if len(kernel) < hdr.syssize * 16:
        raise LoaderError(path, f"the protected-mode kernel has {len(kernel)} bytes, syssize "
                          f"says {hdr.syssize * 16}: the file is truncated", 0x1F4)
    placed = Placement(mem)
    placed.add(path, "the protected-mode kernel", KERNEL_ADDR, len(kernel))
    start = _runtime_start(hdr, KERNEL_ADDR)
    if not mem.check_range(start, hdr.init_size):
        raise LoaderError(path, f"the kernel needs {hdr.init_size:#x} bytes of RAM from "
                          f"{start:#x} to start (init_size)", 0x260)
    line = cmdline.encode()
    if len(line) > hdr.cmdline_size:
        raise LoaderError(path, f"the command line has {len(line)} bytes, the kernel takes at "
                          f"most {hdr.cmdline_size} (cmdline_size)", 0x238)
    placed.add(path, "the command line", cmdline_addr, len(line) + 1)
    placed.add(path, "the zero page", boot_params_addr, BOOT_PARAMS_SIZE)
    module: tuple[int, int] | None = None
    blob = b""
    if initrd is not None:
        last = (0xFFFFFFFF if hdr.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G
                else hdr.initrd_addr_max)
        at, blob = placed.add_initrd(initrd, e820, last_byte=last,
                                     above=max(KERNEL_ADDR + len(kernel), start + hdr.init_size))
        module = (at, len(blob))
    try:
        params = build_boot_params(hdr, e820=e820, cmdline_addr=cmdline_addr,
                                   cmdline_size=len(line), initrd=module)
    except ValueError as exc:
        raise LoaderError(path, str(exc)) from exc
    mem.load(KERNEL_ADDR, kernel)                          # everything checked: now copy
    mem.load(cmdline_addr, line + b"\0")
    if module is not None:
        mem.load(module[0], blob)
    mem.load(boot_params_addr, params)
    return LinuxBoot(KERNEL_ADDR + ENTRY64_OFFSET, boot_params_addr, KERNEL_ADDR,
                     KERNEL_ADDR + len(kernel), module)

