"""Start-up: what a command imports (speed itself is measured in benchmarks/bench_startup.py).

Probing asks each format's light probe function (entry point group
``vmforge.block.probe``), so guessing a format imports no driver but the one
chosen; the registry reads entry points without importlib_metadata, and pluggy is
imported only when a hooks plugin that declares the command (or declares none) is
installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.block.probe import probe_format
from vmforge.plugins import HOOK_COMMANDS_GROUP, PROBE_GROUP, Registry
from vmforge.testing.oracles import require_program

#: formats whose drivers pull heavy dependencies in
HEAVY = {"luks": "cryptography", "vhdx": "crc32c"}

_SHOW_MODULES = """
import sys
preloaded = sorted(sys.modules)
from vmforge.cli.main import main
status = main(sys.argv[1:])
modules = sorted(sys.modules)
import json
print(json.dumps([status, modules, preloaded]))
"""


def _modules_after(*argv: str, own: bool = False) -> list[str]:
    """The modules imported after ``vmforge ARGV`` ran in a new interpreter; ``own``:
    not those the interpreter had imported before (an editable install's finders,
    run by ``site``, import re for instance)."""
    out = subprocess.run([sys.executable, "-c", _SHOW_MODULES, *argv], capture_output=True,
                         text=True, check=True).stdout
    status, modules, preloaded = json.loads(out.splitlines()[-1])
    assert status == 0
    return [m for m in modules if m not in preloaded] if own else list(modules)


@pytest.fixture
def qcow2_image(tmp_path: Path) -> str:
    pytest.importorskip("vmforge_qcow2")
    path = tmp_path / "a.qcow2"
    subprocess.run([sys.executable, "-m", "vmforge.cli.main", "img", "create", "-q", "-f",
                    "qcow2", str(path), "1M"], check=True)
    return str(path)


def test_probing_imports_only_the_chosen_driver(qcow2_image: str) -> None:
    modules = _modules_after("img", "info", qcow2_image)
    assert "vmforge_qcow2.driver" in modules
    reg = Registry()
    with_probe = {n for n in reg.names("block") if reg.probe_entry_point(n) is not None}
    assert {"raw", "qcow2", "luks"} <= with_probe
    for fmt in with_probe - {"qcow2"}:
        ep = reg.probe_entry_point(fmt)
        assert ep is not None
        probe_module = ep.value.partition(":")[0]          # vmforge_X.probe
        # asked unless its declared magic is not in the image (tests/block/test_probe_magic.py)
        assert probe_module in modules or reg.probe_magics(fmt) is not None, fmt
        assert probe_module.rpartition(".")[0] + ".driver" not in modules, fmt
    for fmt, dependency in HEAVY.items():
        if fmt in with_probe:
            assert dependency not in modules, dependency


def test_no_importlib_metadata_nor_pluggy_without_hooks_plugins(qcow2_image: str) -> None:
    hooks = [e.dist for e in Registry().entries("hooks")]
    blocks = [arg for dist in hooks for arg in ("-p", f"no:{dist}")]
    modules = _modules_after(*blocks, "img", "info", qcow2_image)
    assert "importlib_metadata" not in modules
    assert "pluggy" not in modules


#: modules ``vmforge img info`` of a qcow2 image never uses, each with what brings it in:
#: other sub-commands' modules, --object's option parser (vmforge.config: fractions,
#: decimal, the clock), convert's copy engine (threads, the zero scanner), --output
#: json and snapshot dates, the qcow2 driver's check, create, amend, snapshot-writing
#: and bitmap code (an image without bitmaps), the block layer's dirty bitmaps (a
#: read-only image tracks none), the RISC-V CPU, threading (the
#: condition a drained section waits on is made by the first one: locks are _thread's)
NOT_FOR_INFO = (
    "vmforge.cli.img_convert", "vmforge.cli.img_create", "vmforge.cli.img_modify",
    "vmforge.cli.img_dd", "vmforge.cli.img_amend", "vmforge.cli.img_bitmap",
    "vmforge.config", "vmforge.clock", "fractions", "decimal",
    "vmforge.block.ops", "concurrent.futures", "queue", "vmforge._fast.zeroscan",
    "json", "datetime", "base64",
    "vmforge_qcow2.check", "vmforge_qcow2.rebuild", "vmforge_qcow2.create",
    "vmforge_qcow2.layout", "vmforge_qcow2.snapshot_write", "vmforge_qcow2.bitmaps",
    "vmforge_qcow2.amend", "vmforge.block.bitmap", "vmforge._fast.riscv", "threading",
)


#: and what ``img info``, ``map`` and ``check`` of a qcow2 image do not import, though an
#: editable install's finders import them before (a regular install's do not): contextlib
#: (the block layer's context managers are :func:`vmforge.lazy.lazy_contextmanager`'s),
#: importlib's package and the warnings it imports (:func:`vmforge.lazy.import_module`),
#: enum and the functools it imports (``BlockStatus`` and ``Perm`` are
#: :class:`vmforge.flags.Flags`, not ``enum.IntFlag``\s), math (a shared library to load)
NOT_FOR_INFO_OWN = ("contextlib", "importlib", "warnings", "enum", "functools", "math")


def test_img_info_imports_nothing_it_does_not_use(qcow2_image: str) -> None:
    hooks = [e.dist for e in Registry().entries("hooks")]   # their own imports aside
    blocks = [arg for dist in hooks for arg in ("-p", f"no:{dist}")]
    for fmt in ([], ["-f", "qcow2"], ["--output", "human"]):
        modules = set(_modules_after(*blocks, "img", "info", *fmt, qcow2_image))
        assert "vmforge_qcow2.driver" in modules
        assert modules.isdisjoint(NOT_FOR_INFO), sorted(modules.intersection(NOT_FOR_INFO))
    for command in (["info"], ["info", "-f", "qcow2"], ["map"], ["check"]):
        again = _imported_again(NOT_FOR_INFO_OWN, *blocks, "img", *command, qcow2_image)
        assert not again, (command, again)


_IMPORTED_AGAIN = """
import json, sys
forget = json.loads(sys.argv.pop(1))
for name in forget:         # as if the interpreter had not imported them
    sys.modules.pop(name, None)
