"""vmforge-x86-microvm: QEMU's x86 ``microvm`` board on KVM.

- the ``microvm`` machine (:mod:`vmforge_x86_microvm.machine`), ``-M microvm -accel kvm``;
- :mod:`vmforge_x86_microvm.layout`: the address map and interrupt numbers;
- :mod:`vmforge_x86_microvm.mptable`: the Intel MP table that announces the vCPUs
  and the I/O APIC.

Its UART comes from ``vmforge-serial`` (the 8250 at port 0x3f8), ``isa-debug-exit``
from ``vmforge-pc-devices``, the virtio-mmio transports from the core.
"""

from __future__ import annotations

__version__ = "0.1.0"
