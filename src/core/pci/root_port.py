"""``pcie-root-port``: QEMU 7.2's generic PCI Express root port with a hot-plug slot
(``gen_pcie_root_port.c``, ``pcie_root_port.c``, the slot parts of ``pcie.c``).

The function (1b36:000c, class 0604, type 1 header) carries, as QEMU lays it out:
the subsystem-ID capability at 0x40, MSI-X (one vector, in BAR0 of its own) at
0x48, the PCI Express capability (version 2, a root port with a slot) at 0x54,
AER at 0x100 and ACS at 0x148 in the extended space.  The slot has an attention
button, a power controller, power and attention indicators, presence detect, an
electromechanical interlock, Data Link Layer Link Active reporting, and it is
hot-plug capable and surprise-capable as QEMU's.

Hot-plug, as QEMU and Linux's ``pciehp`` play it:

- :meth:`PcieRootPort.hot_plug`: a function put on the empty secondary bus (slot
  0) sets Presence Detect State and Link Active, then raises Presence Detect
  Changed and Attention Button Pressed; the guest powers the slot on and scans;
- :meth:`PcieRootPort.unplug_request` (QMP ``device_del``): Attention Button
  Pressed; the guest releases the device and powers the slot off (Power
  Controller Control set with the power indicator off), which detaches the
  function: it is unrealized and :attr:`PcieRootPort.on_unplugged` is called
  (the machine's DEVICE_DELETED);
- every Slot Control write is a command completed at once (Command Completed).

A slot event is signalled when Hot-Plug Interrupt Enable is set and an enabled
event is pending, on MSI-X vector (Express Capabilities' message number) when
MSI-X is on, else on INTA (level, lowered when the guest clears the status).
"""

from __future__ import annotations

from collections.abc import Callable

from vmforge.device import Prop
from vmforge.pci import regs
from vmforge.pci.bridge import PciBridge
from vmforge.pci.device import PciDevice, parse_addr
from vmforge.pci.msix import Msix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["HotplugError", "PcieRootPort"]

DEVICE_ID_REDHAT_PCIE_RP = 0x000C
CAP_ID_SSVID = 0x0D
SSVID_SIZE = 8
EXP_SIZE = 0x3C                     # PCI_EXP_VER2_SIZEOF

# -- the PCI Express capability's registers (offsets in it) ---------------------------------
EXP_FLAGS = 0x02
EXP_DEVCAP = 0x04
EXP_DEVCTL = 0x08
EXP_DEVSTA = 0x0A
EXP_LNKCAP = 0x0C
EXP_LNKSTA = 0x12
EXP_SLTCAP = 0x14
EXP_SLTCTL = 0x18
EXP_SLTSTA = 0x1A
EXP_RTCTL = 0x1C
EXP_DEVCAP2 = 0x24
EXP_DEVCTL2 = 0x28
EXP_LNKCAP2 = 0x2C
EXP_LNKCTL2 = 0x30

