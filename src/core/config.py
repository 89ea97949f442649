"""What a machine is built from: QEMU's command-line options as data.

:func:`parse_opts` reads QEMU's ``key=value,key=value`` option strings (with
``,,`` for a literal comma and an optional implied first key), and the
``*Spec`` records hold ``-drive``, ``-device`` and ``-netdev``.
:class:`MachineConfig` gathers what ``vmforge run`` (or a script) asks for.
:class:`MachineProp` declares a machine's ``-M NAME,prop=value`` properties and
:func:`check_machine_props` checks the command line's against them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from vmforge.clock import Icount
from vmforge.errors import VmforgeError
from vmforge.record import FrozenRecord, Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ConfigError", "DeviceSpec", "DriveSpec", "MachineConfig", "MachineProp",
           "NetdevSpec", "check_machine_props", "parse_opts"]


class ConfigError(VmforgeError, ValueError):
    """An option or property has a value it cannot have (the message names it)."""


def parse_opts(text: str, implied: str | None = None,
               repeatable: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``"virt,dumpdtb=x.dtb"`` -> ``{implied: "virt", "dumpdtb": "x.dtb"}``.

    A bare ``flag`` means ``flag=on``; ``,,`` is a literal comma.  Keys in
    ``repeatable`` may be given several times and come as a list of values.
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
    out: dict[str, Any] = {}
    for n, part in enumerate(parts):
        if not part:
            continue
        if "=" in part:
            key, value = part.split("=", 1)
        elif n == 0 and implied is not None:
            key, value = implied, part
        else:
            key, value = part, "on"
        if key in repeatable:
            out.setdefault(key, []).append(value)
            continue
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


class DriveSpec(Record):
    """``-drive file=...,format=...,if=virtio[,readonly=on][,id=...]``."""

    __slots__ = __match_args__ = ("file", "format", "interface", "readonly", "id", "options")
    file: str
    format: str | None
    interface: str
    readonly: bool
    id: str | None
    options: dict[str, str]

    def __init__(self, file: str, format: str | None = None,
                 interface: str = "virtio", readonly: bool = False, id: str | None = None,
                 options: dict[str, str] | None = None) -> None:
        self.file = file
        self.format = format
        self.interface = interface
        self.readonly = readonly
        self.id = id
        self.options = {} if options is None else options

    @classmethod
    def parse(cls, text: str) -> DriveSpec:
        opts = parse_opts(text)
        if "file" not in opts:
            raise ValueError(f"-drive {text!r}: file= is required")
        spec = cls(opts.pop("file"), opts.pop("format", None), opts.pop("if", "virtio"),
                   _onoff(opts.pop("readonly", "off"), "-drive readonly"), opts.pop("id", None))
        spec.options = opts
        return spec


class DeviceSpec(Record):
    """``-device DRIVER[,prop=value...]``."""

    __slots__ = __match_args__ = ("driver", "props")
    driver: str
    props: dict[str, str]

    def __init__(self, driver: str, props: dict[str, str] | None = None) -> None:
        self.driver = driver
        self.props = {} if props is None else props

    @classmethod
    def parse(cls, text: str) -> DeviceSpec:
        opts = parse_opts(text, implied="driver")
        if "driver" not in opts:
            raise ValueError(f"-device {text!r}: the device name comes first")
        return cls(opts.pop("driver"), opts)


class NetdevSpec(Record):
    """``-netdev TYPE,id=NAME[,...]`` (user, tap, socket...)."""

    __slots__ = __match_args__ = ("type", "id", "options")
    type: str
    id: str
    options: dict[str, Any]

    def __init__(self, type: str, id: str,
                 options: dict[str, Any] | None = None) -> None:
        self.type = type
        self.id = id
        self.options = {} if options is None else options

    #: options QEMU lets a netdev repeat (each a rule of its own)
    REPEATABLE = frozenset({"hostfwd", "guestfwd"})

    @classmethod
    def parse(cls, text: str) -> NetdevSpec:
        opts = parse_opts(text, implied="type", repeatable=cls.REPEATABLE)
        if "type" not in opts or "id" not in opts:
            raise ValueError(f"-netdev {text!r}: needs a type and id=")
        return cls(opts.pop("type"), opts.pop("id"), opts)

    @classmethod
    def parse_nic(cls, text: str, index: int) -> tuple[NetdevSpec, DeviceSpec]:
        """``-nic TYPE[,model=M][,mac=A][,netdev options]``: a back-end and the
        NIC on it (QEMU's ``virtio-net``, which the board resolves to its transport's
        device, unless ``model=`` names another)."""
        opts = parse_opts(text, implied="type", repeatable=cls.REPEATABLE)
        if "type" not in opts:
            raise ValueError(f"-nic {text!r}: needs a back-end type (user, tap, socket)")
        ident = opts.pop("id", f"__nic{index}")
        model = opts.pop("model", "virtio-net")
        if model == "virtio":
            model = "virtio-net"
        dev_props = {"netdev": ident}
        if "mac" in opts:
            dev_props["mac"] = opts.pop("mac")
        return cls(opts.pop("type"), ident, opts), DeviceSpec(model, dev_props)


class MachineConfig(Record):
    """Everything a machine is built from (``vmforge run``'s options as data).

    A container field left out (or None) starts empty (``serial``: ``["stdio"]``)."""

    __slots__ = __match_args__ = (
        "machine", "machine_props", "memory", "smp", "bios", "kernel", "initrd", "append",
        "dtb", "drives", "devices", "netdevs", "chardevs", "globals", "serial", "accel",
        "no_reboot", "trace", "icount", "extra")
    machine: str
    machine_props: dict[str, str]
    memory: int | None                  # bytes; None: the machine's default
    smp: int
    bios: str | None                    # "default", "none" or a path
    kernel: str | None
    initrd: str | None
    append: str
    dtb: str | None
    drives: list[DriveSpec]
    devices: list[DeviceSpec]
    netdevs: list[NetdevSpec]
    #: ``-chardev`` back-ends by id: QEMU's text (``file,id=c0,path=P``), a
    #: ``vmforge.devspec.ChardevSpec`` or a ready ``vmforge.chardev.CharBackend``
    chardevs: dict[str, Any]
    #: ``-global DRIVER.PROP=VALUE``: property defaults per device name
    globals: dict[str, dict[str, str]]
    #: per serial port: a ``-serial`` spec or a ready ``vmforge.chardev.CharBackend``
    serial: list[Any]
    accel: str | None                   # None: the machine's default
    #: ``-no-reboot``: a guest's reset request (a reboot, a triple fault) ends the
    #: machine with status 0 instead of resetting it, as QEMU does
    no_reboot: bool
    trace: list[str]
    #: guest time: None follows the host's clock (QEMU's default); an
    #: :class:`~vmforge.clock.Icount` counts instructions (``-icount``)
    icount: Icount | None
    extra: dict[str, Any]

    def __init__(self, machine: str = "riscv-virt", machine_props: dict[str, str] | None = None,
                 memory: int | None = None, smp: int = 1, bios: str | None = "default",
                 kernel: str | None = None, initrd: str | None = None, append: str = "",
                 dtb: str | None = None, drives: list[DriveSpec] | None = None,
                 devices: list[DeviceSpec] | None = None,
                 netdevs: list[NetdevSpec] | None = None,
                 chardevs: dict[str, Any] | None = None,
                 globals: dict[str, dict[str, str]] | None = None,
                 serial: list[Any] | None = None, accel: str | None = None,
                 no_reboot: bool = False, trace: list[str] | None = None,
                 icount: Icount | None = None, extra: dict[str, Any] | None = None) -> None:
        self.machine = machine
        self.machine_props = {} if machine_props is None else machine_props
        self.memory = memory
        self.smp = smp
        self.bios = bios
        self.kernel = kernel
        self.initrd = initrd
        self.append = append
        self.dtb = dtb
        self.drives = [] if drives is None else drives
        self.devices = [] if devices is None else devices
        self.netdevs = [] if netdevs is None else netdevs
        self.chardevs = {} if chardevs is None else chardevs
        self.globals = {} if globals is None else globals
        self.serial = ["stdio"] if serial is None else serial
        self.accel = accel
        self.no_reboot = no_reboot
        self.trace = [] if trace is None else trace
        self.icount = icount
        self.extra = {} if extra is None else extra

    @staticmethod
    def parse_global(text: str, into: dict[str, dict[str, str]]) -> None:
        """``-global virtio-mmio.force-legacy=on`` (or ``driver=D,property=P,value=V``)."""
        if text.startswith("driver="):
            opts = parse_opts(text)
            try:
                driver, prop, value = opts["driver"], opts["property"], opts["value"]
            except KeyError as exc:
                raise ValueError(f"-global {text!r}: needs driver=, property= and value=") \
                    from exc
        else:
            name, eq, value = text.partition("=")
            driver, dot, prop = name.rpartition(".")
            if not (eq and dot and driver and prop):
                raise ValueError(f"-global {text!r}: expected DRIVER.PROPERTY=VALUE")
        into.setdefault(driver, {})[prop.replace("-", "_")] = value

    @staticmethod
    def parse_memory(text: str) -> int:
        """``-m 512`` (MiB, as QEMU), ``-m 1.5G``, ``-m size=1G``: bytes, rounded up
        to 8 KiB as QEMU does; 0 asks for the machine's default, as with QEMU."""
        opts = _parse_opts_checked("-m", text, "size", ("size",))
        value = opts.get("size", "").strip()
        parts = size_parts(value)
        if parts is None:
            raise ConfigError(f"-m {text}: {value!r} is not a size (a number of MiB, or with "
                              "a suffix: K, M, G, T, P, E)")
        number, unit_text = parts
        unit = (unit_text or "M")[0].upper()
        if "." in number:       # (fractions and decimal imported for these only)
            from fractions import Fraction

            size = math.ceil(Fraction(number) * _UNITS[unit])
        else:
            size = int(number) * _UNITS[unit]
        size = -(-size // 8192) * 8192
        if size >= 1 << 63:
            raise ConfigError(f"-m {text}: the size is too large")
        return size

    @staticmethod
    def parse_smp(text: str) -> int:
        """``-smp 4``, ``-smp cpus=4``, ``-smp sockets=2,cores=2`` (QEMU's topology
        keys; the CPU count is their product when cpus= is not given)."""
        opts = _parse_opts_checked("-smp", text, "cpus", _SMP_KEYS)
        values: dict[str, int] = {}
        for key, value in opts.items():
            if not value.strip().isdigit():
                raise ConfigError(f"-smp {text}: Parameter '{key}' expects a number, "
                                  f"not {value!r}")
            values[key] = int(value)
        topology = [k for k in _SMP_KEYS[1:-1] if k in values]
        product = math.prod(values.get(k, 1) for k in topology)
        cpus = values["cpus"] if "cpus" in values else (product if topology else 1)
        if cpus < 1 or any(values[k] < 1 for k in topology):
            raise ConfigError(f"-smp {text}: at least one CPU (and one of each topology level)")
        maxcpus = values.get("maxcpus") or cpus
        if maxcpus != cpus:
            raise ConfigError(f"-smp {text}: maxcpus must equal cpus (vmforge has no CPU "
                              "hot-plug)")
        if topology and product != cpus:
            raise ConfigError(f"-smp {text}: the topology ("
                              + " * ".join(f"{k}={values[k]}" for k in topology)
                              + f" = {product}) does not make {cpus} CPUs")
        return cpus


def size_parts(value: str) -> tuple[str, str | None] | None:
    """A ``-m`` size's number and unit, or None: a decimal number (fractions allowed),
    spaces, an optional unit (K, M, G, T, P, E, with an optional B or iB; or B), any
    case: what ``(?P<number>\\d+(?:\\.\\d*)?|\\.\\d+)\\s*(?P<unit>[kmgtpe](?:i?b)?|b)?``
    matches in full, ignoring case (read without re: start-up time)."""
    end = len(value)
    i = 0
    while i < end and value[i].isdecimal():
        i += 1
    whole = i
    if i < end and value[i] == ".":
        i += 1
        while i < end and value[i].isdecimal():
            i += 1
        if whole == 0 and i == 1:
            return None                 # a lone "."
    elif whole == 0:
        return None
    number, j = value[:i], i
    while j < end and value[j].isspace():
        j += 1
    unit = value[j:]
    low = unit.lower()
    if not unit:
        return number, None
    if low == "b" or (low[0] in "kmgtpe" and low[1:] in ("", "b", "ib")):
        return number, unit
    return None

_UNITS = {u: 1 << (10 * n) for n, u in enumerate("BKMGTPE")}
#: ``-smp``'s keys: the count, QEMU's topology levels, the hot-plug limit
_SMP_KEYS = ("cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus")


def _parse_opts_checked(option: str, text: str, implied: str,
                        valid: tuple[str, ...]) -> dict[str, str]:
    """:func:`parse_opts` for ``option``, refusing keys not in ``valid``."""
    try:
        opts = parse_opts(text, implied=implied)
    except ValueError as exc:
        raise ConfigError(f"{option} {text}: {exc}") from None
    unknown = [k for k in opts if k not in valid]
    if unknown:
        raise ConfigError(f"{option} {text}: unknown option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} (valid: {', '.join(valid)})")
    return opts


class MachineProp(FrozenRecord):
    """A machine property, set with ``-M NAME,prop=value`` (QEMU's machine options).

    A machine class declares its properties in the class attribute
    ``properties: ClassVar[dict[str, MachineProp]]``; ``vmforge run`` refuses
    the names a machine does not declare and values that do not convert::

        properties = {"slice": MachineProp(int, 200_000, "instructions per slice", min=1)}

    ``kind`` is ``int`` (decimal or 0x hex), ``float``, ``bool`` (on/off) or ``str``;
    ``min``/``max`` bound numbers, ``choices`` lists the strings allowed.
    """

    __slots__ = __match_args__ = ("kind", "default", "doc", "min", "max", "choices")
    kind: Callable[[str], Any]
    default: Any
    doc: str
    min: float | None
    max: float | None
    choices: tuple[str, ...]

    def __init__(self, kind: Callable[[str], Any] = str, default: Any = None, doc: str = "",
                 min: float | None = None, max: float | None = None,
                 choices: tuple[str, ...] = ()) -> None:
        for name, value in (("kind", kind), ("default", default), ("doc", doc), ("min", min),
                            ("max", max), ("choices", choices)):
            object.__setattr__(self, name, value)

    def type_name(self) -> str:
        """What a value must be, for messages and ``-M NAME,help``."""
        names: dict[Any, str] = {int: "int", float: "number", bool: "on/off", str: "string"}
        return names.get(self.kind) or str(getattr(self.kind, "__name__", "value"))

    def parse(self, text: str) -> Any:
        """The value of ``text``; ValueError (saying what is expected) when it is wrong."""
        value: Any
        if self.kind is bool:
            value = _onoff(text, "the value")
        elif self.kind is int:
            try:
                value = int(text, 0)
            except ValueError:
                raise ValueError(f"{text!r} is not an integer") from None
        elif self.kind is float:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{text!r} is not a finite number")
        else:
            value = self.kind(text)
        if self.choices and value not in self.choices:
            raise ValueError(f"{text!r} is not one of {', '.join(self.choices)}")
        if self.min is not None and value < self.min:
            raise ValueError(f"{text} is below the minimum, {self.min:g}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{text} is above the maximum, {self.max:g}")
        return value


def check_machine_props(machine: str, declared: Mapping[str, MachineProp],
                        given: Mapping[str, str]) -> dict[str, Any]:
    """Every declared property's value: ``given`` (``-M``'s strings) checked and
    converted, defaults for the rest.  Raises :class:`ConfigError` naming an
    unknown property (with the valid ones) or a bad value."""
    unknown = [k for k in given if k not in declared]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        valid = (f"its properties: {', '.join(sorted(declared))}" if declared
                 else "it has none")
        raise ConfigError(f"machine {machine!r} has no propert"
                          f"{'ies' if len(unknown) > 1 else 'y'} {names} ({valid})")
    values = {name: prop.default for name, prop in declared.items()}
    for name, text in given.items():
        try:
            values[name] = declared[name].parse(text)
        except ValueError as exc:
            raise ConfigError(f"machine {machine!r}: {name}={text}: {exc} "
                              f"({declared[name].type_name()} expected)") from None
    return values
