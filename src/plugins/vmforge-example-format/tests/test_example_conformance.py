"""The example format passes vmforge's conformance kit."""

from vmforge.testing.blockkit import BlockDriverConformance


class TestExampleConformance(BlockDriverConformance):
    format_name = "example"


class TestExampleSmallBlocksConformance(BlockDriverConformance):
    format_name = "example"
    create_kwargs = {"block_size": 4096}
