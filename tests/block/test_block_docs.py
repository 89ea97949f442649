"""The format authors' page documents every part of the driver API (as datasette's
tests hold its hooks to their documentation)."""

from __future__ import annotations

import inspect
from pathlib import Path

from vmforge.block.driver import BlockDriver

PAGE = Path(__file__).resolve().parents[2] / "docs" / "writing-a-disk-format-plugin.md"
#: conveniences and helpers built on the API, not part of what a driver implements
NOT_API = {"read", "write", "parse_create_options", "size", "backing_filename",
           "backing_format"}


def test_every_driver_call_is_documented() -> None:
    text = PAGE.read_text(encoding="utf-8")
    names = {n for n, _ in inspect.getmembers(BlockDriver) if not n.startswith("_")}
    names |= {"sync"}
    missing = sorted(n for n in names - NOT_API if f"`{n}" not in text)
    assert not missing, f"undocumented in {PAGE.name}: {missing}"
