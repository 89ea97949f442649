"""vdi images against qemu-img and qemu-io: both directions, check, info, convert."""

from __future__ import annotations

import json
import struct
from functools import partial
from pathlib import Path

import pytest

from vmforge.testing import qemu_tools
from vmforge.testing.qemu_tools import info_json, needs_qemu, qemu_img, vmforge_img
from vmforge_vdi import Vdi

pytestmark = needs_qemu
qemu_io = partial(qemu_tools.qemu_io, fmt="vdi")
to_raw = partial(qemu_tools.to_raw, fmt="vdi")
MiB = 1 << 20

QEMU_WRITES = ((0, 4096, 0x11), (512 * 1000, 70000 // 512 * 512, 0x22),
               (2 * MiB - 1024, 4096, 0x33), (5 * MiB + 512, 512, 0x44))
_UUIDS = range(0x188, 0x1A8)   # image and last-snapshot UUIDs: random in both


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("size", [512, 3000001, 5 * MiB, 300 * MiB + 512])
def test_create_is_byte_identical_to_qemu_img(tmp_path: Path, static: bool, size: int) -> None:
    ours, theirs = tmp_path / "ours.vdi", tmp_path / "theirs.vdi"
    Vdi.create(str(ours), size, static=static)
    qemu_img("create", "-q", "-f", "vdi", "-o", f"static={'on' if static else 'off'}",
             str(theirs), str(size))
    a, b = bytearray(ours.read_bytes()), bytearray(theirs.read_bytes())
    for i in _UUIDS:
        a[i] = b[i] = 0
    assert a == b


@pytest.mark.parametrize("static", ["off", "on"])
def test_qemu_images_read_byte_for_byte(tmp_path: Path, static: str) -> None:
    img = tmp_path / "q.vdi"
    qemu_img("create", "-q", "-f", "vdi", "-o", f"static={static}", str(img), "7M")
    qemu_io(img, *(f"write -P {p:#x} {off} {n}" for off, n, p in QEMU_WRITES))
    expect = to_raw(img, tmp_path / "q.raw")
    with Vdi.open(str(img)) as drv:
        assert drv.size == len(expect) == 7 * MiB
        assert drv.read(0, drv.size) == expect
        for e in drv.block_status(0, drv.size):
            if not e.is_data:
                assert not any(expect[e.offset:e.end])
        assert drv.check().clean
        # qemu-io allocated blocks 0, 1, 2 and 5 (in that order) of a dynamic image
        if static == "off":
            assert drv.blocks_allocated == 4 and list(drv.bmap[:7]) == [
                0, 1, 2, 0xFFFFFFFF, 0xFFFFFFFF, 3, 0xFFFFFFFF]


@pytest.mark.parametrize("static", [False, True])
def test_our_images_accepted_by_qemu(tmp_path: Path, static: bool) -> None:
    img = tmp_path / "ours.vdi"
    Vdi.create(str(img), 9 * MiB + 512, static=static)
    with Vdi.open(str(img), readonly=False) as drv:
        model = qemu_tools.write_odd_patterns(drv)
        drv.write(3 * MiB, b"\x5a" * 512)
        model[3 * MiB:3 * MiB + 512] = b"\x5a" * 512
    check = json.loads(qemu_img("check", "--output", "json", "-f", "vdi", str(img)).stdout)
    assert check.get("corruptions", 0) == 0 and check["check-errors"] == 0, check
    qemu_tools.assert_qemu_accepts(img, "vdi", model, 3 * MiB, tmp_path)
    with Vdi.open(str(img)) as drv:
        assert drv.read(0, drv.size) == model
        assert drv.check().clean
    assert to_raw(img, tmp_path / "back.raw") == model


def test_a_new_block_at_the_end_is_written_data_only(tmp_path: Path) -> None:
    """A block appended to the file gets its data written and the file extended to
    its end: the rest is a hole, not 1 MiB of zeros written then overwritten, and
    reads (ours and qemu's) and qemu-img check are as for qemu-io's image."""
    ours, theirs = tmp_path / "ours.vdi", tmp_path / "theirs.vdi"
    for img in (ours, theirs):
        qemu_img("create", "-q", "-f", "vdi", str(img), "5M")
    start = ours.stat().st_size
    writes = ((2 * MiB + 4096, 8192, 0x3C), (4096, 4096, 0x5A), (2 * MiB + 65536, 512, 0x11))
    with Vdi.open(str(ours), readonly=False) as drv:
        for off, n, p in writes:
            drv.write(off, bytes([p]) * n)
    qemu_io(theirs, *(f"write -P {p:#x} {off} {n}" for off, n, p in writes))
    assert ours.stat().st_size == theirs.stat().st_size == start + 2 * MiB
    # the data's pages only (and the header's): far less than one block
    assert ours.stat().st_blocks * 512 - theirs.stat().st_blocks * 512 <= -MiB
    assert to_raw(ours, tmp_path / "o.raw") == to_raw(theirs, tmp_path / "t.raw")
    qemu_img("check", "-q", "-f", "vdi", str(ours))


def _set_entry(path: Path, block: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(0x200 + 4 * block)
        f.write(struct.pack("<I", value))


@pytest.mark.parametrize("damage", ["duplicate", "out_of_range", "count", "all"])
def test_check_counts_as_qemu_img(tmp_path: Path, damage: str) -> None:
    img = tmp_path / "c.vdi"
    qemu_img("create", "-q", "-f", "vdi", str(img), "8M")
    qemu_io(img, "write -P 1 0 1M", "write -P 2 3M 1M", "write -P 3 6M 4k")
    if damage in ("duplicate", "all"):
        _set_entry(img, 4, 1)           # a second block pointing at data block 1
    if damage in ("out_of_range", "all"):
        _set_entry(img, 7, 4000)        # beyond the 8 blocks of the image
    if damage == "count":
        with open(img, "r+b") as f:     # the header's count of allocated blocks
            f.seek(0x184)
            f.write(struct.pack("<I", 5))
    theirs = qemu_img("check", "--output", "json", "-f", "vdi", str(img), check=False)
    ours = vmforge_img("check", "--output", "json", "-f", "vdi", str(img), check=False)
    assert ours.returncode == theirs.returncode == 2
    a, b = json.loads(ours.stdout), json.loads(theirs.stdout)
    assert a["corruptions"] == b["corruptions"] > 0
    human = vmforge_img("check", "-f", "vdi", str(img), check=False)
    qhuman = qemu_img("check", "-f", "vdi", str(img), check=False)
    errors = sorted(line for line in qhuman.stderr.splitlines() if line.startswith("ERROR"))
    assert sorted(line for line in human.stderr.splitlines() if line.startswith("ERROR")) == errors


@pytest.mark.parametrize("opts", ["static=off", "static=on"])
def test_img_info_fields_as_qemu_img(tmp_path: Path, opts: str) -> None:
    img = tmp_path / "i.vdi"
    qemu_img("create", "-q", "-f", "vdi", "-o", opts, str(img), "5000000")
    qemu_io(img, "write -P 1 0 65536")
    ours, theirs = info_json("vmforge", img, "vdi"), info_json("qemu-img", img, "vdi")
    for key in ("format", "virtual-size", "cluster-size", "dirty-flag", "backing-filename",
                "actual-size"):
        assert ours.get(key) == theirs.get(key), key
    probed = json.loads(vmforge_img("info", "--output", "json", str(img)).stdout)
    assert probed["format"] == "vdi"


@pytest.mark.parametrize("out_opts", ["static=off", "static=on"])
def test_convert_to_and_from_qcow2_and_raw(tmp_path: Path, out_opts: str) -> None:
    src = qemu_tools.qcow2_source(tmp_path)
    vdi = tmp_path / "out.vdi"
    vmforge_img("convert", "-f", "qcow2", "-O", "vdi", "-o", out_opts, str(src), str(vdi))
    assert qemu_img("compare", "-f", "qcow2", "-F", "vdi", str(src), str(vdi)).returncode == 0
    assert json.loads(qemu_img("check", "--output", "json", "-f", "vdi", str(vdi)).stdout
                      ).get("corruptions", 0) == 0
    qemu_tools.assert_converts_back(vdi, "vdi", src, tmp_path)
    theirs = tmp_path / "theirs.vdi"
    qemu_img("convert", "-f", "qcow2", "-O", "vdi", "-o", out_opts, str(src), str(theirs))
    assert to_raw(theirs, tmp_path / "t.raw") == to_raw(vdi, tmp_path / "o.raw")
    if out_opts == "static=off":  # the same blocks allocated as qemu-img's conversion
        with Vdi.open(str(vdi)) as a, Vdi.open(str(theirs)) as b:
            assert a.blocks_allocated == b.blocks_allocated
