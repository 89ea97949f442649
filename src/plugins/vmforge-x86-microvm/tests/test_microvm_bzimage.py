"""The Linux x86 boot protocol end to end: ``vmforge run -M microvm -accel kvm -kernel``
with a bzImage-shaped guest (``bzguest/bzguest.S``, assembled with GNU as and ld here)
that prints what the loader handed it, checked against the documented rules
(Documentation/arch/x86/boot.rst, "64-bit BOOT PROTOCOL") and QEMU 7.2's choices.

The guest's setup header says version 2.15, ``XLF_KERNEL_64``, ``relocatable_kernel``
0, ``setup_sects`` 1, ``cmdline_size`` 2047, ``initrd_addr_max`` 0x0fffffff (256 MiB:
below the top of a 512M guest, so a loader that ignores it is caught), and its 64-bit
payload starts 0x200 bytes into the protected-mode part.  It prints the selectors and
IF at entry, its own address, the zero page's copy of the header, the command line
(through ``cmd_line_ptr``), the e820 table and the initrd's address, size and first
16 bytes, then leaves through isa-debug-exit (value 0x10: exit status 33).

No comparison with QEMU: QEMU enters a bzImage only through the 16-bit protocol
(``hw/i386/x86.c`` ``x86_load_linux``: the setup code runs in real mode, started by
the linuxboot option ROM after the firmware), never at the 64-bit entry, and this
guest has no real-mode setup code (its 16-bit entry halts).  Where QEMU's behaviour
is the rule (where the initrd goes, which virtio-mmio transports are announced and
how), the expected values are derived from QEMU's code, cited at each test.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vmforge.testing.oracles import require_program

BZGUEST = Path(__file__).resolve().parent / "bzguest" / "bzguest.S"
#: the guest's isa-debug-exit value 0x10, as QEMU's device turns it into a status
EXIT_STATUS = (0x10 << 1) | 1
#: the guest's header (bzguest.S)
INITRD_ADDR_MAX = 0x0FFFFFFF
KERNEL_LOAD = 0x100000          # code32_start / pref_address; relocatable_kernel 0
INIT_SIZE = 0x8000
MEMORY = 512 << 20              # the fixture's -m 512M
APPEND = "console=ttyS0 root=/dev/vda rw bzguest=\"a quoted value\""
#: QEMU's microvm with acpi=off: transports at 0xfeb00000 + 512 * i on IRQ 5 + i
VIRTIO_MMIO_BASE = 0xFEB00000
VIRTIO_IRQ_BASE = 5
E820_RAM = 1


@dataclass
class Report:
    """What bzguest printed, parsed."""

    fields: dict[str, int | str] = field(default_factory=dict)
    cmdline: str | None = None
    e820: list[tuple[int, int, int]] = field(default_factory=list)
    initrd_bytes: bytes = b""
    done: bool = False


def parse(console: str) -> Report:
    rep = Report()
    for line in console.splitlines():
        if line.startswith("cmdline=["):
            rep.cmdline = line[len("cmdline=["):].removesuffix("]")
        elif line.startswith("e820 addr="):
            m = re.fullmatch(r"e820 addr=(0x\w+) size=(0x\w+) type=(0x\w+)", line)
            assert m, line
            addr, size, kind = (int(g, 16) for g in m.groups())
            rep.e820.append((addr, size, kind))
        elif line.startswith("initrd bytes="):
            rep.initrd_bytes = bytes.fromhex(line[len("initrd bytes="):])
        elif line == "bzguest: done":
            rep.done = True
        else:
            for key, value in re.findall(r"(\w+)=(\S+)", line):
                rep.fields[key] = int(value, 16) if value.startswith("0x") else value
    return rep


@pytest.fixture(scope="session")
def bzimage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bzguest.S as a flat file: the setup sectors, then the protected-mode part
    linked to run at 0x100000."""
    require_program("as", "binutils")
    require_program("ld", "binutils")
    out = tmp_path_factory.mktemp("bzguest")
    obj, image = out / "bzguest.o", out / "bzguest.bzImage"
    try:
        subprocess.run(["as", "--64", "-o", str(obj), str(BZGUEST)],
                       check=True, capture_output=True, text=True)
        subprocess.run(["ld", "-m", "elf_x86_64", "-N", f"-Ttext={KERNEL_LOAD - 0x400:#x}",
                        "-e", "_start", "--oformat=binary", "-o", str(image), str(obj)],
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"building bzguest failed: {' '.join(exc.cmd)}\n{exc.stdout}{exc.stderr}",
                    pytrace=False)
    data = image.read_bytes()
    assert data[0x202:0x206] == b"HdrS" and len(data) == 0x400 + INIT_SIZE
    return image


