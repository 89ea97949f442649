# An invalid opcode with an empty IDT: #UD cannot be delivered, then #DF cannot
# either: a triple fault, KVM_EXIT_SHUTDOWN.
        .code16
        .globl _start
_start:
        lidt    idtr
        ud2
idtr:   .word   0
        .long   0
