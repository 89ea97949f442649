"""The base of every device model.

A device is realized on a machine, maps its MMIO window(s), holds interrupt
lines, and is reset with the machine.  Devices are plugins: a distribution
registers its classes under the entry-point group ``vmforge.device``.

Properties (QEMU's qdev properties) are declared as class attributes with
:class:`Prop` and set from keyword arguments, e.g. from
``-device ns16550a,regshift=2``::

    class Uart(Device):
        name = "my-uart"
        mmio_size = 0x100
        regshift = Prop(int, 0, "register spacing is 1 << regshift bytes")

        def read(self, offset: int, size: int) -> int: ...
        def write(self, offset: int, size: int, value: int) -> None: ...
"""

from __future__ import annotations

from collections.abc import Callable

from vmforge.errors import VmforgeError
from vmforge.irq import IrqLine

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Generic, TypeVar, overload

    from vmforge.memory import AddressSpace
else:
    from vmforge.typing_runtime import Generic, TypeVar

__all__ = ["Device", "DeviceError", "Prop"]

T = TypeVar("T")


class DeviceError(VmforgeError):
    """A device was configured or used wrongly (names the device)."""


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("on", "yes", "true", "1"):
        return True
    if low in ("off", "no", "false", "0"):
        return False
    raise ValueError(f"{text!r} is not on/off")


class Prop(Generic[T]):
    """A typed device property with a default and a description."""

    def __init__(self, type_: Callable[[Any], T], default: T, doc: str = "") -> None:
        self.type = type_
        self.default = default
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    if TYPE_CHECKING:   # (typing's overload: for the type checker only)
        @overload
        def __get__(self, obj: None, owner: type) -> Prop[T]: ...
        @overload
        def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object | None, owner: type) -> T | Prop[T]:
        if obj is None:
            return self
        return obj.__dict__.get(self.name, self.default)

    def __set__(self, obj: object, value: Any) -> None:
        obj.__dict__[self.name] = self.convert(value)

    def convert(self, value: Any) -> T:
        if isinstance(value, str) and self.type is not str:
            if self.type is bool:
                return _parse_bool(value)  # type: ignore[return-value]
            if self.type is int:
                return int(value, 0)  # type: ignore[return-value]
        return self.type(value)


class Device:
    """Base class of device models.

    Class attributes a subclass sets:

    - ``name``: the registry name (``-device NAME``).
    - ``mmio_size``: bytes of the MMIO window (0: no MMIO).
    - ``valid_sizes`` / ``impl_sizes``: (min, max) access sizes the guest may
      use / the model implements; the decoder splits or widens between them.
    - ``unaligned``: whether unaligned guest accesses are valid.
    """

    name: ClassVar[str] = ""
    mmio_size: ClassVar[int] = 0
    valid_sizes: ClassVar[tuple[int, int]] = (1, 8)
    impl_sizes: ClassVar[tuple[int, int]] = (1, 8)
    unaligned: ClassVar[bool] = False

    def __init__(self, **props: Any) -> None:
        known = self.properties()
        for key, value in props.items():
            key = key.replace("-", "_")
            if key not in known:
                raise DeviceError(f"device {self.name or type(self).__name__!r} has no property "
                                  f"{key!r} (it has: {', '.join(sorted(known)) or 'none'})")
            try:
                setattr(self, key, value)
            except (TypeError, ValueError) as exc:
                raise DeviceError(f"device {self.name!r}: property {key}={value!r}: {exc}") from exc
        self.realized = False
        self.base: int | None = None

    @classmethod
    def properties(cls) -> dict[str, Prop[Any]]:
        """The device's properties by name, base classes first."""
        out: dict[str, Prop[Any]] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Prop):
                    out[key] = value
        return out

    # -- life cycle ------------------------------------------------------------------

    def realize(self, machine: Any) -> None:
        """Called once when the machine is built (allocate state, threads)."""
        self.realized = True

    def unrealize(self) -> None:
        """Called when the machine is torn down (release host resources)."""
        self.realized = False

    def reset(self) -> None:
        """Return to power-on state (called by the machine on reset)."""

    def map(self, space: AddressSpace, base: int) -> None:
        """Map the device's MMIO window at ``base`` in ``space``."""
        if self.mmio_size <= 0:
            raise DeviceError(f"device {self.name!r} has no MMIO window to map")
        space.add_mmio(base, self, self.mmio_size, self.name)
        self.base = base

    # -- MMIO (override) ----------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """Guest read of ``size`` bytes at ``offset`` in the window."""
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """Guest write of ``size`` bytes at ``offset`` in the window."""

    @staticmethod
    def irq_line(name: str = "") -> IrqLine:
        """A new, unconnected interrupt line (the machine wires it)."""
        return IrqLine(name=name)
