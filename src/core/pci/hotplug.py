"""Devices by id and PCI hot-plug on a machine with a PCIe host bridge (QEMU's qdev
``id=``, ``/machine/peripheral``, ``bus=``, the PCIe slot hot-plug handler).

A board plugs its ``-device`` functions with :func:`plug_pci` (``hotplugged=False``)
and QMP's ``device_add`` with ``hotplugged=True``; both name the bus as QEMU does:
``pcie.0`` (the host's bus 0) or the ``id=`` of a ``pcie-root-port`` (its secondary
bus).  Only a root port's slot takes a device while the machine runs; the root bus
does not (QEMU: "Bus 'pcie.0' does not support hotplugging").

:func:`register` records a device under its id (:func:`peripherals`), names a root
port's bus after it, checks the port's chassis/slot pair is unique, and arranges
that a function the guest lets go is reported: DEVICE_DELETED goes to the machine's
state listeners (the QMP servers) -- and the ``-drive`` it used is gone with it, as
QEMU deletes it --, with QEMU's data -- ``{"path":
".../virtio-backend"}`` first for a virtio function, then ``{"device": id, "path":
"/machine/peripheral/ID"}``.
"""

from __future__ import annotations

import itertools

from vmforge.errors import VmforgeError
from vmforge.pci.bridge import PciBridge, SecondaryBus
from vmforge.pci.bus import PciBus
from vmforge.pci.device import PciDevice
from vmforge.pci.root_port import HotplugError, PcieRootPort

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PERIPHERAL", "PlugError", "deleted_drives", "device_deleted", "device_path",
           "find_pci_bus",
           "peripherals", "plug_pci", "register", "unplug_request", "valid_id"]

PERIPHERAL = "/machine/peripheral"
PERIPHERAL_ANON = "/machine/peripheral-anon"
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ID_CHARS = _LETTERS | frozenset("0123456789._-")
_anon = itertools.count()


class PlugError(VmforgeError):
    """A device that cannot be plugged or unplugged, in QEMU's words."""


def valid_id(ident: str) -> bool:
    """QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'."""
    return bool(ident) and ident[0] in _LETTERS and _ID_CHARS.issuperset(ident)


def peripherals(machine: Any) -> dict[str, Any]:
    """The machine's devices by id (QEMU's ``/machine/peripheral``)."""
    table = getattr(machine, "peripherals", None)
    if table is None:
        table = {}
        machine.peripherals = table
    return table


def deleted_drives(machine: Any) -> set[str]:
    """Ids of ``-drive``s gone with the device that used them."""
    gone = getattr(machine, "deleted_drives", None)
    if gone is None:
        gone = set()
        machine.deleted_drives = gone
    return gone


def device_path(dev: Any) -> str:
    """QEMU's canonical path of a device: under peripheral by id, else anonymous."""
    ident = getattr(dev, "qdev_id", None)
    if ident:
        return f"{PERIPHERAL}/{ident}"
    anon = getattr(dev, "qdev_anon", None)
    if anon is None:
        anon = dev.qdev_anon = next(_anon)
    return f"{PERIPHERAL_ANON}/device[{anon}]"


def _buses(bus: PciBus) -> list[PciBus]:
    out = [bus]
    for dev in list(bus.devices.values()):
        if isinstance(dev, PciBridge):
            out += _buses(dev.secondary)
    return out


def find_pci_bus(host_bus: PciBus, name: str) -> PciBus | None:
    """The bus called ``name`` under the host's bus 0 (itself included)."""
    for bus in _buses(host_bus):
        if bus.name == name:
            return bus
    return None


def register(machine: Any, dev: Any, ident: str | None) -> None:
    """Record ``dev`` under ``ident`` (None: an anonymous device)."""
    table = peripherals(machine)
    if ident is not None:
        if not valid_id(ident):
            raise PlugError("Parameter 'id' expects an identifier")
        if ident in table:
            raise PlugError(f"Duplicate device ID '{ident}'")
    if isinstance(dev, PcieRootPort):
        for other in table.values():
            if isinstance(other, PcieRootPort) and (other.chassis, other.slot) == (
                    dev.chassis, dev.slot):
                raise PlugError("Can't add chassis slot, error -16")
        if ident is not None:
            dev.secondary.name = ident      # QEMU: the bridge's bus takes its id
        dev.on_unplugged = lambda gone: device_deleted(machine, gone)
    dev.qdev_id = ident
    if ident is not None:
        table[ident] = dev


def device_deleted(machine: Any, dev: Any) -> None:
    """``dev`` left the machine: forget its id, tell the listeners (DEVICE_DELETED)."""
    table = peripherals(machine)
    for key, value in list(table.items()):
        if value is dev:
            del table[key]
    drive = getattr(dev, "qdev_drive", None)
    if drive:           # QEMU deletes a -drive with the device that used it (auto_del)
        deleted_drives(machine).add(drive)
    path = device_path(dev)
    events: list[dict[str, Any]] = []
    if getattr(dev, "dev", None) is not None:           # a virtio function's backend
        events.append({"path": f"{path}/virtio-backend"})
    ident = getattr(dev, "qdev_id", None)
    events.append({"device": ident, "path": path} if ident else {"path": path})
    for data in events:
        for listener in list(machine.state_listeners):
            listener("DEVICE_DELETED", data)


def plug_pci(host_bus: PciBus, dev: PciDevice, bus_name: str | None, *,
             hotplugged: bool) -> None:
    """Plug ``dev`` on the bus named ``bus_name`` (None: bus 0) -- at start, or into
    a running machine (only a root port's slot)."""
    name = host_bus.name if bus_name is None else bus_name
    bus = find_pci_bus(host_bus, name)
    if bus is None:
        raise PlugError(f"Bus '{name}' not found")
    port = bus.bridge if isinstance(bus, SecondaryBus) else None
    try:
        if isinstance(port, PcieRootPort):
            if hotplugged:
                port.hot_plug(dev)
            else:
                port.check_plug(dev)
                port.cold_plug(dev)
            return
        if hotplugged:
            raise PlugError(f"Bus '{name}' does not support hotplugging")
        bus.plug(dev)
    except HotplugError as exc:
        raise PlugError(str(exc)) from None
    except ValueError as exc:
        raise PlugError(str(exc)) from None


def unplug_request(host_bus: PciBus, dev: Any) -> bool:
    """``device_del``: ask for ``dev`` to go; True if it went at once (an unpowered
    slot), False if the guest was asked (the attention button)."""
    bus = getattr(dev, "bus", None)
    port = bus.bridge if isinstance(bus, SecondaryBus) else None
    if not isinstance(port, PcieRootPort):
        name = bus.name if isinstance(bus, PciBus) else host_bus.name
        raise PlugError(f"Bus '{name}' does not support hotplugging")
    try:
        return port.unplug_request(dev)
    except HotplugError as exc:
        raise PlugError(str(exc)) from None
