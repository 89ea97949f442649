"""The vhdx format passes vmforge's conformance kit (dynamic and fixed images)."""

from vmforge.testing.blockkit import BlockDriverConformance


class TestVhdxDynamicConformance(BlockDriverConformance):
    format_name = "vhdx"


class TestVhdxFixedConformance(BlockDriverConformance):
    format_name = "vhdx"
    create_kwargs = {"subformat": "fixed", "block_state_zero": False}


class TestVhdxSmallBlocksConformance(BlockDriverConformance):
    """1 MiB blocks: the kit's 4 MiB image has several, and writes cross them."""

    format_name = "vhdx"
    create_kwargs = {"block_size": 1 << 20}
