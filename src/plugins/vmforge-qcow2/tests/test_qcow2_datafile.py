"""External data files (data_file=, data_file_raw=), against qemu-img."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qcow2_oracle import assert_qemu_clean, needs_qemu, pattern, qemu_img, qemu_io, to_raw

from vmforge.block import BlockError
from vmforge_qcow2 import Qcow2

pytestmark = needs_qemu
MiB = 1 << 20


@pytest.mark.parametrize("raw", [False, True])
def test_qemu_data_file_image(tmp_path: Path, raw: bool) -> None:
    img = tmp_path / "d.qcow2"
    data = tmp_path / "d.raw"      # (qemu-img takes a relative name from its cwd)
    qemu_img("create", "-f", "qcow2", "-o",
             f"data_file={data},data_file_raw={'on' if raw else 'off'}", str(img), "4M")
    qemu_io(img, "write -P 0x11 0 100k", "write -z 1M 64k", "write -P 0x22 2M 5")
    expect = bytearray(to_raw(img, tmp_path / "e.raw"))
    with Qcow2.open(str(img)) as q:
        assert q.has_data_file and q.h.data_file == str(data)
        assert q.data_file_raw == raw
        assert q.read(0, q.size) == expect
        ours = q.check().to_json()
    theirs = json.loads(qemu_img("check", "--output", "json", str(img)).stdout)
    assert ours.get("allocated-clusters") == theirs["allocated-clusters"]
    assert ours["image-end-offset"] == theirs["image-end-offset"]
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(500, b"partial")               # cluster 0 sits at offset 0 of the data file
        q.write(3 * MiB + 3, pattern(70000, 1))
        q.write_zeroes(64 * 1024, 128 * 1024, may_unmap=True)
        q.write_compressed(2 * MiB + 65536, b"c" * 65536)   # stored plainly
    expect[500:507] = b"partial"
    expect[3 * MiB + 3:3 * MiB + 70003] = pattern(70000, 1)
    expect[64 * 1024:192 * 1024] = bytes(128 * 1024)
    expect[2 * MiB + 65536:2 * MiB + 131072] = b"c" * 65536
    assert_qemu_clean(img)
    assert to_raw(img, tmp_path / "a.raw") == expect
    raw_view = data.read_bytes()
    assert raw_view[3 * MiB + 3:3 * MiB + 70003] == pattern(70000, 1)   # guest = data offset
    if raw:     # the data file stays a raw image of the disk
        assert raw_view[:4 * MiB] == expect


def test_vmforge_data_file_image(tmp_path: Path) -> None:
    img = tmp_path / "v.qcow2"
    data = str(tmp_path / "v.data")
    Qcow2.create(str(img), 2 * MiB, data_file=data, data_file_raw=True,
                 preallocation="metadata")
    info = json.loads(qemu_img("info", "--output", "json", str(img)).stdout)
    spec = info["format-specific"]["data"]
    assert spec["data-file"] == data and spec["data-file-raw"] is True
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(12345, pattern(100000, 2))
        with pytest.raises(BlockError, match="snapshots"):
            q.create_snapshot("no")
    assert_qemu_clean(img)
    expect = bytearray(2 * MiB)
    expect[12345:112345] = pattern(100000, 2)
    assert to_raw(img, tmp_path / "v.raw") == expect
    assert (tmp_path / "v.data").read_bytes()[:2 * MiB] == expect
    with pytest.raises(BlockError, match="data_file needs compat"):
        Qcow2.create(str(tmp_path / "bad.qcow2"), MiB, data_file="x", compat="0.10")


def test_missing_data_file(tmp_path: Path) -> None:
    img = tmp_path / "m.qcow2"
    Qcow2.create(str(img), MiB, data_file=str(tmp_path / "m.data"))
    (tmp_path / "m.data").unlink()
    with pytest.raises(BlockError, match=r"m\.data"):
        Qcow2.open(str(img))
    with Qcow2.open(str(img), data_file=str(img)) as q:   # the open option overrides
        assert q.has_data_file
