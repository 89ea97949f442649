"""The cloop format passes vmforge's conformance kit in its read-only mode: the
kit's images are built from its data by ``build_cloop``, and writes are refused."""

from cloop_images import build_cloop

from vmforge.testing.blockkit import BlockDriverConformance


class TestCloopConformance(BlockDriverConformance):
    format_name = "cloop"
    # the kit's sizes are multiples of 512; a cloop disk is whole blocks
    build_image = staticmethod(lambda path, data: build_cloop(path, data, block_size=512))

