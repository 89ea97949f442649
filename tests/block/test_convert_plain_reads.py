"""``convert`` reads a qcow2's or qed's data at the host offsets block status found
(``plain_data_fd``), not through the image's mapping a second time; what a format
does not keep plainly (compressed, zero, another file) still goes through ``preadv``."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from vmforge.block import BlockBackend, driver_class, ops
from vmforge.testing.qemu_tools import needs_qemu, qemu_img, qemu_io

pytestmark = [needs_qemu, pytest.mark.formats("qcow2", "qed")]
KiB, MiB = 1 << 10, 1 << 20
SIZE = 8 * MiB
WRITES = ("write -P 0xab 0 100k", "write -z 192k 64k", "write -P 0x11 300k 5",
          "write -P 0x77 2M 3M", "write -P 0x5a 7M 64k")


def _image(tmp_path: Path, fmt: str, *extra: str) -> Path:
    img = tmp_path / f"s.{fmt}"
    qemu_img("create", "-q", "-f", fmt, str(img), str(SIZE))
    qemu_io(img, *WRITES, *extra, fmt=fmt)
    return img


def _convert(src: Path, fmt: str, dst: Path, **kw: object) -> bytes:
    driver_class("raw").create(str(dst), SIZE)
    with BlockBackend.open(str(src), fmt) as s, \
            BlockBackend.open(str(dst), "raw", readonly=False) as t:
        ops.convert([s], t, **kw)  # type: ignore[arg-type]
    return dst.read_bytes()


def _qemu_raw(src: Path, fmt: str, tmp_path: Path) -> bytes:
    out = tmp_path / "q.raw"
    qemu_img("convert", "-f", fmt, "-O", "raw", str(src), str(out))
    return out.read_bytes()


@pytest.mark.parametrize("fmt", ["qcow2", "qed"])
def test_data_is_read_where_block_status_found_it(tmp_path: Path, fmt: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    img = _image(tmp_path, fmt)
    want = _qemu_raw(img, fmt, tmp_path)
    cls = type(BlockBackend.open(str(img), fmt).top)

    def no_reads(*_: object) -> None:
        raise AssertionError("the data was mapped and read through the image")

    monkeypatch.setattr(cls, "preadv", no_reads)
    monkeypatch.setattr(cls, "preadv_runs", no_reads)
    assert _convert(img, fmt, tmp_path / "d.raw") == want


def test_compressed_clusters_still_read_through_the_image(tmp_path: Path) -> None:
    img = _image(tmp_path, "qcow2", "write -c -P 0x5c 6M 64k")
    with BlockBackend.open(str(img), "qcow2") as bb:
        plain = {e.offset: bb.top.plain_data_fd(e) for e in bb.block_status()}
        assert plain[0] == bb.top.data.fd                    # a data cluster
        assert plain[6 * MiB] is None                        # compressed
        assert plain[192 * KiB] is None                      # zeros
    assert _convert(img, "qcow2", tmp_path / "d.raw") == _qemu_raw(img, "qcow2", tmp_path)


def test_a_chain_reads_each_layer_from_its_own_file(tmp_path: Path) -> None:
    base = _image(tmp_path, "qed")
    top = tmp_path / "t.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qed", str(top))
    qemu_io(top, "write -P 0x33 64k 64k", "write -P 0x44 3M 128k", fmt="qcow2")
    assert _convert(top, "qcow2", tmp_path / "d.raw") == _qemu_raw(top, "qcow2", tmp_path)


def test_a_failed_plain_read_is_salvaged_through_the_image(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    img = _image(tmp_path, "qcow2")

    def fails(*_: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ops, "preadv_full", fails)
    with pytest.raises(OSError):
        _convert(img, "qcow2", tmp_path / "d.raw")
    bad: list[int] = []
    out = _convert(img, "qcow2", tmp_path / "e.raw",
                   on_read_error=lambda off, _exc: bad.append(off))
    assert out == _qemu_raw(img, "qcow2", tmp_path) and not bad
