"""The hooks vmforge calls, for plugins in the entry-point group ``vmforge.hooks``.

These are low-rate, cross-cutting events (pytest's ``hookspec.py`` model): a
machine's life cycle, guest panics, command-line options, the rare guest
events a plugin may want to handle (an illegal instruction, an access no device
decodes).  Hot paths (an instruction, an MMIO access, a descriptor) never go
through them: for those, a script uses ``machine.hooks`` (:mod:`vmforge.debug.hooks`).

A hooks plugin is a module with functions named like the specs below, marked
with :data:`hookimpl`; it may implement any subset, and may omit arguments it
does not use.  pluggy checks the names and arguments when the module is
registered, so a typo fails at once with the plugin's name (the markers are
pluggy's, made here without importing pluggy; plain hooks are called by
:mod:`vmforge.hookcall`, and pluggy is imported only when a plugin needs more)::

    # my_plugin.py, registered as  [project.entry-points."vmforge.hooks"]
    #                              my-tracer = "my_plugin"
    from vmforge.hookspecs import hookimpl

    @hookimpl
    def vmforge_machine_shutdown(machine, reason):
        print(f"{machine.name} stopped: {reason}")

A module declares the commands it extends in the group ``vmforge.hooks.commands``
(``run = "my_plugin"``) and is loaded for those only (:mod:`vmforge.plugins`;
``docs/writing-a-hooks-plugin.md``); one that declares none, for every command.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping
    from typing import Any, TypeVar

    _F = TypeVar("_F", bound=Callable[..., object])

__all__ = ["PROJECT", "HookimplMarker", "HookspecMarker", "hookimpl", "hookspec"]

#: the pluggy project name: markers and the manager use it
PROJECT = "vmforge"


class HookspecMarker:
    """pluggy's ``HookspecMarker``, without importing pluggy (its import, with the
    inspect and typing it brings, is a fifth of ``vmforge run``'s start-up): it sets
    the same ``<project>_spec`` options on the function, which pluggy's manager reads
    (:mod:`vmforge.hookcall` too)."""

    __slots__ = ("project_name",)

    def __init__(self, project_name: str) -> None:
        self.project_name = project_name

    def __call__(self, function: _F | None = None, firstresult: bool = False,
                 historic: bool = False, warn_on_impl: Warning | None = None,
                 warn_on_impl_args: Mapping[str, Warning] | None = None) -> Any:
        if historic and firstresult:
            raise ValueError("cannot have a historic firstresult hook")
        opts = {"firstresult": firstresult, "historic": historic,
                "warn_on_impl": warn_on_impl, "warn_on_impl_args": warn_on_impl_args}

        def mark(func: _F) -> _F:
            setattr(func, self.project_name + "_spec", dict(opts))
            return func

        return mark if function is None else mark(function)


class HookimplMarker:
    """pluggy's ``HookimplMarker``, without importing pluggy: it sets the same
    ``<project>_impl`` options on the function."""

    __slots__ = ("project_name",)

    def __init__(self, project_name: str) -> None:
        self.project_name = project_name

    def __call__(self, function: _F | None = None, hookwrapper: bool = False,
                 optionalhook: bool = False, tryfirst: bool = False, trylast: bool = False,
                 specname: str | None = None, wrapper: bool = False) -> Any:
        opts = {"wrapper": wrapper, "hookwrapper": hookwrapper, "optionalhook": optionalhook,
                "tryfirst": tryfirst, "trylast": trylast, "specname": specname}

        def mark(func: _F) -> _F:
            setattr(func, self.project_name + "_impl", dict(opts))
            return func

        return mark if function is None else mark(function)


hookspec = HookspecMarker(PROJECT)
hookimpl = HookimplMarker(PROJECT)


@hookspec(historic=True)
def vmforge_add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Add options to the parser of the vmforge command ``command`` ("run", "img").

    For a common ``run`` command line ``parser`` is a spec that records
    ``add_argument`` and ``set_defaults`` (:mod:`vmforge.cli.run_getopt`); asking it
    for more makes argparse read the line, and the hook is called again with
    argparse's parser.  Historic: a plugin registered late still sees every parser
    built before.
    """


@hookspec
def vmforge_configure(args: argparse.Namespace, command: str) -> None:
    """The command line of ``command`` was parsed (with the options plugins added
    through :func:`vmforge_add_options`); called before the command runs."""


@hookspec
def vmforge_machine_created(machine: Any) -> None:
    """A machine has been built (devices realized), before its first run."""


@hookspec
def vmforge_machine_reset(machine: Any, reason: str) -> None:
    """The machine was reset (``reason``: "power-on", "guest", "user")."""


@hookspec
def vmforge_machine_halt(machine: Any) -> None:
    """Every CPU is halted (wfi, hlt) and the machine sleeps until an interrupt,
    a timer or input: an idle guest (called once per sleep, so at a low rate)."""


@hookspec
def vmforge_machine_shutdown(machine: Any, reason: str, status: int) -> None:
    """The machine stopped: ``reason`` ("poweroff", "reboot", "fail", "user",
    "error"), ``status`` the exit status vmforge will return."""


@hookspec
def vmforge_guest_panic(machine: Any, info: dict[str, Any]) -> None:
    """The guest reported a failure (a failing finisher or HTIF code, pvpanic):
    ``info`` holds at least ``status``."""


@hookspec(firstresult=True)
def vmforge_guest_illegal_instruction(machine: Any, hart: Any, address: int,
                                      bits: int) -> bool | None:
    """A hart of ``machine`` met an illegal instruction (``bits``) at ``address``,
    before it traps.  True: the plugin emulated it (it changed the registers it
    wanted), the hart goes on after it; None: the guest takes the trap.  Only
    called when some plugin implements it (RISC-V boards)."""


@hookspec(firstresult=True)
def vmforge_guest_unmapped_access(machine: Any, hart: Any, address: int, size: int,
                                  is_write: bool, value: int) -> int | None:
    """A hart accessed a physical ``address`` no device decodes.  An int: what a
    read returns (a write is dropped); None: the access faults, as without the
    plugin.  Only called when some plugin implements it (RISC-V boards)."""
