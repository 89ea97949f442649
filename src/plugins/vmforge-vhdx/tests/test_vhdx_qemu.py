"""vhdx images against qemu-img and qemu-io: layout, both directions, check, info, convert."""

from __future__ import annotations

import json
import struct
from functools import partial
from pathlib import Path

import pytest

from vmforge.testing import qemu_tools
from vmforge.testing.qemu_tools import (
    assert_converts_back,
    assert_qemu_accepts,
    assert_raw_converts_both_ways,
    info_json,
    needs_qemu,
    qcow2_source,
    qemu_img,
    vmforge_img,
    write_odd_patterns,
)
from vmforge_vhdx import Vhdx
from vmforge_vhdx import layout as L
from vmforge_vhdx.layout import round_up

pytestmark = needs_qemu
qemu_io = partial(qemu_tools.qemu_io, fmt="vhdx")
to_raw = partial(qemu_tools.to_raw, fmt="vhdx")
MiB = 1 << 20

QEMU_WRITES = ((0, 4096, 0x11), (512 * 1000, 70000 // 512 * 512, 0x22),
               (2 * MiB - 1024, 4096, 0x33), (5 * MiB + 512, 512, 0x44),
               (7 * MiB - 512, 1024, 0x55))


def _normalised(raw: bytes) -> bytearray:
    """The image with what is random in a new image zeroed: the creator, the headers'
    checksums, sequence numbers and GUIDs (kept: the second header's sequence number
    minus the first's), and the page 83 GUID."""
    out = bytearray(raw)
    out[8:L.HEADER_BLOCK] = bytes(L.HEADER_BLOCK - 8)
    seqs = [struct.unpack_from("<Q", raw, at + 8)[0] for at in L.HEADER_OFFSETS]
    for at in L.HEADER_OFFSETS:
        out[at + 4:at + 64] = bytes(60)
    struct.pack_into("<Q", out, L.HEADER_OFFSETS[1] + 8, (seqs[1] - seqs[0]) % (1 << 64))
    meta = struct.unpack_from("<Q", raw, L.REGION_TABLE_OFFSETS[0] + 16 + 32 + 16)[0]
    out[meta + 65536 + 16:meta + 65536 + 32] = bytes(16)
    return out


@pytest.mark.parametrize("opts", [
    {}, {"subformat": "fixed"}, {"subformat": "fixed", "block_state_zero": False},
    {"block_state_zero": False}, {"block_size": 1 << 20, "log_size": 3 << 20},
    {"block_size": 3 << 20, "log_size": 1500000},   # rounded up as qemu-img does
])
@pytest.mark.parametrize("size", [0, 512, 3000001, 20 * MiB, 1536 * MiB, 5 << 30])
def test_create_is_qemu_img_layout(tmp_path: Path, opts: dict[str, object], size: int) -> None:
    """Byte for byte what qemu-img creates, but for what is random."""
    if opts.get("block_size") == 3 << 20:
        with pytest.raises(Exception, match="power of two"):
            Vhdx.create(str(tmp_path / "x.vhdx"), size, **opts)
        opts = {**opts, "block_size": 4 << 20}
    ours, theirs = tmp_path / "ours.vhdx", tmp_path / "theirs.vhdx"
    Vhdx.create(str(ours), size, **opts)
    qopts = ",".join(f"{k}={'on' if v is True else 'off' if v is False else v}"
                     for k, v in opts.items())
    qemu_img("create", "-q", "-f", "vhdx", *(["-o", qopts] if qopts else []), str(theirs),
             str(size))
    assert ours.stat().st_size == theirs.stat().st_size
    # the metadata ends before 16 MiB; past it, a fixed image's payload (holes in both)
    with open(ours, "rb") as f, open(theirs, "rb") as g:
        a, b = f.read(16 * MiB), g.read(16 * MiB)
    assert _normalised(a) == _normalised(b)
    assert a[:8] == b"vhdxfile"
    assert info_json("qemu-img", ours, "vhdx")["virtual-size"] == round_up(size, 512)
    with Vhdx.open(str(theirs)) as drv:
        assert drv.size == round_up(size, 512)
        tail = min(drv.size, 512)
        assert drv.read(drv.size - tail, tail) == bytes(tail)


@pytest.mark.parametrize("opts", ["subformat=dynamic", "subformat=fixed",
                                  "subformat=fixed,block_state_zero=off",
                                  "block_size=1M,block_state_zero=off"])
def test_qemu_images_read_byte_for_byte(tmp_path: Path, opts: str) -> None:
    img = tmp_path / "q.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", opts, str(img), "9M")
    qemu_io(img, *(f"write -P {p:#x} {off} {n}" for off, n, p in QEMU_WRITES))
    expect = to_raw(img, tmp_path / "q.raw")
    with Vhdx.open(str(img)) as drv:
        assert drv.size == len(expect) == 9 * MiB
        assert drv.read(0, drv.size) == expect
        assert any(expect)
        for e in drv.block_status(0, drv.size):
            if not e.is_data:
                assert not any(expect[e.offset:e.end])
        assert drv.check().clean
        assert drv.fixed == ("fixed" in opts)