FLAGS_VERSION_2 = 0x0002
FLAGS_TYPE_ROOT_PORT = 0x4 << 4
FLAGS_SLOT = 0x0100
FLAGS_IRQ_SHIFT = 9
FLAGS_IRQ = 0x3E00
DEVCAP_RBER = 0x8000
DEVCTL_ERR_ENABLES = 0x000F         # CERE | NFERE | FERE | URRE
DEVSTA_ERRORS = 0x000F              # CED | NFED | FED | URD
LNKCAP_ASPMS_L0S = 0x0400
LNKCAP_DLLLARC = 0x0010_0000
LNKCAP_LBNC = 0x0020_0000
LNK_SPEED_16GT = 4
LNK_WIDTH_X32 = 32
LNKSTA_DLLLA = 0x2000
SLTCAP_ABP = 0x01
SLTCAP_PCP = 0x02
SLTCAP_AIP = 0x08
SLTCAP_PIP = 0x10
SLTCAP_HPS = 0x20
SLTCAP_HPC = 0x40
SLTCAP_EIP = 0x0002_0000
SLTCAP_PSN_SHIFT = 19
SLTCTL_ABPE = 0x0001
SLTCTL_PDCE = 0x0008
SLTCTL_CCIE = 0x0010
SLTCTL_HPIE = 0x0020
SLTCTL_AIC = 0x00C0
SLTCTL_AIC_OFF = 0x00C0
SLTCTL_PIC = 0x0300
SLTCTL_PIC_ON = 0x0100
SLTCTL_PIC_BLINK = 0x0200
SLTCTL_PIC_OFF = 0x0300
SLTCTL_PCC = 0x0400
SLTCTL_EIC = 0x0800
SLTSTA_ABP = 0x0001
SLTSTA_PFD = 0x0002
SLTSTA_MRLSC = 0x0004
SLTSTA_PDC = 0x0008
SLTSTA_CC = 0x0010
SLTSTA_PDS = 0x0040
SLTSTA_EIS = 0x0080
#: the events QEMU's slot raises (PCI_EXP_HP_EV_SUPPORTED: ABP | PDC | CCI)
HP_EV_SUPPORTED = SLTSTA_ABP | SLTSTA_PDC | SLTSTA_CC
#: events a status write must not lose (QEMU's PCIE_SLOT_EVENTS)
SLOT_EVENTS = SLTSTA_ABP | SLTSTA_PFD | SLTSTA_MRLSC | SLTSTA_PDC | SLTSTA_CC
RTCTL_ERR_ENABLES = 0x0007          # SECEE | SENFEE | SEFEE
DEVCAP2_ARI = 0x20
DEVCAP2_EFF = 0x0010_0000
DEVCAP2_EETLPP = 0x0020_0000
DEVCTL2_ARI = 0x20
DEVCTL2_EETLPPB = 0x8000
LNKCAP2_SPEEDS_TO_16GT = 0x1E

# -- extended capabilities: AER and ACS as the generic root port places them -----------------
AER_OFFSET = 0x100
AER_SIZE = 0x48                     # PCI_ERR_SIZEOF
ACS_OFFSET = AER_OFFSET + AER_SIZE
ACS_SIZE = 8
EXT_CAP_ID_ERR = 0x0001
EXT_CAP_ID_ACS = 0x000D
ERR_UNCOR_STATUS, ERR_UNCOR_MASK, ERR_UNCOR_SEVER = 0x04, 0x08, 0x0C
ERR_COR_STATUS, ERR_COR_MASK, ERR_CAP = 0x10, 0x14, 0x18
ERR_ROOT_COMMAND, ERR_ROOT_STATUS = 0x2C, 0x30
ERR_UNC_SUPPORTED = 0x03FF_F030
ERR_UNC_SEVERITY_DEFAULT = 0x0046_2030
ERR_COR_SUPPORTED = 0xF1C1
ERR_COR_MASK_DEFAULT = 0xE000
ERR_CAP_ECRC_GENC, ERR_CAP_ECRC_GENE = 0x20, 0x40
ERR_CAP_ECRC_CHKC, ERR_CAP_ECRC_CHKE = 0x80, 0x100
ERR_CAP_MHRC, ERR_CAP_MHRE = 0x200, 0x400
ERR_ROOT_CMD_EN_MASK = 0x07
ERR_ROOT_STATUS_REPORT_MASK = 0x7F
ACS_CAP_BITS = 0x5F                 # SV | TB | RR | CR | UF | DT


def _powered_off(ctl: int) -> bool:
    """Power controller off and power indicator off (QEMU's test for "let go")."""
    return bool(ctl & SLTCTL_PCC) and ctl & SLTCTL_PIC == SLTCTL_PIC_OFF


class HotplugError(Exception):
    """A hot-plug request the slot refuses (QEMU's words)."""


