# From real mode to 64-bit long mode with as few kernel-mode instructions as it
# takes (the host wrote the page tables at 0x10000 and set CPUID), then iretq
# to CPL3 with IOPL 3, where a loop sums 1..rdi natively; the sum goes out on
# port 0x10 (low, high halves) and port 0x11 says done.
        .code16
        .globl _start
_start:
        lgdtl   gdtr
        mov     $0x20, %eax             # CR4.PAE
        mov     %eax, %cr4
        mov     $0x10000, %eax
        mov     %eax, %cr3
        mov     $0xc0000080, %ecx       # EFER.LME
        rdmsr
        or      $0x100, %eax
        wrmsr
        mov     $0x80000011, %eax       # PG, ET, PE
        mov     %eax, %cr0
        ljmpl   $0x08, $long64
        .code64
long64:
        pushq   $0x23                   # user SS
        pushq   $0x9000                 # user RSP
        pushq   $0x3002                 # RFLAGS: IOPL 3
        pushq   $0x1b                   # user CS
        pushq   $user
        iretq
user:
        mov     %rdi, %rcx
        xor     %rax, %rax
1:      add     %rcx, %rax
        dec     %rcx
        jnz     1b
        mov     $0x10, %dx
        out     %eax, %dx
        shr     $32, %rax
        out     %eax, %dx
        mov     $0x11, %dx
        out     %al, %dx
        .balign 8
gdt:    .quad   0
        .quad   0x00af9a000000ffff      # 0x08 kernel code64
        .quad   0x00cf92000000ffff      # 0x10 kernel data
        .quad   0x00affa000000ffff      # 0x18 user code64
        .quad   0x00cff2000000ffff      # 0x20 user data
gdtr:   .word   gdtr - gdt - 1
        .long   gdt
