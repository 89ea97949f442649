"""Hooks called without pluggy (:mod:`vmforge.hookcall`) answer as pluggy's manager does
on the same plugins; plugins pluggy must see go to pluggy."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pluggy
import pytest

from vmforge import hookcall, hookspecs
from vmforge.hookspecs import PROJECT, hookimpl
from vmforge.plugins import HOOK_COMMANDS_GROUP, PluginLoadError, Registry


def _module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, name, "exec"), vars(module))
    return module


#: plugins that log their calls in CALLS (a module global set by the test)
PLAIN = {
    "a": """
from vmforge.hookspecs import hookimpl
@hookimpl
def vmforge_machine_reset(machine, reason):
    CALLS.append(("a", machine, reason)); return "a"
@hookimpl(trylast=True)
def vmforge_guest_unmapped_access(address):
    CALLS.append(("a", address)); return None
@hookimpl
def vmforge_add_options(parser, command):
    CALLS.append(("a", parser, command)); return "a-opts"
""",
    "b": """
from vmforge.hookspecs import hookimpl
@hookimpl(tryfirst=True)
def vmforge_machine_reset(reason):
    CALLS.append(("b", reason)); return None
@hookimpl
def vmforge_guest_unmapped_access(machine, hart, address, size, is_write, value):
    CALLS.append(("b", address)); return 7
def not_a_hook(x):
    return x
""",
    "c": """
from vmforge.hookspecs import hookimpl
@hookimpl
def vmforge_machine_reset(machine):
    CALLS.append(("c", machine)); return "c"
@hookimpl(tryfirst=True)
def vmforge_guest_unmapped_access(size):
    CALLS.append(("c", size)); return None
@hookimpl
def vmforge_add_options(command):
    CALLS.append(("c", command)); return None
