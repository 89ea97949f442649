"""qcow's block status an L2 table at a time: the same clusters as a lookup per cluster,
and none looked up alone where a table is missing or has no compressed cluster."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vmforge.block.driver import BlockStatus
from vmforge.block.mapped import MappedImage
from vmforge.testing.qemu_tools import needs_qemu, qemu_img, vmforge_img
from vmforge_qcow import Qcow

pytestmark = needs_qemu
MiB = 1 << 20


def _per_cluster(runs, cs: int) -> list[tuple[int, int | None]]:
    out = []
    for offset, length, status, host in runs:
        for k in range(0, length, cs):
            out.append((int(status), None if host is None else host + k))
        assert offset % cs == 0 and length % cs == 0
    return out


@pytest.mark.parametrize("compress", [False, True])
def test_table_runs_are_the_clusters_runs(tmp_path: Path, compress: bool) -> None:
    rng = random.Random(3)
    data = bytearray(24 * MiB)
    for k in range(60):                    # data here and there, whole L2 ranges empty;
        at = rng.randrange(0, 12 * MiB) // 4096 * 4096      # text compresses, noise not
        piece = rng.randbytes(40 * 4096) if k % 2 else b"vmforge %d " % k * 20000
        n = rng.randrange(1, 40) * 4096
        data[at:at + n] = piece[:n]
    raw, img = tmp_path / "a.raw", tmp_path / "a.qcow"
    raw.write_bytes(data)
    if compress:        # (qemu-img 7.2 writes no compressed qcow; vmforge does)
        vmforge_img("convert", "-c", "-f", "raw", "-O", "qcow", str(raw), str(img))
    else:
        qemu_img("convert", "-f", "raw", "-O", "qcow", str(raw), str(img))
    with Qcow.open(str(img)) as drv:
        cs = drv.cluster_size
        ours = _per_cluster(drv._status_runs(0, drv.size), cs)
        theirs = _per_cluster(MappedImage._status_runs(drv, 0, drv.size), cs)
        assert ours == theirs
        kinds = {s for s, _h in ours}
        assert int(BlockStatus.COMPRESSED) & max(kinds) if compress else len(kinds) == 2


def test_an_empty_image_looks_up_no_cluster(tmp_path: Path, monkeypatch) -> None:
    img = tmp_path / "e.qcow"
    qemu_img("create", "-q", "-f", "qcow", str(img), "64M")
    calls = []
    real = Qcow._cluster_status
    monkeypatch.setattr(Qcow, "_cluster_status", lambda self, i: calls.append(i) or real(self, i))
    with Qcow.open(str(img)) as drv:
        extents = list(drv.block_status(0, drv.size))
    assert [(e.offset, e.length, e.is_data) for e in extents] == [(0, 64 * MiB, False)]
    assert calls == []
