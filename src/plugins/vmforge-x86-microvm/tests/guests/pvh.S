/*
 * Start-up shared by the PVH guests: the Xen PVH entry note, a flat GDT, a
 * stack, and interrupt entry stubs that call irq_handler(vector).
 *
 * PVH boot (Linux arch/x86/platform/pvh/head.S, Xen's start_info.h): entered
 * at the address in the XEN_ELFNOTE_PHYS32_ENTRY note (type 18) in 32-bit
 * protected mode, paging off, interrupts off, %ebx = physical address of the
 * hvm_start_info.  The GDTR is not specified, so the guest loads its own
 * before it reloads any segment (an interrupt gate loads CS from the GDT).
 */
        .section .note.Xen, "a", @note
        .balign 4
        .long   4f - 3f                 /* name size */
        .long   6f - 5f                 /* descriptor size */
        .long   18                      /* XEN_ELFNOTE_PHYS32_ENTRY */
3:      .asciz  "Xen"
4:      .balign 4
5:      .long   _start
6:      .balign 4

        .code32
        .text
        .globl  _start
_start:
        mov     $stack_top, %esp
        pushf                           /* EFLAGS as entered, for entry.c */
        pop     entry_eflags
        cli
        cld
        lgdt    gdt_desc
        ljmp    $0x08, $1f
1:      mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     %ax, %fs
        mov     %ax, %gs
        mov     $stack_top, %esp
        push    %ebx                    /* main(start_info) */
        call    main
        push    $0x7f                   /* main returned: exit status 255 */
        call    debug_exit
2:      cli
        hlt
        jmp     2b

/*
 * Interrupt entry: save the registers, irq_handler(vector), return.  The
 * return is not iret: this project's hosts are nested hypervisors whose KVM
 * emulates guest kernel mode, and its instruction emulator cannot do a
 * protected-mode iret (KVM_EXIT_INTERNAL_ERROR, emulation failure, under QEMU
 * as under vmforge).  Same privilege, same CS, so the frame [EIP, CS, EFLAGS]
 * is turned into [EFLAGS, EIP] and returned from with popf; ret.
 */
        .macro  stub vector
        .globl  irq_stub_\vector
irq_stub_\vector:
        pusha
        cld
        push    $\vector
        call    irq_handler
        add     $4, %esp
        jmp     irq_return
        .endm

irq_return:
        mov     32(%esp), %eax          /* EIP (above the 8 registers of pusha) */
        mov     40(%esp), %ecx          /* EFLAGS */
        mov     %ecx, 36(%esp)
        mov     %eax, 40(%esp)
        popa
        add     $4, %esp
        popf
        ret
#define VECTOR(v) stub v;
#include "vectors.h"
#undef VECTOR

        .section .rodata
        .balign 8
        .globl  gdt, gdt_limit          /* smp-trampoline.S loads it too */
gdt:    .quad   0
        .quad   0x00cf9b000000ffff      /* 0x08: 32-bit code, base 0, 4 GiB */
        .quad   0x00cf93000000ffff      /* 0x10: data, base 0, 4 GiB */
gdt_end:
        .set    gdt_limit, gdt_end - gdt - 1
        .balign 4
        .word   0
gdt_desc:
        .word   gdt_limit
        .long   gdt

        .bss
        .balign 16
        .space  8192
stack_top:
        .globl  entry_eflags
entry_eflags:
        .space  4

        .section .note.GNU-stack, "", @progbits
