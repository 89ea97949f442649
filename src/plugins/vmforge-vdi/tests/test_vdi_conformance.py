"""The vdi format passes vmforge's conformance kit (dynamic and static images)."""

from vmforge.testing.blockkit import BlockDriverConformance


class TestVdiDynamicConformance(BlockDriverConformance):
    format_name = "vdi"


class TestVdiStaticConformance(BlockDriverConformance):
    format_name = "vdi"
    create_kwargs = {"static": True}
