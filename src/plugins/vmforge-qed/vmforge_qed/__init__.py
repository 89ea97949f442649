"""QEMU's QED disk format as a vmforge block plugin."""

from vmforge_qed.driver import Qed

__all__ = ["Qed"]
