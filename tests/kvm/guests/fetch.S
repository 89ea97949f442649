# Jumps to 0x20000, where there is no RAM: the instruction fetch cannot be done.
        .code16
        .globl _start
_start:
        ljmp    $0x2000, $0
