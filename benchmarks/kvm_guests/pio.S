# bench_kvm's port-I/O guest: at CPL3 (IOPL 3) in long mode, forever: read port
# 0x10, add one, write it back.  Two exits per turn; a host answering each `in`
# with the last value written counts the turns (N exits -> N/2).
        .globl _start
_start:
        mov     $0x10, %edx
1:      in      (%dx), %eax
        inc     %eax
        out     %eax, (%dx)
        jmp     1b
