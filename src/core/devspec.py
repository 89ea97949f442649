"""From QEMU's ``-drive``, ``-device`` and ``-chardev`` to device objects.

A board calls :func:`cmdline_devices` with its :class:`~vmforge.config.MachineConfig`
and gets the devices the command line (or a script's config) asks for, in
QEMU's order: the ``-device`` options first, then one ``virtio-blk`` per
``-drive if=virtio`` (QEMU appends those to the device list).  The board
decides where each goes (a virtio-mmio slot, a PCI slot) from its name.

- ``-drive file=F[,format=,if=virtio|none,id=,readonly=on,cache=]``: with
  ``if=virtio`` a disk of its own; with ``if=none`` it waits for a
  ``-device ...,drive=ID``.  ``-hda F`` is ``-drive file=F,if=virtio``.
- ``-device NAME[,prop=value...]``: any ``vmforge.device`` plugin; ``drive=ID``
  names a ``-drive``, ``chardev=ID`` a ``-chardev``.  QEMU's
  ``-device virtio-serial-device -device virtconsole,chardev=ID`` pair gives the
  console to the serial device before it.
- ``-chardev stdio|null|file,id=ID[,path=P]``,
  ``-chardev socket,id=ID,(path=P|host=H,port=N)[,server=on,wait=off]``, or a
  :class:`~vmforge.chardev.CharBackend` a script puts in ``config.chardevs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vmforge.chardev import CharBackend, SocketChar, chardev_from_spec
from vmforge.config import DeviceSpec, DriveSpec, parse_opts
from vmforge.device import Device, DeviceError
from vmforge.errors import VmforgeError
from vmforge.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ChardevSpec", "DeviceSpecError", "cmdline_devices", "device_help"]

#: the device a ``-drive if=virtio`` becomes: QEMU's alias ``virtio-blk``, which a
#: board resolves (``aliases``) to its transport's device, ``-pci`` or ``-device``
VIRTIO_DRIVE_DEVICE = "virtio-blk"
#: QEMU's short names on boards with PCI (on riscv virt as on most: QEMU_ARCH_VIRTIO_PCI)
PCI_ALIASES = {"virtio-blk": "virtio-blk-pci", "virtio-net": "virtio-net-pci",
               "virtio-rng": "virtio-rng-pci", "virtio-serial": "virtio-serial-pci"}
#: the same names on boards with only virtio-mmio
MMIO_ALIASES = {"virtio-blk": "virtio-blk-device", "virtio-net": "virtio-net-device",
                "virtio-rng": "virtio-rng-device", "virtio-serial": "virtio-serial-device"}
#: QEMU's console port device, merged into the virtio-serial device before it
CONSOLE_PORTS = ("virtconsole", "virtserialport")


class DeviceSpecError(VmforgeError, ValueError):
    """A ``-drive``/``-device``/``-chardev`` that cannot be honoured."""


class ChardevSpec(Record):
    """``-chardev BACKEND,id=ID[,path=...]``."""

    __slots__ = __match_args__ = ("backend", "id", "options")
    backend: str
    id: str
    options: dict[str, str]

    def __init__(self, backend: str, id: str,
                 options: dict[str, str] | None = None) -> None:
        self.backend = backend
        self.id = id
        self.options = {} if options is None else options

    @classmethod
    def parse(cls, text: str) -> ChardevSpec:
        opts = parse_opts(text, implied="backend")
        if "backend" not in opts or "id" not in opts:
            raise DeviceSpecError(f"-chardev {text!r}: needs a back-end and id=")
        return cls(opts.pop("backend"), opts.pop("id"), opts)

    def open(self) -> CharBackend | None:
        if self.backend == "file":
            path = self.options.get("path")
            if not path:
                raise DeviceSpecError(f"-chardev file,id={self.id}: needs path=")
            return chardev_from_spec(f"file:{path}")
        if self.backend in ("stdio", "null"):
            return chardev_from_spec(self.backend)
        if self.backend == "socket":
            opts = self.options
            unknown = set(opts) - {"path", "host", "port", "server", "wait"}
            if unknown:
                raise DeviceSpecError(f"-chardev socket,id={self.id}: unknown option "
                                      f"{sorted(unknown)[0]!r}")
            port = opts.get("port")
            if port is not None and not port.isdigit():
                raise DeviceSpecError(f"-chardev socket,id={self.id}: port={port!r} is "
                                      "not a number")
            return SocketChar(path=opts.get("path"), host=opts.get("host", "127.0.0.1"),
                              port=int(port) if port is not None else None,
                              server=opts.get("server", "off") in ("on", "yes", "true"))
        raise DeviceSpecError(f"-chardev {self.backend}: unknown back-end "
                              "(supported: stdio, null, file, socket)")


def _drive_props(drive: DriveSpec) -> dict[str, Any]:
    props: dict[str, Any] = {"drive": drive.file, "readonly": drive.readonly}
    if drive.format:
        props["format"] = drive.format
    cache = drive.options.get("cache")
    if cache:
        props["cache"] = cache
    unknown = set(drive.options) - {"cache", "index", "media"}
    if unknown:
        raise DeviceSpecError(f"-drive file={drive.file}: unsupported option "
                              f"{sorted(unknown)[0]!r} (file, format, if, id, readonly, cache)")
    return props


def cmdline_devices(drives: list[DriveSpec], devices: list[DeviceSpec],
                    chardevs: Mapping[str, Any],
                    create: Callable[..., Device],
                    own_chardev: Callable[[CharBackend], None] = lambda c: None,
                    aliases: Mapping[str, str] = MMIO_ALIASES,
                    spare_drives: bool = False) -> list[Device]:
    """The devices ``drives`` and ``devices`` ask for, made by ``create(name, **props)``
    (a machine's :meth:`~vmforge.machine.Machine.create_device`).  ``chardevs``
    maps ids to ``-chardev`` text, a :class:`ChardevSpec` or a ready back-end;
    back-ends opened here are handed to ``own_chardev`` (closed with the machine).
    ``aliases`` resolves QEMU's short names (``virtio-blk``, the device of
    ``-drive if=virtio``) to the board's devices (:data:`PCI_ALIASES` where it has
    a PCI bus, as QEMU's riscv virt).  ``spare_drives``: ``if=none`` drives no
    device uses are kept for a later hot-plug (QMP ``device_add``), as QEMU does,
    instead of refused."""
    by_id: dict[str, DriveSpec] = {}
    for d in drives:
        if d.id is not None:
            if d.id in by_id:
                raise DeviceSpecError(f"-drive id={d.id} is given twice")
            by_id[d.id] = d
        if d.interface not in ("virtio", "none"):
            raise DeviceSpecError(f"-drive file={d.file}: if={d.interface} is not supported "
                                  "by this machine (if=virtio or if=none + -device)")
        if d.interface == "none" and d.id is None:
            raise DeviceSpecError(f"-drive file={d.file},if=none needs an id= for -device")
    used: set[str] = set()
    opened: dict[str, CharBackend | None] = {}

    def chardev(ident: str) -> CharBackend | None:
        if ident not in opened:
            if ident not in chardevs:
                raise DeviceSpecError(f"chardev {ident!r} not found (give it with -chardev "
                                      f"...,id={ident})")
            value = chardevs[ident]
            if isinstance(value, CharBackend):
                opened[ident] = value
            else:
                spec = value if isinstance(value, ChardevSpec) else ChardevSpec.parse(value)
                backend = spec.open()
                if backend is not None:
                    own_chardev(backend)
                opened[ident] = backend
        return opened[ident]

    out: list[Device] = []
    try:
        specs = [(DeviceSpec(aliases.get(spec.driver, spec.driver), spec.props), drive)
                 for spec, drive in _specs_in_order(drives, devices)]
        _make_all(out, specs, by_id, used, chardev, create)
    except BaseException:
        for dev in out:         # images and back-ends opened so far are let go
            dev.unrealize()
        raise
    unused = [i for i, d in by_id.items() if d.interface == "none" and i not in used]
    if unused and not spare_drives:
        for dev in out:
            dev.unrealize()
        raise DeviceSpecError(f"-drive id={unused[0]} is not used by any -device")
    return out


def _specs_in_order(drives: list[DriveSpec], devices: list[DeviceSpec],
                   ) -> list[tuple[DeviceSpec, DriveSpec | None]]:
    """QEMU's order: the ``-device`` options, then a disk per ``-drive if=virtio``."""
    return [(spec, None) for spec in devices] + [
        (DeviceSpec(VIRTIO_DRIVE_DEVICE, {}), d) for d in drives if d.interface == "virtio"]


