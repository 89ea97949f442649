"""zstd-compressed clusters (compression_type=zstd), against qemu-img."""

from __future__ import annotations

import json
from pathlib import Path

from qcow2_oracle import assert_qemu_clean, needs_qemu, pattern, qemu_img, to_raw

from vmforge.testing.oracles import require_module
from vmforge_qcow2 import Qcow2

require_module("zstandard", "pip install zstandard (in vmforge's test extra)")
pytestmark = needs_qemu
MiB = 1 << 20


def _data() -> bytes:
    return b"".join(bytes([i % 256]) * 3000 + pattern(1000, i) for i in range(300))[:MiB]


def test_qemu_zstd_image_reads_exact(tmp_path: Path) -> None:
    src = tmp_path / "s.raw"
    src.write_bytes(_data())
    img = tmp_path / "z.qcow2"
    qemu_img("convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", str(src), str(img))
    with Qcow2.open(str(img)) as q:
        assert q.info().format_specific["compression-type"] == "zstd"
        assert q.read(0, q.size) == src.read_bytes()
        assert any(e.status & 8 for e in q.block_status(0, q.size))
        assert q.check().clean


def test_vmforge_zstd_clusters_read_by_qemu(tmp_path: Path) -> None:
    img = tmp_path / "v.qcow2"
    Qcow2.create(str(img), MiB, compression_type="zstd")
    data = _data()
    with Qcow2.open(str(img), readonly=False) as q:
        for off in range(0, MiB, q.cluster_size):
            q.write_compressed(off, data[off:off + q.cluster_size])
        q.write(1234, b"plain write over a zstd cluster")
    model = bytearray(data)
    model[1234:1234 + 31] = b"plain write over a zstd cluster"
    assert_qemu_clean(img)
    info = json.loads(qemu_img("info", "--output", "json", str(img)).stdout)
    assert info["format-specific"]["data"]["compression-type"] == "zstd"
    assert to_raw(img, tmp_path / "v.raw") == bytes(model)
    check = json.loads(qemu_img("check", "--output", "json", str(img)).stdout)
    assert check["compressed-clusters"] >= 14
