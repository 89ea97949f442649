"""The vpc format passes vmforge's conformance kit (dynamic and fixed images)."""

from vmforge.block.driver import BlockDriver
from vmforge.testing.blockkit import BlockDriverConformance


class TestVpcDynamicConformance(BlockDriverConformance):
    format_name = "vpc"
    # the kit wants the size it asked for: no rounding up to a CHS geometry
    create_kwargs = {"force_size": True}


class TestVpcFixedConformance(BlockDriverConformance):
    format_name = "vpc"
    create_kwargs = {"force_size": True, "subformat": "fixed"}

    def test_probe_own_header_and_junk(self, driver_cls: type[BlockDriver], image: str) -> None:
        """A fixed image starts with the guest's disk: as QEMU, it is not probed (its
        footer is at the end; a raw disk whose last sector looks like a footer must
        stay raw).  It opens with the format named."""
        with open(image, "rb") as f:
            header = f.read(512)
        assert header == bytes(512)
        assert driver_cls.probe(header, image) == 0
        with driver_cls.open(image) as drv:
            assert drv.size == self.image_size
