"""``load_raw`` reads a file straight into guest RAM (no copy through a ``bytes``), and
through :meth:`GuestMemory.load` where that is needed: a ROM, the dirty log on."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmforge.loader import LoaderError, load_raw
from vmforge.memory import GuestMemory

RAM = 0x8000_0000


def _memory() -> GuestMemory:
    mem = GuestMemory()
    mem.add_ram(RAM, 1 << 20)
    mem.add_ram(RAM + (1 << 20), 1 << 20, name="ram2")     # adjacent: a file spans both
    mem.add_ram(0x1000, 0x1000, name="rom", readonly=True)
    return mem


def test_into_ram_without_load(tmp_path: Path, monkeypatch) -> None:
    data = bytes(range(256)) * 8192            # 2 MiB: across both RAM regions
    path = tmp_path / "k"
    path.write_bytes(data[:(1 << 20) + 5000])
    mem = _memory()
    loads: list[int] = []
    monkeypatch.setattr(GuestMemory, "load", lambda self, addr, d: loads.append(addr))
    assert load_raw(mem, str(path), RAM + 100) == (1 << 20) + 5000
    assert loads == []
    assert mem.read(RAM + 100, (1 << 20) + 5000) == data[:(1 << 20) + 5000]
    with pytest.raises(LoaderError, match="do not fit"):
        load_raw(mem, str(path), RAM + (1 << 20))
    with pytest.raises(LoaderError, match="No such file"):
        load_raw(mem, str(tmp_path / "none"), RAM)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert load_raw(mem, str(empty), RAM) == 0


def test_rom_and_dirty_log_go_through_load(tmp_path: Path) -> None:
    path = tmp_path / "fw"
    path.write_bytes(b"\x13\0\0\0" * 64)
    mem = _memory()
    assert load_raw(mem, str(path), 0x1000) == 256           # a ROM: loaders write it
    assert mem.read(0x1000, 256) == path.read_bytes()
    mem._log_start()
    try:
        assert load_raw(mem, str(path), RAM + 0x3000) == 256
        assert mem.read(RAM + 0x3000, 256) == path.read_bytes()
        bitmap = mem._log_take(RAM)
        assert bitmap is not None and bitmap[0] == 1 << 3      # page 0x3000 marked
    finally:
        mem._log_stop()
