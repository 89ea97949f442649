"""The run-time side of the typing forms vmforge's modules define classes with,
without importing :mod:`typing` (start-up time: ``import typing`` and the classes
made with it were ~8% of ``vmforge run``'s start-up).

A module imports these for run time and :mod:`typing`'s for the type checker::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple, Protocol, runtime_checkable
    else:
        from vmforge.typing_runtime import NamedTuple, Protocol, runtime_checkable

- :class:`Protocol` and :func:`runtime_checkable`: ``isinstance(x, P)`` of a runtime
  checkable protocol ``P`` answers as typing's (every member of the protocol and of
  its protocol bases is an attribute of ``x``, a method not None; or ``x`` is an
  instance of a class that subclasses ``P``); of one not runtime checkable, it raises
  typing's TypeError.  A protocol is not instantiated.
- :class:`NamedTuple`: the class form makes :func:`collections.namedtuple`'s class,
  fields from the annotations, defaults from their values, methods and docstring
  copied, as typing's does (annotations stay the strings
  ``from __future__ import annotations`` makes them).
- :class:`Generic`, :func:`TypeVar`, :func:`overload`: ``class C(Generic[T])`` makes a
  plain class (``C[int]`` is ``C``), a type variable is its name, an overload
  declaration is replaced by the implementation that follows it.
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["Generic", "NamedTuple", "Protocol", "TypeVar", "overload", "runtime_checkable"]

#: what typing does not count as a protocol member (3.11's EXCLUDED_ATTRIBUTES)
_NOT_MEMBERS = frozenset({
    "__parameters__", "__orig_bases__", "__orig_class__", "_is_protocol",
    "_is_runtime_protocol", "__abstractmethods__", "__annotations__", "__dict__", "__doc__",
    "__init__", "__module__", "__new__", "__slots__", "__subclasshook__", "__weakref__",
    "__class_getitem__", "_MutableMapping__marker"})


def _members(cls: type) -> set[str]:
    """typing's ``_get_protocol_attrs``: the members of a protocol and its bases."""
    out: set[str] = set()
    for base in cls.__mro__[:-1]:
        if base.__name__ in ("Protocol", "Generic"):
            continue
        names = [*vars(base), *vars(base).get("__annotations__", {})]
        out.update(n for n in names if not n.startswith("_abc_") and n not in _NOT_MEMBERS)
    return out


class _ProtocolMeta(type):
    def __instancecheck__(cls, instance: object) -> bool:
        if not cls.__dict__.get("_is_protocol", False):
            return type.__instancecheck__(cls, instance)
        if not cls.__dict__.get("_is_runtime_protocol", False):
            raise TypeError("Instance and class checks can only be used with "
                            "@runtime_checkable protocols")
        if type.__instancecheck__(cls, instance):
            return True
        return all(hasattr(instance, name) and (not callable(getattr(cls, name, None))
                                                or getattr(instance, name) is not None)
                   for name in _members(cls))


class Protocol(metaclass=_ProtocolMeta):
    """typing's ``Protocol`` at run time (see the module's doc)."""

    __slots__ = ()
    _is_protocol = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("_is_protocol", False):
            cls._is_protocol = any(b is Protocol for b in cls.__bases__)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__dict__.get("_is_protocol", False):
            raise TypeError("Protocols cannot be instantiated")
        return super().__new__(cls)


def runtime_checkable(cls: type) -> type:
    """Allow ``isinstance`` with the protocol ``cls``."""
    if not cls.__dict__.get("_is_protocol", False):
        raise TypeError("@runtime_checkable can be only applied to protocol classes, "
                        f"got {cls!r}")
    cls._is_runtime_protocol = True  # type: ignore[attr-defined]
    return cls


class _NamedTupleMeta(type):
    def __new__(mcls, typename: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
        fields = list(ns.get("__annotations__", {}))
        defaults = []
        for name in fields:
            if name in ns:
                defaults.append(ns[name])
            elif defaults:
                raise TypeError(f"Non-default namedtuple field {name} cannot follow a "
                                "default field")
        cls = namedtuple(typename, fields, defaults=defaults,  # type: ignore[misc]
                         module=ns.get("__module__"))
        cls.__annotations__ = dict(ns.get("__annotations__", {}))
        for key, value in ns.items():
            if key in ("_make", "_asdict", "_replace", "_fields", "_field_defaults",
                       "__new__", "__init__", "__slots__", "__getnewargs__"):
                raise AttributeError("Cannot overwrite NamedTuple attribute " + key)
            if key not in ("__module__", "__name__", "__annotations__") and key not in fields:
                setattr(cls, key, value)
        return cls


_NamedTuple = type.__new__(_NamedTupleMeta, "NamedTuple", (), {})


def _named_tuple_mro_entries(bases: tuple[Any, ...]) -> tuple[type, ...]:
    return (_NamedTuple,)


def NamedTuple(typename: str, fields: Any = None, /, **kwargs: Any) -> Any:
    """typing's ``NamedTuple`` at run time: the class form (``class P(NamedTuple)``) and
    the functional one with a list of ``(name, type)``."""
    items = list(fields or ()) or list(kwargs.items())
    return namedtuple(typename, [name for name, _ in items])


NamedTuple.__mro_entries__ = _named_tuple_mro_entries  # type: ignore[attr-defined]


class Generic:
    """typing's ``Generic`` at run time: ``Generic[T]`` and ``C[T]`` are the classes."""

    __slots__ = ()

    def __class_getitem__(cls, params: Any) -> type:
        return cls


def TypeVar(name: str, *constraints: Any, **options: Any) -> str:
    """A type variable at run time: its name."""
    return name


def overload(func: Callable[..., Any]) -> Callable[..., Any]:
    """An overload declaration at run time (the implementation defined after it
    replaces it)."""
    return func
