# A port write and an MMIO write that ioeventfds take, then one the callbacks see.
        .code16
        .globl _start
_start:
        mov     $0x5a, %al
        out     %al, $0x40
        mov     $0x2000, %ax
        mov     %ax, %ds
        movl    $0x1234, 0x0
        movl    $0x9999, 0x0
        xor     %ax, %ax
        mov     %ax, %ds
        mov     $0x01, %al
        out     %al, $0x10
        hlt
