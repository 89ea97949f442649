"""One rule for vmforge's cache folder, used by the guests' cache and the registry's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmforge import guests, plugins_cache
from vmforge.cachedir import cache_root


def test_the_environment_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VMFORGE_CACHE", str(tmp_path))
    assert cache_root() == str(tmp_path)
    assert guests.cache_dir() == tmp_path
    assert plugins_cache.cache_file(["x"]).startswith(os.path.join(str(tmp_path), "plugins", ""))


@pytest.mark.parametrize("value", [None, ""])
def test_else_the_users_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                              value: str | None) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if value is None:
        monkeypatch.delenv("VMFORGE_CACHE", raising=False)
    else:
        monkeypatch.setenv("VMFORGE_CACHE", value)
    assert cache_root() == str(tmp_path / ".cache" / "vmforge")
    assert guests.cache_dir() == tmp_path / ".cache" / "vmforge"
