/*
 * bzguest: a tiny guest shaped as a Linux bzImage (Documentation/arch/x86/boot.rst),
 * for the 64-bit boot protocol.  Linked at 0xffc00 so that the protected-mode part
 * (file offset 0x400, setup_sects = 1) lands at 0x100000, where a loader must put a
 * kernel with relocatable_kernel = 0; its 64-bit entry is 0x200 bytes further in.
 *
 * Entered in long mode with %rsi = boot_params, it prints (COM1, 0x3f8) what it got:
 * the segment selectors and IF, its entry address, a few zero-page fields, the command
 * line (cmd_line_ptr), the e820 table and the initrd (address, size, first 16 bytes),
 * then writes 0x10 to isa-debug-exit (port 0xf4): exit status (0x10 << 1) | 1 = 33.
 * The initrd is read through the guest's own identity map of the low 4 GiB (the
 * protocol only promises the kernel, the zero page and the command line are mapped).
 *
 * The 16-bit entry (offset 0x200) only halts: there is no real-mode setup code.
 */
        .set COM1, 0x3f8
        .set DEBUG_EXIT, 0xf4
        .set PM, 0x400                  /* file offset of the protected-mode part */
        .set PM_SIZE, 0x8000            /* code, page tables, stack: init_size */

/* SHOW label, digits, load...: run the instruction "load" (it puts the value in %rax
   or %eax; none: the value is there already), then print the string at "label" and
   the value as "digits" hex digits */
        .macro SHOW label, digits, load:vararg
        \load
        lea \label(%rip), %rdi
        mov $\digits, %ecx
        call field
        .endm

        .text
        .code16
        .globl _start
setup:
_start:
        .org 0x1f1
        .byte 1                         /* setup_sects */
        .word 0                         /* root_flags */
        .long PM_SIZE / 16              /* syssize */
        .word 0                         /* ram_size */
        .word 0xffff                    /* vid_mode: normal */
        .word 0                         /* root_dev */
        .word 0xaa55                    /* boot_flag */
        .byte 0xeb, realmode - 0f       /* 0x200: jump over the header */
0:      .ascii "HdrS"                   /* header */
        .word 0x020f                    /* version 2.15 */
        .long 0                         /* realmode_swtch */
        .word 0                         /* start_sys_seg */
        .word kernel_version - setup - 0x200
        .byte 0                         /* type_of_loader: the loader fills it in */
        .byte 0x01                      /* loadflags: LOADED_HIGH */
        .word 0                         /* setup_move_size */
        .long 0x100000                  /* code32_start */
        .long 0                         /* ramdisk_image */
        .long 0                         /* ramdisk_size */
        .long 0                         /* bootsect_kludge */
        .word 0                         /* heap_end_ptr */
        .byte 0                         /* ext_loader_ver */
        .byte 0                         /* ext_loader_type */
        .long 0                         /* cmd_line_ptr */
        .long 0x0fffffff                /* initrd_addr_max: 256 MiB, below a 512M guest's top */
        .long 0x200000                  /* kernel_alignment */
        .byte 0                         /* relocatable_kernel: no */
        .byte 0                         /* min_alignment */
        .word 0x0001                    /* xloadflags: XLF_KERNEL_64 */
        .long 2047                      /* cmdline_size */
        .long 0                         /* hardware_subarch */
        .quad 0                         /* hardware_subarch_data */
        .long 0x200                     /* payload_offset */
        .long PM_SIZE - 0x200           /* payload_length */
        .quad 0                         /* setup_data */
        .quad 0x100000                  /* pref_address */
        .long PM_SIZE                   /* init_size */
        .long 0                         /* handover_offset */
        .long 0                         /* kernel_info_offset */
realmode:                               /* the jump's target ends the header (0x26c) */
        cli
1:      hlt
        jmp 1b
kernel_version:
        .asciz "bzguest (vmforge boot-protocol test guest)"

/* ------------------------------------------------ the protected-mode part, 0x100000 */
        .org PM
        .code32
startup_32:                             /* not used: the 32-bit protocol is not offered */
1:      hlt
        jmp 1b

        .org PM + 0x200
        .code64
startup_64:
        mov %rsi, %r15                  /* boot_params */
        mov %cs, %r8d                   /* selectors before anything changes them */
        mov %ds, %r9d
        mov %es, %r10d
        mov %ss, %r11d
        lea startup_64(%rip), %r13
        lea stack_top(%rip), %rsp       /* the protocol gives no stack */
        pushfq
        pop %r12

        lea s_hello(%rip), %rdi
        call puts
        SHOW s_cs, 4, mov %r8, %rax
        SHOW s_ds, 4, mov %r9, %rax
        SHOW s_es, 4, mov %r10, %rax
        SHOW s_ss, 4, mov %r11, %rax
        mov %r12, %rax                  /* RFLAGS.IF, bit 9 */
        shr $9, %rax
        and $1, %eax
        SHOW s_if, 1
        call newline

        SHOW s_entry, 16, mov %r13, %rax
        SHOW s_bp, 16, mov %r15, %rax
        call newline

        lea s_hdr(%rip), %rdi           /* the setup header the loader copied */
        call puts
        lea 0x202(%r15), %rdi
        mov $4, %ecx
        call putn
        SHOW s_version, 4, movzwl 0x206(%r15), %eax
        SHOW s_loader, 2, movzbl 0x210(%r15), %eax
        SHOW s_loadflags, 2, movzbl 0x211(%r15), %eax
        SHOW s_setup_sects, 2, movzbl 0x1f1(%r15), %eax
        SHOW s_xloadflags, 4, movzwl 0x236(%r15), %eax
        call newline

        mov 0x228(%r15), %eax           /* cmd_line_ptr | ext_cmd_line_ptr << 32 */
        mov 0x0c8(%r15), %ebx
        shl $32, %rbx
        or %rax, %rbx
        SHOW s_cmdptr, 16, mov %rbx, %rax
        call newline
        lea s_cmdline(%rip), %rdi
        call puts
        test %rbx, %rbx
        jz 2f
        mov %rbx, %rdi
        call puts
