"""Entry points that import but are not what their kind requires."""
from vmforge.block.driver import BlockDriver


def make_device():
    return None


class OldApi(BlockDriver):
    format_name = "oldapi"
    api_version = 0
