"""The Parallels expandable disk format as a vmforge block plugin."""

from vmforge_parallels.driver import Parallels

__all__ = ["Parallels"]
