"""``-netdev TYPE,...`` -> a back-end: the built-in types and the ``vmforge.netdev`` plugins.

``socket`` and ``tap`` are built in; a distribution adds a type by declaring
an entry point (``vmforge-slirp`` adds ``user``)::

    [project.entry-points."vmforge.netdev"]
    user = "vmforge_slirp:SlirpNet"

The value names a :class:`~vmforge.net.backend.NetBackend` subclass; it is
imported only when a netdev of that type is created.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from vmforge.net.backend import NetBackend, NetdevError

if TYPE_CHECKING:
    from vmforge.config import NetdevSpec

__all__ = ["GROUP", "create_netdev", "netdev_class", "netdev_types"]

#: the entry-point group of back-end plugins
GROUP = "vmforge.netdev"

_BUILTIN = {
    "socket": "vmforge.net.socket:SocketNet",
    "tap": "vmforge.net.tap:TapNet",
}


def netdev_types() -> dict[str, str]:
    """Every ``-netdev`` type: its name -> where its class is (``module:Class``)."""
    out = dict(_BUILTIN)
    for ep in entry_points(group=GROUP):
        out.setdefault(ep.name, ep.value)
    return dict(sorted(out.items()))


def netdev_class(type_: str) -> type[NetBackend]:
    """The back-end class of ``-netdev TYPE`` (:class:`NetdevError` names the known ones)."""
    where = _BUILTIN.get(type_)
    dist = "vmforge"
    if where is None:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == type_]
        if not found:
            known = ", ".join(netdev_types())
            hint = " (install vmforge-slirp for user networking)" if type_ == "user" else ""
            raise NetdevError(f"-netdev {type_}: unknown type (known: {known}){hint}")
        if len({ep.value for ep in found}) > 1:
            raise NetdevError(f"-netdev {type_}: claimed by several distributions: "
                              + ", ".join(ep.value for ep in found))
        where = found[0].value
        dist = getattr(found[0].dist, "name", "?")
    module, _, attr = where.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, OSError) as exc:
        raise NetdevError(f"-netdev {type_}: cannot load {where} (from {dist}): {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, NetBackend)):
        raise NetdevError(f"-netdev {type_}: {where} is not a NetBackend")
    return cls


def _dispatcher(machine_or_call_soon: Any) -> Callable[[Callable[[], None]], object] | None:
    if machine_or_call_soon is None:
        return None
    call_soon = getattr(machine_or_call_soon, "call_soon", machine_or_call_soon)
    if not callable(call_soon):
        raise TypeError("create_netdev: pass a machine, its call_soon or None")
    return call_soon  # type: ignore[no-any-return]


def create_netdev(spec: NetdevSpec, machine_or_call_soon: Any = None) -> NetBackend:
    """Open the back-end ``spec`` describes (``-netdev TYPE,id=ID,...``), delivering
    frames on the machine's thread through its ``call_soon`` (a machine or the
    function itself; None: on the back-end's own thread).  Raises
    :class:`NetdevError` (a ValueError) naming the option or host error."""
    cls = netdev_class(spec.type)
    return cls.from_spec(spec.id, dict(spec.options),
                         dispatch=_dispatcher(machine_or_call_soon))
