# Port I/O of every size, read back and echoed, then string I/O both ways.
# Real mode, loaded at 0x1000, entered at 0000:1000.
        .code16
        .globl _start
_start:
        mov     $0x10, %dx
        mov     $0x12, %al
        out     %al, %dx
        mov     $0x3456, %ax
        out     %ax, %dx
        mov     $0x789abcde, %eax
        out     %eax, %dx
        mov     $0x20, %dx
        in      %dx, %al
        mov     %al, %bl
        in      %dx, %ax
        mov     %ax, %cx
        in      %dx, %eax
        mov     %eax, %esi
        mov     $0x11, %dx
        mov     %bl, %al
        out     %al, %dx
        mov     %cx, %ax
        out     %ax, %dx
        mov     %esi, %eax
        out     %eax, %dx
        mov     $msg, %si
        mov     $5, %cx
        mov     $0x12, %dx
        cld
        rep outsb
        mov     $buf, %di
        mov     $4, %cx
        mov     $0x21, %dx
        rep insb
        mov     buf, %eax
        mov     $0x13, %dx
        out     %eax, %dx
        hlt
msg:    .ascii  "hello"
buf:    .long   0
