"""Make the vpc test helpers (``vpc_oracle``) importable, and tell the conformance
kit the create option vpc needs (``pytest --vmforge-format vpc`` with this folder
on the command line; elsewhere pass ``--vmforge-create-opt vpc:force_size=on``)."""

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.hookimpl(optionalhook=True)   # (a hook of vmforge's pytest plugin)
def pytest_vmforge_create_options(format_name: str) -> dict[str, Any] | None:
    if format_name != "vpc":
        return None
    # the kit wants the size it asked for, not one rounded up to a CHS geometry
    return {"force_size": True}
