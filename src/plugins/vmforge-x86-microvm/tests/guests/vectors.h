/* The interrupt vectors the guests' start-up files (pvh.S, flat64.S) give an
 * entry stub irq_stub_VECTOR, which calls irq_handler(VECTOR).  Each includer
 * defines VECTOR(v) first. */
VECTOR(0x24)
VECTOR(0x25)
VECTOR(0x26)
VECTOR(0x27)
VECTOR(0x28)
VECTOR(0x29)
VECTOR(0x2a)
VECTOR(0x2b)
VECTOR(0x2c)
VECTOR(0x30)
VECTOR(0xff)