@pytest.mark.parametrize("opts", [{}, {"subformat": "fixed", "block_state_zero": False},
                                  {"block_size": 1 << 20}])
def test_our_images_accepted_by_qemu(tmp_path: Path, opts: dict[str, object]) -> None:
    img = tmp_path / "ours.vhdx"
    Vhdx.create(str(img), 9 * MiB + 512, **opts)
    with Vhdx.open(str(img), readonly=False) as drv:
        model = write_odd_patterns(drv)
        drv.write(3 * MiB, b"\x5a" * 512)
        model[3 * MiB:3 * MiB + 512] = b"\x5a" * 512
    check = json.loads(qemu_img("check", "--output", "json", "-f", "vhdx", str(img)).stdout)
    assert check.get("corruptions", 0) == 0 and check["check-errors"] == 0, check
    assert_qemu_accepts(img, "vhdx", model, 3 * MiB, tmp_path)
    with Vhdx.open(str(img)) as drv:
        assert drv.read(0, drv.size) == model
        assert drv.check().clean
    assert to_raw(img, tmp_path / "back.raw") == model


def test_writes_update_headers_as_qemu(tmp_path: Path) -> None:
    """A write that allocates moves both headers on as qemu-io's does (new data write
    GUID, log GUID set and cleared: six header updates), and leaves the log empty."""
    ours, theirs = tmp_path / "ours.vhdx", tmp_path / "theirs.vhdx"
    for p in (ours, theirs):
        qemu_img("create", "-q", "-f", "vhdx", str(p), "20M")
    before = [struct.unpack_from("<Q", p.read_bytes(), L.HEADER_OFFSETS[1] + 8)[0]
              for p in (ours, theirs)]
    with Vhdx.open(str(ours), readonly=False) as drv:
        drv.write(9 * MiB, b"\1" * 4096)
    qemu_io(theirs, f"write -P 1 {9 * MiB} 4096")
    for p, seq in zip((ours, theirs), before, strict=True):
        raw = p.read_bytes()
        seqs = [struct.unpack_from("<Q", raw, at + 8)[0] for at in L.HEADER_OFFSETS]
        assert max(seqs) == seq + 6 and sorted(seqs) == [seq + 5, seq + 6]
        for at in L.HEADER_OFFSETS:
            assert raw[at + 48:at + 64] == bytes(16)        # the log GUID: empty
        bat = struct.unpack_from("<3Q", raw, 2 * MiB)
        assert bat == (L.PAYLOAD_ZERO, 8 * MiB | L.PAYLOAD_FULLY_PRESENT, L.PAYLOAD_ZERO)
    assert ours.stat().st_size == theirs.stat().st_size == 16 * MiB
    qemu_img("compare", "-f", "vhdx", "-F", "vhdx", str(ours), str(theirs))


@pytest.mark.parametrize("opts", ["subformat=dynamic", "subformat=fixed,block_state_zero=off"])
def test_img_info_fields_as_qemu_img(tmp_path: Path, opts: str) -> None:
    img = tmp_path / "i.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", opts, str(img), "5000000")
    qemu_io(img, "write -P 1 0 65536")
    ours, theirs = info_json("vmforge", img, "vhdx"), info_json("qemu-img", img, "vhdx")
    for key in ("format", "virtual-size", "cluster-size", "dirty-flag", "backing-filename",
                "actual-size", "format-specific"):
        assert ours.get(key) == theirs.get(key), key
    probed = json.loads(vmforge_img("info", "--output", "json", str(img)).stdout)
    assert probed["format"] == "vhdx"


def test_img_create_options_on_the_command_line(tmp_path: Path) -> None:
    img = tmp_path / "c.vhdx"
    vmforge_img("create", "-f", "vhdx", "-o", "subformat=fixed,block_size=2M,log_size=2M,"
                "block_state_zero=off", str(img), "7M")
    theirs = info_json("qemu-img", img, "vhdx")
    assert theirs["cluster-size"] == 2 * MiB and theirs["virtual-size"] == 7 * MiB
    with Vhdx.open(str(img)) as drv:
        assert drv.fixed and drv.header.log_length == 2 * MiB
        assert [e.is_data for e in drv.block_status(0, drv.size)] == [True]
    bad = vmforge_img("create", "-f", "vhdx", "-o", "subformat=differencing", str(img), "7M",
                      check=False)
    assert bad.returncode != 0


@pytest.mark.parametrize("out_opts", ["subformat=dynamic", "subformat=fixed",
                                      "block_state_zero=off,block_size=1M"])
