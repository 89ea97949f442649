# Writes one byte to pages 2, 5 and 7, then halts.
        .code16
        .globl _start
_start:
        movb    $1, 0x2000
        movb    $1, 0x5123
        movb    $1, 0x7fff
        hlt
