"""vmforge-cloop: Linux's compressed loop images (cloop 2.0), read-only (QEMU's ``cloop``)."""

from vmforge_cloop.driver import Cloop

__all__ = ["Cloop"]