@pytest.fixture(scope="session")
def initrd() -> bytes:
    """Known content whose size is not a multiple of a page."""
    return bytes((i * 7 + 3) & 0xFF for i in range(5000))


Run = Callable[..., Any]


def boot(run_vmforge: Run, bzimage: Path, tmp_path: Path, initrd: bytes | None = None,
         append: str = APPEND, args: tuple[str, ...] = ()) -> Report:
    extra = list(args)
    if initrd is not None:
        path = tmp_path / "initrd.img"
        path.write_bytes(initrd)
        extra += ["-initrd", str(path)]
    run = run_vmforge(bzimage, append=append, args=extra)
    rep = parse(run.output)
    assert rep.done and run.status == EXIT_STATUS, f"bzguest did not finish:\n{run}"
    return rep


def usable(rep: Report, start: int, size: int) -> bool:
    """[start, start + size) lies inside one RAM entry of the guest's e820 table."""
    return any(kind == E820_RAM and addr <= start and start + size <= addr + length
               for addr, length, kind in rep.e820)


def test_entry_state_and_header(run_vmforge: Run, bzimage: Path, tmp_path: Path) -> None:
    """boot.rst, 64-bit boot protocol: entered at the protected-mode part + 0x200 of a
    kernel loaded at its non-relocatable address, CS = __BOOT_CS (0x10), DS = ES = SS =
    __BOOT_DS (0x18), interrupts off, %rsi = the zero page, which holds the file's
    setup header with type_of_loader filled in (the loader must set it; 0 means none)."""
    rep = boot(run_vmforge, bzimage, tmp_path)
    f = rep.fields
    assert (f["cs"], f["ds"], f["es"], f["ss"], f["if"]) == (0x10, 0x18, 0x18, 0x18, 0), f
    assert f["entry"] == KERNEL_LOAD + 0x200
    assert (f["header"], f["version"], f["setup_sects"], f["xloadflags"]) == (
        "HdrS", 0x020F, 1, 0x0001), f
    assert f["type_of_loader"] != 0, "the loader left type_of_loader 0"
    assert f["loadflags"] & 0x01, "LOADED_HIGH lost from loadflags"
    assert usable(rep, int(f["boot_params"]), 4096), f"zero page outside RAM: {f}"


def test_command_line(run_vmforge: Run, bzimage: Path, tmp_path: Path) -> None:
    """cmd_line_ptr points at -append's text exactly (no device: nothing announced),
    NUL-terminated, in RAM, and at most cmdline_size bytes long."""
    rep = boot(run_vmforge, bzimage, tmp_path)
    assert rep.cmdline == APPEND
    ptr = int(rep.fields["cmd_line_ptr"])
    assert usable(rep, ptr, len(APPEND) + 1), f"command line at {ptr:#x} outside RAM"
    assert not (KERNEL_LOAD <= ptr < KERNEL_LOAD + INIT_SIZE), "command line inside the kernel"


