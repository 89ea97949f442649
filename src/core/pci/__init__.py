"""PCI: a bus, functions with their configuration space, BARs, INTx and MSI-X,
and the generic ECAM host bridge boards place.

- :mod:`vmforge.pci.regs`: the specification's register numbers;
- :mod:`vmforge.pci.device`: :class:`PciDevice`, one function (config space with
  writable / write-1-to-clear masks, BAR sizing and mapping, capabilities, INTx);
- :mod:`vmforge.pci.bus`: :class:`PciBus`, functions by ``devfn``, the memory and
  I/O spaces BARs are mapped into, the INTx swizzle onto four lines, MSI delivery;
- :mod:`vmforge.pci.msix`: :class:`Msix`, the MSI-X capability, table and PBA;
- :mod:`vmforge.pci.host`: :class:`GpexHost` (``gpex-pcihost``): the ECAM
  window, the MMIO/PIO windows, and its device-tree node;
- :mod:`vmforge.pci.guest`: a guest-side driver for tests (ECAM accessors, BAR
  assignment as Linux does it, a virtio-pci driver).

The virtio-pci transport is :mod:`vmforge.virtio.pci`.
"""

from vmforge.pci.bus import PciBus
from vmforge.pci.device import PciBar, PciDevice, PciStateError
from vmforge.pci.host import GpexHost, GpexRoot
from vmforge.pci.msix import Msix

__all__ = ["GpexHost", "GpexRoot", "Msix", "PciBar", "PciBus", "PciDevice", "PciStateError"]
