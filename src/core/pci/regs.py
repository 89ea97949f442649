"""Numbers of the PCI Local Bus and PCI Express specifications that the bus,
the devices and the guest-side test driver share (Linux's ``pci_regs.h`` names).
"""

from __future__ import annotations

# -- the type 0 header ------------------------------------------------------------------
VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION_ID = 0x08
CLASS_PROG = 0x09
CLASS_DEVICE = 0x0A  # the class and subclass, one 16-bit word
CACHE_LINE_SIZE = 0x0C
LATENCY_TIMER = 0x0D
HEADER_TYPE = 0x0E
BIST = 0x0F
BASE_ADDRESS_0 = 0x10
CARDBUS_CIS = 0x28
SUBSYSTEM_VENDOR_ID = 0x2C
SUBSYSTEM_ID = 0x2E
ROM_ADDRESS = 0x30
CAPABILITY_LIST = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D
MIN_GNT = 0x3E
MAX_LAT = 0x3F

#: bytes of the standard header; capabilities live above it
HEADER_SIZE = 0x40
#: conventional PCI configuration space
CONFIG_SPACE_SIZE = 0x100
#: PCI Express extended configuration space
EXP_CONFIG_SPACE_SIZE = 0x1000
#: six BARs in a type 0 header
NUM_BARS = 6

HEADER_TYPE_NORMAL = 0x00
HEADER_TYPE_MULTI_FUNCTION = 0x80

# -- command and status -----------------------------------------------------------------
COMMAND_IO = 0x0001
COMMAND_MEMORY = 0x0002
COMMAND_MASTER = 0x0004
COMMAND_SERR = 0x0100
COMMAND_INTX_DISABLE = 0x0400

STATUS_INTERRUPT = 0x0008
STATUS_CAP_LIST = 0x0010
STATUS_PARITY = 0x0100
STATUS_SIG_TARGET_ABORT = 0x0800
STATUS_REC_TARGET_ABORT = 0x1000
STATUS_REC_MASTER_ABORT = 0x2000
STATUS_SIG_SYSTEM_ERROR = 0x4000
STATUS_DETECTED_PARITY = 0x8000
#: status bits a write of 1 clears
STATUS_W1C = (STATUS_PARITY | STATUS_SIG_TARGET_ABORT | STATUS_REC_TARGET_ABORT
              | STATUS_REC_MASTER_ABORT | STATUS_SIG_SYSTEM_ERROR | STATUS_DETECTED_PARITY)

# -- base address registers -------------------------------------------------------------
BASE_ADDRESS_SPACE_IO = 0x01
BASE_ADDRESS_SPACE_MEMORY = 0x00
BASE_ADDRESS_MEM_TYPE_32 = 0x00
BASE_ADDRESS_MEM_TYPE_64 = 0x04
BASE_ADDRESS_MEM_PREFETCH = 0x08
BASE_ADDRESS_MEM_MASK = ~0x0F
BASE_ADDRESS_IO_MASK = ~0x03

# -- capabilities -----------------------------------------------------------------------
CAP_ID_PM = 0x01
CAP_ID_MSI = 0x05
CAP_ID_VNDR = 0x09
CAP_ID_EXP = 0x10
CAP_ID_MSIX = 0x11

MSIX_FLAGS = 2  # offset of Message Control in the capability
MSIX_TABLE = 4
MSIX_PBA = 8
MSIX_CAP_SIZE = 12
MSIX_FLAGS_QSIZE = 0x07FF
MSIX_FLAGS_MASKALL = 0x4000
MSIX_FLAGS_ENABLE = 0x8000
MSIX_BIR_MASK = 0x7
MSIX_ENTRY_SIZE = 16
MSIX_ENTRY_LOWER_ADDR = 0
MSIX_ENTRY_UPPER_ADDR = 4
MSIX_ENTRY_DATA = 8
MSIX_ENTRY_VECTOR_CTRL = 12
MSIX_ENTRY_CTRL_MASKBIT = 1

# -- class codes (class << 8 | subclass) ----------------------------------------------------
CLASS_STORAGE_SCSI = 0x0100
CLASS_NETWORK_ETHERNET = 0x0200
CLASS_BRIDGE_HOST = 0x0600
CLASS_COMMUNICATION_OTHER = 0x0780
CLASS_OTHERS = 0x00FF

# -- vendors --------------------------------------------------------------------------------
VENDOR_ID_REDHAT_QUMRANET = 0x1AF4
VENDOR_ID_REDHAT = 0x1B36
SUBVENDOR_ID_REDHAT_QUMRANET = 0x1AF4
SUBDEVICE_ID_QEMU = 0x1100
DEVICE_ID_REDHAT_PCIE_HOST = 0x0008

#: the four INTx pins (the Interrupt Pin register holds pin + 1; 0: none)
NUM_PINS = 4


def devfn(slot: int, function: int = 0) -> int:
    """``slot << 3 | function`` (PCI_DEVFN)."""
    if not 0 <= slot < 32 or not 0 <= function < 8:
        raise ValueError(f"slot {slot} / function {function} out of range (0..31 / 0..7)")
    return slot << 3 | function


def slot_of(dfn: int) -> int:
    return dfn >> 3 & 0x1F


def function_of(dfn: int) -> int:
    return dfn & 7


def bar_offset(index: int) -> int:
    """Config-space offset of BAR ``index`` (0..5)."""
    return BASE_ADDRESS_0 + 4 * index


def swizzle(slot: int, pin: int) -> int:
    """The standard INTx swizzle: pin (0 = INTA) of a device in ``slot`` -> host line."""
    return (pin + slot) % NUM_PINS
