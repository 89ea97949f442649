"""The bochs format passes vmforge's conformance kit in its read-only mode: the
kit's images are built from its data by ``build_bochs``, and writes are refused."""

from bochs_images import build_bochs

from vmforge.testing.blockkit import BlockDriverConformance


class TestBochsConformance(BlockDriverConformance):
    format_name = "bochs"
    build_image = staticmethod(build_bochs)


class TestBochsV1SmallExtentsConformance(BlockDriverConformance):
    format_name = "bochs"
    build_image = staticmethod(lambda path, data: build_bochs(path, data, extent=4096,
                                                              version=1))
