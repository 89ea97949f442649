"""The vmdk format passes vmforge's conformance kit, in each of its subformats."""

from pathlib import Path

import pytest

from vmforge.block.driver import BlockDriver, BlockError
from vmforge.testing.blockkit import BlockDriverConformance, KitSetup


class _FlatConformance(BlockDriverConformance):
    """Flat images have no backing files (as qemu-img): the kit's copy-on-write test
    becomes a test that the option is refused, leaving no file."""

    def test_backing_file_copy_on_write(self, driver_cls: type[BlockDriver], kit: KitSetup,
                                        written: tuple[str, bytearray],
                                        tmp_path: Path) -> None:
        overlay = tmp_path / "overlay.vmdk"
        with pytest.raises(BlockError, match="Flat image can't have backing file"):
            driver_cls.create(str(overlay), self.image_size,
                              **dict(kit.create_options, backing_file=written[0]))
        assert not overlay.exists()


class TestVmdkMonolithicSparseConformance(BlockDriverConformance):
    format_name = "vmdk"


class TestVmdkZeroedGrainConformance(BlockDriverConformance):
    format_name = "vmdk"
    create_kwargs = {"zeroed_grain": True}


class TestVmdkMonolithicFlatConformance(_FlatConformance):
    format_name = "vmdk"
    create_kwargs = {"subformat": "monolithicFlat"}


class TestVmdkTwoGbSparseConformance(BlockDriverConformance):
    format_name = "vmdk"
    create_kwargs = {"subformat": "twoGbMaxExtentSparse"}


class TestVmdkTwoGbFlatConformance(_FlatConformance):
    format_name = "vmdk"
    create_kwargs = {"subformat": "twoGbMaxExtentFlat"}


class TestVmdkStreamOptimizedConformance(BlockDriverConformance):
    format_name = "vmdk"
    create_kwargs = {"subformat": "streamOptimized"}