def _put(buf: bytearray, offset: int, size: int, value: int) -> None:
    buf[offset:offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def _get(buf: bytearray, offset: int, size: int) -> int:
    return int.from_bytes(buf[offset:offset + size], "little")


def uint8(value: Any) -> int:
    number = int(value, 0) if isinstance(value, str) else int(value)
    if not 0 <= number <= 0xFF:
        raise ValueError(f"{value!r} is not in 0..255")
    return number


def uint16(value: Any) -> int:
    number = int(value, 0) if isinstance(value, str) else int(value)
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"{value!r} is not in 0..65535")
    return number


class PcieRootPort(PciBridge):
    """``pcie-root-port``."""

    name: ClassVar[str] = "pcie-root-port"
    vendor_id = regs.VENDOR_ID_REDHAT
    device_id = DEVICE_ID_REDHAT_PCIE_RP
    interrupt_pin = 1
    is_express: ClassVar[bool] = True

    chassis = Prop(uint8, 0, "chassis number (with slot=: unique per machine)")
    slot = Prop(uint16, 0, "physical slot number (Slot Capabilities)")
    port = Prop(uint8, 0, "port number (Link Capabilities)")
    hotplug = Prop(bool, True, "the slot is hot-plug capable")

    def __init__(self, **props: Any) -> None:
        super().__init__(**props)
        #: called with the function the guest let go (powered the slot off)
        self.on_unplugged: Callable[[PciDevice], None] | None = None
        self._hpev_notified = False
        c, w, w1c = self.config, self.wmask, self.w1cmask
        # pci_bridge_ssvid_init: the subsystem ids in a capability of their own
        ssvid = self.add_capability(CAP_ID_SSVID, SSVID_SIZE)
        _put(c, ssvid + 4, 2, self.vendor_id)
        Msix.exclusive_bar(self, 1, 0)
        exp = self.exp = self.add_capability(regs.CAP_ID_EXP, EXP_SIZE)
        _put(c, exp + EXP_FLAGS, 2, FLAGS_VERSION_2 | FLAGS_TYPE_ROOT_PORT | FLAGS_SLOT)
        _put(c, exp + EXP_DEVCAP, 4, DEVCAP_RBER)
        _put(w, exp + EXP_DEVCTL, 2, DEVCTL_ERR_ENABLES)
        _put(w1c, exp + EXP_DEVSTA, 2, DEVSTA_ERRORS)
        _put(c, exp + EXP_LNKCAP, 4, self.port << 24 | LNKCAP_DLLLARC | LNKCAP_LBNC
             | LNKCAP_ASPMS_L0S | LNK_WIDTH_X32 << 4 | LNK_SPEED_16GT)
        _put(c, exp + EXP_LNKSTA, 2, LNK_WIDTH_X32 << 4 | LNK_SPEED_16GT)
        sltcap = (self.slot << SLTCAP_PSN_SHIFT | SLTCAP_EIP | SLTCAP_PIP | SLTCAP_AIP
                  | SLTCAP_ABP | SLTCAP_PCP)
        if self.hotplug:
            sltcap |= SLTCAP_HPS | SLTCAP_HPC
        _put(c, exp + EXP_SLTCAP, 4, sltcap)
        _put(c, exp + EXP_SLTCTL, 2, SLTCTL_PIC_OFF | SLTCTL_AIC_OFF)
        _put(w, exp + EXP_SLTCTL, 2, SLTCTL_PIC | SLTCTL_AIC | SLTCTL_HPIE | SLTCTL_CCIE
             | SLTCTL_PDCE | SLTCTL_ABPE | SLTCTL_EIC | SLTCTL_PCC)
        _put(w1c, exp + EXP_SLTSTA, 2, HP_EV_SUPPORTED)
        _put(w, exp + EXP_RTCTL, 2, RTCTL_ERR_ENABLES)
        _put(c, exp + EXP_DEVCAP2, 4, DEVCAP2_ARI | DEVCAP2_EFF | DEVCAP2_EETLPP)
        _put(w, exp + EXP_DEVCTL2, 2, DEVCTL2_ARI | DEVCTL2_EETLPPB)
        _put(c, exp + EXP_LNKCAP2, 4, LNKCAP2_SPEEDS_TO_16GT)
        _put(c, exp + EXP_LNKCTL2, 2, LNK_SPEED_16GT)
        self._init_extended()

    def _init_extended(self) -> None:
        """AER (pcie_aer_init + pcie_aer_root_init) and ACS (pcie_acs_init)."""
        c, w, w1c, m = self.config, self.wmask, self.w1cmask, self.cmask
        for off, size in ((AER_OFFSET, AER_SIZE), (ACS_OFFSET, ACS_SIZE)):
            w[off:off + size] = bytes(size)
            m[off:off + size] = b"\xff" * size
        a = AER_OFFSET
        _put(c, a, 4, ACS_OFFSET << 20 | 2 << 16 | EXT_CAP_ID_ERR)
        _put(w1c, a + ERR_UNCOR_STATUS, 4, ERR_UNC_SUPPORTED)
        _put(w, a + ERR_UNCOR_MASK, 4, ERR_UNC_SUPPORTED)
        _put(c, a + ERR_UNCOR_SEVER, 4, ERR_UNC_SEVERITY_DEFAULT)
        _put(w, a + ERR_UNCOR_SEVER, 4, ERR_UNC_SUPPORTED)
        _put(w1c, a + ERR_COR_STATUS, 4, ERR_COR_SUPPORTED)
        _put(c, a + ERR_COR_MASK, 4, ERR_COR_MASK_DEFAULT)
        _put(w, a + ERR_COR_MASK, 4, ERR_COR_SUPPORTED)
        _put(c, a + ERR_CAP, 4, ERR_CAP_ECRC_GENC | ERR_CAP_ECRC_CHKC | ERR_CAP_MHRC)
        _put(w, a + ERR_CAP, 4, ERR_CAP_ECRC_GENE | ERR_CAP_ECRC_CHKE | ERR_CAP_MHRE)
        _put(w, a + ERR_ROOT_COMMAND, 4, ERR_ROOT_CMD_EN_MASK)
        _put(w1c, a + ERR_ROOT_STATUS, 4, ERR_ROOT_STATUS_REPORT_MASK)
        _put(c, ACS_OFFSET, 4, 1 << 16 | EXT_CAP_ID_ACS)
        _put(c, ACS_OFFSET + 4, 2, ACS_CAP_BITS)
        _put(w, ACS_OFFSET + 6, 2, ACS_CAP_BITS)

    # -- slot registers --------------------------------------------------------------------

    def _word(self, reg: int) -> int:
        return _get(self.config, self.exp + reg, 2)

    def _set_word(self, reg: int, value: int) -> None:
        _put(self.config, self.exp + reg, 2, value)

    @property
    def slot_control(self) -> int:
        return self._word(EXP_SLTCTL)

    @property
    def slot_status(self) -> int:
        return self._word(EXP_SLTSTA)

    @property
    def occupant(self) -> PciDevice | None:
        """The function in the slot (device 0 of the secondary bus)."""
        return self.secondary.device_at(0)

    def _set_present(self, present: bool) -> None:
        sta, lnk = self.slot_status, self._word(EXP_LNKSTA)
        self._set_word(EXP_SLTSTA, sta | SLTSTA_PDS if present else sta & ~SLTSTA_PDS)
        self._set_word(EXP_LNKSTA, lnk | LNKSTA_DLLLA if present else lnk & ~LNKSTA_DLLLA)

    # -- events (hotplug_event_notify and friends) --------------------------------------

    def _update_event_status(self) -> None:
        ctl, sta = self.slot_control, self.slot_status
        self._hpev_notified = bool(ctl & SLTCTL_HPIE) and bool(sta & ctl & HP_EV_SUPPORTED)

    def _notify(self) -> None:
        prev = self._hpev_notified
        self._update_event_status()
        if prev == self._hpev_notified:
            return
        if self.msix is not None and self.msix.enabled:
            if self._hpev_notified:
                self.msix.notify((self._word(EXP_FLAGS) & FLAGS_IRQ) >> FLAGS_IRQ_SHIFT)
        else:
            self.set_irq(self._hpev_notified)

    def _event(self, event: int) -> None:
        sta = self.slot_status
        if sta & event == event:
            return
        self._set_word(EXP_SLTSTA, sta | event)
        self._notify()

    def _event_clear(self) -> None:
        self._update_event_status()
        if not (self.msix is not None and self.msix.enabled) and not self._hpev_notified:
            self.set_irq(False)

    # -- plugging -------------------------------------------------------------------------

    def cold_plug(self, dev: PciDevice) -> None:
        """A function present from the start: in the slot, no event."""
        self.secondary.plug(dev)
        self._set_present(True)

    def check_plug(self, dev: PciDevice) -> None:
        """What QEMU refuses before a plug (pcie_cap_slot_pre_plug_cb, the bus)."""
        if self.slot_status & SLTSTA_EIS:
            raise HotplugError("slot is electromechanically locked")
        where = parse_addr(dev.addr)
        if where is None:
            return                  # the first free slot, as QEMU picks one
        slot, function = where
        owner = self.secondary.device_at(slot, function)
        if owner is not None:
            raise HotplugError(f"PCI: slot {slot} function {function} not available for "
                               f"{dev.name}, in use by {owner.name},"
                               f"id={getattr(owner, 'qdev_id', None) or ''}")

    def _hotplug_capable(self, what: str) -> None:
        if not _get(self.config, self.exp + EXP_SLTCAP, 4) & SLTCAP_HPC:
            raise HotplugError(f"{what} failed: unsupported by the port device "
                               f"'{getattr(self, 'qdev_id', '')}'")

    def hot_plug(self, dev: PciDevice) -> None:
        """Put ``dev`` in the slot of a running machine and tell the guest
        (pcie_cap_slot_plug_cb: Presence Detect and Attention Button events); the
        function stays unpowered until the guest turns the slot's power on."""
        self.check_plug(dev)
        self._hotplug_capable("Hot-plug")
        self.secondary.plug(dev)            # addr=, else the first free slot
        if dev.devfn is not None and regs.function_of(dev.devfn) == 0:
            self._set_present(True)          # function 0 last: then the guest is told
            self._event(SLTSTA_PDC | SLTSTA_ABP)
        self._update_power()

    def unplug_request(self, dev: PciDevice) -> bool:
        """``device_del`` (pcie_cap_slot_unplug_request_cb): press the attention
        button, and the guest powers the slot off when it has let the device go;
        a slot already powered off is emptied at once.  True if it was."""
        self._hotplug_capable("Hot-unplug")
        if self.slot_status & SLTSTA_EIS:
            raise HotplugError("slot is electromechanically locked")
        ctl = self.slot_control
        if ctl & SLTCTL_PIC == SLTCTL_PIC_BLINK:
            raise HotplugError("Hot-unplug failed: guest is busy (power indicator blinking)")
        if dev.devfn and self.occupant is None:
            self._remove(dev)       # a function the guest never saw (no function 0)
            return True
        if _powered_off(ctl):
            self._detach()
            self._notify()
            self._set_word(EXP_SLTSTA, self.slot_status & ~SLTSTA_ABP)
            return True
        self._event(SLTSTA_ABP)
        return False

    def _update_power(self) -> None:
        """pcie_cap_update_power: the functions have power while the slot's power
        controller is on."""
        self.secondary.powered = not self.slot_control & SLTCTL_PCC

    def _remove(self, dev: PciDevice) -> None:
        self.secondary.unplug(dev)
        if dev.realized:
            dev.unrealize()
        if self.on_unplugged is not None:
            self.on_unplugged(dev)

    def _detach(self) -> None:
        """The slot is emptied (pcie_cap_slot_do_unplug): the functions go, Presence
        Detect State and Link Active drop, Presence Detect Changed rises."""
        for dev in list(self.secondary.devices.values()):
            self._remove(dev)
        self._set_present(False)
        self._set_word(EXP_SLTSTA, self.slot_status | SLTSTA_PDC)

    # -- configuration writes (rp_write_config) --------------------------------------------

    def config_write(self, addr: int, size: int, value: int) -> None:
        old_ctl, old_sta = self.slot_control, self.slot_status
        super().config_write(addr, size, value)
        self._slot_write(old_ctl, old_sta, addr, size, value)

    def _slot_write(self, old_ctl: int, old_sta: int, addr: int, size: int, value: int) -> None:
        """QEMU's pcie_cap_slot_write_config."""
        sta_at, ctl_at = self.exp + EXP_SLTSTA, self.exp + EXP_SLTCTL
        sta = self.slot_status

        def overlaps(reg: int) -> bool:
            return addr < reg + 2 and reg < addr + size

        if overlaps(sta_at):
            val = value >> 8 * (sta_at - addr) if addr <= sta_at else value << 8 * (addr - sta_at)
            if val & ~old_sta & SLOT_EVENTS:
                # a guest clearing bits that were not set would lose events that
                # arrived meanwhile: keep the status as it was (QEMU's work-around)
                sta = sta & ~SLOT_EVENTS | old_sta & SLOT_EVENTS
                self._set_word(EXP_SLTSTA, sta)
            self._event_clear()
        if not overlaps(ctl_at):
            return
        val = value >> 8 * (ctl_at - addr) if addr <= ctl_at else value << 8 * (addr - ctl_at)
        ctl = self.slot_control
        if ctl & SLTCTL_EIC:
            self._set_word(EXP_SLTCTL, ctl & ~SLTCTL_EIC)
            sta ^= SLTSTA_EIS
            self._set_word(EXP_SLTSTA, sta)
        if sta & SLTSTA_PDS and _powered_off(val) and not _powered_off(old_ctl):
            self._detach()          # the guest let the device go and powered the slot off
        self._update_power()
        self._notify()
        self._event(SLTSTA_CC)

    # -- reset -------------------------------------------------------------------------------

    def reset(self) -> None:
        """rp_reset_hold: root, device errors, slot, ARI forwarding, ACS, AER root, then
        the bridge."""
        c, exp = self.config, self.exp
        _put(c, exp + EXP_RTCTL, 2, 0)
        _put(c, exp + EXP_DEVCTL, 2, _get(c, exp + EXP_DEVCTL, 2) & ~DEVCTL_ERR_ENABLES)
        populated = self.occupant is not None
        ctl = self.slot_control & ~(SLTCTL_EIC | SLTCTL_PIC | SLTCTL_AIC | SLTCTL_HPIE
                                    | SLTCTL_CCIE | SLTCTL_PDCE | SLTCTL_ABPE | SLTCTL_PCC)
        ctl |= SLTCTL_AIC_OFF | (SLTCTL_PIC_ON if populated else SLTCTL_PIC_OFF | SLTCTL_PCC)
        self._set_word(EXP_SLTCTL, ctl)
        self._set_word(EXP_SLTSTA, self.slot_status & ~(SLTSTA_EIS | SLTSTA_CC | SLTSTA_PDC
                                                        | SLTSTA_ABP))
        _put(c, exp + EXP_DEVCTL2, 2, _get(c, exp + EXP_DEVCTL2, 2) & ~DEVCTL2_ARI)
        _put(c, ACS_OFFSET + 6, 2, 0)
        _put(c, AER_OFFSET + ERR_ROOT_COMMAND, 4, 0)
        super().reset()
        self._update_event_status()
        self._update_power()

    # -- state -------------------------------------------------------------------------------

    def load_state(self, record: dict[str, Any]) -> None:
        super().load_state(record)
        self._update_event_status()        # pcie_cap_slot_post_load
