"""What the ``vmforge img`` sub-commands share: usage errors, sizes, ``-o`` options,
opening an image argument, the ``-p`` progress bar."""

from __future__ import annotations

import os
import struct
import sys

from vmforge.block.backend import BlockBackend
from vmforge.block.driver import BlockError, parse_size
from vmforge.cli import img_objects, img_words
from vmforge.errors import VmforgeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO

PROG = "vmforge img"
#: qemu-img's program name, shown instead of :data:`PROG` in compat mode
QEMU_PROG = "qemu-img"
#: ``VMFORGE_QEMU_IMG_COMPAT=1`` is ``--qemu-img-compat``
COMPAT_ENV = "VMFORGE_QEMU_IMG_COMPAT"
_compat = False


def set_compat(on: bool) -> None:
    """Word messages as qemu-img (``qemu-img: ...``), for ``--qemu-img-compat``."""
    global _compat
    _compat = on


def compat() -> bool:
    """True when messages read exactly as qemu-img's (flag or environment)."""
    return _compat or os.environ.get(COMPAT_ENV, "0") not in ("", "0")


def prog() -> str:
    """The program name that starts each message: ``vmforge img`` or ``qemu-img``."""
    return QEMU_PROG if compat() else PROG


def qprint(quiet: bool, text: str) -> None:
    """qemu-img's ``qprintf``: a line on stdout unless ``-q``."""
    if not quiet:
        print(text)


def error(message: str) -> None:
    """One error line on stderr, after the program prefix (as qemu-img's error_report)."""
    print(f"{prog()}: {message}", file=sys.stderr)


class UsageError(VmforgeError):
    """A wrong combination of arguments."""


# -- small helpers ------------------------------------------------------------------------


def size_to_str(value: int) -> str:
    """qemu's ``size_to_str``: 3 significant digits and a binary unit (``4 MiB``)."""
    # math.frexp's exponent (math is a shared library to load: start-up time)
    exp = int(value / (1000.0 / 1024.0)).bit_length()
    i = max(0, int((exp - 1) / 10))
    i = min(i, 6)
    return f"{value / (1 << (10 * i)):0.3g} {('', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei')[i]}B"


def parse_options(items: list[str]) -> dict[str, str]:
    """``-o a=1,b=2 -o c=3`` -> dict (``,,`` is a literal comma, ``help`` a flag)."""
    out: dict[str, str] = {}
    for item in items:
        for part in item.replace(",,", "\0").split(","):
            part = part.replace("\0", ",").strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            out[key.strip()] = value if sep else ("help" if key.strip() == "help" else "on")
    return out


def open_image(path: str, fmt: str | None, *, readonly: bool = True, force_share: bool = False,
          backing: bool = True, **options: Any) -> BlockBackend:
    """Open an image argument; a failure is ``Could not open 'FILE': ...`` as qemu-img's."""
    from vmforge.plugins import PluginNotFound

    name = path
    path, fmt, extra = img_objects.context().resolve_image(path, fmt)   # --image-opts
    try:
        return BlockBackend.open(path, fmt, readonly=readonly, force_share=force_share,
                                 backing=backing, **extra, **options)
    except (BlockError, PluginNotFound, FileNotFoundError, PermissionError) as exc:
        raise img_words.open_failed(name, exc, fmt) from exc


def size_arg(text: str, bad: Callable[[], Exception] = img_words.bad_create_size) -> int:
    """A SIZE argument; ``bad`` makes the error (qemu-img words it per command)."""
    try:
        value = parse_size(text)
    except ValueError:
        raise bad() from None
    return value


def warn(message: str) -> None:
    """qemu's ``warn_report``: ``PROG: warning: ...`` on stderr."""
    error(f"warning: {message}")


def report(exc: BaseException) -> None:
    """An expected error on stderr: qemu-img's lines exactly in compat mode, else one line."""
    if isinstance(exc, img_words.QemuImgError) and compat():
        text = "\n".join(f"{prog()}: {line}" if prefixed else line
                          for line, prefixed in zip(exc.lines, exc.prefixed, strict=True))
        sys.stderr.write(text + ("\n" if exc.final_newline else ""))
        sys.stderr.flush()
    else:
        error(str(exc))


def _f32(x: float) -> float:
    """``x`` as a C float (qemu-progress.c keeps its percentages in floats)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


class ProgressBar:
    """qemu-img's ``-p``: ``    (42.00/100%)\r`` on stdout, as util/qemu-progress.c prints:
    at 0, at 100 (again at the end), and in between when the percentage moved by more
    than 1 since the last line; :meth:`finish` ends the line."""

    MIN_SKIP = 1.0

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.last = 0.0
        self._show(0.0)      # qemu_progress_print(0, 100) as the operation starts

    def __call__(self, done: int, total: int) -> None:
        if done == 0:
            return           # shown as it started
        current = _f32(min(100.0, 100.0 * done / total if total else 100.0))
        if (current > self.last + self.MIN_SKIP or current < self.last - self.MIN_SKIP
                or current in (0.0, 100.0)):
            self.last = current
            self._show(current)

    def _show(self, current: float) -> None:
        self.stream.write(f"    ({current:3.2f}/100%)\r")
        self.stream.flush()

    def finish(self) -> None:
        self(1, 1)
        self.stream.write("\n")
        self.stream.flush()


def _tdb_hash(name: str) -> int:
    """qobject/qdict.c's ``tdb_hash``: where QEMU's QDict files a key."""
    data = name.encode()
    value = (0x238F13AF * len(data)) & 0xFFFFFFFF
    for i, c in enumerate(data):
        value = (value + (c << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


def qdict_order(obj: Any) -> Any:
    """``obj`` with every dict's keys in the order QEMU's JSON output lists a QDict's:
    by hash bucket (of 512), the later-inserted first within one bucket."""
    if isinstance(obj, list):
        return [qdict_order(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    order = sorted(enumerate(obj), key=lambda ik: (_tdb_hash(ik[1]) % 512, -ik[0]))
    return {k: qdict_order(obj[k]) for _, k in order}


def dump_json(obj: Any) -> None:
    """JSON as qemu-img prints it: 4-space indents, QDict's key order."""
    import json  # here: only --output json needs it (start-up time)

    print(json.dumps(qdict_order(obj), indent=4))



def clock(ns: int) -> str:
    secs, ms = divmod(ns // 1_000_000, 1000)
    mins, s = divmod(secs, 60)
    h, m = divmod(mins, 60)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"



def hexnum(v: int) -> str:
    return f"{v:#x}" if v else "0"


