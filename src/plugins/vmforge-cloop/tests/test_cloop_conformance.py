"""The cloop format passes vmforge's conformance kit, read-only: images are built
from the kit's data, and every write is refused."""

from cloop_kit import ReadOnlyConformance, build_cloop


class TestCloopConformance(ReadOnlyConformance):
    format_name = "cloop"
    # the kit's sizes are multiples of 512; a cloop disk is whole blocks
    build = staticmethod(lambda path, data: build_cloop(path, data, block_size=512))
