"""The VHDX log: entries built here per the specification, replayed as qemu-img replays
them, and refused read-only where qemu-img refuses them."""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing import qemu_tools
from vmforge.testing.qemu_tools import needs_qemu, pattern, qemu_img, vmforge_img
from vmforge_vhdx import Vhdx
from vmforge_vhdx import layout as L
from vmforge_vhdx.log import LogReader, build_entry

pytestmark = needs_qemu
qemu_io = partial(qemu_tools.qemu_io, fmt="vhdx")
to_raw = partial(qemu_tools.to_raw, fmt="vhdx")
MiB = 1 << 20
SECTOR = 4096


def _qemu_image(tmp_path: Path) -> Path:
    """12 MiB, 1 MiB blocks: blocks 0 and 3 written by qemu-io, the others ZERO."""
    img = tmp_path / "base.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(img), "12M")
    qemu_io(img, "write -P 0x11 0 1M", "write -P 0x33 3M 1M")
    return img


def _layout(img: Path) -> tuple[int, int, int, int]:
    """(log offset, log length, BAT offset, host offset of block 0)."""
    with Vhdx.open(str(img)) as drv:
        h = drv.header
        return h.log_offset, h.log_length, drv.bat_offset, drv.bat[0] & L.BAT_OFFSET_MASK


def _set_log_guid(img: Path, guid: bytes) -> None:
    """Make ``guid`` the log GUID of the current header, as a writer of the log does:
    the other header becomes current with it."""
    with Vhdx.open(str(img)) as drv:
        cur, header, block = drv.current, drv.header, bytearray(drv.header_blocks[1 - drv.current])
    replace(header, sequence=header.sequence + 1, log_guid=guid).pack_into(block)
    _patch(img, L.HEADER_OFFSETS[1 - cur], bytes(block))


def _patch(img: Path, at: int, data: bytes) -> None:
    with open(img, "r+b") as f:
        f.seek(at)
        f.write(data)


def _put_entry(img: Path, log_at: int, log_len: int, position: int, entry: bytes) -> None:
    """Write ``entry`` into the circular log from ``position``."""
    first = entry[:log_len - position]
    _patch(img, log_at + position, first)
    if len(entry) > len(first):
        _patch(img, log_at, entry[len(first):])


def _dirty(tmp_path: Path, position: int = 0) -> tuple[Path, bytearray, int]:
    """A qemu-made image with a log entry to replay at ``position`` of the log: a data
    sector and a zeroed range in block 0, and block 5 given a payload block (its data
    written first, at the end of the file, as a writer does).  And what it reads as
    once replayed, and where the log is."""
    img = _qemu_image(tmp_path)
    model = bytearray(to_raw(img, tmp_path / "before.raw"))
    log_at, log_len, bat_at, host0 = _layout(img)
    new_block = os.path.getsize(img)
    payload = pattern(MiB, 5)
    _patch(img, new_block, payload)
    bat_sector = bytearray(Path(img).read_bytes()[bat_at:bat_at + SECTOR])
    struct.pack_into("<Q", bat_sector, 8 * 5, new_block | L.PAYLOAD_FULLY_PRESENT)
    data = pattern(SECTOR, 1)
    guid = uuid.uuid4().bytes_le
    size = os.path.getsize(img)
    entry = build_entry(9, guid, [(host0 + 8192, data), (bat_at, bytes(bat_sector))],
                        [(host0 + 65536, 3 * SECTOR)], flushed_offset=size, last_offset=size,
                        tail=position)
    _put_entry(img, log_at, log_len, position, entry)
    _set_log_guid(img, guid)
    model[8192:8192 + SECTOR] = data
    model[65536:65536 + 3 * SECTOR] = bytes(3 * SECTOR)
    model[5 * MiB:6 * MiB] = payload
    return img, model, log_at


def _copies(img: Path, n: int) -> list[Path]:
    out = []
    for k in range(n):
        out.append(img.with_name(f"copy{k}.vhdx"))
        shutil.copyfile(img, out[-1])
    return out


