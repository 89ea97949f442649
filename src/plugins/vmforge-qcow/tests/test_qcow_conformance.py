"""The qcow format passes vmforge's conformance kit."""

from vmforge.testing.blockkit import BlockDriverConformance


class TestQcowConformance(BlockDriverConformance):
    format_name = "qcow"
