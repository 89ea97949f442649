"""Hook calls without pluggy, for plain hooks plugins (start-up time).

``vmforge run`` calls hooks at every start (``vmforge_add_options``,
``vmforge_configure``, ``vmforge_machine_created``) as soon as one hooks plugin is
installed for it, and importing pluggy, with the inspect and typing it brings,
was a fifth of its start-up.  A :class:`HookRelay` calls the plugins that pluggy
would accept as they are and call plainly: modules whose hook implementations
are plain functions named like a spec of :mod:`vmforge.hookspecs`, without
``wrapper``, ``hookwrapper``, ``specname`` or ``optionalhook``, whose positional
parameters (none with a default) are among the spec's.  It calls them as
pluggy's ``_multicall`` does: in pluggy's order (last registered first,
``tryfirst`` before, ``trylast`` after), with the arguments each asks for, the
results not None in a list (the first of them for a ``firstresult`` hook),
historic calls remembered.

Anything else goes to pluggy: :func:`plain_hooks` answers None for a set of
plugins it does not take (the registry then makes pluggy's manager, which checks
and raises as before), and a call that is not plain (positional arguments, a
spec's argument missing, a historic hook called directly, ``call_extra``) or any
call once the registry made pluggy's manager (for the GDB stub, ``-d plugins``,
``vmforge plugins --hooks``) is pluggy's.  The manager made after plain calls
remembers the historic ones (:meth:`HookRelay.replay_history`).
"""

from __future__ import annotations

from types import FunctionType, MethodType, ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    import pluggy

__all__ = ["HookRelay", "plain_hooks"]

def plain_argnames(func: object) -> tuple[str, ...] | None:
    """pluggy's ``varnames(func)`` for a plain function whose parameters have no
    default: its positional parameters; None for anything else (pluggy's case)."""
    if (type(func) is not FunctionType or "__wrapped__" in vars(func)
            or func.__defaults__                                        # type: ignore[attr-defined]
            or "." in func.__qualname__.rpartition("<locals>.")[2]):   # type: ignore[attr-defined]
        return None
    code = func.__code__                                                # type: ignore[attr-defined]
    return tuple(code.co_varnames[:code.co_argcount])


class _Spec:
    __slots__ = ("argnames", "firstresult", "historic")

    def __init__(self, argnames: tuple[str, ...], firstresult: bool, historic: bool) -> None:
        self.argnames, self.firstresult, self.historic = argnames, firstresult, historic


def hook_specs(namespace: object, project: str) -> dict[str, _Spec] | None:
    """The specs marked in ``namespace`` (a module), or None if one needs pluggy
    (defaults, warnings)."""
    specs = {}
    for name, value in vars(namespace).items():
        opts = getattr(value, project + "_spec", None) if type(value) is FunctionType else None
        if not isinstance(opts, dict):
            continue
        argnames = plain_argnames(value)
        if argnames is None or opts.get("warn_on_impl") or opts.get("warn_on_impl_args"):
            return None
        specs[name] = _Spec(argnames, bool(opts.get("firstresult")), bool(opts.get("historic")))
    return specs


class HookImpl:
    """One plugin's implementation of a hook (the attributes of pluggy's ``HookImpl``
    that a caller reads)."""

    __slots__ = ("argnames", "function", "opts", "plugin", "plugin_name", "tryfirst", "trylast")

    def __init__(self, plugin: object, plugin_name: str, function: Callable[..., Any],
                 argnames: tuple[str, ...], opts: dict[str, Any]) -> None:
        self.plugin, self.plugin_name, self.function = plugin, plugin_name, function
        self.argnames, self.opts = argnames, opts
        self.tryfirst, self.trylast = bool(opts.get("tryfirst")), bool(opts.get("trylast"))

    def __repr__(self) -> str:
        return f"<HookImpl plugin_name={self.plugin_name!r}, plugin={self.plugin!r}>"


def _plugin_impls(plugin: object, plugin_name: str, specs: Mapping[str, _Spec],
                  project: str) -> list[tuple[str, HookImpl]] | None:
    """The hook implementations of a module, as pluggy's ``register`` finds them, or
    None if pluggy must see it (or would refuse it)."""
    if type(plugin) is not ModuleType or "__dir__" in vars(plugin):
        return None
    found = []
    attr = project + "_impl"
    for name in sorted(vars(plugin)):              # dir(module)'s order
        value = vars(plugin)[name]
        if type(value) is not FunctionType:
            if isinstance(value, (staticmethod, classmethod, MethodType)):
                if (getattr(value, attr, None) is not None
                        or getattr(getattr(value, "__func__", None), attr, None) is not None):
                    return None                    # a hook pluggy binds its own way
            continue
        opts = vars(value).get(attr)
        if opts is None:
            continue
        spec = specs.get(name)
        argnames = plain_argnames(value)
        if (not isinstance(opts, dict) or spec is None or argnames is None
                or opts.get("wrapper") or opts.get("hookwrapper") or opts.get("specname")
                or opts.get("optionalhook") or not set(argnames) <= set(spec.argnames)):
            return None
        found.append((name, HookImpl(plugin, plugin_name, value, argnames, opts)))
    return found


