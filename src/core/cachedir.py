"""Where vmforge keeps what it caches, outside any repository:
``${VMFORGE_CACHE:-~/.cache/vmforge}`` (built guests, benchmark images, the plugin
registry's scan).  Imports only ``os``: the registry asks for it at start-up."""

from __future__ import annotations

import os

__all__ = ["cache_root"]


def cache_root() -> str:
    """``$VMFORGE_CACHE`` if set and not empty, else ``~/.cache/vmforge``."""
    return os.environ.get("VMFORGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "vmforge")
