"""``-p`` as qemu-img 7.2 prints it (util/qemu-progress.c): on stdout, ``    (0.00/100%)\\r``
when the operation starts, a line each time it moved by more than 1%, ``100.00`` again
at the end and a newline."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.formats("raw", "qcow2")


def test_convert_progress_as_qemu_img(tmp_path, monkeypatch, img, qemu) -> None:
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "raw", "full.raw", "2M")
    qemu("io", "-f", "raw", "-c", "write -P 1 0 2M", "full.raw")
    theirs = subprocess.run(["qemu-img", "convert", "-p", "-f", "raw", "-O", "raw",
                             "full.raw", "t.raw"], capture_output=True, check=True)
    ours = img("convert", "-p", "-f", "raw", "-O", "raw", "full.raw", "o.raw")
    assert (ours.rc, ours.out.encode(), ours.err) == (0, theirs.stdout, "")


@pytest.mark.parametrize("options", [[], ["-S", "0"], ["-c"], ["-B", "base.qcow2"]],
                         ids=["sparse", "every-byte", "compressed", "backing"])
def test_convert_progress_of_a_sparse_image_as_qemu_img(tmp_path, monkeypatch, img, qemu,
                                                         options) -> None:
    """The bar counts the data copied against the data there is (qemu-img's first pass
    over the block status): one 1 MiB extent in 64 MiB goes from 0 to 100 at once;
    with -S 0 the zeros count too; with -B the backing file's part counts for nothing."""
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "qcow2", "base.qcow2", "64M")
    qemu("io", "-f", "qcow2", "-c", "write -P 2 20M 3M", "base.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "s.qcow2")
    qemu("io", "-f", "qcow2", "-c", "write -P 1 10M 1M", "s.qcow2")
    out = ["-O", "qcow2"] if "-c" in options or "-B" in options else ["-O", "raw"]
    extra = [*options, *(["-F", "qcow2"] if "-B" in options else [])]
    theirs = subprocess.run(["qemu-img", "convert", "-p", *extra, *out, "s.qcow2", "t.img"],
                            capture_output=True, check=True)
    ours = img("convert", "-p", *extra, *out, "s.qcow2", "o.img")
    assert (ours.rc, ours.out.encode(), ours.err) == (0, theirs.stdout, "")


@pytest.mark.parametrize("cmd", [["rebase", "-p", "-b", "new.qcow2", "-F", "qcow2"],
                                 ["commit", "-p"]])
def test_rebase_and_commit_progress_frame_as_qemu_img(tmp_path, monkeypatch, img, qemu,
                                                      cmd) -> None:
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "qcow2", "base.qcow2", "4M")
    qemu("img", "create", "-q", "-f", "qcow2", "new.qcow2", "4M")
    qemu("io", "-c", "write -P 1 0 64k", "base.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
    qemu("io", "-c", "write -P 2 1M 64k", "top.qcow2")
    out = img(*cmd, "top.qcow2").out
    start, end = "    (0.00/100%)\r", "    (100.00/100%)\r    (100.00/100%)\r\n"
    assert out.startswith(start) and end in out
