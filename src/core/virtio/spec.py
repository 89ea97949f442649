"""Numbers from the virtio 1.2 specification that every device and transport shares.

Device ids (section 5), feature bits reserved for the transport and the rings
(section 6), the device status bits (section 2.1) and the descriptor flags of
split (2.7) and packed (2.8) rings.
"""

from __future__ import annotations

__all__ = [
    "DEVICE_NAMES",
    "STATUS_NAMES",
]

# -- device ids (section 5) ---------------------------------------------------------------
VIRTIO_ID_NET = 1
VIRTIO_ID_BLOCK = 2
VIRTIO_ID_CONSOLE = 3
VIRTIO_ID_RNG = 4

DEVICE_NAMES = {VIRTIO_ID_NET: "net", VIRTIO_ID_BLOCK: "block", VIRTIO_ID_CONSOLE: "console",
                VIRTIO_ID_RNG: "entropy"}

# -- reserved feature bits (section 6) --------------------------------------------------------
VIRTIO_F_NOTIFY_ON_EMPTY = 24  # legacy only
VIRTIO_F_ANY_LAYOUT = 27  # legacy only; always true for modern devices
VIRTIO_F_INDIRECT_DESC = 28
VIRTIO_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_F_RING_PACKED = 34
VIRTIO_F_IN_ORDER = 35
VIRTIO_F_RING_RESET = 40

#: the feature bits a transport and the rings interpret (devices own the others)
TRANSPORT_FEATURES = ((1 << VIRTIO_F_INDIRECT_DESC) | (1 << VIRTIO_F_EVENT_IDX)
                      | (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_F_RING_PACKED)
                      | (1 << VIRTIO_F_ANY_LAYOUT) | (1 << VIRTIO_F_NOTIFY_ON_EMPTY))

# -- device status (section 2.1) ------------------------------------------------------------
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_DEVICE_NEEDS_RESET = 0x40
STATUS_FAILED = 0x80

STATUS_NAMES = {STATUS_ACKNOWLEDGE: "ACKNOWLEDGE", STATUS_DRIVER: "DRIVER",
                STATUS_DRIVER_OK: "DRIVER_OK", STATUS_FEATURES_OK: "FEATURES_OK",
                STATUS_DEVICE_NEEDS_RESET: "DEVICE_NEEDS_RESET", STATUS_FAILED: "FAILED"}

# -- descriptor flags ------------------------------------------------------------------------
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_DESC_F_AVAIL = 1 << 7  # packed
VIRTQ_DESC_F_USED = 1 << 15  # packed
VIRTQ_USED_F_NO_NOTIFY = 1  # split: used.flags
VIRTQ_AVAIL_F_NO_INTERRUPT = 1  # split: avail.flags
RING_EVENT_FLAGS_ENABLE = 0  # packed event suppression
RING_EVENT_FLAGS_DISABLE = 1
RING_EVENT_FLAGS_DESC = 2

#: largest queue of either layout
MAX_QUEUE_SIZE = 32768


def split_ring_sizes(size: int) -> tuple[int, int, int]:
    """Bytes of a split ring's descriptor table, available ring and used ring."""
    return 16 * size, 6 + 2 * size, 6 + 8 * size


def legacy_ring_layout(base: int, size: int, align: int) -> tuple[int, int, int]:
    """``(desc, avail, used)`` of a legacy split ring at ``base`` (section 2.7.2, legacy):
    the available ring follows the table, the used ring starts at the next
    ``align`` boundary."""
    avail = base + 16 * size
    used = avail + 6 + 2 * size
    used = (used + align - 1) // align * align
    return base, avail, used


def describe_status(status: int) -> str:
    """``ACKNOWLEDGE|DRIVER|...`` for a status byte."""
    names = [name for bit, name in STATUS_NAMES.items() if status & bit]
    return "|".join(names) or "0"
