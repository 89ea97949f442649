"""vmforge-serial: an ns16550a UART device plugin for vmforge.

The device class is registered under the entry-point group ``vmforge.device``
as ``ns16550a``; machines get it with ``vmforge.plugins`` or import it directly.
"""

from __future__ import annotations

from vmforge_serial.uart import Ns16550a

__all__ = ["Ns16550a"]
__version__ = "0.1.0"