@pytest.mark.parametrize("position", [0, 64 * SECTOR, MiB - SECTOR])   # the last: wraps
def test_log_replayed_as_qemu_img_replays_it(tmp_path: Path, position: int) -> None:
    img, model, _ = _dirty(tmp_path, position)
    theirs, ours, ours_cli = _copies(img, 3)
    # read-only, both refuse an image with a log to replay
    refused = qemu_img("convert", "-f", "vhdx", "-O", "raw", str(img), str(tmp_path / "x.raw"),
                       check=False)
    assert refused.returncode != 0 and "log" in refused.stderr
    with pytest.raises(BlockError, match="log that needs to be replayed") as info:
        Vhdx.open(str(img))
    assert str(img) in str(info.value)
    for cmd in ("info", "check"):      # vmforge img as qemu-img: refused, exit status 1
        theirs_rc = qemu_img(cmd, "-f", "vhdx", str(img), check=False).returncode
        assert vmforge_img(cmd, "-f", "vhdx", str(img), check=False).returncode == theirs_rc == 1
    # qemu-img check -r all replays it; so do a read-write open and vmforge img check -r all
    q = json.loads(qemu_img("check", "-r", "all", "--output", "json", str(theirs)).stdout)
    assert to_raw(theirs, tmp_path / "t.raw") == model
    with Vhdx.open(str(ours), readonly=False) as drv:
        assert drv.log_replayed
        assert drv.read(0, drv.size) == model
        assert drv.header.log_guid == L.ZERO_GUID
    v = vmforge_img("check", "-r", "all", "--output", "json", "-f", "vhdx", str(ours_cli))
    assert json.loads(v.stdout).get("corruptions-fixed") == q.get("corruptions-fixed") == 1
    for p in (ours, ours_cli):
        assert qemu_img("check", "-f", "vhdx", str(p)).returncode == 0
        qemu_img("compare", "-f", "vhdx", "-F", "vhdx", str(theirs), str(p))
        with Vhdx.open(str(p)) as drv:           # clean now: read-only opens work
            assert drv.read(0, drv.size) == model and not drv.log_replayed


def test_sequence_of_entries_replayed_in_order(tmp_path: Path) -> None:
    """Entries 7 and 8 (8's tail pointing at 7) write one sector in turn; a stale entry
    3 after them in the log, not part of the sequence, is not replayed."""
    img = _qemu_image(tmp_path)
    model = bytearray(to_raw(img, tmp_path / "before.raw"))
    log_at, log_len, _, host0 = _layout(img)
    guid = uuid.uuid4().bytes_le
    size = os.path.getsize(img)
    at = host0 + 16 * SECTOR
    first, second, stale = (pattern(SECTOR, k) for k in (7, 8, 3))
    e7 = build_entry(7, guid, [(at, first), (at + SECTOR, first)], flushed_offset=size,
                     last_offset=size, tail=0)
    e8 = build_entry(8, guid, [(at, second)], flushed_offset=size, last_offset=size, tail=0)
    e3 = build_entry(3, guid, [(at, stale)], flushed_offset=size, last_offset=size,
                     tail=len(e7) + len(e8))
    _put_entry(img, log_at, log_len, 0, e7 + e8 + e3)
    _set_log_guid(img, guid)
    model[16 * SECTOR:17 * SECTOR] = second
    model[17 * SECTOR:18 * SECTOR] = first
    theirs, ours = _copies(img, 2)
    qemu_img("check", "-r", "all", str(theirs))
    assert to_raw(theirs, tmp_path / "t.raw") == model
    with Vhdx.open(str(ours), readonly=False) as drv:
        assert drv.read(0, drv.size) == model


def test_entry_with_a_bad_checksum_is_not_replayed(tmp_path: Path) -> None:
    img, model, log_at = _dirty(tmp_path)
    with open(img, "r+b") as f:           # one byte of the data sector
        f.seek(log_at + SECTOR + 100)
        byte = f.read(1)
        f.seek(log_at + SECTOR + 100)
        f.write(bytes([byte[0] ^ 1]))
    before = to_raw(img, tmp_path / "q.raw")          # qemu-img opens it read-only
    assert before != model
    with Vhdx.open(str(img)) as drv:
        assert drv.read(0, drv.size) == before and not drv.log_replayed


