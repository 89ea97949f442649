# bench_kvm's MMIO guest: as pio.S with a 4-byte load and store at guest-physical
# 0x10000000 (mapped by the page tables, no RAM there: every access exits).
        .globl _start
_start:
        mov     $0x10000000, %ebx
1:      mov     (%rbx), %eax
        inc     %eax
        mov     %eax, (%rbx)
        jmp     1b
