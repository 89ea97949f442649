"""Errors of ``vmforge img`` as qemu-img gives them: one line that names the file,
a non-zero status, and nothing left behind by a create that failed."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from vmforge.testing.images import MiB


def _one_clean_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err and "Error:" not in err, err
    return lines[0]


@pytest.mark.formats("raw", "qcow2")
@pytest.mark.parametrize("size", ["1.0e400", "1e400", "nan", "16E"])
def test_sizes_out_of_range_like_qemu(tmp_path, img, qemu, size) -> None:
    raw = str(tmp_path / "r.raw")
    qemu("img", "create", "-q", "-f", "raw", raw, "1M")
    runs = [("create", "-f", "qcow2", str(tmp_path / "n.qcow2"), size),
            ("resize", "-f", "raw", raw, size),
            ("measure", "-O", "qcow2", "--size", size)]
    for args in runs:
        ours, theirs = img(*args), qemu("img", *args, check=False)
        assert theirs.returncode == 1, (args, theirs.stderr)
        assert ours.rc == 1, (args, ours.err)
        assert "size" in _one_clean_line(ours.err), args
    assert not (tmp_path / "n.qcow2").exists()
    assert os.path.getsize(raw) == MiB


@pytest.mark.formats("raw")
@pytest.mark.parametrize("n", ["-1", "0", "17"])
def test_convert_refuses_a_bad_coroutine_count(tmp_path, img, qemu, n) -> None:
    src = str(tmp_path / "s.raw")
    qemu("img", "create", "-q", "-f", "raw", src, "1M")
    dst = str(tmp_path / "d.raw")
    assert qemu("img", "convert", "-m", n, "-O", "raw", src, dst, check=False).returncode == 1
    r = img("convert", "-m", n, "-f", "raw", "-O", "raw", src, dst)
    assert r.rc == 1 and "Invalid number of coroutines" in _one_clean_line(r.err)
    assert not os.path.exists(dst)
    assert img("convert", "-m", "16", "-f", "raw", "-O", "raw", src, dst).rc == 0


@pytest.mark.formats("raw", "qcow2")
@pytest.mark.parametrize("fmt,opts", [("qcow2", []), ("raw", ["-o", "preallocation=full"])])
def test_create_on_a_full_disk_names_the_file_and_removes_it(tmp_path, img, monkeypatch,
                                                             fmt, opts) -> None:
    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    path = str(tmp_path / f"full.{fmt}")
    r = img("create", "-q", "-f", fmt, *opts, path, "4M")
    line = _one_clean_line(r.err)
    assert r.rc == 1 and path in line and "No space left on device" in line
    assert not os.path.exists(path)


@pytest.mark.formats("qcow2")
def test_create_with_an_unreachable_data_file_leaves_nothing(tmp_path, img, qemu) -> None:
    missing = str(tmp_path / "missing" / "dir" / "x")
    for tool, name in (("qemu", "theirs.qcow2"), ("vmforge", "ours.qcow2")):
        path = str(tmp_path / name)
        args = ("create", "-q", "-f", "qcow2", "-o", f"data_file={missing}", path, "1M")
        if tool == "qemu":
            assert qemu("img", *args, check=False).returncode == 1
        else:
            r = img(*args)
            assert r.rc == 1 and missing in _one_clean_line(r.err)
        assert not os.path.exists(path), tool


@pytest.mark.formats("raw")
def test_resize_of_a_device_file(img, qemu) -> None:
    assert qemu("img", "resize", "-f", "raw", "/dev/null", "1M", check=False).returncode == 1
    r = img("resize", "-f", "raw", "/dev/null", "1M")
    line = _one_clean_line(r.err)
    assert r.rc == 1 and "/dev/null" in line and "device" in line


@pytest.mark.formats("qcow2")
def test_an_image_marked_corrupt_gets_one_warning_line(tmp_path, qemu) -> None:
    path = str(tmp_path / "c.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", path, "1M")
    with open(path, "r+b") as f:          # incompatible feature bit 1: corrupt
        f.seek(72)
        f.write((2).to_bytes(8, "big"))
    r = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "img", "info", path],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "corrupt: true" in r.stdout
    line = _one_clean_line(r.stderr)
    assert "marked corrupt" in line and path in line
    assert "RuntimeWarning" not in r.stderr and ".py:" not in r.stderr


@pytest.mark.formats("raw")
def test_raw_of_odd_length_is_whole_sectors_like_qemu(tmp_path, img, qemu) -> None:
    src = tmp_path / "odd.raw"
    src.write_bytes(bytes(range(123)))
    qemu("img", "convert", "-f", "raw", "-O", "raw", str(src), str(tmp_path / "theirs.raw"))
    assert img("convert", "-f", "raw", "-O", "raw", str(src), str(tmp_path / "ours.raw")).rc == 0
    theirs = (tmp_path / "theirs.raw").read_bytes()
    assert len(theirs) == 512 and (tmp_path / "ours.raw").read_bytes() == theirs
    ours = img("info", "--output", "json", "-f", "raw", str(src)).json()
    assert ours["virtual-size"] == 512
    assert img("map", "--output", "json", "-f", "raw", str(src)).out == qemu(
        "img", "map", "--output", "json", "-f", "raw", str(src)).stdout
