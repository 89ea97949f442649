# Start-up for the spike test programs: a stack per hart, main(), exit via HTIF.
    .section .text.init
    .globl _start
_start:
    la sp, stack_top
    csrr t0, mhartid
    slli t0, t0, 12
    sub sp, sp, t0
    bnez t0, park             # other harts wait
    call main
    slli a0, a0, 1
    ori a0, a0, 1
    la t0, tohost
1:  sd a0, 0(t0)
    j 1b
park:
    wfi
    j park

    .section .tohost, "aw", @progbits
    .align 6
    .globl tohost
tohost: .dword 0
    .size tohost, 8
    .align 6
    .globl fromhost
fromhost: .dword 0
    .size fromhost, 8

    .bss
    .align 12
    .space 4096 * 4
stack_top:
