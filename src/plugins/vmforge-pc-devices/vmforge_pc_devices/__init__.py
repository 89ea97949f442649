"""vmforge-pc-devices: device models of the PC family (ISA port I/O devices).

- ``isa-debug-exit`` (:class:`IsaDebugExit`): a write ends the machine with
  status ``(value << 1) | 1``, as QEMU's, for test guests.

Port I/O devices are mapped into a machine's I/O space (``machine.io``, an
:class:`~vmforge.memory.AddressSpace` of ports) with :meth:`map_io`.
"""

from __future__ import annotations

from vmforge_pc_devices.debug_exit import IsaDebugExit

__all__ = ["IsaDebugExit"]
__version__ = "0.1.0"
