"""The registry's scan kept between processes (:mod:`vmforge.plugins_cache`): used
while the path's folders are unchanged, and never hiding a distribution installed,
upgraded or removed since it was written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmforge import plugins, plugins_cache
from vmforge.plugins import Registry


def _dist(site: Path, name: str, entry_points: str) -> Path:
    folder = site / f"{name.replace('-', '_')}-1.0.dist-info"
    folder.mkdir()
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n")
    (folder / "entry_points.txt").write_text(entry_points)
    return folder


def _age(*paths: Path) -> None:
    """As if written a minute ago (the cache trusts no folder changed just now)."""
    old = time.time() - 60
    for p in paths:
        for q in [p, *p.rglob("*")]:
            os.utime(q, (old, old))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VMFORGE_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    site.mkdir()
    _dist(site, "fmt-a", "[vmforge.block]\nfmt-a = fmt_a:Driver\n"
                         "[vmforge.block.probe]\nfmt-a = fmt_a.probe:probe\n")
    _dist(site, "other", "[console_scripts]\nother = other:main\n")
    _age(site)
    return site


def _names(site: Path) -> list[str]:
    return Registry(path=[str(site)], cache=True).names("block")


def _no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def scan(path: object) -> None:
        raise AssertionError("scanned instead of reading the cache")

    monkeypatch.setattr(plugins, "_read_scan", scan)


def test_the_scan_is_kept_and_used(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _names(site) == ["fmt-a"]
    assert os.path.exists(plugins_cache.cache_file([str(site)]))
    _no_scan(monkeypatch)
    reg = Registry(path=[str(site)], cache=True)
    assert reg.names("block") == ["fmt-a"]
    ep = reg.probe_entry_point("fmt-a")
    assert ep is not None and ep.value == "fmt_a.probe:probe"
    assert reg.info("block", "fmt-a").dist == "fmt-a"


def test_a_plugin_installed_after_the_cache_was_written_is_found(site: Path) -> None:
    assert _names(site) == ["fmt-a"]
    _dist(site, "fmt-b", "[vmforge.block]\nfmt-b = fmt_b:Driver\n")
    assert _names(site) == ["fmt-a", "fmt-b"]
    _age(site)
    assert _names(site) == ["fmt-a", "fmt-b"]         # stored again, with it
    assert _names(site) == ["fmt-a", "fmt-b"]


def test_a_removed_plugin_is_gone(site: Path) -> None:
    assert _names(site) == ["fmt-a"]
    for f in (site / "fmt_a-1.0.dist-info").iterdir():
        f.unlink()
    (site / "fmt_a-1.0.dist-info").rmdir()
    assert _names(site) == []


def test_entry_points_rewritten_in_place_are_read(site: Path) -> None:
    assert _names(site) == ["fmt-a"]
    eps = site / "fmt_a-1.0.dist-info" / "entry_points.txt"
    eps.write_text("[vmforge.block]\nfmt-a = fmt_a:Driver\nfmt-a2 = fmt_a:Driver2\n")
    _age(site / "fmt_a-1.0.dist-info")       # the folders' times as before: only the file's
    os.utime(eps, None)
    assert _names(site) == ["fmt-a", "fmt-a2"]


def test_a_folder_changed_just_now_is_not_stored(site: Path) -> None:
    os.utime(site, None)
    assert _names(site) == ["fmt-a"]
    assert not os.path.exists(plugins_cache.cache_file([str(site)]))


def test_a_damaged_or_unwritable_cache_only_means_scanning(
        site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _names(site) == ["fmt-a"]
    Path(plugins_cache.cache_file([str(site)])).write_bytes(b"\x00garbage")
    assert _names(site) == ["fmt-a"]
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("VMFORGE_CACHE", str(blocker))
    assert _names(site) == ["fmt-a"]


def test_explicit_paths_are_not_cached_unless_asked(site: Path) -> None:
    assert Registry(path=[str(site)]).names("block") == ["fmt-a"]
    assert not os.path.exists(plugins_cache.cache_file([str(site)]))


def test_old_cache_files_are_pruned(site: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins_cache, "MAX_FILES", 2)
    sites = []
    for i in range(4):
        other = tmp_path / f"site{i}"
        other.mkdir()
        _age(other)
        sites.append(other)
        Registry(path=[str(other)], cache=True).entries()
    kept = os.listdir(tmp_path / "cache" / "plugins")
    assert len(kept) == 2
    assert os.path.basename(plugins_cache.cache_file([str(sites[-1])])) in kept


_NAMES = "from vmforge.plugins import registry; print(','.join(registry().names('block')))"


def test_sys_path_scan_sees_a_distribution_installed_between_commands(
        site: Path, tmp_path: Path) -> None:
    """``vmforge``'s own registry (``sys.path``, cached by default), across processes."""
    env = {**os.environ, "VMFORGE_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    def names() -> list[str]:
        out = subprocess.run([sys.executable, "-c", _NAMES], env=env, cwd=site,
                             capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.strip().split(",")

    first = names()
    assert "fmt-a" in first and "fmt-b" not in first
    if not (tmp_path / "cache" / "plugins").exists():   # a folder of the path changed just
        time.sleep(plugins_cache.SETTLE_NS / 1e9 + 0.1)  # now (another job installing)
        assert names() == first
    assert len(os.listdir(tmp_path / "cache" / "plugins")) == 1     # written
    assert names() == first
    _dist(site, "fmt-b", "[vmforge.block]\nfmt-b = fmt_b:Driver\n")
    assert names() == sorted([*first, "fmt-b"])


def test_refresh_reads_afresh_and_keeps_it(site: Path, tmp_path: Path) -> None:
    """What the folder times cannot tell (an entry_points.txt of a distribution without
    vmforge entry points rewritten in place): ``refresh`` (``vmforge plugins``) sees it
    and keeps it for the next commands."""
    assert _names(site) == ["fmt-a"]
    eps = site / "other-1.0.dist-info" / "entry_points.txt"
    eps.write_text("[vmforge.block]\nfmt-o = other:Driver\n")     # no folder changes
    os.utime(eps, (time.time() - 30, time.time() - 30))       # (kept once settled)
    assert _names(site) == ["fmt-a"]                           # the kept scan
    refreshed = Registry(path=[str(site)], cache=True, refresh=True).names("block")
    assert refreshed == ["fmt-a", "fmt-o"]
    assert _names(site) == ["fmt-a", "fmt-o"]


def test_vmforge_plugins_reads_afresh(site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "VMFORGE_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    def run(*argv: str) -> str:
        return subprocess.run([sys.executable, *argv], env=env, cwd=site, capture_output=True,
                              text=True, timeout=60).stdout

    names = ["-c", _NAMES]
    assert "fmt-a" in run(*names)
    if not (tmp_path / "cache" / "plugins").exists():
        time.sleep(plugins_cache.SETTLE_NS / 1e9 + 0.1)
        run(*names)
    eps = site / "other-1.0.dist-info" / "entry_points.txt"
    eps.write_text("[vmforge.block]\nfmt-o = other:Driver\n")
    os.utime(eps, (time.time() - 30, time.time() - 30))
    assert "fmt-o" not in run(*names)
    plugins = "from vmforge.cli.main import main; main(['plugins', '--kind', 'block'])"
    assert "fmt-o" in run("-c", plugins)           # (the same sys.path: the same cache)
    assert "fmt-o" in run(*names)


def test_a_cache_file_of_another_shape_is_not_used(site: Path) -> None:
    import marshal

    assert _names(site) == ["fmt-a"]
    target = Path(plugins_cache.cache_file([str(site)]))
    fmt, path, times, files, scan = marshal.loads(target.read_bytes())
    for bad_files, bad_scan in ((7, scan), ([("x",)], scan), (files, 7), (files, [(1, 2)]),
                                (files, [("a", "1", None, [("g", "n")])]),
                                (files, [("a", "1", None, [("g", "n", 3)])])):
        target.write_bytes(marshal.dumps((fmt, path, times, bad_files, bad_scan)))
        assert _names(site) == ["fmt-a"], (bad_files, bad_scan)
