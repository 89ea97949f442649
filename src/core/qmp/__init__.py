"""QMP, the QEMU Machine Protocol: ``vmforge run -qmp unix:PATH,server=on,wait=off``.

A JSON protocol for management tools (libvirt, QEMU's ``qemu.qmp`` library,
scripts), answered as QEMU 7.2 answers it: the greeting and capabilities
negotiation, the commands in :data:`~vmforge.qmp.commands.COMMANDS`, the
events STOP, RESUME, RESET, SHUTDOWN and POWERDOWN, QEMU's error classes.
From Python::

    from vmforge.qmp import QmpServer

    with QmpServer(machine, "unix:/run/vm.qmp,server=on,wait=off"):
        machine.run()
"""

from __future__ import annotations

from vmforge.qmp.commands import COMMANDS, QmpError
from vmforge.qmp.server import QmpAddress, QmpServer, QmpSpecError, mon_qmp_spec, parse_qmp_spec

__all__ = ["COMMANDS", "QmpAddress", "QmpError", "QmpServer", "QmpSpecError",
           "mon_qmp_spec", "parse_qmp_spec"]
