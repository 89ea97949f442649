"""Small x86 ELF images for tests (PVH kernels with Linux's Xen entry note), built
with GNU as and ld at test time (a missing binutils skips the test, or fails it in CI)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vmforge.testing.oracles import require_program

__all__ = ["LINKER_SCRIPT", "NOTE", "PVH_GUEST", "build_elf", "pvh_source"]

#: one LOAD segment from 0x100000 holding the code, the note and the data (ld -N)
LINKER_SCRIPT = """
ENTRY(_start)
SECTIONS {
  . = %(base)#x;
  .text : { *(.text*) }
  .note.Xen : { *(.note.Xen) }
  .data : { *(.data*) }
  .bss : { *(.bss*) }
}
"""

#: Linux's ELFNOTE() (include/linux/elfnote.h) as arch/x86/platform/pvh/head.S uses it:
#: ELFNOTE(Xen, XEN_ELFNOTE_PHYS32_ENTRY, _ASM_PTR (pvh_start_xen - __START_KERNEL_map))
NOTE = """
    .pushsection .note.Xen, "%(flags)s", @note
    .balign 4
    .long 2f - 1f
    .long 4f - 3f
    .long %(type)d
1:  .asciz "%(name)s"
2:  .balign 4
3:  %(desc)s
4:  .balign 4
    .popsection
"""

PVH_GUEST = """
    .text
    .code32
    .globl _start
_start:
    mov %ebx, %eax
    out %eax, $0x10
    hlt
    .data
    .ascii "pvh data"
    .bss
    .space 4096
"""


def pvh_source(desc: str = ".quad _start", *, name: str = "Xen", type_: int = 18,
               flags: str = "a", body: str = PVH_GUEST) -> str:
    """``body`` after one note (``flags`` "" makes it a section outside any segment)."""
    return NOTE % {"flags": flags, "type": type_, "name": name, "desc": desc} + body


def build_elf(tmp_path: Path, source: str, *, bits: int = 64, base: int = 0x100000,
              name: str = "guest") -> Path:
    """Assemble and link ``source`` into an ELF64 x86-64 (``bits=64``) or ELF32
    i386 file whose single LOAD segment starts at ``base``."""
    require_program("as", "binutils")
    require_program("ld", "binutils")
    src, obj, script, out = (tmp_path / f"{name}{ext}" for ext in (".S", ".o", ".ld", ".elf"))
    src.write_text(source)
    script.write_text(LINKER_SCRIPT % {"base": base})
    emulation = "elf_x86_64" if bits == 64 else "elf_i386"
    subprocess.run(["as", f"--{bits}", "-o", str(obj), str(src)], check=True)
    subprocess.run(["ld", "-m", emulation, "-N", "--no-warn-rwx-segments", "-T", str(script),
                    "-o", str(out), str(obj)], check=True)
    return out
