"""``vmforge run``'s command line read without argparse (start-up time).

``import argparse`` brings re, enum, gettext and locale in, and building ``run``'s
parser (~40 options, a help formatter made for each) costs as much again: together
a fifth of ``vmforge run``'s start-up.  The common command line is read here into
the namespace argparse makes of it: every word an option string of ``run``'s parser
as it stands (``-kernel``, ``--timeout``: no abbreviation, no ``-m256M`` nor
``--timeout=5``), the value of one that takes a value the next word, not starting
with ``-``.  Anything else (``--help``, an operand, an unknown option, a missing
or option-like value, a plugin's argument of an action or key not read here) makes
:func:`parse_command_line` answer None, and argparse reads the line again and words
the help or the error as before.

``run``'s arguments are recorded by a :class:`vmforge.cli.img_getopt.Spec` from
:func:`vmforge.cli.run.add_run_arguments`, and hooks plugins add theirs to it
(``vmforge_add_options`` with the spec for a parser: it records ``add_argument`` and
``set_defaults``; a plugin that asks it for more makes argparse read the line, and
is then called again with argparse's parser).
"""

from __future__ import annotations

from vmforge.cli.img_getopt import Spec, store, with_defaults

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["PluginSpec", "parse_command_line", "read"]

#: what stops the fast reader at once
_HELP = ("-h", "--help")


class PluginSpec(Spec):
    """The parser a hooks plugin is given: a :class:`Spec`; anything else it asks for
    (a group, ``prog``, ...) marks it unsupported and answers a stand-in, so the plugin
    runs on and argparse then reads the line."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        self.supported = False

        def stand_in(*args: Any, **kwargs: Any) -> PluginSpec:
            return self

        return stand_in


def read(spec: Spec, argv: Sequence[str]) -> dict[str, Any] | None:
    """The values argparse would store for ``argv`` (defaults included), or None when
    argparse must read it."""
    if not spec.supported or spec.positionals:
        return None
    values: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        arg = spec.options.get(token)
        if arg is None or token in _HELP:
            return None
        value = None
        if arg.takes_value():
            if i == len(argv) or argv[i].startswith("-"):
                return None
            try:
                value = arg.convert(argv[i])
            except Exception:         # a value argparse refuses (it words the error)
                return None
            i += 1
        store(arg, value, values)
    return with_defaults(spec, values)


def parse_command_line(argv: Sequence[str]) -> dict[str, Any] | None:
    """What ``vmforge run``'s parser (with the hooks plugins' options) makes of ``argv``
    (the words after ``run``), or None: argparse reads it."""
    from vmforge.cli.run import add_run_arguments
    from vmforge.plugins import registry

    spec = PluginSpec()
    add_run_arguments(spec)
    try:
        registry().hook.vmforge_add_options.call_historic(
            kwargs={"parser": spec, "command": "run"})
    except Exception:                   # argparse's parser gets the same call
        return None
    return read(spec, argv)