from vmforge.cli.main import main
status = main(sys.argv[1:])
print(json.dumps([status, [m for m in forget if m in sys.modules]]))
"""


def _imported_again(forget: tuple[str, ...], *argv: str) -> list[str]:
    """Which of the modules ``forget`` ``vmforge ARGV`` imports, in a new interpreter
    whose ``site`` may have imported them before (they are dropped first)."""
    out = subprocess.run([sys.executable, "-c", _IMPORTED_AGAIN, json.dumps(forget), *argv],
                         capture_output=True, text=True, check=True).stdout
    status, again = json.loads(out.splitlines()[-1])
    assert status == 0
    return list(again)


#: what ``img info`` of a qed, vmdk or vhdx image does not import (issue #13), as of a
#: qcow2 image: their records are :mod:`vmforge.record`'s, vmdk's descriptor is read by
#: string code, a vmdk CID and a vhdx GUID are made without random and uuid (random is
#: imported to create an image), a mapped image's lock is _thread's; typing's names are
#: the type checker's
NOT_FOR_INFO_OF_FORMATS = ("dataclasses", "re", "threading", "random", "uuid", "typing")


@pytest.mark.parametrize("fmt", ["qed", "vmdk", "vhdx"])
def test_img_info_of_other_formats_imports_no_start_up_weight(tmp_path: Path,
                                                              fmt: str) -> None:
    pytest.importorskip(f"vmforge_{fmt}")
    qemu_img = require_program("qemu-img", "qemu-utils")
    path = str(tmp_path / f"a.{fmt}")
    subprocess.run([qemu_img, "create", "-q", "-f", fmt, path, "1M"], check=True)
    hooks = [e.dist for e in Registry().entries("hooks")]
    blocks = [arg for dist in hooks for arg in ("-p", f"no:{dist}")]
    for command in (["info"], ["info", "-f", fmt]):
        modules = _modules_after(*blocks, "img", *command, path)
        assert f"vmforge_{fmt}.driver" in modules
        again = _imported_again(NOT_FOR_INFO_OF_FORMATS, *blocks, "img", *command, path)
        assert not again, (command, again)


#: what none of ``vmforge img``'s common commands imports (what the interpreter had
#: imported before aside) (hooks plugins blocked: pluggy
#: brings typing and inspect in), each ~2-9 ms of start-up: dataclasses and what it
#: pulls (the block layer's records are :mod:`vmforge.record`'s), logging (a module's
#: logger is :func:`vmforge.lazy.lazy_logger`), typing (names for the type checker
#: only), shutil (argparse's help formatter asks it the terminal's width, once per
#: argument added: :func:`vmforge.cli.parsers.terminal_columns`), the NBD client's sockets
#: (a file's name is told from an NBD export's without them), argparse with the re,
#: gettext and locale it imports (a common command line is read by
#: :mod:`vmforge.cli.img_getopt`; the registry and the block layer use no regular
#: expression on the way)
NOT_AT_START_UP = ("dataclasses", "inspect", "ast", "logging", "traceback", "typing",
                   "shutil", "bz2", "lzma", "socket", "vmforge.block.nbd",
                   "argparse", "re", "gettext", "locale", "vmforge.cli.parsers",
                   "vmforge.cli.img_parse")

#: command lines (``A``: a qcow2 image, ``B``: its raw copy made by convert, ``T``: a
#: new file's name)
START_UP_COMMANDS = (
    ("info", "A"), ("info", "-f", "qcow2", "--output", "human", "A"), ("check", "A"),
    ("map", "A"), ("create", "-q", "-f", "qcow2", "T", "1M"),
    ("create", "-q", "-f", "qcow2", "-b", "A", "-F", "qcow2", "T"),
    ("convert", "-O", "raw", "A", "B"), ("convert", "-O", "qcow2", "A", "T"),
    ("compare", "A", "B"), ("snapshot", "-l", "A"), ("measure", "-O", "qcow2", "A"),
)


@pytest.mark.parametrize("command", START_UP_COMMANDS, ids=" ".join)
def test_img_commands_import_no_start_up_weight(qcow2_image: str, tmp_path: Path,
                                                command: tuple[str, ...]) -> None:
    hooks = [e.dist for e in Registry().entries("hooks")]
    blocks = [arg for dist in hooks for arg in ("-p", f"no:{dist}")]
    raw = str(tmp_path / "b.raw")
    subprocess.run([sys.executable, "-m", "vmforge.cli.main", "img", "convert", "-O", "raw",
                    qcow2_image, raw], check=True)
    names = {"A": qcow2_image, "B": raw, "T": str(tmp_path / "t.qcow2")}
    modules = set(_modules_after(*blocks, "img", *(names.get(a, a) for a in command),
                                 own=True))
    assert modules.isdisjoint(NOT_AT_START_UP), sorted(modules.intersection(NOT_AT_START_UP))


def test_convert_and_compare_import_no_contextlib(qcow2_image: str, tmp_path: Path) -> None:
    """``convert`` and ``compare`` (the file protocol's options are a context-manager
    class, not ``contextlib.contextmanager``'s), and convert not create's
    ``Formatting ...`` line."""
    hooks = [e.dist for e in Registry().entries("hooks")]
    blocks = [arg for dist in hooks for arg in ("-p", f"no:{dist}")]
    raw = str(tmp_path / "b.raw")
    for command in (["convert", "-O", "raw", qcow2_image, raw],
                    ["convert", "-O", "qcow2", qcow2_image, str(tmp_path / "t.qcow2")],
                    ["compare", qcow2_image, raw]):
        assert not _imported_again(("contextlib",), *blocks, "img", *command), command
    modules = _modules_after(*blocks, "img", "convert", "-O", "raw", qcow2_image, raw)
    assert "vmforge.cli.img_formatting" not in modules
    # compare runs no writer thread and scans no data for zeros
    assert not _imported_again(("queue", "threading", "vmforge._fast.zeroscan"), *blocks,
                               "img", "compare", qcow2_image, raw)


def test_lazy_logger_imports_logging_for_its_first_shown_message(qcow2_image: str) -> None:
    """``vmforge img`` sets logging up when a message is first emitted: before that,
    logging is not imported (debug and info messages, which nobody can have asked
    for, are dropped); then the message is worded as ``basicConfig`` was told."""
    code = (
        "import sys\n"
        "from vmforge.cli.main import main\n"
        "from vmforge.block.probe import log\n"
        "assert main(['img', 'info', sys.argv[1]]) == 0\n"
        "log.debug('not shown'); log.info('not shown either')\n"
        "print('logging' in sys.modules, flush=True)\n"
        "log.warning('shown: %s', 42)\n"
        "print('logging' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, qcow2_image], capture_output=True,
                         text=True, check=True)
    assert out.stdout.splitlines()[-2:] == ["False", "True"]
    assert out.stderr == "vmforge: WARNING: vmforge.block.probe: shown: 42\n"
    verbose = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "-v", "-v", "img",
                              "info", qcow2_image], capture_output=True, text=True, check=True)
    assert "vmforge: DEBUG: vmforge.block.probe: probed " in verbose.stderr


def test_lazy_logger_and_deferred_set_up() -> None:
    code = (
        "import sys\n"
        "from vmforge.lazy import defer_logging_setup, lazy_logger\n"
        "log = lazy_logger('a.b')\n"
        "defer_logging_setup(lambda logging: logging.basicConfig(\n"
        "    level=logging.INFO, format='F %(levelname)s %(name)s %(message)s'))\n"
        "log.info('dropped: logging is not imported')\n"
        "assert 'logging' not in sys.modules and log.name == 'a.b'\n"
        "log.error('one %d', 1)\n"
        "log.info('two')\n"
        "assert log.isEnabledFor(20) and log.getEffectiveLevel() == 20\n"
        "defer_logging_setup(lambda logging: print('at once', file=sys.stderr))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stderr == "F ERROR a.b one 1\nF INFO a.b two\nat once\n"
    # a module that imports logging itself (a plugin's driver) gets the set-up too
    code = (
        "import sys\n"
        "from vmforge.lazy import defer_logging_setup\n"
        "defer_logging_setup(lambda logging: logging.basicConfig(format='G %(message)s'))\n"
        "assert 'logging' not in sys.modules\n"
        "import logging\n"
        "logging.getLogger('p').warning('from a plugin')\n"
        "assert 'exec_module' not in vars(logging.__loader__)\n"      # the loader as it was
        "assert '_SetUpOnImport' not in [getattr(f, '__name__', '') for f in sys.meta_path]\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stderr == "G from a plugin\n"


def test_terminal_columns_as_shutil(monkeypatch) -> None:
    import argparse
    import shutil

    from vmforge.cli.parsers import HelpFormatter, terminal_columns

    for columns in ("", "0", "x", "-3", "57", "200"):
        monkeypatch.setenv("COLUMNS", columns)
        assert terminal_columns() == shutil.get_terminal_size().columns, columns
        assert HelpFormatter("p")._width == argparse.HelpFormatter("p")._width, columns
    monkeypatch.delenv("COLUMNS")
    assert terminal_columns() == shutil.get_terminal_size().columns


def test_img_sub_commands_import_their_own_module_only(qcow2_image: str) -> None:
    """Each sub-command's module is imported when that sub-command runs, not before;
    ``--help`` still lists every sub-command."""
    from vmforge.cli.img import SUBCOMMANDS

    # sub-command -> the command modules it needs (snapshot -l prints report's table)
    mine = {"check": {"img_report"}, "map": {"img_report"},
            "snapshot": {"img_modify", "img_report"}}
    others = {h.partition(":")[0] for h, *_ in SUBCOMMANDS.values()}
    for command, needed in mine.items():
        args = ["-l"] if command == "snapshot" else []
        modules = {m.removeprefix("vmforge.cli.")
                   for m in _modules_after("img", command, *args, qcow2_image)}
        assert needed <= modules
        assert modules.isdisjoint(others - needed), (command, others & modules - needed)
    out = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "img", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for command, (_, help_text, *_rest) in SUBCOMMANDS.items():
        assert f"    {command} " in out and help_text.split()[0] in out, command


def test_img_sub_command_parsers_are_built_when_used() -> None:
    from vmforge.cli.img import LazyParser
    from vmforge.cli.img_parse import GnuParser
    from vmforge.cli.main import build_parser

    img = build_parser("img")._subparsers._group_actions[0].choices["img"]
    choices = img._subparsers._group_actions[0].choices
    info, dd = choices["info"], choices["dd"]
    assert isinstance(info, LazyParser) and info._parser is None and dd._parser is None
    assert "--backing-chain" in info.format_help()          # built on first use
    assert isinstance(info.parser(), GnuParser) and dd._parser is None
    assert any("operands" == a.dest for a in dd._actions)    # private names reach it too
    args = img.parse_args(["info", "-f", "qcow2", "x.img"])
    assert (args.img_command, args.format, args.file) == ("info", "qcow2", "x.img")
    assert callable(args.func)


def test_probe_functions_are_the_drivers_probes(tmp_path: Path) -> None:
    """A format's probe entry point answers as its class's probe, on its own images
    and on the others' (each class's probe delegates to the same function)."""
    reg = Registry()
    names = [n for n in reg.names("block") if reg.probe_entry_point(n) is not None]
    assert names, f"no {PROBE_GROUP} entry points installed"
    headers = [b"", bytes(512), b"QFI\xfb\0\0\0\3" + bytes(504), b"LUKS\xba\xbe\0\1" + bytes(504),
               b"vhdxfile" + bytes(504), b"conectix" + bytes(504)]
    path = tmp_path / "x"
    path.write_bytes(bytes(1024))
    for name in names:
        fn = reg.probe_function(name)
        cls = reg.load("block", name)
        for h in headers:
            assert fn(h, str(path)) == cls.probe(h, str(path)), (name, h[:8])
    assert probe_format(str(path)) == "raw"


def test_lazy_attributes_import_on_first_use(tmp_path: Path, monkeypatch) -> None:
    from vmforge.lazy import lazy_attributes

    pkg = tmp_path / "lazypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from vmforge.lazy import lazy_attributes\n"
        "__getattr__ = lazy_attributes(__name__, {'Thing': 'lazypkg.heavy'})\n")
    (pkg / "heavy.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazypkg  # type: ignore[import-not-found]

    assert "lazypkg.heavy" not in sys.modules
    thing = lazypkg.Thing
    assert "lazypkg.heavy" in sys.modules and thing is sys.modules["lazypkg.heavy"].Thing
    assert vars(lazypkg)["Thing"] is thing          # kept: no second lookup
    with pytest.raises(AttributeError, match="no attribute 'Other'"):
        lazypkg.Other  # noqa: B018
    assert callable(lazy_attributes("x", {}))
    for mod in ("lazypkg", "lazypkg.heavy"):
        monkeypatch.delitem(sys.modules, mod)


def _hooks_dist(root: Path, name: str, commands: tuple[str, ...]) -> Path:
    """An installed hooks plugin ``name`` made on the fly under ``root`` (metadata and a
    module that records which of its hooks ran, in the file named by
    ``$VMFORGE_TEST_HOOKS_LOG``), declaring ``commands``."""
    module = name.replace("-", "_")
    info = root / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n\n")
    (info / "entry_points.txt").write_text(
        f"[vmforge.hooks]\n{name} = {module}\n\n[{HOOK_COMMANDS_GROUP}]\n"
        + "".join(f"{command} = {module}\n" for command in commands))
    (root / f"{module}.py").write_text(
        "import os\n"
        "from vmforge.hookspecs import hookimpl\n"
        "def _log(text):\n"
        "    with open(os.environ['VMFORGE_TEST_HOOKS_LOG'], 'a') as f:\n"
        f"        f.write({name!r} + ' ' + text + '\\n')\n"
        "@hookimpl\n"
        "def vmforge_add_options(parser, command):\n"
        "    _log('add_options ' + command)\n"
        "@hookimpl\n"
        "def vmforge_configure(args, command):\n"
        "    _log('configure ' + command)\n")
    return root


def test_img_imports_no_hooks_plugin_declared_for_run(qcow2_image: str) -> None:
    """The example hooks plugin declares ``run`` (:data:`HOOK_COMMANDS_GROUP`): ``vmforge
    img`` imports neither it nor pluggy; ``vmforge run`` and a script still load it."""
    pytest.importorskip("vmforge_example_hooks")
    reg = Registry(command="img")
    example = [e for e in reg.entries("hooks") if e.dist == "vmforge-example-hooks"]
    assert [reg.hook_commands(e) for e in example] == [["run"]]
    assert example[0] not in reg.hook_entries()
    assert example[0] in Registry(command="run").hook_entries()
    assert example[0] in Registry().hook_entries()
    others = [e.dist for e in reg.hook_entries()]   # other installed plugins aside
    blocks = [arg for dist in others for arg in ("-p", f"no:{dist}")]
    modules = _modules_after(*blocks, "img", "info", qcow2_image)
    assert "pluggy" not in modules
    assert not [m for m in modules if m.startswith("vmforge_example_hooks")]


def test_hooks_plugins_load_for_the_commands_they_declare(qcow2_image: str,
                                                          tmp_path: Path, vmforge_cli) -> None:
    """Hooks plugins made on the fly: one declaring ``img`` is called for ``img`` and not
    for ``run``, one declaring ``run`` the other way round, one declaring nothing for
    both (as before commands could be declared)."""
    root = tmp_path / "site"
    _hooks_dist(root, "vmforge-test-img", ("img",))
    _hooks_dist(root, "vmforge-test-runonly", ("run",))
    _hooks_dist(root, "vmforge-test-any", ())
    log = tmp_path / "hooks.log"
    env = {"VMFORGE_TEST_HOOKS_LOG": str(log)}
    out = vmforge_cli("img", "info", qcow2_image, extra_path=root, env=env)
    assert out.returncode == 0, out.stderr
    assert sorted(log.read_text().splitlines()) == [
        "vmforge-test-any add_options img", "vmforge-test-any configure img",
        "vmforge-test-img add_options img", "vmforge-test-img configure img"]
    log.unlink()
    out = vmforge_cli("run", "-M", "nosuchmachine", extra_path=root, env=env)
    assert out.returncode == 1 and "nosuchmachine" in out.stderr
    assert sorted(log.read_text().splitlines()) == [
        "vmforge-test-any add_options run", "vmforge-test-any configure run",
        "vmforge-test-runonly add_options run", "vmforge-test-runonly configure run"]
    # a script (no command) and ``vmforge plugins`` see every one
    reg = Registry(path=[str(root)])
    assert sorted(e.dist for e in reg.hook_entries()) == [
        "vmforge-test-any", "vmforge-test-img", "vmforge-test-runonly"]
    out = vmforge_cli("plugins", "--hooks", extra_path=root, env=env)
    assert out.returncode == 0, out.stderr
    for name in ("vmforge-test-any", "vmforge-test-img", "vmforge-test-runonly"):
        assert f"{name}:{name}" in out.stdout
    out = vmforge_cli("plugins", "--json", "--kind", "hooks", extra_path=root, env=env)
    declared = {row["distribution"]: row["commands"] for row in json.loads(out.stdout)}
    assert {d: declared[d] for d in ("vmforge-test-any", "vmforge-test-img",
                                     "vmforge-test-runonly")} == {
        "vmforge-test-any": None, "vmforge-test-img": ["img"], "vmforge-test-runonly": ["run"]}



_RUN_MODULES = """
import json, sys
import vmforge.cli.run as run
from vmforge.cli.main import main

