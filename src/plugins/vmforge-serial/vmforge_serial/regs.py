"""Register numbers and bits of the 8250/16550A family (as Linux names them).

Register numbers are multiplied by ``1 << regshift`` to give the byte offset.
"""

from __future__ import annotations

# -- register numbers -------------------------------------------------------------
RBR = 0  # read, DLAB=0: receive buffer
THR = 0  # write, DLAB=0: transmit holding
DLL = 0  # DLAB=1: divisor latch low
IER = 1  # DLAB=0: interrupt enable
DLM = 1  # DLAB=1: divisor latch high
IIR = 2  # read: interrupt identification
FCR = 2  # write: FIFO control
LCR = 3  # line control
MCR = 4  # modem control
LSR = 5  # line status
MSR = 6  # modem status
SCR = 7  # scratch

NUM_REGS = 8

# -- IER ----------------------------------------------------------------------------
IER_RDI = 0x01  # received data available (and character timeout)
IER_THRI = 0x02  # transmit holding register empty
IER_RLSI = 0x04  # receiver line status
IER_MSI = 0x08  # modem status
IER_MASK = 0x0F

# -- IIR ----------------------------------------------------------------------------
IIR_NO_INT = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_CTI = 0x0C  # character timeout
IIR_FIFO_ENABLED = 0xC0  # both bits set: a working 16550A FIFO

# -- FCR ----------------------------------------------------------------------------
FCR_ENABLE_FIFO = 0x01
FCR_CLEAR_RCVR = 0x02
FCR_CLEAR_XMIT = 0x04
FCR_DMA_SELECT = 0x08
FCR_TRIGGER_MASK = 0xC0
FCR_STICKY = 0xC9  # the bits that stay set (FIFO enable, DMA mode, trigger)
#: receive trigger level (bytes) for FCR bits 7:6 on a 16-byte FIFO
FCR_TRIGGER_LEVELS = {0x00: 1, 0x40: 4, 0x80: 8, 0xC0: 14}

# -- LCR ----------------------------------------------------------------------------
LCR_WLEN_MASK = 0x03
LCR_STOP = 0x04
LCR_PARITY = 0x08
LCR_EPAR = 0x10
LCR_SPAR = 0x20
LCR_SBC = 0x40  # set break
LCR_DLAB = 0x80

# -- MCR ----------------------------------------------------------------------------
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
MCR_MASK = 0x1F

# -- LSR ----------------------------------------------------------------------------
LSR_DR = 0x01
LSR_OE = 0x02
LSR_PE = 0x04
LSR_FE = 0x08
LSR_BI = 0x10
LSR_THRE = 0x20
LSR_TEMT = 0x40
LSR_FIFOE = 0x80  # an error somewhere in the receive FIFO
LSR_INT_ANY = 0x1E  # OE | PE | FE | BI: raise the line-status interrupt

# -- MSR ----------------------------------------------------------------------------
MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_ANY_DELTA = 0x0F
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
MSR_STATUS = 0xF0
