"""``vmforge img create``'s ``Formatting '...'`` line is qemu-img 7.2's, for every writable
format: the defaults qemu-img shows, in its order, sizes in bytes."""

from __future__ import annotations

import pytest

SECRET = ["--object", "secret,id=sec0,data=pw"]

CASES = [
    ("raw", []),
    ("raw", ["-o", "preallocation=off"]),
    ("qcow2", []),
    ("qcow2", ["-o", "cluster_size=4k,lazy_refcounts=on,compat=1.1,refcount_bits=16"]),
    ("qcow2", ["-o", "compression_type=zlib,preallocation=metadata,extended_l2=off"]),
    ("qcow", []),
    ("qed", []),
    ("qed", ["-o", "cluster_size=128k"]),
    ("vdi", []),
    ("vdi", ["-o", "static=on"]),
    ("vpc", []),
    ("vpc", ["-o", "subformat=fixed,force_size=on"]),
    ("vhdx", []),
    ("vhdx", ["-o", "subformat=fixed,log_size=2M"]),
    ("vmdk", []),
    ("vmdk", ["-o", "subformat=monolithicFlat,adapter_type=lsilogic"]),
    ("parallels", []),
    ("luks", [*SECRET, "-o", "key-secret=sec0,iter-time=10"]),
]


@pytest.mark.parametrize("fmt,opts", CASES, ids=[f"{f}{' '.join(o[-1:])}" for f, o in CASES])
def test_formatting_line_as_qemu_img(tmp_path, monkeypatch, img, qemu, fmt, opts) -> None:
    from vmforge.block.probe import format_names

    if fmt not in format_names():
        pytest.skip(f"format plugin {fmt} not installed")
    monkeypatch.chdir(tmp_path)
    theirs = qemu("img", "create", "-f", fmt, *opts, "theirs.img", "3M")
    ours = img("create", "-f", fmt, *opts, "ours.img", "3M")
    assert ours.rc == 0, ours.err
    assert ours.out.replace("ours.img", "theirs.img") == theirs.stdout


@pytest.mark.formats("qcow2")
def test_formatting_line_with_backing_file(tmp_path, monkeypatch, img, qemu) -> None:
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "qcow2", "base.qcow2", "1M")
    args = ["-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "-o", "cluster_size=65536"]
    theirs = qemu("img", "create", *args, "theirs.qcow2")
    ours = img("create", *args, "ours.qcow2")
    assert ours.out.replace("ours.", "theirs.") == theirs.stdout


REFUSED = [
    ("vpc", "subformat=bogus"),
    ("vhdx", "subformat=bogus"),
    ("vmdk", "subformat=bogus"),
    ("vmdk", "adapter_type=bogus"),
    ("vdi", "static=maybe"),
    ("qcow2", "lazy_refcounts=y"),
    ("qcow2", "extended_l2=1"),
    ("qcow2", "compat=9"),
]


@pytest.mark.parametrize("fmt,opt", REFUSED, ids=[f"{f}-{o}" for f, o in REFUSED])
def test_a_refused_option_value_as_qemu_img(tmp_path, monkeypatch, img, qemu, fmt, opt) -> None:
    """A value an option refuses: qemu-img's words, and its ``Formatting`` line only when
    the driver (not QemuOpts' typing of on/off) refuses it."""
    from vmforge.block.probe import format_names

    if fmt not in format_names():
        pytest.skip(f"format plugin {fmt} not installed")
    monkeypatch.chdir(tmp_path)
    theirs = qemu("img", "create", "-f", fmt, "-o", opt, "z.img", "3M", check=False)
    ours = img("--qemu-img-compat", "create", "-f", fmt, "-o", opt, "z.img", "3M")
    assert (ours.rc, ours.out, ours.err) == (theirs.returncode, theirs.stdout, theirs.stderr)
