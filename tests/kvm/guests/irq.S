# The master PIC at vectors 0x20-0x27 with only IRQ 5 unmasked; the handler of
# vector 0x25 (the host writes its IVT entry) reports on port 0x10 and acks.
# Port 0x99 tells the host the guest waits; then sti; hlt until the interrupt.
        .code16
        .globl _start
_start:
        mov     $0x11, %al
        out     %al, $0x20
        mov     $0x20, %al
        out     %al, $0x21
        mov     $0x04, %al
        out     %al, $0x21
        mov     $0x01, %al
        out     %al, $0x21
        mov     $0xdf, %al
        out     %al, $0x21
        out     %al, $0x99
1:      sti
        hlt
        jmp     1b
        .org    0x80
handler:
        mov     $0x25, %al
        out     %al, $0x10
        mov     $0x20, %al
        out     %al, $0x20
        iret