def test_convert_to_and_from_qcow2_and_raw(tmp_path: Path, out_opts: str) -> None:
    src = qcow2_source(tmp_path)
    vhdx = tmp_path / "out.vhdx"
    vmforge_img("convert", "-f", "qcow2", "-O", "vhdx", "-o", out_opts, str(src), str(vhdx))
    assert qemu_img("compare", "-f", "qcow2", "-F", "vhdx", str(src), str(vhdx)).returncode == 0
    assert json.loads(qemu_img("check", "--output", "json", "-f", "vhdx", str(vhdx)).stdout
                      ).get("corruptions", 0) == 0
    assert_converts_back(vhdx, "vhdx", src, tmp_path)
    theirs = tmp_path / "theirs.vhdx"
    qemu_img("convert", "-f", "qcow2", "-O", "vhdx", "-o", out_opts, str(src), str(theirs))
    assert to_raw(theirs, tmp_path / "t.raw") == to_raw(vhdx, tmp_path / "o.raw")
    with Vhdx.open(str(theirs)) as drv:
        assert drv.read(0, drv.size) == (tmp_path / "t.raw").read_bytes()


def test_raw_converts_both_ways(tmp_path: Path) -> None:
    assert_raw_converts_both_ways("vhdx", "vhdx", tmp_path)


def test_sector_bitmap_entries_interleaved_in_the_bat(tmp_path: Path) -> None:
    """5 GiB with 1 MiB blocks: 4096 payload blocks per chunk, so the BAT entries of
    blocks past 4 GiB come after a sector bitmap entry.  qemu-io's writes there read
    back, ours land where qemu-io reads them."""
    img = tmp_path / "big.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(img), "5G")
    qemu_io(img, f"write -P 0x61 {4096 * MiB - 512} 1024", f"write -P 0x62 {4600 * MiB} 4096")
    with Vhdx.open(str(img), readonly=False) as drv:
        assert drv.geometry.bat_entries == 5120 + 1
        assert drv.read(4096 * MiB - 512, 1024) == b"\x61" * 1024
        assert drv.read(4600 * MiB, 4096) == b"\x62" * 4096
        assert drv.bat[4096] == 0          # the sector bitmap entry stays not present
        drv.write(4097 * MiB + 3, b"\x63" * 5000)
    qemu_io(img, f"read -P 0x63 {4097 * MiB + 3} 5000", f"read -P 0x61 {4096 * MiB - 512} 1024")
    assert qemu_img("check", "-f", "vhdx", str(img)).returncode == 0


def _set_logical_sector(img: Path, size: int) -> None:
    meta = struct.unpack_from("<Q", img.read_bytes(), L.REGION_TABLE_OFFSETS[0] + 64)[0]
    with open(img, "r+b") as f:       # the logical sector size item (after 8 + 8 + 16)
        f.seek(meta + 65536 + 32)
        f.write(struct.pack("<I", size))


def test_4096_byte_logical_sectors(tmp_path: Path) -> None:
    """The specification allows 4096-byte logical sectors; qemu-img 7.2 refuses them
    (not supported) but they change nothing else of a small image: it reads as it did
    with 512-byte sectors, and our writes read back through qemu-io once it has them
    again."""
    img = tmp_path / "4k.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(img), "9M")
    qemu_io(img, *(f"write -P {p:#x} {off} {n}" for off, n, p in QEMU_WRITES))
    expect = to_raw(img, tmp_path / "q.raw")
    _set_logical_sector(img, 4096)
    assert qemu_img("info", str(img), check=False).returncode != 0
    with Vhdx.open(str(img), readonly=False) as drv:
        assert drv.geometry.logical_sector == 4096
        assert drv.read(0, drv.size) == expect
        drv.write(6 * MiB + 4096, b"\x66" * 8192)
    _set_logical_sector(img, 512)
    qemu_io(img, f"read -P 0x66 {6 * MiB + 4096} 8192", f"read -P 0x44 {5 * MiB + 512} 512")


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_map_as_qemu_img(tmp_path: Path, subformat: str) -> None:
    """QEMU's vhdx driver has no block status: ``map`` shows the whole image as data
    with no offsets, and the words form refuses it; vmforge's map says the same
    (its own block status still drives convert)."""
    img = tmp_path / "m.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", f"subformat={subformat}", str(img), "8M")
    qemu_io(img, "write -P 1 1M 64k", "write -z 3M 64k")
    want = qemu_img("map", "--output", "json", "-f", "vhdx", str(img)).stdout
    assert vmforge_img("map", "--output", "json", "-f", "vhdx", str(img)).stdout == want
    q = qemu_img("map", "-f", "vhdx", str(img), check=False)
    v = vmforge_img("map", "-f", "vhdx", str(img), check=False)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout) == (1, q.stdout)
    assert v.stderr == q.stderr.replace("qemu-img:", "vmforge img:")
