"""The image loader: ELF segments and symbols, raw files, hostile images."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmforge.loader import (
    EM_RISCV,
    LoaderError,
    load_elf,
    load_raw,
    read_linux_image_header,
)
from vmforge.memory import GuestMemory
from vmforge.testing.oracles import require_program

RAM = 0x8000_0000

SOURCE = r"""
    .section .text.init
    .globl _start
_start:
    li a0, 42
    j _start
    .section .data
    .globl message
message: .ascii "loaded by vmforge"
    .section .tohost, "aw", @progbits
    .align 6
    .globl tohost
tohost: .dword 0
    .align 6
    .globl fromhost
fromhost: .dword 0
    .bss
    .globl zeros
zeros: .zero 4096
"""


@pytest.fixture(scope="module")
def elf(tmp_path_factory) -> Path:
    cc = require_program("riscv64-unknown-elf-gcc", "gcc-riscv64-unknown-elf")
    d = tmp_path_factory.mktemp("elf")
    (d / "t.S").write_text(SOURCE)
    out = d / "t.elf"
    subprocess.run([cc, "-nostdlib", "-nostartfiles", "-Wl,-N", f"-Wl,-Ttext={RAM:#x}",
                    "-Wl,--build-id=none", "-o", str(out),
                    str(d / "t.S")], check=True)
    return out


def ram() -> GuestMemory:
    m = GuestMemory()
    m.add_ram(RAM, 1 << 20)
    return m


def test_loads_segments_and_symbols(elf: Path) -> None:
    mem = ram()
    img = load_elf(mem, str(elf), machine=EM_RISCV)
    assert img.entry == RAM == img.low
    assert set(img.symbols) >= {"_start", "tohost", "fromhost", "message", "zeros"}
    assert img.symbols["fromhost"] - img.symbols["tohost"] == 64
    assert mem.read(img.symbols["message"], 17) == b"loaded by vmforge"
    assert mem.read_u32(RAM) == 0x02A00513  # li a0, 42 (addi a0, zero, 42)
    assert mem.read(img.symbols["zeros"], 4096) == bytes(4096)


def test_wrong_machine_and_outside_ram(elf: Path) -> None:
    with pytest.raises(LoaderError, match="ELF machine 243 is not 62"):
        load_elf(ram(), str(elf), machine=62)
    small = GuestMemory()
    small.add_ram(0x1000, 0x1000)
    with pytest.raises(LoaderError, match="not inside guest RAM"):
        load_elf(small, str(elf))


def test_truncated_and_not_elf(elf: Path, tmp_path: Path) -> None:
    data = elf.read_bytes()
    for cut in (3, 20, 63, 100):
        p = tmp_path / f"cut{cut}"
        p.write_bytes(data[:cut])
        with pytest.raises(LoaderError):
            load_elf(ram(), str(p))
    p = tmp_path / "text"
    p.write_text("hello")
    with pytest.raises(LoaderError, match="not an ELF file"):
        load_elf(ram(), str(p))
    with pytest.raises(LoaderError, match="No such file"):
        load_elf(ram(), str(tmp_path / "missing"))


def test_segment_data_past_end_loads_nothing(elf: Path, tmp_path: Path) -> None:
    data = bytearray(elf.read_bytes())
    phoff, phnum = struct.unpack_from("<Q", data, 32)[0], struct.unpack_from("<H", data, 56)[0]
    loads = [i for i in range(phnum) if struct.unpack_from("<I", data, phoff + 56 * i)[0] == 1]
    first = phoff + 56 * loads[0]
    struct.pack_into("<QQ", data, first + 32, 0x10000, 0x10000)  # p_filesz, p_memsz
    p = tmp_path / "hostile"
    p.write_bytes(bytes(data))
    mem = ram()
    with pytest.raises(LoaderError, match=f"segment {loads[0]}: data runs past the end"):
        load_elf(mem, str(p))
    assert mem.read(RAM, 64) == bytes(64), "nothing is copied when a segment is bad"
    struct.pack_into("<QQ", data, first + 32, 1 << 40, 1 << 40)
    p.write_bytes(bytes(data))
    with pytest.raises(LoaderError):
        load_elf(mem, str(p))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzzed_headers_only_raise_loader_error(elf: Path, tmp_path: Path, flips) -> None:
    data = bytearray(elf.read_bytes())
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    p = tmp_path / "fuzz.elf"
    p.write_bytes(bytes(data))
    try:
        img = load_elf(ram(), str(p))
    except LoaderError:
        return
    assert all(RAM <= a and a + n <= RAM + (1 << 20) for a, n in img.segments)


def test_raw_and_linux_image_header(tmp_path: Path) -> None:
    image = bytearray(8192)
    struct.pack_into("<IIQQQI", image, 0, 0x5A4D, 0, 0x200000, 0x123000, 0, 2)
    image[56:60] = b"RSC\x05"
    p = tmp_path / "Image"
    p.write_bytes(bytes(image))
    hdr = read_linux_image_header(str(p))
    assert hdr is not None and hdr.text_offset == 0x200000 and hdr.image_size == 0x123000
    mem = ram()
    assert load_raw(mem, str(p), RAM + 0x2000) == 8192
    assert mem.read(RAM + 0x2000 + 56, 4) == b"RSC\x05"
    with pytest.raises(LoaderError, match="do not fit"):
        load_raw(mem, str(p), RAM + (1 << 20) - 100)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"\x13" * 100)
    assert read_linux_image_header(str(plain)) is None


def test_headers_below_ram_are_left_out_as_qemu_does(tmp_path: Path) -> None:
    """ld's default layout (no -N) with -Ttext at RAM's first byte puts the ELF
    and program headers in the page below RAM; QEMU boots such files, so does
    vmforge (the header page is not loaded).  Anything else below RAM is refused."""
    cc = require_program("riscv64-unknown-elf-gcc", "gcc-riscv64-unknown-elf")
    (tmp_path / "t.S").write_text(SOURCE)
    out = tmp_path / "t.elf"
    subprocess.run([cc, "-nostdlib", "-nostartfiles", f"-Wl,-Ttext={RAM:#x}",
                    "-Wl,--build-id=none", "-o", str(out), str(tmp_path / "t.S")], check=True)
    data = out.read_bytes()
    phoff, phnum = struct.unpack_from("<Q", data, 32)[0], struct.unpack_from("<H", data, 56)[0]
    loads = [struct.unpack_from("<QQQ", data, phoff + 56 * i + 8) for i in range(phnum)
             if struct.unpack_from("<I", data, phoff + 56 * i)[0] == 1]
    assert (loads[0][0], loads[0][2]) == (0, RAM - 0x1000)    # the layout in question
    mem = ram()
    image = load_elf(mem, str(out), machine=EM_RISCV)
    assert image.entry == RAM and mem.read(RAM, 4) == data[0x1000:0x1004]
    bad = bytearray(data)
    bad[0x800] = 1                                            # not padding: real bytes
    (tmp_path / "bad.elf").write_bytes(bad)
    with pytest.raises(LoaderError, match="not inside guest RAM"):
        load_elf(ram(), str(tmp_path / "bad.elf"))
