"""Plain record classes that behave as dataclasses, without importing :mod:`dataclasses`.

Start-up time: importing :mod:`dataclasses` costs ~8 ms (it pulls :mod:`inspect`,
:mod:`ast`, :mod:`dis`, :mod:`tokenize`) and making each dataclass ~1 ms (it
compiles its methods), so the records ``vmforge img`` meets on every run are
written out: ``__slots__``, an explicit ``__init__``, and this base for the rest.

A subclass lists its fields, in order, in ``__match_args__`` (and ``__slots__``),
annotates them, and writes ``__init__`` (a frozen record sets its fields with
``object.__setattr__``).  It gets what ``@dataclass`` would make: ``__eq__``
(same class, same fields), ``__repr__`` (``Name(field=value, ...)``), for a
:class:`FrozenRecord` ``__hash__`` and the refusal to assign; and
``__dataclass_fields__``, made on first use, so :func:`dataclasses.fields`,
:func:`dataclasses.replace` and :func:`dataclasses.asdict` accept it as before::

    class Point(FrozenRecord):
        __slots__ = __match_args__ = ("x", "y")
        x: int
        y: int

        def __init__(self, x: int, y: int = 0) -> None:
            object.__setattr__(self, "x", x)
            object.__setattr__(self, "y", y)
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["FrozenRecord", "Record"]


class _DataclassFields:
    """``__dataclass_fields__`` of a record class: the fields a dataclass with the
    same annotations and ``__init__`` defaults would have, made when first asked."""

    def __get__(self, obj: object, owner: type[Record]) -> dict[str, Any]:
        import dataclasses
        import inspect  # (dataclasses imports it)

        names = owner.__match_args__
        own = inspect.get_annotations(owner)
        annotations = {n: own.get(n, "Any") for n in names}
        init = owner.__init__
        code = init.__code__
        params = code.co_varnames[1:code.co_argcount + code.co_kwonlyargcount]
        positional = code.co_varnames[1:code.co_argcount]
        defaults = dict(zip(positional[len(positional) - len(init.__defaults__ or ()):],
                            init.__defaults__ or (), strict=True))
        defaults.update(init.__kwdefaults__ or {})
        namespace: dict[str, Any] = {"__annotations__": annotations}
        for name in names:      # (a field without a default after one with: none here)
            if name in defaults and name in params:
                namespace[name] = dataclasses.field(default=defaults[name])
        shadow: Any = dataclasses.dataclass(frozen=issubclass(owner, FrozenRecord))(
            type(owner.__name__, (), namespace))
        fields: dict[str, Any] = shadow.__dataclass_fields__
        type.__setattr__(owner, "__dataclass_fields__", fields)     # once per class
        return fields


class Record:
    """A mutable record: ``__eq__`` and ``__repr__`` over ``__match_args__``; weak
    references to it may be taken, as to a dataclass instance."""

    __slots__ = ("__weakref__",)
    __match_args__: tuple[str, ...] = ()
    __dataclass_fields__: Any = _DataclassFields()

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.__match_args__])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]   # mutable, as a dataclass with eq

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{self.__class__.__qualname__}({fields})"


class FrozenRecord(Record):
    """An immutable record: hashable, and assigning a field raises ``AttributeError``
    (as a frozen dataclass's ``FrozenInstanceError``, a subclass of it)."""

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]   # Record's None: unhashable
        return hash(self._values())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __setstate__(self, state: Any) -> None:      # copy and pickle (slots, no dict)
        for name, value in (state[1] if isinstance(state, tuple) else state or {}).items():
            object.__setattr__(self, name, value)
