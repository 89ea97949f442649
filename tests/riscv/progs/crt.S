/* Start-up for C test programs: stack, FP on, main(), exit through the test device
 * (main's return value 0 = pass, else (value << 16) | 0x3333). */
    .section .text.init
    .globl _start
_start:
    la sp, _stack_top
    li t0, (1 << 13)
    csrs mstatus, t0
    la t0, trap
    csrw mtvec, t0
    call main
    li t0, 0x100000
    beqz a0, 1f
    slli a0, a0, 16
    li t1, 0x3333
    or a0, a0, t1
    sw a0, 0(t0)
2:  j 2b
1:  li t1, 0x5555
    sw t1, 0(t0)
    j 2b
    .align 2
trap:
    li t0, 0x100000
    li a0, (0xfff << 16) | 0x3333
    sw a0, 0(t0)
    j trap
