/*
 * The application processor's start: real-mode code the BSP copies to
 * TRAMPOLINE (0x8000, SIPI vector 0x08).  It loads the GDT of pvh.S, turns on
 * protected mode and jumps to ap_entry32 in the image at 1 MiB, which takes
 * the stack whose top the BSP left in ap_stack and calls ap_main().
 */
        .section .rodata
        .globl  trampoline_start, trampoline_end
        .code16
trampoline_start:
        cli
        mov     %cs, %ax
        mov     %ax, %ds
        lgdtl   %ds:(trampoline_gdt - trampoline_start)
        mov     %cr0, %eax
        or      $1, %eax
        mov     %eax, %cr0
        ljmpl   $0x08, $ap_entry32
        .balign 4
        .word   0
trampoline_gdt:
        .word   gdt_limit
        .long   gdt
trampoline_end:

        .text
        .code32
ap_entry32:
        mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     %ax, %fs
        mov     %ax, %gs
        mov     ap_stack, %esp
        call    ap_main
1:      cli
        hlt
        jmp     1b

        .section .note.GNU-stack, "", @progbits
