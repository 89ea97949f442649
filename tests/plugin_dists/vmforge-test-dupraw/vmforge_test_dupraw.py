"""A second distribution claiming the block name raw."""
from vmforge.block.driver import BlockDriver


class OtherRaw(BlockDriver):
    format_name = "raw"
