"""Bit flags that behave as ``enum.IntFlag``'s, without importing enum.

``enum`` (with the functools, types and collections it imports) costs ~3 ms of a
command's start-up, and the block layer's flags (:class:`vmforge.block.BlockStatus`,
:class:`vmforge.block.locking.Perm`) are imported by every ``vmforge img`` command.
A :class:`Flags` subclass declares its members for the type checker and defines
them after the class::

    class Perm(Flags):
        READ: ClassVar[Perm]
        WRITE: ClassVar[Perm]

    Perm.define(READ=1, WRITE=2)

Its values are ints (equal, hashed and formatted as ints) and answer as an
``IntFlag``'s of Python 3.11 do: ``|``, ``&``, ``^`` and ``~`` give the class
(a negative value mapped as IntFlag maps it), ``repr`` is ``<Perm.READ|WRITE: 3>``, ``str`` the
number, ``.name`` ``'READ|WRITE'`` (None for no member's bit), ``.value``, ``in``,
iteration over the members set, ``len``; one object per value (``Perm(1) is
Perm.READ``).  The class itself is not iterable (``list(Perm)``): ``members()``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import ClassVar, Self

__all__ = ["Flags"]


class Flags(int):
    """An ``enum.IntFlag`` look-alike (see the module's text)."""

    __slots__ = ()
    _members: ClassVar[dict[str, int]] = {}
    _mask: ClassVar[int] = 0
    _cache: ClassVar[dict[int, Flags]] = {}

    @classmethod
    def define(cls, **members: int) -> None:
        """Make the members ``NAME=bit``, in this order (repr and ``.name`` use it)."""
        cls._members = dict(members)
        cls._cache = {}
        mask = 0
        for value in members.values():
            mask |= value
        cls._mask = mask
        for name, value in members.items():
            setattr(cls, name, cls(value))

    @classmethod
    def members(cls) -> list[Self]:
        """The members, in their order (``list(SomeIntFlag)``)."""
        return [getattr(cls, name) for name in cls._members]

    def __new__(cls, value: int = 0) -> Self:
        if value.__class__ is not int:
            if not isinstance(value, int):
                raise ValueError(f"{value!r} is not a valid {cls.__qualname__}")
            value = int(value)
        try:
            return cls._cache[value]  # type: ignore[return-value]
        except KeyError:
            pass
        if value < 0:                   # as IntFlag (boundary KEEP) maps it
            all_bits = (1 << cls._mask.bit_length()) - 1
            if value < ~all_bits:
                value += max(all_bits + 1, 1 << value.bit_length())
            if value < 0:
                value += all_bits + 1
            return cls(value)
        self = int.__new__(cls, value)
        cls._cache[value] = self
        return self

    def __or__(self, other: int) -> Self:
        if not isinstance(other, int):
            return NotImplemented
        return type(self)(int(self) | int(other))

    def __and__(self, other: int) -> Self:
        if not isinstance(other, int):
            return NotImplemented
        return type(self)(int(self) & int(other))

    def __xor__(self, other: int) -> Self:
        if not isinstance(other, int):
            return NotImplemented
        return type(self)(int(self) ^ int(other))

    __ror__ = __or__
    __rand__ = __and__
    __rxor__ = __xor__

    def __invert__(self) -> Self:
        return type(self)(~int(self))

    def __contains__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            raise TypeError(f"unsupported operand type(s) for 'in': "
                            f"'{type(other).__qualname__}' and '{type(self).__qualname__}'")
        return int(other) & int(self) == int(other)

    def __iter__(self) -> Iterator[Self]:
        value = int(self)
        cls = type(self)
        return iter([getattr(cls, n) for n, bit in cls._members.items() if value & bit])

    def __len__(self) -> int:
        return int(self).bit_count()

    @property
    def name(self) -> str | None:
        value = int(self)
        names = [n for n, bit in self._members.items() if value & bit]
        if not names:
            return None
        extra = value & ~self._mask
        return "|".join(names) + (f"|{extra}" if extra else "")

    @property
    def value(self) -> int:
        return int(self)

    def __repr__(self) -> str:
        name = self.name
        cls = type(self).__qualname__
        return f"<{cls}: {int(self)}>" if name is None else f"<{cls}.{name}: {int(self)}>"

    __str__ = int.__repr__
    __format__ = int.__format__

    def __reduce__(self) -> tuple[type[Self], tuple[int]]:
        return type(self), (int(self),)

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: object) -> Self:
        return self
