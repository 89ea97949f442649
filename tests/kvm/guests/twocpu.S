# Two entry points, one per vCPU: each reports who it is on port 0x10, then halts.
        .code16
        .globl _start
_start:
        mov     $0xa0, %al
        out     %al, $0x10
        hlt
        .org    0x100
cpu1:
        mov     $0xb1, %al
        out     %al, $0x10
        hlt
