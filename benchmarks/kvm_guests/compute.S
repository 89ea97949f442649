# bench_kvm's compute guest, and the same bytes run on the host by host_compute.c:
# FNV-1a (64-bit) over a buffer, `rounds` times, the hash carried over.
#   offset 0:  the guest's entry: hash, then `out %eax` to port 0x10 (rax holds
#              the hash when the host reads the registers)
#   offset 16: uint64_t fnv(const uint8_t *buf, uint64_t len, uint64_t rounds),
#              System V ABI, position independent
        .globl _start
_start:
        call    fnv
        mov     $0x10, %edx
        out     %eax, (%dx)
1:      jmp     1b
        .balign 16
fnv:
        movabs  $0xcbf29ce484222325, %rax
        movabs  $0x100000001b3, %r8
        mov     %rdx, %r9
2:      xor     %ecx, %ecx
1:      movzbl  (%rdi,%rcx), %r10d
        xor     %r10, %rax
        imul    %r8, %rax
        inc     %rcx
        cmp     %rsi, %rcx
        jb      1b
        dec     %r9
        jnz     2b
        ret