def plain_hooks(plugins: Sequence[tuple[str, object]], specs_namespace: object, project: str,
                manager: Callable[[], pluggy.PluginManager | None],
                make_manager: Callable[[], pluggy.PluginManager]) -> HookRelay | None:
    """A relay calling ``plugins`` (``(name, module)``, in registration order) on the
    specs of ``specs_namespace``, or None when pluggy must register them.

    ``manager()`` is pluggy's manager once made (calls then go to it), ``make_manager()``
    makes it (for a call the relay does not make itself)."""
    specs = hook_specs(specs_namespace, project)
    if specs is None or len({id(p) for _, p in plugins}) != len(plugins):
        return None
    impls: dict[str, list[HookImpl]] = {name: [] for name in specs}
    for plugin_name, plugin in plugins:
        found = _plugin_impls(plugin, plugin_name, specs, project)
        if found is None:
            return None
        for hook_name, impl in found:
            _add_impl(impls[hook_name], impl)
    return HookRelay({name: HookCaller(name, spec, impls[name], manager, make_manager)
                      for name, spec in specs.items()})


def _add_impl(impls: list[HookImpl], impl: HookImpl) -> None:
    """pluggy's ``HookCaller._add_hookimpl`` for implementations that are not wrappers
    (the list is called from its end)."""
    if impl.trylast:
        impls.insert(0, impl)
    elif impl.tryfirst:
        impls.append(impl)
    else:
        i = len(impls) - 1
        while i >= 0 and impls[i].tryfirst:
            i -= 1
        impls.insert(i + 1, impl)


class HookCaller:
    """``relay.vmforge_xxx``: calls a hook's implementations as pluggy's caller does."""

    __slots__ = ("_history", "_impls", "_make_manager", "_manager", "_order", "name", "spec")

    def __init__(self, name: str, spec: _Spec, impls: list[HookImpl],
                 manager: Callable[[], pluggy.PluginManager | None],
                 make_manager: Callable[[], pluggy.PluginManager]) -> None:
        self.name, self.spec, self._impls = name, spec, impls
        self._order = [(impl.function, impl.argnames) for impl in reversed(impls)]
        self._manager, self._make_manager = manager, make_manager
        #: the historic calls made here: (kwargs, result_callback)
        self._history: list[tuple[Mapping[str, object], Callable[[Any], None] | None]] = []

    def _pluggy(self) -> Any:
        """pluggy's caller of this hook (the manager made if it is not yet)."""
        pm = self._manager()
        return getattr((pm if pm is not None else self._make_manager()).hook, self.name)

    def _plain(self, kwargs: Mapping[str, object]) -> bool:
        return self._manager() is None and all(a in kwargs for a in self.spec.argnames)

    def _run(self, kwargs: Mapping[str, object], firstresult: bool) -> list[Any]:
        results = []
        for function, argnames in self._order:
            result = function(*[kwargs[a] for a in argnames])
            if result is not None:
                results.append(result)
                if firstresult:
                    break
        return results

    def __call__(self, *args: object, **kwargs: object) -> Any:
        if args or self.spec.historic or not self._plain(kwargs):
            return self._pluggy()(*args, **kwargs)
        if self.spec.firstresult:
            results = self._run(kwargs, True)
            return results[0] if results else None
        return self._run(kwargs, False)

    def call_historic(self, result_callback: Callable[[Any], None] | None = None,
                      kwargs: Mapping[str, object] | None = None) -> None:
        kwargs = kwargs or {}
        if not self.spec.historic or not self._plain(kwargs):
            self._pluggy().call_historic(result_callback=result_callback, kwargs=kwargs)
            return
        self._history.append((kwargs, result_callback))
        results = self._run(kwargs, False)
        if result_callback is not None:
            for result in results:
                result_callback(result)

    def call_extra(self, methods: Sequence[Callable[..., object]],
                   kwargs: Mapping[str, object]) -> Any:
        return self._pluggy().call_extra(methods, kwargs)

    def get_hookimpls(self) -> list[Any]:
        """The implementations, in pluggy's order (the last is called first)."""
        pm = self._manager()
        return getattr(pm.hook, self.name).get_hookimpls() if pm is not None else list(self._impls)

    def __getattr__(self, name: str) -> Any:        # the rest of pluggy's HookCaller
        return getattr(self._pluggy(), name)

    def __repr__(self) -> str:
        return f"<HookCaller {self.name!r}>"


class HookRelay:
    """``registry().hook`` for plain plugins: an attribute per spec."""

    def __init__(self, callers: dict[str, HookCaller]) -> None:
        self._callers = callers

    def __getattr__(self, name: str) -> HookCaller:
        try:
            return self._callers[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self) -> list[str]:
        return sorted(self._callers)

    def replay_history(self, pm: pluggy.PluginManager, plugins: Sequence[object]) -> None:
        """Give pluggy's manager ``pm``, made after plain calls and with ``plugins``
        registered, the historic calls made here, so that a plugin registered later
        sees them (the plugins that saw them here are not called again)."""
        for name, caller in self._callers.items():
            for kwargs, callback in caller._history:
                pm.subset_hook_caller(name, plugins).call_historic(callback, kwargs)
