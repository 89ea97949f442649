"""A ``vmforge img`` sub-command's command line read without argparse (start-up time).

``import argparse`` brings re, enum, gettext and locale in: ~12 ms of the ~45 ms
``vmforge img info`` takes.  The common command line (known options, their values,
the operands the sub-command takes) is read here, into the namespace argparse would
make of it; anything else (``--help``, an unknown or ambiguous option, a missing or
odd value, an operand too many or too few, an option with its own action) makes
:func:`parse` answer None, and argparse (:class:`vmforge.cli.img_parse.GnuParser`)
reads the line again and words the help or the error as before.

The sub-command's arguments are the ones its ``build`` function adds: it is called
with a :class:`Spec`, which records ``add_argument`` and ``set_defaults`` calls.
Both readers first put the arguments in GNU getopt's order (:func:`permute`).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Protocol

    class ArgumentAdder(Protocol):
        """What a sub-command's ``build`` function adds arguments to: an argparse
        parser or a :class:`Spec`."""

        def add_argument(self, *flags: str, **kwargs: Any) -> Any: ...

        def set_defaults(self, **kwargs: Any) -> None: ...

__all__ = ["Namespace", "Spec", "parse", "permute", "store", "with_defaults"]


def _long_match(name: str, table: dict[str, bool]) -> str | None:
    """The option ``name`` names: itself, or the one long option it is a prefix of."""
    if name in table:
        return name
    found = [s for s in table if s.startswith("--") and s.startswith(name)]
    return found[0] if len(found) == 1 else None


def permute(argv: Sequence[str], table: dict[str, bool], last_operand: bool = False
            ) -> list[str]:
    """``argv`` as getopt sees it: the options, then ``--`` and the operands.

    ``table``: option string -> whether it takes a value; ``last_operand`` takes the
    last argument as an operand before anything else (resize: ``-1G`` is a size)."""
    argv = list(argv)
    tail: list[str] = []
    if last_operand and argv and argv[-1] not in ("--help", "-h"):
        tail = [argv.pop()]
    options: list[str] = []
    operands: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            operands.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            operands.append(arg)
            continue
        options.append(arg)
        if arg.startswith("--"):
            name = _long_match(arg.partition("=")[0], table)
            if "=" not in arg and name is not None and table[name] and i < len(argv):
                options.append(argv[i])
                i += 1
            continue
        for k, ch in enumerate(arg[1:], 1):   # a cluster of short options
            if table.get(f"-{ch}"):
                if k == len(arg) - 1 and i < len(argv):   # its value is the next word
                    options.append(argv[i])
                    i += 1
                break
    operands.extend(tail)
    return options + (["--", *operands] if operands else [])


class Namespace:
    """The parsed command line: argparse's ``Namespace`` (attributes, ``==``, ``in``)."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def __eq__(self, other: object) -> bool:
        return vars(self) == vars(other) if hasattr(other, "__dict__") else NotImplemented

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def __repr__(self) -> str:
        return "Namespace(" + ", ".join(f"{k}={v!r}" for k, v in vars(self).items()) + ")"

    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:      # typed as argparse's: any attribute
        raise AttributeError(f"'Namespace' object has no attribute {name!r}")


class _Unsupported(Exception):
    """An argument or a command line that argparse reads (or refuses) instead."""


#: the ``action`` values :class:`Spec` reads; others (classes) are argparse's
_ACTIONS = {None: "store", "store": "store", "store_true": "store_true",
            "append": "append", "count": "count"}
_KEYS = {"action", "dest", "default", "metavar", "help", "choices", "type", "nargs"}


