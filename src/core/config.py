"""What a machine is built from: QEMU's command-line options as data.

:func:`parse_opts` reads QEMU's ``key=value,key=value`` option strings (with
``,,`` for a literal comma and an optional implied first key), and the
``*Spec`` dataclasses hold ``-drive``, ``-device`` and ``-netdev``.
:class:`MachineConfig` gathers what ``vmforge run`` (or a script) asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vmforge.block.driver import parse_size
from vmforge.clock import Icount

__all__ = ["DeviceSpec", "DriveSpec", "MachineConfig", "NetdevSpec", "parse_opts"]


def parse_opts(text: str, implied: str | None = None) -> dict[str, str]:
    """``"virt,dumpdtb=x.dtb"`` -> ``{implied: "virt", "dumpdtb": "x.dtb"}``.

    A bare ``flag`` means ``flag=on``; ``,,`` is a literal comma.
    """
    parts: list[str] = []
    cur = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if text[i + 1: i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    out: dict[str, str] = {}
    for n, part in enumerate(parts):
        if not part:
            continue
        if "=" in part:
            key, value = part.split("=", 1)
        elif n == 0 and implied is not None:
            key, value = implied, part
        else:
            key, value = part, "on"
        if key in out:
            raise ValueError(f"option {key!r} given twice in {text!r}")
        out[key] = value
    return out


def _onoff(value: str, what: str) -> bool:
    low = value.lower()
    if low in ("on", "yes", "true", "1"):
        return True
    if low in ("off", "no", "false", "0"):
        return False
    raise ValueError(f"{what}: {value!r} is not on/off")


@dataclass
class DriveSpec:
    """``-drive file=...,format=...,if=virtio[,readonly=on][,id=...]``."""

    file: str
    format: str | None = None
    interface: str = "virtio"
    readonly: bool = False
    id: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> DriveSpec:
        opts = parse_opts(text)
        if "file" not in opts:
            raise ValueError(f"-drive {text!r}: file= is required")
        spec = cls(opts.pop("file"), opts.pop("format", None), opts.pop("if", "virtio"),
                   _onoff(opts.pop("readonly", "off"), "-drive readonly"), opts.pop("id", None))
        spec.options = opts
        return spec


@dataclass
class DeviceSpec:
    """``-device DRIVER[,prop=value...]``."""

    driver: str
    props: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> DeviceSpec:
        opts = parse_opts(text, implied="driver")
        if "driver" not in opts:
            raise ValueError(f"-device {text!r}: the device name comes first")
        return cls(opts.pop("driver"), opts)


@dataclass
class NetdevSpec:
    """``-netdev TYPE,id=NAME[,...]`` (user, tap, socket...)."""

    type: str
    id: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NetdevSpec:
        opts = parse_opts(text, implied="type")
        if "type" not in opts or "id" not in opts:
            raise ValueError(f"-netdev {text!r}: needs a type and id=")
        return cls(opts.pop("type"), opts.pop("id"), opts)


@dataclass
class MachineConfig:
    """Everything a machine is built from (``vmforge run``'s options as data)."""

    machine: str = "riscv-virt"
    machine_props: dict[str, str] = field(default_factory=dict)
    memory: int | None = None           # bytes; None: the machine's default
    smp: int = 1
    bios: str | None = "default"        # "default", "none" or a path
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    dtb: str | None = None
    drives: list[DriveSpec] = field(default_factory=list)
    devices: list[DeviceSpec] = field(default_factory=list)
    netdevs: list[NetdevSpec] = field(default_factory=list)
    #: per serial port: a ``-serial`` spec or a ready ``vmforge.chardev.CharBackend``
    serial: list[Any] = field(default_factory=lambda: ["stdio"])
    accel: str | None = None            # None: the machine's default
    trace: list[str] = field(default_factory=list)
    #: guest time: None follows the host's clock (QEMU's default); an
    #: :class:`~vmforge.clock.Icount` counts instructions (``-icount``)
    icount: Icount | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def parse_memory(text: str) -> int:
        """``-m 512`` (MiB, as QEMU), ``-m 1G``, ``-m size=1G``."""
        opts = parse_opts(text, implied="size")
        value = opts.get("size", "")
        if value.isdigit():
            return int(value) << 20
        return parse_size(value)

    @staticmethod
    def parse_smp(text: str) -> int:
        opts = parse_opts(text, implied="cpus")
        cpus = int(opts.get("cpus", "1"))
        if cpus < 1:
            raise ValueError(f"-smp {text!r}: at least one CPU")
        return cpus
