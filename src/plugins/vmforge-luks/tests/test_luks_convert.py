"""``img convert -O luks``: a new LUKS image does not read as zeros by itself (its
zeros are encrypted zeros), so the copy writes the source's zeros, once, and the
create writes none (qemu-img's order: luks has no zero init)."""

from __future__ import annotations

from pathlib import Path

import pytest
from luks_helpers import PASSPHRASE, qemu_to_raw

import vmforge_luks.driver as luks_driver
from vmforge.cli.main import main
from vmforge.testing.images import write_mixed
from vmforge.testing.qemu_tools import needs_qemu

MiB = 1 << 20


def _convert(src: Path, dst: Path, *options: str) -> None:
    o = ",".join(["key-secret=sec0", "iter-time=1", *options])
    assert main(["img", "convert", "--object", f"secret,id=sec0,data={PASSPHRASE}",
                 "-f", "raw", "-O", "luks", "-o", o, str(src), str(dst)]) == 0


@needs_qemu
@pytest.mark.parametrize("options", [(), ("zero_fill=off",), ("zero_fill=on",)],
                         ids=["default", "zero_fill-off", "zero_fill-on"])
def test_convert_to_luks_reads_as_the_source(tmp_path: Path, options: tuple[str, ...]) -> None:
    """Whatever ``zero_fill`` says, the target reads as the source, zeros included (with
    ``zero_fill=off`` the zero ranges were skipped: they read as decrypted zeros)."""
    src, dst = tmp_path / "s.raw", tmp_path / "d.luks"
    data = write_mixed(str(src), 4 * MiB)
    _convert(src, dst, *options)
    assert qemu_to_raw(dst, tmp_path / "back.raw") == data


def test_convert_to_luks_writes_the_payload_once(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No encrypted zeros at create (the copy writes every byte of the disk after)."""
    fills: list[tuple[int, int]] = []
    real = luks_driver._fill_zeros

    def spy(fd: int, cipher: object, payload: int, start: int, end: int,
            *rest: int) -> None:
        fills.append((start, end))
        real(fd, cipher, payload, start, end, *rest)   # type: ignore[arg-type]

    monkeypatch.setattr(luks_driver, "_fill_zeros", spy)
    src, dst = tmp_path / "s.raw", tmp_path / "d.luks"
    data = write_mixed(str(src), 2 * MiB)
    _convert(src, dst)
    assert fills == []
    img = luks_driver.Luks.open(str(dst), passphrase=PASSPHRASE)
    try:
        assert img.read(0, len(data)) == data
    finally:
        img.close()
