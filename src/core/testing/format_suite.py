"""The conformance suite as a test module, for ``pytest --vmforge-format NAME``."""

from __future__ import annotations

from vmforge.testing.blockkit import BlockDriverConformance


class TestBlockFormat(BlockDriverConformance):
    """Runs once per ``--vmforge-format`` value."""

    vmforge_from_option = True
