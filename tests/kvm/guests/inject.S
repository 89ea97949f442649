# No in-kernel irqchip: the host injects vector 0x25 (KVM_INTERRUPT) while the guest
# waits in sti; hlt; the handler (IVT entry written by the host) reports on port
# 0x10; the guest then halts again.
        .code16
        .globl _start
_start:
        sti
        hlt
        mov     $0x02, %al
        out     %al, $0x10
        cli
        hlt
        .org    0x80
handler:
        mov     $0x25, %al
        out     %al, $0x10
        iret