""",
}


def _plugins(sources: dict[str, str], calls: list) -> list[tuple[str, types.ModuleType]]:
    out = []
    for name, source in sources.items():
        module = _module(f"plugin_{name}", source)
        module.CALLS = calls
        out.append((name, module))
    return out


def _pluggy(plugins: list[tuple[str, types.ModuleType]]) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, module in plugins:
        pm.register(module, name=name)
    pm.check_pending()
    return pm


def _relay(plugins: list[tuple[str, types.ModuleType]]) -> hookcall.HookRelay:
    made: list[pluggy.PluginManager] = []
    relay = hookcall.plain_hooks(plugins, hookspecs, PROJECT, lambda: None,
                                 lambda: made.append(_pluggy(plugins)) or made[-1])
    assert relay is not None
    return relay


def test_markers_set_what_pluggys_set() -> None:
    theirs_spec, theirs_impl = pluggy.HookspecMarker(PROJECT), pluggy.HookimplMarker(PROJECT)
    for opts in ({}, {"firstresult": True}, {"historic": True}):
        assert (hookspecs.hookspec(**opts)(lambda: None).vmforge_spec
                == theirs_spec(**opts)(lambda: None).vmforge_spec)
    for opts in ({}, {"tryfirst": True}, {"trylast": True}, {"wrapper": True},
                 {"hookwrapper": True}, {"optionalhook": True}, {"specname": "x"}):
        assert (hookimpl(**opts)(lambda: None).vmforge_impl
                == theirs_impl(**opts)(lambda: None).vmforge_impl)
        assert hookimpl(lambda: None).vmforge_impl == theirs_impl(lambda: None).vmforge_impl
    with pytest.raises(ValueError, match="historic firstresult"):
        hookspecs.hookspec(historic=True, firstresult=True)


def test_plain_calls_answer_as_pluggy() -> None:
    """Order (tryfirst, trylast, last registered first), arguments each asks for, results,
    firstresult, historic calls with their callback, get_hookimpls."""
    mine_calls: list = []
    theirs_calls: list = []
    mine = _relay(_plugins(PLAIN, mine_calls))
    theirs = _pluggy(_plugins(PLAIN, theirs_calls)).hook
    for hook in (mine, theirs):
        kwargs = {"machine": "m", "reason": "guest"}
        assert hook.vmforge_machine_reset(**kwargs) == ["c", "a"]
        assert hook.vmforge_guest_unmapped_access(machine="m", hart="h", address=5, size=4,
                                                  is_write=False, value=0) == 7
        assert hook.vmforge_machine_shutdown(machine="m", reason="r", status=0) == []
        assert hook.vmforge_guest_panic(machine="m", info={}, extra="ignored") == []
        seen: list = []
        hook.vmforge_add_options.call_historic(seen.append, {"parser": "p", "command": "run"})
        assert seen == ["a-opts"]
        assert [i.plugin_name for i in hook.vmforge_machine_reset.get_hookimpls()] == [
            "a", "c", "b"]
        assert hook.vmforge_machine_halt.get_hookimpls() == []
        with pytest.raises(AttributeError):
            hook.vmforge_no_such_hook  # noqa: B018
    assert mine_calls == theirs_calls
    assert mine_calls[:3] == [("b", "guest"), ("c", "m"), ("a", "m", "guest")]


def test_calls_that_are_not_plain_go_to_pluggy() -> None:
    calls: list = []
    plugins = _plugins(PLAIN, calls)
    made: list[pluggy.PluginManager] = []
    relay = hookcall.plain_hooks(plugins, hookspecs, PROJECT,
                                 lambda: made[0] if made else None,
                                 lambda: made.append(_pluggy(plugins)) or made[0])
    assert relay is not None
    with pytest.raises(TypeError, match="positional argument"):
        relay.vmforge_machine_reset("m", "guest")
    assert len(made) == 1                # the manager was made for that call
    # and, once made, every call is pluggy's (tracing, late registrations)
    assert relay.vmforge_machine_reset(machine="m", reason="guest") == ["c", "a"]
    assert relay.vmforge_machine_reset.get_hookimpls() == (
        made[0].hook.vmforge_machine_reset.get_hookimpls())


@pytest.mark.parametrize("source", [
    "@hookimpl(wrapper=True)\ndef vmforge_machine_reset(machine):\n    return (yield)\n",
    "@hookimpl(specname='vmforge_machine_reset')\ndef reset(machine):\n    pass\n",
    "@hookimpl(optionalhook=True)\ndef vmforge_not_specified(machine):\n    pass\n",
    "@hookimpl\ndef vmforge_machine_resett(machine):\n    pass\n",
    "@hookimpl\ndef vmforge_machine_reset(machine, nosuch):\n    pass\n",
    "@hookimpl\ndef vmforge_machine_reset(machine, reason='x'):\n    pass\n",
    "import functools\ndef deco(f):\n    @functools.wraps(f)\n    def g(*a):\n"
    "        return f(*a)\n    return g\n"
    "@hookimpl\n@deco\ndef vmforge_machine_reset(machine):\n    pass\n",
    "class K:\n    @hookimpl\n    def vmforge_machine_reset(self, machine):\n        pass\n"
    "vmforge_machine_reset = K().vmforge_machine_reset\n",
])
def test_plugins_pluggy_must_see_are_not_taken(source: str) -> None:
    module = _module("odd", "from vmforge.hookspecs import hookimpl\n" + source)
    assert hookcall.plain_hooks([("odd", module)], hookspecs, PROJECT, lambda: None,
                                lambda: None) is None  # type: ignore[arg-type,return-value]


def test_manager_made_after_plain_calls_keeps_their_history() -> None:
    """A plugin registered in pluggy's manager after a plain historic call sees it, and
    the plugins that saw it are not called again."""
    calls: list = []
    plugins = _plugins(PLAIN, calls)
    reg = Registry(path=[])
    relay = hookcall.plain_hooks(plugins, hookspecs, PROJECT, lambda: reg._pm,
                                 lambda: reg.plugin_manager)
    assert relay is not None
    relay.vmforge_add_options.call_historic(kwargs={"parser": "p", "command": "run"})
    assert calls == [("c", "run"), ("a", "p", "run")]
    pm = _pluggy(plugins)
    relay.replay_history(pm, [m for _, m in plugins])
    assert len(calls) == 2
    late = _module("late", PLAIN["a"].replace('"a"', '"late"'))
    late.CALLS = calls
    pm.register(late, name="late")
    assert calls[2:] == [("late", "p", "run")]


def _hooks_dist(root: Path, name: str, source: str) -> None:
    module = name.replace("-", "_")
    info = root / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n\n")
    (info / "entry_points.txt").write_text(
        f"[vmforge.hooks]\n{name} = {module}\n\n[{HOOK_COMMANDS_GROUP}]\nrun = {module}\n")
    (root / f"{module}.py").write_text("from vmforge.hookspecs import hookimpl\n" + source)


def test_registry_calls_plain_plugins_without_pluggy(tmp_path: Path, monkeypatch) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    _hooks_dist(good, "vmforge-test-plainhook",
                "@hookimpl\ndef vmforge_machine_reset(machine, reason):\n"
                "    return (machine, reason)\n")
    _hooks_dist(bad, "vmforge-test-typo",
                "@hookimpl\ndef vmforge_machine_resett(machine):\n    pass\n")
    monkeypatch.syspath_prepend(str(good))
    monkeypatch.syspath_prepend(str(bad))
    monkeypatch.delitem(sys.modules, "pluggy")
    reg = Registry(path=[str(good)], command="run")
    assert reg.hook.vmforge_machine_reset(machine="m", reason="guest") == [("m", "guest")]
    assert "pluggy" not in sys.modules
    # a misspelt hook still fails when the plugin loads, naming it (pluggy's check)
    with pytest.raises(PluginLoadError, match="vmforge-test-typo"):
        Registry(path=[str(good), str(bad)], command="run").hook  # noqa: B018


def test_run_with_the_example_hooks_plugin(tmp_path: Path) -> None:
    """The example hooks plugin's option works through plain calls (``vmforge run``
    imports no pluggy for it: tests/test_startup_imports.py)."""
    pytest.importorskip("vmforge_example_hooks")
    pytest.importorskip("vmforge_riscv_virt")
    import json
    import subprocess

    kernel = tmp_path / "Image"
    kernel.write_bytes(bytes(4096))
    log = tmp_path / "events.jsonl"
    out = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "run", "-M", "riscv-virt",
                          "-m", "64M", "-bios", "none", "-kernel", str(kernel), "-nographic",
                          "--event-log", str(log), "--timeout", "0"], capture_output=True,
                         text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 124, out.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    names = [e["event"] for e in events]     # the zeros are an illegal instruction
    assert names[:3] == ["created", "reset", "illegal-instruction"], names
    assert names[-1] == "shutdown" and events[-1]["status"] == 124