def _make_all(out: list[Device], specs: list[tuple[DeviceSpec, DriveSpec | None]],
              by_id: dict[str, DriveSpec], used: set[str],
              chardev: Callable[[str], CharBackend | None],
              create: Callable[..., Device]) -> None:
    pending_serial: list[int] = []      # virtio-serial devices without a port yet
    for spec, implied_drive in specs:
        if spec.driver in CONSOLE_PORTS:
            if not pending_serial:
                raise DeviceSpecError(f"-device {spec.driver} needs a virtio-serial device "
                                      "before it (-device virtio-serial-device)")
            index = pending_serial.pop()
            ident = spec.props.get("chardev")
            if ident is None:
                raise DeviceSpecError(f"-device {spec.driver}: needs chardev=ID")
            port = out[index]
            set_chardev = getattr(port, "set_chardev", None) or getattr(  # a -pci wrapper's
                getattr(port, "dev", None), "set_chardev", None)            # inner device
            if set_chardev is None:
                raise DeviceSpecError(f"-device {spec.driver}: {out[index].name} has no port")
            set_chardev(chardev(ident))
            continue
        props: dict[str, Any] = {}
        for key, value in spec.props.items():
            if key == "drive":
                drive = by_id.get(value)
                if drive is None:
                    raise DeviceSpecError(f"-device {spec.driver}: drive {value!r} not found "
                                          f"(give it with -drive ...,if=none,id={value})")
                if value in used:
                    raise DeviceSpecError(f"-device {spec.driver}: drive {value!r} is "
                                          "already in use")
                used.add(value)
                props.update(_drive_props(drive))
            elif key == "chardev":
                props["chardev"] = chardev(value)
            else:
                props[key.replace("-", "_")] = value
        if implied_drive is not None:
            props.update(_drive_props(implied_drive))
        try:
            dev = create(spec.driver, **props)
        except DeviceError as exc:
            raise DeviceSpecError(str(exc)) from None
        if spec.driver.startswith("virtio-serial") and "chardev" not in props:
            pending_serial.append(len(out))
        out.append(dev)


def device_help(cls: type[Device]) -> str:
    """``-device NAME,help``: the properties a device takes, as QEMU lists them."""
    props = cls.properties()
    if not props:
        return f"{cls.name}: no properties"
    lines = [f"{cls.name} options:"]
    for name, prop in sorted(props.items()):
        type_name = getattr(prop.type, "__name__", "value")
        type_name = {"bool": "bool (on/off)"}.get(type_name, type_name)
        lines.append(f"  {name.replace('_', '-')}=<{type_name}>  - {prop.doc} "
                     f"(default: {prop.default!r})")
    return "\n".join(lines)
