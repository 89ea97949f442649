"""argparse's parser and help formatter as ``vmforge``'s commands use them.

Imported when a command line is read by argparse: ``vmforge img``'s common command
lines are read without it (:mod:`vmforge.cli.img_getopt`; argparse brings re, enum,
gettext and locale in).
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ArgumentParser", "HelpFormatter", "terminal_columns"]


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns`` (``COLUMNS``, else the terminal of
    stdout, else 80) without importing :mod:`shutil` (bz2, lzma: ~4 ms of start-up)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, as wide as argparse makes it (the terminal's columns - 2),
    measured with :func:`terminal_columns`: argparse makes one for each argument added."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         terminal_columns() - 2 if width is None else width)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with :class:`HelpFormatter` by default (its sub-parsers too:
    argparse makes them of the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
