"""Make the bochs test helpers (``bochs_images``) importable, and give the
conformance kit its image builder (``pytest --vmforge-format bochs`` with this
folder on the command line)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bochs_images import build_bochs


@pytest.hookimpl(optionalhook=True)   # (a hook of vmforge's pytest plugin)
def pytest_vmforge_build_image(format_name: str, path: str, data: bytes) -> bool | None:
    if format_name != "bochs":
        return None
    build_bochs(path, data)
    return True
