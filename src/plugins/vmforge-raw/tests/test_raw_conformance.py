"""The raw format passes vmforge's block-format conformance kit."""

from vmforge.testing.blockkit import BlockDriverConformance


class TestRawConformance(BlockDriverConformance):
    format_name = "raw"
