"""Saving and restoring a whole machine: device and hart records, RAM, snapshots.

- :mod:`vmforge.migration.record`: :class:`StateError` and the field checks every
  device's ``load_state`` uses (named, versioned records of plain values).
- :mod:`vmforge.migration.state`: a machine's state as one record, checked
  against the machine before anything is applied; encoded with a checksum.
- :mod:`vmforge.migration.ram`: guest RAM regions, zero pages skipped.
- :mod:`vmforge.migration.snapshot`: ``savevm``/``loadvm``/``delvm``/``info
  snapshots`` in a qcow2 image's internal snapshots.

Importing the package is cheap: devices import :mod:`~vmforge.migration.record`.
"""

from vmforge.migration.record import StateError

__all__ = ["StateError"]
