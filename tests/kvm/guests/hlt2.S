# hlt twice (no irqchip: each one an exit), reporting between them.
        .code16
        .globl _start
_start:
        hlt
        mov     $1, %al
        out     %al, $0x10
        hlt
        mov     $2, %al
        out     %al, $0x10
        hlt