seen = []
create = run.create_machine
def create_machine(config):
    machine = create(config)
    def stop(timeout=None):          # the guest's first instruction would run here
        seen.extend(sorted(sys.modules))
        return 0
    machine.run = stop
    return machine
run.create_machine = create_machine
status = main(sys.argv[1:])
print(json.dumps([status, seen]))
"""

#: what ``vmforge run -M riscv-virt`` needs none of before its guest starts (a boot
#: without -qmp, -gdb, -d, -blockdev), each with what brings it in: the QMP server
#: and its commands (migration, block jobs, the NBD server: ~30 ms), the GDB stub,
#: the tracers and disassembler, the block layer's node graph; dataclasses (~1 ms a
#: class made: the machine's records are :mod:`vmforge.record`'s), sockets (a
#: ``-chardev socket``'s), fractions and decimal (``-m 1.5G``'s), the thread pool of
#: virtio's workers (made for a device's first request); logging (set up when the
#: first message is emitted, as for ``vmforge img``: the devices' loggers are lazy);
#: pluggy, with the inspect it imports (the example hooks plugin's hooks are called by
#: :mod:`vmforge.hookcall`)
NOT_BEFORE_THE_GUEST = (
    "pluggy", "inspect",
    "vmforge.qmp", "vmforge.qmp.commands", "vmforge.migration.live", "vmforge.migration.channel",
    "vmforge.block.jobs", "vmforge.block.nbd", "vmforge.block.nodes",
    "vmforge.debug.gdbstub", "vmforge.debug.trace", "vmforge.debug.disasm", "dataclasses",
    "socket", "fractions", "decimal", "concurrent.futures", "logging",
)


def test_run_imports_nothing_before_the_guest_starts_it_does_not_use(tmp_path: Path) -> None:
    pytest.importorskip("vmforge_riscv_virt")
    kernel, initrd = tmp_path / "Image", tmp_path / "initrd"
    kernel.write_bytes(bytes(4096))
    initrd.write_bytes(bytes(512))
    out = subprocess.run([sys.executable, "-c", _RUN_MODULES, "run", "-M", "riscv-virt",
                          "-m", "64M", "-bios", "none", "-kernel", str(kernel), "-initrd",
                          str(initrd), "-append", "console=ttyS0", "-nographic"],
                         capture_output=True, text=True, check=True).stdout
    status, modules = json.loads(out.splitlines()[-1])
    assert status == 0
    assert "vmforge_riscv_virt.machine" in modules and "vmforge._fast.riscv" in modules
    unwanted = set(modules).intersection(NOT_BEFORE_THE_GUEST)
    assert not unwanted, sorted(unwanted)


def test_run_sets_logging_up_for_its_first_message(tmp_path: Path) -> None:
    """Without ``-v`` logging is imported by the first message: a guest's read of an
    unassigned address is reported as before, in the command line's format."""
    pytest.importorskip("vmforge_riscv_virt")
    import struct

    # lui t0, 0x200; lw t1, 0(t0); j .   (0x200000: nothing mapped there)
    kernel = tmp_path / "unassigned.bin"
    kernel.write_bytes(struct.pack("<3I", 0x002002B7, 0x0002A303, 0x0000006F))
    out = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "run", "-M", "riscv-virt",
                          "-m", "64M", "-bios", "none", "-kernel", str(kernel), "-nographic",
                          "--timeout", "0.5"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 124, out.stderr
    assert out.stderr.splitlines()[0] == ("vmforge: WARNING: vmforge.memory: riscv-virt: "
                                          "unassigned read of 4 bytes at 0x200000 (reads as 0)")
