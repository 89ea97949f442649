"""``-netdev user`` for vmforge: user-mode networking through libslirp (ctypes).

- :mod:`vmforge_slirp.user`: :class:`SlirpNet`, the back-end (registered as
  the ``vmforge.netdev`` entry point ``user``);
- :mod:`vmforge_slirp.libslirp`: the ctypes bindings of ``libslirp.h``.

It needs the shared library only (Debian package ``libslirp0``), no compiler.
"""

from vmforge_slirp.user import SlirpNet, parse_hostfwd

__all__ = ["SlirpNet", "parse_hostfwd"]
