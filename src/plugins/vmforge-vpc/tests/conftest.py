"""Tell the conformance kit the create option vpc needs (``pytest --vmforge-format
vpc`` with this folder on the command line; elsewhere pass
``--vmforge-create-opt vpc:force_size=on``)."""

from typing import Any

import pytest


@pytest.hookimpl(optionalhook=True)   # (a hook of vmforge's pytest plugin)
def pytest_vmforge_create_options(format_name: str) -> dict[str, Any] | None:
    if format_name != "vpc":
        return None
    # the kit wants the size it asked for, not one rounded up to a CHS geometry
    return {"force_size": True}
