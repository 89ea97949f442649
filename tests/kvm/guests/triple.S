# An invalid opcode at CPL3 with an empty IDT (the host sets its limit to 0): #UD
# cannot be delivered, nor the #DF after it: a triple fault, KVM_EXIT_SHUTDOWN.
        .code64
        .globl _start
_start:
        ud2