2:      lea s_close(%rip), %rdi
        call puts

        SHOW s_e820n, 2, movzbl 0x1e8(%r15), %eax  /* e820_entries; e820_table at 0x2d0 */
        call newline
        movzbl 0x1e8(%r15), %r14d
        lea 0x2d0(%r15), %rbx
3:      test %r14d, %r14d
        jz 4f
        SHOW s_e820, 16, mov (%rbx), %rax
        SHOW s_size, 16, mov 8(%rbx), %rax
        SHOW s_type, 8, mov 16(%rbx), %eax
        call newline
        add $20, %rbx
        dec %r14d
        jmp 3b

4:      mov 0x218(%r15), %eax           /* ramdisk_image | ext_ramdisk_image << 32 */
        mov 0x0c0(%r15), %ebx
        shl $32, %rbx
        or %rax, %rbx
        mov 0x21c(%r15), %eax           /* ramdisk_size | ext_ramdisk_size << 32 */
        mov 0x0c4(%r15), %r14d
        shl $32, %r14
        or %rax, %r14
        SHOW s_initrd, 16, mov %rbx, %rax
        SHOW s_size, 16, mov %r14, %rax
        call newline
        test %r14, %r14
        jz 6f
        lea pml4(%rip), %rax            /* the initrd may lie outside the loader's map */
        mov %rax, %cr3
        lea s_bytes(%rip), %rdi
        call puts
        cmp $16, %r14
        jbe 5f
        mov $16, %r14d
5:      movzbl (%rbx), %eax
        mov $2, %ecx
        call putdigits
        inc %rbx
        dec %r14
        jnz 5b
        call newline

6:      lea s_done(%rip), %rdi
        call puts
        mov $0x10, %al
        out %al, $DEBUG_EXIT
7:      cli                             /* no isa-debug-exit: stop here */
        hlt
        jmp 7b

/* field: print the string at %rdi then %rax in %ecx hex digits */
field:
        push %rax
        push %rcx
        call puts
        pop %rcx
        pop %rax
        jmp puthex

/* puthex: %rax as "0x" and %ecx hex digits; putdigits: the digits only */
puthex:
        push %rax
        mov $'0', %al
        call putc
        mov $'x', %al
        call putc
        pop %rax
putdigits:
        mov %rax, %rdx
        lea (,%rcx,4), %ecx
1:      sub $4, %ecx
        mov %rdx, %rax
        shr %cl, %rax
        and $15, %eax
        lea hexdigits(%rip), %rsi
        mov (%rsi,%rax), %al
        call putc
        test %ecx, %ecx
        jnz 1b
        ret

newline:
        mov $'\n', %al
        jmp putc

/* puts: the NUL-terminated string at %rdi; putn: %ecx bytes at %rdi */
puts:
        mov (%rdi), %al
        test %al, %al
        jz 1f
        call putc
        inc %rdi
        jmp puts
1:      ret
putn:
        mov (%rdi), %al
        call putc
        inc %rdi
        dec %ecx
        jnz putn
        ret

/* putc: %al to COM1 once the transmit holding register is empty (LSR bit 5) */
putc:
        push %rdx
        push %rax
        mov $COM1 + 5, %dx
1:      in %dx, %al
        test $0x20, %al
        jz 1b
        pop %rax
        mov $COM1, %dx
        out %al, %dx
        pop %rdx
        ret

hexdigits:      .ascii "0123456789abcdef"
s_hello:        .asciz "bzguest: 64-bit entry\n"
s_cs:           .asciz "cs="
s_ds:           .asciz " ds="
s_es:           .asciz " es="
s_ss:           .asciz " ss="
s_if:           .asciz " if="
s_entry:        .asciz "entry="
s_bp:           .asciz " boot_params="
s_hdr:          .asciz "header="
s_version:      .asciz " version="
s_loader:       .asciz " type_of_loader="
s_loadflags:    .asciz " loadflags="
s_setup_sects:  .asciz " setup_sects="
s_xloadflags:   .asciz " xloadflags="
s_cmdptr:       .asciz "cmd_line_ptr="
s_cmdline:      .asciz "cmdline=["
s_close:        .asciz "]\n"
s_e820n:        .asciz "e820_entries="
s_e820:         .asciz "e820 addr="
s_size:         .asciz " size="
s_type:         .asciz " type="
s_initrd:       .asciz "initrd addr="
s_bytes:        .asciz "initrd bytes="
s_done:         .asciz "bzguest: done\n"

/* the guest's identity map of the low 4 GiB with 2 MiB pages (present, writable, PS) */
        .org PM + 0x1000
pml4:   .quad pdpt + 0x3
        .fill 511, 8, 0
pdpt:   .quad pd + 0x3, pd + 0x1003, pd + 0x2003, pd + 0x3003
        .fill 508, 8, 0
pd:
        .set page, 0
        .rept 2048
        .quad page | 0x83
        .set page, page + 0x200000
        .endr
        .org PM + PM_SIZE - 0x1000
        .fill 0x1000, 1, 0
stack_top:
