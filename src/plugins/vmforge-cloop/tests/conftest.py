"""Make the cloop test helpers (``cloop_images``) importable, and give the
conformance kit its image builder (``pytest --vmforge-format cloop`` with this
folder on the command line)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cloop_images import build_cloop


@pytest.hookimpl(optionalhook=True)   # (a hook of vmforge's pytest plugin)
def pytest_vmforge_build_image(format_name: str, path: str, data: bytes) -> bool | None:
    if format_name != "cloop":
        return None
    # the kit's sizes are multiples of 512; a cloop disk is whole blocks
    build_cloop(path, data, block_size=512)
    return True
