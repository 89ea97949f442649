# MMIO writes and reads of 1, 2 and 4 bytes at 0x20000 (no RAM there), a write to
# the read-only slot at 0x30000 (an MMIO exit) and a read from it (plain memory).
        .code16
        .globl _start
_start:
        mov     $0x2000, %ax
        mov     %ax, %ds
        movl    $0x11223344, 0x10
        movw    $0x5566, 0x20
        movb    $0x77, 0x30
        mov     0x40, %eax
        mov     0x44, %bx
        mov     0x46, %cl
        mov     $0x3000, %dx
        mov     %dx, %ds
        movw    $0xbeef, 0x8
        mov     0x0, %edx
        xor     %si, %si
        mov     %si, %ds
        out     %eax, $0x10
        mov     %bx, %ax
        out     %ax, $0x10
        mov     %cl, %al
        out     %al, $0x10
        mov     %edx, %eax
        out     %eax, $0x10
        hlt
