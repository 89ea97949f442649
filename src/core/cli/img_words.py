"""qemu-img 7.2's words for the errors scripts match, in one place.

Each error of ``vmforge img`` that qemu-img also has is raised as a
:class:`QemuImgError` holding qemu-img's lines; ``prefixed`` says which of them
qemu-img starts with its program name (``error_report``) and which it prints
bare (``error_printf``).  With ``--qemu-img-compat`` they are printed exactly
so; otherwise as one line after ``vmforge img:``.
"""

from __future__ import annotations

from vmforge.block.driver import BlockError

__all__ = [
    "QemuImgError",
    "bad_create_size",
    "bad_resize_size",
    "bad_size_option",
    "open_failed",
    "unknown_format",
    "usage",
]


class QemuImgError(BlockError):
    """An error in qemu-img's words: ``lines`` and whether each takes the prefix."""

    def __init__(self, *lines: str, prefixed: tuple[bool, ...] | None = None,
                 final_newline: bool = True) -> None:
        self.lines = lines
        self.prefixed = prefixed or (True,) * len(lines)
        self.final_newline = final_newline     # qemu-img omits a few
        super().__init__(" ".join(lines))


def bad_create_size() -> QemuImgError:
    """create's and measure's invalid SIZE (qemu-img.c: two error_report lines)."""
    return QemuImgError("Invalid image size specified. You may use k, M, G, T, P or E "
                        "suffixes for",
                        "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")


def bad_resize_size() -> QemuImgError:
    """resize's invalid SIZE."""
    return bad_size_option("size")


def bad_size_option(name: str, filename: str | None = None) -> QemuImgError:
    """An invalid size-typed option (QemuOpts' words: one error_report, two bare lines)."""
    where = f"{filename}: " if filename else ""
    return QemuImgError(f"{where}Parameter '{name}' expects a non-negative number below 2^64",
                        "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
                        "tera-, peta-", "and exabytes, respectively.",
                        prefixed=(True, False, False))


def usage(message: str, prog: str) -> QemuImgError:
    """A usage error with qemu-img's hint line."""
    return QemuImgError(message, f"Try '{prog} --help' for more information",
                        prefixed=(True, False))


def unknown_format(name: str, filename: str | None = None) -> QemuImgError:
    """``-f``/``-O`` names no installed format plugin (create/convert's words)."""
    return QemuImgError(f"{filename + ': ' if filename else ''}Unknown file format '{name}'")


#: an error that says the image is not of some format (a pattern of :mod:`re`, imported
#: on the error path only: start-up time)
_NOT_FORMAT = r"^not an? (?:image of the )?(\w+)(?: format)? image\b"


def open_failed(path: str, exc: BaseException, fmt: str | None = None,
                what: str = "Could not open") -> QemuImgError:
    """``Could not open 'FILE': REASON`` as bdrv_open words the usual failures."""
    import re

    from vmforge.plugins import PluginNotFound

    if isinstance(exc, QemuImgError):
        return exc
    if isinstance(exc, PluginNotFound):
        return QemuImgError(f"{what} '{path}': Unknown driver '{exc.name}'")
    text = str(exc)
    name = getattr(exc, "filename", None)
    if name and text.startswith(f"{name}: "):
        text = text[len(name) + 2:]
    if isinstance(exc, OSError):
        text = f"could not open: {exc.strerror or exc}"
    reason = text
    lock = re.match(r'failed to get (shared )?"(\w+)" lock', text, re.I)
    if lock:
        return QemuImgError(f"{what} '{path}': Failed to get {lock.group(1) or ''}"
                            f'"{lock.group(2)}" lock',
                            f"Is another process using the image [{path}]?",
                            prefixed=(True, False))
    m = re.match(r"could not open(?: as \w+)?: (.*)$", text)
    if m:   # raw-posix's own words come first, as QEMU nests them
        reason = f"Could not open '{name or path}': {m.group(1)}"
    elif (m := re.match(_NOT_FORMAT, text, re.I)) is not None:
        reason = f"Image is not in {(fmt or m.group(1)).lower()} format"
    return QemuImgError(f"{what} '{path}': {reason}")
