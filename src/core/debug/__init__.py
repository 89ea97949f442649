"""Debugging a running guest: the GDB remote stub (QEMU's ``-s``, ``-S``, ``-gdb``).

:func:`start_gdbstub` is what ``vmforge run`` calls; :class:`GdbStub` is the
stub (``vmforge.debug.gdbstub``) for scripts and tests.
"""

from __future__ import annotations

from vmforge.lazy import lazy_attributes

# the stub (sockets, threads, logging) is imported when first asked for, not with
# the package: a boot without -s/-gdb imports vmforge.debug.hooks alone
TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge.debug.gdbstub import DebugError, GdbStub, parse_gdb_dev
    from vmforge.machine import Machine

__all__ = ["DebugError", "GdbStub", "parse_gdb_dev", "start_gdbstub"]

__getattr__ = lazy_attributes(__name__, dict.fromkeys(
    ("DebugError", "GdbStub", "parse_gdb_dev"), "vmforge.debug.gdbstub"))

#: ``-s``: QEMU's shorthand for ``-gdb tcp::1234`` (here on 127.0.0.1)
DEFAULT_GDB_DEV = "tcp::1234"


def start_gdbstub(machine: Machine, dev: str | None, *, shorthand: bool = False,
                  wait: bool = False) -> GdbStub | None:
    """Start a stub for ``-gdb DEV`` (or ``-s``), and pause the CPUs for ``-S``
    (``wait``) until gdb continues them.  None when neither was asked for."""
    if wait:
        machine.pause()
    if dev is None and not shorthand:
        return None
    from vmforge.debug.gdbstub import GdbStub

    stub = GdbStub(machine)
    try:
        stub.listen(dev or DEFAULT_GDB_DEV)
    except BaseException:
        stub.close()
        raise
    stub.start()
    machine.gdbstub = stub
    return stub
