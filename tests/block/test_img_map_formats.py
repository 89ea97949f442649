"""``vmforge img map`` of images qemu-img made, for every writable format and its
subformats, against ``qemu-img map`` 7.2 (JSON and words): the same runs, the same
zero/data/present flags, the same host offsets and the files they are in (the
extent files of multi-file vmdk images), the same refusals."""

from __future__ import annotations

import pytest

from vmforge.testing.qemu_tools import needs_qemu, qemu_img, qemu_io, vmforge_img

pytestmark = needs_qemu

CASES = [
    ("vpc", "subformat=fixed"), ("vpc", "subformat=dynamic"),
    ("vdi", "static=on"), ("vdi", "static=off"),
    ("vmdk", "subformat=monolithicSparse"), ("vmdk", "subformat=monolithicFlat"),
    ("vmdk", "subformat=twoGbMaxExtentSparse"), ("vmdk", "subformat=twoGbMaxExtentFlat"),
    ("vmdk", "subformat=streamOptimized"),
    ("qed", ""), ("qcow", ""), ("parallels", ""), ("vhdx", ""), ("raw", ""),
    ("qcow2", ""),
    # QEMU recurses into the file for the data clusters of an image it finds
    # metadata-preallocated (qcow2_detect_metadata_preallocation): holes read as zero
    ("qcow2", "preallocation=metadata"), ("qcow2", "preallocation=falloc"),
    ("qcow2", "preallocation=full"),
    ("qcow2", "preallocation=metadata,cluster_size=4096"),
]


@pytest.mark.parametrize(("fmt", "options"), CASES, ids=[f"{f}-{o}" for f, o in CASES])
def test_map_as_qemu_img(tmp_path, fmt: str, options: str) -> None:
    img = tmp_path / f"m.{fmt}"
    qemu_img("create", "-q", "-f", fmt, *(["-o", options] if options else []), str(img), "8M")
    writes = ["write -P 1 1M 64k", "write -z 3M 64k", "write -P 2 5M 4k"]
    if "streamOptimized" in options:        # appended in order, no zero writes
        writes = ["write -P 1 1M 64k", "write -P 2 5M 64k"]
    qemu_io(img, *writes, fmt=fmt)
    for output in ("json", "human"):
        q = qemu_img("map", "--output", output, "-f", fmt, str(img), check=False)
        v = vmforge_img("map", "--output", output, "-f", fmt, str(img), check=False)
        assert (v.returncode, v.stdout) == (q.returncode, q.stdout), (output, v.stderr)
        assert v.stderr == q.stderr.replace("qemu-img:", "vmforge img:")
