"""Make the luks test helpers (``luks_helpers``) importable, and give a
``--vmforge-format luks`` run its create options (the passphrase and a short
PBKDF2 time)."""

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from luks_helpers import KIT_OPTIONS


@pytest.hookimpl(optionalhook=True)   # (a hook of vmforge's pytest plugin)
def pytest_vmforge_create_options(format_name: str) -> dict[str, Any] | None:
    return dict(KIT_OPTIONS) if format_name == "luks" else None
