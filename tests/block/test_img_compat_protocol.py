"""``-o extent_size_hint=SIZE`` (and ``nocow``) of create/convert as qemu-img 7.2's file
protocol takes them: shown, checked, set with FS_IOC_FSSETXATTR on the empty file before
the format writes (default 1 MiB), a failure a warning only when asked for explicitly."""

from __future__ import annotations

import errno
import os

import pytest

from vmforge.cli import img_protocol

pytestmark = pytest.mark.formats("raw", "qcow2")


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("opts", ["extent_size_hint=1M", "extent_size_hint=0",
                                  "nocow=on,extent_size_hint=64k"])
def test_create_takes_extent_size_hint_as_qemu_img(tmp_path, monkeypatch, img, qemu,
                                                    fmt, opts) -> None:
    monkeypatch.chdir(tmp_path)
    theirs = qemu("img", "create", "-f", fmt, "-o", opts, "theirs.img", "1M")
    ours = img("--qemu-img-compat", "create", "-f", fmt, "-o", opts, "ours.img", "1M")
    assert (ours.rc, ours.out.replace("ours", "theirs"), ours.err) == \
        (theirs.returncode, theirs.stdout, theirs.stderr)
    assert qemu("img", "compare", "ours.img", "theirs.img").returncode == 0


@pytest.mark.parametrize("opts", ["extent_size_hint=8G", "extent_size_hint=abc"])
def test_bad_extent_size_hint_as_qemu_img(tmp_path, monkeypatch, img, qemu, opts) -> None:
    monkeypatch.chdir(tmp_path)
    theirs = qemu("img", "create", "-f", "raw", "-o", opts, "t.img", "1M", check=False)
    ours = img("--qemu-img-compat", "create", "-f", "raw", "-o", opts, "t.img", "1M")
    assert (ours.rc, ours.out, ours.err) == (theirs.returncode, theirs.stdout, theirs.stderr)
    assert not os.path.exists("t.img")


def test_convert_takes_extent_size_hint(tmp_path, monkeypatch, img, qemu) -> None:
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "qcow2", "s.qcow2", "1M")
    r = img("convert", "-O", "qcow2", "-o", "extent_size_hint=2M", "s.qcow2", "d.qcow2")
    assert r.rc == 0, r.err
    assert qemu("img", "compare", "s.qcow2", "d.qcow2").returncode == 0


def test_hint_is_set_on_the_empty_file_before_the_format_writes(tmp_path, monkeypatch,
                                                                 img) -> None:
    seen: list[tuple[int, int]] = []

    def record(fd: int, hint: int) -> None:
        seen.append((os.fstat(fd).st_size, hint))

    monkeypatch.setattr(img_protocol, "set_extent_size_hint", record)
    monkeypatch.chdir(tmp_path)
    assert img("create", "-q", "-f", "qcow2", "-o", "extent_size_hint=256k", "a.qcow2",
               "1M").rc == 0
    assert img("create", "-q", "-f", "qcow2", "b.qcow2", "1M").rc == 0
    assert seen == [(0, 256 << 10), (0, 1 << 20)]     # the default is QEMU's 1 MiB


def test_a_failed_hint_warns_only_when_asked_for(tmp_path, monkeypatch, img) -> None:
    def unsupported(fd: int, hint: int) -> None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(img_protocol, "set_extent_size_hint", unsupported)
    monkeypatch.chdir(tmp_path)
    r = img("--qemu-img-compat", "create", "-q", "-f", "raw", "-o", "extent_size_hint=1M",
            "a.raw", "1M")
    assert (r.rc, r.err) == (0, "qemu-img: warning: Failed to set extent size hint: "
                                "Operation not supported\n")
    r = img("create", "-q", "-f", "raw", "b.raw", "1M")
    assert (r.rc, r.err) == (0, "")
