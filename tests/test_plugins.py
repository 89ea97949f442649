"""The plugin registry: entry points, lazy loading, errors naming the culprit."""

from __future__ import annotations

import json
import sys

import pytest

from vmforge.plugins import (
    LoadPolicy,
    PluginConflict,
    PluginError,
    PluginLoadError,
    PluginNotFound,
    Registry,
)


@pytest.fixture
def with_dists(test_dists, monkeypatch):
    monkeypatch.syspath_prepend(str(test_dists))
    for mod in [m for m in sys.modules if m.startswith("vmforge_test_")]:
        monkeypatch.delitem(sys.modules, mod)
    return test_dists


def test_names_come_from_metadata_without_importing(with_dists) -> None:
    reg = Registry()
    names = {(e.kind, e.name, e.dist) for e in reg.entries()}
    assert ("block", "brokenfmt", "vmforge-test-broken") in names
    assert ("block", "raw", "vmforge-raw") in names
    assert ("hooks", "recorder", "vmforge-test-hooks") in names
    assert "vmforge_test_broken" not in sys.modules
    assert "brokenfmt" in reg.names("block")


def test_import_failure_names_distribution_version_entry_point(with_dists) -> None:
    with pytest.raises(PluginLoadError) as info:
        Registry().load("block", "brokenfmt")
    msg = str(info.value)
    for part in ("block plugin 'brokenfmt'", "vmforge_test_broken:Broken",
                 "vmforge-test-broken 0.0.1", "ImportError", "broken on purpose"):
        assert part in msg
    assert info.value.info.dist == "vmforge-test-broken"


def test_two_distributions_one_name(with_dists) -> None:
    reg = Registry()
    with pytest.raises(PluginConflict) as info:
        reg.load("block", "raw")
    assert "vmforge-raw" in str(info.value) and "vmforge-test-dupraw" in str(info.value)
    assert ("block", "raw") in reg.conflicts()
    # blocking one distribution resolves it, as -p no:NAME would
    reg = Registry(LoadPolicy.from_options(["no:vmforge-test-dupraw"], environ={}))
    from vmforge_raw import Raw

    assert reg.load("block", "raw") is Raw


def test_unknown_name_lists_what_is_installed(with_dists) -> None:
    with pytest.raises(PluginNotFound) as info:
        Registry().load("block", "no-such-format")
    assert "no block plugin named 'no-such-format'" in str(info.value)
    assert "raw" in str(info.value) and "brokenfmt" in str(info.value)
    with pytest.raises(PluginError, match="unknown plugin kind"):
        Registry().load("gpu", "x")


def test_wrong_type_and_wrong_api_generation(with_dists) -> None:
    with pytest.raises(PluginLoadError, match=r"not a subclass of vmforge\.device\.Device"):
        Registry().load("device", "notadevice")
    with pytest.raises(PluginLoadError, match="block driver API 0"):
        Registry().load("block", "oldapi")


def test_block_and_autoload_policy(with_dists) -> None:
    blocked = Registry(LoadPolicy.from_options(["no:brokenfmt"], environ={}))
    assert "brokenfmt" not in blocked.names("block")
    with pytest.raises(PluginNotFound, match="it is blocked"):
        blocked.load("block", "brokenfmt")
    off = Registry(LoadPolicy.from_options([], environ={"VMFORGE_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    assert off.names("block") == []
    only_raw = Registry(LoadPolicy.from_options(
        ["vmforge-raw"], environ={"VMFORGE_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    assert only_raw.names("block") == ["raw"]
    env = Registry(LoadPolicy.from_options([], environ={"VMFORGE_PLUGINS": "no:vmforge-raw"}))
    assert "vmforge-raw" not in {e.dist for e in env.entries("block")}


def test_hooks_are_called_and_checked(with_dists, bad_hooks_dist, monkeypatch) -> None:
    reg = Registry()
    reg.hook.vmforge_machine_shutdown(machine="m", reason="poweroff", status=0)
    import vmforge_test_hooks

    assert vmforge_test_hooks.CALLS == [("shutdown", "m", "poweroff")]
    assert "vmforge-test-hooks:recorder" in reg.hook_implementers()["vmforge_machine_shutdown"]
    monkeypatch.syspath_prepend(str(bad_hooks_dist))
    with pytest.raises(PluginLoadError) as info:
        Registry().plugin_manager  # noqa: B018
    assert "vmforge-test-badhooks" in str(info.value)
    assert "vmforge_machine_shutdwn" in str(info.value)


def test_cli_lists_kind_name_distribution_version(test_dists, vmforge_cli) -> None:
    out = vmforge_cli("plugins", "--json", extra_path=test_dists)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    raw = [r for r in rows if r["name"] == "raw"]
    assert {r["distribution"] for r in raw} == {"vmforge-raw", "vmforge-test-dupraw"}
    assert all(r["status"] == "conflict" for r in raw)
    assert all(set(r) >= {"kind", "name", "distribution", "version"} for r in rows)
    human = vmforge_cli("plugins", "--kind", "block", extra_path=test_dists)
    assert human.returncode == 0
    assert human.stdout.splitlines()[0].split() == ["KIND", "NAME", "DISTRIBUTION", "VERSION",
                                                    "STATUS"]
    assert "device" not in human.stdout and "brokenfmt" in human.stdout
    assert "claimed by" in human.stderr


def test_cli_check_reports_broken_plugins(test_dists, vmforge_cli) -> None:
    out = vmforge_cli("plugins", "--check", extra_path=test_dists)
    assert out.returncode == 1
    assert "vmforge-test-broken 0.0.1" in out.stderr and "ImportError" in out.stderr
    ok = vmforge_cli("-p", "no:vmforge-test-broken", "-p", "no:vmforge-test-notaclass",
                     "-p", "no:vmforge-test-dupraw", "plugins", "--check",
                     extra_path=test_dists)
    assert ok.returncode == 0, ok.stderr
    assert "blocked" in ok.stdout


def test_cli_disable_autoload(test_dists, vmforge_cli) -> None:
    out = vmforge_cli("-p", "vmforge-raw", "plugins", "--json", extra_path=test_dists,
                      env={"VMFORGE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    rows = [r for r in json.loads(out.stdout) if r["status"] != "blocked"]
    assert [(r["kind"], r["name"]) for r in rows] == [("block", "raw")]


def test_lifecycle_hooks_from_a_machine(with_dists) -> None:
    from vmforge import plugins

    old = plugins._registry
    plugins._registry = Registry()
    try:
        import vmforge_test_hooks

        vmforge_test_hooks.CALLS.clear()
        board = plugins.registry().load("machine", "countdown")
        from vmforge.config import MachineConfig

        m = board(MachineConfig(machine="countdown",
                                machine_props={"halt": "on", "delay_ms": "20", "exit": "3"}))
        assert m.run(timeout=10) == 3
        kinds = [c[0] for c in vmforge_test_hooks.CALLS]
        assert kinds == ["halt", "panic", "shutdown"]
        assert vmforge_test_hooks.CALLS[1] == ("panic", m, 3)
        assert vmforge_test_hooks.CALLS[2] == ("shutdown", m, "fail")
    finally:
        plugins._registry = old
