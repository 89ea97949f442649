"""A monolithic vmdk's block status is its one extent's, as it is: the same extents
the general path (each extent's runs, named and merged again) gives, without a second
merge per extent (``convert`` asks for thousands)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import vmforge_vmdk.driver as vmdk_driver
from vmforge.block.mapped import merge_extents
from vmforge.testing.qemu_tools import needs_qemu, qemu_img
from vmforge_vmdk import Vmdk

pytestmark = needs_qemu
MiB = 1 << 20


def _image(tmp_path: Path, opts: str) -> Path:
    """Seeded data with zeros and holes in and across grains, made by qemu-img."""
    rng = random.Random(3)
    data = bytearray(rng.randbytes(6 * MiB))
    for _ in range(40):
        at = rng.randrange(0, 6 * MiB - 256 * 1024)
        data[at:at + rng.choice((4096, 65536, 200 * 1024))] = bytes(
            rng.choice((4096, 65536, 200 * 1024)))
    data[MiB:2 * MiB + 4096] = bytes(MiB + 4096)
    raw, img = tmp_path / "a.raw", tmp_path / "a.vmdk"
    raw.write_bytes(data)
    qemu_img("convert", "-f", "raw", "-O", "vmdk", *(["-o", opts] if opts else []),
             str(raw), str(img))
    return img


def _key(e: object) -> tuple[object, ...]:
    return (e.offset, e.length, int(e.status), e.host_offset, e.depth,  # type: ignore[attr-defined]
            e.filename)  # type: ignore[attr-defined]


@pytest.mark.parametrize("opts", ["", "zeroed_grain=on", "subformat=monolithicFlat",
                                  "subformat=streamOptimized",
                                  "subformat=twoGbMaxExtentSparse"])
def test_the_same_extents_as_the_general_path(tmp_path: Path, opts: str) -> None:
    img = _image(tmp_path, opts)
    with Vmdk.open(str(img)) as drv:
        rng = random.Random(5)
        ranges = [(0, drv.size)] + [
            (a, rng.randrange(1, drv.size - a + 1))
            for a in (rng.randrange(0, drv.size) for _ in range(30))]
        for offset, length in ranges:
            general = merge_extents(drv._runs(offset, length), drv.filename)
            assert [_key(e) for e in drv.block_status(offset, length)] == [
                _key(e) for e in general]


def test_a_monolithic_image_merges_once(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its extent's merged extents are not merged a second time (before: they were)."""
    img = _image(tmp_path, "")
    calls: list[int] = []

    def counted(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        return merge_extents(*args)

    monkeypatch.setattr(vmdk_driver, "merge_extents", counted)
    with Vmdk.open(str(img)) as drv:
        extents = list(drv.block_status(0, drv.size))
    assert len(extents) > 3 and not calls