class _Argument:
    __slots__ = ("action", "choices", "default", "dest", "flags", "nargs", "type")

    def __init__(self, flags: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        if set(kwargs) - _KEYS or kwargs.get("action") not in _ACTIONS:
            raise _Unsupported(flags)
        self.flags = flags
        self.action = _ACTIONS[kwargs.get("action")]
        self.nargs = kwargs.get("nargs")
        self.choices = kwargs.get("choices")
        self.type: Callable[[str], Any] | None = kwargs.get("type")
        if flags[0].startswith("-"):
            long = [f for f in flags if f.startswith("--")]
            self.dest = kwargs.get("dest") or (long or flags)[0].lstrip("-").replace("-", "_")
            if self.nargs is not None or (self.type is not None and self.action != "store"):
                raise _Unsupported(flags)
        else:
            self.dest = kwargs.get("dest") or flags[0]
            if self.action != "store" or self.nargs not in (None, "?", "*", "+"):
                raise _Unsupported(flags)
        default = kwargs.get("default")
        if self.action == "store_true" and default is None:
            default = False
        if isinstance(default, str) and self.type is not None:
            raise _Unsupported(flags)     # argparse converts such a default
        self.default = default

    def takes_value(self) -> bool:
        return self.action in ("store", "append")

    def convert(self, text: str) -> Any:
        try:
            value = self.type(text) if self.type is not None else text
        except (TypeError, ValueError):
            raise _Unsupported(text) from None
        if self.choices is not None and value not in self.choices:
            raise _Unsupported(text)
        return value


class Spec:
    """What a sub-command's ``build`` function adds, recorded (``add_argument``,
    ``set_defaults``); ``supported`` is false when an argument asks for more than
    :func:`parse` reads (its own action class, ``const``, ...)."""

    def __init__(self) -> None:
        self.options: dict[str, _Argument] = {"-h": _HELP, "--help": _HELP}
        self.positionals: list[_Argument] = []
        self.defaults: dict[str, Any] = {}
        self.supported = True

    def add_argument(self, *flags: str, **kwargs: Any) -> None:
        if not self.supported:
            return
        try:
            arg = _Argument(flags, kwargs)
        except _Unsupported:
            self.supported = False
            return
        if flags[0].startswith("-"):
            self.options.update(dict.fromkeys(flags, arg))
        else:
            self.positionals.append(arg)

    def set_defaults(self, **kwargs: Any) -> None:
        self.defaults.update(kwargs)

    def table(self) -> dict[str, bool]:
        """Option string -> whether it takes a value (:func:`permute`'s table)."""
        return {s: a.takes_value() for s, a in self.options.items()}


_HELP = _Argument(("-h", "--help"), {"action": "count"})   # never stored: it answers None


def _option(spec: Spec, token: str) -> tuple[_Argument, str | None]:
    """The option a word names and its value in the same word (``--a=b``, ``-fqcow2``);
    clusters of flags (``-qU``) are split by :func:`_read_options`."""
    if token in spec.options:
        return spec.options[token], None
    if token.startswith("--"):
        name, eq, value = token.partition("=")
        found = [s for s in spec.options if s.startswith(name)]
        if name in spec.options:
            found = [name]
        if len(found) != 1:
            raise _Unsupported(token)
        return spec.options[found[0]], value if eq else None
    if "=" in token or token[:2] not in spec.options:
        raise _Unsupported(token)
    return spec.options[token[:2]], token[2:]


def _read_options(spec: Spec, words: list[str], values: dict[str, Any]) -> list[str]:
    """Store the options at the head of ``words`` (as :func:`permute` left them);
    return the operands after the ``--``."""
    i = 0
    while i < len(words):
        token = words[i]
        i += 1
        if token == "--":
            return words[i:]
        if not token.startswith("-") or token == "-":
            raise _Unsupported(token)      # permute puts no operand here
        arg, attached = _option(spec, token)
        while True:
            if arg is _HELP:
                raise _Unsupported(token)
            if arg.takes_value():
                if attached is None:
                    if i == len(words) or words[i].startswith("-"):
                        raise _Unsupported(token)   # no value, or an option-like one
                    attached = words[i]
                    i += 1
                store(arg, arg.convert(attached), values)
                break
            store(arg, None, values)
            if attached is None:
                break
            if token.startswith("--") or not attached or f"-{attached[0]}" not in spec.options:
                raise _Unsupported(token)    # --flag=value, or an unknown flag after one
            arg, attached = spec.options[f"-{attached[0]}"], attached[1:] or None
    return []


def _assign(positionals: list[_Argument], operands: list[str], values: dict[str, Any]) -> None:
    """Operands to positional arguments as argparse's greedy patterns take them."""
    if "--" in operands:
        raise _Unsupported("--")
    left = list(operands)
    for k, arg in enumerate(positionals):
        needed = sum(1 for a in positionals[k + 1:] if a.nargs in (None, "+"))
        if arg.nargs is None:
            if not left:
                raise _Unsupported(arg.dest)       # a required operand missing
            values[arg.dest] = arg.convert(left.pop(0))
        elif arg.nargs == "?":
            if len(left) > needed:
                values[arg.dest] = arg.convert(left.pop(0))
            else:
                values[arg.dest] = arg.default
        else:
            take = max(0, len(left) - needed)
            if arg.nargs == "+" and take == 0:
                raise _Unsupported(arg.dest)
            if take == 0 and arg.default is not None:
                values[arg.dest] = arg.default
            else:
                values[arg.dest] = [arg.convert(v) for v in left[:take]]
            del left[:take]
    if left:
        raise _Unsupported(left[0])            # an operand too many


def parse(spec: Spec, argv: Sequence[str], last_operand: bool = False) -> dict[str, Any] | None:
    """The values argparse would store for ``argv`` (defaults included), or None when
    argparse must read it (help, an error, an argument :class:`Spec` does not read)."""
    if not spec.supported:
        return None
    values: dict[str, Any] = {}
    try:
        operands = _read_options(spec, permute(argv, spec.table(), last_operand), values)
        _assign(spec.positionals, operands, values)
    except _Unsupported:
        return None
    return with_defaults(spec, values)


def store(arg: _Argument, value: Any, values: dict[str, Any]) -> None:
    """Store one occurrence of option ``arg`` in ``values`` as argparse's action does
    (``value``: the converted value of an option that takes one)."""
    if arg.action == "append":
        values.setdefault(arg.dest, list(arg.default or [])).append(value)
    elif arg.action == "store":
        values[arg.dest] = value
    elif arg.action == "store_true":
        values[arg.dest] = True
    else:                               # count
        values[arg.dest] = values.get(arg.dest, arg.default or 0) + 1


def with_defaults(spec: Spec, values: dict[str, Any]) -> dict[str, Any]:
    """The namespace's values: ``spec``'s defaults, each option's default where the
    command line gave none (a fresh list for a list), then ``values``."""
    out = dict(spec.defaults)
    for arg in {id(a): a for a in spec.options.values() if a is not _HELP}.values():
        out.setdefault(arg.dest, list(arg.default) if isinstance(arg.default, list)
                       else arg.default)
    out.update(values)
    return out
