"""QMP's device hot-plug commands as QEMU 7.2 answers them on riscv ``virt``:
``device_add``, ``device_del`` and ``query-hotpluggable-cpus``.

``device_add driver=virtio-blk-pci,id=hd1,drive=d1,bus=rp0`` puts a function in the
slot of a ``pcie-root-port`` (:mod:`vmforge.pci.hotplug`); the drive is one given at
start with ``-drive if=none,id=d1,...`` and not used by another device.
``device_del id=hd1`` presses the slot's attention button; the device goes when the
guest powers the slot off, and DEVICE_DELETED follows (at once if the slot was
never powered on); the ``-drive`` goes with the device, as in QEMU.  Errors carry
QEMU's words; a second ``device_del`` within five seconds of the first is refused
as QEMU's.

``query-hotpluggable-cpus`` is listed by ``query-commands`` but refused, as QEMU
does on machines without CPU hot-plug (riscv ``virt``, ``microvm``).
"""

from __future__ import annotations

import time
from typing import Any

from vmforge.pci.device import PciDevice
from vmforge.qmp.commands import Command, QmpError, QmpSession

__all__ = ["DEVICE_COMMANDS"]

#: QEMU's pending_deleted_expires_ms: a repeated device_del is refused this long
UNPLUG_PENDING_SECONDS = 5.0


def _host_bus(machine: Any) -> Any:
    host = getattr(machine, "pcie", None)
    if host is None:
        return None
    return host.bus


def _all_functions(bus: Any) -> list[Any]:
    from vmforge.pci.bridge import PciBridge

    out = []
    for dev in list(bus.devices.values()):
        out.append(dev)
        if isinstance(dev, PciBridge):
            out += _all_functions(dev.secondary)
    return out


def _drive_in_use(machine: Any, filename: str) -> bool:
    inner = [getattr(d, "dev", None) for d in machine.devices]
    bus = _host_bus(machine)
    if bus is not None:
        inner += [getattr(f, "dev", None) for f in _all_functions(bus)]
    return any(d is not None and getattr(d, "drive", None) == filename for d in inner)


def _drive_props(machine: Any, driver: str, ident: str) -> dict[str, Any]:
    from vmforge.devspec import _drive_props as props_of
    from vmforge.pci import hotplug

    gone = hotplug.deleted_drives(machine)
    for drive in getattr(machine.config, "drives", []):
        if drive.id == ident and drive.interface == "none" and ident not in gone:
            if _drive_in_use(machine, drive.file):
                raise QmpError(f"Drive '{ident}' is already in use by another device")
            return props_of(drive)
    raise QmpError(f"Property '{_inner_name(driver)}.drive' can't find value '{ident}'")


def _inner_name(driver: str) -> str:
    from vmforge.plugins import registry

    cls = registry().load("device", driver)
    inner = getattr(cls, "device_driver", "")
    return str(inner or driver)


def _device_class(driver: str) -> Any:
    from vmforge.plugins import registry

    try:
        return registry().load("device", driver)
    except Exception:
        raise QmpError(f"'{driver}' is not a valid device model name") from None


def _device_add(s: QmpSession, a: dict[str, Any]) -> Any:
    from vmforge.pci import hotplug

    machine = s.machine
    driver = a["driver"]
    cls = _device_class(driver)
    ident = a.get("id")
    bus_name = a.get("bus")
    for key in ("id", "bus"):
        if key in a and not isinstance(a[key], str):
            raise QmpError(f"Invalid parameter type for '{key}', expected: string")
    if ident is not None and not hotplug.valid_id(ident):
        raise QmpError("Parameter 'id' expects an identifier")
    if ident is not None and ident in hotplug.peripherals(machine):
        raise QmpError(f"Duplicate device ID '{ident}'")
    host_bus = _host_bus(machine)
    if bus_name is not None and (host_bus is None
                                 or hotplug.find_pci_bus(host_bus, bus_name) is None):
        raise QmpError(f"Bus '{bus_name}' not found")
    if host_bus is None or not issubclass(cls, PciDevice):
        raise QmpError(f"Device '{driver}' does not support hotplugging")
    known = cls.properties()
    props: dict[str, Any] = {}
    for key, value in a.items():
        if key in ("driver", "id", "bus"):
            continue
        if key.replace("-", "_") not in known:
            raise QmpError(f"Property '{driver}.{key}' not found")
        if key == "drive":
            props.update(_drive_props(machine, driver, str(value)))
        else:
            props[key.replace("-", "_")] = value
    if "drive" in known and "drive" not in a:
        raise QmpError("drive property not set")
    target = bus_name or host_bus.name
    if hotplug.find_pci_bus(host_bus, target) is host_bus:
        # QEMU refuses before the device is made: the root bus takes no hot-plug
        raise QmpError(f"Bus '{target}' does not support hotplugging")
    try:
        dev = machine.create_device(driver, **props)
    except Exception as exc:
        raise QmpError(str(exc)) from None
    assert isinstance(dev, PciDevice)       # its class was checked above
    if "drive" in a:
        setattr(dev, "qdev_drive", str(a["drive"]))  # noqa: B010 - qdev's, not the model's
    try:
        hotplug.register(machine, dev, ident)
        hotplug.plug_pci(host_bus, dev, target, hotplugged=True)
    except Exception as exc:       # refused, or a back-end that failed: the device goes
        hotplug.peripherals(machine).pop(ident or "", None)
        _discard(dev)
        raise QmpError(str(exc)) from None
    return {}


def _discard(dev: PciDevice) -> None:
    """Undo a device made for nothing: off its bus, its back-ends closed (the
    device inside a virtio function opened its image when it was made)."""
    if dev.bus is not None:
        dev.bus.unplug(dev)
    if dev.realized:
        dev.unrealize()
    inner = getattr(dev, "dev", None)
    if inner is not None:
        inner.unrealize()


def _device_del(s: QmpSession, a: dict[str, Any]) -> Any:
    from vmforge.pci import hotplug

    machine = s.machine
    ident = a["id"]
    dev = hotplug.peripherals(machine).get(ident)
    if dev is None:
        raise QmpError(f"Device '{ident}' not found", "DeviceNotFound")
    host_bus = _host_bus(machine)
    if host_bus is None or not isinstance(dev, PciDevice):
        raise QmpError(f"Bus '{getattr(getattr(dev, 'bus', None), 'name', 'main-system-bus')}'"
                       " does not support hotplugging")
    now = time.monotonic()
    until = getattr(dev, "unplug_pending_until", None)
    if until is not None and now < until:
        raise QmpError(f"Device {ident} is already in the process of unplug")
    try:
        gone = hotplug.unplug_request(host_bus, dev)
    except hotplug.PlugError as exc:
        raise QmpError(str(exc)) from None
    if not gone:
        setattr(dev, "unplug_pending_until", now + UNPLUG_PENDING_SECONDS)  # noqa: B010
    return {}


def _query_hotpluggable_cpus(s: QmpSession, a: dict[str, Any]) -> Any:
    raise QmpError("The feature 'query-hotpluggable-cpus' is not enabled")


class _AnyArguments(dict[str, tuple[str, bool]]):
    """device_add's schema: ``driver``, ``bus`` and ``id``, then any device property
    (QEMU's ``'gen': false``): every name is a member, only ``driver`` is required."""

    def __contains__(self, key: object) -> bool:
        return True


DEVICE_COMMANDS: list[Command] = [
    Command("device_add", _device_add,
            _AnyArguments({"driver": ("string", True)})),
    Command("device_del", _device_del, {"id": ("string", True)}),
    Command("query-hotpluggable-cpus", _query_hotpluggable_cpus),
]
