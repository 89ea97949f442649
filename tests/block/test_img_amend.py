"""``vmforge img amend`` against ``qemu-img amend`` 7.2: the same image afterwards
(``qemu-img info``, ``check``, ``compare``), the same refusals."""

from __future__ import annotations

import json
import shutil

import pytest

MiB = 1 << 20


def _info(qemu, path: str) -> dict:
    out = json.loads(qemu("img", "info", "--output", "json", path).stdout)
    out.pop("filename")
    out.pop("actual-size")
    return out


@pytest.fixture
def pair(tmp_path, qemu):
    a, b = str(tmp_path / "qemu.qcow2"), str(tmp_path / "vmforge.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", a, "64M")
    qemu("io", "-c", "write -P 1 0 1M", "-c", "write -z 2M 1M", "-c", "write -z -u 4M 64k",
         "-c", "write -P 2 60M 64k", a)
    shutil.copy(a, b)
    return a, b


@pytest.mark.formats("qcow2")
@pytest.mark.parametrize("steps", [
    ["lazy_refcounts=on", "lazy_refcounts=off"],
    ["refcount_bits=64"],
    ["refcount_bits=1", "refcount_bits=16"],
    ["compat=0.10"],                     # zero clusters expanded for version 2
    ["compat=0.10", "compat=1.1"],
    ["size=128M"],
    ["size=32M"],
    ["compat=0.10,size=100M"],
])
def test_amend_like_qemu_img(pair, img, qemu, steps: list[str]) -> None:
    a, b = pair
    for opts in steps:
        qemu("img", "amend", "-o", opts, a)
        r = img("amend", "-q", "-o", opts, b)
        assert (r.rc, r.out, r.err) == (0, "", ""), r.err
        assert _info(qemu, b) == _info(qemu, a), opts
        assert qemu("img", "check", b, check=False).returncode == 0
        assert qemu("img", "compare", a, b, check=False).returncode == 0


@pytest.mark.formats("qcow2")
def test_amend_backing_file(tmp_path, img, qemu) -> None:
    base, top = str(tmp_path / "base.qcow2"), str(tmp_path / "top.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", base, "8M")
    qemu("img", "create", "-q", "-f", "qcow2", top, "8M")
    r = img("amend", "-o", f"backing_file={base},backing_fmt=qcow2", top)
    assert r.rc == 0, r.err
    info = _info(qemu, top)
    assert (info["backing-filename"], info["backing-filename-format"]) == (base, "qcow2")


@pytest.mark.formats("qcow2")
@pytest.mark.parametrize("opts,first_line", [
    ("cluster_size=4096", "Invalid parameter 'cluster_size'"),
    ("foo=1", "Invalid parameter 'foo'"),
    ("lazy_refcounts=on,compat=0.10", "Lazy refcounts only supported with compatibility "
     "level 1.1 and above (use compat=1.1 or greater)"),
    ("refcount_bits=8,compat=0.10", "Refcount widths other than 16 bits require "
     "compatibility level 1.1 or above (use compat=1.1 or greater)"),
])
def test_amend_refusals(pair, img, qemu, opts: str, first_line: str) -> None:
    a, b = pair
    theirs = qemu("img", "amend", "-o", opts, a, check=False)
    assert theirs.returncode == 1 and first_line in theirs.stderr
    before = open(b, "rb").read()
    r = img("amend", "-o", opts, b)
    assert r.rc == 1 and first_line in r.err and r.err.count("\n") == 1
    assert open(b, "rb").read() == before          # nothing changed


@pytest.mark.formats("qcow2", "raw")
def test_amend_other_formats_and_usage(tmp_path, img, qemu) -> None:
    raw = str(tmp_path / "r.raw")
    qemu("img", "create", "-q", "-f", "raw", raw, "1M")
    theirs = qemu("img", "amend", "-f", "raw", "-o", "size=2M", raw, check=False)
    r = img("amend", "-f", "raw", "-o", "size=2M", raw)
    msg = "Format driver 'raw' does not support option amendment"
    assert theirs.returncode == r.rc == 1 and msg in theirs.stderr and msg in r.err
    r = img("amend", "-f", "raw", "-o", "help")
    assert r.rc == 1 and msg in r.err
    assert img("amend", raw).err.strip().endswith("Must specify options (-o)")
    r = img("amend", "-f", "qcow2", "-o", "help")
    theirs = qemu("img", "amend", "-f", "qcow2", "-o", "help")
    ours_lines = r.out.splitlines()
    assert r.rc == 0 and ours_lines[0] == "Amend options for 'qcow2':"
    # every option vmforge lists, qemu-img lists in the same words (it has encrypt.* too)
    assert set(ours_lines) <= set(theirs.stdout.splitlines())
