"""The ``vmforge`` command: ``run``, ``img``, ``plugins``."""