def test_truncated_since_the_log_was_written_is_refused(tmp_path: Path) -> None:
    """flushed_file_offset past the end of the file: the image lost data; both refuse."""
    img = _qemu_image(tmp_path)
    log_at, log_len, _, host0 = _layout(img)
    guid = uuid.uuid4().bytes_le
    size = os.path.getsize(img)
    entry = build_entry(1, guid, [(host0, pattern(SECTOR, 2))], flushed_offset=size + MiB,
                        last_offset=size + MiB)
    _put_entry(img, log_at, log_len, 0, entry)
    _set_log_guid(img, guid)
    theirs, ours = _copies(img, 2)
    assert qemu_img("check", "-r", "all", str(theirs), check=False).returncode != 0
    with pytest.raises(CorruptImageError, match="truncated") as info:
        Vhdx.open(str(ours), readonly=False)
    assert info.value.offset == log_at and info.value.table == "log"


def test_qemu_log_entries_read_and_checksummed_alike(tmp_path: Path) -> None:
    """The entries qemu-io leaves in the log after its two writes (flushed, the log GUID
    cleared since) are valid to our reader, given their GUID: the same checksum,
    descriptors and data sector layout.  The first wrote the BAT sector with block 0
    allocated, the second (right after it, one sequence number on) as it now is."""
    img = _qemu_image(tmp_path)
    log_at, log_len, bat_at, _ = _layout(img)
    raw = img.read_bytes()
    guid = raw[log_at + 32:log_at + 48]
    now = raw[bat_at:bat_at + SECTOR]
    fd = os.open(img, os.O_RDONLY)
    try:
        first = LogReader(fd, log_at, log_len, guid).entry_at(0)
        assert first is not None and first.sequence >= 1
        at = log_at + first.length      # each entry has a log GUID of its own
        second = LogReader(fd, log_at, log_len, raw[at + 32:at + 48]).entry_at(first.length)
        assert second is not None and second.sequence == first.sequence + 1
        assert second.ops == [(bat_at, SECTOR, now)]
        earlier = bytearray(now)
        struct.pack_into("<Q", earlier, 8 * 3, L.PAYLOAD_ZERO)
        assert first.ops == [(bat_at, SECTOR, bytes(earlier))]
        assert LogReader(fd, log_at, log_len, bytes(16)).entry_at(0) is None
    finally:
        os.close(fd)


class _Crash(Exception):
    pass


def test_our_log_entry_left_unapplied_is_replayed_by_qemu_img(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A write that allocates stops after its BAT update reached the log but not the BAT
    (a crash): qemu-img check -r all replays our entry, and so does our next open."""
    img = _qemu_image(tmp_path)
    model = bytearray(to_raw(img, tmp_path / "before.raw"))
    data = pattern(70000, 4)
    model[7 * MiB + 100:7 * MiB + 100 + len(data)] = data

    def crash(self: Vhdx, sectors: list[tuple[int, bytes]]) -> None:
        raise _Crash

    drv = Vhdx.open(str(img), readonly=False)
    monkeypatch.setattr(Vhdx, "_apply_metadata", crash)
    with pytest.raises(_Crash):
        drv.write(7 * MiB + 100, data)
    os.close(drv.fd)                  # no flush, no close: the process died here
    drv.closed = True
    monkeypatch.undo()
    refused = qemu_img("convert", "-O", "raw", str(img), str(tmp_path / "x.raw"), check=False)
    assert refused.returncode != 0 and "log" in refused.stderr
    theirs, ours = _copies(img, 2)
    qemu_img("check", "-r", "all", str(theirs))
    assert to_raw(theirs, tmp_path / "t.raw") == model
    with Vhdx.open(str(ours), readonly=False) as drv:
        assert drv.log_replayed and drv.read(0, drv.size) == model
    qemu_img("compare", "-f", "vhdx", "-F", "vhdx", str(theirs), str(ours))