def test_command_line_announces_virtio_device(run_vmforge: Run, bzimage: Path,
                                              tmp_path: Path) -> None:
    """A virtio-blk device is announced as QEMU's microvm announces it
    (hw/i386/microvm.c, microvm_fix_kernel_cmdline): `` virtio_mmio.device=512@0x%lx:%ld``
    after -append's text, for each transport with a device, base 0xfeb00000 + 512 * i,
    IRQ 5 + i with acpi=off.  QEMU 7.2 puts the first device on the last of the eight
    transports (its command line reads ``virtio_mmio.device=512@0xfeb00e00:12``)."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    rep = boot(run_vmforge, bzimage, tmp_path, args=(
        "-drive", f"file={disk},if=none,id=d0,format=raw",
        "-device", "virtio-blk-device,drive=d0"))
    last = 7
    assert rep.cmdline == (f"{APPEND} virtio_mmio.device=512@"
                           f"{VIRTIO_MMIO_BASE + 512 * last:#x}:{VIRTIO_IRQ_BASE + last}")


def test_e820_table(run_vmforge: Run, bzimage: Path, tmp_path: Path) -> None:
    """e820_entries entries, sorted and disjoint; RAM exactly the -m 512M below 4 GiB,
    less what the machine reserves in the first MiB (the low RAM entry starts at 0 and
    ends at or below 0xa0000, the legacy hole, as on QEMU); the kernel lies in RAM."""
    rep = boot(run_vmforge, bzimage, tmp_path)
    assert rep.fields["e820_entries"] == len(rep.e820) > 0
    for (a, s, _), (b, _, _) in itertools.pairwise(rep.e820):
        assert a + s <= b, f"e820 not sorted or overlapping: {rep.e820}"
    ram = [(a, s) for a, s, kind in rep.e820 if kind == E820_RAM]
    assert ram[0][0] == 0 and ram[0][1] <= 0xA0000, ram
    assert ram[1:] == [(0x100000, MEMORY - 0x100000)], ram
    assert usable(rep, KERNEL_LOAD, INIT_SIZE), "the kernel is not in RAM"


def test_initrd(run_vmforge: Run, bzimage: Path, tmp_path: Path, initrd: bytes) -> None:
    """ramdisk_image/ramdisk_size: the whole file, page-aligned, ending at or below
    initrd_addr_max, in RAM and clear of the kernel, the zero page and the command
    line; its first bytes are the file's."""
    rep = boot(run_vmforge, bzimage, tmp_path, initrd)
    addr, size = int(rep.fields["addr"]), int(rep.fields["size"])
    assert size == len(initrd)
    assert addr % 4096 == 0, f"initrd at {addr:#x}"
    assert addr + size - 1 <= INITRD_ADDR_MAX, f"initrd at {addr:#x} ends above initrd_addr_max"
    assert usable(rep, addr, size), f"initrd at {addr:#x} outside RAM"
    for what, start, length in (("kernel", KERNEL_LOAD, INIT_SIZE),
                                ("zero page", int(rep.fields["boot_params"]), 4096),
                                ("command line", int(rep.fields["cmd_line_ptr"]), 2048)):
        assert addr + size <= start or start + length <= addr, f"initrd overlaps the {what}"
    assert rep.initrd_bytes == initrd[:16]


def test_initrd_where_qemu_puts_it(run_vmforge: Run, bzimage: Path, tmp_path: Path,
                                   initrd: bytes) -> None:
    """QEMU's rule (hw/i386/x86.c, x86_load_linux): initrd_max = initrd_addr_max, capped
    at below_4g_mem_size - 1 (microvm reserves no ACPI data); the initrd at
    (initrd_max - size) & ~4095."""
    rep = boot(run_vmforge, bzimage, tmp_path, initrd)
    initrd_max = min(INITRD_ADDR_MAX, MEMORY - 1)
    assert rep.fields["addr"] == (initrd_max - len(initrd)) & ~4095


def test_no_initrd(run_vmforge: Run, bzimage: Path, tmp_path: Path) -> None:
    """Without -initrd, ramdisk_image and ramdisk_size stay 0."""
    rep = boot(run_vmforge, bzimage, tmp_path)
    assert (rep.fields["addr"], rep.fields["size"]) == (0, 0)
