"""``vmforge img map`` as qemu-img 7.2's, human and JSON: data, zero clusters (the JSON
lists them, the human table leaves them out), unallocated ranges, a backing chain, and
compressed clusters (the human table refuses them in qemu-img's words)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.formats("raw", "qcow2")


@pytest.fixture
def chain(tmp_path, monkeypatch, qemu) -> None:
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "qcow2", "base.qcow2", "4M")
    qemu("io", "-f", "qcow2", "-c", "write -P 1 0 64k", "-c", "write -P 2 1M 128k",
         "-c", "write -z 2M 64k", "base.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
    qemu("io", "-f", "qcow2", "-c", "write -P 3 64k 64k", "-c", "write -z 1M 64k",
         "-c", "write -z 3M 64k", "top.qcow2")
    qemu("img", "convert", "-O", "qcow2", "top.qcow2", "flat.qcow2")
    qemu("img", "convert", "-O", "raw", "top.qcow2", "flat.raw")
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", "comp.qcow2")
    qemu("io", "-f", "qcow2", "-c", "write -c -P 4 3200k 64k", "comp.qcow2")


@pytest.mark.parametrize("image", ["base.qcow2", "top.qcow2", "flat.qcow2", "flat.raw"])
@pytest.mark.parametrize("output", ["human", "json"])
def test_map_as_qemu_img(chain, img, qemu, image, output) -> None:
    theirs = qemu("img", "map", "--output", output, image)
    ours = img("map", "--output", output, image)
    assert (ours.rc, ours.out) == (0, theirs.stdout)


def test_map_of_compressed_clusters_as_qemu_img(chain, img, qemu) -> None:
    theirs = qemu("img", "map", "--output", "json", "comp.qcow2")
    assert img("map", "--output", "json", "comp.qcow2").out == theirs.stdout
    theirs = qemu("img", "map", "comp.qcow2", check=False)
    ours = img("--qemu-img-compat", "map", "comp.qcow2")
    assert (ours.rc, ours.out, ours.err) == (theirs.returncode, theirs.stdout, theirs.stderr)
