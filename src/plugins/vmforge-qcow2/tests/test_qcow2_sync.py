"""The block layer's cache=unsafe reaches qcow2: no fdatasync, as qemu-img convert."""

from __future__ import annotations

import os

from vmforge.block.backend import BlockBackend
from vmforge_qcow2 import Qcow2


def test_unsafe_cache_skips_fdatasync(tmp_path, monkeypatch) -> None:
    path = str(tmp_path / "s.qcow2")
    Qcow2.create(path, 8 << 20)
    calls: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    with BlockBackend.open(path, "qcow2", readonly=False, cache="unsafe") as bb:
        assert bb.top.sync is False
        bb.write(0, b"x" * (1 << 20))
        bb.flush()
    assert calls == []
    with BlockBackend.open(path, "qcow2", readonly=False) as bb:
        assert bb.top.sync is True
        bb.write(4096, b"y")
        bb.flush()
    assert calls, "the default cache mode syncs"
    with Qcow2.open(path) as drv:
        assert drv.read(0, 4097) == b"x" * 4096 + b"y"


def test_no_flush_open_option_is_the_same_switch(tmp_path) -> None:
    path = str(tmp_path / "n.qcow2")
    Qcow2.create(path, 1 << 20)
    with Qcow2.open(path, readonly=False, no_flush=True) as drv:
        assert drv.sync is False
        drv.sync = True
        assert drv.f.no_flush is False
