"""NBD in the block layer: a server exporting BlockBackends and a client opening
exports as images, interoperable with qemu-nbd and QEMU's NBD client.

- :class:`NbdServer` (``vmforge.block.nbd.server``): exports any BlockBackend, a
  running guest's disk too (QMP ``nbd-server-start``/``nbd-server-add``).
- :class:`NbdClient` / :class:`NbdDriver` (``vmforge.block.nbd.client``):
  ``nbd://HOST:PORT/EXPORT``, ``nbd+unix:///EXPORT?socket=PATH``, QEMU's older
  ``nbd:HOST:PORT:exportname=E`` and ``json:{"driver":"nbd",...}`` names open as
  images wherever a file name is taken (:func:`open_nbd_layer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmforge.block.nbd.proto import NbdError, NbdProtocolError
from vmforge.block.nbd.uri import NbdAddress, is_nbd_name, parse_nbd_name, socket_address

if TYPE_CHECKING:
    from vmforge.block.backend import Layer

__all__ = ["NbdAddress", "NbdError", "NbdProtocolError", "create_on_export", "is_nbd_name",
           "open_nbd_layer", "parse_nbd_name", "socket_address"]


def open_nbd_layer(name: str, fmt: str | None, *, readonly: bool) -> Layer:
    """The export ``name`` names, opened as a layer (the raw bytes of the export:
    a format over NBD other than raw is refused)."""
    from vmforge.block.backend import Layer
    from vmforge.block.driver import BlockError
    from vmforge.block.nbd.client import NbdDriver

    if fmt not in (None, "", "raw"):
        raise BlockError(f"format {fmt} over NBD is not supported (the export's bytes "
                         "are opened as raw)", name)
    try:
        driver = NbdDriver.open(name, readonly=readonly)
    except NbdError as exc:
        raise BlockError(str(exc), name) from None
    return Layer(driver, "raw", None)


def create_on_export(name: str, fmt: str | None, size: int) -> None:
    """``create`` onto an export, as QEMU's ``bdrv_co_create_opts_simple`` does for a
    protocol that cannot create: the export must exist and be large enough; its first
    sector is zeroed (so that nothing old is probed as a format)."""
    from vmforge.block.driver import BlockError

    layer = open_nbd_layer(name, fmt, readonly=False)
    try:
        drv = layer.driver
        if drv.size < size:
            raise BlockError("Cannot grow NBD nodes", name)     # (QEMU's nbd truncate)
        drv.write_zeroes(0, min(512, drv.size))
    finally:
        drv.close()
