/*
 * Start-up of the flat-binary guests (vmforge only: QEMU's -kernel takes no
 * flat binary).  vmforge's microvm loads a file that is neither an ELF nor a
 * bzImage at 1 MiB and enters it there in 64-bit long mode at CPL0, the first
 * GiB mapped 1:1, %rsi = an hvm_start_info as for PVH, %rsp below 0x9000
 * (vmforge_x86_microvm/machine.py).
 *
 * This start-up maps the local APIC and the I/O APIC (2 MiB pages at
 * 0xfec00000 and 0xfee00000, uncached) beside the first GiB in page tables of
 * its own, takes its own stack and calls main(start_info).  Its interrupt
 * stubs return without iretq for the reason pvh.S gives.
 */
        .code64
        .text
        .globl  _start
_start:
        cli
        cld
        mov     %rsi, %r12
        /* PML4[0] -> PDPT; PDPT[0] -> PD0 (1:1, 2 MiB pages); PDPT[3] -> PD3 */
        lea     pdpt(%rip), %rax
        or      $3, %rax
        mov     %rax, pml4(%rip)
        lea     pd0(%rip), %rax
        or      $3, %rax
        mov     %rax, pdpt(%rip)
        lea     pd3(%rip), %rax
        or      $3, %rax
        mov     %rax, pdpt+24(%rip)
        lea     pd0(%rip), %rdi
        mov     $0x83, %eax             /* present, writable, 2 MiB */
        mov     $512, %ecx
1:      mov     %rax, (%rdi)
        add     $0x200000, %rax
        add     $8, %rdi
        loop    1b
        /* 0xfec00000 and 0xfee00000: entries 0x1f6 and 0x1f7 of the 4th GiB, PCD|PWT */
        mov     $0xfec0009b, %eax
        mov     %rax, pd3+0x1f6*8(%rip)
        mov     $0xfee0009b, %eax
        mov     %rax, pd3+0x1f7*8(%rip)
        lea     pml4(%rip), %rax
        mov     %rax, %cr3
        mov     %cs, %ax
        mov     %ax, code_selector(%rip)
        lea     stack_top(%rip), %rsp
        mov     %r12, %rdi
        call    main
        mov     $0x7f, %edi
        call    debug_exit
2:      cli
        hlt
        jmp     2b

/* Interrupt entry: save the caller-saved registers, irq_handler(vector), return. */
        .macro  stub vector
        .globl  irq_stub_\vector
irq_stub_\vector:
        push    %rax
        push    %rcx
        push    %rdx
        push    %rsi
        push    %rdi
        push    %r8
        push    %r9
        push    %r10
        push    %r11
        mov     $\vector, %edi
        call    irq_handler
        jmp     irq_return
        .endm
#define VECTOR(v) stub v;
#include "vectors.h"
#undef VECTOR

/*
 * The frame is [RIP, CS, RFLAGS, RSP, SS]: RFLAGS and RIP go just below the
 * interrupted RSP (free: the guests are built with -mno-red-zone, and the
 * frame, aligned below it, is read first), then popfq; ret there.
 */
irq_return:
        pop     %r11
        pop     %r10
        pop     %r9
        pop     %r8
        pop     %rdi
        pop     %rsi
        pop     %rdx
        pop     %rcx
        pop     %rax
        push    %rax
        push    %rbx
        push    %rcx                    /* rcx 0, rbx 8, rax 16, RIP 24, RFLAGS 40, RSP 48 */
        mov     48(%rsp), %rax
        sub     $16, %rax
        mov     24(%rsp), %rbx
        mov     40(%rsp), %rcx
        mov     %rbx, 8(%rax)
        mov     %rcx, (%rax)
        pop     %rcx
        pop     %rbx
        xchg    %rax, (%rsp)
        pop     %rsp
        popfq
        ret

        .bss
        .balign 4096
pml4:   .space  4096
pdpt:   .space  4096
pd0:    .space  4096
pd3:    .space  4096
        .balign 16
        .space  8192
stack_top:
        .globl  code_selector
code_selector:
        .space  2

        .section .note.GNU-stack, "", @progbits
