"""The conformance kit's image builder for a read-only format, from a plugin's
``conftest.py`` (``pytest --vmforge-format NAME`` with that folder on the
command line)::

    from vmforge.testing.builders import build_image_hook
    from myfmt_images import build_myfmt

    pytest_vmforge_build_image = build_image_hook("myfmt", build_myfmt)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vmforge.testing.blockkit import ImageBuilder

__all__ = ["build_image_hook"]


def build_image_hook(name: str, build: ImageBuilder) -> Callable[[str, str, bytes], bool | None]:
    """An implementation of the hook ``pytest_vmforge_build_image`` that builds the
    images of format ``name`` with ``build(path, data)`` (and no other format's)."""

    @pytest.hookimpl(optionalhook=True)   # (a hook of vmforge's pytest plugin)
    def pytest_vmforge_build_image(format_name: str, path: str, data: bytes) -> bool | None:
        if format_name != name:
            return None
        build(path, data)
        return True

    return pytest_vmforge_build_image
